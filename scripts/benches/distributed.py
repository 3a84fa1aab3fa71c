"""Distributed benchmark: training throughput (env steps/s) of MAPPO on simple_spread and IPPO on multiwalker with
the env copies in-process, in a subprocess worker, and in Ray rollout workers (1 and 2 workers, sync and async), all
in one run, with the ratio to in-process; plus Ray's start-up time and per-iteration overhead, measured apart.

`python scripts/bench.py distributed [--quick]` -> benchmarks/distributed.{json,md}.

Throughput is the run's own ``charts/SPS`` at its end: env steps over the training loop's wall time (collection,
transfer and updates; Ray's and the workers' start-up are before the loop and not in it). Overheads: one sync
gather of a 1-step rollout of 2 copies (weights put, call, rollout arrays back, joined) against the same
``collect()`` in-process; ``ray.init`` and the workers' start-up timed on their own.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from benches.common import BENCH_DIR, last, machine, train_job, write
from marl.config import compose, cpu_count

# (env, algo, total_steps, quick steps, preset): a few whole rollouts each (num_steps x num_envs = 800 / 2000 env
# steps; simple_spread without its preset's 25-step rollouts, the layout these figures were first measured with)
CASES = [("simple_spread", "mappo", 16_000, 1_600, "none"), ("multiwalker", "ippo", 12_000, 2_000, None)]
BACKENDS = [
    ("in-process", ["env.backend=inprocess"]),
    ("subprocess", ["env.backend=subprocess", "env.workers=1"]),
    ("ray sync, 1 worker", ["env.backend=ray", "env.workers=1", "ray.mode=sync"]),
    ("ray sync, 2 workers", ["env.backend=ray", "env.workers=2", "ray.mode=sync"]),
    ("ray async, 1 worker", ["env.backend=ray", "env.workers=1", "ray.mode=async"]),
    ("ray async, 2 workers", ["env.backend=ray", "env.workers=2", "ray.mode=async"]),
]
COMMON = ["num_envs=8", "eval_every=0", "eval_episodes=2", "checkpoint_every=0", "threads=1"]


def throughput(root: Path, quick: bool) -> list[dict]:
    rows = []
    for env, algo, steps, quick_steps, preset in CASES:
        n = quick_steps if quick else steps
        base = None
        for label, over in BACKENDS:
            slug = "".join(c if c.isalnum() else "_" for c in label)
            pin = [f"preset={preset}"] if preset else []
            job = train_job(env, algo, 0, n, [*COMMON, *pin, *over], root / f"{env}_{algo}_{slug}")
            sps = last(job["rows"], "charts/SPS")
            lag = [r["charts/policy_lag"] for r in job["rows"] if "charts/policy_lag" in r]
            base = sps if base is None else base
            rows.append({"env": env, "algo": algo, "backend": label, "steps": n, "sps": sps, "ratio": sps / base,
                         "wall_s": job["wall_s"], "mean_policy_lag": statistics.mean(lag) if lag else None})
            print(f"{env} {algo} {label}: {sps:.0f} env steps/s ({sps / base:.2f}x in-process)", flush=True)
    return rows


def timed(fn, learner, n: int) -> float:
    """Mean ms of ``fn()`` over ``n`` calls after a warm-up, a new weights version every call (as in training)."""
    fn()
    t = time.perf_counter()
    for i in range(n):
        learner.iterations = i + 1
        fn()
    return (time.perf_counter() - t) / n * 1e3


def iteration_costs(repeats: int) -> dict:
    """In-process, at the benchmark's size (``num_envs=8``, default ``num_steps``): CPU seconds of one rollout's
    collection and of one update (advantages + epochs), per iteration; CPU time of this one-threaded process, so the
    figures hold on an idle machine too (wall time on a loaded one does not)."""
    from marl.algos import make_learner
    from marl.algos.base import seed_everything
    from marl.rollout import carry_over
    from marl.train import build

    out = {}
    for env, algo, *_, preset in CASES:
        cfg = compose({"env": {"name": env}, "algo": {"name": algo}, "num_envs": 8,
                       **({"preset": preset} if preset else {})})
        seed_everything(0)
        venv = build(cfg)
        lr = make_learner(cfg, venv, "cpu")
        lr.reset_env(0)
        col, upd = [], []
        for _ in range(repeats):
            t = time.process_time()
            buf = lr.collect()
            col.append(time.process_time() - t)
            t = time.process_time()
            lr.update(lr.make_batch(buf))
            carry_over(buf, lr.units.unit_of, *lr._pending)
            upd.append(time.process_time() - t)
        venv.close()
        steps = int(cfg.algo.num_steps) * 8
        out[f"{env}_{algo}"] = {"steps_per_iteration": steps, "collect_cpu_s": statistics.median(col),
                                "update_cpu_s": statistics.median(upd)}
        print(f"{env} {algo}: {steps} env steps per iteration; collect {statistics.median(col):.2f} CPU s, update "
              f"{statistics.median(upd):.2f} CPU s", flush=True)
    return out


def overheads(repeats: int) -> dict:
    """Ray start-up and the per-iteration cost of a sync gather, against the in-process collect of the same."""
    import ray

    from marl.algos import make_learner
    from marl.algos.base import seed_everything
    from marl.distributed.driver import RayVecEnv, weights_payload
    from marl.train import build, build_learner_env

    out: dict = {}
    t0 = time.perf_counter()
    ray.init(num_cpus=cpu_count(), include_dashboard=False, object_store_memory=256 * 2**20, configure_logging=False)
    out["ray_init_s"] = time.perf_counter() - t0
    try:
        for env, algo, *_ in CASES:
            cfg = compose({"env": {"name": env, "backend": "ray", "workers": 2},
                           "algo": {"name": algo, "num_steps": 1, "num_minibatches": 1}, "num_envs": 2})
            seed_everything(0)
            t0 = time.perf_counter()
            renv = build_learner_env(cfg)
            assert isinstance(renv, RayVecEnv)
            start = time.perf_counter() - t0
            learner = make_learner(cfg, renv, "cpu")
            renv.attach(learner)
            learner.reset_env(0)
            local = build(cfg)
            ref = make_learner(cfg, local, "cpu")
            ref.reset_env(0)
            payload = weights_payload(learner, 0)
            size = sum(t.numel() * t.element_size() for m in payload["modules"].values() for t in m.values())

            ray_ms, local_ms = timed(renv.gather, learner, repeats), timed(ref.collect, learner, repeats)
            put_ms = timed(lambda lr=learner: ray.put(weights_payload(lr, 0)), learner, repeats)
            renv.close()
            local.close()
            out[f"{env}_{algo}"] = {"workers_start_s": start, "gather_ms": ray_ms, "collect_inprocess_ms": local_ms,
                                    "overhead_ms": ray_ms - local_ms, "weights_put_ms": put_ms,
                                    "weights_kb": size / 1024}
            print(f"{env} {algo}: 2 workers start {start:.1f} s; 1-step gather {ray_ms:.1f} ms vs in-process "
                  f"{local_ms:.1f} ms; weights {size / 1024:.0f} KiB put in {put_ms:.2f} ms", flush=True)
    finally:
        ray.shutdown()
    return out


def markdown(data: dict) -> str:
    lines = ["# Distributed: in-process vs subprocess vs Ray", "",
             f"Machine: {data['machine']['cpus']} CPUs, load average at the end {data['machine']['loadavg_at_end']} "
             + ("(otherwise idle while this ran; the ratios were measured side by side in one run). "
                if data["machine"]["loadavg_at_end"][0] < 2.0 else
                "(shared with other jobs while this ran: absolute rates are low and noisy; the ratios were measured "
                "side by side in one run). ")
             + "Command: `python scripts/bench.py distributed` (`--part costs` re-measures the two tables below the "
             "first one alone).", "",
             "Training throughput: env steps/s over the training loop (`charts/SPS` at the end; start-up excluded), "
             "`num_envs=8`, `threads=1`, each env's default algo settings (multiwalker: the ippo preset).", "",
             "| env | algo | backend | env steps | env steps/s | vs in-process | mean policy lag |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for r in data["throughput"]:
        lag = "" if r["mean_policy_lag"] is None else f"{r['mean_policy_lag']:.2f}"
        lines.append(f"| {r['env']} | {r['algo']} | {r['backend']} | {r['steps']} | {r['sps']:.0f} | "
                     f"{r['ratio']:.2f}x | {lag} |")
    o = data["overheads"]
    lines += ["", f"Ray start-up: `ray.init` (local, 2 CPUs) {o['ray_init_s']:.1f} s.", "",
              "Per-iteration overhead of a sync gather (2 workers x 1 copy, a 1-step rollout): weights put once, "
              "both workers called, rollout arrays back and joined; against the same `collect()` in-process.", "",
              "| env | algo | workers start (s) | gather (ms) | in-process collect (ms) | overhead (ms) | "
              "weights (KiB) | `ray.put` (ms) |", "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for env, algo, *_ in CASES:
        x = o[f"{env}_{algo}"]
        lines.append(f"| {env} | {algo} | {x['workers_start_s']:.1f} | {x['gather_ms']:.1f} | "
                     f"{x['collect_inprocess_ms']:.1f} | {x['overhead_ms']:.1f} | {x['weights_kb']:.0f} | "
                     f"{x['weights_put_ms']:.2f} |")
    lines += ["", "Per-iteration costs in-process at the benchmark's size (CPU seconds of the one-threaded learner "
              "process, medians; they do not depend on the load the way wall time does):", "",
              "| env | algo | env steps per iteration | collect (CPU s) | update (CPU s) |",
              "| --- | --- | ---: | ---: | ---: |"]
    for env, algo, *_ in CASES:
        c = data["costs"][f"{env}_{algo}"]
        lines.append(f"| {env} | {algo} | {c['steps_per_iteration']} | {c['collect_cpu_s']:.2f} | "
                     f"{c['update_cpu_s']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.py distributed", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="one or two rollouts per case (checks that it works)")
    p.add_argument("--part", choices=["all", "costs"], default="all",
                   help="costs: only the overheads and per-iteration costs (the throughput rows already in "
                        "benchmarks/distributed.json are kept)")
    args = p.parse_args(argv)
    name = "distributed" if not args.quick else "distributed_quick"
    path = BENCH_DIR / f"{name}.json"
    data = json.loads(path.read_text()) if args.part == "costs" and path.exists() else {}
    if args.part == "all":
        with tempfile.TemporaryDirectory(prefix="marl_bench_dist_") as tmp:
            data["throughput"] = throughput(Path(tmp), args.quick)
    data["overheads"] = overheads(3 if args.quick else 20)
    data["costs"] = iteration_costs(2 if args.quick else 3)
    data["machine"] = machine()
    write(name, data, markdown(data))
    return 0
