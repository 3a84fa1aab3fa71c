"""MAPPO (Yu et al. 2022): PPO actors with one centralized critic on the global state.

On cooperative envs the critic predicts the team return (sum of agents' rewards) from ``env.state()``, GAE runs once
per env copy on the team reward and the advantage is broadcast to every agent (joint GAE); on turn-based or
competitive games (``team_reward: none``) the central critic gets an agent id and each agent its own reward. Value
normalization (running mean/std of targets) is on by default; padded (dead) agents are masked out of the policy loss.
"""

from __future__ import annotations

from marl.algos.ppo import PPO


class MAPPO(PPO):
    central_critic = True
