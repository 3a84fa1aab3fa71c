"""The Learner contract: an algorithm bound to a vectorized env, driven by :func:`marl.train.run`.

The train loop owns the run (logging, evaluation, checkpoints, progress); a learner owns everything that learns:
networks, optimizers, normalizers, the env's current observation and its step counter. ``iteration()`` collects
experience and updates; the loop calls it until ``env_steps >= total_steps``.

A checkpoint (:meth:`Learner.state_dict`) also holds the env's current observation (``self.last``) and the env's
record of the actions since each copy's last reset, so that :meth:`Learner.restore_env` can rebuild the env copies
mid-episode on resume and ``iteration()`` continues exactly as it would have.
"""

from __future__ import annotations

import random
import sys
from abc import ABC, abstractmethod
from collections import deque

import numpy as np
import torch
from gymnasium import spaces
from omegaconf import DictConfig

from marl.adapters.base import EnvSpec, EpisodeStat, StepOut, VecMultiEnv
from marl.adapters.replay import NotRestorable, first_difference, step_out_from_state, step_out_state
from marl.config import ALGOS
from marl.errors import ConfigError


class Learner(ABC):
    """Base class of every algorithm (on-policy and off-policy, single- and multi-agent)."""

    def __init__(self, cfg: DictConfig, env: VecMultiEnv, device: str):
        check_capabilities(cfg, env.spec)
        self.cfg, self.algo, self.env, self.device = cfg, cfg.algo, env, torch.device(device)
        self.spec = env.spec
        self.env_steps = 0
        self.iterations = 0
        self.episodes: list[EpisodeStat] = []
        self.recent_returns: deque[float] = deque(maxlen=20)  # team returns of the last 20 finished episodes
        self.gen = torch.Generator().manual_seed(int(cfg.seed))  # minibatch shuffles etc.
        self.last: StepOut | None = None
        # where rollouts come from: None = this learner's own collect(); env.backend=ray sets a
        # marl.distributed.driver.RayVecEnv, whose gather() fills the same buffer from Ray workers
        self.collector = None

    # ------------------------------------------------------------------ to implement
    @abstractmethod
    def iteration(self) -> dict[str, float]:
        """Collect experience and update once; advance ``env_steps``; return loss metrics (CleanRL names)."""

    @abstractmethod
    def act(
        self, obs: dict[str, torch.Tensor], action_mask: dict[str, torch.Tensor | None], deterministic: bool,
        acting: dict[str, np.ndarray] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Actions per group ``[E, N_g, ...]`` for observations ``[E, N_g, *obs]`` (``alive``-padded). A recurrent
        policy advances the state of the ``acting [E, N_g]`` agents only (None: all); feed-forward ones ignore it."""

    def reset_memory(self, starts: np.ndarray | None = None) -> None:
        """Clear :meth:`act`'s recurrent state for the copies where an episode starts (``starts [E]`` bool; None:
        all). Call it after every env reset and step (``learner.reset_memory(out.done)``); feed-forward: nothing."""
        return None

    @abstractmethod
    def modules(self) -> dict[str, torch.nn.Module | torch.optim.Optimizer]:
        """Every module and optimizer whose state a checkpoint must hold, by a stable name."""

    def extra_state(self) -> dict:
        """Other state to checkpoint (normalizers, KL coefficient, replay buffer, ...)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        return None

    # ------------------------------------------------------------------ shared
    def gather(self):
        """The next rollout: :meth:`collect` here, or the Ray workers' (``env.backend=ray``)."""
        return self.collect() if self.collector is None else self.collector.gather()

    def reset_env(self, seed: int) -> None:
        """Reset every env copy (copy ``e`` gets ``seed + e``); in-flight episodes are dropped."""
        self.last = self.env.reset(seed=seed)

    def env_state(self) -> dict:
        """The env's current observation ``last`` and its action record (``history``), weights_only-safe; empty
        before the first reset."""
        if self.last is None:
            return {}
        history = getattr(self.env, "history", None)
        return {"last": step_out_state(self.last), "history": None if history is None else history.state_dict()}

    def restore_env(self, state: dict, seed: int) -> None:
        """Rebuild the env copies as :meth:`env_state` saw them and continue from that observation. When that is
        not possible (no record, unseeded envs, an episode longer than the record, or an env that does not replay
        the same observations) every copy is reset with ``seed`` instead, with a warning on stderr."""
        try:
            if not state or state.get("history") is None or not hasattr(self.env, "restore"):
                raise NotRestorable("the checkpoint or this env has no record of the episodes in progress")
            last = step_out_from_state(state["last"])
            out = self.env.restore(state["history"])
            diff = first_difference(out, last)
            if diff:
                raise NotRestorable(f"replaying the recorded actions gave other {diff} than the checkpoint holds: "
                                    "the env is not deterministic given its reset seed and actions")
            self.last = last
        except NotRestorable as why:
            print(f"warning: the env copies could not be restored mid-episode ({why}); they were reset (seed {seed}), "
                  "so this resumed run no longer matches an uninterrupted one", file=sys.stderr)
            self.reset_env(seed)

    def pop_episodes(self) -> list[EpisodeStat]:
        """Episodes finished since the last call (also remembered in ``recent_returns``)."""
        eps, self.episodes = self.episodes, []
        self.recent_returns.extend(e.team_return for e in eps)
        return eps

    def state_dict(self) -> dict:
        """Everything needed to resume: weights, optimizers, counters, RNG states, extra state (weights_only-safe)."""
        return {
            "modules": {k: m.state_dict() for k, m in self.modules().items()},
            "counters": {"env_steps": self.env_steps, "iterations": self.iterations},
            "recent_returns": list(self.recent_returns),
            "rng": rng_state(self.gen),
            "extra": self.extra_state(),
            "env": self.env_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        for k, m in self.modules().items():
            m.load_state_dict(state["modules"][k])
        self.env_steps = int(state["counters"]["env_steps"])
        self.iterations = int(state["counters"]["iterations"])
        self.recent_returns.extend(float(x) for x in state.get("recent_returns", []))
        set_rng_state(state["rng"], self.gen)
        self.load_extra_state(state["extra"])

    def to_tensor(self, x: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.as_tensor(x, dtype=dtype, device=self.device)


def check_capabilities(cfg: DictConfig, spec: EnvSpec) -> None:
    """Refuse an algorithm / env combination the algorithm cannot serve, with the reason."""
    info, name = ALGOS[cfg.algo.name], cfg.algo.name
    for g in spec.groups:
        box = isinstance(g.action_space, spaces.Box)
        if box and not info.continuous:
            raise ConfigError(f"algo={name} cannot act in the continuous (Box) action space of group '{g.name}'",
                              "pick an algorithm for continuous actions (ppo, ippo, mappo, happo, ddpg, td3, sac, "
                              "maddpg, matd3)")
        if not box and not info.discrete:
            raise ConfigError(
                f"algo={name} needs continuous (Box) actions, but env '{cfg.env.name}' group '{g.name}' has "
                f"{type(g.action_space).__name__} actions (a deterministic policy cannot output a discrete choice)",
                "use algo=ppo (or a2c / reinforce; off-policy: sac, maddpg, matd3) for discrete actions, or an env "
                "with continuous actions",
            )
    if spec.turn_based and not info.turn_based:
        why = ("" if info.on_policy else ": its replay stores one-step transitions, while in a turn-based game the "
               "reward for a move arrives during the other players' moves and the next state is the agent's next turn")
        raise ConfigError(f"algo={name} does not support turn-based (AEC) envs like '{cfg.env.name}'{why}",
                          "use algo=ppo, ippo or mappo for turn-based games")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(gen: torch.Generator) -> dict:
    """Global torch / numpy / python RNG states plus ``gen``'s, as tensors and primitives (weights_only-safe)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "gen": gen.get_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def set_rng_state(state: dict, gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    gen.set_state(state["gen"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), int(n[2]), int(n[3]), float(n[4])))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
