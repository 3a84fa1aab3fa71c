"""Training speed: MAPPO on VMAS (torch end to end) vs VMAS's own random-action rate, and marl on mpe2 (PettingZoo).

Side by side in one run (the ratios are what to read on a shared machine):

* VMAS ``simple_spread`` (3 agents, 25 steps): VMAS's random-action rate (``vmas.make_env`` + ``get_random_actions``,
  no marl) and marl's MAPPO training rate (whole process: env steps / wall time, start-up and evaluation included;
  and the loop's own ``charts/SPS``) at each ``num_envs``; their ratio; peak RSS; the evaluation return at the end.
* mpe2 ``simple_spread``: its single-process random-action rate (one raw PettingZoo env, no marl; before and after
  the training runs), the same env stepped as marl's copies step it, and marl's MAPPO with the default
  ``env.backend=auto`` and in-process.
* with ``--benchmarl PYTHON``: BenchMARL's MAPPO (run by that interpreter, its own venv) and marl's on the same VMAS
  task for the same env steps: both rates and both evaluation curves (:mod:`benches.benchmarl_vs`).
* ``--parts long``: the preset's MAPPO on VMAS ``simple_spread`` for ``--long-steps`` (10M): its evaluation curve,
  whole-process rate and peak RSS.

Writes ``benchmarks/speed.json`` and ``benchmarks/speed.md``; ``--parts`` reruns some parts and keeps the others'
figures (each part records its own date, load and command)::

    python scripts/bench.py speed            # about 10 minutes on an idle machine
    python scripts/bench.py speed --quick    # a tiny run, to check the script
    python scripts/bench.py speed --parts benchmarl --benchmarl /work/bmvenv/bin/python   # BenchMARL vs marl
    python scripts/bench.py speed --parts long   # 10M env steps of the preset, about 10 minutes idle
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from benches.adapters import RawLoop
from benches.common import BENCH_DIR, fmt, last, machine, train_job, write
from marl.config import compose

NUM_ENVS = (64, 256, 512, 2048)
RUNS = Path("outputs/bench_speed")


def preset_num_envs(scenario: str) -> int:
    """``num_envs`` of ``env=vmas_<scenario> algo=mappo`` as composed (its preset's, what a user's run gets)."""
    return int(compose({"env": {"name": f"vmas_{scenario}"}, "algo": {"name": "mappo"}}).num_envs)


def vmas_random_rate(num_envs: int, seconds: float, scenario: str = "simple_spread",
                     max_steps: int = 25) -> tuple[float, float | None]:
    """Env steps/s of VMAS alone (random actions, finished copies reset in bulk when all end together) and the mean
    return of those random episodes (summed over the agents, up to each copy's own end; None if none ended)."""
    import vmas

    torch.set_num_threads(1)
    env = vmas.make_env(scenario, num_envs=num_envs, device="cpu", continuous_actions=False, max_steps=max_steps,
                        seed=0)
    env.reset()
    alive, ret, finished = torch.ones(num_envs, dtype=torch.bool), torch.zeros(num_envs), []
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        _, rews, done, _ = env.step(env.get_random_actions())
        steps += 1
        ret += torch.stack(rews).sum(0) * alive
        alive &= ~done
        if not bool(alive.any()):
            finished.append(ret.clone())
            ret.zero_()
            alive.fill_(True)
            env.reset()
    rate = steps * num_envs / (time.perf_counter() - t0)
    return rate, float(torch.cat(finished).mean()) if finished else None


def mpe2_random_rate(seconds: float, direct: bool = False) -> float:
    """Env steps/s of one raw mpe2 simple_spread env in this process (random actions, no marl): PettingZoo's
    ``parallel_env`` as it comes, or (``direct``) stepped as marl's copies step it (:mod:`marl.adapters.direct`)."""
    loop = RawLoop("simple_spread", direct=direct)
    return loop.run(seconds)


def train_rate(env: str, steps: int, overrides: list[str], tag: str, fresh: bool = True) -> dict:
    """MAPPO on ``env`` to ``steps``: whole-process and loop rates, peak RSS, the last and every evaluation return.
    ``fresh``: a new run (an earlier run of the tag is removed: a rate is only read off a run timed now)."""
    if fresh:
        shutil.rmtree(RUNS / tag, ignore_errors=True)
        (RUNS / f"{tag}.log").unlink(missing_ok=True)
    job = train_job(env, "mappo", 0, steps, overrides, RUNS / tag)
    rows = job["rows"]
    reached = int(rows[-1]["global_step"])
    return {"env_steps": reached, "wall_s": round(job["wall_s"], 1), "steps_per_s": reached / job["wall_s"],
            "loop_sps": last(rows, "charts/SPS"), "peak_rss_mb": round(job["peak_rss_mb"]),
            "eval_return": last(rows, "eval/return"), "train_return": last(rows, "charts/episodic_return"),
            "overrides": overrides,
            "eval": [(int(r["global_step"]), r["eval/return"]) for r in rows if "eval/return" in r]}


PARTS = ("vmas", "others", "mpe2", "benchmarl", "long")


def _start() -> dict:
    """The machine's state as a part starts: the 1-minute load average (it also counts this bench's own previous
    part) and the cores other processes keep busy over one second (``/proc/stat``, this process asleep)."""
    from marl.adapters.registry import busy_cores

    return {"load_before": round(os.getloadavg()[0], 2), "busy_before": round(busy_cores(1.0)[0], 2)}


def _meta(start: dict) -> dict:
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S"), **start, "load_after": round(os.getloadavg()[0], 2)}


def _load_note(meta: dict) -> str:
    note = f"{meta['date']}, load average {meta['load_before']} before / {meta['load_after']} after"
    busy = meta.get("busy_before")
    if meta.get("conditions"):  # what else ran, written down by whoever ran it (records without busy_before)
        return note + f": {meta['conditions']}"
    if busy is None:  # records from before busy_before was measured
        return note + " (the load average also counts this bench's own previous part)."
    if busy < 0.3:
        return note + f", {busy:.1f} cores busy with other processes as it started: the machine was otherwise idle."
    return note + (f", {busy:.1f} cores busy with other processes as it started: the machine was shared with other "
                   "jobs, so absolute rates are low and noisy; the ratios (measured side by side in this part) are "
                   "what to read.")


def part_vmas(args, seconds: float, vmas_steps: int) -> dict:
    rows = {}
    start = _start()
    for E in args.num_envs:
        steps = max(vmas_steps, E * 25 * 4)  # at least four updates
        if not args.quick and E <= 64:
            steps = min(steps, 200_000)  # the slowest setting: enough for a rate, not for a return at 1M
        rnd, _ = vmas_random_rate(E, seconds)
        tr = train_rate("vmas_simple_spread", steps, [f"num_envs={E}", f"checkpoint_every={steps}", *args.train],
                        f"vmas_E{E}")
        tr["random_steps_per_s"] = rnd
        tr["ratio_to_random"] = tr["steps_per_s"] / rnd
        rows[str(E)] = tr
        print(f"vmas E={E}: train {tr['steps_per_s']:,.0f}/s, random {rnd:,.0f}/s, return {tr['eval_return']}",
              flush=True)
    return {"meta": _meta(start), "rows": rows, "preset_num_envs": preset_num_envs("simple_spread")}


def part_others(args, seconds: float, vmas_steps: int) -> dict:
    rows = {}
    start = _start()
    for sc in args.scenarios:  # at the preset's num_envs
        E = preset_num_envs(sc)
        rnd, rnd_return = vmas_random_rate(E, seconds, sc, 100)
        tr = train_rate(f"vmas_{sc}", vmas_steps, [f"checkpoint_every={vmas_steps}", *args.train], f"vmas_{sc}")
        tr["random_steps_per_s"], tr["ratio_to_random"], tr["num_envs"] = rnd, tr["steps_per_s"] / rnd, E
        tr["random_return"] = rnd_return
        rows[sc] = tr
        print(f"vmas {sc}: train {tr['steps_per_s']:,.0f}/s, random {rnd:,.0f}/s, return {tr['eval_return']}",
              flush=True)
    return {"meta": _meta(start), "rows": rows}


def part_mpe2(args, seconds: float) -> dict:
    """marl's MAPPO on mpe2 simple_spread with the default backend (auto) and in-process, ``--mpe-rounds`` times each,
    beside mpe2's own single-process random-action rate measured in a slice before and after every training run: this
    VM's speed drifts by 40% within minutes, so each run is divided by the mean of the two slices around it and the
    medians are reported. Also the same env stepped directly (the env work a marl copy does)."""
    start = _start()
    mpe_steps = 8_000 if args.quick else args.mpe_steps
    rounds = 1 if args.quick else args.mpe_rounds
    direct = mpe2_random_rate(seconds, direct=True)
    slices = [mpe2_random_rate(seconds)]
    runs: dict[str, list[dict]] = {"auto": [], "inprocess": []}
    for _ in range(rounds):
        for backend in runs:
            tag = f"mpe2_{backend}"
            run = train_rate("simple_spread", mpe_steps, [f"eval_every={mpe_steps}", "eval_episodes=8",
                                                          f"checkpoint_every={mpe_steps}", f"env.backend={backend}"],
                             tag)
            log = (RUNS / f"{tag}.log").read_text()
            run["backend"] = next((ln.split(":", 1)[1].strip() for ln in reversed(log.splitlines())
                                   if ln.startswith("env backend:")), "?")
            slices.append(mpe2_random_rate(seconds))
            run["random_around"] = (slices[-2] + slices[-1]) / 2
            run["ratio_to_random"] = run["steps_per_s"] / run["random_around"]
            run["ratio_to_direct"] = run["steps_per_s"] / direct
            runs[backend].append(run)
            print(f"mpe2 {backend}: {run['steps_per_s']:,.0f}/s, {run['ratio_to_random']:.2f} of the random rate "
                  f"around it ({run['backend']})", flush=True)

    def median_run(rs: list[dict]) -> dict:
        mid = sorted(rs, key=lambda r: r["ratio_to_random"])[len(rs) // 2]
        return {**mid, "ratios": [round(r["ratio_to_random"], 3) for r in rs],
                "rates": [round(r["steps_per_s"]) for r in rs]}

    return {"meta": _meta(start), **median_run(runs["auto"]), "inprocess": median_run(runs["inprocess"]),
            "random_slices": [round(x) for x in slices], "random_steps_per_s": float(np.median(slices)),
            "direct_steps_per_s": direct, "rounds": rounds}


def part_benchmarl(args) -> dict:
    """BenchMARL's MAPPO (its own venv) then marl's (the preset) on vmas_simple_spread, the same env steps."""
    from benches.benchmarl_vs import BATCH, run_benchmarl

    start = _start()
    frames = BATCH * 2 if args.quick else args.benchmarl_frames
    every = BATCH if args.quick else args.benchmarl_eval
    bm = run_benchmarl(args.benchmarl, frames, RUNS / "benchmarl", every)
    print(f"benchmarl: {bm['steps_per_s']:,.0f}/s, eval {bm['eval']}", flush=True)
    # marl: the same env steps (rounded up to whole rollouts of the preset), an evaluation every 12,800 env steps
    tr = train_rate("vmas_simple_spread", frames, ["eval_every=12800", f"checkpoint_every={frames}", *args.train],
                    "vmas_vs_benchmarl")
    tr["num_envs"] = preset_num_envs("simple_spread")
    print(f"marl: {tr['steps_per_s']:,.0f}/s, eval {tr['eval']}", flush=True)
    return {"meta": _meta(start), "frames": frames, "benchmarl": bm, "marl": tr,
            "marl_over_benchmarl_speed": tr["steps_per_s"] / bm["steps_per_s"]}


def part_long(args) -> dict:
    """The preset's MAPPO on vmas_simple_spread for ``--long-steps``: its curve, rate and memory."""
    start = _start()
    steps = 51_200 if args.quick else args.long_steps
    every = max(steps // 10, 12_800)
    tr = train_rate("vmas_simple_spread", steps, [f"eval_every={every}", f"checkpoint_every={every}", *args.train],
                    f"vmas_long_{steps // 1000}k", fresh=False)  # a longer budget continues the run
    tr["num_envs"] = preset_num_envs("simple_spread")
    print(f"long: {tr['steps_per_s']:,.0f}/s, eval {tr['eval']}", flush=True)
    return {"meta": _meta(start), **tr}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budgets, to check the script")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=None,
                        help="run only these parts (the others keep their figures from benchmarks/speed.json); "
                             "default: vmas, others, mpe2, and benchmarl when --benchmarl is given")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each random-action measurement")
    parser.add_argument("--steps", type=int, default=1_000_000, help="MAPPO env steps per VMAS num_envs")
    parser.add_argument("--num-envs", type=int, nargs="+", default=list(NUM_ENVS))
    parser.add_argument("--scenarios", nargs="*", default=["navigation", "balance"],
                        help="more VMAS scenarios, MAPPO with their presets")
    parser.add_argument("--mpe-steps", type=int, default=100_000, help="env steps of each mpe2 MAPPO run")
    parser.add_argument("--mpe-rounds", type=int, default=3,
                        help="mpe2 MAPPO runs per backend, each between two random-action slices")
    parser.add_argument("--train", nargs="*", default=[],
                        help="extra overrides for every VMAS training run (e.g. threads=1 on a loaded machine)")
    parser.add_argument("--benchmarl", default=None, metavar="PYTHON",
                        help="the python of a venv with BenchMARL (e.g. /work/bmvenv/bin/python): adds the "
                             "BenchMARL part")
    parser.add_argument("--benchmarl-frames", type=int, default=120_000, help="env steps of each run of that part")
    parser.add_argument("--benchmarl-eval", type=int, default=30_000, help="BenchMARL's evaluation interval")
    parser.add_argument("--long-steps", type=int, default=10_000_000,
                        help="env steps of the long part (the preset's MAPPO on vmas_simple_spread)")
    args = parser.parse_args(argv)
    parts = args.parts or [p for p in PARTS if p != "long" and (p != "benchmarl" or args.benchmarl)]
    if "benchmarl" in parts and not args.benchmarl:
        parser.error("--parts benchmarl needs --benchmarl PYTHON (a venv with BenchMARL installed)")
    seconds = 1.0 if args.quick else args.seconds
    vmas_steps = 20_000 if args.quick else args.steps
    old = json.loads((BENCH_DIR / "speed.json").read_text()) if (BENCH_DIR / "speed.json").exists() else {}
    report = {"meta": {"command": "python scripts/bench.py speed " + " ".join(argv or []), **machine()}}
    for p in PARTS:
        if p not in parts:
            if p in old.get("parts", {}):
                report.setdefault("parts", {})[p] = old["parts"][p]
            continue
        fig = {"vmas": lambda: part_vmas(args, seconds, vmas_steps),
               "others": lambda: part_others(args, seconds, vmas_steps),
               "mpe2": lambda: part_mpe2(args, seconds),
               "benchmarl": lambda: part_benchmarl(args),
               "long": lambda: part_long(args)}[p]()
        fig["meta"]["command"] = report["meta"]["command"]
        report.setdefault("parts", {})[p] = fig
    write("speed", report, render(report))
    return report


def render(report: dict) -> str:
    """benchmarks/speed.md from the report (each part with its own date, load and command)."""
    P = report.get("parts", {})
    md = ["# Training speed: VMAS (torch end to end) and mpe2", "",
          f"`python scripts/bench.py speed` on {os.cpu_count()} CPUs. Each part below says when it ran, the load "
          "and its command; the ratios inside a part were measured side by side in one run.", ""]
    if "vmas" in P:
        v = P["vmas"]
        md += ["## MAPPO on VMAS simple_spread (3 agents, 25 steps, CPU)", "",
               f"`{v['meta']['command']}`, {_load_note(v['meta'])} Training with the command's `--train` overrides "
               "(none: the default threads=0, every core for a VMAS env on the CPU); the random-action rate with one "
               "thread.", "",
               "| num_envs | env steps | train steps/s (whole process) | loop SPS | VMAS random steps/s | ratio "
               "| peak RSS MB | eval return (64 ep.) |", "|---|---|---|---|---|---|---|---|"]
        md += [f"| {E} | {r['env_steps']:,} | {r['steps_per_s']:,.0f} | {r['loop_sps']:,.0f} | "
               f"{r['random_steps_per_s']:,.0f} | {r['ratio_to_random']:.2f} | {r['peak_rss_mb']} | "
               f"{r['eval_return']:.1f} |" for E, r in v["rows"].items()]
        md += ["", "Each run uses the preset `configs/preset/vmas_simple_spread_mappo.yaml` with the num_envs of its "
               "row. Random actions score about -437 on this scale (summed over the 3 agents).", ""]
    if "others" in P:
        o = P["others"]
        md += ["## MAPPO on other VMAS scenarios (their presets, at the preset's num_envs)", "",
               f"`{o['meta']['command']}`, {_load_note(o['meta'])}", "",
               "| scenario | num_envs | env steps | train steps/s | VMAS random steps/s (max_steps 100) | ratio "
               "| peak RSS MB | eval return (greedy) | training return (sampled) | random actions' return |",
               "|---|---|---|---|---|---|---|---|---|---|"]
        md += [f"| {sc} | {r['num_envs']} | {r['env_steps']:,} | {r['steps_per_s']:,.0f} | "
               f"{r['random_steps_per_s']:,.0f} | {r['ratio_to_random']:.2f} | {r['peak_rss_mb']} | "
               f"{r['eval_return']:.2f} | {fmt(r.get('train_return'), '.2f')} | {fmt(r.get('random_return'), '.2f')} |"
               for sc, r in o["rows"].items()]
        md += ["", "Returns are summed over the agents: the greedy (argmax) evaluation of 64 episodes at the end, "
               "the mean of the training episodes (sampled actions) that ended in the last rollout, and VMAS's "
               "uniformly random actions (measured with the random-action rate).", ""]
    if "mpe2" in P:
        m = P["mpe2"]
        md += ["## mpe2 simple_spread (PettingZoo), MAPPO with the default env.backend=auto", "",
               f"`{m['meta']['command']}`, {_load_note(m['meta'])}", ""]
        if "inprocess" not in m:  # a record from before the in-process run and the direct rate were measured
            md += ["| env steps | train steps/s | mpe2 single-process random steps/s | ratio | backend chosen |",
                   "|---|---|---|---|---|",
                   f"| {m['env_steps']:,} | {m['steps_per_s']:,.0f} | {m['random_steps_per_s']:,.0f} | "
                   f"{m['ratio_to_random']:.2f} | {m['backend']} |", ""]
        else:
            md += [f"mpe2's own single-process random-action rate (PettingZoo's `parallel_env`, no marl) was measured "
                   f"in a {m['rounds'] * 2 + 1}-slice sandwich around the training runs: "
                   f"{', '.join(f'{x:,}' for x in m['random_slices'])} env steps/s (median "
                   f"{m['random_steps_per_s']:,.0f}); each run is divided by the mean of the slices just before and "
                   f"after it, and the table shows the median run of {m['rounds']} per backend (all ratios in the "
                   "last column). The same env stepped as marl's copies step it (marl/adapters/direct.py: "
                   "PettingZoo's parallel conversion without its discarded per-agent `last()` and its checking "
                   "wrappers): "
                   f"{m['direct_steps_per_s']:,.0f}.", "",
                   "| env.backend | env steps | train steps/s (whole process) | loop SPS | random around it | "
                   "/ mpe2 random | / direct random | every run's ratio | backend chosen |",
                   "|---|---|---|---|---|---|---|---|---|"]
            for name, r in (("auto (the default)", m), ("inprocess", m["inprocess"])):
                md.append(f"| {name} | {r['env_steps']:,} | {r['steps_per_s']:,.0f} | {fmt(r.get('loop_sps'), ',.0f')}"
                          f" | {r['random_around']:,.0f} | {r['ratio_to_random']:.2f} | {r['ratio_to_direct']:.2f} | "
                          f"{', '.join(f'{x:.2f}' for x in r['ratios'])} | {r['backend']} |")
            md.append("")
        if "vmas" in P:
            rows = P["vmas"]["rows"]
            best = max(rows, key=lambda E: rows[E]["steps_per_s"])
            default = str(P["vmas"].get("preset_num_envs"))  # recorded by the run (older records: not shown)
            same = P["vmas"]["meta"]["date"][:13] == m["meta"]["date"][:13]
            text = (f"VMAS MAPPO / mpe2 MAPPO training rate: {rows[best]['steps_per_s'] / m['steps_per_s']:.1f}x at "
                    f"the best num_envs ({best})")
            if default in rows and default != best:
                text += (f", {rows[default]['steps_per_s'] / m['steps_per_s']:.1f}x at the preset's ({default})")
            md += [text + ("" if same else " (the two parts ran at different times: read it with their loads)")
                   + ".", ""]
    if "benchmarl" in P:
        b = P["benchmarl"]
        bm, mr = b["benchmarl"], b["marl"]
        md += ["## BenchMARL's MAPPO vs marl's on VMAS simple_spread (25 steps, discrete), same env steps", "",
               f"`{b['meta']['command']}`, {_load_note(b['meta'])} BenchMARL ran in its own venv with its MAPPO "
               "defaults except task.max_steps=25, discrete actions and 240 copies (see "
               f"scripts/benches/benchmarl_vs.py); marl with its preset ({mr['num_envs']} copies). Returns are summed "
               "over the 3 agents (BenchMARL's per-agent mean x 3), deterministic evaluation, 64 episodes each.", "",
               "| | env steps | wall s | env steps/s (whole process) | share of time in the update |",
               "|---|---|---|---|---|",
               f"| BenchMARL | {bm['frames']:,} | {bm['wall_s']} | {bm['steps_per_s']:,.0f} | "
               f"{(bm['training_share'] or 0):.0%} |",
               f"| marl | {mr['env_steps']:,} | {mr['wall_s']} | {mr['steps_per_s']:,.0f} | |", "",
               f"marl / BenchMARL env steps/s: {b['marl_over_benchmarl_speed']:.1f}x.", "",
               "Evaluation return at env steps (BenchMARL | marl):", "",
               "| BenchMARL: env steps | return | marl: env steps | return |", "|---|---|---|---|"]
        n = max(len(bm["eval"]), len(mr["eval"]))
        for i in range(n):
            left = bm["eval"][i] if i < len(bm["eval"]) else None
            right = mr["eval"][i] if i < len(mr["eval"]) else None
            md.append(f"| {f'{left[0]:,}' if left else ''} | {f'{left[1]:.1f}' if left else ''} | "
                      f"{f'{right[0]:,}' if right else ''} | {f'{right[1]:.1f}' if right else ''} |")
        md.append("")
    if "long" in P:
        g = P["long"]
        md += [f"## The preset's MAPPO on VMAS simple_spread for {g['env_steps']:,} env steps "
               f"({g['num_envs']} copies)", "",
               f"`{g['meta']['command']}`, {_load_note(g['meta'])} Deterministic evaluation, 64 episodes, summed over "
               "the 3 agents (random actions: about -437).", "",
               f"Whole process: {g['wall_s']:,} s, {g['steps_per_s']:,.0f} env steps/s (loop {g['loop_sps']:,.0f}), "
               f"peak RSS {g['peak_rss_mb']} MB.", "", "| env steps | eval return |", "|---|---|"]
        md += [f"| {s:,} | {r:.1f} |" for s, r in g["eval"]]
        md.append("")
    return "\n".join(md)
