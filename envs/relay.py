"""Relay: a cooperative ParallelEnv with unlike agents, one of which leaves mid-episode.

A worked example of the parallel extension point (``env=relay`` or ``env.entry_point=envs.relay:parallel_env``).
A goal cell is hidden somewhere on a 1-D track of ``length`` cells.

* ``scout_0`` sees the goal and, for its first ``scout_steps`` steps, points at a cell (Discrete(length)); then it
  leaves the episode (terminated) while the runners go on. Obs float32 [length + 1]: goal one-hot ++ time left on duty.
* ``runner_0 .. runner_{n-1}`` start in the middle of the track and cannot see the goal; they see their own position and
  the cell the scout last pointed at, and move left / stay / right (Discrete(3)). A runner that stands on the goal
  leaves (terminated). Obs float32 [2 * length + 1]: own position one-hot ++ last pointed cell one-hot ++ scout present.

Rewards are shared by every agent still in the episode: ``+1`` per runner arriving at this step, ``-0.01`` per runner
still on the way. The episode ends when every runner has arrived (or is truncated after ``max_cycles`` steps).
The scout and the runners have different spaces, so the adapter makes two groups, ``scout`` and ``runner``.
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv


def parallel_env(**kwargs) -> ParallelEnv:
    """The factory."""
    return Relay(**kwargs)


class Relay(ParallelEnv):
    metadata = {"name": "relay_v0", "render_modes": ["rgb_array", "ansi"], "is_parallelizable": True}

    def __init__(self, length: int = 9, n_runners: int = 2, scout_steps: int = 3, max_cycles: int = 30,
                 render_mode: str | None = None):
        if length < 3 or n_runners < 1 or scout_steps < 1 or max_cycles < 1:
            raise ValueError("need length >= 3, n_runners >= 1, scout_steps >= 1, max_cycles >= 1")
        self.length, self.n_runners, self.scout_steps, self.max_cycles = length, n_runners, scout_steps, max_cycles
        self.render_mode = render_mode
        self.runners = [f"runner_{i}" for i in range(n_runners)]
        self.possible_agents = ["scout_0", *self.runners]
        # spaces are built once and returned as the same objects on every call (PettingZoo's tests check this)
        self._obs_spaces = {"scout_0": spaces.Box(0.0, 1.0, (length + 1,), np.float32)}
        self._obs_spaces.update(dict.fromkeys(self.runners, spaces.Box(0.0, 1.0, (2 * length + 1,), np.float32)))
        self._act_spaces = {"scout_0": spaces.Discrete(length)}
        self._act_spaces.update({r: spaces.Discrete(3) for r in self.runners})
        self.np_random = np.random.default_rng()
        self.goal, self.pointed, self.t = 0, 0, 0
        self.pos: dict[str, int] = {}

    def observation_space(self, agent: str) -> spaces.Space:
        return self._obs_spaces[agent]

    def action_space(self, agent: str) -> spaces.Space:
        return self._act_spaces[agent]

    def _observe(self, agent: str) -> np.ndarray:
        n = self.length
        if agent == "scout_0":
            obs = np.zeros(n + 1, np.float32)
            obs[self.goal] = 1.0
            obs[n] = max(0, self.scout_steps - self.t) / self.scout_steps
            return obs
        obs = np.zeros(2 * n + 1, np.float32)
        obs[self.pos[agent]] = 1.0
        obs[n + self.pointed] = 1.0
        obs[2 * n] = float("scout_0" in self.agents)
        return obs

    def state(self) -> np.ndarray:
        """Global state [2 + n_runners]: goal, pointed cell and every runner's position, scaled to [0, 1]."""
        cells = [self.goal, self.pointed, *(self.pos[r] for r in self.runners)]
        return np.asarray(cells, np.float32) / (self.length - 1)

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        if seed is not None:
            self.np_random = np.random.default_rng(seed)
        self.agents = list(self.possible_agents)
        mid = self.length // 2
        self.goal = int(self.np_random.choice([c for c in range(self.length) if c != mid]))
        self.pointed, self.t = mid, 0
        self.pos = dict.fromkeys(self.runners, mid)
        return {a: self._observe(a) for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions: dict[str, int]) -> tuple[dict, dict, dict, dict, dict]:
        self.t += 1
        if "scout_0" in actions:
            self.pointed = int(actions["scout_0"])
        arrived = []
        for r in self.runners:
            if r in actions:
                self.pos[r] = int(np.clip(self.pos[r] + int(actions[r]) - 1, 0, self.length - 1))
                if self.pos[r] == self.goal:
                    arrived.append(r)
        on_the_way = sum(r in self.agents for r in self.runners) - len(arrived)
        team = len(arrived) - 0.01 * on_the_way
        terms = {a: a in arrived or (a == "scout_0" and (self.t >= self.scout_steps or on_the_way == 0))
                 for a in self.agents}
        out_of_time = self.t >= self.max_cycles
        truncs = {a: out_of_time and not terms[a] for a in self.agents}
        obs = {a: self._observe(a) for a in self.agents}
        rewards = dict.fromkeys(self.agents, team)
        infos = {a: {} for a in self.agents}
        self.agents = [a for a in self.agents if not (terms[a] or truncs[a])]
        return obs, rewards, terms, truncs, infos

    def render(self) -> np.ndarray | str | None:
        """rgb_array: [24, 12 * length, 3] uint8 track (green goal, red pointed cell, blue runners); ansi: text."""
        if self.render_mode is None:
            return None
        if self.render_mode == "ansi":
            cells = ["." for _ in range(self.length)]
            cells[self.goal] = "G"
            for r in self.runners:
                cells[self.pos[r]] = r[-1]
            return "".join(cells) + f"  scout points at {self.pointed}, t={self.t}"
        img = np.full((24, 12 * self.length, 3), 255, np.uint8)
        img[:, :: 12] = 160  # cell borders
        img[:12, 12 * self.goal: 12 * self.goal + 12] = (40, 170, 60)
        img[12:, 12 * self.pointed: 12 * self.pointed + 12] = (210, 50, 50)
        for r in self.runners:
            x = 12 * self.pos[r]
            img[4:20, x + 3: x + 9] = (40, 70, 200)
        return img

    def close(self) -> None:
        """Nothing to release (no window)."""
