"""Env steps/s of raw PettingZoo vs the same env through ``make_vec_env`` (in-process and subprocess).

One env step = one step of one copy (AEC: one move). Random actions come from numpy in both loops (legal ones where
the env has an action mask), so the comparison measures the adapter, not the action sampler. Writes
``benchmarks/adapters.json`` and ``benchmarks/adapters.md``::

    python scripts/benches/adapters.py            # full run (about 6 minutes)
    python scripts/benches/adapters.py --quick    # tiny run, to check that it works
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo import AECEnv

from marl.adapters import make_env, make_vec_env, resolve_env_config
from marl.adapters.base import random_actions
from marl.config import cpu_count

ENVS = ("simple_spread", "simple_tag", "connect_four", "multiwalker")
NUM_ENVS = (1, 8, 32)
OUT = Path(__file__).resolve().parents[2] / "benchmarks"


def _sample(space: spaces.Space, rng: np.random.Generator, mask: np.ndarray | None = None) -> Any:
    """One random (legal) action for one agent of the raw env."""
    if mask is not None:
        return int(rng.choice(np.flatnonzero(mask)))
    if isinstance(space, spaces.Discrete):
        return int(rng.integers(space.n))
    return rng.uniform(space.low, space.high).astype(space.dtype)


class RawLoop:
    """``copies`` raw PettingZoo envs stepped round-robin with random (legal) actions in a plain loop, one step of one
    copy at a time (the same env work as E adapter copies, without the adapter); ``with_state``: also call
    ``env.state()`` every step; ``direct``: a parallel env made from an AEC env stepped as marl's copies step it
    (:mod:`marl.adapters.direct`). :meth:`run` continues where the previous slice stopped."""

    def __init__(self, name: str, seed: int = 0, with_state: bool = False, copies: int = 1, direct: bool = False):
        from marl.adapters.direct import direct as direct_env

        self.envs = [make_env(resolve_env_config(name)) for _ in range(copies)]
        if direct:
            self.envs = [direct_env(env) for env in self.envs]
        self.rng = np.random.default_rng(seed)
        self.with_state = with_state
        self.aec = isinstance(self.envs[0], AECEnv)
        for i, env in enumerate(self.envs):
            env.reset(seed=seed + i)

    def _step(self, env: Any) -> int:
        """One step of one copy (AEC: one move; a dead agent's None step is not counted)."""
        rng, steps = self.rng, 1
        if self.aec:
            obs, _, term, trunc, _ = env.last()
            if term or trunc:
                env.step(None)
                steps = 0
            else:
                env.step(_sample(env.action_space(env.agent_selection), rng, obs["action_mask"]))
        else:
            env.step({a: _sample(env.action_space(a), rng) for a in env.agents})
        if not env.agents:
            env.reset()
        if self.with_state:
            env.state()
        return steps

    def run(self, seconds: float) -> float:
        """Steps/s over a slice of about ``seconds``."""
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            for _ in range(max(1, 100 // len(self.envs))):
                for env in self.envs:
                    steps += self._step(env)
        return steps / (time.perf_counter() - start)

    def close(self) -> None:
        for env in self.envs:
            env.close()


class VecLoop:
    """``make_vec_env`` (E copies, a backend) stepped with random legal actions; ``state``: also build the global
    state every step (what MAPPO / HAPPO ask for; the other learners, like the raw loop, do not read it)."""

    def __init__(self, name: str, num_envs: int, backend: str, workers: int, seed: int = 0, state: bool = False):
        cfg = {**resolve_env_config(name), "backend": backend, "workers": workers}
        self.env = make_vec_env(cfg, num_envs, seed=seed, state=state)
        self.rng = np.random.default_rng(seed)
        self.num_envs = num_envs
        self.out = self.env.reset()
        for _ in range(5):  # warm-up
            self._step()

    def _step(self) -> None:
        self.out = self.env.step(random_actions(self.env.spec, self.out, self.rng))

    def run(self, seconds: float) -> float:
        """Env steps/s (copies x batch steps) over a slice of about ``seconds``."""
        batches, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            self._step()
            batches += 1
        return batches * self.num_envs / (time.perf_counter() - start)

    def close(self) -> None:
        self.env.close()


class TwinRaw:
    """A second raw loop of the same env in another process, run on request beside this process's own: the pair's
    combined rate over one process's rate is what two processes of plain PettingZoo get from this machine at that
    moment (the ceiling for the subprocess backend; on this VM the two cores do not always run at the same speed)."""

    def __init__(self, name: str):
        ctx = mp.get_context("forkserver")
        self.inq, self.outq = ctx.Queue(), ctx.Queue()
        self.proc = ctx.Process(target=_twin, args=(name, self.inq, self.outq), daemon=True)
        self.proc.start()

    def run_pair(self, raw: RawLoop, seconds: float) -> float:
        """Combined steps/s of ``raw`` and the twin over one slice."""
        self.inq.put(seconds)
        mine = raw.run(seconds)
        return mine + self.outq.get(timeout=60)

    def close(self) -> None:
        self.inq.put(None)
        self.proc.join(timeout=10)


def _twin(name: str, inq: Any, outq: Any) -> None:
    raw = RawLoop(name, seed=1)
    while (seconds := inq.get()) is not None:
        outq.put(raw.run(seconds))
    raw.close()


def sandwich_ratios(rates: list[float], raw: list[float]) -> list[float]:
    """Per-round ratios of ``rates`` (one slice per round) to the raw rate around each slice: ``raw`` has one slice
    more than ``rates`` (``raw[i]`` just before slice ``i``, ``raw[i + 1]`` just after it), and each slice is divided
    by the mean of its two neighbours, so a drift of the machine's speed during the round cancels out to first order
    instead of biasing the ratio by the drift over one slice."""
    if len(raw) != len(rates) + 1:
        raise ValueError(f"need one raw slice more than adapter slices, got {len(raw)} and {len(rates)}")
    return [r / (0.5 * (raw[i] + raw[i + 1])) for i, r in enumerate(rates)]


def paired(raws: dict[str, RawLoop], vec: VecLoop, seconds: float, rounds: int, twin: TwinRaw | None = None) -> dict:
    """``rounds`` rounds of one slice of each raw loop (``raws``: e.g. one copy and E copies) followed by one slice of
    the adapter loop, and a closing slice of each raw loop, so every adapter slice sits between two raw slices. The
    ratio of a round is the adapter's rate over the mean raw rate just before and just after it (see
    :func:`sandwich_ratios`: this VM's speed drifts, seen here by 40% within minutes); medians over the rounds. With a
    ``twin``, every round also measures two one-copy raw loops at once (``ceiling``: their combined rate over one's,
    sandwiched the same way)."""
    rates: dict[str, list[float]] = {k: [] for k in raws}
    vecs, pairs = [], []
    for _ in range(rounds):
        for k, raw in raws.items():
            rates[k].append(raw.run(seconds))
        vecs.append(vec.run(seconds))
        if twin is not None:
            pairs.append(twin.run_pair(raws["1"], seconds))
    for k, raw in raws.items():
        rates[k].append(raw.run(seconds))
    out: dict[str, Any] = {"rate": float(np.median(vecs)), "raw": {}, "ratio": {}, "ratios": {}}
    for k, rs in rates.items():
        ratios = sandwich_ratios(vecs, rs)
        out["raw"][k] = float(np.median(rs))
        out["ratio"][k] = float(np.median(ratios))
        out["ratios"][k] = [round(x, 3) for x in ratios]
    if pairs:
        ceil = sandwich_ratios(pairs, rates["1"])
        out |= {"ceiling": float(np.median(ceil)), "ceilings": [round(x, 3) for x in ceil]}
    return out


def uses_state(name: str) -> bool:
    """Whether the env has its own ``env.state()`` (else the adapter's state is the concatenated observations)."""
    env = make_vec_env(resolve_env_config(name), 1)
    env.close()
    return env.spec.has_state


def measure_env(name: str, num_envs: tuple[int, ...], workers: int, seconds: float, rounds: int) -> dict:
    """Every cell of one env's row. In-process and subprocess at each E, paired with the raw loop over one copy and
    over E copies (the same env work without the adapter); in-process at the largest E with the global state, paired
    with the raw loop over E copies that also calls ``env.state()`` where the env has one."""
    row: dict[str, Any] = {"inprocess": {}, "subprocess": {}, "raw": {}}
    one, twin = RawLoop(name), TwinRaw(name)
    try:
        for e in num_envs:
            raws = {"1": one} if e == 1 else {"1": one, str(e): RawLoop(name, copies=e)}
            try:
                for backend in ("inprocess", "subprocess"):
                    vec = VecLoop(name, e, backend, workers)
                    try:
                        pair = twin if backend == "subprocess" else None
                        row[backend][str(e)] = paired(raws, vec, seconds, rounds, pair)
                    finally:
                        vec.close()
            finally:
                if e != 1:
                    raws[str(e)].close()
            cells = [row[b][str(e)] for b in ("inprocess", "subprocess")]
            row["raw"][str(e)] = float(np.median([c["raw"][str(e)] for c in cells]))
            if e != 1:  # E raw copies in one process vs one copy: the env's own cost of many copies (memory, caches)
                row.setdefault("raw_copies_ratio", {})[str(e)] = float(np.median(
                    [c["raw"][str(e)] / c["raw"]["1"] for c in cells]))
        row["ceiling"] = float(np.median([x for c in row["subprocess"].values() for x in c["ceilings"]]))
    finally:
        one.close()
        twin.close()
    big = num_envs[-1]
    has_state = uses_state(name)
    raw = RawLoop(name, with_state=has_state, copies=big)
    vec = VecLoop(name, big, "inprocess", workers, state=True)
    try:
        row["inprocess_state"] = paired({str(big): raw}, vec, seconds, rounds)
        row["raw_state"] = row["inprocess_state"]["raw"][str(big)] if has_state else None
    finally:
        vec.close()
        raw.close()
    return row


def to_markdown(report: dict) -> str:
    meta = report["meta"]
    ns = meta["num_envs"]
    big = ns[-1]
    head = "| env | " + " | ".join(f"raw E={e}" for e in ns) + " | "
    head += " | ".join(f"in-process E={e}" for e in ns) + " | " + " | ".join(f"subprocess E={e}" for e in ns)
    head += f" | 2 raw processes | raw E={big} + state() | in-process E={big} + state |"
    lines = [
        "# Adapter benchmark",
        "",
        f"Env steps/s (one step of one copy; AEC: one move), random legal actions. Machine: {meta['cpus']} CPU cores, "
        f"{meta['machine']}; load average {meta['load_before']} before and {meta['load_after']} after the run. "
        f"Subprocess backend: {meta['workers']} worker process(es) plus the main process, each stepping an equal "
        "share of the copies.",
        "",
        "- `raw E=k`: k raw PettingZoo envs stepped round-robin in one plain loop, one step of one copy at a time: the",
        "  env work of k adapter copies without the adapter. In parentheses its rate relative to one copy: many copies",
        "  in one process cost some envs speed on their own (memory and caches; multiwalker's Box2D worlds).",
        "- In-process cells: steps/s (adapter overhead: 1 - rate / raw rate at the same E). A parallel env made from",
        "  an AEC env (MPE, SISL, Butterfly) is stepped by the adapter on its AEC env directly",
        "  (marl/adapters/direct.py: the same outputs without PettingZoo's discarded per-agent `last()` and its",
        "  checking wrappers), so there the adapter is faster than the raw loop, which steps PettingZoo's",
        "  `parallel_env` as it comes, and the overhead is negative.",
        "- Subprocess cells: steps/s (speedup over the single-process raw loop at the same E / over one raw copy).",
        "- `2 raw processes`: two one-copy raw loops run at once, in the subprocess cells' rounds: their combined rate",
        "  over one loop's. What two processes get from this machine, the ceiling of any 2-process speedup; the two",
        "  cores of this VM do not always run at the same speed.",
        "- The adapter builds the global state only for learners with a centralized critic (MAPPO, HAPPO); the main",
        "  cells are without it, like the raw loops. The last two columns add it: the raw loop also calling",
        "  `env.state()` every step (where the env has one, as multiwalker does; else the plain raw loop), and the",
        "  adapter building the state (`env.state()`, else the concatenated observations).",
        "",
        f"Every cell is measured in {meta['rounds']} rounds; a round runs {meta['seconds']} s of each raw loop it is "
        f"compared with, then {meta['seconds']} s of the adapter loop, and a closing slice of each raw loop follows "
        "the last round. The ratio of a round divides the adapter's rate by the mean raw rate of the slices just "
        "before and just after it, so the drift of this VM's speed (up to 40% within minutes for the same loop) "
        "cancels out; ratios and rates are medians over the rounds (the per-round speedups of the subprocess "
        f"backend at E={big} are listed below the table).",
        "",
        f"Targets (issue 3): in-process overhead <= 15%; subprocess at E={big} >= 1.6x the single-process raw rate.",
        "",
        head,
        "|" + "---|" * (4 + 3 * len(ns)),
    ]
    for name, row in report["results"].items():
        cells = [name, f"{row['raw']['1']:,.0f}"]
        cells += [f"{row['raw'][str(e)]:,.0f} ({row['raw_copies_ratio'][str(e)]:.2f}x)" for e in ns[1:]]
        for e in ns:
            c = row["inprocess"][str(e)]
            cells.append(f"{c['rate']:,.0f} ({100 * (1 - c['ratio'][str(e)]):+.0f}%)")
        for e in ns:
            c = row["subprocess"][str(e)]
            vs = f"{c['ratio'][str(e)]:.2f}x" if e == 1 else f"{c['ratio'][str(e)]:.2f}x / {c['ratio']['1']:.2f}x"
            cells.append(f"{c['rate']:,.0f} ({vs})")
        cells.append(f"{row['ceiling']:.2f}x")
        st = row["inprocess_state"]
        cells += [f"{row['raw_state']:,.0f}" if row["raw_state"] else "- (no env.state())",
                  f"{st['rate']:,.0f} ({100 * (1 - st['ratio'][str(big)]):+.0f}%)"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Subprocess speedup at E={big} over the single-process raw loop at E={big}, round by round "
              "(2 raw processes in brackets):", ""]
    for name, row in report["results"].items():
        c = row["subprocess"][str(big)]
        rounds = ", ".join(f"{r:.2f} [{p:.2f}]" for r, p in zip(c["ratios"][str(big)], c["ceilings"], strict=True))
        lines.append(f"- {name}: {rounds}")
    lines += ["", f"Command: `{meta['command']}` ({meta['date']})", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny run (0.2 s slices, 1 round, E=1,8) to check the script")
    parser.add_argument("--seconds", type=float, default=0.4, help="length of one measuring slice")
    parser.add_argument("--rounds", type=int, default=10,
                        help="raw / adapter slice pairs per cell (the cell reports medians over them)")
    parser.add_argument("--envs", nargs="+", default=list(ENVS), help="env YAML names")
    parser.add_argument("--workers", type=int, default=0,
                        help="subprocess worker processes besides the main process (0: the default, cores - 1)")
    parser.add_argument("--out", type=Path, default=OUT, help="directory for adapters.json / adapters.md")
    args = parser.parse_args(argv)
    seconds = 0.2 if args.quick else args.seconds
    rounds = 1 if args.quick else args.rounds
    num_envs = (1, 8) if args.quick else NUM_ENVS
    workers = args.workers or max(1, cpu_count() - 1)
    load_before = round(os.getloadavg()[0], 2)
    results: dict[str, dict] = {}
    for name in args.envs:
        results[name] = measure_env(name, num_envs, workers, seconds, rounds)
        row = results[name]
        print(name, f"raw {row['raw']['1']:,.0f}",
              {f"{b[:3]}{e}": round(row[b][str(e)]["ratio"][str(e)], 2) for b in ("inprocess", "subprocess")
               for e in num_envs}, flush=True)
    report = {
        "meta": {
            "command": "python scripts/benches/adapters.py" + (" --quick" if args.quick else ""),
            "seconds": seconds,
            "rounds": rounds,
            "num_envs": list(num_envs),
            "workers": workers,
            "cpus": cpu_count(),
            "machine": platform.processor() or platform.machine(),
            "load_before": load_before,
            "load_after": round(os.getloadavg()[0], 2),
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "adapters.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "adapters.md").write_text(to_markdown(report))
    return report


if __name__ == "__main__":
    main()
