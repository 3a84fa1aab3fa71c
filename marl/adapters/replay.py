"""Env copies rebuilt mid-episode, for resumes that continue exactly where a checkpoint left off.

Every episode's reset seed is derived from the seed of the last run reset (:func:`episode_seed`), so an episode is
fixed by that seed and the actions taken in it. The main process records, per copy, the actions it sent since the
copy's last reset (:class:`History`, one for every backend); a backend's ``restore(state)`` resets each copy with
its episode seed and replays its actions. A copy cannot be rebuilt when the envs were reset without a seed or its
episode outgrew the record (``max_steps``): :class:`NotRestorable` says why. A checkpoint also keeps the StepOut
the learner acts from next (:func:`step_out_state`); the restored env's observation must equal it bit for bit
(:func:`first_difference`), or the env is not deterministic given its seed and actions.
"""

from __future__ import annotations

import numpy as np
import torch

from marl.adapters.base import StepOut

MAX_STEPS = 1000  # recorded steps per copy; a copy further into its episode cannot be restored
OBSERVED = ("obs", "action_mask", "alive", "acting", "state")  # what the next action is chosen from


class NotRestorable(Exception):
    """The env copies cannot be rebuilt as they were (the reason is the message); the caller resets them."""


def episode_seed(seed: int | None, copy: int, episode: int) -> int | None:
    """Reset seed of episode ``episode`` (0, 1, ...) of copy ``copy`` after a run reset with ``seed``: ``seed + copy``
    for the first episode, then a hash of (seed, copy, episode) in [0, 2**31) (some envs take a C int); None for an
    unseeded run. After a reset in groups of ``G`` copies (GRPO), ``copy`` is the seed slot ``e // G``: the copies of
    a group replay the same seeds."""
    if seed is None:
        return None
    if episode == 0:
        return int(seed) + copy
    return int(np.random.SeedSequence([int(seed) % 2**64, copy, episode]).generate_state(1, np.uint32)[0] >> 1)


class History:
    """Per copy: episodes finished since the last run reset ``[E]``, steps since its own last reset ``[E]``, and
    the actions ``{group: [E, max_steps, N_g, *action]}`` of those steps (as sent to the env)."""

    def __init__(self, num_envs: int, max_steps: int = MAX_STEPS):
        self.num_envs, self.max_steps = num_envs, max_steps
        self.seed: int | None = None
        self.group = 1  # copies e share the seeds of seed slot e // group (see VecMultiEnv.reset)
        self.episode = np.zeros(num_envs, np.int64)
        self.length = np.zeros(num_envs, np.int64)
        self.actions: dict[str, np.ndarray] = {}

    def reset(self, seed: int | None, group_size: int = 1) -> None:
        """All copies were reset with ``seed`` in groups of ``group_size`` (copy e: ``seed + e // group_size``)."""
        self.seed, self.group = seed, int(group_size)
        self.episode[:] = 0
        self.length[:] = 0

    def record(self, actions: dict[str, np.ndarray], done: np.ndarray) -> None:
        """One batch step: ``actions[g]`` ``[E, N_g, ...]`` were sent; copies flagged in ``done`` ``[E]`` reset."""
        if self.seed is None:
            return
        rows = np.flatnonzero(self.length < self.max_steps)
        for g, a in actions.items():
            a = np.asarray(a)
            if g not in self.actions:
                self.actions[g] = np.zeros((self.num_envs, self.max_steps, *a.shape[1:]), a.dtype)
            self.actions[g][rows, self.length[rows]] = a[rows]
        self.length += 1
        self.length[done] = 0
        self.episode[done] += 1

    def state_dict(self) -> dict:
        """weights_only-safe: seed, episode and length tensors ``[E]``, and per copy ``{g: [L_e, N_g, ...]}`` (empty
        for a copy past ``max_steps``)."""
        keep = np.minimum(self.length, self.max_steps)
        return {
            "seed": self.seed,
            "group": self.group,
            "episode": torch.from_numpy(self.episode.copy()),
            "length": torch.from_numpy(self.length.copy()),
            "actions": [{g: torch.from_numpy(a[e, :keep[e]].copy()) for g, a in self.actions.items()}
                        for e in range(self.num_envs)],
        }

    def load_state_dict(self, state: dict) -> None:
        self.seed = state["seed"]
        self.group = int(state.get("group", 1))
        self.episode[:] = state["episode"].numpy()
        self.length[:] = state["length"].numpy()
        for e, acts in enumerate(state["actions"]):
            for g, a in acts.items():
                if g not in self.actions:
                    self.actions[g] = np.zeros((self.num_envs, self.max_steps, *a.shape[1:]), a.numpy().dtype)
                self.actions[g][e, :len(a)] = a.numpy()


def plans(state: dict, num_envs: int) -> list[tuple[int, int, dict[str, np.ndarray], int]]:
    """Per copy ``(run seed, episode, {g: actions [L_e, N_g, ...]}, group size)`` from a :meth:`History.state_dict`
    (the copy resets with ``episode_seed(run seed, e // group size, episode)`` and replays the actions);
    :class:`NotRestorable` when the envs were unseeded or a copy's episode outgrew the record."""
    seed = state["seed"]
    if seed is None:
        raise NotRestorable("the env copies were reset without a seed")
    if len(state["length"]) != num_envs:
        raise NotRestorable(f"the checkpoint has {len(state['length'])} env copies, this run {num_envs}")
    out = []
    for e in range(num_envs):
        length, acts = int(state["length"][e]), state["actions"][e]
        if any(len(a) != length for a in acts.values()):
            raise NotRestorable(f"copy {e} was {length} steps into its episode, more than the record keeps "
                                f"({min(len(a) for a in acts.values())} steps)")
        out.append((int(seed), int(state["episode"][e]), {g: a.numpy() for g, a in acts.items()},
                    int(state.get("group", 1))))
    return out


def step_out_state(out: StepOut) -> dict:
    """A StepOut as tensors and plain data (weights_only-safe); its ``episodes`` are left out."""
    def t(x):
        if torch.is_tensor(x):  # a torch env's StepOut (VMAS)
            return x.detach().cpu().clone()
        return None if x is None else torch.from_numpy(np.array(x))

    return {k: ({g: t(v) for g, v in val.items()} if isinstance(val, dict) else t(val))
            for k, val in vars(out).items() if k != "episodes"}


def step_out_from_state(state: dict) -> StepOut:
    """The StepOut :func:`step_out_state` saved (numpy arrays again, no episodes)."""
    def a(x):
        return None if x is None else x.numpy()

    return StepOut(**{k: ({g: a(v) for g, v in val.items()} if isinstance(val, dict) else a(val))
                      for k, val in state.items()})


def first_difference(a: StepOut, b: StepOut) -> str | None:
    """The first of the observed fields (:data:`OBSERVED`) in which ``a`` and ``b`` differ, e.g. "obs of group
    'agent'"; None when they agree bit for bit."""
    for k in OBSERVED:
        x, y = getattr(a, k), getattr(b, k)
        pairs = [(f"{k} of group '{g}'", x[g], y.get(g)) for g in x] if isinstance(x, dict) else [(k, x, y)]
        for name, u, v in pairs:
            if (u is None) != (v is None) or (u is not None and not np.array_equal(u, v)):
                return name
    return None
