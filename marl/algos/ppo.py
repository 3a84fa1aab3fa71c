"""PPO (Schulman et al. 2017): several epochs of minibatch updates on one rollout, with the policy step bounded by
``variant``: ``clip`` (clipped surrogate), ``kl`` (fixed KL penalty) or ``adaptive_kl`` (penalty coefficient halved /
doubled after each update to track ``kl_target``). Optional value clipping and target-KL early stop.

Used as is for single-agent envs and as IPPO; MAPPO and HAPPO (``marl/multi``) change the critic and update order.
"""

from __future__ import annotations

import torch

from marl.algos.onpolicy import OnPolicyLearner, PGBatch
from marl.core import losses


class PPO(OnPolicyLearner):
    def __init__(self, cfg, env, device):
        super().__init__(cfg, env, device)
        a = self.algo
        self.kl_coef = losses.AdaptiveKLCoef(a.kl_coef, a.kl_target, adaptive=a.variant == "adaptive_kl")

    def pg_loss(self, logp, logp_old, adv, mask, weight=None):
        if self.algo.variant == "clip":
            return losses.clipped_surrogate(logp, logp_old, adv, self.algo.clip_coef, mask, weight)
        return losses.kl_penalty_surrogate(logp, logp_old, adv, self.kl_coef.beta, mask, weight)

    def update(self, batch: PGBatch) -> dict[str, float]:
        """The actors' epochs and the critic's over the same minibatches (:meth:`epochs_with_critic`)."""
        opts, params = self.all_params(critic=False)

        def actor_step(mb: PGBatch) -> dict[str, float]:
            actor, st = self.actor_loss(mb)
            self.step(opts, actor, params)
            return st

        return self.adapt_kl(self.epochs_with_critic(batch, actor_step), batch)

    def adapt_kl(self, stats: dict[str, float], batch: PGBatch) -> dict[str, float]:
        """Log the KL coefficient used and adapt it (variant=adaptive_kl) from the KL between the policy before and
        after the whole update, on the batch (Schulman et al. 2017), not from the minibatches' pre-step KLs."""
        if self.algo.variant != "clip":
            stats["kl_coef"] = self.kl_coef.beta
            stats["policy_kl"] = self.policy_kl(batch)
            self.kl_coef.update(stats["policy_kl"])
        return stats

    @torch.no_grad()
    def policy_kl(self, batch: PGBatch) -> float:
        """Mean ``KL(pi_old || pi)`` over the acting entries of ``batch`` (all groups), estimated per sample by
        ``(r - 1) - log r`` with ``r = pi(a|s) / pi_old(a|s)``."""
        total, count = 0.0, 0
        for k in batch.obs:
            m = batch.acting[k]
            if not bool(m.any()):
                continue
            logp = self.policy_dist(k, batch).log_prob(batch.action[k])
            log_r = logp - batch.logp_old[k]
            total += float(((log_r.exp() - 1) - log_r)[m].sum())
            count += int(m.sum())
        return total / max(count, 1)

    def extra_state(self) -> dict:
        return {**super().extra_state(), "kl_coef": self.kl_coef.state_dict()}

    def load_extra_state(self, state: dict) -> None:
        super().load_extra_state(state)
        self.kl_coef.load_state_dict(state["kl_coef"])
