"""IPPO (de Witt et al. 2020): PPO for every agent on its own observation and its own reward.

Each group's actor and critic see only local observations (plus an agent id when shared); GAE runs per agent on its
own reward over its own acting steps; all groups update at once. This is exactly the single-agent PPO learner applied
per group, so it adds nothing to it.
"""

from __future__ import annotations

from marl.algos.ppo import PPO


class IPPO(PPO):
    central_critic = False
