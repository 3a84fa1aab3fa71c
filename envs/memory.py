"""Recall: a memory task, a ParallelEnv that a feed-forward policy cannot solve better than chance.

A worked example for recurrent policies (``env=memory`` with ``algo.rnn=gru``). Every agent ``agent_0 ..
agent_{n-1}`` is shown its own cue, one of ``num_cues`` symbols, at the first step only; then ``delay`` steps pass
with a blank observation; at the last step (the query, flagged in the observation) the agent must name its cue.

* Obs float32 ``[num_cues + 2]``: the cue one-hot (zero after the first step) ++ a "waiting" flag ++ a "query" flag.
* Actions Discrete(num_cues): ignored before the query; at the query ``+1`` if the action is the agent's cue, else 0.
* Every episode lasts ``delay + 1`` steps and ends in a termination; returns are per agent (each its own cue).

The query observation is the same whatever the cue, so a policy without memory names the cue at chance
(``1 / num_cues`` per agent and episode); a policy that keeps the first observation in its state scores 1.
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv


def parallel_env(**kwargs) -> ParallelEnv:
    """The factory."""
    return Recall(**kwargs)


class Recall(ParallelEnv):
    metadata = {"name": "memory_v0", "render_modes": ["ansi"], "is_parallelizable": True}

    def __init__(self, n_agents: int = 2, num_cues: int = 2, delay: int = 3, render_mode: str | None = None):
        if n_agents < 1 or num_cues < 2 or delay < 1:
            raise ValueError("need n_agents >= 1, num_cues >= 2, delay >= 1")
        self.num_cues, self.delay, self.render_mode = num_cues, delay, render_mode
        self.possible_agents = [f"agent_{i}" for i in range(n_agents)]
        # spaces are built once and returned as the same objects on every call (PettingZoo's tests check this)
        self._obs_space = spaces.Box(0.0, 1.0, (num_cues + 2,), np.float32)
        self._act_space = spaces.Discrete(num_cues)
        self.np_random = np.random.default_rng()
        self.cues: dict[str, int] = {}
        self.t = 0
        self.answers: dict[str, int] = {}

    def observation_space(self, agent: str) -> spaces.Space:
        return self._obs_space

    def action_space(self, agent: str) -> spaces.Space:
        return self._act_space

    def _observe(self, agent: str) -> np.ndarray:
        obs = np.zeros(self.num_cues + 2, np.float32)
        if self.t == 0:
            obs[self.cues[agent]] = 1.0
        elif self.t < self.delay:
            obs[self.num_cues] = 1.0
        else:
            obs[self.num_cues + 1] = 1.0
        return obs

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        if seed is not None:
            self.np_random = np.random.default_rng(seed)
        self.agents = list(self.possible_agents)
        self.cues = {a: int(self.np_random.integers(self.num_cues)) for a in self.agents}
        self.t, self.answers = 0, {}
        return {a: self._observe(a) for a in self.agents}, {a: {} for a in self.agents}

    def step(self, actions: dict[str, int]) -> tuple[dict, dict, dict, dict, dict]:
        query = self.t == self.delay
        rewards = dict.fromkeys(self.agents, 0.0)
        if query:
            self.answers = {a: int(actions[a]) for a in self.agents if a in actions}
            rewards = {a: float(self.answers.get(a) == self.cues[a]) for a in self.agents}
        self.t += 1
        obs = {a: self._observe(a) for a in self.agents}
        terms = dict.fromkeys(self.agents, query)
        truncs = dict.fromkeys(self.agents, False)
        infos = {a: {} for a in self.agents}
        if query:
            self.agents = []
        return obs, rewards, terms, truncs, infos

    def render(self) -> str | None:
        """ansi: the cues, the step and (after the query) the answers."""
        if self.render_mode is None:
            return None
        cues = " ".join(f"{a}={c}" for a, c in self.cues.items())
        said = " ".join(f"{a}->{v}" for a, v in self.answers.items())
        return f"t={self.t} cues: {cues}" + (f" answers: {said}" if said else "")

    def close(self) -> None:
        """Nothing to release (no window)."""
