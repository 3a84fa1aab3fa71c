"""HAPPO (Kuba et al. 2022): heterogeneous-agent PPO with a centralized critic.

Each iteration draws a fresh random order of the agents and updates them one at a time. Agent ``k``'s clipped
surrogate is weighted per sample by ``M = prod_{j before k} pi_j_new(a_j|o_j) / pi_j_old(a_j|o_j)`` (detached),
the policy change of the agents already updated; the first agent has ``M = 1``. The critic is updated on the first
agent's minibatches. Needs per-agent parameters (``sharing: per_agent``).
"""

from __future__ import annotations

import torch

from marl.algos.onpolicy import PGBatch, mean_stats
from marl.algos.ppo import PPO
from marl.core import losses
from marl.errors import ConfigError


def require_per_agent(cfg, shared_alternative: str) -> None:
    """HAPPO / HATRPO: refuse shared parameters (ConfigError naming the fix)."""
    name = cfg.algo.name
    if cfg.algo.sharing != "per_agent":
        raise ConfigError(
            f"{name.upper()} needs per-agent policies, got algo.sharing={cfg.algo.sharing}: its update weights agent "
            "k by the policy change of the agents updated before it, which has no meaning when they share parameters",
            f"use algo.sharing=per_agent (the {name} default), or algo={shared_alternative} for a shared policy",
        )


def agent_order(n: int, gen: torch.Generator) -> list[int]:
    """A fresh random order of the ``n`` agents (no draw for one agent)."""
    return torch.randperm(n, generator=gen).tolist() if n > 1 else [0]


@torch.no_grad()
def update_weight(batch: PGBatch, learner, g: str, k: int) -> None:
    """Multiply ``batch.weight [B]`` (recurrent: ``[K, L]``) by agent ``k`` of group ``g``'s ratio
    ``pi_new / pi_old`` on its acting entries (1 elsewhere), after its update: the weight ``M`` of the agents
    updated next."""
    d = learner.agent_dist(g, k, batch)
    new = d.log_prob(batch.action[g][..., k : k + 1])[..., 0]
    ratio = torch.exp(new - batch.logp_old[g][..., k])
    batch.weight = batch.weight * torch.where(batch.acting[g][..., k], ratio, torch.ones_like(ratio))


class HAPPO(PPO):
    central_critic = True
    separate_actors = True

    def __init__(self, cfg, env, device):
        require_per_agent(cfg, "mappo")
        super().__init__(cfg, env, device)

    def update(self, batch: PGBatch) -> dict[str, float]:
        units = self.manager.agent_units()
        order = agent_order(len(units), self.gen)
        batch.weight = torch.ones(batch.state.shape[:-1], device=self.device)  # [B] or [K, L]
        stats = []
        for i, u in enumerate(order):
            g, k = units[u]
            pol = self.manager.policies[g]
            opts, params = [self.actor_opts[u]], [pol.agent_parameters(k)]

            def agent_step(mb: PGBatch, g=g, k=k, opts=opts, params=params):
                d = self.agent_dist(g, k, mb)
                sl = slice(k, k + 1)
                acting = mb.acting[g][..., sl]
                logp = d.log_prob(mb.action[g][..., sl])
                pg, st = self.pg_loss(logp, mb.logp_old[g][..., sl], mb.adv[g][..., sl], acting,
                                      mb.weight.unsqueeze(-1))
                ent = losses.entropy_bonus(d.entropy(), acting)
                self.step(opts, pg - self.algo.ent_coef * ent, params)
                return {**st, "policy_loss": pg.detach(), "entropy": ent.detach()}

            # the critic learns on the first agent's minibatches
            stats.append(self.epochs_with_critic(batch, agent_step) if i == 0 else self.run_epochs(batch, agent_step))
            update_weight(batch, self, g, k)
        out = mean_stats(stats)
        out["happo_weight_std"] = float(batch.weight.std()) if batch.size > 1 else 0.0
        return self.adapt_kl(out, batch)
