"""The adapter benchmark's arithmetic (drift-cancelling ratios) and a tiny end-to-end run of it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from benches.adapters import main, sandwich_ratios  # noqa: E402


def test_sandwich_ratios_cancel_a_linear_drift():
    # the machine slows down linearly; the adapter runs at exactly 1.5x the raw rate of the moment it runs
    raw = [1000.0 - 100.0 * i for i in range(5)]  # slices at t = 0, 2, 4, 6, 8
    adapter = [1.5 * (1000.0 - 100.0 * (i + 0.5)) for i in range(4)]  # slices at t = 1, 3, 5, 7
    assert sandwich_ratios(adapter, raw) == pytest.approx([1.5] * 4)
    # dividing by the slice before only (the old pairing) would read the drift as a slowdown of the adapter
    assert all(a / r < 1.5 - 0.05 for a, r in zip(adapter, raw, strict=False))


def test_sandwich_ratios_need_a_closing_raw_slice():
    with pytest.raises(ValueError, match="one raw slice more"):
        sandwich_ratios([1.0, 2.0], [1.0, 1.0])


def test_quick_run_writes_every_cell(tmp_path):
    report = main(["--quick", "--envs", "connect_four", "--out", str(tmp_path)])
    row = report["results"]["connect_four"]
    for backend in ("inprocess", "subprocess"):
        for e in ("1", "8"):
            cell = row[backend][e]
            assert cell["rate"] > 0 and len(cell["ratios"]["1"]) == report["meta"]["rounds"]
    assert row["ceiling"] > 0
    assert json.loads((tmp_path / "adapters.json").read_text())["results"].keys() == {"connect_four"}
    md = (tmp_path / "adapters.md").read_text()
    assert "| connect_four |" in md and "- connect_four: " in md
