"""Run directories never trap the user: nothing is created for a refused command, a run that failed before its first
checkpoint can be run again, one process at a time writes a run directory, resume says where it stands (and refuses
a finished run, a total below the step reached, another run_dir), and train.log holds what the console showed.

The rows of docs/errors.md these tests cover are checked to be there (``DOC_ROWS``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import ROOT, train_inprocess

from marl.rundir import RunLock

SMALL = ["total_steps=64", "num_envs=2", "eval_episodes=2", "eval_every=0", "checkpoint_every=0"]
DOC_ROWS = [
    "`python scripts/train.py env=cartpole algo=ppo preset=nope`",
    "`python scripts/train.py env=cartpole algo=ppo run_dir=outputs/busy`",
    "`python scripts/train.py resume=outputs/run1`",
    "`python scripts/train.py resume=outputs/run1 total_steps=100`",
    "`python scripts/train.py resume=outputs/run1 run_dir=outputs/other`",
    "`python scripts/train.py resume=outputs/run1 preset=none`",
    "`python scripts/train.py resume=outputs/scratch/div_run`",
]


def train(args: list[str], cwd: Path) -> tuple[int, str, str]:
    """``scripts/train.py ARGS`` in this process, in ``cwd``, as a user types it (no Hydra dir given)."""
    return train_inprocess(args, chdir=cwd)


def test_docs_list_the_run_directory_rows() -> None:
    doc = (ROOT / "docs" / "errors.md").read_text()
    for row in DOC_ROWS:
        assert row in doc, row


def test_refused_commands_and_run_dir_create_no_outputs_dir(tmp_path: Path) -> None:
    code, _, err = train(["env=cartpole", "algo=ddpg"], tmp_path)
    assert code == 2 and "algo=ddpg needs continuous" in err
    code, _, err = train(["env=cartpole", "algo=ppo", "preset=nope"], tmp_path)
    assert code == 2 and "unknown preset 'nope' (no configs/preset/nope.yaml)" in err
    assert not list(tmp_path.iterdir())
    code, _, _ = train(["env=cartpole", "algo=ppo", "progress=false", *SMALL, "run_dir=mine"], tmp_path)
    assert code == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_default_run_dir_and_train_log_copy_the_console(tmp_path: Path) -> None:
    code, out, err = train(["env=cartpole", "algo=ppo", "progress=true", *SMALL], tmp_path)
    assert code == 0, err
    (run,) = tmp_path.glob("outputs/*/*_cartpole_ppo_seed0")
    log = (run / "train.log").read_text().splitlines()
    shown = [ln for ln in out.splitlines() if ln]
    assert shown[0].startswith("preset: cartpole_ppo") and shown[-1].startswith("final eval/return:")
    assert [ln for ln in log if not ln.startswith("ppo/cartpole:")] == shown
    bars = [ln for ln in log if ln.startswith("ppo/cartpole:")]
    assert len(bars) == 1 and "64/64" in bars[0]  # the progress bar's last state, not each redraw
    assert "\r" not in (run / "train.log").read_text()


def test_a_run_that_failed_before_its_first_checkpoint_can_be_run_again(tmp_path: Path) -> None:
    diverge = ["algo.lr=1e30", "algo.critic_lr=1e30"]
    code, _, err = train(["env=cartpole", "algo=ppo", *diverge, *SMALL, "progress=false", "run_dir=div"], tmp_path)
    assert code == 2 and "training diverged" in err
    assert "error: training diverged" in (tmp_path / "div" / "train.log").read_text()
    code, _, err = train(["resume=div"], tmp_path)
    assert code == 2 and "ended before its first checkpoint: there is nothing to resume" in err
    assert "run_dir=div" in err
    code, out, err = train(["env=cartpole", "algo=ppo", *SMALL, "progress=false", "run_dir=div"], tmp_path)
    assert code == 0, err
    assert "ended before its first checkpoint; its files are replaced" in out
    assert (tmp_path / "div" / "checkpoints" / "final.pt").is_file()
    assert "diverged" not in (tmp_path / "div" / "train.log").read_text()


def test_two_processes_cannot_write_one_run_dir(tmp_path: Path) -> None:
    lock = RunLock(tmp_path / "busy")
    lock.acquire()
    try:
        code, _, err = train(["env=cartpole", "algo=ppo", *SMALL, "progress=false", "run_dir=busy"], tmp_path)
    finally:
        lock.release()
    assert code == 2 and f"run directory 'busy' is being written by process {os.getpid()}" in err
    assert sorted(p.name for p in (tmp_path / "busy").iterdir()) == [".lock"]  # nothing else written


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("finished")
    code, _, err = train(["env=cartpole", "algo=ppo", *SMALL, "progress=false", "run_dir=run1"], cwd)
    assert code == 0, err
    return cwd


@pytest.mark.parametrize("args,expect", [
    (["resume=run1"], "run 'run1' is finished: it reached 64 of its 64 env steps"),
    (["resume=run1", "total_steps=32"], "total_steps=32 is below the 64 env steps run 'run1' has reached"),
    (["resume=run1", "run_dir=other"], "continues that run in its own directory 'run1', not in run_dir=other"),
    (["resume=run1", "total_steps=128", "preset=none"], "preset= does not apply with resume="),
], ids=["finished", "below-steps", "other-run-dir", "preset"])
def test_resume_refusals(finished: Path, args: list[str], expect: str) -> None:
    before = (finished / "run1" / "metrics.csv").read_text()
    code, _, err = train([*args, "progress=false"], finished)
    assert code == 2 and expect in err and "Traceback" not in err
    assert (finished / "run1" / "metrics.csv").read_text() == before
    assert not (finished / "other").exists()


def test_resume_says_where_it_stands(finished: Path) -> None:
    code, out, err = train(["resume=run1", "total_steps=128", "progress=false"], finished)
    assert code == 0, err
    assert "resumed from step 64 of 128" in out
    log = (finished / "run1" / "train.log").read_text()
    assert log.count("preset: cartpole_ppo") == 2 and "resumed from step 64 of 128" in log  # appended
