"""Determinism, checkpoint round trips, and resuming after a crash (SIGKILL) or Ctrl-C (SIGINT).

Contracts tested: same config + seed -> the same metrics.csv (minus the wall-clock column charts/SPS), a different seed
-> different metrics; checkpoints do not change a run (the same metrics with or without them); final.pt loaded into a
fresh learner acts exactly as the trained one; a run killed at any point and resumed from its newest periodic
checkpoint (env copies rebuilt mid-episode) ends with exactly the metrics of an uninterrupted run that never
checkpointed; an env that cannot be rebuilt is reset with a warning.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch
from conftest import TINY, TINY_PPO, read_rows, run_cli, run_cli_inprocess, start_cli, wait_for
from omegaconf import OmegaConf

from marl import checkpoint as ckpt
from marl.config import validate
from marl.evaluate import run_episodes, summarize
from marl.train import EVAL_SEED_OFFSET, build, eval_copies, make_learner, run


@pytest.mark.parametrize("setting", [["env=cartpole", "algo=ppo", *TINY_PPO],
                                     ["env=simple_speaker_listener", "algo=mappo", *TINY_PPO]],
                         ids=["ppo-cartpole", "mappo-speaker_listener"])
def test_same_seed_same_metrics_other_seed_differs(setting: list[str], tiny_cfg) -> None:
    dirs = []
    for seed in (0, 0, 1):
        cfg = tiny_cfg(*setting, "total_steps=96", "checkpoint_every=32", f"seed={seed}")
        run(cfg)
        dirs.append(Path(cfg.run_dir))
    a, b, c = (read_rows(d / "metrics.csv") for d in dirs)
    assert len(a) == 3 and a == b
    assert a != c
    assert [r["global_step"] for r in a] == [r["global_step"] for r in c]


@pytest.mark.parametrize("setting", [["env=cartpole", "algo=ppo", *TINY_PPO],
                                     ["env=simple_spread", "algo=mappo", *TINY_PPO]],
                         ids=["ppo-cartpole", "mappo-simple_spread"])
def test_checkpoints_do_not_change_the_run(setting: list[str], tiny_cfg) -> None:
    """Episodes in progress at a checkpoint go on: every checkpoint_every logs the same metrics."""
    runs = []
    for every in (0, 256, 1000):
        cfg = tiny_cfg(*setting, "total_steps=1152", f"checkpoint_every={every}")
        run(cfg)
        runs.append(read_rows(Path(cfg.run_dir) / "metrics.csv"))
        assert (Path(cfg.run_dir) / "checkpoints" / "step_000000001024.pt").exists() == (every > 0)
    assert len(runs[0]) == 36 and runs[0] == runs[1] == runs[2]


def fixed_obs(spec, n: int = 16) -> dict[str, torch.Tensor]:
    """A fixed batch ``[n, N_g, *obs]`` per group, drawn from a seeded generator."""
    g = torch.Generator().manual_seed(123)
    return {grp.name: torch.randn((n, grp.n_agents, *grp.obs_space.shape), generator=g) for grp in spec.groups}


def test_checkpoint_round_trip_same_actions(tiny_cfg, tmp_path: Path) -> None:
    """Train a learner, save it, load it into a fresh learner: identical deterministic actions and state."""
    cfg = validate(tiny_cfg("env=simple_speaker_listener", "algo=happo", *TINY_PPO))
    env, env2 = build(cfg), build(cfg)
    try:
        trained = make_learner(cfg, env, "cpu")
        trained.reset_env(0)
        for _ in range(3):
            trained.iteration()
        path = ckpt.save(tmp_path / "rt.pt", trained.state_dict(), cfg, env.spec)
        fresh = make_learner(cfg, env2, "cpu")
        obs = fixed_obs(env.spec)
        masks = dict.fromkeys(obs)
        before = fresh.act(obs, masks, deterministic=True)
        payload = ckpt.load(path)
        ckpt.check_compatible(payload, cfg.env.name, cfg.algo.name, env2.spec, path)
        fresh.load_state_dict(payload["learner"])
        want, got = trained.act(obs, masks, deterministic=True), fresh.act(obs, masks, deterministic=True)
        for k in want:
            assert torch.equal(torch.as_tensor(want[k]), torch.as_tensor(got[k])), k
        assert any(not torch.equal(torch.as_tensor(before[k]), torch.as_tensor(want[k])) for k in want), \
            "the trained and the untrained policies act alike on every observation: the test proves nothing"
        assert (fresh.env_steps, fresh.iterations) == (trained.env_steps, trained.iterations)
        for name, module in trained.modules().items():
            for key, value in module.state_dict().items():
                if isinstance(value, torch.Tensor):
                    assert torch.equal(value, fresh.modules()[name].state_dict()[key]), (name, key)
    finally:
        env.close()
        env2.close()


def test_final_checkpoint_replays_final_evaluation(base_run: Path) -> None:
    """final.pt of a CLI run, loaded into a fresh learner, scores exactly the eval/return logged at the end."""
    cfg = validate(OmegaConf.load(base_run / "config.yaml"))
    env = build(cfg)
    eval_env = build(cfg, num_envs=eval_copies(cfg), seed=cfg.seed + EVAL_SEED_OFFSET)
    try:
        learner = make_learner(cfg, env, "cpu")
        learner.load_state_dict(ckpt.load(base_run / "checkpoints" / "final.pt")["learner"])
        eps = run_episodes(learner, eval_env, cfg.eval_episodes, seed=cfg.seed + EVAL_SEED_OFFSET)
        logged = read_rows(base_run / "metrics.csv")[-1]
        assert summarize(eps)["eval/return"] == float(logged["eval/return"])
    finally:
        env.close()
        eval_env.close()


def test_resume_continues_from_stored_step(run_copy: Path, tmp_path: Path) -> None:
    """resume=<run> total_steps=<more> picks up at step 128 and ends exactly like a run that never stopped."""
    res = run_cli_inprocess([f"resume={run_copy}", "total_steps=192"], tmp_path)
    assert res.returncode == 0, res
    assert f"run dir: {run_copy}" in res.stdout, res
    assert ckpt.load(run_copy / "checkpoints" / "final.pt")["meta"]["env_steps"] == 192
    resumed = read_rows(run_copy / "metrics.csv")
    steps = [int(r["global_step"]) for r in resumed]
    assert steps == list(range(32, 193, 32))
    # the uninterrupted run goes on from step 128 as the resumed one does (final.pt holds the env copies too)
    straight = tmp_path / "straight"
    res = run_cli_inprocess(["env=cartpole", "algo=ppo", "preset=none", *TINY, *TINY_PPO, "total_steps=192",
                             "checkpoint_every=32", f"run_dir={straight}"], tmp_path)
    assert res.returncode == 0, res
    ref = read_rows(straight / "metrics.csv")
    eval_cols = [k for k in ref[0] if k.startswith("eval/")]
    strip = lambda rows: [{k: v for k, v in r.items() if k not in eval_cols} for r in rows]  # noqa: E731
    assert strip(resumed) == strip(ref)  # row 128 of the resumed run also carries its first run's final evaluation
    assert resumed[-1] == ref[-1]


# TINY: checkpoint_every=0; preset=none: the preset anneals the lr over total_steps, which these runs change
KILL_RUN = ["env=cartpole", "algo=ppo", "preset=none", *TINY, *TINY_PPO]
KILL_FINAL = 1024


def newest_step(run_dir: Path) -> int:
    steps = [int(p.stem.split("_")[1]) for p in run_dir.glob("checkpoints/step_*.pt")]
    return max(steps, default=0)


def last_logged(run_dir: Path) -> int:
    f = run_dir / "metrics.csv"
    if not f.exists():
        return 0
    lines = f.read_text().strip().splitlines()
    return int(lines[-1].split(",")[0]) if len(lines) > 1 and lines[-1][:1].isdigit() else 0


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> list[dict[str, str]]:
    """The uninterrupted run the interrupted ones are compared with (it never checkpoints)."""
    cwd = tmp_path_factory.mktemp("reference")
    res = run_cli([*KILL_RUN, f"total_steps={KILL_FINAL}", f"run_dir={cwd / 'run'}"], cwd)
    assert res.returncode == 0, res
    return read_rows(cwd / "run" / "metrics.csv")


def kill_after_checkpoint(args: list[str], run_dir: Path, cwd: Path, final: int, first: int = 128) -> int:
    """Run ``args`` with checkpoint_every=128 until a periodic checkpoint >= ``first`` exists and a later step is
    logged, SIGKILL it, and return the step of its newest checkpoint."""
    proc = start_cli([*args, "checkpoint_every=128", "total_steps=1000000", f"run_dir={run_dir}"], cwd)
    try:
        wait_for(lambda: first <= newest_step(run_dir) < final and last_logged(run_dir) > newest_step(run_dir),
                 timeout=120, proc=proc, poll=0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    killed_at = newest_step(run_dir)
    assert killed_at < final and not (run_dir / "checkpoints" / "final.pt").exists()
    return killed_at


def test_resume_after_sigkill_matches_uninterrupted_run(reference_run, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    # past a periodic checkpoint (>= 256, so earlier ones were pruned too) but short of the end
    kill_after_checkpoint(KILL_RUN, run_dir, tmp_path, KILL_FINAL, first=256)
    res = run_cli([f"resume={run_dir}", f"total_steps={KILL_FINAL}"], tmp_path)
    assert res.returncode == 0, res
    assert "warning" not in res.stderr, res
    assert read_rows(run_dir / "metrics.csv") == reference_run


KILL_SETTINGS = {  # name: (run, final step, overrides of the resumed run)
    "mappo-simple_spread": (["env=simple_spread", "algo=mappo", *TINY, *TINY_PPO], 768, []),
    # the copies recorded in this process are rebuilt in a worker process (one subprocess run keeps the test short)
    "subprocess-simple_spread": (["env=simple_spread", "algo=mappo", *TINY, *TINY_PPO], 512,
                                 ["env.backend=subprocess", "env.workers=1"]),
    "selfplay-tictactoe": (["env=tictactoe", "algo=ppo", *TINY, *TINY_PPO, "num_envs=4", "selfplay.pool_fraction=0.5",
                            "selfplay.snapshot_every=128"], 1024, []),
    "ddpg-pendulum": (["env=pendulum", "algo=ddpg", "num_envs=2", "eval_episodes=1", "eval_every=0",
                       "checkpoint_every=0", "algo.learning_starts=64", "algo.batch_size=32", "algo.hidden=[32,32]",
                       "algo.noise=ou"], 512, []),
    "sac-pendulum": (["env=pendulum", "algo=sac", "num_envs=2", "eval_episodes=1", "eval_every=0",
                      "checkpoint_every=0", "algo.learning_starts=64", "algo.batch_size=32", "algo.hidden=[32,32]"],
                     512, []),
    "maddpg-simple_spread": (["env=simple_spread", "algo=maddpg", "num_envs=2", "eval_episodes=2", "eval_every=0",
                              "checkpoint_every=0", "algo.learning_starts=64",
                              "algo.batch_size=32", "algo.hidden=[32,32]"], 512, []),
}


@pytest.mark.parametrize("name", list(KILL_SETTINGS))
def test_sigkill_resume_rebuilds_episodes_in_progress(name: str, tmp_path: Path) -> None:
    """Killed after a checkpoint taken mid-episode and resumed: the metrics of a run that never checkpointed, for a
    parallel env, the subprocess backend, a turn-based game with an opponent pool, and off-policy DDPG, SAC and MADDPG
    (their replay buffers are in the checkpoint)."""
    args, final, resume_args = KILL_SETTINGS[name]
    res = run_cli_inprocess([*args, f"total_steps={final}", f"run_dir={tmp_path / 'straight'}"], tmp_path)
    assert res.returncode == 0, res
    reference = read_rows(tmp_path / "straight" / "metrics.csv")
    run_dir = tmp_path / "run"
    kill_after_checkpoint(args, run_dir, tmp_path, final)
    res = run_cli_inprocess([f"resume={run_dir}", f"total_steps={final}", *resume_args], tmp_path)
    assert res.returncode == 0, res
    assert "warning" not in res.stderr, res
    assert read_rows(run_dir / "metrics.csv") == reference


def test_env_that_does_not_replay_is_reset_with_a_warning(tiny_cfg, capsys) -> None:
    """An env whose episodes are not fixed by their seed and actions: the resumed run says so and goes on."""
    cfg = tiny_cfg("env=custom", "env.entry_point=bad_envs:not_replayable", "algo=ppo", *TINY_PPO,
                   "checkpoint_every=64")
    run(cfg)
    capsys.readouterr()
    resumed = OmegaConf.merge(cfg, {"resume": cfg.run_dir, "total_steps": 192})
    run(resumed, explicit_total_steps=True)
    err = capsys.readouterr().err
    assert "could not be restored mid-episode" in err and "not deterministic" in err, err
    assert ckpt.load(Path(cfg.run_dir) / "checkpoints" / "final.pt")["meta"]["env_steps"] == 192


def test_sigint_checkpoints_exits_130_and_resumes(reference_run, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = start_cli([*KILL_RUN, "total_steps=1000000", f"run_dir={run_dir}"], tmp_path)
    try:
        wait_for(lambda: 64 <= last_logged(run_dir) < KILL_FINAL - 128, timeout=120, proc=proc, poll=0.02)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = proc.err_path.read_text()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and f"resume with resume={run_dir}" in err, err
    stopped = last_logged(run_dir)
    assert newest_step(run_dir) == stopped, "Ctrl-C must checkpoint the step it stopped at"
    assert stopped < KILL_FINAL
    res = run_cli_inprocess([f"resume={run_dir}", f"total_steps={KILL_FINAL}"], tmp_path)
    assert res.returncode == 0, res
    assert read_rows(run_dir / "metrics.csv") == reference_run  # the Ctrl-C checkpoint left the episodes going
