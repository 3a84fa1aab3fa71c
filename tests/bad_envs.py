"""Deliberately broken custom envs for the bad-input tests (``env=custom env.entry_point=bad_envs:<factory>``).

``tests/`` is on the CLI's PYTHONPATH (see conftest.cli_env). The base env is a well-behaved two-agent ParallelEnv:
observation Box(2,) = (own index, time), Discrete(2) actions, reward 1 for action 1, truncation after ``max_cycles``.
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv


class Walk(ParallelEnv):
    metadata = {"name": "walk_v0", "render_modes": [], "is_parallelizable": True}

    def __init__(self, max_cycles: int = 10, render_mode: str | None = None):
        self.max_cycles = max_cycles
        self.render_mode = render_mode
        self.possible_agents = ["agent_0", "agent_1"]
        self._obs_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self._act_space = spaces.Discrete(2)
        self.t = 0
        self.total_steps = 0  # steps over the env's whole life (kept across resets)

    def observation_space(self, agent: str) -> spaces.Space:
        return self._obs_space

    def action_space(self, agent: str) -> spaces.Space:
        return self._act_space

    def _obs(self) -> dict[str, np.ndarray]:
        return {a: np.array([i / 2, self.t / self.max_cycles], np.float32) for i, a in enumerate(self.agents)}

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        self.agents = list(self.possible_agents)
        self.t = 0
        return self._obs(), {a: {} for a in self.agents}

    def reward(self, action: int) -> float:
        return float(action)

    def step(self, actions: dict[str, int]) -> tuple[dict, dict, dict, dict, dict]:
        self.t += 1
        self.total_steps += 1
        obs = self._obs()
        rewards = {a: self.reward(int(actions[a])) for a in self.agents}
        trunc = self.t >= self.max_cycles
        terms = dict.fromkeys(self.agents, False)
        truncs = dict.fromkeys(self.agents, trunc)
        infos = {a: {} for a in self.agents}
        if trunc:
            self.agents = []
        return obs, rewards, terms, truncs, infos


class RaisesMidEpisode(Walk):
    """Raises from ``step`` at episode step ``fail_at`` (a bug in the env's own code)."""

    def __init__(self, fail_at: int = 5, **kwargs):
        super().__init__(**kwargs)
        self.fail_at = fail_at

    def step(self, actions):
        if self.t + 1 == self.fail_at:
            raise ZeroDivisionError("the physics engine divided by zero")
        return super().step(actions)


class NanReward(Walk):
    """Returns NaN rewards once the env has taken ``nan_after`` steps in its life."""

    def __init__(self, nan_after: int = 100, **kwargs):
        super().__init__(**kwargs)
        self.nan_after = nan_after

    def reward(self, action: int) -> float:
        return float("nan") if self.total_steps > self.nan_after else float(action)


class BreaksApi(Walk):
    """A new space object on every ``observation_space`` call: PettingZoo's parallel_api_test refuses it."""

    def observation_space(self, agent: str) -> spaces.Space:
        return spaces.Box(-1.0, 1.0, (2,), np.float32)


class WrongObsShape(Walk):
    """Observations of 3 values for a Box(2,) space."""

    def _obs(self) -> dict[str, np.ndarray]:
        return {a: np.zeros(3, np.float32) for a in self.agents}


class NotReplayable(Walk):
    """Observations carry noise from an unseeded generator: an episode is not fixed by its seed and actions, so a
    resume cannot rebuild it."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.rng = np.random.default_rng()

    def _obs(self) -> dict[str, np.ndarray]:
        return {a: np.array([i / 2, self.rng.uniform(-1, 1)], np.float32) for i, a in enumerate(self.agents)}


class FailsInWorker(Walk):
    """Builds in the main process only: a copy built in a worker process raises (as an env needing a resource the
    worker lacks, e.g. a licence server or a display, would)."""

    def __init__(self, **kwargs):
        import multiprocessing as mp

        if mp.current_process().name != "MainProcess":
            raise RuntimeError("no licence server in this process")
        super().__init__(**kwargs)


def walk(**kwargs) -> ParallelEnv:
    return Walk(**kwargs)


def raises_mid_episode(**kwargs) -> ParallelEnv:
    return RaisesMidEpisode(**kwargs)


def nan_reward(**kwargs) -> ParallelEnv:
    return NanReward(**kwargs)


def breaks_api(**kwargs) -> ParallelEnv:
    return BreaksApi(**kwargs)


def wrong_obs_shape(**kwargs) -> ParallelEnv:
    return WrongObsShape(**kwargs)


def not_replayable(**kwargs) -> ParallelEnv:
    return NotReplayable(**kwargs)


def fails_in_worker(**kwargs) -> ParallelEnv:
    return FailsInWorker(**kwargs)


def not_an_env(**kwargs) -> dict:
    """Returns a plain dict instead of an env."""
    return {"agents": ["agent_0"]}


class ObsOffSpace(Walk):
    """From episode step 3 on, agent_1's observation is 5.0: outside its Box(-1, 1) space (the shape is right)."""

    def _obs(self) -> dict[str, np.ndarray]:
        obs = super()._obs()
        if self.t >= 3 and "agent_1" in obs:
            obs["agent_1"] = np.full(2, 5.0, np.float32)
        return obs


class RewardMissesAgent(Walk):
    """The reward dict leaves out agent_1 at episode step 2."""

    def step(self, actions):
        obs, rewards, terms, truncs, infos = super().step(actions)
        if self.t == 2:
            rewards.pop("agent_1", None)
        return obs, rewards, terms, truncs, infos


class StrangerAgent(Walk):
    """At episode step 2 the env reports an agent 'intruder' that is not in possible_agents."""

    def step(self, actions):
        obs, rewards, terms, truncs, infos = super().step(actions)
        if self.t == 2:
            for d, v in ((obs, np.zeros(2, np.float32)), (rewards, 0.0), (terms, False), (truncs, False),
                         (infos, {})):
                d["intruder"] = v
        return obs, rewards, terms, truncs, infos


class UnboundedActions(Walk):
    """Continuous actions in Box(-inf, inf, (1,)); reward -|a - 0.5| (the best action is 0.5)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._act_space = spaces.Box(-np.inf, np.inf, (1,), np.float32)

    def step(self, actions):
        self.t += 1
        obs = self._obs()
        rewards = {a: -abs(float(np.asarray(actions[a]).ravel()[0]) - 0.5) for a in self.agents}
        trunc = self.t >= self.max_cycles
        terms, truncs = dict.fromkeys(self.agents, False), dict.fromkeys(self.agents, trunc)
        infos = {a: {} for a in self.agents}
        if trunc:
            self.agents = []
        return obs, rewards, terms, truncs, infos


def obs_off_space(**kwargs) -> ParallelEnv:
    return ObsOffSpace(**kwargs)


def reward_misses_agent(**kwargs) -> ParallelEnv:
    return RewardMissesAgent(**kwargs)


def stranger_agent(**kwargs) -> ParallelEnv:
    return StrangerAgent(**kwargs)


def unbounded_actions(**kwargs) -> ParallelEnv:
    return UnboundedActions(**kwargs)
