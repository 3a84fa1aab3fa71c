"""Nim, "take 1, 2 or 3; whoever takes the last stone wins": a turn-based AEC env with action masks.

A worked example of the AEC extension point (``env=nim`` or ``env.entry_point=envs.nim:env``). Two players,
``player_0`` and ``player_1``, alternately take 1..``max_take`` stones from one pile of ``n_stones`` (drawn in
``[min_stones, n_stones]`` at reset from the seed). Taking the last stone wins: +1 for the winner, -1 for the loser,
both terminated on that move. Observation (both players see the same thing, from their own point of view)::

    {"observation": float32 [n_stones + 2] = one-hot pile size (0..n_stones) ++ [1 if it is my turn],
     "action_mask": int8 [max_take] = 1 where taking a+1 stones is legal (only for the player to move)}

Action ``a`` takes ``a + 1`` stones. Optimal play: leave a multiple of ``max_take + 1``.
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces
from pettingzoo import AECEnv
from pettingzoo.utils import AgentSelector, wrappers


def env(**kwargs) -> AECEnv:
    """The factory: raw Nim wrapped in PettingZoo's standard safety wrappers (illegal move -> -1 and game over)."""
    game = raw_env(**kwargs)
    game = wrappers.TerminateIllegalWrapper(game, illegal_reward=-1)
    game = wrappers.AssertOutOfBoundsWrapper(game)
    return wrappers.OrderEnforcingWrapper(game)


class raw_env(AECEnv):  # noqa: N801 - PettingZoo's naming convention for the unwrapped env
    metadata = {"name": "nim_v0", "render_modes": ["ansi"], "is_parallelizable": False}

    def __init__(self, n_stones: int = 15, min_stones: int = 7, max_take: int = 3, render_mode: str | None = None):
        super().__init__()
        if not 1 <= min_stones <= n_stones or max_take < 1:
            raise ValueError(f"need 1 <= min_stones <= n_stones and max_take >= 1, got {min_stones}, {n_stones}, "
                             f"{max_take}")
        self.n_stones, self.min_stones, self.max_take = n_stones, min_stones, max_take
        self.render_mode = render_mode
        self.possible_agents = ["player_0", "player_1"]
        obs = spaces.Dict({
            "observation": spaces.Box(0.0, 1.0, (n_stones + 2,), np.float32),
            "action_mask": spaces.Box(0, 1, (max_take,), np.int8),
        })
        self._obs_spaces = dict.fromkeys(self.possible_agents, obs)  # cached: the same object on every call
        self._act_spaces = {a: spaces.Discrete(max_take) for a in self.possible_agents}
        self.pile = 0

    def observation_space(self, agent: str) -> spaces.Space:
        return self._obs_spaces[agent]

    def action_space(self, agent: str) -> spaces.Space:
        return self._act_spaces[agent]

    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        if seed is not None or not hasattr(self, "np_random"):
            self.np_random = np.random.default_rng(seed)
        self.pile = int(self.np_random.integers(self.min_stones, self.n_stones + 1))
        self.agents = list(self.possible_agents)
        self.rewards = dict.fromkeys(self.agents, 0.0)
        self._cumulative_rewards = dict.fromkeys(self.agents, 0.0)
        self.terminations = dict.fromkeys(self.agents, False)
        self.truncations = dict.fromkeys(self.agents, False)
        self.infos = {a: {} for a in self.agents}
        self._selector = AgentSelector(self.agents)
        self.agent_selection = self._selector.reset()

    def observe(self, agent: str) -> dict[str, np.ndarray]:
        obs = np.zeros(self.n_stones + 2, np.float32)
        obs[self.pile] = 1.0
        mine = agent == self.agent_selection
        obs[-1] = float(mine)
        mask = np.zeros(self.max_take, np.int8)
        if mine:
            mask[: min(self.max_take, self.pile)] = 1
        return {"observation": obs, "action_mask": mask}

    def step(self, action: int | None) -> None:
        agent = self.agent_selection
        if self.terminations[agent] or self.truncations[agent]:
            self._was_dead_step(action)
            return
        self._cumulative_rewards[agent] = 0.0  # its reward since it last acted has been read via last()
        self._clear_rewards()
        self.pile -= int(action) + 1
        if self.pile <= 0:  # the mover took the last stone
            other = self.possible_agents[1 - self.possible_agents.index(agent)]
            self.rewards[agent], self.rewards[other] = 1.0, -1.0
            self.terminations = dict.fromkeys(self.agents, True)
        self.agent_selection = self._selector.next()
        self._accumulate_rewards()

    def render(self) -> str | None:
        """ansi: the pile and whose turn it is, as one line of text."""
        if self.render_mode is None:
            return None
        return f"pile {self.pile:2d} | {'o' * self.pile:<{self.n_stones}} | to move: {self.agent_selection}"

    def close(self) -> None:
        """Nothing to release (no window)."""
