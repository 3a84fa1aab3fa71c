"""A gymnasium env as one group ``"agent"`` of one agent ``"agent"`` (N = 1), on gymnasium's own vector API.

Copies run in a ``SyncVectorEnv`` (backend inprocess) or an ``AsyncVectorEnv`` (subprocess) with gymnasium's
autoreset disabled: a copy whose episode ended is reset in the same step by this adapter, with the seed
:func:`marl.adapters.replay.episode_seed` gives its next episode, and the final observation is kept (``final_obs``).
``state`` is the observation. The actions sent are recorded (``history``) so that ``restore`` can rebuild every copy.
"""

from __future__ import annotations

import functools

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv

from marl.adapters.base import EnvSpec, EpisodeStat, GroupSpec, StepOut
from marl.adapters.replay import History, NotRestorable, episode_seed, plans
from marl.errors import EnvError

AGENT = "agent"


def make_gym_env(cfg: dict, render_mode: str | None = None) -> gymnasium.Env:
    """One gymnasium env from a plain env config (kwargs and max_episode_steps applied). The entry point is a
    registered id (``CartPole-v1``, ``my_pkg:MyEnv-v0``) or a factory ``module:callable`` returning a gymnasium.Env."""
    kwargs = dict(cfg.get("kwargs") or {})
    ep = cfg["entry_point"]
    if _is_factory(ep):
        return _from_factory(ep, kwargs, cfg.get("max_episode_steps"), render_mode)
    if cfg.get("max_episode_steps") is not None:
        kwargs["max_episode_steps"] = cfg["max_episode_steps"]
    try:
        return gymnasium.make(cfg["entry_point"], render_mode=render_mode, **kwargs)
    except Exception as err:
        raise EnvError(f"gymnasium env '{cfg['entry_point']}' could not be made: {type(err).__name__}: {err}",
                       "check the id (gymnasium.pprint_registry() lists them) and env.kwargs") from err


def _is_factory(entry_point: str) -> bool:
    """``module:callable`` (a Python name after the colon), as opposed to an id such as ``module:Env-v0``."""
    _, sep, attr = entry_point.partition(":")
    return bool(sep) and attr.isidentifier()


def _from_factory(ep: str, kwargs: dict, max_episode_steps: int | None, render_mode: str | None) -> gymnasium.Env:
    from marl.adapters.registry import load_entry_point

    factory = load_entry_point(ep)
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    try:
        env = factory(**kwargs)
    except Exception as err:
        raise EnvError(f"entry point '{ep}' raised while building the env with kwargs {kwargs}: "
                       f"{type(err).__name__}: {err}", "check env.kwargs against the factory's signature") from err
    if not isinstance(env, gymnasium.Env):
        raise EnvError(f"entry point '{ep}' returned a {type(env).__name__}, not a gymnasium.Env",
                       "return a gymnasium.Env (or set env.kind=pettingzoo for a PettingZoo env)")
    if max_episode_steps is not None:
        env = gymnasium.wrappers.TimeLimit(env, max_episode_steps)
    return env


class Replayable(gymnasium.Wrapper):
    """Lets a vector env replay a different action sequence in each copy: ``set_attr("replay_actions", [...])``
    then ``call("replay")``."""

    replay_actions: np.ndarray | None = None

    def replay(self) -> tuple[object, list[float], bool]:
        """Step through ``replay_actions`` ``[L, *action]``: the last observation (None when L = 0), the rewards,
        and whether the episode ended on the way."""
        obs, rewards = None, []
        for a in self.replay_actions:
            obs, r, term, trunc, _ = self.env.step(a)
            rewards.append(r)
            if term or trunc:
                return obs, rewards, True
        return obs, rewards, False


def _replayable(cfg: dict, render_mode: str | None) -> Replayable:
    return Replayable(make_gym_env(cfg, render_mode))


def _flat_box(space: spaces.Space, name: str) -> spaces.Box:
    if isinstance(space, spaces.Box):
        return spaces.Box(space.low.astype(np.float32), space.high.astype(np.float32), dtype=np.float32)
    if isinstance(space, spaces.Discrete):
        return spaces.Box(0.0, 1.0, (int(space.n),), np.float32)
    raise EnvError(f"gymnasium env '{name}' has an unsupported observation space {space}",
                   "use a Box or Discrete observation space")


class GymVecEnv:
    """E copies of a gymnasium env; obs ``[E, 1, *obs_shape]``, actions ``[E, 1, *action_shape]``."""

    def __init__(self, cfg: dict, num_envs: int, seed: int | None = None, subprocess: bool = False,
                 render_mode: str | None = None):
        self.name = cfg.get("name") or cfg["entry_point"]
        fns = [functools.partial(_replayable, cfg, render_mode) for _ in range(num_envs)]
        vec_cls = AsyncVectorEnv if subprocess else SyncVectorEnv
        try:
            self.vec = vec_cls(fns, autoreset_mode=AutoresetMode.DISABLED)
        except EnvError:
            raise
        except Exception as err:
            raise EnvError(f"gymnasium env '{self.name}' could not be vectorized: {type(err).__name__}: {err}") from err
        self.seed = seed  # used by the first reset() without a seed
        self.num_envs = num_envs
        obs_space, act_space = self.vec.single_observation_space, self.vec.single_action_space
        self.discrete_obs = isinstance(obs_space, spaces.Discrete)
        box = _flat_box(obs_space, self.name)
        if not isinstance(act_space, spaces.Discrete | spaces.MultiDiscrete | spaces.Box):
            raise EnvError(f"gymnasium env '{self.name}' has an unsupported action space {act_space}")
        self.act_space = act_space
        group = GroupSpec(AGENT, (AGENT,), box, act_space)
        size = int(np.prod(box.shape))
        modes = tuple(self.vec.metadata.get("render_modes", ()))
        self.spec = EnvSpec(self.name, (group,), (size,), turn_based=False, num_envs=num_envs, render_modes=modes)
        self.returns = np.zeros(num_envs, np.float64)
        self.lengths = np.zeros(num_envs, np.int64)
        self.num_steps = 0
        self.history = History(num_envs)

    def _obs(self, raw: np.ndarray) -> np.ndarray:
        """[E, *obs] env obs -> [E, 1, *obs] float32."""
        if self.discrete_obs:
            out = np.zeros((len(raw), int(self.spec.groups[0].obs_space.shape[0])), np.float32)
            out[np.arange(len(raw)), raw] = 1.0
            return out[:, None]
        return np.asarray(raw, np.float32)[:, None]

    def _out(self, obs: np.ndarray, reward: np.ndarray, term: np.ndarray, trunc: np.ndarray, done: np.ndarray,
             final_obs: np.ndarray, episodes: list[EpisodeStat]) -> StepOut:
        e = self.num_envs
        ones = np.ones((e, 1), bool)
        flat = obs.reshape(e, -1)
        return StepOut(obs={AGENT: obs}, action_mask={AGENT: None}, alive={AGENT: ones}, acting={AGENT: ones.copy()},
                       state=flat.copy(), reward={AGENT: reward.astype(np.float32)[:, None]},
                       terminated={AGENT: term[:, None].copy()}, truncated=trunc, done=done,
                       final_obs={AGENT: final_obs}, final_state=final_obs.reshape(e, -1).copy(), episodes=episodes)

    def reset(self, seed: int | None = None, group_size: int = 1) -> StepOut:
        """Reset every copy; copy ``e`` is seeded with ``seed + e // group_size``."""
        seed, self.seed = (self.seed if seed is None else seed), None
        raw, _ = self.vec.reset(seed=self._seeds(seed, np.zeros(self.num_envs, np.int64), group_size))
        self.history.reset(seed, group_size)
        return self._first(raw)

    def _seeds(self, seed: int | None, episode: np.ndarray, group_size: int = 1) -> list[int | None]:
        return [episode_seed(seed, e // group_size, int(k)) for e, k in enumerate(episode)]

    def _first(self, raw: np.ndarray) -> StepOut:
        """The StepOut of fresh episodes (observations ``raw``), with the episode statistics cleared."""
        self.returns[:] = 0.0
        self.lengths[:] = 0
        obs = self._obs(raw)
        z = np.zeros(self.num_envs, bool)
        return self._out(obs, np.zeros(self.num_envs), z, z.copy(), z.copy(), np.zeros_like(obs), [])

    def step(self, actions: dict[str, np.ndarray]) -> StepOut:
        act = np.asarray(actions[AGENT])[:, 0]
        if isinstance(self.act_space, spaces.Box):
            act = act.astype(self.act_space.dtype)
        self.num_steps += 1
        try:
            raw, reward, term, trunc, _ = self.vec.step(act)
            term, trunc = np.asarray(term, bool), np.asarray(trunc, bool)
            done = term | trunc
            self.history.record({AGENT: act[:, None]}, done)
            final_obs = np.where(done[:, None, None], self._obs(raw), 0.0).astype(np.float32)
            if done.any():  # each finished copy starts its next episode, with that episode's seed
                seeds = [episode_seed(self.history.seed, e // self.history.group, int(self.history.episode[e]))
                         if d else None
                         for e, d in enumerate(done)]
                raw, _ = self.vec.reset(seed=seeds, options={"reset_mask": done.copy()})
        except Exception as err:
            raise EnvError(f"gymnasium env '{self.name}' raised at batch step {self.num_steps}: "
                           f"{type(err).__name__}: {err}",
                           "run with env.backend=inprocess to see the env's own traceback") from err
        self.returns += reward
        self.lengths += 1
        obs = self._obs(raw)
        episodes = []
        for e in np.flatnonzero(done):
            episodes.append(EpisodeStat(int(e), {AGENT: float(self.returns[e])}, int(self.lengths[e])))
            self.returns[e] = 0.0
            self.lengths[e] = 0
        return self._out(obs, reward, term, trunc & ~term, done, final_obs, episodes)

    def restore(self, state: dict) -> StepOut:
        """Rebuild every copy from a :meth:`History.state_dict`: reset it with its episode's seed, replay its
        actions (:class:`NotRestorable` when that cannot be done)."""
        self.seed = None
        ps = plans(state, self.num_envs)
        raw, _ = self.vec.reset(seed=self._seeds(state["seed"], state["episode"].numpy(), int(state.get("group", 1))))
        out = self._first(raw)
        self.vec.set_attr("replay_actions", [acts[AGENT][:, 0] for _, _, acts, _ in ps])
        for e, (last, rewards, ended) in enumerate(self.vec.call("replay")):
            if ended:
                raise NotRestorable(f"copy {e}'s episode ended while its {len(rewards)} recorded actions were "
                                    "replayed")
            if last is not None:
                out.obs[AGENT][e] = self._obs(np.asarray(last)[None])[0]
            for r in rewards:
                self.returns[e] += r
            self.lengths[e] = len(rewards)
        self.vec.set_attr("replay_actions", [None] * self.num_envs)
        self.history.load_state_dict(state)
        out.state[:] = out.obs[AGENT].reshape(self.num_envs, -1)
        return out

    def render(self, index: int = 0) -> np.ndarray | str | None:
        if isinstance(self.vec, SyncVectorEnv):
            return self.vec.envs[index].render()
        return self.vec.call("render")[index]

    def close(self) -> None:
        self.vec.close()
