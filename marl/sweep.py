"""Summaries of Hydra multiruns: final return per job, and mean ± std over seeds per setting.

Register :class:`SweepSummary` under ``hydra.callbacks`` and every ``-m`` run ends by writing ``summary.md`` and
``summary.csv`` into the sweep directory. A "setting" is a job's command-line overrides minus ``seed``.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from marl.logging import read_metrics

RETURN_METRICS = ("eval/return", "charts/episodic_return")  # first one present wins


def _key(override: str) -> str:
    """The key of a Hydra override string (``+seed=3`` -> ``seed``)."""
    return override.split("=", 1)[0].lstrip("+~")


def final_return(metrics_csv: Path) -> tuple[float | None, str | None]:
    """Last logged value of the first metric of :data:`RETURN_METRICS` present, and that metric's name."""
    rows = read_metrics(metrics_csv)
    for name in RETURN_METRICS:
        values = [r[name] for r in rows if name in r]
        if values:
            return values[-1], name
    return None, None


def _job(job_dir: Path) -> dict[str, Any]:
    """One job's overrides (minus seed), seed and final return."""
    overrides = [str(o) for o in OmegaConf.load(job_dir / ".hydra" / "overrides.yaml")]
    seed: Any = next((o.split("=", 1)[1] for o in overrides if _key(o) == "seed"), None)
    config_file = job_dir / ".hydra" / "config.yaml"
    if seed is None and config_file.exists():
        seed = OmegaConf.load(config_file).get("seed")
    if isinstance(seed, str) and seed.lstrip("-").isdigit():
        seed = int(seed)
    metrics = job_dir / "metrics.csv"
    value, metric = final_return(metrics) if metrics.exists() else (None, None)
    return {
        "job": job_dir.name,
        "setting": " ".join(sorted(o for o in overrides if _key(o) != "seed")) or "(defaults)",
        "seed": seed,
        "final_return": value,
        "metric": metric,
    }


def summarize(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Group the sweep's jobs by setting.

    Returns one dict per setting, in order of first job: ``setting`` (overrides minus seed, space-separated),
    ``mean``, ``std`` (over seeds, population std: ddof=0) and ``n`` (jobs with a return; a failed job or one with no
    return metric counts in ``jobs`` but not in ``n``; mean and std are None when n=0), and ``jobs``: a list of dicts
    with ``job`` (directory name), ``seed``, ``final_return`` and ``metric`` (which metric gave it).
    """
    sweep_dir = Path(sweep_dir)
    job_dirs = sorted(
        (p.parent.parent for p in sweep_dir.rglob(".hydra/overrides.yaml") if p.parent.parent != sweep_dir),
        key=lambda d: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(d.relative_to(sweep_dir)))],
    )
    settings: dict[str, list[dict[str, Any]]] = {}
    for job_dir in job_dirs:
        job = _job(job_dir)
        settings.setdefault(job["setting"], []).append(job)
    out = []
    for setting, jobs in settings.items():
        values = [j["final_return"] for j in jobs if j["final_return"] is not None]
        mean = sum(values) / len(values) if values else None
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)) if values else None
        out.append({"setting": setting, "mean": mean, "std": std, "n": len(values), "jobs": jobs})
    return out


def _fmt(value: float | None) -> str:
    """Short form for the markdown table."""
    return "" if value is None else f"{value:.4g}"


def _raw(value: float | None) -> str:
    """Full precision for the CSV."""
    return "" if value is None else repr(value)


def write_summary(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Write ``summary.md`` and ``summary.csv`` into ``sweep_dir``; return :func:`summarize`'s result."""
    sweep_dir = Path(sweep_dir)
    summary = summarize(sweep_dir)
    md = ["# Sweep summary", "", f"`{sweep_dir}`", "", "## Settings (mean ± std over seeds)", ""]
    md += ["| setting | final return | n |", "|---|---|---|"]
    md += [f"| {s['setting']} | {_fmt(s['mean'])} ± {_fmt(s['std'])} | {s['n']} |" for s in summary]
    md += ["", "## Jobs", "", "| job | setting | seed | final return | metric |", "|---|---|---|---|---|"]
    for s in summary:
        for j in s["jobs"]:
            value = _fmt(j["final_return"]) or "missing"
            md.append(f"| {j['job']} | {s['setting']} | {j['seed']} | {value} | {j['metric'] or ''} |")
    (sweep_dir / "summary.md").write_text("\n".join(md) + "\n")
    with open(sweep_dir / "summary.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["kind", "setting", "job", "seed", "final_return", "metric", "mean", "std", "n"])
        for s in summary:
            writer.writerow(["setting", s["setting"], "", "", "", "", _raw(s["mean"]), _raw(s["std"]), s["n"]])
        for s in summary:
            for j in s["jobs"]:
                row = [j["job"], j["seed"], _raw(j["final_return"]), j["metric"] or ""]
                writer.writerow(["job", s["setting"], *row])
    return summary


class SweepSummary(Callback):
    """Hydra callback: after a multirun, write ``summary.md`` / ``summary.csv`` into ``hydra.sweep.dir``."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        write_summary(config.hydra.sweep.dir)
