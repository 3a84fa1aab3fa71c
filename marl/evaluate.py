"""Deterministic evaluation episodes of a learner's policies (used during training and by scripts/evaluate.py)."""

from __future__ import annotations

import math
import sys

import numpy as np
import torch

import marl
from marl.adapters.base import EpisodeStat, VecMultiEnv
from marl.algos.base import Learner
from marl.rollout import to_env_actions


@torch.no_grad()
def run_episodes(learner: Learner, env: VecMultiEnv, episodes: int, seed: int, deterministic: bool = True) -> list:
    """Play until ``episodes`` episodes finished, each copy contributing at most ``ceil(episodes / E)`` (so short
    episodes are not over-represented). Returns the :class:`EpisodeStat` list in completion order."""
    E = env.spec.num_envs
    quota = math.ceil(episodes / E)
    per_copy = np.zeros(E, dtype=int)
    out: list[EpisodeStat] = []
    last = env.reset(seed=seed)
    learner.reset_memory()
    while len(out) < episodes:
        actions = learner.act(last.obs, last.action_mask, deterministic, last.acting)
        last = env.step(to_env_actions(actions, env.spec))
        learner.reset_memory(last.done)
        for ep in last.episodes:
            if per_copy[ep.env_index] < quota and len(out) < episodes:
                per_copy[ep.env_index] += 1
                out.append(ep)
    return out


@torch.no_grad()
def render_episodes(
    learner: Learner, env: VecMultiEnv, episodes: int, seed: int, deterministic: bool = True,
    max_frames: int | None = None,
) -> list[np.ndarray]:
    """Frames of env copy 0 (built with ``render_mode="rgb_array"``), rendered by the env itself after every step,
    for ``episodes`` episodes (or until ``max_frames``)."""
    last = env.reset(seed=seed)
    learner.reset_memory()
    frames, done = [env.render(0)], 0
    while max_frames is None or len(frames) < max_frames:
        last = env.step(to_env_actions(learner.act(last.obs, last.action_mask, deterministic, last.acting), env.spec))
        learner.reset_memory(last.done)
        done += int(last.done[0])
        if done >= episodes:
            break
        frames.append(env.render(0))
    return frames


def summarize(episodes: list[EpisodeStat], prefix: str = "eval",
              teams: tuple[tuple[str, tuple[str, ...]], ...] = ()) -> dict[str, float]:
    """``{prefix}/return``: the sum over all agents per episode, mean; ``{prefix}/agent_return``: per-agent mean;
    plus the std of that sum, the mean length, each agent's mean return and, with several ``teams`` (competitive
    envs, where the sum over everyone means little), each team's mean return ``{prefix}/team/<team>/return``."""
    team = np.array([e.team_return for e in episodes], dtype=np.float64)
    agents = list(episodes[0].returns)
    per_agent = {a: float(np.mean([e.returns[a] for e in episodes])) for a in agents}
    out = {
        f"{prefix}/return": float(team.mean()),
        f"{prefix}/return_std": float(team.std()),
        f"{prefix}/agent_return": float(np.mean(list(per_agent.values()))),
        f"{prefix}/length": float(np.mean([e.length for e in episodes])),
        f"{prefix}/episodes": float(len(episodes)),
    }
    out |= {f"{prefix}/return/{a}": v for a, v in per_agent.items()}
    if len(teams) > 1:
        out |= {f"{prefix}/team/{t}/return": float(sum(per_agent[a] for a in ms if a in per_agent)) for t, ms in teams}
    return out


sys.modules[__name__].__class__ = marl.ApiModule  # marl.evaluate(...) is the Python API (marl.api.evaluate)
