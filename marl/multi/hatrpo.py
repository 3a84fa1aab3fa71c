"""HATRPO (Kuba et al. 2022): TRPO's trust-region step applied agent by agent, with HAPPO's sequential weight.

Each iteration draws a fresh random order of the agents; agent ``k`` takes one trust-region step on its own
parameters, its surrogate weighted per sample by ``M`` = the product of the ratios ``pi_new / pi_old`` of the agents
updated before it (detached; 1 for the first), under its own KL bound ``max_kl``. The centralized critic (global
state, team values as MAPPO) is fitted by its own optimizer, as in TRPO. Needs per-agent parameters.
"""

from __future__ import annotations

import torch

from marl.algos.onpolicy import PGBatch, mean_stats
from marl.algos.trpo import TRPO
from marl.core import losses
from marl.multi.happo import agent_order, require_per_agent, update_weight


class HATRPO(TRPO):
    central_critic = True
    separate_actors = True

    def __init__(self, cfg, env, device):
        require_per_agent(cfg, "trpo")
        super().__init__(cfg, env, device)

    def update(self, batch: PGBatch) -> dict[str, float]:
        units = self.manager.agent_units()
        batch.weight = torch.ones(batch.state.shape[:-1], device=self.device)  # [B] or [K, L]
        stats = []
        for u in agent_order(len(units), self.gen):
            g, k = units[u]
            pol, acting = self.manager.policies[g], batch.acting[g][..., k : k + 1]
            if not bool(acting.any()):
                continue
            with torch.no_grad():
                old = self.agent_dist(g, k, batch)

            def terms(g=g, k=k, pol=pol, acting=acting) -> tuple[torch.Tensor, torch.Tensor]:
                """Agent k's weighted surrogate loss and mean entropy."""
                d = self.agent_dist(g, k, batch)
                sl = slice(k, k + 1)
                pg, _ = self.pg_loss(d.log_prob(batch.action[g][..., sl]), batch.logp_old[g][..., sl],
                                     batch.adv[g][..., sl], acting, batch.weight.unsqueeze(-1))
                return pg, losses.entropy_bonus(d.entropy(), acting)

            def loss_fn(terms=terms):
                pg, ent = terms()
                return pg - self.algo.ent_coef * ent

            def kl_fn(g=g, k=k, pol=pol, acting=acting, old=old):
                return losses.masked_mean(losses.kl_divergence(old, self.agent_dist(g, k, batch)), acting)

            with torch.no_grad():
                pg, ent = terms()
                st = {"policy_loss": float(pg), "entropy": float(ent)}
            stats.append({**st, **self.tr_step(pol.agent_parameters(k), loss_fn, kl_fn)})
            update_weight(batch, self, g, k)
        out = mean_stats(stats) if stats else {}
        out["happo_weight_std"] = float(batch.weight.std()) if batch.size > 1 else 0.0
        return {**out, **self.fit_critic(batch)}
