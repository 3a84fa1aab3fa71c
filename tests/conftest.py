"""Shared fixtures for the end-to-end tests: run ``scripts/train.py`` in a subprocess, compose tiny-budget configs,
read and compare ``metrics.csv`` files.

Every CLI run gets ``WANDB_MODE=disabled``, ``progress=false`` and its own Hydra output dir under ``tmp_path``, so
nothing is written into the repository. ``tests/`` is on ``PYTHONPATH`` so custom envs in ``tests/bad_envs.py`` can
be named as entry points (``env.entry_point=bad_envs:raises_mid_episode``).
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import os
import runpy
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "scripts" / "train.py"
CONFIGS = ROOT / "configs"
TESTS = Path(__file__).resolve().parent

# Wall-clock columns: differ between two otherwise identical runs.
WALL_CLOCK = ("charts/SPS",)

# A tiny on-policy budget: 2 copies x 16 steps per iteration, one short update, 2 evaluation episodes at the end.
TINY = ("num_envs=2", "algo.num_steps=16", "eval_episodes=2", "eval_every=0", "checkpoint_every=0")
TINY_PPO = ("algo.update_epochs=2", "algo.num_minibatches=2")

_counter = itertools.count()


def cli_env() -> dict[str, str]:
    """The environment of a CLI subprocess: wandb off, one torch thread, tests/ importable, no Hydra full errors."""
    env = os.environ.copy()
    env["WANDB_MODE"] = "disabled"
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def cli_args(args: list[str] | tuple[str, ...], cwd: Path) -> list[str]:
    """The full command: the user's overrides plus progress=false and a fresh Hydra output dir under ``cwd``."""
    hydra_dir = cwd / "hydra" / f"{next(_counter):03d}"
    extra = ["progress=false", f"hydra.run.dir={hydra_dir}", f"hydra.sweep.dir={hydra_dir}"]
    return [sys.executable, str(TRAIN), *args, *extra]


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str
    args: list[str]

    def __str__(self) -> str:  # shown by pytest when an assertion on the result fails
        return f"$ {' '.join(self.args)}\nexit {self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def run_cli(args: list[str] | tuple[str, ...], cwd: Path, timeout: float = 120) -> CliResult:
    """Run ``scripts/train.py ARGS`` to completion in ``cwd``."""
    cmd = cli_args(args, cwd)
    p = subprocess.run(cmd, cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=timeout)
    return CliResult(p.returncode, p.stdout, p.stderr, cmd)


def train_inprocess(args: list[str] | tuple[str, ...], chdir: Path | None = None) -> tuple[int, str, str]:
    """``scripts/train.py ARGS`` executed as ``__main__`` inside this process (Hydra, marl, exit code and all), in
    ``chdir`` when given: ``(exit code, stdout, stderr)``; argv, the environment and the working directory restored."""
    saved_argv, saved_cwd, saved_env = sys.argv, os.getcwd(), dict(os.environ)
    sys.argv = [str(TRAIN), *args]
    os.environ["WANDB_MODE"] = "disabled"
    out, err, code = io.StringIO(), io.StringIO(), 0
    if chdir is not None:
        os.chdir(chdir)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_path(str(TRAIN), run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        os.chdir(saved_cwd)
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
    return code, out.getvalue(), err.getvalue()


def run_cli_inprocess(args: list[str] | tuple[str, ...], cwd: Path) -> CliResult:
    """The command :func:`run_cli` runs, in this process (:func:`train_inprocess`): the same code path without the
    ~3 s interpreter + import start-up. For runs that stop early (bad input); training runs and signal tests use
    :func:`run_cli`."""
    cmd = cli_args(args, cwd)
    return CliResult(*train_inprocess(cmd[2:]), cmd)


def start_cli(args: list[str] | tuple[str, ...], cwd: Path) -> subprocess.Popen:
    """Start ``scripts/train.py ARGS`` in the background (for SIGKILL / SIGINT tests); output goes to files."""
    cmd = cli_args(args, cwd)
    tag = next(_counter)
    out, err = open(cwd / f"proc{tag}.out", "w"), open(cwd / f"proc{tag}.err", "w")  # noqa: SIM115 - owned by Popen
    proc = subprocess.Popen(cmd, cwd=cwd, env=cli_env(), stdout=out, stderr=err, text=True)
    proc.out_path, proc.err_path = Path(out.name), Path(err.name)
    out.close()
    err.close()
    return proc


def wait_for(predicate, timeout: float, proc: subprocess.Popen | None = None, poll: float = 0.05) -> None:
    """Poll ``predicate`` until true; fail if ``timeout`` passes or ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}) before the condition held:\n"
                                 f"{proc.err_path.read_text()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(poll)


def read_rows(path: Path, drop: tuple[str, ...] = WALL_CLOCK) -> list[dict[str, str]]:
    """``metrics.csv`` as a list of rows (strings, so comparisons are bit-exact), without the wall-clock columns."""
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k not in drop} for row in csv.DictReader(f)]


def compose(overrides: list[str] | tuple[str, ...]) -> DictConfig:
    """The config ``scripts/train.py OVERRIDES`` would run (Hydra compose of configs/, no ``hydra`` node)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


@contextlib.contextmanager
def collected(cfg: DictConfig, seed: int = 0):
    """A CPU learner for ``cfg`` after one rollout: yields ``(env, learner, buf)`` and closes the env afterwards."""
    from marl.train import build, make_learner

    env = build(cfg)
    try:
        learner = make_learner(cfg, env, "cpu")
        learner.reset_env(seed)
        yield env, learner, learner.collect()
    finally:
        env.close()


@pytest.fixture
def one_thread():
    """Small MLPs run fastest single-threaded (and the CPU is shared); the setting is restored afterwards. Modules
    opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_cfg(tmp_path: Path):
    """Factory: ``tiny_cfg("env=cartpole", "algo=ppo", ..., run_dir=...)`` -> a composed tiny-budget config."""

    def make(*overrides: str, run_dir: Path | None = None) -> DictConfig:
        cfg = compose([*TINY, "total_steps=128", "progress=false", "logger=csv", *overrides])
        cfg.run_dir = str(run_dir or tmp_path / f"run{next(_counter):03d}")
        return cfg

    return make


@pytest.fixture(scope="session")
def base_run(tmp_path_factory) -> Path:
    """One finished tiny PPO/cartpole run (with periodic checkpoints) shared read-only; copy it before changing it."""
    cwd = tmp_path_factory.mktemp("base")
    run_dir = cwd / "run"
    # preset=none: resumes with other total_steps are compared with straight runs (the preset anneals the lr over
    # total_steps)
    res = run_cli(["env=cartpole", "algo=ppo", "preset=none", *TINY, *TINY_PPO, "total_steps=128",
                   "checkpoint_every=32", f"run_dir={run_dir}"], cwd)
    assert res.returncode == 0, res
    return run_dir


@pytest.fixture
def run_copy(base_run: Path, tmp_path: Path) -> Path:
    """A private copy of :func:`base_run` to damage or extend."""
    dst = tmp_path / "run"
    shutil.copytree(base_run, dst)
    return dst
