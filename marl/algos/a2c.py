"""Advantage actor-critic (synchronous A2C): one gradient step per short rollout on
``-log pi(a|s) A + vf_coef (V - R)^2 / 2 - ent_coef H``, with ``A`` from GAE or n-step returns."""

from __future__ import annotations

import torch

from marl.algos.onpolicy import OnPolicyLearner
from marl.core.returns import nstep_returns
from marl.errors import ConfigError
from marl.rollout import Rollout


class A2C(OnPolicyLearner):
    def __init__(self, cfg, env, device):
        super().__init__(cfg, env, device)
        if self.algo.returns == "nstep" and (self.spec.turn_based or self.critic.central):
            raise ConfigError(
                "algo.returns=nstep needs every agent to act at every step; this env is turn-based",
                "use algo.returns=gae (it credits rewards across turns)",
            )

    @torch.no_grad()
    def advantages(self, buf: Rollout):
        if self.algo.returns == "gae":
            return super().advantages(buf)
        adv_g, _, v_old, acting = super().advantages(buf)  # for values, flags and the unit layout
        c, g = self.critic, buf.groups
        v_all = self.values({k: gb.obs for k, gb in g.items()}, buf.state)
        v_fin = self.values({k: gb.final_obs for k, gb in g.items()}, buf.final_state)
        done_env = buf.done.unsqueeze(-1)
        terminated = c.from_groups({k: gb.terminated for k, gb in g.items()})
        reward = c.from_groups({k: gb.reward for k, gb in g.items()})
        next_v = torch.where(done_env, v_fin, v_all[1:])
        ret = nstep_returns(
            reward, v_all[:-1], next_v, terminated, done_env | terminated, self.algo.gamma, self.algo.n_step
        )
        return c.to_groups(ret - v_all[:-1]), ret, v_old, acting
