"""Env steps/s of raw PettingZoo vs the same env through ``make_vec_env`` (in-process and subprocess).

One env step = one step of one copy (AEC: one move). Random actions come from numpy in both loops (legal ones where
the env has an action mask), so the comparison measures the adapter, not the action sampler. Writes
``benchmarks/adapters.json`` and ``benchmarks/adapters.md``::

    python scripts/benches/adapters.py            # full run (about 5 minutes)
    python scripts/benches/adapters.py --quick    # tiny run, to check that it works
"""

from __future__ import annotations

import argparse
import json
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


def raw_rate(name: str, seconds: float, seed: int = 0, with_state: bool = False) -> float:
    """Steps/s of one raw env in a plain single-process loop (``with_state``: also call env.state() every step)."""
    env = make_env(resolve_env_config(name))
    rng = np.random.default_rng(seed)
    steps = 0
    if isinstance(env, AECEnv):
        env.reset(seed=seed)
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            for _ in range(100):
                obs, _, term, trunc, _ = env.last()
                if term or trunc:
                    env.step(None)
                else:
                    agent = env.agent_selection
                    env.step(_sample(env.action_space(agent), rng, obs["action_mask"]))
                    steps += 1
                if not env.agents:
                    env.reset()
                if with_state:
                    env.state()
    else:
        env.reset(seed=seed)
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            for _ in range(100):
                env.step({a: _sample(env.action_space(a), rng) for a in env.agents})
                steps += 1
                if not env.agents:
                    env.reset()
                if with_state:
                    env.state()
    rate = steps / (time.perf_counter() - start)
    env.close()
    return rate


def uses_state(name: str) -> bool:
    """Whether the adapter calls env.state() every step for this env (it does when the state is not the obs)."""
    env = make_vec_env(resolve_env_config(name), 1)
    env.close()
    return env.spec.has_state


def vec_rate(name: str, num_envs: int, backend: str, seconds: float, workers: int, seed: int = 0,
             state: bool = False) -> float:
    """Env steps/s (copies x batch steps) through make_vec_env; ``state``: also build the global state every step
    (what MAPPO / HAPPO ask for; the other learners, like this loop, do not read it)."""
    cfg = {**resolve_env_config(name), "backend": backend, "workers": workers}
    env = make_vec_env(cfg, num_envs, seed=seed, state=state)
    rng = np.random.default_rng(seed)
    out = env.reset()
    for _ in range(5):  # warm-up
        out = env.step(random_actions(env.spec, out, rng))
    batches = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        out = env.step(random_actions(env.spec, out, rng))
        batches += 1
    rate = batches * num_envs / (time.perf_counter() - start)
    env.close()
    return rate


def to_markdown(report: dict) -> str:
    meta = report["meta"]
    head = "| env | raw | " + " | ".join(f"in-process E={e}" for e in meta["num_envs"])
    head += " | " + " | ".join(f"subprocess E={e}" for e in meta["num_envs"])
    head += f" | raw + state() | in-process E={meta['num_envs'][-1]} + state |"
    lines = [
        "# Adapter benchmark",
        "",
        f"Env steps/s (one step of one copy; AEC: one move), random actions. Machine: {meta['cpus']} CPU cores, "
        f"{meta['machine']}; load average {meta['load_before']} before and {meta['load_after']} after the run "
        f"(other processes shared the cores). Best of {meta['repeats']} interleaved measurements of "
        f"{meta['seconds']} s each; subprocess backend: {meta['workers']} worker process(es) plus the main process, "
        "each stepping an equal share of the copies.",
        "",
        "In-process cells: steps/s (overhead vs raw: 1 - rate/raw). Subprocess cells: steps/s (speedup vs raw).",
        "The adapter builds the global state only for learners with a centralized critic (MAPPO, HAPPO); the main",
        "cells are without it, like the raw loop. The last two columns add it: `raw + state()` is the raw loop also",
        "calling `env.state()` every step, and `+ state` the adapter building the state (`env.state()` where the env",
        "has one, as multiwalker does; else the concatenated observations); its overhead is against `raw + state()`.",
        "",
        head,
        "|" + "---|" * (4 + 2 * len(meta["num_envs"])),
    ]
    for name, row in report["results"].items():
        raw = row["raw"]
        cells = [name, f"{raw:,.0f}"]
        cells += [f"{row['inprocess'][str(e)]:,.0f} ({100 * (1 - row['inprocess'][str(e)] / raw):+.0f}%)"
                  for e in meta["num_envs"]]
        cells += [f"{row['subprocess'][str(e)]:,.0f} ({row['subprocess'][str(e)] / raw:.2f}x)"
                  for e in meta["num_envs"]]
        raw_s = row["raw_state"] or raw
        cells += [f"{row['raw_state']:,.0f}" if row["raw_state"] else "- (no env.state())",
                  f"{row['inprocess_state']:,.0f} ({100 * (1 - row['inprocess_state'] / raw_s):+.0f}%)"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Command: `{meta['command']}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny run (0.3 s per cell, E=1,8) to check the script")
    parser.add_argument("--seconds", type=float, default=1.0, help="measuring time per cell")
    parser.add_argument("--repeats", type=int, default=5,
                        help="measure every cell this many times (interleaved) and keep the best: other processes "
                             "sharing the cores only ever slow a measurement down")
    parser.add_argument("--envs", nargs="+", default=list(ENVS), help="env YAML names")
    parser.add_argument("--workers", type=int, default=0,
                        help="subprocess worker processes besides the main process (0: the default, cores - 1)")
    parser.add_argument("--out", type=Path, default=OUT, help="directory for adapters.json / adapters.md")
    args = parser.parse_args(argv)
    seconds = 0.3 if args.quick else args.seconds
    num_envs = (1, 8) if args.quick else NUM_ENVS
    workers = args.workers or max(1, cpu_count() - 1)
    load_before = round(os.getloadavg()[0], 2)
    results: dict[str, dict] = {}
    repeats = 1 if args.quick else args.repeats
    for name in args.envs:
        with_state = uses_state(name)
        row: dict[str, Any] = {"raw": 0.0, "raw_state": None, "inprocess": {}, "subprocess": {},
                               "inprocess_state": 0.0}
        for _ in range(repeats):
            row["raw"] = max(row["raw"], raw_rate(name, seconds))
            if with_state:
                row["raw_state"] = max(row["raw_state"] or 0.0, raw_rate(name, seconds, with_state=True))
            for e in num_envs:
                for backend in ("inprocess", "subprocess"):
                    rate = vec_rate(name, e, backend, seconds, workers)
                    row[backend][str(e)] = max(row[backend].get(str(e), 0.0), rate)
            rate = vec_rate(name, num_envs[-1], "inprocess", seconds, workers, state=True)
            row["inprocess_state"] = max(row["inprocess_state"], rate)
        results[name] = row
        print(name, json.dumps(row))
    report = {
        "meta": {
            "command": "python scripts/benches/adapters.py" + (" --quick" if args.quick else ""),
            "seconds": seconds,
            "repeats": repeats,
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
