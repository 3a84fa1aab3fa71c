"""Tiny PettingZoo envs used by the multi-agent tests (importable as ``matrix_games:<factory>``)."""

from __future__ import annotations

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv


class ExclusiveGame(ParallelEnv):
    """Two agents see the same constant observation and pick 0 or 1; both get 1 when they choose differently, else 0.

    One step per episode. A single shared policy without an agent id gives both agents the same distribution p, so
    P(different) = 2 p (1 - p) <= 0.5; agents with their own parameters can reach 1.
    """

    metadata = {"name": "exclusive_v0", "render_modes": []}

    def __init__(self, render_mode=None):
        self.possible_agents = ["agent_0", "agent_1"]
        self._obs_space = spaces.Box(0.0, 1.0, (2,), np.float32)
        self._act_space = spaces.Discrete(2)
        self.render_mode = render_mode

    def observation_space(self, agent):
        return self._obs_space

    def action_space(self, agent):
        return self._act_space

    def reset(self, seed=None, options=None):
        self.agents = list(self.possible_agents)
        return {a: np.ones(2, np.float32) for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions):
        r = float(actions["agent_0"] != actions["agent_1"])
        obs = {a: np.ones(2, np.float32) for a in self.agents}
        rew = {a: r for a in self.agents}
        term = {a: True for a in self.agents}
        trunc = {a: False for a in self.agents}
        self.agents = []
        return obs, rew, term, trunc, {a: {} for a in obs}


def exclusive_parallel_env(**kwargs) -> ExclusiveGame:
    return ExclusiveGame(**kwargs)
