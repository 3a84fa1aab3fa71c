"""Plain-text tables of the statistics of :mod:`marl.matches.stats`."""

from __future__ import annotations

from typing import Any


def format_duel(summary: dict[str, Any], subject: str, opponent: str) -> str:
    """A plain-text table of :func:`duel_summary` (rates in %, Wilson 95% intervals in brackets)."""

    def cell(s: dict, key: str) -> str:
        d = s[key]
        return f"{d['count']:>4} {100 * d['rate']:5.1f}% [{100 * d['ci'][0]:5.1f}, {100 * d['ci'][1]:5.1f}]"

    head = f"{'subject seat':<14}{'n':>5}  {'wins':<27}{'draws':<27}{'losses':<27}{'payoff (mean ± 95% CI)':<24}"
    lines = [f"{subject} vs {opponent}: wins / draws / losses of {subject} (Wilson 95% CI)", head, "-" * len(head)]
    rows = [*summary["seats"].items(), ("all", summary["all"])]
    for name, s in rows:
        if s["n"] == 0:
            continue
        pay = f"{s['payoff']['mean']:+.3f} ± {s['payoff']['ci']:.3f}"
        lines.append(f"{name:<14}{s['n']:>5}  {cell(s, 'win'):<27}{cell(s, 'draw'):<27}{cell(s, 'loss'):<27}{pay}")
    return "\n".join(lines)


def format_team(summary: dict[str, Any], name: str) -> str:
    lines = [f"{name}: {summary['n']} episodes, mean length {summary['length']:.1f}",
             f"{'':<20}{'return (mean ± 95% CI)':>26}",
             f"{'team':<20}{summary['team']['mean']:>16.3f} ± {summary['team']['ci']:.3f}"]
    lines += [f"{a:<20}{s['mean']:>16.3f} ± {s['ci']:.3f}" for a, s in summary["agents"].items()]
    return "\n".join(lines)
