"""Bad input, a clear error every time: each row of docs/errors.md run through the real CLI.

Every row must exit with code 2, print a short message naming the problem (``error: ...`` plus a ``fix:`` line, or
Hydra's own "Could not find ... / Available options" listing), show no traceback (unless ``debug=true``), and leave
the files of an existing run directory byte for byte as they were.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from conftest import ROOT, read_rows, run_cli, run_cli_inprocess

from marl import checkpoint as ckpt

# Run-size keys put BEFORE each row's own arguments (the last value wins), so a row that wrongly trains stays tiny.
BUDGET = ("total_steps=64", "num_envs=2", "eval_episodes=2", "eval_every=0", "checkpoint_every=0")
DOC = ROOT / "docs" / "errors.md"


def truncate_final(run: Path) -> None:
    f = run / "checkpoints" / "final.pt"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])


def corrupt_final(run: Path) -> None:
    (run / "checkpoints" / "final.pt").write_bytes(os.urandom(3000))


@dataclass
class Row:
    id: str
    args: list[str]  # as the user types them; {run} = a finished run dir, {tmp} = a scratch dir
    expect: list[str]  # substrings of stderr (all required)
    damage: Callable[[Path], None] | None = None  # applied to the run dir copy before the command
    needs_run: bool = False
    check: Callable[[Path], None] | None = None  # extra checks on the scratch dir afterwards
    marks: list = field(default_factory=list)

    @property
    def command(self) -> str:
        """As documented in docs/errors.md: {run} -> outputs/run1 (a finished run), {tmp} -> outputs/scratch."""
        args = [a.format(run="outputs/run1", tmp="outputs/scratch") for a in self.args]
        return "python scripts/train.py " + " ".join(args)


def no_final_checkpoint(tmp: Path) -> None:
    assert not list(tmp.glob("**/final.pt")), "a diverged run must not write final.pt"


def nan_run_kept_good_state(tmp: Path) -> None:
    """Periodic checkpoints from before the NaN are intact and loadable; metrics.csv holds only finite losses."""
    run = tmp / "nan_run"
    steps = sorted(run.glob("checkpoints/step_*.pt"))
    assert steps, "no checkpoint survived"
    assert not (run / "checkpoints" / "final.pt").exists()
    payload = ckpt.load(steps[-1])
    rows = read_rows(run / "metrics.csv")
    assert int(rows[-1]["global_step"]) >= payload["meta"]["env_steps"] > 0
    for row in rows:
        for key, value in row.items():
            if key.startswith("losses/") and value and not key.endswith("explained_variance"):
                assert math.isfinite(float(value)), (key, row)


CUSTOM = ["env=custom", "algo=ppo"]
ROWS: list[Row] = [
    Row("unknown-env", ["env=nope"], ["Could not find 'env/nope'", "Available options in 'env'", "cartpole",
                                       "simple_spread"]),
    Row("unknown-algo", ["algo=nope"], ["Could not find 'algo/nope'", "Available options in 'algo'", "mappo"]),
    Row("unknown-logger", ["logger=nope"], ["Could not find 'logger/nope'", "Available options in 'logger'",
                                             "tensorboard", "wandb"]),
    Row("misspelled-key", ["algo.lrr=1"], ["Could not override 'algo.lrr'", "Key 'lrr' is not in struct"]),
    Row("added-unknown-key", ["+algo.lrr=1"], ["unknown config key 'algo.lrr'", "did you mean 'lr'?"]),
    Row("lr-not-a-number", ["algo.lr=abc"], ["bad value for 'algo.lr'", "'abc'", "Float"]),
    Row("num_envs-not-an-int", ["num_envs=two"], ["bad value for 'num_envs'", "'two'", "Integer"]),
    Row("negative-lr", ["algo.lr=-0.001"], ["'algo.lr=-0.001' is out of range", "> 0"]),
    Row("zero-num_envs", ["num_envs=0"], ["'num_envs=0' is out of range", ">= 1"]),
    Row("ray-grpo-groups", ["env=cartpole", "algo=grpo", "env.backend=ray", "env.workers=2", "num_envs=8",
                            "algo.group_size=8"],
        ["each Ray worker must hold whole groups, but its 4 env copies are not a multiple of algo.group_size=8",
         "pass ray.envs_per_worker=8"]),
    Row("ray-grpo-async", ["env=cartpole", "algo=grpo", "env.backend=ray", "ray.mode=async"],
        ["ray.mode=async with algo=grpo", "GRPO has no critic", "use ray.mode=sync with grpo"]),
    Row("ray-async-gradient-steps", ["env=pendulum", "algo=ddpg", "env.backend=ray", "env.workers=2", "num_envs=4",
                                     "algo.gradient_steps=3", "ray.mode=async"],
        ["ray.mode=async with algo=ddpg", "gradient_steps=3 is not a multiple of env.workers=2",
         "pass algo.gradient_steps=2"]),
    Row("ray-envs-not-shared-equally", ["env.backend=ray", "env.workers=3", "num_envs=8"],
        ["num_envs=8 copies cannot be shared equally by env.workers=3", "pass num_envs=6"]),
    Row("ray-vmas", ["env=vmas_simple_spread", "algo=mappo", "env.backend=ray"],
        ["env.backend=ray with the VMAS env 'vmas_simple_spread'", "drop env.backend"]),
    Row("ray-bad-mode", ["env.backend=ray", "ray.mode=fast"], ["'ray.mode=fast' is not a valid choice", "sync, async"]),
    Row("ray-async-rnn", ["env=cartpole", "algo=ppo", "algo.rnn=gru", "env.backend=ray", "ray.mode=async"],
        ["ray.mode=async with algo.rnn=gru", "use ray.mode=sync with a recurrent policy"]),
    Row("ray-async-minibatches", ["env=cartpole", "algo=ppo", "env.backend=ray", "env.workers=2", "num_envs=4",
                                  "algo.num_steps=2", "algo.num_minibatches=6", "ray.mode=async"],
        ["'algo.num_minibatches=6' is larger than an async update's batch", "pass algo.num_minibatches=4 or less"]),
    Row("zero-clip_coef", ["algo=ppo", "algo.clip_coef=0"], ["'algo.clip_coef=0.0' is out of range", "> 0"]),
    Row("gamma-above-1", ["algo.gamma=1.5"], ["'algo.gamma=1.5' is out of range", "in (0, 1]"]),
    Row("gamma-zero", ["algo.gamma=0"], ["'algo.gamma=0.0' is out of range", "in (0, 1]"]),
    Row("unknown-choice", ["algo=ppo", "algo.variant=trpo"], ["'algo.variant=trpo' is not a valid choice",
                                                              "clip, kl, adaptive_kl"]),
    Row("negative-seed", ["seed=-1"], ["'seed=-1' is out of range", ">= 0"]),
    Row("float-for-an-int", ["total_steps=2e3"], ["'total_steps' must be an integer, got 2e3", "total_steps=2000"]),
    Row("minibatches-exceed-batch", ["algo=ppo", "algo.num_steps=16", "algo.num_minibatches=64"],
        ["'algo.num_minibatches=64' is larger than the batch", "16 x 2 = 32", "algo.num_minibatches=32 or less"]),
    Row("cuda-without-gpu", ["device=cuda"], ["device=cuda but no CUDA device is available", "device=cpu"],
        marks=[pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")]),
    Row("ddpg-on-discrete", ["env=cartpole", "algo=ddpg"], ["algo=ddpg needs continuous (Box) actions",
                                                            "Discrete actions", "algo=ppo"]),
    Row("td3-on-discrete", ["env=cartpole", "algo=td3"], ["algo=td3 needs continuous (Box) actions",
                                                          "off-policy: sac, maddpg"]),
    Row("maddpg-turn-based", ["env=tictactoe", "algo=maddpg"], ["algo=maddpg does not support turn-based (AEC)",
                                                                "its replay stores one-step transitions",
                                                                "use algo=ppo, ippo or mappo"]),
    Row("happo-shared", ["env=simple_spread", "algo=happo", "algo.sharing=shared"],
        ["HAPPO needs per-agent policies", "algo.sharing=per_agent"]),
    Row("hatrpo-shared", ["env=simple_spread", "algo=hatrpo", "algo.sharing=shared"],
        ["HATRPO needs per-agent policies", "algo.sharing=per_agent", "algo=trpo"]),
    Row("grpo-group-size", ["env=cartpole", "algo=grpo", "num_envs=12"],
        ["algo.group_size=8 does not divide num_envs=12", "num_envs=8"]),
    Row("conv-on-flat-obs", ["env=simple_spread", "algo.conv=[[64,4]]"],
        ["algo.conv needs image or board observations (H, W, C)", "shape (18,)", "algo.conv (null)"]),
    Row("symmetric-without-symmetry", ["env=tictactoe", "algo=ppo", "algo.symmetric=true"],
        ["env 'tictactoe' declares no symmetry", "env.symmetry.flip_axis", "drop algo.symmetric"]),
    Row("symmetric-central-critic", ["env=connect_four", "algo=mappo", "algo.symmetric=true"],
        ["not available for algo=mappo", "use algo=ppo or algo=ippo"]),
    Row("rnn-chunk-not-dividing", ["algo=ppo", "algo.rnn=gru", "algo.rnn_chunk=50"],
        ["'algo.rnn_chunk=50' does not divide algo.num_steps=128", "divides algo.num_steps (e.g. 16)"]),
    Row("rnn-unknown-cell", ["algo=ppo", "algo.rnn=transformer"],
        ["'algo.rnn=transformer' is not a valid choice", "gru, lstm"]),
    Row("rnn-minibatches-exceed-chunks", ["algo=ppo", "algo.rnn=gru", "algo.num_steps=16", "algo.rnn_chunk=16",
                                          "algo.num_minibatches=4"],
        ["larger than the number of chunks", "16 / 16 x 2 = 2", "algo.num_minibatches=2 or less"]),
    Row("rnn-not-for-algo", ["algo=grpo", "+algo.rnn=gru"],
        ["algo.rnn=gru is not available for algo=grpo", "set algo.rnn=null"]),
    Row("rnn-symmetric", ["env=connect_four", "algo=ppo", "algo.rnn=gru", "algo.symmetric=true"],
        ["algo.symmetric with algo.rnn=gru", "drop algo.symmetric, or set algo.rnn=null"]),
    Row("yaml-lacks-key", ["algo=ppo", "~algo.gae_lambda"],
        ["missing required config value(s): algo.gae_lambda", "marl.config.compose"]),
    Row("team-reward-on-ippo", ["algo=ippo", "+algo.team_reward=sum"],
        ["algo.team_reward does not apply to algo=ippo", "use algo=mappo"]),
    Row("teams-unknown-agent", ["env=simple_tag", "env.teams.adversary=[hunter_0]"],
        ["env.teams['adversary'] names agent 'hunter_0'", "the env's agents are: adversary_0"]),
    Row("teams-leave-out-agents", ["env=simple_tag", "env.teams.adversary=[adversary_0]"],
        ["env.teams of env 'simple_tag' leaves out agent(s) adversary_1, adversary_2", "exactly one team"]),
    Row("vmas-without-scenario", ["env=vmas"], ["env=vmas needs a scenario", "env.scenario=simple_spread"]),
    Row("vmas-unknown-scenario", ["env=vmas", "env.scenario=simple_sprad"],
        ["unknown VMAS scenario 'simple_sprad' (did you mean 'simple_spread'?)", "navigation"]),
    Row("vmas-kwarg-set-by-marl", ["env=vmas_simple_spread", "+env.kwargs.num_envs=3"],
        ["env.kwargs.num_envs is set by marl", "num_envs="]),
    Row("vmas-grpo-groups", ["env=vmas_simple_spread", "algo=grpo"],
        ["VMAS envs cannot start groups of copies from the same state", "use a PettingZoo or gymnasium env"]),
    Row("custom-without-entry-point", ["env=custom"], ["env.entry_point"]),
    Row("custom-does-not-import", [*CUSTOM, "env.entry_point=no_such_module:env"],
        ["'no_such_module:env'", "does not import", "No module named 'no_such_module'"]),
    Row("custom-wrong-object", [*CUSTOM, "env.entry_point=bad_envs:not_an_env"],
        ["'bad_envs:not_an_env' returned a dict, not a PettingZoo AECEnv or ParallelEnv"]),
    Row("custom-breaks-api", [*CUSTOM, "env.entry_point=bad_envs:breaks_api"],
        ["'bad_envs:breaks_api' fails PettingZoo's parallel_api_test", "exact same space object"]),
    Row("custom-obs-off-its-space", [*CUSTOM, "env.entry_point=bad_envs:wrong_obs_shape", "env.check=false"],
        ["env 'custom' raised in copy 0 at reset", "shape (3,)"]),
    Row("custom-obs-outside-space", [*CUSTOM, "env.entry_point=bad_envs:obs_off_space"],
        ["fails marl's env check", "agent 'agent_1''s observation at step 3 is outside its observation space",
         "values in [5, 5]"]),
    Row("custom-reward-misses-agent", [*CUSTOM, "env.entry_point=bad_envs:reward_misses_agent"],
        ["fails marl's env check", "at step 2 its rewards dict has no entry for live agent 'agent_1'"]),
    Row("custom-unknown-agent", [*CUSTOM, "env.entry_point=bad_envs:stranger_agent"],
        ["fails marl's env check", "agent 'intruder', which is not in possible_agents (agent_0, agent_1)"]),
    Row("custom-unknown-agent-unchecked", [*CUSTOM, "env.entry_point=bad_envs:stranger_agent", "env.check=false"],
        ["reported agent 'intruder' in copy 0", "not in its possible_agents (agent_0, agent_1)"]),
    Row("env-raises-mid-episode", [*CUSTOM, "env.entry_point=bad_envs:raises_mid_episode", "env.check=false"],
        ["env 'custom' raised in copy 0 at episode step 5", "ZeroDivisionError: the physics engine divided by zero"]),
    Row("custom-fails-in-worker", [*CUSTOM, "env.entry_point=bad_envs:fails_in_worker", "env.check=false",
                                   "env.backend=subprocess", "env.workers=1"],
        ["building copy 1 in a worker process failed", "RuntimeError: no licence server in this process",
         "or run with env.backend=inprocess"]),
    Row("loss-diverges", ["env=cartpole", "algo=ppo", "algo.lr=1e30", "algo.critic_lr=1e30", "run_dir={tmp}/div_run"],
        ["training diverged", "NaN/inf", "lower algo.lr"], check=no_final_checkpoint),
    Row("nan-rewards", [*CUSTOM, "env.entry_point=bad_envs:nan_reward", "env.check=false",
                        "+env.kwargs.nan_after=100", "algo.num_steps=16", "total_steps=320", "checkpoint_every=64",
                        "run_dir={tmp}/nan_run"],
        ["NaN", "the last good checkpoint is kept"], check=nan_run_kept_good_state),
    Row("run-dir-taken", ["env=cartpole", "algo=ppo", "run_dir={run}"],
        ["already holds a run; it is never overwritten", "resume="], needs_run=True),
    Row("resume-missing", ["resume={tmp}/no_such_run"], ["no_such_run' does not exist"]),
    Row("resume-no-checkpoint", ["resume={tmp}"], ["no checkpoint found in"]),
    Row("resume-truncated", ["resume={run}"], ["final.pt' is truncated or corrupt"], damage=truncate_final,
        needs_run=True),
    Row("resume-corrupt", ["resume={run}"], ["final.pt", "corrupt"], damage=corrupt_final, needs_run=True),
    Row("resume-other-env", ["resume={run}", "env=simple_spread"],
        ["was trained with env=cartpole, not env=simple_spread"], needs_run=True),
    Row("resume-other-architecture", ["resume={run}", "algo.hidden=[128,128]"],
        ["does not fit the networks this config builds", "is [1, 64, 4] in the checkpoint, [1, 128, 4] here",
         "algo.hidden [64, 64] -> [128, 128]", "cannot change on resume"], needs_run=True),
    Row("resume-other-algo", ["resume={run}", "algo=a2c"], ["was trained with algo=ppo, not algo=a2c"],
        needs_run=True),
]


def snapshot(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*"))
            if p.is_file()}


def error_block(stderr: str) -> list[str]:
    """The user-facing message: from marl's ``error:`` line (or Hydra's first line) to the end, non-empty lines."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    start = next((i for i, ln in enumerate(lines) if ln.startswith("error:")), None)
    if start is None:
        start = next((i for i, ln in enumerate(lines) if re.match(r"(In '|Could not|Key '|Error)", ln)), 0)
    return lines[start:]


@pytest.mark.parametrize("row", [pytest.param(r, id=r.id, marks=r.marks) for r in ROWS])
def test_bad_input(row: Row, tmp_path: Path, request) -> None:
    run = None
    if row.needs_run:
        run = request.getfixturevalue("run_copy")
        if row.damage is not None:
            row.damage(run)
        before = snapshot(run)
    args = [a.format(run=run, tmp=tmp_path) for a in row.args]
    res = run_cli_inprocess([*BUDGET, *args], tmp_path)
    assert res.returncode == 2, res
    assert "Traceback" not in res.stderr, res
    for text in row.expect:
        assert text in res.stderr, f"expected {text!r} in the message\n{res}"
    block = error_block(res.stderr)
    # Hydra's own messages list every available option of the config group (one line per env / algo YAML)
    options = max(len(list((ROOT / "configs" / d).glob("*.yaml"))) for d in ("env", "algo", "preset"))
    limit = 8 if block and block[0].startswith("error:") else options + 10
    assert 1 <= len(block) <= limit, res
    if run is not None:
        assert snapshot(run) == before, "the existing run directory was modified"
    if row.check is not None:
        row.check(tmp_path)


@pytest.mark.parametrize("row_id", ["unknown-env", "negative-lr", "env-raises-mid-episode"])
def test_bad_input_in_a_real_process(row_id: str, tmp_path: Path) -> None:
    """A few rows again through a real interpreter: the process exit code and a stderr free of tracebacks."""
    row = next(r for r in ROWS if r.id == row_id)
    res = run_cli([*BUDGET, *row.args], tmp_path)
    assert res.returncode == 2, res
    assert "Traceback" not in res.stderr, res
    assert all(text in res.stderr for text in row.expect), res


def test_debug_shows_traceback(tmp_path: Path) -> None:
    res = run_cli_inprocess([*BUDGET, "device=cuda", "debug=true"], tmp_path)
    if "no CUDA device" not in res.stderr:
        pytest.skip("a CUDA device is present")
    assert res.returncode == 2, res
    assert "Traceback (most recent call last)" in res.stderr and "ConfigError" in res.stderr, res
    assert "error: device=cuda but no CUDA device is available" in res.stderr, res


def test_docs_table_lists_every_row() -> None:
    """docs/errors.md documents each tested bad input with its exact command (and has at least 18 rows)."""
    doc = DOC.read_text()
    table = [ln for ln in doc.splitlines() if ln.startswith("| `python scripts/train.py")]
    assert len(table) >= 18
    for row in ROWS:
        assert f"`{row.command}`" in doc, f"docs/errors.md lacks the row for {row.id}: {row.command}"
