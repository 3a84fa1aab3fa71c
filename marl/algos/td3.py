"""TD3 (Fujimoto et al. 2018): DDPG with twin critics whose minimum forms the target (clipped double-Q), target-policy
smoothing (clipped Gaussian noise on the target action) and delayed actor and target updates (``policy_delay``).

Everything else (replay, exploration noise, Polyak averaging, truncation bootstrap, per-agent members) is DDPG's
(marl/algos/ddpg.py); the actor is trained through the first critic only.
"""

from __future__ import annotations

import torch

from marl.algos.ddpg import DDPG, _Group
from marl.core.losses import clipped_double_q, q_target
from marl.core.noise import smoothed_target_action


class TD3(DDPG):
    """Twin-delayed DDPG for Box action spaces."""

    n_critics = 2

    def td_target(self, gs: _Group, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``y = r + gamma (1 - terminated) min_k Q'_k(s', clip(mu'(s') + clip(eps, -c, c), -1, 1))`` with
        ``eps ~ N(0, target_noise^2)``, ``c = target_noise_clip`` (actions in the critic's ``[-1, 1]`` scale), for a
        batch ``[B, M, ...]`` -> ``[B, M]``."""
        with torch.no_grad():
            x2 = self._features(gs, batch["next_obs"], batch["agent"])
            a2 = smoothed_target_action(self._unit(gs, gs.actor_target(x2)), self.target_noise, self.target_noise_clip,
                                        self.gen)
            next_q = clipped_double_q(gs.critic_target(x2, a2))
            return q_target(batch["reward"], next_q, batch["terminated"], self.gamma)
