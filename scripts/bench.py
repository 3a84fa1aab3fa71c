"""Benchmarks (not timed tests): `python scripts/bench.py SECTION [options]`, SECTION one of
learning | adapters | multiagent | games | policy_family | offpolicy | speed | recurrent | distributed. Each
writes benchmarks/<name>.json and .md; `--help` per section."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]  # benches, this marl

SECTIONS = {"learning": "benches.learning", "adapters": "benches.adapters", "multiagent": "benches.multiagent",
            "games": "benches.games", "policy_family": "benches.policy_family", "offpolicy": "benches.offpolicy",
            "speed": "benches.speed", "recurrent": "benches.recurrent", "distributed": "benches.distributed"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in SECTIONS:
        print(f"usage: python scripts/bench.py {{{'|'.join(SECTIONS)}}} [options]", file=sys.stderr)
        return 2
    result = importlib.import_module(SECTIONS[argv[0]]).main(argv[1:])
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
