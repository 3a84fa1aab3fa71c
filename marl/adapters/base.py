"""The batched, fixed-shape step interface every env (PettingZoo AEC / parallel, gymnasium) is adapted to.

Shapes: ``E`` env copies, group ``g`` with ``N_g`` agents (fixed order from ``possible_agents``), ``S`` state size.
Every array is fixed-shape: agents that are dead or not yet spawned are padded (zeros) and flagged in ``alive``,
never dropped. A numpy env (PettingZoo, gymnasium) gives numpy arrays; a torch env (VMAS, ``EnvSpec.device`` set)
gives torch tensors on that device and takes torch actions. Consumers convert with :func:`as_tensor`, a no-op for a
tensor already on the device, so one rollout / advantage / update path serves both.

Step semantics (one call of :meth:`VecMultiEnv.step`):

* ``reward`` / ``terminated`` / ``truncated`` / ``done`` describe the transition just taken;
* ``obs`` / ``state`` / ``alive`` / ``acting`` / ``action_mask`` describe the observation the next action is chosen
  from. When copy ``e`` ended its episode at this step (``done[e]``), it was reset automatically: ``obs[e]`` is the
  first observation of the new episode and the last observation of the finished one is in ``final_obs[e]`` /
  ``final_state[e]`` (used to bootstrap a truncated episode). An agent that leaves while the episode goes on
  (``alive`` turns False) has its last observation in ``final_obs[e, n]`` of that step; when it left without
  ``terminated`` (truncated on its own), a learner bootstraps from it.
* In a turn-based (AEC) env exactly one agent per copy is ``acting``; ``reward[e, n]`` is what agent ``n`` received
  from this step, whoever moved (the return computation credits it to ``n``'s own previous action). When the game
  ends, on anyone's move, every agent gets its final reward and ``terminated`` in that same step.
* Auto-resets are seeded: episode ``k`` of copy ``e`` after ``reset(seed)`` starts from
  ``marl.adapters.replay.episode_seed(seed, e, k)`` (``seed + e`` for the first). After ``reset(seed, group_size=G)``
  the copies come in groups of ``G`` replicas: copy ``e`` uses the seeds of slot ``e // G`` (GRPO's groups start
  from the same state; other groups differ).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from gymnasium import spaces


@dataclass(frozen=True)
class GroupSpec:
    """Agents that share observation and action spaces and are batched together (one forward pass per group)."""

    name: str
    agents: tuple[str, ...]
    obs_space: spaces.Box  # one agent's observation (the "observation" part of a Dict obs with an action mask)
    action_space: spaces.Space  # Discrete | MultiDiscrete | Box
    has_action_mask: bool = False  # True when the env provides obs["action_mask"] or info["action_mask"]

    @property
    def n_agents(self) -> int:
        return len(self.agents)


Teams = tuple[tuple[str, tuple[str, ...]], ...]  # ((team name, (agent, ...)), ...)


def agent_prefix(agent: str) -> str:
    """``adversary_0`` -> ``adversary``; a name without ``_`` is its own prefix."""
    return agent.rsplit("_", 1)[0] if "_" in agent else agent


def infer_teams(agents: tuple[str, ...] | list[str]) -> Teams:
    """Teams from agent-name prefixes (the PettingZoo convention: ``adversary_0`` / ``agent_0``, ``red_0`` /
    ``blue_0``), in order of first appearance. ``player_*`` agents are each a team of their own: PettingZoo's classic
    games name their opposing players so (declare ``teams`` in the env YAML for a cooperative game such as hanabi)."""
    teams: dict[str, list[str]] = {}
    for a in agents:
        p = agent_prefix(a)
        teams.setdefault(a if p == "player" else p, []).append(a)
    return tuple((t, tuple(ms)) for t, ms in teams.items())


@dataclass(frozen=True)
class EnvSpec:
    """Static description of a vectorized env."""

    name: str
    groups: tuple[GroupSpec, ...]
    state_shape: tuple[int, ...]  # [S]: env.state() when the env has it, else the concatenated observations
    turn_based: bool  # True for AEC envs where agents move one at a time
    num_envs: int
    has_state: bool = False  # True when state comes from env.state() (not the concatenated observations)
    render_modes: tuple[str, ...] = ()
    # who shares a reward objective (independent of the policy groups); empty: inferred with infer_teams
    teams: Teams = ()
    # the torch device of a torch env's StepOut tensors and actions (VMAS); None: numpy arrays in and out
    device: str | None = None

    def __post_init__(self) -> None:
        if not self.teams:
            object.__setattr__(self, "teams", infer_teams(self.agents))

    @property
    def agents(self) -> tuple[str, ...]:
        return tuple(a for g in self.groups for a in g.agents)

    @property
    def cooperative(self) -> bool:
        """One team: every agent shares one objective."""
        return len(self.teams) == 1

    def team_index(self) -> tuple[int, ...]:
        """The team of every agent of :attr:`agents` (in that order), as an index into :attr:`teams`."""
        where = {a: k for k, (_, ms) in enumerate(self.teams) for a in ms}
        return tuple(where[a] for a in self.agents)

    def describe_teams(self) -> str:
        """One line for the start of a run, e.g. ``adversary (adversary_0, adversary_1) vs agent (agent_0)``."""
        parts = [f"{t} ({', '.join(ms)})" for t, ms in self.teams]
        return parts[0] + " — cooperative" if len(parts) == 1 else " vs ".join(parts)

    def group(self, name: str) -> GroupSpec:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(name)


def as_tensor(x: np.ndarray | torch.Tensor, device: torch.device | str, dtype: torch.dtype | None = None
              ) -> torch.Tensor:
    """An env array (numpy) or tensor (a torch env's) as a tensor on ``device``; no copy for a tensor already there
    with that dtype. numpy bool / int / float keep their dtype unless ``dtype`` is given."""
    return torch.as_tensor(x, dtype=dtype, device=device)


@dataclass
class EpisodeStat:
    """One finished episode of one env copy."""

    env_index: int
    returns: dict[str, float]  # agent -> undiscounted episode return
    length: int  # env steps (AEC: moves) in the episode

    @property
    def team_return(self) -> float:
        return float(sum(self.returns.values()))


@dataclass
class StepOut:
    """What :meth:`VecMultiEnv.reset` / :meth:`VecMultiEnv.step` return. Per-group dicts are keyed by group name.
    The types say numpy; a torch env (``EnvSpec.device`` set) gives torch tensors of the same shapes and dtypes."""

    obs: dict[str, np.ndarray]  # [E, N_g, *obs_shape] float32
    action_mask: dict[str, np.ndarray | None]  # [E, N_g, A] bool (A = n for Discrete, sum(nvec) for MultiDiscrete)
    alive: dict[str, np.ndarray]  # [E, N_g] bool
    acting: dict[str, np.ndarray]  # [E, N_g] bool
    state: np.ndarray  # [E, S] float32
    reward: dict[str, np.ndarray]  # [E, N_g] float32 (zeros after reset)
    terminated: dict[str, np.ndarray]  # [E, N_g] bool
    truncated: np.ndarray  # [E] bool: the episode hit a time limit at this step
    done: np.ndarray  # [E] bool: the episode ended at this step (copy was auto-reset)
    final_obs: dict[str, np.ndarray]  # [E, N_g, *obs_shape]; valid where done, and for agents that left at this step
    final_state: np.ndarray  # [E, S]; valid where done
    episodes: list[EpisodeStat] = field(default_factory=list)


class VecMultiEnv(Protocol):
    """E copies of one env stepped as a batch; every adapter (gymnasium included, as one group of one agent) is one."""

    spec: EnvSpec

    def reset(self, seed: int | None = None, group_size: int = 1) -> StepOut:
        """Reset every copy; copy ``e`` is seeded with ``seed + e // group_size`` (None: unseeded)."""
        ...

    def step(self, actions: dict[str, np.ndarray]) -> StepOut:
        """Apply ``actions[group]`` of shape ``[E, N_g, *action_shape]`` (int64 for discrete, float32 for Box).

        Entries of agents that are not ``acting`` are ignored.
        """
        ...

    def render(self, index: int = 0) -> np.ndarray | str | None:
        """Render copy ``index`` with the render_mode the env was built with."""
        ...

    # Optional, for exact resumes (every marl backend has both; see marl.adapters.replay): ``history``, a
    # ``History`` that ``reset`` and ``step`` keep up to date, and ``restore(history_state) -> StepOut``, which
    # rebuilds every copy mid-episode from it (raising ``NotRestorable`` when it cannot).

    def close(self) -> None: ...


def random_actions(spec: EnvSpec, last: StepOut, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Uniformly random legal actions ``{group: [E, N_g, ...]}`` for the observation in ``last`` (a random baseline
    for benchmarks and tests): masked Discrete and MultiDiscrete groups sample among legal actions only (per
    sub-action for MultiDiscrete, whose mask ``[E, N_g, sum(nvec)]`` is the sub-actions' masks side by side)."""
    acts = {}
    e = spec.num_envs
    for g in spec.groups:
        sp = g.action_space
        mask = last.action_mask[g.name] if g.has_action_mask else None
        if mask is not None and isinstance(sp, spaces.Discrete):
            acts[g.name] = (rng.random(mask.shape) * mask).argmax(-1)
        elif isinstance(sp, spaces.Discrete):
            acts[g.name] = rng.integers(0, sp.n, (e, g.n_agents))
        elif mask is not None and isinstance(sp, spaces.MultiDiscrete):
            parts = np.split(mask, np.cumsum(sp.nvec.ravel())[:-1], axis=-1)
            acts[g.name] = np.stack([(rng.random(m.shape) * m).argmax(-1) for m in parts], -1).reshape(
                e, g.n_agents, *sp.shape)
        elif isinstance(sp, spaces.MultiDiscrete):
            acts[g.name] = rng.integers(0, sp.nvec, (e, g.n_agents, *sp.shape))
        else:
            acts[g.name] = rng.uniform(sp.low, sp.high, (e, g.n_agents, *sp.shape)).astype(np.float32)
    return acts
