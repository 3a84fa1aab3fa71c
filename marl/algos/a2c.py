"""Advantage actor-critic (synchronous A2C): one gradient step per short rollout on
``-log pi(a|s) A + vf_coef (V - R)^2 / 2 - ent_coef H``, with ``A`` from GAE or n-step returns."""

from __future__ import annotations

import torch

from marl.algos.onpolicy import OnPolicyLearner
from marl.core.returns import nstep_returns
from marl.errors import ConfigError


class A2C(OnPolicyLearner):
    def __init__(self, cfg, env, device):
        super().__init__(cfg, env, device)
        if self.algo.returns == "nstep" and self.spec.turn_based:
            raise ConfigError(
                "algo.returns=nstep needs every agent to act at every step; this env is turn-based",
                "use algo.returns=gae (it credits rewards across turns)",
            )

    def estimate(self, reward, value, next_value, terminated, done, acting, stop=None) -> torch.Tensor:
        if self.algo.returns == "gae":
            return super().estimate(reward, value, next_value, terminated, done, acting, stop)
        # n-step returns serve parallel envs only, where every agent acts at every step: no transition stays open
        return nstep_returns(reward, value, next_value, terminated, done, self.algo.gamma, self.algo.n_step) - value
