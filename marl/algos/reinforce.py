"""REINFORCE (Williams 1992): one gradient step per rollout on ``-log pi(a|s) * (G_t - b(s))``.

``baseline: true`` learns ``V(s)`` and subtracts it; ``false`` uses the plain discounted reward-to-go (with
``gae_lambda = 1`` the advantage machinery computes exactly ``G_t - V(s)``, or ``G_t`` when the value is 0).
Rollouts of ``num_steps`` that cut an episode bootstrap from ``V`` at the cut (0 without a baseline).
"""

from __future__ import annotations

from marl.algos.onpolicy import OnPolicyLearner


class Reinforce(OnPolicyLearner):
    def __init__(self, cfg, env, device):
        self.uses_critic = bool(cfg.algo.baseline)
        super().__init__(cfg, env, device)
