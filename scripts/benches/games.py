"""Turn-based games benchmark: self-play PPO / IPPO on connect_four, tictactoe and leduc_holdem, 3 seeds.

`python scripts/bench.py games [--cases connect_four_ppo,...] [--seeds 0 1 2] [--jobs 2] [--out DIR]`
-> benchmarks/games.{json,md} and benchmarks/connect_four_vs_heuristic.gif (best connect-four policy vs the heuristic).
A run with some ``--cases`` replaces those cases in an existing games.json and keeps the others.

Every case trains with ``scripts/train.py env=ENV algo=ALGO`` (its tuned preset, configs/preset/<env>_<algo>.yaml,
applies; a case's overrides change it) and is then evaluated in matches against baselines, the policy's seat
alternating, greedy actions
(``deterministic=true``). Targets (from the project brief):

* connect_four: win rate vs random >= 95% by 200k env steps (checkpoint at the last iteration <= 200k);
  vs the heuristic >= 70% within 2M env steps (the *_2m cases);
* tictactoe: losses vs random <= 1% over 1000 games; draws vs minimax >= 90%;
* leduc_holdem: mean payoff vs random > 0 with a 95% CI excluding 0.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

from benches.common import BENCH_DIR, machine, preset_of, train_job, write
from marl import checkpoint as ckpt
from marl.matches import (
    Watcher,
    duel_summary,
    load_policy,
    make_policy,
    play_matches,
    single_env,
    write_video,
)
from marl.opponents import PolicyPlayer, make_baseline
from marl.train import build

EVAL_SEED = 10_000  # evaluation env seeds, far from the training seeds
OUT = BENCH_DIR / "games.json"


@dataclass(frozen=True)
class Check:
    """One evaluation: ``episodes`` matches vs ``opponent`` at the checkpoint nearest below ``at_step`` (None: the
    final one), and the target on ``stat`` (win | draw | loss rate, or payoff mean / its CI's lower bound)."""

    opponent: str
    episodes: int
    stat: str  # win | draw | loss | payoff_lo
    op: str  # >= | <= | >
    target: float
    at_step: int | None = None


@dataclass(frozen=True)
class Case:
    env: str
    algo: str
    steps: int
    overrides: list[str]
    checks: list[Check] = field(default_factory=list)


# The tuned settings are the presets `scripts/train.py env=ENV algo=ALGO` applies by default (configs/preset/
# connect_four_ippo.yaml, connect_four_ppo.yaml, tictactoe_ppo.yaml, leduc_holdem_ppo.yaml); a case's overrides are
# what it changes on top: the steps of the Connect Four recipe before the preset (to reproduce the figures recorded
# for them), a longer budget, evaluation settings.
C4_CHECKS = [Check("random", 500, "win", ">=", 0.95), Check("heuristic", 400, "win", ">=", 0.70)]
PLAIN = ["algo.symmetric=false", "algo.gamma=0.99"]  # the recipe before mirror-equivariant networks and gamma 0.95
H3 = ["selfplay.baselines=[heuristic,heuristic,heuristic,random]"]  # 3 of every 4 scripted pool games: the heuristic


def c4_ippo(steps: int, eval_every: int, eval_episodes: int, *extra: str) -> Case:
    """IPPO on connect four (its preset), evaluated during training against random and the heuristic every
    ``eval_every`` steps; ``extra`` overrides on top."""
    return Case("connect_four", "ippo", steps, [*extra, f"eval_every={eval_every}", f"eval_episodes={eval_episodes}",
                                                "selfplay.eval_opponents=[random,heuristic]"], C4_CHECKS)


CASES: dict[str, Case] = {
    "connect_four_ppo_sym_g95": Case("connect_four", "ppo", 200_000, [], C4_CHECKS),  # the preset as it is
    # the recipe before the preset (PLAIN, the lr not annealed), checked at 200k on the way to 300k
    "connect_four_ppo": Case("connect_four", "ppo", 300_000, [*PLAIN, "algo.anneal_lr=false"], [
        Check("random", 500, "win", ">=", 0.95, at_step=200_000), Check("random", 500, "win", ">=", 0.95),
        Check("heuristic", 400, "win", ">=", 0.70)]),
    "connect_four_ppo_long": Case("connect_four", "ppo", 1_000_000, [
        *PLAIN, "algo.anneal_lr=false", "eval_every=100000", "eval_episodes=100",
        "selfplay.eval_opponents=[heuristic,random]"], C4_CHECKS),
    "connect_four_ippo": c4_ippo(200_000, 100_000, 500, *PLAIN),
    # mirror-equivariant networks (algo.symmetric=true: logits and values averaged over the board and its
    # left-right mirror image)
    "connect_four_ippo_sym": c4_ippo(200_000, 100_000, 500, "algo.gamma=0.99"),
    # the brief's full budget for the heuristic target
    "connect_four_ippo_2m": c4_ippo(2_000_000, 250_000, 200, *PLAIN),
    "connect_four_ippo_2m_sym": c4_ippo(2_000_000, 250_000, 200, "algo.gamma=0.99"),
    # ... with a shorter horizon (gamma 0.95): the preset as it is
    "connect_four_ippo_sym_g95": c4_ippo(200_000, 100_000, 500),
    "connect_four_ippo_2m_sym_g95": c4_ippo(2_000_000, 250_000, 200),
    # ... and 3 of every 4 scripted pool games against the heuristic (a name listed k times is drawn k times as
    # often): 45% of all games instead of 30%, where a missed block or a missed win is always punished
    "connect_four_ippo_sym_g95_h3": c4_ippo(200_000, 100_000, 500, *H3),
    "connect_four_ippo_2m_sym_g95_h3": c4_ippo(2_000_000, 250_000, 200, *H3),
    "tictactoe_ppo": Case("tictactoe", "ppo", 150_000, [],
                          [Check("random", 1000, "loss", "<=", 0.01), Check("minimax", 1000, "draw", ">=", 0.90)]),
    "leduc_holdem_ppo": Case("leduc_holdem", "ppo", 60_000, [], [Check("random", 4000, "payoff_lo", ">", 0.0)]),
}


def checkpoint_at(run_dir: Path, at_step: int | None) -> Path:
    """The final checkpoint, or the newest periodic one written at or before ``at_step`` env steps."""
    if at_step is None:
        return run_dir / ckpt.CKPT_DIR / "final.pt"
    cands = sorted((int(p.stem.split("_")[1]), p) for p in (run_dir / ckpt.CKPT_DIR).glob("step_*.pt"))
    ok = [p for s, p in cands if s <= at_step]
    if not ok:
        raise RuntimeError(f"no checkpoint at or before {at_step} steps in {run_dir}")
    return ok[-1]


@torch.no_grad()
def evaluate(path: Path, check: Check, seed: int) -> dict:
    """Matches of the policy at ``path`` vs ``check.opponent``; the duel summary plus the checkpoint's env steps."""
    cfg, payload, p = load_policy(path)
    env = build(cfg, num_envs=16, seed=EVAL_SEED + seed)
    try:
        policy = PolicyPlayer(make_policy(cfg, payload, p, env), deterministic=True)
        opponent = make_baseline(check.opponent, env.spec, EVAL_SEED + seed)
        summary = duel_summary(play_matches(env, policy, opponent, check.episodes, EVAL_SEED + seed), env.spec.agents)
    finally:
        env.close()
    return {"env_steps": payload["meta"]["env_steps"], **summary}


def value(summary: dict, stat: str) -> float:
    s = summary["all"]
    if stat == "payoff_lo":
        return s["payoff"]["mean"] - s["payoff"]["ci"]
    return s[stat]["rate"]


def met(x: float, op: str, target: float) -> bool:
    return {">=": x >= target, "<=": x <= target, ">": x > target}[op]


def run_seed(name: str, case: Case, seed: int, root: Path) -> dict:
    """Train one seed (checkpoints at every check's ``at_step`` boundary) and run its checks."""
    batch = 16 * 128  # env steps per iteration of every case (num_envs=16, num_steps=128)
    marks = sorted({c.at_step // batch * batch for c in case.checks if c.at_step is not None})
    every = marks[0] if marks else 0
    run_dir = root / f"{name}_s{seed}"
    torch.set_num_threads(1)
    job = train_job(case.env, case.algo, seed, case.steps, ["eval_every=0", *case.overrides, "threads=1",
                                                            f"checkpoint_every={every}"], run_dir)
    checks = []
    for c in case.checks:
        summary = evaluate(checkpoint_at(run_dir, c.at_step), c, seed)
        x = value(summary, c.stat)
        checks.append({"opponent": c.opponent, "episodes": c.episodes, "stat": c.stat, "op": c.op,
                       "target": c.target, "at_step": c.at_step, "value": x, "met": met(x, c.op, c.target),
                       "summary": summary})
    # training-time evaluations (selfplay.eval_opponents, when the case sets eval_every): win rate per opponent
    trend = {k.split("/")[1]: [(int(r["global_step"]), r[k]) for r in job["rows"] if k in r]
             for k in {k for r in job["rows"] for k in r if k.startswith("eval/") and k.endswith("/win_rate")
                       and k.count("/") == 2}}
    out = {"seed": seed, "run_dir": str(run_dir), "wall_s": round(job["wall_s"], 1),
           "sps": job["rows"][-1].get("charts/SPS"), "checks": checks, "trend": trend}
    print(name, seed, [(c["opponent"], c["at_step"], round(c["value"], 4)) for c in checks], flush=True)
    return out


def render_best(results: dict, out: Path) -> dict | None:
    """GIF of the connect-four policy with the best win rate vs the heuristic playing it (4 matches); runs whose
    directory is gone (cases kept from an earlier invocation) are skipped."""
    best = None
    for name, r in results.items():
        if r["env"] != "connect_four":
            continue
        for s in r["seeds"]:
            if not Path(s["run_dir"]).is_dir():
                continue
            for c in s["checks"]:
                if c["opponent"] == "heuristic" and c["at_step"] is None and (best is None or c["value"] > best[0]):
                    best = (c["value"], name, s["seed"], s["run_dir"])
    if best is None:
        return None
    _, name, seed, run_dir = best
    cfg, payload, path = load_policy(run_dir)
    watcher = Watcher("rgb_array", games=4, hold=4)
    env = single_env(cfg, "rgb_array", watcher, EVAL_SEED)
    try:
        policy = PolicyPlayer(make_policy(cfg, payload, path, env), deterministic=True)
        res = play_matches(env, policy, make_baseline("heuristic", env.spec, EVAL_SEED), 4, EVAL_SEED)
    finally:
        env.close()
    write_video(watcher.frames, out, fps=2.0, max_side=240)
    return {"case": name, "seed": seed, "file": out.name, "outcomes": [f"{r.seat}: {r.outcome}" for r in res],
            "bytes": out.stat().st_size}


def fmt_check(c: dict) -> str:
    """The checked value over all games, then per seat (first seat / second seat)."""
    if c["stat"] == "payoff_lo":
        p = c["summary"]["all"]["payoff"]
        return f"{p['mean']:+.3f} ± {p['ci']:.3f}"
    seats = " / ".join(f"{100 * s[c['stat']]['rate']:.1f}" for s in c["summary"]["seats"].values())
    return f"{100 * c['value']:.1f}% ({seats})"


def seat_detail(c: dict) -> str:
    """Per-seat W/D/L rates of one check."""
    rates = {seat: [100 * s[k]["rate"] for k in ("win", "draw", "loss")] for seat, s in c["summary"]["seats"].items()}
    return "; ".join(f"{seat}: {w:.0f}/{d:.0f}/{lo:.0f}" for seat, (w, d, lo) in rates.items())


def markdown(results: dict, gif: dict | None, seeds: list[int]) -> str:
    rows = ["| case | env steps | opponent | at step | metric | target | per seed: all (first / second seat) | "
            "met (all seeds) | "
            "W/D/L % per seat (seed 0) |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        for k, c0 in enumerate(r["seeds"][0]["checks"]):
            per = [s["checks"][k] for s in r["seeds"]]
            metric = {"win": "win rate", "draw": "draw rate", "loss": "loss rate",
                      "payoff_lo": "payoff (mean ± 95% CI)"}[c0["stat"]]
            target = f"{c0['op']} {c0['target']:g}" if c0["stat"] == "payoff_lo" else \
                f"{c0['op']} {100 * c0['target']:g}%"
            at = f"{per[0]['summary']['env_steps']:,}"
            values = ", ".join(f"s{s['seed']}: {fmt_check(c)}" for s, c in zip(r["seeds"], per, strict=True))
            rows.append(f"| {name} | {r['steps']:,} | {c0['opponent']} ({c0['episodes']} games) | {at} | {metric} | "
                        f"{target} | {values} | "
                        f"{'yes' if all(c['met'] for c in per) else 'no'} | {seat_detail(c0)} |")
    trends = []
    for name, r in results.items():
        for s in r["seeds"]:
            for opp, pts in sorted(s.get("trend", {}).items()):
                if len(pts) > 1:
                    trends.append(f"- {name} seed {s['seed']}, vs {opp}: "
                                  + ", ".join(f"{step // 1000}k {100 * v:.0f}%" for step, v in pts))
    text = ["# Turn-based games benchmark (self-play)", "",
            f"`python scripts/bench.py games` — seeds {' '.join(map(str, seeds))} (the longer connect-four runs, "
            "connect_four_ppo_long and connect_four_ippo_2m, one seed: `--cases NAME --seeds 0`). One shared "
            "policy plays both "
            "seats; a fraction of the env copies (selfplay.pool_fraction) plays the opponent pool: frozen snapshots "
            "of earlier policies and scripted baselines (the overrides per case are in games.json and "
            "scripts/benches/games.py; opponent moves are never trained on). Evaluation: greedy policy, seats "
            "alternating, fixed evaluation seeds; rates are over all games, Wilson 95% intervals per seat are in "
            "games.json.", "",
            *rows, "", "Training speed is not reported here: these runs shared the 2 cores with other jobs (and some "
            "were continued from earlier runs), so their wall times say nothing about marl's speed.", "",
            *(["Win rate during training (greedy, seats alternating, the run's own evaluation episodes):", "",
               *trends, ""] if trends else []),
            "Budget note: the brief allows 2M env steps for the connect-four target vs the heuristic. "
            "connect_four_ippo_2m runs connect_four_ippo's recipe for the full 2M steps (one seed), "
            "connect_four_ippo_2m_sym the same with mirror-equivariant networks (3 seeds; algo.symmetric=true: the "
            "policy's logits and the value are averaged over the board and its left-right mirror image), "
            "connect_four_ippo_2m_sym_g95 that with gamma 0.95 instead of 0.99, and connect_four_ippo_2m_sym_g95_h3 "
            "that with 3 of every 4 scripted pool games against the heuristic instead of 1 of 2 (45% of all games "
            "instead of 30%); their trends are above. A tactics count of connect_four_ippo_2m_sym_g95 seed 2 at 1M "
            "against the heuristic (200 games) found it took 138 of 166 available immediate wins and made 57 of 92 "
            "needed blocks: most of its losses are missed blocks. "
            "The heuristic-heavier pool helps late but not early: at "
            "200k (connect_four_ippo_sym_g95_h3) it wins 95.4 / 96.8 / 91.4% against random, so the 200k target is "
            "met by connect_four_ippo_sym_g95, whose pool plays random as often as the heuristic. "
            "An earlier form of the symmetry trained on mirrored copies of every rollout instead: at 200k"
            " it won 93.8 / 96.0 / 96.4% against random (3 seeds), but in a 2M run PPO's approx KL reached 1e9 once "
            "the policy was near-deterministic (the mirrored samples are off-policy for a policy that is not "
            "symmetric) and its win rate against the heuristic fell from 36% at 750k to 15%; it was replaced by "
            "algo.symmetric. Tried and not better at 200k steps (seed 0, the run's own evaluation, vs random / "
            "heuristic): a conv torso (algo.conv=[[64,4]]) 91% / 24%; (seed 1, at 250k, symmetric) a conv torso "
            "algo.conv=[[32,4]] 92% / 23% at half the training speed, against 90% / 25% without it; "
            "lr 1e-3 90% / 32%; half the copies in self-play"
            " with every pool game against a baseline 92% / 20%; gamma 0.9 95% / 19%; only the heuristic as scripted "
            "pool opponent 82% / 20%; target_kl 0.03 94% / 29%; 32 copies with lr 3e-4 and 4 epochs 91% / 10%. "
            "connect_four_ippo uses a linearly annealed lr (algo.anneal_lr=true); without it the same case reached "
            "92.4-94.6% against random (an earlier version of this table).", ""]
    if gif:
        text += [f"![connect four vs heuristic]({gif['file']}) — `{gif['case']}` seed {gif['seed']} (greedy) vs the "
                 f"heuristic, 4 matches: {', '.join(gif['outcomes'])}.", ""]
    text += [f"Machine: {machine()}", ""]
    return "\n".join(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.py games")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=2, help="training jobs run at once")
    ap.add_argument("--out", default=None, help="run directory root (default: a temp dir)")
    ap.add_argument("--markdown-only", action="store_true", help="rewrite games.md from games.json, no training")
    args = ap.parse_args(argv)
    if args.markdown_only:
        data = json.loads(OUT.read_text())
        write("games", data, markdown(data["results"], data["gif"], args.seeds))
        return 0
    root = Path(args.out or tempfile.mkdtemp(prefix="marl_bench_games_"))
    names = args.cases.split(",")
    unknown = [n for n in names if n not in CASES]
    if unknown:
        ap.error(f"unknown case(s) {unknown}; choose from {', '.join(CASES)}")
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {(n, s): pool.submit(run_seed, n, CASES[n], s, root) for n in names for s in args.seeds}
        per = {key: f.result() for key, f in futures.items()}
    new = {n: {"env": CASES[n].env, "algo": CASES[n].algo, "steps": CASES[n].steps,
               "preset": preset_of(CASES[n].env, CASES[n].algo),
               "overrides": CASES[n].overrides, "seeds": [per[(n, s)] for s in args.seeds]} for n in names}
    old = json.loads(OUT.read_text()) if OUT.is_file() else {"results": {}, "gif": None}
    results = {n: new.get(n, old["results"].get(n)) for n in CASES if n in new or n in old["results"]}
    gif = old.get("gif")
    if any(CASES[n].env == "connect_four" for n in names):
        gif = render_best(results, BENCH_DIR / "connect_four_vs_heuristic.gif")
    write("games", {"machine": machine(), "results": results, "gif": gif}, markdown(results, gif, args.seeds))
    return 0
