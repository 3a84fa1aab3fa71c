"""Env steps/s of raw PettingZoo vs the same env through ``make_vec_env`` (in-process and subprocess).

One env step = one step of one copy (AEC: one move). Random actions come from numpy in both loops (legal ones where
the env has an action mask), so the comparison measures the adapter, not the action sampler. Writes
``benchmarks/adapters.json`` and ``benchmarks/adapters.md``::

    python scripts/benches/adapters.py            # full run (about 4 minutes)
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
    """One raw PettingZoo env stepped with random (legal) actions in a plain loop; ``with_state``: also call
    ``env.state()`` every step. :meth:`run` continues where the previous slice stopped."""

    def __init__(self, name: str, seed: int = 0, with_state: bool = False):
        self.env = make_env(resolve_env_config(name))
        self.rng = np.random.default_rng(seed)
        self.with_state = with_state
        self.aec = isinstance(self.env, AECEnv)
        self.env.reset(seed=seed)

    def _chunk(self) -> int:
        """100 env steps (AEC: moves; the dead agents' None steps are not counted)."""
        env, rng, steps = self.env, self.rng, 0
        for _ in range(100):
            if self.aec:
                obs, _, term, trunc, _ = env.last()
                if term or trunc:
                    env.step(None)
                else:
                    agent = env.agent_selection
                    env.step(_sample(env.action_space(agent), rng, obs["action_mask"]))
                    steps += 1
            else:
                env.step({a: _sample(env.action_space(a), rng) for a in env.agents})
                steps += 1
            if not env.agents:
                env.reset()
            if self.with_state:
                env.state()
        return steps

    def run(self, seconds: float) -> float:
        """Steps/s over a slice of about ``seconds``."""
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            steps += self._chunk()
        return steps / (time.perf_counter() - start)

    def close(self) -> None:
        self.env.close()


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


def paired(raw: RawLoop, vec: VecLoop, seconds: float, rounds: int, twin: TwinRaw | None = None) -> dict:
    """``rounds`` alternating slices of the raw loop and the adapter loop; the ratio of each round is the adapter's
    rate over the raw rate of the slice just before it, so a drift in the machine's speed (seen here: 40% within
    minutes on this VM) cancels out. Medians over the rounds. With a ``twin``, every round also measures two raw
    loops at once (``ceiling``: their combined rate over the single raw rate)."""
    raws, vecs, pairs = [], [], []
    for _ in range(rounds):
        raws.append(raw.run(seconds))
        vecs.append(vec.run(seconds))
        if twin is not None:
            pairs.append(twin.run_pair(raw, seconds))
    ratios = [v / r for r, v in zip(raws, vecs, strict=True)]
    out = {"rate": float(np.median(vecs)), "raw": float(np.median(raws)), "ratio": float(np.median(ratios)),
           "ratios": [round(x, 3) for x in ratios]}
    if pairs:
        ceil = [p / r for r, p in zip(raws, pairs, strict=True)]
        out |= {"ceiling": float(np.median(ceil)), "ceilings": [round(x, 3) for x in ceil]}
    return out


def uses_state(name: str) -> bool:
    """Whether the env has its own ``env.state()`` (else the adapter's state is the concatenated observations)."""
    env = make_vec_env(resolve_env_config(name), 1)
    env.close()
    return env.spec.has_state


def measure_env(name: str, num_envs: tuple[int, ...], workers: int, seconds: float, rounds: int) -> dict:
    """Every cell of one env's row: in-process and subprocess at each E, and in-process at the largest E with the
    global state (against the raw loop that also calls ``env.state()``, where the env has one)."""
    row: dict[str, Any] = {"inprocess": {}, "subprocess": {}}
    raw, twin = RawLoop(name), TwinRaw(name)
    try:
        for e in num_envs:
            for backend in ("inprocess", "subprocess"):
                vec = VecLoop(name, e, backend, workers)
                try:
                    row[backend][str(e)] = paired(raw, vec, seconds, rounds, twin if backend == "subprocess" else None)
                finally:
                    vec.close()
        row["raw"] = float(np.median([c["raw"] for b in ("inprocess", "subprocess") for c in row[b].values()]))
        row["ceiling"] = float(np.median([x for c in row["subprocess"].values() for x in c["ceilings"]]))
    finally:
        raw.close()
        twin.close()
    has_state = uses_state(name)
    raw = RawLoop(name, with_state=has_state)
    vec = VecLoop(name, num_envs[-1], "inprocess", workers, state=True)
    try:
        row["inprocess_state"] = paired(raw, vec, seconds, rounds)
        row["raw_state"] = row["inprocess_state"]["raw"] if has_state else None
    finally:
        vec.close()
        raw.close()
    return row


def to_markdown(report: dict) -> str:
    meta = report["meta"]
    big = meta["num_envs"][-1]
    head = "| env | raw | " + " | ".join(f"in-process E={e}" for e in meta["num_envs"])
    head += " | " + " | ".join(f"subprocess E={e}" for e in meta["num_envs"])
    head += f" | 2 raw processes | raw + state() | in-process E={big} + state |"
    lines = [
        "# Adapter benchmark",
        "",
        f"Env steps/s (one step of one copy; AEC: one move), random legal actions. Machine: {meta['cpus']} CPU cores, "
        f"{meta['machine']}; load average {meta['load_before']} before and {meta['load_after']} after the run. "
        f"Subprocess backend: {meta['workers']} worker process(es) plus the main process, each stepping an equal "
        "share of the copies.",
        "",
        f"Every cell is measured in {meta['rounds']} rounds that alternate {meta['seconds']} s of the raw loop with "
        f"{meta['seconds']} s of the adapter loop; the cell's ratio is the median over the rounds of (adapter rate / "
        "raw rate of the slice just before it). Pairing cancels the drift of this VM's speed, which moved the same "
        "raw loop by up to 40% within minutes. Rates are medians over the rounds; `raw` is the median of all raw "
        "slices.",
        "",
        "In-process cells: steps/s (overhead vs raw: 1 - ratio). Subprocess cells: steps/s (speedup vs raw: ratio).",
        "`2 raw processes`: two plain raw loops run at once, in the subprocess cells' rounds (median of their combined",
        "rate over the single raw rate): what two processes get from this machine, the subprocess backend's ceiling.",
        "The adapter builds the global state only for learners with a centralized critic (MAPPO, HAPPO); the main",
        "cells are without it, like the raw loop. The last two columns add it: `raw + state()` is the raw loop also",
        "calling `env.state()` every step, and `+ state` the adapter building the state (`env.state()` where the env",
        "has one, as multiwalker does; else the concatenated observations); its overhead is against `raw + state()`",
        "(against the plain raw loop where the env has no `env.state()`).",
        "",
        f"Targets (issue 3): in-process overhead <= 15%; subprocess at E={big} >= 1.6x.",
        "",
        head,
        "|" + "---|" * (5 + 2 * len(meta["num_envs"])),
    ]
    for name, row in report["results"].items():
        cells = [name, f"{row['raw']:,.0f}"]
        cells += [f"{c['rate']:,.0f} ({100 * (1 - c['ratio']):+.0f}%)"
                  for c in (row["inprocess"][str(e)] for e in meta["num_envs"])]
        cells += [f"{c['rate']:,.0f} ({c['ratio']:.2f}x)"
                  for c in (row["subprocess"][str(e)] for e in meta["num_envs"])]
        st = row["inprocess_state"]
        cells.append(f"{row['ceiling']:.2f}x")
        cells += [f"{row['raw_state']:,.0f}" if row["raw_state"] else "- (no env.state())",
                  f"{st['rate']:,.0f} ({100 * (1 - st['ratio']):+.0f}%)"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Command: `{meta['command']}` ({meta['date']})", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny run (0.2 s slices, 1 round, E=1,8) to check the script")
    parser.add_argument("--seconds", type=float, default=0.5, help="length of one measuring slice")
    parser.add_argument("--rounds", type=int, default=6,
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
        print(name, f"raw {row['raw']:,.0f}",
              {f"{b[:3]}{e}": round(row[b][str(e)]["ratio"], 2) for b in ("inprocess", "subprocess") for e in num_envs},
              flush=True)
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
