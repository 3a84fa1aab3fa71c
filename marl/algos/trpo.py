"""TRPO (Schulman et al. 2015): the natural-gradient policy step under a KL constraint, on the on-policy template.

Each iteration: GAE advantages as PPO; one trust-region step of the actors on the whole rollout (conjugate gradient
on Fisher-vector products, step scaled to ``max_kl``, backtracking line search that keeps only a step that improves
the surrogate with mean ``KL(pi_old || pi) <= max_kl``; see :mod:`marl.core.trust_region`); then the critic is fitted
by its own Adam optimizer for ``update_epochs`` passes of ``num_minibatches``. Masks, teams and groups as PPO (the
surrogate and KL average over acting entries). The actors have no optimizer: ``lr`` is the critic's.
"""

from __future__ import annotations

import torch

from marl.algos.onpolicy import OnPolicyLearner, PGBatch, resolve
from marl.core import losses
from marl.core.trust_region import trust_region_step


class TRPO(OnPolicyLearner):
    def _actor_optimizers(self) -> list[torch.optim.Adam]:
        return []  # the policy moves by the trust-region step, not by an optimizer

    def pg_loss(self, logp, logp_old, adv, mask, weight=None):
        return losses.surrogate(logp, logp_old, adv, mask, weight)

    def tr_step(self, params, loss_fn, kl_fn) -> dict[str, float]:
        a = self.algo
        return trust_region_step(params, loss_fn, kl_fn, a.max_kl, a.cg_iters, a.cg_damping, a.backtrack_iters,
                                 a.backtrack_coef)

    @torch.no_grad()
    def old_dists(self, batch: PGBatch) -> dict:
        """The policy before the step on ``batch``, per group (detached distributions)."""
        return {k: self.policy_dist(k, batch) for k in batch.obs}

    def mean_kl(self, batch: PGBatch, old: dict) -> torch.Tensor:
        """Mean exact ``KL(pi_old || pi)`` over the acting entries, averaged over the groups that act."""
        kls = [losses.masked_mean(losses.kl_divergence(old[k], self.policy_dist(k, batch)),
                                  batch.acting[k]) for k in batch.obs if bool(batch.acting[k].any())]
        return torch.stack(kls).mean() if kls else torch.zeros((), device=self.device)

    def fit_critic(self, batch: PGBatch) -> dict[str, float]:
        params = [list(self.critic.parameters())]

        def critic_step(mb: PGBatch) -> dict[str, float]:
            vloss = self.critic_loss(mb)
            self.step([self.critic_opt], vloss, params)
            return {"value_loss": vloss.detach()}

        return self.run_epochs(batch, critic_step)

    def update(self, batch: PGBatch) -> dict[str, float]:
        with torch.no_grad():
            _, stats = self.actor_loss(batch)
        old = self.old_dists(batch)
        tr = self.tr_step(list(self.manager.parameters()), lambda: self.actor_loss(batch)[0],
                          lambda: self.mean_kl(batch, old))
        return {**resolve([stats])[0], **tr, **self.fit_critic(batch)}
