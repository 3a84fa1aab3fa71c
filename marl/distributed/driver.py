"""``env.backend=ray``: the learner's env copies live in Ray actors (:class:`marl.distributed.worker.RolloutWorker`),
each with a CPU copy of the policy; whole rollouts come back as arrays and the learner trains on them as usual.

:class:`RayVecEnv` stands where the learner's vectorized env stands (spec, reset, restore, the action record for
checkpoints, close) and is the learner's collector (:meth:`marl.algos.base.Learner.gather` calls :meth:`gather`
instead of the learner's own ``collect``). Per iteration the driver puts one weights payload in the object store
(:func:`weights_payload`: the actors' weights, the observation / state / reward statistics, ``env_steps`` and the
weights' version) and every worker reads that one reference.

* ``ray.mode=sync``: every worker collects ``algo.num_steps`` steps of its ``envs_per_worker`` copies with the
  current weights; the results are joined along the env axis into the learner's ``[R, E, ...]`` buffer (worker
  ``w`` holds the run's copies ``w * E_w ..``), the worker's statistics shares are merged into the learner's (with
  one worker its statistics are taken as they are, so a one-worker run is the in-process run bit for bit), and the
  usual advantages and update run: the same algorithm as in one process.
* ``ray.mode=async``: the workers keep collecting; each iteration trains on the next rollout to arrive
  (``algo.num_steps x envs_per_worker`` steps), and the worker that sent it gets the newest weights at once. The
  rollout's policy lag (updates since its weights) is logged as ``charts/policy_lag``; a lagged rollout is corrected
  with V-trace (:meth:`marl.algos.onpolicy.OnPolicyLearner.advantages`).

Off-policy learners (:class:`marl.algos.ddpg.DDPG` and its subclasses): a round is ``algo.train_freq`` steps of the
workers' copies with the learner's exploration; the workers return each step's actions and outcome and
:meth:`RayVecEnv.gather` stores them in the learner's replay in the run's copy order (its own ``_store_step``).
GRPO: every worker collects whole rounds of whole groups and computes their advantages; the rows are joined padded
to the longest. Self-play: the learner's opponent pool takes the snapshots, each is put in the object store once,
and the workers' pools mirror them (:meth:`marl.selfplay.OpponentPool.mirror`). See docs/distributed.md.

Faults: a worker whose call fails (its process died, its env raised, its node was lost) or takes longer than
``ray.timeout_s`` is killed and rebuilt with fresh env copies (a warning names it), and its rollout is collected
again; ``ray.max_failures`` failures of one worker in a row stop the run with a :class:`WorkerError` (the train
loop writes a checkpoint first).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from marl.adapters.base import EnvSpec, StepOut
from marl.adapters.replay import NotRestorable
from marl.errors import ConfigError, MarlError

START_TIMEOUT = 300.0  # seconds a new worker may take to start (import torch, build its envs) and reset
RESTART_SEED = 7_919  # a rebuilt worker's env copies: reset seed + RESTART_SEED * (its rebuilds), never a replay


class WorkerError(MarlError):
    """A Ray rollout worker failed ``ray.max_failures`` times in a row."""


def init_ray(rcfg: DictConfig) -> None:
    """Start a local Ray (``ray.address=null``: this machine's cores or ``ray.num_cpus``, no dashboard, an object
    store of ``ray.object_store_mb``, workers at this process's niceness) or join a cluster (``auto`` /
    ``ray://host:port``); reuse a running session."""
    import ray

    if ray.is_initialized():
        return
    from marl.config import cpu_count

    try:
        if rcfg.address is None:
            # the workers at this process's priority: Ray renices its workers to 15 by default, so on a shared
            # machine any other job starves the rollouts the learner waits for (docs/distributed.md)
            ray.init(num_cpus=int(rcfg.num_cpus or cpu_count()), include_dashboard=False,
                     object_store_memory=int(rcfg.object_store_mb) * 2**20, log_to_driver=True,
                     configure_logging=False, _system_config={"worker_niceness": os.nice(0)})
        else:
            ray.init(address=str(rcfg.address), log_to_driver=True, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise ConfigError(f"Ray could not start or join a cluster at ray.address={rcfg.address}: {err}",
                          "start a cluster with `ray start --head` (then ray.address=auto), or drop ray.address to "
                          "run Ray on this machine") from None


def ray_module():
    try:
        import ray
    except ImportError:
        raise ConfigError("env.backend=ray needs the ray package, which is not installed",
                          'install it with pip install -e ".[ray]"') from None
    return ray


def split_envs(cfg: DictConfig, ray_cpus: float) -> tuple[int, int]:
    """``(workers W, envs per worker E_w)``: ``env.workers`` (0: one per Ray CPU less one for the learner, at least
    one) sharing ``num_envs`` equally (``ray.envs_per_worker`` already set ``num_envs = W * E_w``)."""
    workers = int(cfg.env.workers) or max(1, int(ray_cpus) - 1)
    if cfg.num_envs % workers:
        raise ConfigError(f"num_envs={cfg.num_envs} copies cannot be shared equally by env.workers={workers} Ray "
                          "workers", f"pass num_envs={workers * max(1, cfg.num_envs // workers)} (a multiple of "
                          f"{workers}), or ray.envs_per_worker=N for N copies per worker")
    return workers, cfg.num_envs // workers


def join_steps(parts: list[StepOut]) -> StepOut:
    """StepOuts of consecutive env-copy ranges -> one StepOut of all copies (no episodes)."""
    def cat(vals):
        if isinstance(vals[0], dict):
            return {k: (None if vals[0][k] is None else np.concatenate([v[k] for v in vals])) for k in vals[0]}
        return np.concatenate(vals)

    return StepOut(**{f.name: cat([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(StepOut)
                      if f.name != "episodes"})


def offpolicy(learner) -> bool:
    """Whether ``learner`` is one of the off-policy learners (DDPG and its subclasses: replay, one env step per
    collection round)."""
    from marl.algos.ddpg import DDPG

    return isinstance(learner, DDPG)


def acting_modules(learner) -> dict[str, torch.nn.Module]:
    """The modules a worker's learner needs to act as ``learner`` does: the on-policy learners' policy manager, or
    the off-policy learners' actor per group."""
    if offpolicy(learner):
        return {f"{g}/actor": gs.actor for g, gs in learner.groups.items()}
    return {"manager": learner.manager}


def running_stats(learner) -> dict:
    """The learner's running statistics that acting updates, by name: ``obs/<group>`` (and, on-policy, ``state``
    and ``reward``, the reward scaler's)."""
    if offpolicy(learner):
        return {f"obs/{g}": gs.obs_rms for g, gs in learner.groups.items() if gs.obs_rms is not None}
    stats = {}
    if learner.obs_rms is not None:
        stats |= {f"obs/{g}": r for g, r in learner.obs_rms.items()}
    if learner.state_rms is not None:
        stats["state"] = learner.state_rms
    if learner.reward_scaler is not None:
        stats["reward"] = learner.reward_scaler.rms
    return stats


def weights_payload(learner, version: int) -> dict:
    """What a worker needs to act as the learner would: the acting modules' weights (:func:`acting_modules`), the
    running statistics (:func:`running_stats`, as the learner holds them now), ``env_steps`` and the weights'
    version."""
    stats = {k: r.state_dict() for k, r in running_stats(learner).items()}
    modules = {key: {k: v.detach().cpu() for k, v in m.state_dict().items()}
               for key, m in acting_modules(learner).items()}
    return {"modules": modules, "stats": stats, "env_steps": int(learner.env_steps), "version": int(version)}


class _JoinedHistory:
    """The action record of every worker's copies, for the learner's checkpoint (see :meth:`RayVecEnv.restore`)."""

    def __init__(self, env: RayVecEnv):
        self.env = env

    def state_dict(self) -> dict:
        return {"workers": self.env._call_all("history")}


class RayVecEnv:
    """``W`` Ray rollout workers of ``E_w`` env copies each, seen by the learner as one vectorized env (see the
    module docstring). ``spec.num_envs``: ``W * E_w`` in sync mode, ``E_w`` (one rollout per update) in async."""

    def __init__(self, cfg: DictConfig, spec: EnvSpec):
        ray = ray_module()
        self.ray, self.cfg, self.rcfg = ray, cfg, cfg.ray
        init_ray(self.rcfg)
        self.mode = str(self.rcfg.mode)
        self.W, self.Ew = split_envs(cfg, ray.cluster_resources().get("CPU", 1))
        self.spec = dataclasses.replace(spec, num_envs=self.Ew if self.mode == "async" else self.W * self.Ew)
        self.timeout = float(self.rcfg.timeout_s)
        self.max_failures = int(self.rcfg.max_failures)
        self.plain = OmegaConf.to_container(cfg, resolve=True)
        self.paths = {"cwd": os.getcwd(), "sys_path": [p for p in sys.path if p and os.path.isdir(p)]}
        from marl.distributed.worker import RolloutWorker

        self.remote_cls = ray.remote(num_cpus=float(self.rcfg.worker_cpus), max_restarts=0)(RolloutWorker)
        self.rebuilds = [0] * self.W
        self.failures = [0] * self.W
        self.seed: int | None = None
        self.learner = None
        self.pending: dict = {}  # async: object ref -> worker index
        self.weights_ref, self.weights_version = None, -1
        self.snapshot_refs: dict = {}  # self-play: env step of a pool snapshot -> its object-store reference
        self.lag = 0
        t0 = time.perf_counter()
        self.workers = [self._make(w) for w in range(self.W)]
        self._get([a.ping.remote() for a in self.workers], "start")
        self.startup_s = time.perf_counter() - t0
        where = str(self.rcfg.address or "a local Ray instance")
        self.backend = (f"ray ({self.W} rollout worker(s) x {self.Ew} copies, {self.mode} mode, on {where}; started in "
                        f"{self.startup_s:.1f} s)")
        self.history = _JoinedHistory(self) if self.mode == "sync" else None

    # ------------------------------------------------------------------ workers
    def _make(self, w: int):
        seed = int(self.cfg.seed) if w == 0 else int(self.cfg.seed) + 1_000_003 * w
        seed += RESTART_SEED * self.rebuilds[w]
        return self.remote_cls.remote(self.plain, w, self.Ew, w * self.Ew, seed, self.paths)

    def _reset_seed(self, w: int) -> int | None:
        if self.seed is None:
            return None
        return int(self.seed) + w * self.Ew + RESTART_SEED * self.rebuilds[w]

    def _get(self, refs: list, what: str) -> list:
        timeout = max(self.timeout, START_TIMEOUT) if what in ("start", "reset") else self.timeout
        try:
            return self.ray.get(refs, timeout=timeout)
        except self.ray.exceptions.GetTimeoutError:
            raise WorkerError(f"the Ray rollout workers did not answer '{what}' within {timeout:g} s",
                              "raise ray.timeout_s, or check the cluster (`ray status`)") from None
        except self.ray.exceptions.RayError as err:
            raise WorkerError(f"a Ray rollout worker failed during '{what}': {_first_line(err)}",
                              "see the error above; run with env.backend=inprocess to see the env's own traceback"
                              ) from None

    def _call_all(self, method: str, *args) -> list:
        return self._get([getattr(a, method).remote(*args) for a in self.workers], method)

    def _rebuild(self, w: int, why: str) -> None:
        """Kill worker ``w``, count the failure (stopping the run after ``ray.max_failures`` in a row), start a new
        one with fresh env copies."""
        self.failures[w] += 1
        if self.failures[w] >= self.max_failures:
            self.history = None  # the checkpoint written on this error cannot hold the copies mid-episode
            raise WorkerError(f"Ray rollout worker {w} (env copies {w * self.Ew}..{(w + 1) * self.Ew - 1}) failed "
                              f"{self.failures[w]} times in a row; last: {why}",
                              "fix the cause above (the env's error, memory, a lost node) and resume from the "
                              "checkpoint just written, or raise ray.max_failures")
        print(f"warning: Ray rollout worker {w} failed ({why}); rebuilding it with fresh env copies "
              f"(failure {self.failures[w]} of at most {self.max_failures - 1} in a row)", file=sys.stderr)
        try:
            self.ray.kill(self.workers[w], no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass
        self.rebuilds[w] += 1
        actor = self._make(w)
        self.workers[w] = actor
        try:
            self.ray.get(actor.reset.remote(self._reset_seed(w)), timeout=max(self.timeout, START_TIMEOUT))
        except self.ray.exceptions.GetTimeoutError:
            self._rebuild(w, f"no start and reset within {max(self.timeout, START_TIMEOUT):g} s")
        except self.ray.exceptions.RayError as err:  # e.g. the env fails to build or to reset: one more failure
            self._rebuild(w, _first_line(err))

    # ------------------------------------------------------------------ the env interface
    def reset(self, seed: int | None = None, group_size: int = 1) -> StepOut:
        self.seed = seed
        self._cancel()
        outs = self._get([a.reset.remote(self._reset_seed(w)) for w, a in enumerate(self.workers)], "reset")
        return join_steps(outs) if self.mode == "sync" else outs[0]

    def restore(self, state: dict) -> StepOut:
        """Rebuild every worker's copies from the checkpoint's record, with the learner's carry rows and running
        returns for them (sync mode; async rollouts depend on timing, so an async run resumes with fresh copies)."""
        if self.mode != "sync" or "workers" not in state or len(state["workers"]) != self.W:
            raise NotRestorable("the checkpoint's Ray workers do not match this run's (or the run is async)")
        lr = self.learner
        carry = {} if offpolicy(lr) else lr._carry_state()
        ret = None if offpolicy(lr) or lr.reward_scaler is None else lr.reward_scaler.ret
        refs = []
        for w, a in enumerate(self.workers):
            lo, hi = w * self.Ew, (w + 1) * self.Ew
            part = {k: v[:, lo:hi].clone() for k, v in carry.items()}
            refs.append(a.restore.remote(state["workers"][w], part, None if ret is None else ret[lo:hi].clone()))
        try:
            outs = self.ray.get(refs, timeout=self.timeout)
        except self.ray.exceptions.RayTaskError as err:
            raise NotRestorable(_first_line(err)) from None
        return join_steps(outs)

    def step(self, actions):  # the copies are stepped by the workers' own rollouts
        raise NotImplementedError("env.backend=ray steps its env copies inside the Ray workers")

    def render(self, index: int = 0):
        return None

    def close(self) -> None:
        self._cancel()
        for a in self.workers:
            try:
                self.ray.kill(a, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.workers = []

    def _cancel(self) -> None:
        for ref in list(self.pending):
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - already finished
                pass
        self.pending = {}

    # ------------------------------------------------------------------ collection
    def attach(self, learner) -> None:
        """Become ``learner``'s collector."""
        from marl.algos.grpo import GRPO
        from marl.algos.onpolicy import OnPolicyLearner

        if isinstance(learner, GRPO):
            from marl.config import ray_grpo

            ray_grpo(learner.G, self.Ew, self.mode)
        elif offpolicy(learner):
            if self.mode == "async":  # one worker's rollout per update round: keep the updates per env step
                from marl.config import async_gradient_steps

                learner.gradient_steps = async_gradient_steps(self.cfg.algo.name, learner.gradient_steps, self.W)
        elif not isinstance(learner, OnPolicyLearner) or type(learner).collect is not OnPolicyLearner.collect:
            raise ConfigError(f"env.backend=ray does not support algo={self.cfg.algo.name} yet: its workers run the "
                              "rollout of the on-policy learners (a2c, ppo, ippo, mappo, happo, trpo, hatrpo, "
                              "reinforce) and of the off-policy ones (ddpg, td3, sac, maddpg, matd3)",
                              "use env.backend=inprocess or subprocess for this algorithm")
        self.learner = learner
        learner.collector = self

    def _weights(self):
        """One object-store reference to the current weights (``ray.put`` once per learner version)."""
        version = self.learner.iterations
        if version != self.weights_version:
            payload = weights_payload(self.learner, version)
            pool = getattr(self.learner, "opponents", None)
            if pool is not None:  # self-play: the pool's snapshots, each put once (the workers keep those they hold)
                pool.maybe_snapshot()
                refs = {s: self.snapshot_refs.get(s) or self.ray.put(pool.snapshot_state(p))
                        for s, p in zip(pool.snapshot_steps, pool.snapshots, strict=True)}
                self.snapshot_refs = refs
                payload["snapshots"] = list(refs.items())
            self.weights_ref = self.ray.put(payload)
            self.weights_version = version
        return self.weights_ref

    def gather(self):
        """The next rollout, in the learner's buffer (see the module docstring); sets ``learner.last``,
        ``env_steps``, the episodes and the merged statistics."""
        lr = self.learner
        if self.mode == "sync":
            results = self._collect_sync()
            self.lag = 0
        else:
            results = [self._collect_async()]
            self.lag = lr.iterations - results[0]["version"]
        lr.last = join_steps([r["last"] for r in results])  # (async: a writable copy)
        off, grpo = offpolicy(lr), hasattr(lr, "given_adv")  # (GRPO: rounds of each worker's own length)
        if off:
            self._store(results)
        elif grpo:
            self._join_rounds(results)
        else:
            from marl.distributed.worker import load_arrays

            arrays = {k: np.concatenate([r["arrays"][k] for r in results], axis=1) for k in results[0]["arrays"]}
            load_arrays(lr.buf, arrays)
        self._merge_stats(results)
        for r in results:
            lr.episodes.extend(r["episodes"])
        if off:
            lr.env_steps += lr.train_freq * lr.spec.num_envs
            return None
        if grpo:
            lr.env_steps += sum(r["rows"] for r in results) * self.Ew
            return lr.buf
        lr.env_steps += lr.T * lr.E
        return lr.buf

    def _join_rounds(self, results: list[dict]) -> None:
        """GRPO: join the workers' whole rounds (``R_w`` rows each) into rows ``0 .. R - 1`` of the learner's buffer,
        ``R = max R_w``; a worker's rows past its own ``R_w`` are padding no agent acts in (dropped from the batch
        as a finished copy's rows are), and its groups' advantages come with its rows."""
        lr = self.learner
        R = max(r["rows"] for r in results)
        while lr.buf.T < R:
            lr.buf = lr._grow(lr.buf)

        def pad(a: np.ndarray) -> np.ndarray:
            return np.concatenate([a, np.zeros((R - a.shape[0], *a.shape[1:]), a.dtype)]) if a.shape[0] < R else a

        from marl.distributed.worker import load_arrays

        load_arrays(lr.buf, {k: np.concatenate([pad(r["arrays"][k]) for r in results], axis=1)
                             for k in results[0]["arrays"]}, rows=R)
        lr.given_adv = torch.from_numpy(np.concatenate([pad(r["adv"]) for r in results], axis=1)).to(lr.device)
        stepped = [r["rows"] * self.Ew for r in results]
        live = sum(r["live_frac"] * n for r, n in zip(results, stepped, strict=True))
        lr._rows, lr._live_frac = R, live / sum(stepped)

    def _store(self, results: list[dict]) -> None:
        """Off-policy: store the workers' steps in the learner's replay as one process would, step by step, every
        step's transitions of all copies in the run's copy order (:meth:`marl.algos.ddpg.DDPG._store_step`)."""
        lr = self.learner
        last = join_steps([r["first"] for r in results])
        for t in range(len(results[0]["steps"])):
            out = join_steps([r["steps"][t][1] for r in results])
            actions = {g: torch.cat([r["steps"][t][0][g] for r in results]).to(lr.device) for g in lr.groups}
            lr._store_step(last, actions, out)
            last = out

    def _collect_sync(self) -> list[dict]:
        ref = self._weights()
        refs = {w: a.collect.remote(ref) for w, a in enumerate(self.workers)}
        results: dict[int, dict] = {}
        while refs:
            ready, _ = self.ray.wait(list(refs.values()), num_returns=len(refs), timeout=self.timeout)
            done = {w for w, r in refs.items() if r in ready}
            for w in sorted(refs):
                if w in done:
                    try:
                        results[w] = self.ray.get(refs[w])
                        self.failures[w] = 0
                        continue
                    except self.ray.exceptions.RayError as err:
                        why = _first_line(err)
                else:
                    why = f"no rollout within ray.timeout_s={self.timeout:g} s"
                self._rebuild(w, why)
                refs[w] = self.workers[w].collect.remote(ref)
            refs = {w: r for w, r in refs.items() if w not in results}
        return [results[w] for w in range(self.W)]

    def _submit(self, w: int) -> None:
        self.pending[self.workers[w].collect.remote(self._weights())] = w

    def _collect_async(self) -> dict:
        if not self.pending:
            for w in range(self.W):
                self._submit(w)
        while True:
            ready, _ = self.ray.wait(list(self.pending), num_returns=1, timeout=self.timeout)
            if not ready:  # nothing within the timeout: every pending worker is hung
                for ref, w in list(self.pending.items()):
                    del self.pending[ref]
                    self._rebuild(w, f"no rollout within ray.timeout_s={self.timeout:g} s")
                    self._submit(w)
                continue
            ref = ready[0]
            w = self.pending.pop(ref)
            try:
                result = self.ray.get(ref)
            except self.ray.exceptions.RayError as err:
                self._rebuild(w, _first_line(err))
                self._submit(w)
                continue
            self.failures[w] = 0
            self._submit(w)  # the worker goes on at once with the newest weights
            return result

    def _merge_stats(self, results: list[dict]) -> None:
        """The learner's statistics after this rollout: one worker's as they are; else the learner's plus each
        worker's share (deltas) merged in worker order. The reward scaler's running returns are per copy."""
        lr = self.learner
        rms = running_stats(lr)
        if "reward" in rms and self.mode == "sync":
            rets = [r["ret"] for r in results]
            lr.reward_scaler.ret = None if any(x is None for x in rets) else torch.cat(rets)
        from marl.core.normalization import RunningMeanStd

        for key, stat in rms.items():
            if len(results) == 1 and self.mode == "sync":
                stat.load_state_dict(results[0]["stats"][key])
                continue
            for r in results:
                d = RunningMeanStd(tuple(stat.mean.shape), eps=0.0)
                d.load_state_dict(r["deltas"][key])
                stat.merge(d)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    msg = next((ln for ln in reversed(text) if ln.strip() and not ln.startswith(" ")), type(err).__name__)
    return msg[:300]
