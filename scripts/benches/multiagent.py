"""Multi-agent benchmark: IPPO / MAPPO / HAPPO on MPE simple_spread (team return per episode, deterministic evaluation
over >= 50 episodes), simple_speaker_listener, multiwalker, the competitive envs simple_tag and simple_adversary (each
team's return, against the other trained team and against a random one), and MAPPO's training throughput vs the raw
env rate.

`python scripts/bench.py multiagent [--part spread|listener|multiwalker|competitive|throughput] [--seeds 0 1 2]`
-> benchmarks/multiagent.{json,md}. Parts already in multiagent.json are kept unless re-run.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from benches.common import BENCH_DIR, finished_job, last, machine, preset_of, train_job, write
from marl.adapters.base import random_actions
from marl.adapters.registry import make_vec_env, resolve_env_config
from marl.logging import read_metrics
from marl.matches import load_policy, make_policy
from marl.train import build

EVAL = ["eval_episodes=100"]
# part: list of (env, algo, steps, eval_every, overrides)
PARTS: dict[str, list[tuple[str, str, int, int, list[str]]]] = {
    "spread": [
        ("simple_spread", a, 1_000_000, 100_000, []) for a in ("mappo", "ippo", "happo")
    ],
    "listener": [("simple_speaker_listener", a, 200_000, 50_000, []) for a in ("mappo", "happo")],
    "multiwalker": [
        (
            "multiwalker",
            a,
            2_000_000,
            200_000,
            [],  # the tuned values: configs/preset/multiwalker_<algo>.yaml, applied by default
        )
        for a in ("mappo", "ippo")
    ],
}


# competitive part: (env, label, algo, overrides); "one team" is the old objective (every agent on the sum of all
# agents' rewards), declared as a single team for the comparison
COMPETITIVE_STEPS = 100_000
COMPETITIVE: list[tuple[str, str, str, list[str]]] = [
    (env, label, algo, over)
    for env in ("simple_tag", "simple_adversary")
    for label, algo, over in (("mappo (per team)", "mappo", []),
                              ("mappo (one summed team)", "mappo", ["~env.teams", '+env.teams={all:["*"]}']),
                              ("ippo", "ippo", []))
]


def team_returns(run_dir: Path | None, env_name: str, trained: set[str], episodes: int = 100, seed: int = 777
                 ) -> dict[str, float]:
    """Mean episode return of every team (sum over its members) when the teams in ``trained`` play the run's greedy
    policy and the other teams uniform random actions (``run_dir`` None: everyone random)."""
    if run_dir is not None:
        cfg, payload, path = load_policy(run_dir)
        env = build(cfg, num_envs=8, seed=seed)
        policy = make_policy(cfg, payload, path, env)
    else:
        env, policy = make_vec_env(resolve_env_config(env_name), 8, seed=seed), None
    spec = env.spec
    real = make_vec_env(resolve_env_config(env_name), 1).spec.teams  # the env's own teams, whatever the run trained
    team_of = {a: t for t, ms in real for a in ms}
    rng = np.random.default_rng(seed)
    out = env.reset(seed=seed)
    totals: dict[str, list[float]] = {t: [] for t, _ in real}
    done = 0
    while done < episodes:
        acts = random_actions(spec, out, rng)
        if policy is not None:
            mine = policy.act(out.obs, out.action_mask, True)
            for g in spec.groups:
                pick = np.array([team_of[a] in trained for a in g.agents])
                acts[g.name] = np.where(pick.reshape(1, -1, *[1] * (acts[g.name].ndim - 2)),
                                        mine[g.name].cpu().numpy().reshape(acts[g.name].shape), acts[g.name])
        out = env.step(acts)
        for ep in out.episodes[: episodes - done]:
            for t, ms in real:
                totals[t].append(sum(ep.returns[a] for a in ms))
        done += len(out.episodes)
    env.close()
    return {t: float(np.mean(v[:episodes])) for t, v in totals.items()}


def competitive_part(seeds: list[int], root: Path, report_only: bool) -> list[dict]:
    """Train each case (two jobs at a time), then evaluate every team against the other trained team and against a
    random one."""
    jobs = {}
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for env, label, algo, over in COMPETITIVE:
            for seed in seeds:
                run_dir = root / f"{env}_{label.replace(' ', '_').replace('(', '').replace(')', '')}_s{seed}"
                if not report_only:
                    jobs[run_dir] = pool.submit(train_job, env, algo, seed, COMPETITIVE_STEPS,
                                                ["eval_every=0", "eval_episodes=20", *over], run_dir)
    for f in jobs.values():
        f.result()
    out = []
    for env, label, algo, over in COMPETITIVE:
        teams = [t for t, _ in make_vec_env(resolve_env_config(env), 1).spec.teams]
        runs = []
        for seed in seeds:
            run_dir = root / f"{env}_{label.replace(' ', '_').replace('(', '').replace(')', '')}_s{seed}"
            if not (run_dir / "checkpoints" / "final.pt").exists():
                continue
            job = finished_job(run_dir)
            res = {"seed": seed, "sps": last(job["rows"], "charts/SPS"), "both_trained": team_returns(
                run_dir, env, set(teams))}
            for t in teams:
                res[f"{t}_vs_random"] = team_returns(run_dir, env, {t})[t]
            runs.append(res)
            print(env, label, res, flush=True)
        out.append({"env": env, "label": label, "algo": algo, "overrides": over, "steps": COMPETITIVE_STEPS,
                    "teams": teams, "runs": runs, "random": team_returns(None, env, set())})
    return out


def random_policy_returns(env_name: str, episodes: int = 100, seed: int = 123) -> float:
    """Mean team return of uniform random (legal) actions."""
    env = make_vec_env(resolve_env_config(env_name), 8, seed=seed)
    rng = np.random.default_rng(seed)
    out = env.reset(seed=seed)
    rets: list[float] = []
    while len(rets) < episodes:
        out = env.step(random_actions(env.spec, out, rng))
        rets += [e.team_return for e in out.episodes]
    env.close()
    return float(np.mean(rets[:episodes]))


def raw_rate(env_name: str, num_envs: int, backend: str, seconds: float = 10.0) -> float:
    """Random-action env steps/s through the adapter with this env count and process layout."""
    cfg = resolve_env_config(env_name)
    cfg.backend = backend
    env = make_vec_env(cfg, num_envs, seed=0)
    rng = np.random.default_rng(0)
    out = env.reset(seed=0)
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        out = env.step(random_actions(env.spec, out, rng))
        steps += num_envs
    rate = steps / (time.perf_counter() - t0)
    env.close()
    return rate


def case_result(env: str, algo: str, steps: int, over: list[str], run_dirs: list[tuple[int, Path, dict]]) -> dict:
    """Summarize finished or partial runs from their metrics.csv (steps reached are reported as they are)."""
    runs = []
    for seed, run_dir, job in run_dirs:
        if not (run_dir / "metrics.csv").exists():
            continue
        rows = read_metrics(run_dir / "metrics.csv")
        job = job or finished_job(run_dir)
        evals = {
            str(int(r["global_step"])): (r["eval/return"], r["eval/agent_return"]) for r in rows if "eval/return" in r
        }
        runs.append(
            {
                "seed": seed,
                "evals": evals,
                "steps_reached": int(rows[-1]["global_step"]),
                "eval_episodes": int(OmegaConf.load(run_dir / "config.yaml").eval_episodes),
                "sps": last(rows, "charts/SPS"),
                "peak_rss_mb": round(job.get("peak_rss_mb", float("nan")), 1),
            }
        )
    return {
        "env": env,
        "algo": algo,
        "steps": steps,
        "preset": preset_of(env, algo),
        "overrides": over,
        "runs": runs,
        "random_team_return": random_policy_returns(env),
    }


def learning_part(part: str, seeds: list[int], root: Path, report_only: bool, algos: list[str] | None) -> list[dict]:
    out = []
    for env, algo, steps, every, over in PARTS[part]:
        if algos and algo not in algos:
            continue
        dirs = []
        for seed in seeds:
            run_dir = root / f"{env}_{algo}_s{seed}"
            job = (
                {} if report_only else train_job(env, algo, seed, steps, [*EVAL, f"eval_every={every}", *over], run_dir)
            )
            dirs.append((seed, run_dir, job))
        out.append(case_result(env, algo, steps, over, dirs))
        print(env, algo, [(r["seed"], r["steps_reached"]) for r in out[-1]["runs"]], flush=True)
    return out


def throughput_part(root: Path, steps: int = 100_000) -> dict:
    """MAPPO's training SPS vs the random-action rate through the same adapter and layout; the raw rate is measured
    right before and right after the training run and averaged, so a change in the machine's speed during the
    measurement (a shared VM host) shows up in the spread of the two instead of skewing the ratio."""
    res = {}
    for backend in ("inprocess", "subprocess"):
        before = raw_rate("simple_spread", 8, backend)
        job = train_job(
            "simple_spread",
            "mappo",
            0,
            steps,
            ["preset=none", "eval_every=0", "eval_episodes=1", f"env.backend={backend}"],  # the 8 copies measured
            root / f"throughput_{backend}",
        )
        after = raw_rate("simple_spread", 8, backend)
        raw = (before + after) / 2
        sps = last(job["rows"], "charts/SPS")
        res[backend] = {
            "num_envs": 8,
            "raw_adapter_random_sps": raw,
            "raw_before_after": [before, after],
            "train_sps": sps,
            "ratio": sps / raw,
            "peak_rss_mb": job["peak_rss_mb"],
            "steps": steps,
        }
        print("throughput", backend, res[backend], flush=True)
    return res


def peak_mb(runs: list[dict]) -> str:
    vals = [r["peak_rss_mb"] for r in runs if r["peak_rss_mb"] == r["peak_rss_mb"]]  # NaN: not recorded
    return f"{max(vals):.0f} MB" if vals else "not recorded"


def markdown(data: dict) -> str:
    lines = [
        "# Multi-agent benchmark",
        "",
        "`python scripts/bench.py multiagent` — team return = sum over agents per episode, deterministic "
        "evaluation (greedy actions) every 100k (multiwalker: 200k) steps over the episodes given per table; "
        "mean ± std over seeds, then each seed. The learning runs shared the 2 cores with other jobs, so their "
        "speed is not reported here: see the throughput table, measured on an otherwise idle machine.",
        "",
        "The simple_spread IPPO and HAPPO runs were trained to 300k in an earlier session with 50-episode "
        "evaluations and continued to 1M from their checkpoints with 100-episode evaluations (a resumed run is "
        "identical to an uninterrupted one); the heading of those tables shows the final setting.",
        "",
    ]
    for part in ("spread", "listener", "multiwalker"):
        for case in data.get(part, []):
            if not case["runs"]:
                continue
            n_eval = sorted({r.get("eval_episodes", 50) for r in case["runs"]})
            lines += [
                f"## {case['env']} — {case['algo']} (random policy: {case['random_team_return']:.1f})",
                "",
                f"Preset: {case.get('preset', 'none')}; overrides: {' '.join(case['overrides']) or 'none'}; "
                f"evaluation over "
                f"{' / '.join(map(str, n_eval))} episodes; peak RSS {peak_mb(case['runs'])}.",
                "",
                "| env steps | team return (mean ± std) | per seed | per-agent mean |",
                "|---|---|---|---|",
            ]
            steps = sorted({int(s) for r in case["runs"] for s in r["evals"]})
            for s in steps:
                vals = [(r["seed"], r["evals"][str(s)]) for r in case["runs"] if str(s) in r["evals"]]
                team = [v[0] for _, v in vals]
                agent = [v[1] for _, v in vals]
                sd = statistics.pstdev(team) if len(team) > 1 else 0.0
                lines.append(
                    f"| {s:,} | {statistics.fmean(team):.1f} ± {sd:.1f} | "
                    f"{', '.join(f's{seed}: {v[0]:.1f}' for seed, v in vals)} | {statistics.fmean(agent):.1f} |"
                )
            lines.append("")
    if data.get("competitive"):
        lines += competitive_markdown(data["competitive"])
    if "throughput" in data:
        lines += [
            "## Throughput: MAPPO on simple_spread, 8 env copies",
            "",
            "Training env steps/s vs random-action env steps/s through the same adapter with the same env count and "
            "process layout, measured back to back on an otherwise idle machine.",
            "",
            "| backend | raw random-action SPS (adapter; before / after) | training SPS | ratio | peak MB |",
            "|---|---|---|---|---|",
        ]
        for b, r in data["throughput"].items():
            ba = " / ".join(f"{x:.0f}" for x in r.get("raw_before_after", []))
            lines.append(
                f"| {b} | {r['raw_adapter_random_sps']:.0f} ({ba}) | {r['train_sps']:.0f} | {r['ratio']:.2f} | "
                f"{r['peak_rss_mb']:.0f} |"
            )
    lines += ["", f"Machine: {data.get('machine')}", ""]
    return "\n".join(lines)


def competitive_markdown(cases: list[dict]) -> list[str]:
    """One table per env: each team's mean return (100 greedy episodes, mean over seeds) against the other trained
    team and against uniform random opponents; random vs random as the reference."""
    lines = []
    for env in dict.fromkeys(c["env"] for c in cases):
        rows = [c for c in cases if c["env"] == env and c["runs"]]
        if not rows:
            continue
        teams = rows[0]["teams"]
        steps = rows[0]["steps"]
        lines += [f"## {env}: each team's return ({steps:,} env steps, seeds "
                  f"{', '.join(str(r['seed']) for r in rows[0]['runs'])})", "",
                  "Each cell: the team's mean return over 100 greedy episodes (mean over seeds; per seed in brackets). "
                  "\"vs trained\": both teams play the run's policies; \"vs random\": the other team acts uniformly at "
                  "random. \"one summed team\" trains every agent on the sum of all agents' rewards (the objective "
                  "marl used before teams: `env.teams={all:[\"*\"]}`).", ""]
        head = " | ".join(f"{t} vs trained | {t} vs random" for t in teams)
        lines += [f"| training | {head} |", "|---|" + "---|" * (2 * len(teams))]
        rnd = rows[0]["random"]
        lines.append("| random policy | " + " | ".join(f"{rnd[t]:.1f} | {rnd[t]:.1f}" for t in teams) + " |")
        for c in rows:
            cells = []
            for t in teams:
                both = [r["both_trained"][t] for r in c["runs"]]
                vsr = [r[f"{t}_vs_random"] for r in c["runs"]]
                cells.append(f"{statistics.fmean(both):.1f} ({', '.join(f'{v:.1f}' for v in both)})")
                cells.append(f"{statistics.fmean(vsr):.1f} ({', '.join(f'{v:.1f}' for v in vsr)})")
            lines.append(f"| {c['label']} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.py multiagent")
    ap.add_argument("--part", nargs="+", default=["spread", "listener", "multiwalker", "competitive", "throughput"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default=None, help="run directory root; existing runs there are continued")
    ap.add_argument("--report", action="store_true", help="only summarize the runs already under --out")
    ap.add_argument("--algos", nargs="+", default=None, help="only these algorithms of the learning parts")
    args = ap.parse_args(argv)
    root = Path(args.out or tempfile.mkdtemp(prefix="marl_bench_multi_"))
    path = BENCH_DIR / "multiagent.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    for part in args.part:
        if part == "throughput":
            if not args.report:
                data[part] = throughput_part(root)
        elif part == "competitive":
            data[part] = competitive_part(args.seeds, root, args.report)
        else:
            data[part] = learning_part(part, args.seeds, root, args.report, args.algos)
    data["machine"] = machine()
    write("multiagent", json.loads(json.dumps(data)), markdown(json.loads(json.dumps(data))))
    return 0
