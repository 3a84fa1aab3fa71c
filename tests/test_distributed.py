"""``env.backend=ray`` (marl/distributed): one local Ray session (2 CPUs) for the whole module.

Sync mode with one worker is the in-process run bit for bit (same seeds, same sampling, statistics taken over);
with two workers a run is reproducible run to run; async mode trains with a non-zero policy lag; a worker whose
process dies is rebuilt and the run finishes; an env that keeps failing stops the run with a clear error and a
checkpoint. V-trace's numerics are in tests/test_vtrace.py.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import read_rows, train_inprocess

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = ("progress=false", "eval_episodes=2", "eval_every=0", "checkpoint_every=0", "preset=none")
PPO = ("env=cartpole", "algo=ppo", "algo.num_steps=16", "algo.update_epochs=2", "algo.num_minibatches=2")
OFF = ("env=pendulum", "algo.hidden=[32,32]", "algo.batch_size=16")
WALK = ("env=custom", "env.entry_point=bad_envs:walk", "env.check=false", "algo=ppo", "algo.num_steps=8",
        "algo.update_epochs=1", "algo.num_minibatches=1")


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    # log_to_driver=False: the workers' output (e.g. the traceback of a worker a test kills) must not reach the
    # captured stderr of later tests, which assert on it
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=200 * 2**20, configure_logging=False,
             log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def train(tmp: Path, name: str, *args: str) -> tuple[int, str, Path]:
    run = tmp / name
    code, _, err = train_inprocess([*SMALL, *args, f"run_dir={run}", f"hydra.run.dir={tmp / 'hydra' / name}"])
    return code, err, run


def training(rows: list[dict]) -> list[dict]:
    """Rows without the evaluation columns (a partial run also evaluated at its first end)."""
    return [{k: v for k, v in r.items() if not k.startswith("eval/")} for r in rows]


def common(a: list[dict], b: list[dict]) -> tuple[list[dict], list[dict]]:
    keys = set(a[0]) & set(b[0])
    return [{k: r[k] for k in keys} for r in a], [{k: r[k] for k in keys} for r in b]


def test_sync_one_worker_is_the_inprocess_run(tmp_path):
    args = (*PPO, "num_envs=2", "total_steps=96", "algo.normalize_obs=true")
    c1, e1, ip = train(tmp_path, "inprocess", *args)
    c2, e2, rr = train(tmp_path, "ray", *args, "env.backend=ray", "env.workers=1")
    assert c1 == 0 and c2 == 0, e1 + e2
    a, b = read_rows(ip / "metrics.csv"), read_rows(rr / "metrics.csv")
    assert len(a) == len(b) == 3 and all(r["charts/policy_lag"] == "0.0" for r in b)
    assert common(a, b)[0] == common(a, b)[1]


def test_async_trains_with_policy_lag(tmp_path):
    code, err, run = train(tmp_path, "async", *WALK, "num_envs=4", "total_steps=160", "env.backend=ray",
                           "env.workers=2", "ray.mode=async")
    assert code == 0, err
    rows = read_rows(run / "metrics.csv")
    lags = [float(r["charts/policy_lag"]) for r in rows]
    assert int(rows[-1]["global_step"]) >= 160 and int(rows[0]["global_step"]) == 16  # one worker's rollout each
    assert max(lags) > 0 and all(math.isfinite(float(r["losses/policy_loss"])) for r in rows)


@pytest.mark.slow
def test_async_ppo_learns_cartpole(tmp_path):
    """Two workers, V-trace on every lagged rollout (the preset's PPO settings): the recent training return passes
    150 within 40k env steps (a random policy: about 22). Async runs depend on timing, hence a margin."""
    run = tmp_path / "async_learns"
    code, _, err = train_inprocess(["progress=false", "eval_episodes=2", "eval_every=0", "checkpoint_every=0",
                                    "env=cartpole", "algo=ppo", "num_envs=8", "total_steps=40000", "env.backend=ray",
                                    "env.workers=2", "ray.mode=async", f"run_dir={run}",
                                    f"hydra.run.dir={tmp_path / 'hydra'}"])
    assert code == 0, err
    rows = read_rows(run / "metrics.csv")
    assert max(float(r["charts/policy_lag"]) for r in rows) >= 1
    assert max(float(r["charts/recent_return"]) for r in rows if r.get("charts/recent_return")) > 150


def test_killed_worker_is_rebuilt_and_the_run_finishes(tmp_path):
    marker = tmp_path / "died"
    code, err, run = train(tmp_path, "kill", *WALK, "num_envs=4", "total_steps=96", "env.backend=ray",
                           "env.workers=2", "env.entry_point=distributed_envs:dies_once",
                           f"+env.kwargs.marker={marker}", "+env.kwargs.at=12")
    assert code == 0, err
    assert marker.exists() and "warning: Ray rollout worker" in err and "rebuilding it" in err
    assert int(read_rows(run / "metrics.csv")[-1]["global_step"]) == 96


@pytest.mark.slow
def test_hung_worker_is_rebuilt_after_the_timeout(tmp_path):
    marker = tmp_path / "hung"
    code, err, run = train(tmp_path, "hang", *WALK, "num_envs=4", "total_steps=64", "env.backend=ray",
                           "env.workers=2", "env.entry_point=distributed_envs:hangs_once", "ray.timeout_s=4",
                           f"+env.kwargs.marker={marker}", "+env.kwargs.at=12")
    assert code == 0, err
    assert marker.exists() and "no rollout within ray.timeout_s=4 s" in err
    assert int(read_rows(run / "metrics.csv")[-1]["global_step"]) == 64


def test_failing_env_stops_with_a_clear_error_and_a_checkpoint(tmp_path):
    code, err, run = train(tmp_path, "fail", *WALK, "num_envs=4", "total_steps=96", "env.backend=ray",
                           "env.workers=2", "env.entry_point=bad_envs:raises_mid_episode", "ray.max_failures=2",
                           "+env.kwargs.fail_at=3")
    assert code == 2, err
    assert "failed 2 times in a row" in err and "ZeroDivisionError: the physics engine divided by zero" in err
    assert "Traceback" not in err and list((run / "checkpoints").glob("step_*.pt"))


def test_sync_two_workers_reproducible_and_resume_continues_exactly(tmp_path):
    args = (*WALK, "num_envs=4", "env.backend=ray", "env.workers=2", "algo.normalize_obs=true",
            "algo.normalize_reward=true", "+env.kwargs.max_cycles=13")
    c1, e1, straight = train(tmp_path, "straight", *args, "total_steps=96")
    c0, e0, again = train(tmp_path, "again", *args, "total_steps=96")
    c2, e2, part = train(tmp_path, "part", *args, "total_steps=64")
    assert c0 == 0 and c1 == 0 and c2 == 0, e0 + e1 + e2
    assert read_rows(again / "metrics.csv") == read_rows(straight / "metrics.csv")
    assert [int(r["global_step"]) for r in read_rows(straight / "metrics.csv")] == [32, 64, 96]
    code, _, err = train_inprocess(["progress=false", f"resume={part}", "total_steps=96",
                                    f"hydra.run.dir={tmp_path / 'hydra' / 'resume'}"])
    assert code == 0 and "could not be restored" not in err, err
    assert training(read_rows(part / "metrics.csv")) == training(read_rows(straight / "metrics.csv"))
    assert read_rows(part / "metrics.csv")[-1] == read_rows(straight / "metrics.csv")[-1]


def replay(run: Path) -> tuple[torch.Tensor, int]:
    """The final checkpoint's replay table ``[rows, F]`` of the (single) group and its update counter."""
    extra = torch.load(run / "checkpoints" / "final.pt", weights_only=True)["learner"]["extra"]
    (group,) = extra["groups"].values()
    return group["buffers"][0]["table"], int(extra["updates"])


def test_offpolicy_one_worker_fills_the_replay_as_one_process(tmp_path):
    """Warm-up only (random actions from the worker's generator, seeded as the learner's): the replay holds the
    in-process run's transitions bit for bit, in the same order."""
    args = (*OFF, "algo=ddpg", "num_envs=2", "total_steps=64", "algo.learning_starts=1000")
    c1, e1, ip = train(tmp_path, "inprocess", *args)
    c2, e2, rr = train(tmp_path, "ray", *args, "env.backend=ray", "env.workers=1")
    assert c1 == 0 and c2 == 0, e1 + e2
    (a, _), (b, _) = replay(ip), replay(rr)
    assert a.shape[0] == 64 and torch.equal(a, b)


def test_offpolicy_two_workers_feed_the_replay_reproducibly_and_resume_exactly(tmp_path):
    """TD3 with Ornstein-Uhlenbeck noise, 2 workers x 2 copies: the replay holds every step of all 4 copies in the
    run's copy order (each copy's transitions chain: next_obs of one step is the obs of its next), the update count
    is one process's (gradient_steps=num_envs per round once past learning_starts), a rerun gives the same metrics,
    and a resume from a partial run (replay, noise state and the copies mid-episode in the checkpoint) continues bit
    for bit."""
    args = (*OFF, "algo=td3", "algo.noise=ou", "num_envs=4", "algo.learning_starts=64", "env.backend=ray",
            "env.workers=2", "algo.normalize_obs=true")
    c1, e1, straight = train(tmp_path, "straight", *args, "total_steps=128")
    c2, e2, part = train(tmp_path, "part", *args, "total_steps=96")
    assert c1 == 0 and c2 == 0, e1 + e2
    rows = read_rows(straight / "metrics.csv")
    assert float(rows[-1]["losses/qf_loss"]) > 0
    assert training(read_rows(part / "metrics.csv")) == training(rows)[:24]  # a second run: the same metrics
    table, updates = replay(straight)
    assert updates == 4 * (128 // 4 - 64 // 4 + 1)  # rounds with env_steps >= learning_starts, 4 updates each
    steps = table.reshape(32, 4, -1)  # [step, copy, F]: obs (3), action (1), reward, next_obs (3), terminated, agent
    assert torch.equal(steps[1:, :, :3], steps[:-1, :, 5:8])  # no episode ends within 32 steps of pendulum
    assert not torch.equal(steps[:, 0], steps[:, 2])  # the workers' copies are different episodes
    code, _, err = train_inprocess(["progress=false", f"resume={part}", "total_steps=128",
                                    f"hydra.run.dir={tmp_path / 'hydra' / 'resume'}"])
    assert code == 0 and "could not be restored" not in err, err
    resumed = read_rows(part / "metrics.csv")
    assert training(resumed) == training(rows) and resumed[-1] == rows[-1]
    assert torch.equal(replay(part)[0], table)


def test_offpolicy_async_trains_with_the_updates_per_env_step_of_one_process(tmp_path):
    """ray.mode=async with SAC: each round stores one worker's step and runs gradient_steps / workers updates."""
    code, err, run = train(tmp_path, "async", *OFF, "algo=sac", "num_envs=4", "total_steps=96",
                           "algo.learning_starts=32", "env.backend=ray", "env.workers=2", "ray.mode=async")
    assert code == 0, err
    rows = read_rows(run / "metrics.csv")
    table, updates = replay(run)
    assert table.shape[0] == 96 and int(rows[-1]["global_step"]) == 96
    assert updates == 2 * (96 // 2 - 32 // 2 + 1)
    assert all(math.isfinite(float(r["losses/qf_loss"])) for r in rows if r.get("losses/qf_loss"))


SELFPLAY = ("env=tictactoe", "algo=ppo", "algo.num_steps=16", "algo.update_epochs=1", "algo.num_minibatches=2",
            "num_envs=4", "selfplay.pool_fraction=0.5", "selfplay.snapshot_every=64", "selfplay.baseline_prob=0",
            "selfplay.eval_opponents=[random]")


def worker_pools(run: Path) -> list[dict]:
    """Each Ray worker's opponent pool state in the final checkpoint (its copies' record)."""
    state = torch.load(run / "checkpoints" / "final.pt", weights_only=True)["learner"]
    return [w["pool"] for w in state["env"]["history"]["workers"]], state["opponents"]


def test_selfplay_pool_one_worker_is_the_inprocess_run(tmp_path):
    """Tic-tac-toe self-play with half the copies against pool snapshots only (taken at 0, 64, 128): one worker
    plays the learner's snapshots (put in the object store by the driver) exactly as one process does."""
    args = (*SELFPLAY, "total_steps=192")
    c1, e1, ip = train(tmp_path, "inprocess", *args)
    c2, e2, rr = train(tmp_path, "ray", *args, "env.backend=ray", "env.workers=1")
    assert c1 == 0 and c2 == 0, e1 + e2
    a, b = read_rows(ip / "metrics.csv"), read_rows(rr / "metrics.csv")
    assert common(a, b)[0] == common(a, b)[1]
    (pool,), learner_pool = worker_pools(rr)
    assert pool["snapshot_steps"] == learner_pool["snapshot_steps"] == [0, 64, 128]
    assert all(torch.equal(pool["snapshots"][2][k], v) for k, v in learner_pool["snapshots"][2].items())


def test_selfplay_pool_two_workers_reproducible_and_resume_continues_exactly(tmp_path):
    """Two workers, each drawing opponents and seats for its own copies from its own seed (so scheduling does not
    matter): a rerun gives the same metrics, and a resume (each worker's pool assignment in the checkpoint)
    continues bit for bit."""
    args = (*SELFPLAY, "env.backend=ray", "env.workers=2")
    c1, e1, straight = train(tmp_path, "straight", *args, "total_steps=192")
    c2, e2, part = train(tmp_path, "part", *args, "total_steps=128")
    assert c1 == 0 and c2 == 0, e1 + e2
    rows = read_rows(straight / "metrics.csv")
    assert training(read_rows(part / "metrics.csv")) == training(rows)[:2]  # a second run: the same metrics
    pools, learner_pool = worker_pools(straight)
    assert [p["snapshot_steps"] for p in pools] == [learner_pool["snapshot_steps"]] * 2
    assert not torch.equal(pools[0]["gen"], pools[1]["gen"])  # per-worker draws
    code, _, err = train_inprocess(["progress=false", f"resume={part}", "total_steps=192",
                                    f"hydra.run.dir={tmp_path / 'hydra' / 'resume'}"])
    assert code == 0 and "could not be restored" not in err, err
    assert read_rows(part / "metrics.csv")[-1] == rows[-1]


GRPO = ("env=cartpole", "algo=grpo", "algo.group_size=2", "algo.num_steps=16", "algo.update_epochs=1",
        "algo.num_minibatches=2", "num_envs=4")


def test_grpo_worker_holds_whole_groups_of_the_run():
    """A worker of copies 2..3 (the run's group 1, no Ray needed) starts its rounds from the states the run's group 1
    starts from in one process, and returns its rows with its groups' advantages as GRPO computes them."""
    from omegaconf import OmegaConf

    from marl.algos import make_learner
    from marl.config import compose
    from marl.distributed.driver import weights_payload
    from marl.distributed.worker import RolloutWorker
    from marl.train import build

    cfg = compose(overrides=[*GRPO, "env.backend=ray", "env.workers=2"])
    worker = RolloutWorker(OmegaConf.to_container(cfg, resolve=True), 1, 2, 2, 5)
    worker.reset(int(cfg.seed) + 2)
    res = worker.collect(weights_payload(worker.learner, 0))
    cfg.env.backend = "inprocess"
    learner = make_learner(cfg, build(cfg), "cpu")
    learner.reset_env(int(cfg.seed))
    learner.collect()
    obs = res["arrays"]["agent/obs"]  # [R_w, 2, 1, 4]
    assert torch.equal(torch.from_numpy(obs[0]), learner.buf.groups["agent"].obs[0, 2:4])
    assert torch.equal(torch.from_numpy(obs[0, 0]), torch.from_numpy(obs[0, 1]))  # one group: the same start
    assert res["rows"] == obs.shape[0] >= 16 and res["adv"].shape == (res["rows"], 2, 1)
    assert torch.allclose(torch.from_numpy(res["adv"]), worker.learner.group_advantages(worker.learner.buf))


def test_grpo_one_worker_is_the_inprocess_run_two_workers_reproducible_and_resumable(tmp_path):
    args = (*GRPO, "total_steps=128")
    c1, e1, ip = train(tmp_path, "inprocess", *args)
    c2, e2, one = train(tmp_path, "one", *args, "env.backend=ray", "env.workers=1")
    c3, e3, two = train(tmp_path, "two", *args, "env.backend=ray", "env.workers=2")
    c4, e4, part = train(tmp_path, "part", *GRPO, "total_steps=64", "env.backend=ray", "env.workers=2")
    assert c1 == c2 == c3 == c4 == 0, e1 + e2 + e3 + e4
    a, b = read_rows(ip / "metrics.csv"), read_rows(one / "metrics.csv")
    assert common(a, b)[0] == common(a, b)[1]
    rows = read_rows(two / "metrics.csv")
    n = len(read_rows(part / "metrics.csv"))
    assert training(read_rows(part / "metrics.csv")) == training(rows)[:n]  # a second run: the same metrics
    assert int(rows[-1]["global_step"]) >= 128
    assert all(0 < float(r["losses/grpo_live_frac"]) <= 1 for r in rows)
    code, _, err = train_inprocess(["progress=false", f"resume={part}", "total_steps=128",
                                    f"hydra.run.dir={tmp_path / 'hydra' / 'resume'}"])
    assert code == 0, err
    assert training(read_rows(part / "metrics.csv")) == training(rows)  # each worker's round counter is checkpointed
    assert read_rows(part / "metrics.csv")[-1] == rows[-1]


def test_hydra_ray_launcher_runs_a_tiny_sweep_on_the_cluster(tmp_path):
    """``-m ... hydra/launcher=ray`` joins this module's Ray (``address=auto``) and runs each job as a Ray task; the
    sweep summary is written as with the basic launcher. Needs the ``[ray-sweep]`` extra."""
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    from conftest import run_cli

    res = run_cli(["-m", "hydra/launcher=ray", "hydra.launcher.ray.init.address=auto",
                   "+hydra.launcher.ray.init.object_store_memory=null", *SMALL, *PPO, "num_envs=2",
                   "total_steps=32", "seed=0,1"], tmp_path, timeout=300)
    assert res.returncode == 0, res
    assert "Ray Launcher is launching 2 jobs" in res.stdout + res.stderr
    (summary,) = tmp_path.glob("hydra/*/summary.md")
    assert all((summary.parent / str(j) / "metrics.csv").exists() for j in (0, 1))
