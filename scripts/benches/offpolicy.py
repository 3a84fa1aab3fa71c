"""Off-policy benchmark: TD3 / SAC / DDPG learning, MADDPG / MATD3 vs MAPPO, and speed against Stable-Baselines3.

`python scripts/bench.py offpolicy [--cases td3_pendulum,...] [--seeds 0 1 2] [--speed] [--sb3-python PY]`
-> benchmarks/offpolicy.{json,md}. Cases already in offpolicy.json and not run again are kept, and so are a case's
seeds not run again (`--seeds 1 2` adds seeds 1 and 2 beside an earlier seed 0).

* learning cases: `scripts/train.py` jobs (subprocesses), the final deterministic `eval/return`, SPS, wall time,
  peak RSS and the replay memory (filled / capacity) the run logged; competitive cases also evaluate each team's
  greedy policy against a uniformly random opponent team (`benches.multiagent.team_returns`).
* `--speed`: env steps per second of marl's DDPG / TD3 / SAC and SB3's same algorithm on Pendulum-v1, same network
  sizes, batch, replay ratio (one update per env step) and one torch thread, measured side by side (alternating, each
  in a fresh subprocess, after `learning_starts`); SB3 runs in `--sb3-python` (default: this python with
  `--sb3-pythonpath` on PYTHONPATH) and is skipped when it cannot import stable_baselines3.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benches.common import BENCH_DIR, ROOT, finished_job, fmt, last, machine, train_job, write

# name: (env, algo, steps, target on eval/return (None: none), overrides, competitive)
CASES: dict[str, tuple[str, str, int, float | None, list[str], bool]] = {
    # the tuned settings of these cases are their presets (configs/preset/<env>_<algo>.yaml)
    "td3_pendulum": ("pendulum", "td3", 20_000, -200.0, ["eval_episodes=10"], False),
    "sac_pendulum": ("pendulum", "sac", 20_000, -200.0, ["eval_episodes=10"], False),
    "ddpg_pendulum": ("pendulum", "ddpg", 20_000, -200.0, ["eval_episodes=10"], False),
    "sac_lunarlander_continuous": ("lunarlander_continuous", "sac", 300_000, 200.0, ["eval_episodes=10"], False),
}
# MPE: 300k by default; the 1M budget is `--steps 1000000` (case name suffixed @1000k)
for _algo in ("maddpg", "matd3", "mappo"):
    for _kind, _over in (("discrete", []), ("continuous", ["env.kwargs.continuous_actions=true"])):
        CASES[f"{_algo}_spread_{_kind}"] = ("simple_spread", _algo, 300_000, None,
                                            ["num_envs=8", "eval_episodes=20", *_over], False)
for _env in ("simple_tag", "simple_adversary"):
    CASES[f"maddpg_{_env}"] = (_env, "maddpg", 300_000, None, ["num_envs=8", "eval_episodes=20"], True)

# SB3 hyperparameters matching configs/algo/{ddpg,td3,sac}.yaml (nets [256, 256], batch 256, one update per step)
SPEED_ALGOS = ("ddpg", "td3", "sac")

MARL_SPEED = """
import sys, time, torch
torch.set_num_threads(1)
from marl.config import compose
from marl.algos import learner_class
from marl.algos.base import seed_everything
from marl.train import build
algo, steps, starts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
seed_everything(0)
cfg = compose({"env": {"name": "pendulum"}, "algo": {"name": algo, "learning_starts": starts}, "seed": 0,
               "num_envs": 1, "total_steps": steps})
env = build(cfg)
ln = learner_class(algo)(cfg, env, "cpu")
while ln.env_steps < starts + 200:
    ln.iteration()
n0, t0, c0 = ln.env_steps, time.perf_counter(), time.process_time()
while ln.env_steps < steps:
    ln.iteration()
print(ln.env_steps - n0, time.perf_counter() - t0, time.process_time() - c0)
"""

SB3_SPEED = """
import sys, time, numpy as np, torch
torch.set_num_threads(1)
import gymnasium as gym
from stable_baselines3 import DDPG, SAC, TD3
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.noise import NormalActionNoise
algo, steps, starts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
env = gym.make("Pendulum-v1")
kw = dict(learning_rate=1e-3, buffer_size=200_000, learning_starts=starts, batch_size=256, tau=0.005, train_freq=1,
          gradient_steps=1, policy_kwargs=dict(net_arch=[256, 256]), seed=0, device="cpu", verbose=0)
if algo == "sac":
    model = SAC("MlpPolicy", env, gamma=0.99, **kw)
else:
    noise = NormalActionNoise(np.zeros(1), 0.1 * 2.0 * np.ones(1))  # noise_std 0.1 x the half-range 2
    model = (DDPG if algo == "ddpg" else TD3)("MlpPolicy", env, gamma=0.98, action_noise=noise, **kw)

class Clock(BaseCallback):
    def _on_step(self):
        if self.num_timesteps == starts + 200:
            self.t0, self.c0 = time.perf_counter(), time.process_time()
        return True

clock = Clock()
model.learn(steps, callback=clock)
print(steps - starts - 200, time.perf_counter() - clock.t0, time.process_time() - clock.c0)
"""


def _timed(python: str, code: str, algo: str, steps: int, starts: int, env: dict) -> dict | None:
    proc = subprocess.run([python, "-c", code, algo, str(steps), str(starts)], capture_output=True, text=True,
                          cwd=ROOT, env=env)
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
        return None
    n, wall, cpu = proc.stdout.split()[-3:]
    return {"steps": int(n), "wall_s": float(wall), "cpu_s": float(cpu), "sps": int(n) / float(wall),
            "ms_per_step_cpu": 1000 * float(cpu) / int(n)}


def speed_part(steps: int, starts: int, rounds: int, sb3_python: str, sb3_path: str | None) -> dict:
    """marl vs SB3, alternating ``rounds`` times per algorithm; the medians."""
    base = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    sb3_env = {**base, **({"PYTHONPATH": sb3_path} if sb3_path else {})}
    probe = subprocess.run([sb3_python, "-c", "import stable_baselines3; print(stable_baselines3.__version__)"],
                           capture_output=True, text=True, env=sb3_env)
    sb3_version = probe.stdout.strip() if probe.returncode == 0 else None
    if sb3_version is None:
        print(f"stable_baselines3 not importable from {sb3_python}: SB3 skipped", file=sys.stderr)
    out = {"steps": steps, "learning_starts": starts, "rounds": rounds, "sb3_version": sb3_version, "algos": {}}
    for algo in SPEED_ALGOS:
        runs: dict[str, list[dict]] = {"marl": [], "sb3": []}
        for _ in range(rounds):
            r = _timed(sys.executable, MARL_SPEED, algo, steps, starts, base)
            if r:
                runs["marl"].append(r)
            if sb3_version:
                r = _timed(sb3_python, SB3_SPEED, algo, steps, starts, sb3_env)
                if r:
                    runs["sb3"].append(r)
        res = {k: {"sps": statistics.median(r["sps"] for r in v),
                   "ms_per_step_cpu": statistics.median(r["ms_per_step_cpu"] for r in v), "runs": v}
               for k, v in runs.items() if v}
        if "sb3" in res and "marl" in res:
            res["speedup_wall"] = res["marl"]["sps"] / res["sb3"]["sps"]
            res["speedup_cpu"] = res["sb3"]["ms_per_step_cpu"] / res["marl"]["ms_per_step_cpu"]
        out["algos"][algo] = res
        print(algo, {k: v for k, v in res.items() if k in ("speedup_wall", "speedup_cpu")}, flush=True)
    return out


def run_case(name: str, seeds: list[int], root: Path, report: bool) -> dict | None:
    env, algo, steps, target, over, competitive = CASES[name]
    per_seed = []
    for seed in seeds:
        run_dir = root / f"{name}_s{seed}"
        if report and not (run_dir / "checkpoints" / "final.pt").exists():  # not run, or not finished
            continue
        job = finished_job(run_dir) if report else train_job(env, algo, seed, steps, [*over, "eval_every=0"], run_dir)
        rows = job["rows"]
        res = {"seed": seed, "eval_return": last(rows, "eval/return"), "recent_return": last(rows,
               "charts/recent_return"), "sps": last(rows, "charts/SPS"), "wall_s": round(job["wall_s"], 1),
               "peak_rss_mb": round(job["peak_rss_mb"], 1), "replay_mb": last(rows, "charts/replay_mb"),
               "replay_capacity_mb": last(rows, "charts/replay_capacity_mb")}
        if "wall_from_step" in job:  # resumed after an untimed (killed) segment: wall_s times only the rest
            res["wall_from_step"] = job["wall_from_step"]
        if competitive:
            from benches.multiagent import team_returns
            from marl.adapters.registry import make_vec_env, resolve_env_config

            teams = [t for t, _ in make_vec_env(resolve_env_config(env), 1).spec.teams]
            res["vs_random"] = {t: team_returns(run_dir, env, {t})[t] for t in teams}
            res["random_vs_random"] = team_returns(None, env, set())
        per_seed.append(res)
        print(name, res, flush=True)
    if not per_seed:
        return None
    return {"env": env, "algo": algo, "steps": steps, "target": target, "overrides": over,
            **_summary(per_seed, target)}


def _summary(seeds: list[dict], target: float | None) -> dict:
    """A case's seeds with the mean and min of their evaluation returns and whether every one met ``target``."""
    evals = [s["eval_return"] for s in seeds]
    return {"seeds": seeds, "mean": statistics.fmean(evals), "min": min(evals),
            "met": None if target is None else all(v >= target for v in evals)}


def merge_seeds(old: dict | None, new: dict) -> dict:
    """``new``'s seeds beside ``old``'s other seeds (same case and budget), mean / min / met recomputed."""
    if old is None or old.get("steps") != new["steps"]:
        return new
    runs = {s["seed"]: s for s in old["seeds"]} | {s["seed"]: s for s in new["seeds"]}
    return {**new, **_summary([runs[k] for k in sorted(runs)], new["target"])}


def _wall(seeds: list[dict]) -> str:
    """The mean wall time of a case's seeds, and from which step it counts where a run was resumed after a killed,
    untimed segment."""
    cell = f"{statistics.fmean(x['wall_s'] for x in seeds):.0f}"
    starts = {x["wall_from_step"] for x in seeds if x.get("wall_from_step")}
    return cell + (f" (timed from step {', '.join(f'{k:,}' for k in sorted(starts))})" if starts else "")


def markdown(data: dict) -> str:
    lines = ["# Off-policy benchmark", "",
             "`python scripts/bench.py offpolicy` — `eval/return`: mean return of deterministic evaluation episodes "
             "at the end of the budget (team return summed over agents in MPE); replay MB: filled / capacity.", "",
             "| case | env steps | seeds | eval/return per seed | mean | target | met | SPS (mean) | wall s (mean) "
             "| peak RSS MB | replay MB |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in data["results"].items():
        s = r["seeds"]
        rep = max(s, key=lambda x: x["replay_capacity_mb"] or 0)
        lines.append(
            f"| {name} | {r['steps']:,} | {len(s)} | {', '.join(fmt(x['eval_return']) for x in s)} | "
            f"{r['mean']:.1f} | {fmt(r['target'], 'g')} | {'—' if r['met'] is None else 'yes' if r['met'] else 'no'}"
            f" | {statistics.fmean(x['sps'] for x in s):.0f} | {_wall(s)} | "
            f"{max(x['peak_rss_mb'] for x in s):.0f} | {fmt(rep['replay_mb'], '.0f')} / "
            f"{fmt(rep['replay_capacity_mb'], '.0f')} |")
    comp = {n: r for n, r in data["results"].items() if "vs_random" in r["seeds"][0]}
    if comp:
        lines += ["", "## Competitive: each trained team (greedy) against a uniformly random opponent team", "",
                  "| case | seed | team return vs random (trained team) | random vs random |", "|---|---|---|---|"]
        for name, r in comp.items():
            for x in r["seeds"]:
                mine = ", ".join(f"{t}: {v:.1f}" for t, v in x["vs_random"].items())
                rnd = ", ".join(f"{t}: {v:.1f}" for t, v in x["random_vs_random"].items())
                lines.append(f"| {name} | {x['seed']} | {mine} | {rnd} |")
    sp = data.get("speed")
    if sp:
        lines += ["", f"## Speed vs Stable-Baselines3 {sp['sb3_version'] or '(not installed: skipped)'}", "",
                  f"Pendulum-v1, {sp['steps']:,} env steps, timed after learning_starts={sp['learning_starts']} + 200, "
                  f"nets [256, 256], batch 256, one update per env step, 1 torch thread; medians of {sp['rounds']} "
                  "alternating runs (marl, SB3, marl, SB3, ...) on a shared machine. CPU ms/step is less sensitive "
                  "to the other load than wall time.", "",
                  "| algo | marl SPS | SB3 SPS | marl / SB3 (wall) | marl CPU ms/step | SB3 CPU ms/step | "
                  "SB3 / marl (CPU) |", "|---|---|---|---|---|---|---|"]
        for algo, r in sp["algos"].items():
            m, s = r.get("marl", {}), r.get("sb3", {})
            lines.append(f"| {algo} | {fmt(m.get('sps'), '.0f')} | {fmt(s.get('sps'), '.0f')} | "
                         f"{fmt(r.get('speedup_wall'), '.2f')} | {fmt(m.get('ms_per_step_cpu'), '.2f')} | "
                         f"{fmt(s.get('ms_per_step_cpu'), '.2f')} | {fmt(r.get('speedup_cpu'), '.2f')} |")
    lines += ["", f"Machine: {data['machine']}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.py offpolicy")
    ap.add_argument("--cases", default="", help=f"comma-separated, of: {', '.join(CASES)}")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=None, help="override every case's budget (a smaller run)")
    ap.add_argument("--out", default=None, help="run directory root (default: a temp dir)")
    ap.add_argument("--report", action="store_true",
                    help="summarize finished runs (and a --speed comparison) under --out, run nothing")
    ap.add_argument("--speed", action="store_true", help="the side-by-side speed comparison with SB3")
    ap.add_argument("--speed-steps", type=int, default=5_000)
    ap.add_argument("--speed-rounds", type=int, default=2)
    ap.add_argument("--sb3-python", default=sys.executable, help="python with stable_baselines3 (skipped if absent)")
    ap.add_argument("--sb3-pythonpath", default=None, help="PYTHONPATH for --sb3-python (a --target install)")
    args = ap.parse_args(argv)
    root = Path(args.out or tempfile.mkdtemp(prefix="marl_bench_offpolicy_"))
    root.mkdir(parents=True, exist_ok=True)  # a --speed run with no case writes its speed.json here
    path = BENCH_DIR / "offpolicy.json"
    data = json.loads(path.read_text()) if path.exists() else {"results": {}}
    new: dict[str, dict] = {}  # cases run (or summarized) by this invocation
    for name in filter(None, args.cases.split(",")):
        if args.steps:
            env, algo, _, target, over, comp = CASES[name]
            CASES[f"{name}@{args.steps // 1000}k"] = (env, algo, args.steps, target, over, comp)
            name = f"{name}@{args.steps // 1000}k"
        res = run_case(name, args.seeds, root, args.report)
        if res is not None:
            new[name] = res
    speed_file = root / "speed.json"  # so that --report can pick up a speed comparison run under --out
    if args.speed and not args.report:
        data["speed"] = speed_part(args.speed_steps, 1000, args.speed_rounds, args.sb3_python, args.sb3_pythonpath)
        speed_file.write_text(json.dumps(data["speed"], indent=2))
    elif args.report and speed_file.exists():
        data["speed"] = json.loads(speed_file.read_text())
    if path.exists():  # results other invocations wrote meanwhile are kept
        data["results"] = json.loads(path.read_text())["results"]
    for name, res in new.items():  # seeds run earlier (and not now) are kept beside this invocation's
        data["results"][name] = merge_seeds(data["results"].get(name), res)
    data["machine"] = machine()
    write("offpolicy", data, markdown(data))
    return 0
