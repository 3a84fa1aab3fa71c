"""Env config -> env copies: entry points, SuperSuit preprocessing, agent grouping, API checks, vectorization.

``configs/env/<name>.yaml`` holds one :class:`~marl.config.EnvConfig` per short name (``env=NAME`` in Hydra). A
PettingZoo entry point is ``"module.path:factory"``; the factory returns an AECEnv (-> :mod:`marl.adapters.aec`) or a
ParallelEnv (-> :mod:`marl.adapters.parallel`). ``kind: gymnasium`` entry points are gymnasium ids
(-> :mod:`marl.adapters.gym`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import functools
import importlib
import io
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pettingzoo import AECEnv, ParallelEnv

from marl.adapters.base import GroupSpec, Teams, VecMultiEnv, agent_prefix, infer_teams
from marl.adapters.direct import direct
from marl.adapters.vector import AgentSlot, InProcessVecEnv, Layout, SubprocVecEnv
from marl.config import EnvConfig, cpu_count
from marl.errors import ConfigError, EnvError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "env"
GROUPINGS = ("spaces", "prefix")
BACKENDS = ("auto", "inprocess", "subprocess")


# ------------------------------------------------------------------------------------------------- config


def available_envs() -> list[str]:
    """Short names with a YAML under configs/env/."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def resolve_env_config(name: str) -> DictConfig:
    """Load ``configs/env/<name>.yaml`` merged into the :class:`EnvConfig` schema."""
    path = CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown env '{name}'", f"choose one of: {', '.join(available_envs())}")
    return _typed(OmegaConf.load(path))


def _typed(env_cfg: Any) -> DictConfig:
    try:
        return OmegaConf.merge(OmegaConf.structured(EnvConfig), env_cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(f"invalid env config: {str(err).splitlines()[0]}",
                          "env keys are: " + ", ".join(EnvConfig.__dataclass_fields__)) from None


def _env_cfg(env_cfg: Any) -> DictConfig:
    """Any of EnvConfig / DictConfig / dict -> a DictConfig typed by EnvConfig, with the entry point checked."""
    cfg = _typed(env_cfg)
    if OmegaConf.is_missing(cfg, "entry_point"):
        name = cfg.name if not OmegaConf.is_missing(cfg, "name") else "?"
        raise ConfigError(f"env '{name}' has no entry point (env.entry_point is unset)",
                          "pass env.entry_point=my_pkg.my_module:env_factory (PettingZoo) or a gymnasium id")
    if OmegaConf.is_missing(cfg, "name"):
        cfg.name = str(cfg.entry_point).split(":")[0].split(".")[-1]
    if cfg.kind not in ("pettingzoo", "gymnasium", "vmas"):
        raise ConfigError(f"env.kind='{cfg.kind}' is not valid", "choose one of: pettingzoo, gymnasium, vmas")
    if cfg.backend not in BACKENDS:
        raise ConfigError(f"env.backend='{cfg.backend}' is not valid", f"choose one of: {', '.join(BACKENDS)}")
    if cfg.kind == "pettingzoo" and cfg.max_episode_steps is not None:
        raise ConfigError("env.max_episode_steps only applies to gymnasium envs",
                          "use the PettingZoo env's own time-limit kwarg, e.g. env.kwargs.max_cycles=100")
    return cfg


def _plain(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)  # picklable, for worker processes


# -------------------------------------------------------------------------------------------- env building


def load_entry_point(entry_point: str) -> Any:
    """``"pkg.module:attr"`` -> the attribute, or an EnvError naming what is wrong. Modules in the current directory
    import without ``PYTHONPATH`` (it is searched after the installed packages)."""
    module_name, sep, attr = entry_point.partition(":")
    if not sep or not module_name or not attr:
        raise EnvError(f"entry point '{entry_point}' is not of the form 'module.path:factory'",
                       "e.g. env.entry_point=envs.nim:env")
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as err:
        raise EnvError(f"entry point '{entry_point}': module '{module_name}' does not import: "
                       f"{type(err).__name__}: {err}",
                       "check the module path and that its package is installed") from err
    try:
        return getattr(module, attr)
    except AttributeError:
        public = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))]
        raise EnvError(f"entry point '{entry_point}': module '{module_name}' has no attribute '{attr}'",
                       f"callables in that module: {', '.join(public[:20])}") from None


def _build_pz_env(cfg: dict, render_mode: str | None = None) -> AECEnv | ParallelEnv:
    """One PettingZoo env from a plain env config: factory, type check, preprocessing, padding."""
    ep = cfg["entry_point"]
    factory = load_entry_point(ep)
    kwargs = dict(cfg.get("kwargs") or {})
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    try:
        env = factory(**kwargs)
    except ImportError as err:  # optional backends: hanabi needs open_spiel, the card games rlcard
        raise EnvError(f"entry point '{ep}' needs a package that is not installed: {err}",
                       "install the package named above into this environment") from err
    except Exception as err:
        raise EnvError(f"entry point '{ep}' raised while building the env with kwargs {kwargs}: "
                       f"{type(err).__name__}: {err}", "check env.kwargs against the factory's signature") from err
    if not isinstance(env, AECEnv | ParallelEnv):
        raise EnvError(f"entry point '{ep}' returned a {type(env).__name__}, not a PettingZoo AECEnv or ParallelEnv",
                       "return an AECEnv or a ParallelEnv (or set env.kind=gymnasium for a gymnasium id)")
    env = _preprocess(env, cfg.get("preprocess") or {})
    if cfg.get("pad"):
        import supersuit as ss

        env = ss.agent_indicator_v0(ss.pad_action_space_v0(ss.pad_observations_v0(env)), type_only=False)
    return env


def _preprocess(env: Any, pp: dict) -> Any:
    """SuperSuit image preprocessing in a fixed order: color reduction, resize, [H,W]->[H,W,1], frame stack, float."""
    import supersuit as ss

    if pp.get("color_reduction"):
        env = ss.color_reduction_v0(env, mode=pp["color_reduction"])
    if pp.get("resize"):
        h, w = pp["resize"]
        env = ss.resize_v1(env, x_size=w, y_size=h)
    space = env.observation_space(env.possible_agents[0])
    if pp.get("color_reduction") and len(space.shape) == 2:
        env = ss.reshape_v0(env, (*space.shape, 1))
    if pp.get("frame_stack", 1) > 1:
        env = ss.frame_stack_v1(env, pp["frame_stack"])
    space = env.observation_space(env.possible_agents[0])
    if pp.get("dtype_float", True) and isinstance(space, spaces.Box) and space.dtype == np.uint8:
        env = ss.normalize_obs_v0(ss.dtype_v0(env, np.float32), env_min=0.0, env_max=1.0)
    return env


def make_env(env_cfg: Any, render_mode: str | None = None) -> Any:
    """ONE raw env copy with preprocessing applied: a PettingZoo AECEnv / ParallelEnv, or a gymnasium.Env (VMAS: its
    batched env of one copy, on the CPU)."""
    cfg = _env_cfg(env_cfg)
    if cfg.kind == "vmas":
        return make_vec_env(cfg, 1, render_mode=render_mode)
    if cfg.kind == "gymnasium":
        from marl.adapters.gym import make_gym_env

        return make_gym_env(_plain(cfg), render_mode)
    return _build_pz_env(_plain(cfg), render_mode)


def wants_check(env_cfg: Any) -> bool:
    """``env.check``, or where it is null (the default): True for a user's own env, i.e. an entry point outside the
    ``pettingzoo`` and ``mpe2`` packages, whose envs PettingZoo's own tests already cover."""
    cfg = _env_cfg(env_cfg)
    if cfg.check is not None:
        return bool(cfg.check)
    return cfg.kind == "pettingzoo" and str(cfg.entry_point).split(".")[0].split(":")[0] not in ("pettingzoo", "mpe2")


def check_env(env_cfg: Any) -> None:
    """Run PettingZoo's api_test (AEC) or parallel_api_test on a fresh instance, then marl's own checks
    (:func:`check_episode`); a failure -> EnvError."""
    from pettingzoo.test import api_test, parallel_api_test

    cfg = _env_cfg(env_cfg)
    env = _build_pz_env(_plain(cfg))
    test = api_test if isinstance(env, AECEnv) else parallel_api_test
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            test(env, num_cycles=100)
    except Exception as err:
        where = traceback.extract_tb(err.__traceback__)[-1]
        text = str(err) or (where.line or "")
        raise EnvError(f"entry point '{cfg.entry_point}' fails PettingZoo's {test.__name__}: "
                       f"{type(err).__name__}: {text} (at {Path(where.filename).name}:{where.lineno})",
                       "fix the env so it follows the PettingZoo API (see pettingzoo.test), or set env.check=false "
                       "to skip the check") from err
    finally:
        with contextlib.suppress(Exception):
            env.close()
    env = _build_pz_env(_plain(cfg))
    try:
        problem = check_episode(env)
    finally:
        with contextlib.suppress(Exception):
            env.close()
    if problem is not None:
        raise EnvError(f"entry point '{cfg.entry_point}' fails marl's env check: {problem}",
                       "fix the env, or set env.check=false to skip the check")


def check_episode(env: AECEnv | ParallelEnv, steps: int = 100, seed: int = 0) -> str | None:
    """Play ``steps`` random legal moves (resetting after each episode) and return the first problem PettingZoo's API
    tests let through, naming the agent and step: an observation outside its space, a reward / termination /
    truncation dict missing a live agent, or an agent outside ``possible_agents``; None when there is none."""
    possible = list(env.possible_agents)
    rng = np.random.default_rng(seed)

    def stranger(agents: Any, what: str, t: int) -> str | None:
        odd = [a for a in agents if a not in possible]
        return (f"at step {t} it reports {what} for agent '{odd[0]}', which is not in possible_agents "
                f"({', '.join(possible)})") if odd else None

    def off_space(agent: str, obs: Any, t: int) -> str | None:
        space = env.observation_space(agent)
        if space.contains(obs):
            return None
        arr = obs.get("observation") if isinstance(obs, dict) else obs
        seen = (f"shape {np.shape(arr)}, values in [{np.min(arr):.3g}, {np.max(arr):.3g}]"
                if isinstance(arr, np.ndarray) and arr.size else repr(obs)[:80])
        return f"agent '{agent}''s observation at step {t} is outside its observation space {space} ({seen})"

    def sample(agent: str, obs: Any, info: dict) -> Any:
        space = env.action_space(agent)
        space.seed(int(rng.integers(2**31)))
        mask = obs.get("action_mask") if isinstance(obs, dict) else (info or {}).get("action_mask")
        if mask is None:
            return space.sample()
        if isinstance(mask, tuple):  # MultiDiscrete: one mask per sub-action, as gymnasium's sample takes it
            return space.sample(tuple(np.asarray(m, np.int8) for m in mask))
        return space.sample(np.asarray(mask, np.int8))

    if isinstance(env, AECEnv):
        env.reset(seed=seed)
        t = 0
        for _ in range(steps):
            if not env.agents:
                env.reset()
                t = 0
            agent = env.agent_selection
            problem = stranger([agent], "a turn", t)
            obs, _, term, trunc, info = env.last()
            problem = problem or off_space(agent, obs, t)
            for what, d in (("rewards", env.rewards), ("terminations", env.terminations),
                            ("truncations", env.truncations)):
                missing = [a for a in env.agents if a not in d]
                problem = problem or stranger(d, what, t) or (
                    f"at step {t} its {what} dict has no entry for live agent '{missing[0]}'" if missing else None)
            if problem:
                return problem
            env.step(None if term or trunc else sample(agent, obs, info))
            t += 1
        return None
    obs, infos = env.reset(seed=seed)
    t = 0
    for _ in range(steps):
        problem = stranger(obs, "an observation", t)
        problem = problem or next((p for a, o in obs.items() if (p := off_space(a, o, t))), None)
        if problem:
            return problem
        if not env.agents:
            obs, infos = env.reset()
            t = 0
            continue
        live = list(env.agents)
        actions = {a: sample(a, obs.get(a), infos.get(a)) for a in live}
        obs, rewards, terms, truncs, infos = env.step(actions)
        t += 1
        for what, d in (("rewards", rewards), ("terminations", terms), ("truncations", truncs), ("infos", infos)):
            missing = [a for a in live if a not in d]
            problem = stranger(d, what, t) or (
                f"at step {t} its {what} dict has no entry for live agent '{missing[0]}'" if missing else None)
            if problem:
                return problem
    return None


# ------------------------------------------------------------------------------------------------ layout


def _obs_kind(space: spaces.Space, agent: str, name: str) -> tuple[str, spaces.Box, bool]:
    """(kind, float32 Box the learner sees, mask-in-obs) for one agent's observation space."""
    if isinstance(space, spaces.Dict) and "observation" in space.spaces:
        kind, box, _ = _obs_kind(space["observation"], agent, name)
        if kind != "box":
            raise EnvError(f"env '{name}': agent '{agent}' has a non-Box 'observation' inside its Dict obs: {space}")
        return "dict", box, "action_mask" in space.spaces
    if isinstance(space, spaces.Box):
        return "box", spaces.Box(space.low.astype(np.float32), space.high.astype(np.float32), dtype=np.float32), False
    if isinstance(space, spaces.MultiBinary):
        return "box", spaces.Box(0.0, 1.0, tuple(np.atleast_1d(space.shape)), np.float32), False
    if isinstance(space, spaces.Discrete):
        return "discrete", spaces.Box(0.0, 1.0, (int(space.n),), np.float32), False
    raise EnvError(f"env '{name}': agent '{agent}' has an unsupported observation space {space}",
                   "use a Box, Discrete, MultiBinary or Dict(observation=Box, action_mask=...) observation space")


def _action_kind(space: spaces.Space, agent: str, name: str) -> tuple[str, Any, Any]:
    if isinstance(space, spaces.Discrete):
        return "discrete", int(space.start), np.int64
    if isinstance(space, spaces.MultiDiscrete):
        return "multidiscrete", np.asarray(space.start, np.int64), np.int64
    if isinstance(space, spaces.Box):
        return "box", 0, space.dtype
    raise EnvError(f"env '{name}': agent '{agent}' has an unsupported action space {space}",
                   "use a Discrete, MultiDiscrete or Box action space")


def _group_names(buckets: list[list[str]]) -> list[str]:
    """Each group is named by its members' common prefix; groups without one, or sharing one, get ``group{k}``."""
    cands = []
    for ms in buckets:
        prefixes = {agent_prefix(a) for a in ms}
        cands.append(prefixes.pop() if len(prefixes) == 1 else None)
    return [c if c is not None and cands.count(c) == 1 else f"group{k}" for k, c in enumerate(cands)]


def _probe(env: AECEnv | ParallelEnv, seed: int | None) -> tuple[dict[str, dict], np.ndarray | None]:
    """Reset once; return each agent's info after reset and the state to use (None: concatenated observations)."""
    if isinstance(env, AECEnv):
        env.reset(seed=seed)
        infos = dict(env.infos)
        obs = {a: env.observe(a) for a in env.agents}
    else:
        obs, infos = env.reset(seed=seed)
    try:
        state = np.asarray(env.state(), dtype=np.float32)
    except Exception:  # noqa: BLE001 - no usable state() (not implemented, or broken as in rps_v2): use observations
        return infos, None
    if state.ndim > 1:  # an image state (pistonball: the whole screen) is too big for a critic input
        return infos, None
    flat = [np.asarray(obs[a], np.float32).ravel() for a in env.possible_agents
            if a in obs and not isinstance(obs[a], dict)]
    if len(flat) == len(env.possible_agents) and np.array_equal(state, np.concatenate(flat)):
        return infos, None  # state() is the concatenated observations (MPE): build it from them, don't recompute it
    return infos, state


def resolve_teams(declared: dict[str, list[str]] | None, agents: list[str] | tuple[str, ...], name: str) -> Teams:
    """The env's teams: ``declared`` (``env.teams`` of its YAML: ``{team: [agent or pattern, ...]}``, patterns such as
    ``adversary_*`` or ``*``) checked against its agents, else inferred from the agent names
    (:func:`marl.adapters.base.infer_teams`)."""
    if not declared:
        return infer_teams(agents)
    seen: dict[str, str] = {}
    expanded: dict[str, list[str]] = {}
    for team, patterns in declared.items():
        members = expanded.setdefault(team, [])
        for pat in patterns:  # an agent name, or a shell-style pattern (adversary_*, *)
            hits = fnmatch.filter(agents, pat) if any(ch in pat for ch in "*?[") else [pat]
            if not hits or hits[0] not in agents:
                raise ConfigError(f"env.teams['{team}'] names agent '{pat}', which env '{name}' does not have",
                                  f"the env's agents are: {', '.join(agents)}")
            members += hits
    for team, members in expanded.items():
        for a in members:
            if a in seen:
                raise ConfigError(f"agent '{a}' is in two teams ('{seen[a]}' and '{team}') of env '{name}'",
                                  "list every agent in exactly one team of env.teams")
            seen[a] = team
    missing = [a for a in agents if a not in seen]
    if missing:
        raise ConfigError(f"env.teams of env '{name}' leaves out agent(s) {', '.join(missing)}",
                          "put every agent in exactly one team (a team of one for an agent on its own)")
    return tuple((t, tuple(a for a in agents if a in ms)) for t, ms in expanded.items() if ms)


def build_layout(env: AECEnv | ParallelEnv, name: str, grouping: str = "spaces",
                 groups: dict[str, list[str]] | None = None, seed: int | None = None,
                 teams: dict[str, list[str]] | None = None) -> Layout:
    """Group the agents of ``env`` and describe the batch arrays (resets ``env`` once to look at it)."""
    agents = list(env.possible_agents)
    team_spec = resolve_teams(teams, agents, name)
    infos, state = _probe(env, seed)
    any_info_mask = any("action_mask" in (i or {}) for i in infos.values())
    info: dict[str, tuple] = {}
    for a in agents:
        okind, box, mask_in_obs = _obs_kind(env.observation_space(a), a, name)
        aspace = env.action_space(a)
        akind, offset, adtype = _action_kind(aspace, a, name)
        # an agent absent at reset (joins later) is assumed to get an info mask if the agents present get one
        info_mask = "action_mask" in (infos[a] or {}) if a in infos else any_info_mask
        mask = "obs" if mask_in_obs else ("info" if info_mask else None)
        info[a] = (okind, box, mask, aspace, akind, offset, adtype)

    def same(a: str, b: str) -> bool:
        (_, ba, ma, sa, *_), (_, bb, mb, sb, *_) = info[a], info[b]
        return ba == bb and sa == sb and (ma is None) == (mb is None)

    if groups is not None:
        members = _check_groups(groups, agents, same, name)
    elif grouping == "prefix":
        by: dict[str, list[str]] = {}
        for a in agents:
            by.setdefault(agent_prefix(a), []).append(a)
        for p, ms in by.items():
            odd = [m for m in ms if not same(ms[0], m)]
            if odd:
                raise ConfigError(f"env '{name}': agents with prefix '{p}' have different spaces "
                                  f"({ms[0]} vs {odd[0]}), so they cannot share one group",
                                  "set env.pad=true to pad them to common spaces, or use grouping='spaces'")
        members = by
    elif grouping == "spaces":
        buckets: list[list[str]] = []
        for a in agents:
            home = next((b for b in buckets if same(b[0], a)), None)
            if home is None:
                buckets.append([a])
            else:
                home.append(a)
        members = dict(zip(_group_names(buckets), buckets, strict=True))
    else:
        raise ConfigError(f"grouping='{grouping}' is not valid", f"choose one of: {', '.join(GROUPINGS)}")

    specs, slots, off = [], {}, 0
    sizes = {a: int(np.prod(info[a][1].shape)) for a in agents}
    offsets = {}
    for a in agents:
        offsets[a] = (off, off + sizes[a])
        off += sizes[a]
    for gname, ms in members.items():
        okind, box, mask, aspace, *_ = info[ms[0]]
        specs.append(GroupSpec(gname, tuple(ms), box, aspace, has_action_mask=mask is not None))
        for i, a in enumerate(ms):
            ok, _, m, _, akind, offset, adtype = info[a]
            slots[a] = AgentSlot(gname, i, ok, m, akind, offset, adtype, offsets[a] if state is None else (0, 0))
    modes = tuple(env.metadata.get("render_modes", ())) if hasattr(env, "metadata") else ()
    return Layout(name=name, agents=tuple(agents), groups=tuple(specs), slots=slots,
                  state_size=off if state is None else int(state.size), has_state=state is not None,
                  turn_based=isinstance(env, AECEnv), render_modes=modes, teams=team_spec)


def _check_groups(groups: dict[str, list[str]], agents: list[str], same: Any, name: str) -> dict[str, list[str]]:
    seen: dict[str, str] = {}
    for g, ms in groups.items():
        for a in ms:
            if a not in agents:
                raise ConfigError(f"groups['{g}'] names agent '{a}', which env '{name}' does not have",
                                  f"the env's agents are: {', '.join(agents)}")
            if a in seen:
                raise ConfigError(f"agent '{a}' is in two groups ('{seen[a]}' and '{g}')", "list every agent once")
            seen[a] = g
        odd = [a for a in ms if not same(ms[0], a)]
        if odd:
            raise ConfigError(f"groups['{g}'] mixes agents with different spaces ({ms[0]} vs {odd[0]})",
                              "split them into separate groups, or set env.pad=true to pad them to common spaces")
    missing = [a for a in agents if a not in seen]
    if missing:
        raise ConfigError(f"groups leave out agent(s) {', '.join(missing)} of env '{name}'",
                          "put every agent in exactly one group")
    return {g: [a for a in agents if a in ms] for g, ms in groups.items() if ms}


# ------------------------------------------------------------------------------------------------ public


def make_vec_env(env_cfg: Any, num_envs: int, seed: int | None = None, grouping: str = "spaces",
                 groups: dict[str, list[str]] | None = None, render_mode: str | None = None,
                 state: bool = True, device: str = "cpu", steps: int | None = None) -> VecMultiEnv:
    """E copies of the configured env behind the batched step interface (copy ``e`` seeded with ``seed + e``).

    ``state=False``: skip the global state (``env.state()`` or the concatenated observations) of every step and leave
    ``StepOut.state`` zero, same shape; for learners without a centralized critic, which never read it.
    ``device``: where a torch env (``kind: vmas``) keeps its copies; numpy envs ignore it. ``steps``: the env steps the
    copies will take (a training run's ``total_steps``; None: unknown, e.g. evaluation), for ``env.backend=auto``."""
    cfg = _env_cfg(env_cfg)
    if num_envs < 1:
        raise ConfigError(f"num_envs={num_envs} must be >= 1", "pass num_envs=1 or more")
    if cfg.kind == "vmas":
        from marl.adapters.vmas import VmasVecEnv

        teams = OmegaConf.to_container(cfg.teams) if cfg.teams is not None else None
        env = VmasVecEnv({**_plain(cfg), "teams": teams}, num_envs, seed, grouping, groups, device, render_mode, state)
        env.backend = f"vmas (one batched torch env of {num_envs} copies on {device}; env.backend does not apply)"
        return env
    # subprocess: W workers plus the main process each step an equal share (the main process the smaller one);
    # workers=0 means one worker per core besides the main process
    workers = cfg.workers or max(1, cpu_count() - 1)
    if cfg.kind == "gymnasium":
        from marl.adapters.gym import GymVecEnv

        env = GymVecEnv(_plain(cfg), num_envs, seed, subprocess=cfg.backend == "subprocess", render_mode=render_mode)
        env.backend = ("subprocess (gymnasium AsyncVectorEnv)" if cfg.backend == "subprocess" else
                       "inprocess (gymnasium SyncVectorEnv" + (", env.backend=auto" if cfg.backend == "auto" else "")
                       + ")")
        return env
    if cfg.pad:
        groups = None
        grouping = "spaces"
    if wants_check(cfg):
        check_env(cfg)
    plain = _plain(cfg)
    probe = _build_pz_env(plain, render_mode)
    try:
        teams = OmegaConf.to_container(cfg.teams) if cfg.teams is not None else None
        layout = dataclasses.replace(build_layout(probe, cfg.name, grouping, groups, seed, teams),
                                     compute_state=state)
        backend, why = choose_backend(probe, num_envs, steps) if cfg.backend == "auto" else (cfg.backend, "env.backend")
    finally:
        probe.close()
    if cfg.pad and len(layout.groups) != 1:
        raise EnvError(f"env '{cfg.name}': padding did not give all agents one observation/action space",
                       "env.pad=true needs Box or Discrete spaces that SuperSuit can pad")
    factory = functools.partial(_build_pz_env, plain, render_mode)
    if backend == "subprocess":
        local = num_envs // (workers + 1)
        env = SubprocVecEnv(factory, layout, num_envs, workers, seed, local=local)
        backend = f"subprocess ({len(env.slices)} worker(s) + {local} copies in the main process; {why})"
    else:
        env = InProcessVecEnv(factory, layout, num_envs, seed)
        backend = f"inprocess ({why})"
    env.backend = backend
    return env


AUTO_MIN_FREE = 1.5  # env.backend=auto: free cores (CPUs less what other processes use now) needed
AUTO_MIN_STEP = 1e-3  # ... and seconds one batch step of all copies takes in this process, for workers to pay off
AUTO_MIN_RUN = 50_000  # ... and env steps the run takes: starting workers (~1-2 s each) pays off over longer runs only


def busy_cores(seconds: float = 0.25) -> tuple[float, str]:
    """``(cores busy with other processes, how it was measured)``: the CPU time all processes took over the next
    ``seconds`` (``/proc/stat``; this process sleeps meanwhile), else the 1-minute load average less this process.
    The load average lags by a minute (a job that just ended still counts), so it is only the fallback."""
    import time

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
        return sum(vals), vals[3] + vals[4]  # total, idle + iowait (jiffies, all CPUs)

    try:
        t0, i0 = sample()
        time.sleep(seconds)
        t1, i1 = sample()
        ncpu = os.cpu_count() or 1
        busy = ncpu * (1.0 - (i1 - i0) / max(1, t1 - t0))
        return max(0.0, busy), f"{busy:.1f} busy over {seconds:.2f} s"
    except (OSError, ValueError, IndexError):
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        return max(0.0, load - 1.0), f"load average {load:.1f}"


def choose_backend(probe: AECEnv | ParallelEnv, num_envs: int, run_steps: int | None = None,
                   steps: int = 30) -> tuple[str, str]:
    """``(backend, reason)`` for ``env.backend=auto``: ``subprocess`` when the run is long (``run_steps`` env steps, at
    least ``AUTO_MIN_RUN``), more than one core is free and one batch step of ``num_envs`` copies (timed on
    ``probe``, ``steps`` random steps) takes long enough that splitting it across processes beats the per-step
    messages (~0.1 ms), else ``inprocess``."""
    import time

    if run_steps is None or run_steps < AUTO_MIN_RUN:
        return "inprocess", (f"env.backend=auto: a run of {run_steps:,} env steps is too short to pay for starting "
                             "workers" if run_steps is not None else "env.backend=auto: evaluation")

    busy, how = busy_cores()
    free = max(0.0, cpu_count() - busy)
    t0 = time.perf_counter()
    try:
        check_episode(direct(probe), steps=steps, seed=0)  # stepped as the copies will step it
    except Exception:  # noqa: BLE001 - the env's own error is reported, with its copy and step, once it runs
        return "inprocess", "env.backend=auto: the env raised while it was timed"
    batch = (time.perf_counter() - t0) / steps * num_envs
    facts = (f"env.backend=auto: {free:.1f} of {cpu_count()} cores free ({how}), a batch step "
             f"~{batch * 1e3:.2f} ms in-process")
    return ("subprocess" if free >= AUTO_MIN_FREE and batch >= AUTO_MIN_STEP else "inprocess"), facts
