"""E copies of one PettingZoo env stepped as a batch, in this process or in W worker processes.

Every copy writes its row ``e`` of a set of preallocated arrays (:class:`Buffers`); a :class:`Layout` says which arrays
exist and where each agent's data goes. The in-process backend keeps the arrays in ordinary numpy memory; the subprocess
backend puts them in shared memory, so a step costs one tiny pipe message per worker (actions and results never
cross a pipe). The per-copy logic lives in :mod:`marl.adapters.parallel` and :mod:`marl.adapters.aec`. Both backends
record the actions sent (:class:`marl.adapters.replay.History`) and can rebuild their copies from such a record
(``restore``).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import pickle
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces

from marl.adapters.base import EnvSpec, EpisodeStat, GroupSpec, StepOut
from marl.adapters.direct import direct
from marl.adapters.replay import History, NotRestorable, plans
from marl.errors import EnvError, MarlError

STEP_TIMEOUT = 300.0  # seconds a worker may take for one batch step before the env is declared stuck
POLL = 0.5  # seconds between liveness checks while waiting for a worker
SPIN = 0.002  # seconds of busy-polling for a message before blocking on it (see _spin)


@dataclass(frozen=True)
class AgentSlot:
    """Where one agent's data lives: its group, its index in the group and how its observation is read."""

    group: str
    index: int
    obs: str  # box | dict (obs["observation"]) | discrete (one-hot)
    mask: str | None  # obs | info | None: where the action mask comes from
    action: str  # discrete | multidiscrete | box
    action_offset: int | np.ndarray = 0  # Discrete.start / MultiDiscrete.start
    action_dtype: Any = np.int64
    state_slice: tuple[int, int] = (0, 0)  # this agent's part of the concatenated-observation state


@dataclass(frozen=True)
class Layout:
    """Static, picklable description of the arrays of a vectorized PettingZoo env."""

    name: str
    agents: tuple[str, ...]  # possible_agents order
    groups: tuple[GroupSpec, ...]
    slots: dict[str, AgentSlot]
    state_size: int
    has_state: bool  # state from env.state(); else the concatenated flat observations
    turn_based: bool
    render_modes: tuple[str, ...] = ()
    compute_state: bool = True  # False: the state rows stay zero (no env.state() call; for learners that never read it)
    teams: tuple[tuple[str, tuple[str, ...]], ...] = ()  # who shares a reward objective (see EnvSpec.teams)

    def spec(self, num_envs: int) -> EnvSpec:
        return EnvSpec(
            name=self.name,
            groups=self.groups,
            state_shape=(self.state_size,),
            turn_based=self.turn_based,
            num_envs=num_envs,
            has_state=self.has_state,
            render_modes=self.render_modes,
            teams=self.teams,
        )

    def fields(self, num_envs: int) -> list[tuple[str, tuple[int, ...], Any]]:
        """(key, shape, dtype) of every array; keys ``kind/group`` per group, plain keys per copy."""
        e = num_envs
        out: list[tuple[str, tuple[int, ...], Any]] = []
        for g in self.groups:
            n, oshape = g.n_agents, tuple(g.obs_space.shape)
            out += [(f"{k}/{g.name}", (e, n, *oshape), np.float32) for k in ("obs", "final_obs")]
            out += [(f"{k}/{g.name}", (e, n), np.bool_) for k in ("alive", "acting", "term")]
            out.append((f"reward/{g.name}", (e, n), np.float32))
            if g.has_action_mask:
                out.append((f"mask/{g.name}", (e, n, mask_size(g.action_space)), np.bool_))
            out.append((f"act/{g.name}", (e, n, *action_shape(g.action_space)), action_dtype(g.action_space)))
        out += [("state", (e, self.state_size), np.float32), ("final_state", (e, self.state_size), np.float32)]
        out += [("truncated", (e,), np.bool_), ("done", (e,), np.bool_)]
        return out


def mask_size(space: spaces.Space) -> int:
    """A: number of mask entries (n for Discrete, sum(nvec) for MultiDiscrete)."""
    if isinstance(space, spaces.Discrete):
        return int(space.n)
    if isinstance(space, spaces.MultiDiscrete):
        return int(np.sum(space.nvec))
    raise EnvError(f"an action mask needs a Discrete or MultiDiscrete action space, got {space}")


def action_shape(space: spaces.Space) -> tuple[int, ...]:
    if isinstance(space, spaces.Discrete):
        return ()
    return tuple(space.shape)


def action_dtype(space: spaces.Space) -> Any:
    return np.float32 if isinstance(space, spaces.Box) else np.int64


class Buffers:
    """The arrays of a :class:`Layout`, in private numpy memory or on a shared-memory block (``shared``)."""

    def __init__(self, layout: Layout, num_envs: int, shared: Any = None):
        self.fields = layout.fields(num_envs)
        self.arrays: dict[str, np.ndarray] = {}
        offset = 0
        for key, shape, dtype in self.fields:
            count = int(np.prod(shape))
            if shared is None:
                self.arrays[key] = np.zeros(shape, dtype)
            else:
                self.arrays[key] = np.frombuffer(shared, dtype=dtype, count=count, offset=offset).reshape(shape)
            offset += _aligned(count * np.dtype(dtype).itemsize)

    @staticmethod
    def nbytes(layout: Layout, num_envs: int) -> int:
        return sum(_aligned(int(np.prod(s)) * np.dtype(d).itemsize) for _, s, d in layout.fields(num_envs))

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]

    def get(self, key: str) -> np.ndarray | None:
        return self.arrays.get(key)


def _aligned(n: int) -> int:
    return (n + 7) // 8 * 8


def make_copy(env: Any, layout: Layout, buf: Buffers, index: int) -> Any:
    """The per-copy stepper for ``env``: AEC (turn-based) or parallel."""
    if layout.turn_based:
        from marl.adapters.aec import AECCopy

        return AECCopy(env, layout, buf, index)
    from marl.adapters.parallel import ParallelCopy

    return ParallelCopy(direct(env), layout, buf, index)


class CopyRunner:
    """Copies ``lo..hi-1`` of a batch; shared by the in-process backend and every worker process.

    ``progress`` (workers): two shared int64s the runner keeps at (copy being stepped, its episode step), -1 between
    steps, so that the main process can name the copy a worker was stepping when the worker died outright."""

    def __init__(self, factory: Callable[[], Any], layout: Layout, buf: Buffers, lo: int, hi: int,
                 progress: np.ndarray | None = None):
        self.layout = layout
        self.progress = progress
        self.copies = []
        for e in range(lo, hi):
            try:
                env = factory()
            except Exception as err:  # a factory that works once may still fail for a later copy, or in a worker
                why = err.problem if isinstance(err, MarlError) else f"{type(err).__name__}: {err}"
                where = " in a worker process" if progress is not None else ""
                raise EnvError(f"env '{layout.name}': building copy {e}{where} failed: {why}",
                               "the env was built once in the main process before; make its factory work for "
                               "every copy" + (" and in every process, or run with env.backend=inprocess"
                                               if progress is not None else "")) from err
            self.copies.append(make_copy(env, layout, buf, e))

    def reset(self, seed: int | None, group_size: int = 1) -> None:
        for c in self.copies:
            self._guard(c, "reset", lambda c=c: c.reset(seed, 0, group_size))

    def restore(self, plans: list[tuple[int, int, dict[str, np.ndarray], int]]) -> list[int]:
        """Rebuild each copy from its ``(run seed, episode, actions)`` plan (see :meth:`CopyBase.restore`); returns
        the copies whose episode ended during the replay."""
        return [c.index for c, p in zip(self.copies, plans, strict=True)
                if not self._guard(c, "restore", lambda c=c, p=p: c.restore(*p))]

    def step(self) -> list[EpisodeStat]:
        episodes, progress = [], self.progress
        for c in self.copies:
            if progress is not None:
                progress[0], progress[1] = c.index, c.t + 1
            ep = self._guard(c, "step", c.step)
            if ep is not None:
                episodes.append(ep)
        if progress is not None:
            progress[0] = -1
        return episodes

    def _guard(self, c: Any, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except EnvError:
            raise
        except Exception as err:
            when = "reset" if what == "reset" else f"episode step {c.t + 1} (batch step {c.total_steps + 1})"
            key = err.args[0] if isinstance(err, KeyError) and err.args else None
            if isinstance(key, str) and key not in self.layout.agents and "adapters" in Path(
                    traceback.extract_tb(err.__traceback__)[-1].filename).parts:
                raise EnvError(
                    f"env '{self.layout.name}' reported agent '{key}' in copy {c.index} at {when}, which is not in "
                    f"its possible_agents ({', '.join(self.layout.agents)})",
                    "list every agent the env can ever have in possible_agents (agents may join late)") from err
            raise EnvError(
                f"env '{self.layout.name}' raised in copy {c.index} at {when}: {type(err).__name__}: {err}",
                "fix the env (the traceback above is from the env's own code) or report it to its authors",
            ) from err

    def render(self, index: int) -> Any:
        for c in self.copies:
            if c.index == index:
                return c.env.render()
        raise IndexError(index)

    def close(self) -> None:
        for c in self.copies:
            c.env.close()


def _step_out(buf: Buffers, layout: Layout, episodes: list[EpisodeStat]) -> StepOut:
    """Copy the shared arrays into a fresh StepOut the caller owns."""
    a = buf.arrays
    names = [g.name for g in layout.groups]
    return StepOut(
        obs={g: a[f"obs/{g}"].copy() for g in names},
        action_mask={g: (a[f"mask/{g}"].copy() if f"mask/{g}" in a else None) for g in names},
        alive={g: a[f"alive/{g}"].copy() for g in names},
        acting={g: a[f"acting/{g}"].copy() for g in names},
        state=a["state"].copy(),
        reward={g: a[f"reward/{g}"].copy() for g in names},
        terminated={g: a[f"term/{g}"].copy() for g in names},
        truncated=a["truncated"].copy(),
        done=a["done"].copy(),
        final_obs={g: a[f"final_obs/{g}"].copy() for g in names},
        final_state=a["final_state"].copy(),
        episodes=episodes,
    )


def _sent_actions(buf: Buffers, layout: Layout) -> dict[str, np.ndarray]:
    """The actions of the step just taken, as the copies read them (cast to the action dtype)."""
    return {g.name: buf[f"act/{g.name}"] for g in layout.groups}


def _diverged(failed: list[int], state: dict) -> None:
    if failed:
        e = min(failed)
        raise NotRestorable(f"copy {e}'s episode ended while its {int(state['length'][e])} recorded actions were "
                            "replayed")


def _write_actions(buf: Buffers, layout: Layout, actions: dict[str, np.ndarray]) -> None:
    for g in layout.groups:
        if g.name not in actions:
            raise EnvError(f"env '{layout.name}': no actions given for group '{g.name}'",
                           f"pass actions for every group: {[x.name for x in layout.groups]}")
        dst = buf[f"act/{g.name}"]
        src = actions[g.name]
        if np.shape(src) != dst.shape:
            raise EnvError(f"env '{layout.name}': actions['{g.name}'] has shape {np.shape(src)}, expected {dst.shape}",
                           "send one action per copy and agent: [E, N_g, *action_shape]")
        dst[...] = src


class InProcessVecEnv:
    """All copies in this process, stepped in a plain loop."""

    def __init__(self, factory: Callable[[], Any], layout: Layout, num_envs: int, seed: int | None = None):
        self.layout = layout
        self.seed = seed  # used by the first reset() without a seed
        self.spec = layout.spec(num_envs)
        self.buf = Buffers(layout, num_envs)
        self.runner = CopyRunner(factory, layout, self.buf, 0, num_envs)
        self.history = History(num_envs)

    def reset(self, seed: int | None = None, group_size: int = 1) -> StepOut:
        seed, self.seed = (self.seed if seed is None else seed), None
        self.runner.reset(seed, group_size)
        self.history.reset(seed, group_size)
        return _step_out(self.buf, self.layout, [])

    def step(self, actions: dict[str, np.ndarray]) -> StepOut:
        _write_actions(self.buf, self.layout, actions)
        episodes = self.runner.step()
        self.history.record(_sent_actions(self.buf, self.layout), self.buf["done"])
        return _step_out(self.buf, self.layout, episodes)

    def restore(self, state: dict) -> StepOut:
        """Rebuild every copy from a :meth:`History.state_dict` (:class:`NotRestorable` when it cannot be)."""
        self.seed = None
        _diverged(self.runner.restore(plans(state, self.spec.num_envs)), state)
        self.history.load_state_dict(state)
        return _step_out(self.buf, self.layout, [])

    def render(self, index: int = 0) -> np.ndarray | str | None:
        return self.runner.render(index)

    def close(self) -> None:
        self.runner.close()


def _worker(conn: Any, factory: Callable[[], Any], layout: Layout, num_envs: int, shared: Any, lo: int,
            hi: int, progress: Any) -> None:
    """Worker loop: build copies lo..hi-1 on the shared arrays, then serve reset/step/render/close commands."""
    try:
        buf = Buffers(layout, num_envs, shared)
        runner = CopyRunner(factory, layout, buf, lo, hi, np.frombuffer(progress, np.int64))
        conn.send(("ok", None))
    except Exception as err:
        conn.send(("err", _err_payload(err)))
        return
    jobs: dict[str, Callable] = {}  # callables sent once by submit(), by key
    while True:
        try:
            _spin(conn)
            cmd, arg = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        try:
            if cmd == "step":
                conn.send(("ok", runner.step()))
            elif cmd == "call":
                key, fn, payload = arg
                if fn is not None:
                    jobs[key] = pickle.loads(fn)
                conn.send(("ok", jobs[key](payload)))
            elif cmd == "reset":
                runner.reset(*arg)
                conn.send(("ok", None))
            elif cmd == "restore":
                conn.send(("ok", runner.restore(arg)))
            elif cmd == "render":
                conn.send(("ok", runner.render(arg)))
            elif cmd == "close":
                runner.close()
                conn.send(("ok", None))
                return
        except Exception as err:
            conn.send(("err", _err_payload(err)))


class Pending:
    """A result being computed elsewhere: :meth:`result` waits for it (once)."""

    def __init__(self, wait: Callable[[], Any]):
        self._wait, self._done, self._value = wait, False, None

    def result(self) -> Any:
        if not self._done:
            self._value, self._done = self._wait(), True
        return self._value


def _spin(conn: Any, seconds: float = SPIN) -> None:
    """Busy-poll ``conn`` for up to ``seconds`` before the caller blocks on it: a sleeping process takes tens of
    microseconds to wake, which at thousands of batch steps per second is a large share of a step."""
    end = time.perf_counter() + seconds
    while not conn.poll() and time.perf_counter() < end:
        pass


def _err_payload(err: Exception) -> tuple[str, str | None]:
    """(problem, fix) of an error raised in a worker, for an EnvError in the main process."""
    if isinstance(err, MarlError):
        return err.problem, err.fix
    return f"{type(err).__name__}: {err}\n{traceback.format_exc()}", None


class SubprocVecEnv:
    """Copies split over W worker processes and, for ``local > 0``, this process (copies ``0..local-1``, stepped
    while the workers step theirs: on a 2-core machine one worker plus the main process beats two workers, as the
    main process would otherwise sit idle in every step). Results are exchanged in shared memory."""

    def __init__(self, factory: Callable[[], Any], layout: Layout, num_envs: int, workers: int,
                 seed: int | None = None, local: int = 0):
        self.layout = layout
        self.seed = seed  # used by the first reset() without a seed
        self.spec = layout.spec(num_envs)
        self.num_steps = 0
        self.history = History(num_envs)
        ctx = mp.get_context("forkserver")
        shared = ctx.RawArray("b", max(Buffers.nbytes(layout, num_envs), 8))
        self.buf = Buffers(layout, num_envs, shared)
        self.local = None
        w = max(1, min(workers, num_envs - local))
        bounds = np.linspace(local, num_envs, w + 1).round().astype(int)
        self.slices = [(int(bounds[i]), int(bounds[i + 1])) for i in range(w)]
        self.conns, self.procs, self.progress = [], [], []
        self._sent: set[str] = set()  # submit() keys whose callable worker 0 holds
        self._pending: Pending | None = None  # a submitted call not yet answered
        for lo, hi in self.slices:
            parent, child = ctx.Pipe()
            progress = ctx.RawArray("q", [-1, 0])  # (copy being stepped, its episode step), see CopyRunner
            self.progress.append(np.frombuffer(progress, np.int64))
            p = ctx.Process(target=_worker, args=(child, factory, layout, num_envs, shared, lo, hi, progress),
                            daemon=True)
            p.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(p)
        self.starting = True  # the workers import and build their copies while this process goes on (see ready)
        try:  # this process's own copies, built while the workers start
            self.local = CopyRunner(factory, layout, self.buf, 0, local) if local else None
        except BaseException:
            self._kill()
            raise

    def ready(self) -> None:
        """Wait until every worker has built its copies (an EnvError if one failed). The constructor does not wait:
        a worker takes seconds to import its modules and build its copies, which the caller spends building the
        learner meanwhile; the first reset, restore or render waits here."""
        if self.starting:
            self.starting = False
            self._gather("start")

    def _gather(self, what: str, only: list[int] | None = None) -> list[Any]:
        """Wait for every (or the listed) worker's reply; a dead or stuck worker becomes an EnvError."""
        out = []
        for i in only if only is not None else range(len(self.conns)):
            conn, proc, (lo, hi) = self.conns[i], self.procs[i], self.slices[i]
            waited = 0.0
            _spin(conn)
            while not conn.poll(POLL):
                waited += POLL
                if not proc.is_alive() or waited >= STEP_TIMEOUT:
                    break
            try:
                status, payload = conn.recv() if conn.poll(0) else ("dead", None)
            except EOFError:  # the worker died and its end of the pipe closed
                status, payload = "dead", None
            if status == "dead":
                proc.join(timeout=1.0)
                reason = f"exited with code {proc.exitcode}" if not proc.is_alive() else f"was stuck for {waited:.0f}s"
                copy, t = (int(x) for x in self.progress[i])
                where = f" in copy {copy} at episode step {t}" if what == "step" and copy >= 0 else ""
                self._kill()
                raise EnvError(f"env '{self.layout.name}': worker {i} (copies {lo}..{hi - 1}) {reason}{where} "
                               f"during {what} at batch step {self.num_steps}",
                               "run with env.backend=inprocess to see the env's own traceback")
            if status == "err":
                self._kill()
                raise EnvError(*payload)
            out.append(payload)
        return out

    def reset(self, seed: int | None = None, group_size: int = 1) -> StepOut:
        self.ready()
        self._drain()
        seed, self.seed = (self.seed if seed is None else seed), None
        for c in self.conns:
            c.send(("reset", (seed, group_size)))
        if self.local is not None:
            self._local("reset", seed, group_size)
        self._gather("reset")
        self.history.reset(seed, group_size)
        return _step_out(self.buf, self.layout, [])

    def restore(self, state: dict) -> StepOut:
        """Rebuild every copy from a :meth:`History.state_dict` (:class:`NotRestorable` when it cannot be)."""
        self.ready()
        self._drain()
        self.seed = None
        ps = plans(state, self.spec.num_envs)
        for c, (lo, hi) in zip(self.conns, self.slices, strict=True):
            c.send(("restore", ps[lo:hi]))
        failed = self._local("restore", ps[:len(self.local.copies)]) if self.local is not None else []
        failed += [e for f in self._gather("restore") for e in f]
        _diverged(failed, state)
        self.history.load_state_dict(state)
        return _step_out(self.buf, self.layout, [])

    def step(self, actions: dict[str, np.ndarray]) -> StepOut:
        self.ready()
        self._drain()
        _write_actions(self.buf, self.layout, actions)
        self.num_steps += 1
        for c in self.conns:
            c.send(("step", None))
        episodes = self._local("step") if self.local is not None else []
        episodes += [ep for eps in self._gather("step") for ep in eps]
        self.history.record(_sent_actions(self.buf, self.layout), self.buf["done"])
        return _step_out(self.buf, self.layout, episodes)

    def submit(self, key: str, fn: Callable[[Any], Any], payload: Any) -> Pending:
        """Run ``fn(payload)`` in worker 0 while this process goes on (the learner's critic epochs during the
        update, when the workers would otherwise idle); ``fn`` is pickled to the worker the first time ``key`` is
        used and kept there. ``.result()`` waits for the return value (an EnvError if the worker fails)."""
        self.ready()
        fresh = key not in self._sent
        self._drain()
        # the callable as plain pickle bytes: sent as is, torch would move its tensors into memory both processes
        # then share (a copy is what is asked for)
        self.conns[0].send(("call", (key, pickle.dumps(fn) if fresh else None, payload)))
        self._sent.add(key)
        self._pending = Pending(lambda: self._gather("call", [0])[0])
        return self._pending

    def _drain(self) -> None:
        """Wait for a submitted call's reply before worker 0 gets another command (replies come in order)."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def _local(self, what: str, *args: Any) -> Any:
        """Run the main process's own copies; if one raises, stop the workers (mid-step) before re-raising."""
        try:
            return getattr(self.local, what)(*args)
        except BaseException:
            self._kill()
            raise

    def render(self, index: int = 0) -> np.ndarray | str | None:
        self.ready()
        self._drain()
        if self.local is not None and index < len(self.local.copies):
            return self.local.render(index)
        i = next(i for i, (lo, hi) in enumerate(self.slices) if lo <= index < hi)
        self.conns[i].send(("render", index))
        return self._gather("render", [i])[0]

    def close(self) -> None:
        if self._pending is not None and self.procs:  # a call's reply first (a dead worker is closed below)
            with contextlib.suppress(EnvError):
                self._drain()
        if self.local is not None:
            self.local.close()
            self.local = None
        for c, p in zip(self.conns, self.procs, strict=True):
            if p.is_alive():
                try:
                    c.send(("close", None))
                except (BrokenPipeError, OSError):
                    pass
        for c, p in zip(self.conns, self.procs, strict=True):
            if p.is_alive() and c.poll(5.0):
                try:
                    c.recv()
                except EOFError:
                    pass
            p.join(timeout=5.0)
            if p.is_alive():
                p.terminate()
            c.close()
        self.conns, self.procs = [], []

    def _kill(self) -> None:
        for c, p in zip(self.conns, self.procs, strict=True):
            if p.is_alive():
                p.terminate()
            p.join(timeout=2.0)
            c.close()
        self.conns, self.procs = [], []

    def __del__(self) -> None:
        if getattr(self, "procs", None):
            self._kill()
