"""scripts/plot.py: grouping by config minus seed, interpolation across seeds, PNG output, clear errors."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "plot.py"
_spec = importlib.util.spec_from_file_location("marl_plot_script", SCRIPT)
assert _spec is not None and _spec.loader is not None
plot = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = plot  # dataclasses look the module up by name
_spec.loader.exec_module(plot)


def fake_run(path: Path, seed: int, lr: float, rows: list[tuple[int, float]], hydra: bool = False) -> Path:
    cfg_file = path / (".hydra/config.yaml" if hydra else "config.yaml")
    cfg_file.parent.mkdir(parents=True)
    cfg_file.write_text(f"seed: {seed}\nenv:\n  name: spread\nalgo:\n  name: ppo\n  lr: {lr}\nrun_dir: {path}\n")
    lines = ["global_step,charts/episodic_return,charts/SPS"] + [f"{s},{v},100" for s, v in rows]
    (path / "metrics.csv").write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def runs(tmp_path: Path) -> list[Path]:
    return [
        fake_run(tmp_path / "a0", 0, 0.001, [(0, 0.0), (100, 1.0), (200, 2.0)]),
        fake_run(tmp_path / "a1", 1, 0.001, [(0, 2.0), (50, 2.0), (150, 4.0), (300, 9.0)]),
    ]


def test_png_from_two_seeds(tmp_path: Path, runs: list[Path]) -> None:
    out = tmp_path / "figs" / "curves.png"
    assert plot.main([str(p) for p in runs] + ["--out", str(out), "--smooth", "2"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 1000


def test_seeds_interpolated_on_common_grid(runs: list[Path]) -> None:
    loaded = plot.find_runs(runs)
    ((label, members),) = plot.group_runs(loaded).items()
    assert label == "spread ppo" and len(members) == 2
    x, mean, std = plot.aggregate([plot.curve(r, "charts/episodic_return", 1) for r in members])
    # union of steps inside [0, 200] (the range both cover); seed 1 interpolated: 50->2, 100->3, 150->4, 200->5.667
    np.testing.assert_allclose(x, [0, 50, 100, 150, 200])
    seed0 = np.array([0.0, 0.5, 1.0, 1.5, 2.0])
    seed1 = np.array([2.0, 2.0, 3.0, 4.0, 4.0 + 5.0 / 3.0])
    np.testing.assert_allclose(mean, (seed0 + seed1) / 2)
    np.testing.assert_allclose(std, np.abs(seed0 - seed1) / 2)


def test_smoothing_is_trailing_mean(runs: list[Path]) -> None:
    (run,) = plot.find_runs(runs[1:])
    _, y = plot.curve(run, "charts/episodic_return", 2)
    np.testing.assert_allclose(y, [2.0, 2.0, 3.0, 6.5])


def test_sweep_dir_expands_and_settings_are_labelled(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    for i, (seed, lr) in enumerate([(0, 0.001), (1, 0.001), (0, 0.01), (1, 0.01)]):
        fake_run(sweep / str(i), seed, lr, [(0, float(i)), (100, float(i + 1))], hydra=True)
    groups = plot.group_runs(plot.find_runs([sweep, sweep / "0"]))  # a job named twice counts once
    assert {k: len(v) for k, v in groups.items()} == {"spread ppo (algo.lr=0.001)": 2, "spread ppo (algo.lr=0.01)": 2}
    assert plot.main([str(sweep), "--out", str(tmp_path / "s.png")]) == 0


def test_missing_metric_lists_available(tmp_path: Path, runs: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    code = plot.main([str(runs[0]), "--metric", "eval/return", "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert code == 2 and not (tmp_path / "x.png").exists()
    assert err.count("\n") == 1
    assert "no metric 'eval/return'" in err and "available: charts/SPS, charts/episodic_return" in err


def test_default_metric_falls_back_to_training_return(runs: list[Path]) -> None:
    assert plot.choose_metric(plot.find_runs(runs), None) == "charts/episodic_return"


def test_dir_without_metrics_exits_2_without_traceback(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "empty"), "--out", str(tmp_path / "x.png")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "has no metrics.csv" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_budget_and_keys_of_other_versions_do_not_split_a_setting(tmp_path: Path) -> None:
    """Seeds resumed to a longer budget, or written by a marl version without a newer key, are still one setting;
    labels name only what differs between settings of the same env and algorithm."""
    a = fake_run(tmp_path / "a", 0, 0.001, [(0, 0.0), (100, 1.0)])
    b = fake_run(tmp_path / "b", 1, 0.001, [(0, 1.0), (100, 2.0)])
    c = fake_run(tmp_path / "c", 0, 0.001, [(0, 1.0), (100, 2.0)])
    (a / "config.yaml").write_text((a / "config.yaml").read_text() + "total_steps: 1000\nnew_key: 1\n")
    (b / "config.yaml").write_text((b / "config.yaml").read_text() + "total_steps: 300\n")
    (c / "config.yaml").write_text((c / "config.yaml").read_text().replace("ppo", "mappo") + "total_steps: 300\n")
    groups = plot.group_runs(plot.find_runs([a, b, c]))
    assert {k: len(v) for k, v in groups.items()} == {"spread ppo": 2, "spread mappo": 1}
