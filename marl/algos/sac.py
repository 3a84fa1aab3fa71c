"""SAC (Haarnoja et al. 2018): a squashed-Gaussian actor trained to maximize ``min_k Q_k - alpha log pi`` through the
reparameterization trick, twin critics on the soft TD target, and an automatically tuned temperature ``alpha``
(target entropy ``-|A|`` by default). Discrete action groups get discrete SAC (Christodoulou 2019): a categorical
actor, critics ``Q(s, .)`` over all actions, and exact expectations over the actions in the target, the actor loss
and the temperature loss (target entropy ``target_entropy_scale * log |A|``).

Replay, Polyak averaging of the critics (there is no target actor), truncation bootstrap and per-agent members are
DDPG's (marl/algos/ddpg.py). Exploration is the policy's own sampling (no noise process). Log-probabilities of Box
actions are those of the ``[-1, 1]`` action before the affine map to the env's bounds.
"""

from __future__ import annotations

import math

import torch
from gymnasium import spaces

from marl.adapters.base import GroupSpec
from marl.algos.ddpg import DDPG, _Group
from marl.core.distributions import gumbel_softmax_st, squashed_gaussian_sample
from marl.core.losses import (
    q_target,
    sac_actor_loss,
    sac_discrete_actor_loss,
    soft_q_target,
    soft_value_discrete,
    temperature_loss,
)
from marl.core.networks import MLP, SquashedGaussianActor


class SAC(DDPG):
    """Soft actor-critic for Box (squashed Gaussian) and Discrete (categorical) action groups."""

    n_critics = 2
    discrete_ok = True

    # ------------------------------------------------------------------ construction
    def _make_actor(self, gs: _Group, in_dim: int) -> torch.nn.Module:
        a = self.algo
        if gs.discrete:
            return MLP(in_dim, list(a.hidden), gs.act_dim, gs.members, a.activation, out_gain=0.01)
        return SquashedGaussianActor(in_dim, gs.act_dim, list(a.hidden), gs.members, a.activation)

    def _has_actor_target(self) -> bool:
        return False

    def _make_noise(self, gs: _Group) -> None:
        return None  # exploration is the policy's own sampling

    def _build_group(self, g: GroupSpec) -> _Group:
        """DDPG's group plus the temperature: ``log_alpha`` (one per group), its optimizer and target entropy."""
        gs = super()._build_group(g)
        a = self.algo
        if a.target_entropy is not None:
            target = float(a.target_entropy)
        elif isinstance(g.action_space, spaces.Discrete):
            target = float(a.target_entropy_scale) * math.log(gs.act_dim)
        else:
            target = -float(gs.act_dim)
        log_alpha = torch.tensor(math.log(a.alpha), device=self.device, requires_grad=bool(a.autotune))
        gs.extra = {"log_alpha": log_alpha, "target_entropy": target,
                    "alpha_optim": torch.optim.Adam([log_alpha], lr=a.alpha_lr, eps=a.adam_eps) if a.autotune else None}
        return gs

    @staticmethod
    def alpha(gs: _Group) -> torch.Tensor:
        """The temperature ``exp(log_alpha)`` (detached)."""
        return gs.extra["log_alpha"].detach().exp()

    # ------------------------------------------------------------------ policy
    def _policy(self, gs: _Group, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Box: a reparameterized action ``[..., D]`` in ``[-1, 1]`` and its log-prob ``[...]``; Discrete: the
        probabilities and log-probabilities ``[..., A]``."""
        if gs.discrete:
            logits = gs.actor(x)
            return torch.softmax(logits, -1), torch.log_softmax(logits, -1)
        mean, log_std = gs.actor(x)
        return squashed_gaussian_sample(mean, log_std, self.gen)

    def _act_one(self, gs: _Group, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        """The mode (``tanh(mean)`` / the most likely action) or a sample from the policy, in env units."""
        x = self._obs_features(gs, obs)
        if gs.discrete:
            logits = gs.actor(x)
            if deterministic:
                return logits.argmax(-1)
            return gumbel_softmax_st(logits, self.gen).argmax(-1)  # a sample of softmax(logits)
        if deterministic:
            return self._from_unit(gs, torch.tanh(gs.actor(x)[0]))
        return self._from_unit(gs, self._policy(gs, x)[0])

    def _explore_action(self, gs: _Group, obs: torch.Tensor) -> torch.Tensor:
        return self._act_one(gs, obs, deterministic=False)

    # ------------------------------------------------------------------ learning
    def td_target(self, gs: _Group, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The soft target ``r + gamma (1 - terminated) V(s')`` for a batch ``[B, M, ...]`` -> ``[B, M]`` with
        ``V(s') = min_k Q'_k(s', a') - alpha log pi(a'|s')``, ``a' ~ pi(.|s')`` (Box) or its exact expectation
        over the actions (Discrete)."""
        with torch.no_grad():
            x2 = self._features(gs, batch["next_obs"], batch["agent"])
            alpha = self.alpha(gs)
            if gs.discrete:
                probs, logp = self._policy(gs, x2)
                v = soft_value_discrete(gs.critic_target(x2), probs, logp, alpha)
                return q_target(batch["reward"], v, batch["terminated"], self.gamma)
            a2, logp2 = self._policy(gs, x2)
            return soft_q_target(batch["reward"], gs.critic_target(x2, a2), logp2, alpha, batch["terminated"],
                                 self.gamma)

    def actor_loss(self, gs: _Group, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``E[alpha log pi - min_k Q_k]`` (Discrete: the exact expectation over actions); also the policy entropy
        estimate per sample (``entropy``) for the temperature step."""
        alpha = self.alpha(gs)
        if gs.discrete:
            probs, logp = self._policy(gs, x)
            loss = sac_discrete_actor_loss(probs, logp, gs.critic(x), alpha)
            entropy = -(probs * logp).sum(-1)
        else:
            a, logp = self._policy(gs, x)
            loss = sac_actor_loss(logp, gs.critic(x, a), alpha)
            entropy = -logp
        return loss, {"entropy": entropy.detach(), "losses/entropy": entropy.detach().mean()}

    def _after_actor_step(self, gs: _Group, info: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One Adam step on :func:`temperature_loss` (when ``autotune``); reports ``losses/alpha``."""
        opt = gs.extra["alpha_optim"]
        out = {}
        if opt is not None:
            loss = temperature_loss(gs.extra["log_alpha"], info["entropy"], gs.extra["target_entropy"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            out["losses/alpha_loss"] = loss.detach()
        out["losses/alpha"] = self.alpha(gs)
        return out

    # ------------------------------------------------------------------ state
    def modules(self) -> dict[str, torch.nn.Module | torch.optim.Optimizer]:
        out = super().modules()
        for name, gs in self.groups.items():
            if gs.extra["alpha_optim"] is not None:
                out[f"{name}/alpha_optim"] = gs.extra["alpha_optim"]
        return out

    def extra_state(self) -> dict:
        """DDPG's, plus each group's ``log_alpha``."""
        state = super().extra_state()
        state["log_alpha"] = {name: gs.extra["log_alpha"].detach().clone() for name, gs in self.groups.items()}
        return state

    def load_extra_state(self, state: dict) -> None:
        super().load_extra_state(state)
        with torch.no_grad():
            for name, gs in self.groups.items():
                gs.extra["log_alpha"].copy_(state["log_alpha"][name])
