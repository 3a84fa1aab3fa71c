"""Checkpoints can never run code, and they know what they were trained on.

A pickle crafted to run a shell command on load is refused (the command never runs); every checkpoint records the marl
version, env, algorithm and agent spaces, and loading into another env / algorithm / spaces is refused.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from conftest import TINY, TINY_PPO, run_cli_inprocess
from omegaconf import OmegaConf

import marl
from marl import checkpoint as ckpt
from marl.errors import CheckpointError
from marl.train import build


class Evil:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def write_evil(path: Path, marker: Path, how: str) -> None:
    payload = {"meta": Evil(marker), "config": "", "learner": {}}
    if how == "torch":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f, protocol=2)


@pytest.mark.parametrize("how", ["torch", "pickle"])
def test_crafted_pickle_is_refused_and_never_runs(how: str, run_copy: Path, tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    evil = run_copy / "checkpoints" / "step_000000999999.pt"  # the newest checkpoint: resume picks it
    write_evil(evil, marker, how)
    res = run_cli_inprocess([f"resume={run_copy}"], tmp_path)
    assert res.returncode == 2, res
    assert "Traceback" not in res.stderr, res
    assert "refused to load" in res.stderr and "step_000000999999.pt" in res.stderr, res
    assert "GLOBAL posix.system" in res.stderr or "GLOBAL os.system" in res.stderr, res
    with pytest.raises(CheckpointError):
        ckpt.load(evil)
    assert not marker.exists(), "loading the checkpoint ran code"


def test_checkpoint_records_what_it_was_trained_on(base_run: Path) -> None:
    payload = ckpt.load(base_run / "checkpoints" / "final.pt")
    meta = payload["meta"]
    assert meta["marl_version"] == marl.__version__
    assert (meta["env"], meta["algo"]) == ("cartpole", "ppo")
    assert meta["env_steps"] == 128
    assert "Box(" in meta["spaces"] and "Discrete(2)" in meta["spaces"]
    stored = OmegaConf.create(payload["config"])
    assert (stored.env.name, stored.algo.name, stored.total_steps) == ("cartpole", "ppo", 128)
    assert not list(base_run.glob("checkpoints/.tmp_*")), "a temporary file of an atomic save was left behind"


def test_check_compatible_refuses_other_env_algo_and_spaces(base_run: Path) -> None:
    path = base_run / "checkpoints" / "final.pt"
    payload = ckpt.load(path)
    cfg = OmegaConf.create(payload["config"])
    env = build(cfg, num_envs=1)
    try:
        ckpt.check_compatible(payload, "cartpole", "ppo", env.spec, path)  # its own env and algo: fine
        with pytest.raises(CheckpointError, match="trained on env 'cartpole', not on 'acrobot'"):
            ckpt.check_compatible(payload, "acrobot", "ppo", env.spec, path)
        with pytest.raises(CheckpointError, match="written by algo 'ppo', not 'a2c'"):
            ckpt.check_compatible(payload, "cartpole", "a2c", env.spec, path)
        other = dict(payload, meta=dict(payload["meta"], spaces=payload["meta"]["spaces"].replace("Discrete(2)",
                                                                                                  "Discrete(3)")))
        with pytest.raises(CheckpointError, match="other agents or spaces"):
            ckpt.check_compatible(other, "cartpole", "ppo", env.spec, path)
    finally:
        env.close()


def test_spaces_mismatch_on_resume(tmp_path: Path) -> None:
    """simple_spread trained with N=3, resumed with env.kwargs.N=4: refused, naming both spaces; run dir untouched."""
    run = tmp_path / "spread"
    res = run_cli_inprocess(["env=simple_spread", "algo=mappo", *TINY, *TINY_PPO, "total_steps=32",
                             f"run_dir={run}"], tmp_path)
    assert res.returncode == 0, res
    before = {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    res = run_cli_inprocess([f"resume={run}", "env.kwargs.N=4"], tmp_path)
    assert res.returncode == 2, res
    assert "Traceback" not in res.stderr, res
    assert "was trained on env 'simple_spread' with other agents or spaces" in res.stderr, res
    assert "agent_2|" in res.stderr and "agent_3|" in res.stderr, res  # the checkpoint's agents, then this env's
    assert {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_a_checkpoint_from_before_presets_loads_as_a_run_without_one(run_copy: Path) -> None:
    """A checkpoint written before the ``preset`` key existed evaluates and resumes as the run it was (no preset)."""
    from marl.matches import load_policy

    final = run_copy / "checkpoints" / "final.pt"
    payload = ckpt.load(final)
    old = OmegaConf.create(payload["config"])
    del old["preset"]
    payload["config"] = OmegaConf.to_yaml(old)
    torch.save(payload, final)
    cfg, _, _ = load_policy(run_copy)
    assert cfg.preset == "none"
