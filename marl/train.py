"""The training loop: build env + learner from a validated config, run to ``total_steps``, log, evaluate, checkpoint.

Run directory: ``config.yaml`` (resolved config), ``metrics.csv``, ``checkpoints/step_*.pt`` and ``final.pt``.
Resume (``resume=<run dir or .pt>``) restores weights, optimizers, normalizers, counters and RNG states, and the env
copies mid-episode: a checkpoint holds the current observation and, per copy, the seed of its episode and the actions
taken since its last reset, which are replayed (:mod:`marl.adapters.replay`). Checkpoints never touch the envs, so
a run with checkpoints logs what the same run without them does, and a resumed run continues exactly as the
uninterrupted one. Where the copies cannot be rebuilt (an env that does not replay the same observations, an episode
longer than the record), the resumed run resets them with a warning and goes on.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

import marl
from marl import checkpoint as ckpt
from marl.adapters.base import EnvSpec
from marl.adapters.registry import make_vec_env
from marl.algos import make_learner  # noqa: F401 - also imported from here by scripts and tests
from marl.algos.base import Learner, seed_everything
from marl.config import ALGOS, compose, cpu_count, resolve_device, validate
from marl.distributed.driver import RayVecEnv, WorkerError
from marl.errors import CheckpointError, ConfigError, MarlError, TrainingError
from marl.evaluate import render_episodes, run_episodes, summarize
from marl.logging import RunLogger
from marl.matches import duel_summary, env_fps, play_matches, write_video
from marl.rundir import LOG, ConsoleLog, RunLock, check_fresh, default_run_dir, has_checkpoint, has_run
from marl.selfplay import attach_pool

EVAL_SEED_OFFSET = 1_000_000
RUN_CONTROL = ("progress", "debug", "device", "threads")  # taken from this call on resume, not from the stored run


def default_threads(cfg: DictConfig, device: str) -> int:
    """Torch intra-op threads: ``cfg.threads``, or for ``threads=0`` 1 (small MLPs run fastest single-threaded and
    env workers get the other cores), except a VMAS env on the CPU, where the env and the learner both step batches
    of hundreds of copies in this one process: every core (MAPPO on vmas_simple_spread, 512 copies, 2 cores:
    28.9k vs 19.9k env steps/s)."""
    if cfg.threads:
        return int(cfg.threads)
    return cpu_count() if cfg.env.kind == "vmas" and device == "cpu" else 1


def eval_copies(cfg: DictConfig) -> int:
    """Env copies of the evaluation env: every episode at once in a batched VMAS env (one batched step costs about
    the same for 8 or 64 copies: vmas_balance, 64 episodes of 100 steps, 3.0 s with 8 copies, 1.0 s with 64), else
    at most 8."""
    return int(cfg.eval_episodes) if cfg.env.kind == "vmas" else min(int(cfg.eval_episodes), 8)


def env_seed(seed: int, iteration: int) -> int:
    """Seed of env copy 0 for a resume after ``iteration`` iterations that cannot restore the copies mid-episode
    (copies use seed + e)."""
    return int(seed) + 100_003 * int(iteration)


def build(cfg: DictConfig, num_envs: int | None = None, seed: int | None = None, render_mode: str | None = None,
          steps: int | None = None):
    """The vectorized env for ``cfg`` (grouping from ``algo.sharing`` / ``algo.groups``; the global state is computed
    only for algorithms with a centralized critic; ``steps``: the env steps it will take, for ``env.backend=auto``)."""
    grouping = "prefix" if cfg.algo.sharing == "by_prefix" else "spaces"
    groups = OmegaConf.to_container(cfg.algo.groups) if cfg.algo.groups is not None else None
    env_cfg = cfg.env
    if env_cfg.backend == "ray":  # only the learner's rollouts run in Ray workers (build_learner_env); the rest here
        env_cfg = env_cfg.copy()
        env_cfg.backend = "inprocess"
    return make_vec_env(env_cfg, num_envs or cfg.num_envs, seed=cfg.seed if seed is None else seed,
                        grouping=grouping, groups=groups, render_mode=render_mode,
                        state=ALGOS[cfg.algo.name].centralized_critic, device=resolve_device(cfg.device), steps=steps)


def build_learner_env(cfg: DictConfig):
    """The env the learner trains on: :func:`build`'s, or with ``env.backend=ray`` the Ray rollout workers
    (:class:`marl.distributed.driver.RayVecEnv`, which the learner then collects through)."""
    if cfg.env.backend != "ray":
        return build(cfg, steps=int(cfg.total_steps))
    from marl.distributed.driver import RayVecEnv

    probe = build(cfg, num_envs=1)
    try:
        spec = probe.spec
    finally:
        probe.close()
    return RayVecEnv(cfg, spec)


def _resolve_resume(cfg: DictConfig, explicit_total_steps: bool, explicit_keys: tuple[str, ...] = ()
                    ) -> tuple[DictConfig, Path, dict | None, Path | None]:
    """For ``resume=...``: the stored config (with this call's run-control keys and explicitly given overrides) and
    the checkpoint payload. Another ``env=`` or ``algo=`` than the stored one, another ``run_dir`` and a ``preset``
    are refused. A new run: its directory, checked."""
    if not cfg.resume:
        run_dir = Path(cfg.run_dir) if cfg.run_dir else default_run_dir(cfg)
        check_fresh(run_dir)
        return cfg, run_dir, None, None
    given = Path(cfg.resume)
    if given.is_dir() and has_run(given) and not has_checkpoint(given):
        raise CheckpointError(f"run directory '{given}' holds a run that ended before its first checkpoint: there is "
                              "nothing to resume",
                              f"start it again with its command and run_dir={given} (a run directory without a "
                              "checkpoint is reused), or with a smaller checkpoint_every")
    path = ckpt.find_latest(cfg.resume)
    run_dir = path.parent.parent if path.parent.name == ckpt.CKPT_DIR else given
    if cfg.run_dir and Path(cfg.run_dir).resolve() != run_dir.resolve():
        raise ConfigError(f"resume={cfg.resume} continues that run in its own directory '{run_dir}', not in "
                          f"run_dir={cfg.run_dir}",
                          "drop run_dir=, or copy the run directory where you want it and resume the copy")
    payload = ckpt.load(path)
    notes: list[str] = []
    stored = ckpt.stored_config(payload, notes)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    for key in RUN_CONTROL:
        stored[key] = cfg[key]
    if explicit_total_steps:
        stored.total_steps = cfg.total_steps
    for key in explicit_keys:
        if key in ("resume", "run_dir", "total_steps", *RUN_CONTROL):
            continue
        if key in ("env", "algo"):
            given_name, was = cfg[key].name, stored[key].name
            if given_name != was:
                raise CheckpointError(f"checkpoint '{path}' was trained with {key}={was}, not {key}={given_name}",
                                      f"drop {key}={given_name} to resume the run as it was, or start a new run")
        elif key == "preset":
            raise ConfigError(f"preset= does not apply with resume=: the run goes on with its own config (preset "
                              f"{stored.preset})", "drop preset=; give the keys to change instead (e.g. algo.lr=1e-4)")
        elif key == "logger":
            stored.logger = cfg.logger
        else:  # e.g. algo.lr=1e-4 or env.backend=subprocess: applied to the resumed run
            OmegaConf.update(stored, key, OmegaConf.select(cfg, key), merge=False)
    stored = validate(stored)
    stored.run_dir = str(run_dir)
    return stored, run_dir, payload, path


def _check_steps_left(cfg: DictConfig, reached: int, run_dir: Path, explicit_total_steps: bool) -> None:
    """A resume must have steps left to train: a finished run, or a ``total_steps`` given below the steps reached,
    is refused."""
    if reached < cfg.total_steps:
        return
    if explicit_total_steps and cfg.total_steps < reached:
        raise CheckpointError(f"total_steps={cfg.total_steps} is below the {reached} env steps run '{run_dir}' has "
                              "reached", f"pass total_steps above {reached} to train it further")
    raise CheckpointError(f"run '{run_dir}' is finished: it reached {reached} of its {cfg.total_steps} env steps",
                          f"pass total_steps=<more than {reached}> with resume= to train it further")


def _finite(metrics: dict[str, float]) -> None:
    for k, v in metrics.items():
        if isinstance(v, float) and (math.isnan(v) or math.isinf(v)) and not k.endswith("explained_variance"):
            raise TrainingError(f"training diverged: '{k}' became NaN/inf ({v}) at this update; training "
                                "stopped before saving the bad weights",
                                "the last good checkpoint is kept; lower algo.lr (and algo.critic_lr, where set) or "
                                "enable algo.max_grad_norm, then resume from it")


def _nonfinite_weights(learner: Learner) -> str | None:
    """The name of the first parameter holding NaN/inf, or None."""
    for name, m in learner.modules().items():
        if isinstance(m, torch.nn.Module):
            for pname, p in m.named_parameters():
                if not torch.isfinite(p).all():
                    return f"{name}.{pname}"
    return None


def _iterate(learner: Learner) -> dict[str, float]:
    """``learner.iteration()``; a crash caused by weights that diverged mid-update becomes a TrainingError."""
    try:
        return learner.iteration()
    except MarlError:
        raise
    except Exception as err:
        bad = _nonfinite_weights(learner)
        if bad is None:
            raise
        raise TrainingError(
            f"training diverged: the weights '{bad}' became NaN/inf during update {learner.iterations + 1} "
            f"({type(err).__name__}: {str(err).splitlines()[0][:160]}); training stopped before saving them",
            "the last good checkpoint is kept; lower algo.lr (and algo.critic_lr, where set) or enable "
            "algo.max_grad_norm, then resume from it",
        ) from err


def run(cfg: DictConfig | dict, explicit_total_steps: bool = False, explicit_keys: tuple[str, ...] | list[str] = ()
        ) -> dict[str, float]:
    """Train according to ``cfg``; returns the final metrics (last evaluation included).

    ``cfg``: a complete config (a DictConfig, as ``scripts/train.py`` or :func:`marl.config.compose` gives), or a
    dict of values composed with ``configs/`` exactly as the CLI would (:func:`marl.config.compose`).
    With ``resume`` the run's stored config is used; ``total_steps`` given explicitly (``explicit_total_steps``)
    extends it, progress / debug / device / threads come from this call, and the other keys the user gave
    explicitly (``explicit_keys``, e.g. ``algo.lr``) override the stored values. The run directory (``run_dir``,
    else :func:`marl.rundir.default_run_dir`) is created, and locked, only once the run is about to train; its
    ``train.log`` gets what the console shows, the error that ends a run included.
    """
    cfg = validate(cfg) if isinstance(cfg, DictConfig) else compose(cfg)
    console = ConsoleLog()
    console.start()
    try:
        return _run(cfg, explicit_total_steps, tuple(explicit_keys), console)
    except MarlError as err:
        console.note(f"error: {err}")
        raise
    finally:
        console.stop()


def _run(cfg: DictConfig, explicit_total_steps: bool, explicit_keys: tuple[str, ...], console: ConsoleLog
         ) -> dict[str, float]:
    cfg, run_dir, payload, ckpt_path = _resolve_resume(cfg, explicit_total_steps, explicit_keys)
    device = resolve_device(cfg.device)
    torch.set_num_threads(default_threads(cfg, device))
    seed_everything(cfg.seed)
    print(f"preset: {describe_preset(cfg.preset)}")
    env = build_learner_env(cfg)
    print(f"teams: {env.spec.describe_teams()}")
    print(f"env backend: {env.backend}")
    logger, lock = None, RunLock(run_dir)
    try:
        learner = make_learner(cfg, env, device)
        pool = attach_pool(cfg, learner)
        if isinstance(env, RayVecEnv):
            env.attach(learner)  # (the 'env backend:' line above names the workers and the mode)
        _check_eval_opponents(cfg, env.spec)
        if hasattr(env, "ready"):  # subprocess workers started while the learner was built: a failed one stops here
            env.ready()
        if payload is not None:
            ckpt.check_compatible(payload, cfg.env.name, cfg.algo.name, env.spec, ckpt_path)
            ckpt.load_learner(learner, payload, ckpt_path, cfg)  # what the checkpoint is first, then what to do
            _check_steps_left(cfg, int(payload["meta"]["env_steps"]), run_dir, explicit_total_steps)
            if pool is not None and "opponents" in payload["learner"]:
                pool.load_state_dict(payload["learner"]["opponents"])
        # from here on the run writes: a refused command leaves no directory, and an existing run's files untouched
        lock.acquire()
        if payload is None:
            check_fresh(run_dir, clean=True)
        console.open(run_dir / LOG, append=payload is not None)
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(_resolved(cfg, env.spec), resolve=True))
        logger = RunLogger(run_dir, cfg, resume=payload is not None)
        if payload is None:
            print(f"run dir: {run_dir}")
            learner.reset_env(cfg.seed)
        else:
            print(f"resumed from step {learner.env_steps} of {cfg.total_steps} ({ckpt_path}); run dir: {run_dir}")
            logger.truncate_after(learner.env_steps)
            learner.restore_env(payload["learner"].get("env", {}), env_seed(cfg.seed, learner.iterations))
        try:
            final = _loop(cfg, learner, logger, run_dir)
        except KeyboardInterrupt:
            print(f"interrupted: checkpoint written under {run_dir}/checkpoints; resume with resume={run_dir}",
                  file=sys.stderr)
            raise
        print(f"done: {run_dir}")
        print(final_line(final))
        return final
    finally:
        if logger is not None:
            logger.close()
        env.close()
        lock.release()


def final_line(final: dict[str, float]) -> str:
    """The closing line: a turn-based game's win / draw / loss rates against each evaluation opponent (its return
    against itself is zero-sum), else the final evaluation return."""
    wins = [k.split("/")[1] for k in final if k.startswith("eval/") and k.endswith("/win_rate") and k.count("/") == 2]
    if wins:
        return "final evaluation: " + "; ".join(
            f"vs {n}: win {final[f'eval/{n}/win_rate']:.1%}, draw {final[f'eval/{n}/draw_rate']:.1%}, "
            f"loss {final[f'eval/{n}/loss_rate']:.1%}" for n in wins)
    ret = final.get("eval/return")
    return f"final eval/return: {ret:.3f}" if ret is not None else "final eval/return: none (no evaluation)"


def describe_preset(name: str) -> str:
    """The start-up line's account of the preset: its file, or that none applies."""
    if name == "none":
        return "none (configs/algo and configs/env values as they are)"
    return f"{name} (configs/preset/{name}.yaml; preset=none runs without it)"


def _resolved(cfg: DictConfig, spec: EnvSpec) -> DictConfig:
    """``cfg`` as ``config.yaml`` records it: with the env's teams resolved to agent lists (the run's own config keeps
    them as declared, patterns or inferred, so a resume with other ``env.kwargs`` meets the spaces check)."""
    out = cfg.copy()
    out.env.teams = {t: list(ms) for t, ms in spec.teams}
    return out


def _loop(cfg: DictConfig, learner: Learner, logger: RunLogger, run_dir: Path) -> dict:
    spec = learner.spec
    next_eval = _next_mark(learner.env_steps, cfg.eval_every)
    next_ckpt = _next_mark(learner.env_steps, cfg.checkpoint_every)
    eval_env = build(cfg, num_envs=eval_copies(cfg), seed=cfg.seed + EVAL_SEED_OFFSET)
    interrupted = {"flag": False}

    def on_sigint(signum, frame):  # finish the current iteration, then checkpoint and stop
        interrupted["flag"] = True

    old_handler = signal.signal(signal.SIGINT, on_sigint)
    total = cfg.total_steps
    if ALGOS[cfg.algo.name].on_policy:  # whole rollouts of num_steps x num_envs env steps
        per = int(cfg.algo.num_steps) * int(cfg.num_envs)
        total = math.ceil(cfg.total_steps / per) * per
        if total != cfg.total_steps:
            print(f"note: total_steps={cfg.total_steps} is rounded up to {total}, a whole number of rollouts of "
                  f"algo.num_steps x num_envs = {cfg.algo.num_steps} x {cfg.num_envs} env steps", file=sys.stderr)
    opponents = eval_opponents(cfg, spec)  # turn-based games: the bar shows the win rates of the last evaluation
    shown: dict[str, str] = {f"win_{name}": "-" for name in opponents}
    bar = tqdm(total=total, initial=learner.env_steps, disable=not cfg.progress, unit="step",
               dynamic_ncols=True, desc=f"{cfg.algo.name}/{cfg.env.name}")
    final: dict[str, float] = {}
    t0, s0 = time.perf_counter(), learner.env_steps
    try:
        while learner.env_steps < cfg.total_steps and not interrupted["flag"]:
            try:
                metrics = _iterate(learner)
            except WorkerError:  # a Ray rollout worker kept failing: keep what was learned, then stop
                _checkpoint(cfg, learner, run_dir, spec)
                print(f"checkpoint written under {run_dir}/checkpoints; resume with resume={run_dir}",
                      file=sys.stderr)
                raise
            _finite(metrics)
            eps = learner.pop_episodes()
            sps = (learner.env_steps - s0) / max(time.perf_counter() - t0, 1e-9)
            metrics["charts/SPS"] = sps
            if learner.recent_returns:  # mean team return of the last 20 finished training episodes
                metrics["charts/recent_return"] = float(np.mean(learner.recent_returns))
            if eps:
                metrics["charts/episodic_return"] = float(np.mean([e.team_return for e in eps]))
                metrics["charts/episodic_length"] = float(np.mean([e.length for e in eps]))
            if learner.env_steps >= next_eval or learner.env_steps >= cfg.total_steps:
                metrics |= _evaluate(cfg, learner, eval_env)
                next_eval = _next_mark(learner.env_steps, cfg.eval_every)
                if learner.env_steps >= cfg.total_steps and cfg.logger.wandb.enabled and cfg.logger.wandb.log_videos:
                    video = _record_video(cfg, learner, run_dir)
                    if video is not None:
                        logger.log_video(learner.env_steps, video)
            logger.log(learner.env_steps, metrics)
            final = metrics
            bar.update(learner.env_steps - bar.n)
            if opponents:
                shown |= {f"win_{n}": f"{metrics[f'eval/{n}/win_rate']:.0%}" for n in opponents
                          if f"eval/{n}/win_rate" in metrics}
            else:
                shown["ret"] = f"{np.mean(learner.recent_returns):.2f}" if learner.recent_returns else "-"
            bar.set_postfix(sps=f"{sps:.0f}", **shown, refresh=False)
            if learner.env_steps >= next_ckpt and learner.env_steps < cfg.total_steps:
                _checkpoint(cfg, learner, run_dir, spec)
                next_ckpt = _next_mark(learner.env_steps, cfg.checkpoint_every)
        if interrupted["flag"]:
            _checkpoint(cfg, learner, run_dir, spec)
            bar.close()
            raise KeyboardInterrupt
        ckpt.save(run_dir / ckpt.CKPT_DIR / "final.pt", _learner_state(learner), cfg, spec)
    finally:
        bar.close()
        signal.signal(signal.SIGINT, old_handler)
        eval_env.close()
    return final


def _next_mark(step: int, every: int) -> float:
    return (step // every + 1) * every if every > 0 else float("inf")


def _evaluate(cfg: DictConfig, learner: Learner, eval_env) -> dict[str, float]:
    """Deterministic evaluation. Turn-based games (two or more seats) are played against each baseline in
    ``selfplay.eval_opponents`` with seats alternating (a policy against itself always scores 0), logged as
    ``eval/<opponent>/win_rate`` / ``draw_rate`` / ``loss_rate`` / ``return`` (the mean payoff); the first opponent's
    figures are also ``eval/win_rate`` ... ``eval/return``. Other envs: team and per-agent returns
    (:func:`marl.evaluate.summarize`)."""
    seed = cfg.seed + EVAL_SEED_OFFSET
    spec = learner.spec
    opponents = eval_opponents(cfg, spec)
    if not opponents:
        return summarize(run_episodes(learner, eval_env, cfg.eval_episodes, seed=seed), teams=spec.teams)
    from marl.opponents import PolicyPlayer, make_baseline

    out: dict[str, float] = {}
    for k, name in enumerate(opponents):
        results = play_matches(eval_env, PolicyPlayer(learner, deterministic=True), make_baseline(name, spec, seed),
                               cfg.eval_episodes, seed)
        s = duel_summary(results, spec.agents)["all"]
        stats = {"return": s["payoff"]["mean"], "win_rate": s["win"]["rate"], "draw_rate": s["draw"]["rate"],
                 "loss_rate": s["loss"]["rate"]}
        out |= {f"eval/{name}/{key}": v for key, v in stats.items()}
        if k == 0:
            out |= {f"eval/{key}": v for key, v in stats.items()}
            out |= {"eval/length": s["length"], "eval/episodes": float(s["n"])}
    return out


def eval_opponents(cfg: DictConfig, spec) -> list[str]:
    """The baselines a turn-based game is evaluated against; empty for other envs, and for games the default
    (random) cannot play."""
    if not (spec.turn_based and len(spec.agents) > 1):
        return []
    from marl.opponents import baselines_for

    names = [str(n) for n in cfg.selfplay.eval_opponents]
    if names == ["random"] and "random" not in baselines_for(spec):
        return []
    return names


def _check_eval_opponents(cfg: DictConfig, spec) -> None:
    """A bad ``selfplay.eval_opponents`` name is a ConfigError (naming the valid baselines) before any training,
    not at the first evaluation."""
    from marl.opponents import make_baseline

    for name in eval_opponents(cfg, spec):
        make_baseline(name, spec)


def _record_video(cfg: DictConfig, learner: Learner, run_dir: Path, max_frames: int = 500) -> Path | None:
    """One deterministic evaluation episode rendered by the env itself, as ``run_dir/videos/eval_<step>.gif``.
    A renderer that fails only costs the video (a warning), never the run."""

    try:
        env = build(cfg, num_envs=1, seed=cfg.seed + EVAL_SEED_OFFSET, render_mode="rgb_array")
        try:
            frames = render_episodes(learner, env, 1, cfg.seed + EVAL_SEED_OFFSET, max_frames=max_frames)
        finally:
            env.close()
        if not frames or any(not isinstance(f, np.ndarray) for f in frames):
            raise ValueError("the env's renderer returned no rgb_array frames")
        return write_video(frames, run_dir / "videos" / f"eval_{learner.env_steps}.gif", fps=env_fps(cfg.env))
    except Exception as err:  # noqa: BLE001 - a missing video must not end a finished training run
        print(f"warning: no evaluation video ({type(err).__name__}: {err})", file=sys.stderr)
        return None


def _learner_state(learner: Learner) -> dict:
    """The learner's state plus its self-play opponent pool's (snapshots), when it has one."""
    state = learner.state_dict()
    if getattr(learner, "opponents", None) is not None:
        state["opponents"] = learner.opponents.state_dict()
    return state


def _checkpoint(cfg: DictConfig, learner: Learner, run_dir: Path, spec: EnvSpec) -> None:
    """Save (the env copies go on untouched) and prune old periodic checkpoints."""
    ckpt.save(run_dir / ckpt.CKPT_DIR / f"step_{learner.env_steps:012d}.pt", _learner_state(learner), cfg, spec)
    ckpt.prune(run_dir)


sys.modules[__name__].__class__ = marl.ApiModule  # marl.train(...) is the Python API (marl.api.train)
