"""Summaries of Hydra multiruns: final return per job, and per setting the mean over seeds, the sample std and a
95% confidence interval of the mean (Student t).

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
# two-sided 95% quantiles t_{0.975, df} of Student's t for df = 1..30 (beyond: a Cornish-Fisher expansion)
T95 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010, 2.1788, 2.1604,
       2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555,
       2.0518, 2.0484, 2.0452, 2.0423)
Z975 = 1.959964


def t95(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df >= 1`` degrees of freedom (4 digits)."""
    if df <= len(T95):
        return T95[df - 1]
    z = Z975
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def mean_std_ci(values: list[float]) -> tuple[float | None, float | None, tuple[float, float] | None]:
    """Mean, sample std (ddof=1) and the 95% interval of the mean, ``mean ± t95(n-1) * std / sqrt(n)``; the std and
    interval are None for n < 2, all three for n = 0."""
    n = len(values)
    if n == 0:
        return None, None, None
    mean = sum(values) / n
    if n == 1:
        return mean, None, None
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t95(n - 1) * std / math.sqrt(n)
    return mean, std, (mean - half, mean + half)


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
    ``mean``, ``std`` (over seeds, sample std: ddof=1), ``ci95`` (``(low, high)``, the Student-t 95% interval of the
    mean) and ``n`` (jobs with a return; a failed job or one with no return metric counts in ``jobs`` but not in
    ``n``; std and ci95 are None when n < 2, the mean too when n = 0), and ``jobs``: a list of dicts with ``job``
    (directory name), ``seed``, ``final_return`` and ``metric`` (which metric gave it).
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
        mean, std, ci = mean_std_ci(values)
        out.append({"setting": setting, "mean": mean, "std": std, "ci95": ci, "n": len(values), "jobs": jobs})
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
    md = ["# Sweep summary", "", f"`{sweep_dir}`", "", "## Settings (mean ± sample std over seeds; 95% CI of the mean, "
          "Student t with n-1 dof)", ""]
    md += ["| setting | final return | 95% CI | n |", "|---|---|---|---|"]
    for s in summary:
        spread = f" ± {_fmt(s['std'])}" if s["std"] is not None else ""
        ci = f"[{_fmt(s['ci95'][0])}, {_fmt(s['ci95'][1])}]" if s["ci95"] is not None else "none (n < 2)"
        md.append(f"| {s['setting']} | {_fmt(s['mean']) or 'missing'}{spread} | {ci} | {s['n']} |")
    md += ["", "## Jobs", "", "| job | setting | seed | final return | metric |", "|---|---|---|---|---|"]
    for s in summary:
        for j in s["jobs"]:
            value = _fmt(j["final_return"]) or "missing"
            md.append(f"| {j['job']} | {s['setting']} | {j['seed']} | {value} | {j['metric'] or ''} |")
    (sweep_dir / "summary.md").write_text("\n".join(md) + "\n")
    with open(sweep_dir / "summary.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["kind", "setting", "job", "seed", "final_return", "metric", "mean", "std", "n", "ci95_low",
                         "ci95_high"])
        for s in summary:
            low, high = s["ci95"] or (None, None)
            writer.writerow(["setting", s["setting"], "", "", "", "", _raw(s["mean"]), _raw(s["std"]), s["n"],
                             _raw(low), _raw(high)])
        for s in summary:
            for j in s["jobs"]:
                row = [j["job"], j["seed"], _raw(j["final_return"]), j["metric"] or ""]
                writer.writerow(["job", s["setting"], *row])
    return summary


class SweepSummary(Callback):
    """Hydra callback: after a multirun, write ``summary.md`` / ``summary.csv`` into ``hydra.sweep.dir``."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        write_summary(config.hydra.sweep.dir)
