"""env.backend=auto: worker processes only when a core is free and a batch step is slow enough to gain; the start
line says which backend runs and why."""

from __future__ import annotations

import pytest

from marl.adapters import make_vec_env, resolve_env_config
from marl.adapters import registry as R
from marl.adapters.vector import InProcessVecEnv, SubprocVecEnv


def build(monkeypatch, cores: int, load: float, num_envs: int = 4, steps: int | None = 1_000_000):
    monkeypatch.setattr(R, "cpu_count", lambda: cores)
    monkeypatch.setattr(R, "busy_cores", lambda: (load, f"{load:.1f} busy"))
    cfg = resolve_env_config("simple_spread")
    assert cfg.backend == "auto"  # the shipped default
    return make_vec_env(cfg, num_envs, seed=0, steps=steps)


def test_a_busy_machine_steps_in_process(monkeypatch):
    env = build(monkeypatch, cores=2, load=3.0)
    try:
        assert isinstance(env, InProcessVecEnv)
        assert env.backend.startswith("inprocess (env.backend=auto: 0.0 of 2 cores free")
    finally:
        env.close()


def test_free_cores_and_a_slow_step_use_workers(monkeypatch):
    monkeypatch.setattr(R, "AUTO_MIN_STEP", 0.0)  # any step is slow enough
    env = build(monkeypatch, cores=4, load=0.5)
    try:
        assert isinstance(env, SubprocVecEnv) and env.backend.startswith("subprocess (")
        assert "3.5 of 4 cores free (0.5 busy)" in env.backend
    finally:
        env.close()


def test_a_fast_step_stays_in_process_even_on_an_idle_machine(monkeypatch):
    monkeypatch.setattr(R, "AUTO_MIN_STEP", 10.0)  # no step is slow enough
    env = build(monkeypatch, cores=4, load=0.0)
    try:
        assert isinstance(env, InProcessVecEnv)
    finally:
        env.close()


@pytest.mark.parametrize("steps", [None, 20_000])
def test_a_short_run_or_an_evaluation_stays_in_process(monkeypatch, steps):
    """Starting workers costs seconds: short runs (tests, smoke runs) and evaluation envs (steps unknown) step
    in-process even where workers would pay off over a long run."""
    monkeypatch.setattr(R, "AUTO_MIN_STEP", 0.0)
    env = build(monkeypatch, cores=4, load=0.0, steps=steps)
    try:
        assert isinstance(env, InProcessVecEnv)
        assert ("too short" in env.backend) if steps else ("evaluation" in env.backend)
    finally:
        env.close()


@pytest.mark.parametrize("backend", ["inprocess", "subprocess"])
def test_an_explicit_backend_is_kept(monkeypatch, backend):
    cfg = resolve_env_config("simple_spread")
    cfg.backend = backend
    env = make_vec_env(cfg, 2, seed=0)
    try:
        assert env.backend.startswith(backend)
    finally:
        env.close()


def test_busy_cores_is_measured_now_and_falls_back_to_the_load_average(monkeypatch):
    busy, how = R.busy_cores(0.05)
    assert 0.0 <= busy <= (R.os.cpu_count() or 1) + 1e-6 and "busy over 0.05 s" in how

    def no_proc_stat(*a, **k):
        raise OSError("no /proc/stat")

    monkeypatch.setattr(R, "open", no_proc_stat, raising=False)
    monkeypatch.setattr(R.os, "getloadavg", lambda: (3.0, 3.0, 3.0))
    assert R.busy_cores(0.01) == (2.0, "load average 3.0")  # this process counted out
