"""Result statistics: wins / draws / losses with Wilson 95% intervals, returns with normal 95% intervals."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from marl.adapters.base import EpisodeStat
from marl.matches.play import MatchResult

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k / n`` (``(0, 1)`` when ``n == 0``)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def mean_ci(x: np.ndarray | list[float], z: float = Z95) -> tuple[float, float]:
    """Mean and the half-width of its normal 95% interval (``z * std / sqrt(n)``, sample std; 0 for n < 2)."""
    x = np.asarray(x, dtype=np.float64)
    if x.size < 2:
        return float(x.mean()) if x.size else float("nan"), 0.0
    return float(x.mean()), float(z * x.std(ddof=1) / math.sqrt(x.size))


def _wdl(results: list[MatchResult]) -> dict[str, Any]:
    n = len(results)
    out: dict[str, Any] = {"n": n}
    for key in ("win", "draw", "loss"):
        k = sum(r.outcome == key for r in results)
        lo, hi = wilson(k, n)
        out[key] = {"count": k, "rate": k / n if n else float("nan"), "ci": [lo, hi]}
    mean, half = mean_ci([r.payoff for r in results])
    out["payoff"] = {"mean": mean, "ci": half}
    out["length"] = float(np.mean([r.length for r in results])) if n else float("nan")
    return out


def duel_summary(results: list[MatchResult], agents: tuple[str, ...]) -> dict[str, Any]:
    """``{"all": stats, "seats": {agent: stats}}``; stats = n, win / draw / loss {count, rate, ci [lo, hi]},
    payoff {mean, ci half-width}, mean length (moves)."""
    return {"all": _wdl(results), "seats": {a: _wdl([r for r in results if r.seat == a]) for a in agents}}


def team_summary(episodes: list[EpisodeStat]) -> dict[str, Any]:
    """Team return (sum over agents) and each agent's return: mean and 95% CI half-width; episode count, length."""
    mean, half = mean_ci([e.team_return for e in episodes])
    agents = list(episodes[0].returns) if episodes else []
    per = {a: dict(zip(("mean", "ci"), mean_ci([e.returns[a] for e in episodes]), strict=True)) for a in agents}
    return {"n": len(episodes), "team": {"mean": mean, "ci": half}, "agents": per,
            "length": float(np.mean([e.length for e in episodes])) if episodes else float("nan")}
