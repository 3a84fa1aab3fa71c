"""VMAS (the Vectorized Multi-Agent Simulator) behind the batched step interface, as torch tensors on ``device``.

One VMAS env holds all ``E`` copies in batched torch tensors; this adapter keeps them so: every :class:`StepOut` field
is a torch tensor on the run's device (``EnvSpec.device``), actions come in as tensors, and nothing crosses to numpy
in the hot path. The rollout, advantage and update code is the one every numpy env uses (its conversions are no-ops
for tensors already on the device, :func:`marl.adapters.base.as_tensor`).

Semantics, as for the other adapters:

* VMAS's ``max_steps`` (``env.kwargs.max_steps``) is a time limit: ``truncated`` (the learner bootstraps); the
  scenario's own ``done`` is a termination (no bootstrap). An episode that ends both ways at once is terminated.
* Finished copies are reset automatically: in one batched ``reset()`` when every copy finished at this step (fixed
  length episodes end together), else with VMAS's ``reset_at`` for the finished copies only, then the observations
  of the whole batch are read once. ``final_obs`` / ``final_state`` hold the last observation before the reset.
* Global state: VMAS scenarios have none; the state is the concatenated observations of all agents.
* Seeding: VMAS draws every copy's reset from one RNG stream (not one seed per copy). Each adapter owns its own
  stream, seeded by ``reset(seed)``, so the same seed and actions give the same episodes, and evaluation envs or the
  learner's sampling never shift the training env's draws. There is no per-copy ``episode_seed``; ``group_size > 1``
  (GRPO's replicated starts) is refused.
* Resume: VMAS copies cannot be rebuilt mid-episode from a record of actions (one stream for all copies), so a
  resumed run resets them, with the warning :meth:`marl.algos.base.Learner.restore_env` prints.
* Episode statistics: returns and lengths accumulate on the device; a :class:`EpisodeStat` is made per finished
  episode only (one transfer per step in which episodes end).
* Rendering: ``render(index)`` is VMAS's ``render(mode="rgb_array", env_index=index)`` (pyglet; works headless
  here, else run under ``xvfb-run``).
"""

from __future__ import annotations

import contextlib
import difflib
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from marl.adapters.base import EnvSpec, EpisodeStat, GroupSpec, StepOut, agent_prefix
from marl.adapters.replay import NotRestorable
from marl.errors import ConfigError, EnvError

# make_env arguments marl sets itself (refused in env.kwargs)
RESERVED = ("num_envs", "device", "seed", "terminated_truncated", "dict_spaces", "wrapper", "multidiscrete_actions",
            "grad_enabled")


def _gym_space(space: Any, scenario: str, agent: str) -> spaces.Space:
    """VMAS's gym (0.26) space -> the gymnasium space marl's networks read."""
    kind = type(space).__name__
    if kind == "Discrete":
        return spaces.Discrete(int(space.n))
    if kind == "MultiDiscrete":
        return spaces.MultiDiscrete(np.asarray(space.nvec, np.int64))
    if kind == "Box":
        return spaces.Box(np.asarray(space.low, np.float32), np.asarray(space.high, np.float32), dtype=np.float32)
    raise EnvError(f"VMAS scenario '{scenario}': agent '{agent}' has an unsupported space {space}",
                   "marl reads Box observations and Discrete / MultiDiscrete / Box actions")


class _Record:
    """What a checkpoint keeps of a VMAS env's progress (batch steps since the last run reset); :meth:`VmasVecEnv.
    restore` reads it for its message."""

    def __init__(self) -> None:
        self.steps = 0

    def state_dict(self) -> dict:
        return {"steps": self.steps}


class VmasVecEnv:
    """``num_envs`` copies of a VMAS scenario (one batched VMAS env) as a :class:`~marl.adapters.base.VecMultiEnv`."""

    def __init__(self, cfg: dict, num_envs: int, seed: int | None = None, grouping: str = "spaces",
                 groups: dict[str, list[str]] | None = None, device: str = "cpu", render_mode: str | None = None,
                 state: bool = True):
        try:
            import vmas
            from vmas.simulator.environment.environment import Environment
        except ImportError as err:
            raise ConfigError(f"env '{cfg.get('name')}' needs VMAS, which is not installed ({err})",
                              'pip install -e ".[vmas]"') from err
        from marl.adapters.registry import _check_groups, _group_names, resolve_teams

        scenario, name = cfg.get("scenario"), str(cfg.get("name"))
        if not scenario:
            raise ConfigError("env=vmas needs a scenario (env.scenario is unset)",
                              "pass env.scenario=<name>, e.g. env.scenario=simple_spread (VMAS's scenario names)")
        known = sorted({*vmas.scenarios, *vmas.mpe_scenarios, *vmas.debug_scenarios})
        if isinstance(scenario, str) and scenario not in known:
            close = difflib.get_close_matches(scenario, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown VMAS scenario '{scenario}'{hint}", f"choose one of: {', '.join(known)}")
        kwargs = dict(cfg.get("kwargs") or {})
        bad = [k for k in kwargs if k in RESERVED]
        if bad:
            raise ConfigError(f"env.kwargs.{bad[0]} is set by marl for VMAS envs, not in env.kwargs",
                              "use the run keys instead (num_envs=, device=, seed=); drop the env.kwargs entry")
        self.device = torch.device(device)
        self._shared = Environment.vmas_random_state  # VMAS's one RNG slot for every env in the process
        self._rng = list(self._shared)
        self.seed = seed  # used by the first reset() without a seed
        try:
            with self._own_rng():
                self.env = vmas.make_env(scenario, num_envs=num_envs, device=self.device, seed=0 if seed is None
                                         else int(seed), terminated_truncated=True, dict_spaces=False,
                                         **{"clamp_actions": True, **kwargs})
        except (ConfigError, EnvError):
            raise
        except Exception as err:
            raise EnvError(f"VMAS scenario '{scenario}' failed to build with kwargs {kwargs}: {type(err).__name__}: "
                           f"{err}", "check env.scenario against VMAS's scenarios and env.kwargs against the "
                           "scenario's make_world arguments") from err
        self.render_mode = render_mode
        self.agents = tuple(a.name for a in self.env.agents)
        obs0 = self.env.get_from_scenario(get_observations=True, get_rewards=False, get_infos=False,
                                          get_dones=False)[0]
        info: dict[str, tuple[spaces.Box, spaces.Space]] = {}
        for i, a in enumerate(self.agents):
            if not torch.is_tensor(obs0[i]):
                raise EnvError(f"VMAS scenario '{scenario}': agent '{a}' has a dict observation",
                               "marl reads one Box observation per agent; use a scenario with tensor observations")
            d = int(math.prod(obs0[i].shape[1:]))
            info[a] = (spaces.Box(-np.inf, np.inf, (d,), np.float32),
                       _gym_space(self.env.action_space[i], scenario, a))

        def same(x: str, y: str) -> bool:
            return info[x] == info[y]

        if groups is not None:
            members = _check_groups(groups, list(self.agents), same, name)
        elif grouping == "prefix":
            members = {}
            for a in self.agents:
                members.setdefault(agent_prefix(a), []).append(a)
            for p, ms in members.items():
                if any(not same(ms[0], m) for m in ms):
                    raise ConfigError(f"env '{name}': agents with prefix '{p}' have different spaces",
                                      "use algo.sharing=shared or per_agent (grouping by spaces)")
        else:
            buckets: list[list[str]] = []
            for a in self.agents:
                home = next((b for b in buckets if same(b[0], a)), None)
                (buckets.append([a]) if home is None else home.append(a))
            members = dict(zip(_group_names(buckets), buckets, strict=True))
        index = {a: i for i, a in enumerate(self.agents)}
        self.members = {g: [index[a] for a in ms] for g, ms in members.items()}
        gspecs = tuple(GroupSpec(g, tuple(ms), *info[ms[0]]) for g, ms in members.items())
        self.discrete = {g.name: not isinstance(g.action_space, spaces.Box) for g in gspecs}
        teams = resolve_teams(cfg.get("teams"), list(self.agents), name)
        self.compute_state = state
        S = sum(int(info[a][0].shape[0]) for a in self.agents)
        self.spec = EnvSpec(name=name, groups=gspecs, state_shape=(S,), turn_based=False, num_envs=num_envs,
                            has_state=False, render_modes=("rgb_array",), teams=teams, device=str(self.device))
        E = num_envs
        self._true = {g: torch.ones(E, len(ms), dtype=torch.bool, device=self.device) for g, ms in members.items()}
        self.ret = torch.zeros(E, len(self.agents), device=self.device)  # running episode returns per agent
        self.length = torch.zeros(E, dtype=torch.long, device=self.device)
        self.history = _Record()

    @contextlib.contextmanager
    def _own_rng(self) -> Iterator[None]:
        """Run VMAS calls on this adapter's RNG stream: VMAS keeps one CPU RNG state for every env of the process
        (and draws CUDA copies' randomness from the global CUDA generator), swapped in here and out again."""
        saved = list(self._shared)
        self._shared[:] = self._rng
        cuda = self.device.type == "cuda"
        if cuda:
            outer = torch.cuda.get_rng_state(self.device)
            if getattr(self, "_cuda_rng", None) is not None:
                torch.cuda.set_rng_state(self._cuda_rng, self.device)
        try:
            yield
        finally:
            self._rng = list(self._shared)
            self._shared[:] = saved
            if cuda:
                self._cuda_rng = torch.cuda.get_rng_state(self.device)
                torch.cuda.set_rng_state(outer, self.device)

    # ------------------------------------------------------------------ the interface
    def reset(self, seed: int | None = None, group_size: int = 1) -> StepOut:
        """Reset every copy; ``seed`` seeds this adapter's RNG stream (None: continue it)."""
        if group_size != 1:
            raise ConfigError("VMAS envs cannot start groups of copies from the same state (group_size > 1)",
                              "use a PettingZoo or gymnasium env for GRPO's replicated starts")
        seed, self.seed = (self.seed if seed is None else seed), None
        if seed is not None and self.device.type == "cuda":
            self._cuda_rng = torch.Generator(self.device).manual_seed(int(seed)).get_state()
        with self._own_rng():
            obs = self.env.reset(seed=None if seed is None else int(seed))
        self.ret.zero_()
        self.length.zero_()
        self.history.steps = 0
        return self._out(obs, None, None, None, None, [])

    def step(self, actions: dict[str, torch.Tensor]) -> StepOut:
        """``actions[g]`` ``[E, N_g]`` int (Discrete) or ``[E, N_g, A]`` float (Box), tensors or arrays."""
        per_agent: list[torch.Tensor | None] = [None] * len(self.agents)
        for g, idx in self.members.items():
            if g not in actions:
                raise EnvError(f"env '{self.spec.name}': no actions given for group '{g}'",
                               f"pass actions for every group: {list(self.members)}")
            a = torch.as_tensor(actions[g], device=self.device)
            if self.discrete[g]:
                a = a.unsqueeze(-1) if a.dim() == 2 else a
            for j, i in enumerate(idx):
                per_agent[i] = a[:, j]
        with self._own_rng():
            obs, rews, term, trunc, _ = self.env.step(per_agent)
        self.history.steps += 1
        E = self.spec.num_envs
        reward = torch.stack([r.reshape(E) for r in rews], 1).float()  # [E, N] (some scenarios give [E, 1] each)
        self.ret += reward
        self.length += 1
        term, trunc = term.reshape(E).bool(), trunc.reshape(E).bool()
        truncated = trunc & ~term
        done = term | trunc
        final = obs
        episodes: list[EpisodeStat] = []
        if bool(done.any()):
            episodes = self._finish(done)
            with self._own_rng():
                if bool(done.all()):
                    obs = self.env.reset()
                else:
                    for i in done.nonzero().squeeze(-1).tolist():
                        self.env.reset_at(i, return_observations=False)
                    obs = self.env.get_from_scenario(get_observations=True, get_rewards=False, get_infos=False,
                                                     get_dones=False)[0]
        return self._out(obs, final, reward, term, (truncated, done), episodes)

    def _finish(self, done: torch.Tensor) -> list[EpisodeStat]:
        """EpisodeStats of the copies flagged in ``done [E]`` (one transfer), and their counters zeroed."""
        idx = done.nonzero().squeeze(-1)
        rets, lens = self.ret[idx].tolist(), self.length[idx].tolist()
        keep = ~done
        self.ret *= keep.unsqueeze(-1)
        self.length *= keep
        return [EpisodeStat(e, dict(zip(self.agents, r, strict=True)), n)
                for e, r, n in zip(idx.tolist(), rets, lens, strict=True)]

    def _out(self, obs: list[torch.Tensor], final: list[torch.Tensor] | None, reward: torch.Tensor | None,
             term: torch.Tensor | None, ends: tuple[torch.Tensor, torch.Tensor] | None,
             episodes: list[EpisodeStat]) -> StepOut:
        E, dev = self.spec.num_envs, self.device
        g_obs = self._group_obs(obs)
        g_fin = g_obs if final is None else self._group_obs(final)
        zeros_e = torch.zeros(E, dtype=torch.bool, device=dev)
        term_g = {g: (zeros_e if term is None else term).unsqueeze(-1).expand(E, len(ix)) for g, ix in
                  self.members.items()}
        rew_g = {g: (torch.zeros(E, len(ix), device=dev) if reward is None else reward[:, ix])
                 for g, ix in self.members.items()}
        truncated, done = ends if ends is not None else (zeros_e, zeros_e)
        return StepOut(obs=g_obs, action_mask={g: None for g in self.members}, alive=self._true, acting=self._true,
                       state=self._state(obs), reward=rew_g, terminated=term_g, truncated=truncated, done=done,
                       final_obs=g_fin, final_state=self._state(final if final is not None else obs),
                       episodes=episodes)

    def _group_obs(self, obs: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        E = self.spec.num_envs
        return {g: torch.stack([obs[i].reshape(E, -1) for i in ix], 1).float() for g, ix in self.members.items()}

    def _state(self, obs: list[torch.Tensor]) -> torch.Tensor:
        E = self.spec.num_envs
        if not self.compute_state:
            return torch.zeros(E, self.spec.state_shape[0], device=self.device)
        return torch.cat([o.reshape(E, -1) for o in obs], 1).float()

    def restore(self, state: dict) -> StepOut:
        """Always :class:`NotRestorable` (the caller resets the copies and says so): see the module docstring."""
        raise NotRestorable(f"VMAS copies draw their episodes from one RNG stream and cannot be rebuilt mid-episode "
                            f"(the checkpoint's copies were {state.get('steps', '?')} batch steps past their reset)")

    def render(self, index: int = 0) -> np.ndarray:
        """An RGB frame ``[H, W, 3]`` of copy ``index`` (pyglet; headless here, else under ``xvfb-run``)."""
        with self._own_rng():
            return self.env.render(mode="rgb_array", env_index=index)

    def close(self) -> None:
        viewer = getattr(self.env, "viewer", None)
        if viewer is not None:
            with contextlib.suppress(Exception):
                viewer.close()
