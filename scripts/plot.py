"""Learning curves from run or sweep directories: mean ± std across seeds, one line per setting.

    python scripts/plot.py multirun/2026-11-21/10-00-00 runs/ppo_spread_seed0 --metric eval/return --out curves.png

x is ``global_step`` (env steps). Runs are grouped by their config (``config.yaml`` or ``.hydra/config.yaml``) minus
the keys in :data:`IGNORED_KEYS` (seed and bookkeeping); a directory without ``metrics.csv`` whose subdirectories hold
runs (a Hydra sweep dir) expands to them. Seeds of one setting are interpolated onto the steps they all cover.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from marl.errors import MarlError
from marl.logging import read_metrics

IGNORED_KEYS = ("seed", "run_dir", "resume", "progress", "debug", "logger", "hydra", "eval_every", "eval_episodes",
                "checkpoint_every", "threads")  # none of these changes the learning
DEFAULT_METRICS = ("eval/return", "charts/episodic_return")  # without --metric: the first every run has


@dataclass
class Run:
    """One run directory: its metrics rows and flattened config (``{"algo.lr": 0.001, ...}``, empty if none)."""

    path: Path
    rows: list[dict[str, float]]
    config: dict[str, Any]

    def metrics(self) -> list[str]:
        return sorted({k for r in self.rows for k in r} - {"global_step"})


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node if not isinstance(node, list) else str(node)}


def _load_config(run_dir: Path) -> dict[str, Any]:
    for name in ("config.yaml", ".hydra/config.yaml"):
        if (run_dir / name).exists():
            cfg = OmegaConf.to_container(OmegaConf.load(run_dir / name), resolve=False)
            return _flatten({k: v for k, v in cfg.items() if k not in IGNORED_KEYS})  # type: ignore[union-attr]
    return {}


def find_runs(dirs: list[str | Path]) -> list[Run]:
    """Load every run in ``dirs`` (sweep dirs expand to their job dirs); raise MarlError for a dir without runs."""
    runs: dict[Path, Run] = {}
    for d in map(Path, dirs):
        if (d / "metrics.csv").exists():
            found = [d]
        else:
            found = sorted(p.parent for p in d.glob("*/metrics.csv")) if d.is_dir() else []
            if not found:
                problem = "does not exist" if not d.exists() else "has no metrics.csv (and no job dirs holding one)"
                raise MarlError(f"{d} {problem}", "pass run directories or Hydra sweep directories")
        for run_dir in found:
            key = run_dir.resolve()
            if key not in runs:
                runs[key] = Run(run_dir, read_metrics(run_dir / "metrics.csv"), _load_config(run_dir))
    return list(runs.values())


def choose_metric(runs: list[Run], metric: str | None) -> str:
    """``metric`` (default: the first of :data:`DEFAULT_METRICS` every run has) if every run logged it.

    Otherwise raise MarlError naming a run without it and listing that run's metrics.
    """
    if metric is None:
        metric = next((m for m in DEFAULT_METRICS if all(m in r.metrics() for r in runs)), DEFAULT_METRICS[-1])
    bad = next((r for r in runs if metric not in r.metrics()), None)
    if bad is not None:
        available = ", ".join(bad.metrics()) or "none"
        raise MarlError(f"{bad.path / 'metrics.csv'} has no metric '{metric}'; available: {available}")
    return metric


def group_runs(runs: list[Run]) -> dict[str, list[Run]]:
    """Runs that share a config (minus seed) under one label: env.name algo.name, then the keys that differ between
    settings of that same env and algorithm. Keys some runs lack (written by another marl version) do not split
    settings, nor does ``total_steps`` unless the learning rate anneals over it."""
    common = set.intersection(*(set(r.config) for r in runs)) if all(r.config for r in runs) else set()

    def setting(cfg: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in cfg.items() if k in common}
        if not out.get("algo.anneal_lr"):
            out.pop("total_steps", None)
        return out

    groups: dict[str, list[Run]] = {}
    configs: dict[str, dict[str, Any]] = {}
    for run in runs:
        cfg = setting(run.config)
        key = repr(sorted(cfg.items(), key=lambda kv: kv[0])) if cfg else str(run.path)
        groups.setdefault(key, []).append(run)
        configs[key] = cfg

    def head(cfg: dict[str, Any]) -> str:
        return " ".join(str(cfg[k]) for k in ("env.name", "algo.name") if k in cfg)

    labelled: dict[str, list[Run]] = {}
    for key, members in groups.items():
        cfg = configs[key]
        peers = [c for c in configs.values() if head(c) == head(cfg)]
        varying = sorted(k for k in cfg if k not in ("env.name", "algo.name")
                         and len({repr(c.get(k)) for c in peers}) > 1)
        diff = ", ".join(f"{k}={cfg[k]}" for k in varying)
        name = head(cfg) or members[0].path.name
        label = f"{name} ({diff})" if diff else name
        if label in labelled:
            label += f" #{len(labelled) + 1}"
        labelled[label] = members
    return labelled


def curve(run: Run, metric: str, smooth: int) -> tuple[np.ndarray, np.ndarray]:
    """Steps and values of ``metric`` in one run, with a trailing moving average over ``smooth`` points."""
    pts = sorted((r["global_step"], r[metric]) for r in run.rows if metric in r and "global_step" in r)
    x, y = (np.array(v, dtype=float) for v in zip(*pts, strict=True))
    if smooth > 1:
        c = np.cumsum(np.insert(y, 0, 0.0))
        lo = np.maximum(np.arange(1, len(y) + 1) - smooth, 0)
        y = (c[1:] - c[lo]) / (np.arange(1, len(y) + 1) - lo)
    return x, y


def aggregate(curves: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and std (ddof=0) across seeds on the union of their steps, restricted to the range all of them cover."""
    lo = max(x[0] for x, _ in curves)
    hi = min(x[-1] for x, _ in curves)
    grid = np.unique(np.concatenate([x for x, _ in curves]))
    grid = grid[(grid >= lo) & (grid <= hi)]
    ys = np.stack([np.interp(grid, x, y) for x, y in curves])
    return grid, ys.mean(axis=0), ys.std(axis=0)


def plot(dirs: list[str | Path], metric: str | None = None, out: str | Path = "curves.png", smooth: int = 1) -> Path:
    """Draw one mean ± std line per setting found in ``dirs`` and save it to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = find_runs(dirs)
    metric = choose_metric(runs, metric)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, members in group_runs(runs).items():
        x, mean, std = aggregate([curve(r, metric, smooth) for r in members])
        (line,) = ax.plot(x, mean, label=f"{label} [n={len(members)}]", marker="o" if len(x) == 1 else None)
        ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("env steps (global_step)")
    ax.set_ylabel(metric)
    ax.set_title(metric + (f" (moving average over {smooth} points)" if smooth > 1 else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="lower right")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit code (2 for a user error, with a one-line message on stderr)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="+", help="run directories (holding metrics.csv) or Hydra sweep directories")
    parser.add_argument("--metric", help="metric to plot (default: eval/return if logged, else charts/episodic_return)")
    parser.add_argument("--out", default="curves.png", help="output image (default: curves.png)")
    parser.add_argument("--smooth", type=int, default=1, help="moving average over K logged points (default: 1, off)")
    args = parser.parse_args(argv)
    if args.smooth < 1:
        parser.error("--smooth must be >= 1")
    try:
        out = plot(args.dirs, args.metric, args.out, args.smooth)
    except MarlError as e:
        print(f"plot.py: error: {e.problem}" + (f" ({e.fix})" if e.fix else ""), file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
