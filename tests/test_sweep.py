"""Sweep summary: per-job final returns and per-setting mean, sample std and Student-t 95% CI, from fake job dirs
and a real Hydra multirun."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from marl.sweep import mean_std_ci, summarize, t95, write_summary

SQRT2 = math.sqrt(2.0)
T1 = 12.7062  # t_{0.975} with 1 degree of freedom


def fake_job(sweep: Path, num: int, overrides: list[str], rows: list[str] | None) -> None:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if rows is not None:
        (job / "metrics.csv").write_text("\n".join(rows) + "\n")


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    s = tmp_path / "sweep"
    header = "global_step,charts/episodic_return,eval/return"
    fake_job(s, 0, ["algo.lr=0.001", "seed=0"], [header, "100,1.0,", "200,2.0,4.0", "300,9.0,"])  # eval/return 4
    fake_job(s, 1, ["algo.lr=0.001", "seed=1"], [header, "100,1.0,", "200,3.0,6.0"])  # eval/return 6
    fake_job(s, 2, ["algo.lr=0.01", "seed=0"], ["global_step,charts/episodic_return", "100,5.0", "200,7.0"])  # 7
    fake_job(s, 3, ["algo.lr=0.01", "seed=1"], None)  # failed before writing metrics
    fake_job(s, 10, ["algo.lr=0.01", "seed=2"], ["global_step,charts/episodic_return", "50,1.0"])  # 1
    return s


def test_summarize_groups_by_overrides_minus_seed(sweep: Path) -> None:
    summary = summarize(sweep)
    assert [s["setting"] for s in summary] == ["algo.lr=0.001", "algo.lr=0.01"]
    a, b = summary
    # final eval/return per job: 4 and 6 -> mean 5, sample std sqrt(2), CI 5 ± t1 * sqrt(2) / sqrt(2)
    assert [j["final_return"] for j in a["jobs"]] == [4.0, 6.0]
    assert [j["metric"] for j in a["jobs"]] == ["eval/return", "eval/return"]
    assert (a["mean"], a["n"]) == (5.0, 2) and a["std"] == pytest.approx(SQRT2)
    assert a["ci95"] == pytest.approx((5.0 - T1, 5.0 + T1))
    # fallback to the last charts/episodic_return: 7 and 1 -> mean 4, std sqrt(18), CI 4 ± 3 t1; the failed job is
    # listed, not counted
    jobs = [(j["job"], j["seed"], j["final_return"]) for j in b["jobs"]]
    assert jobs == [("2", 0, 7.0), ("3", 1, None), ("10", 2, 1.0)]
    assert (b["mean"], b["n"]) == (4.0, 2) and b["std"] == pytest.approx(3 * SQRT2)
    assert b["ci95"] == pytest.approx((4.0 - 3 * T1, 4.0 + 3 * T1))


def test_mean_std_ci_hand_computed() -> None:
    mean, std, (lo, hi) = mean_std_ci([1.0, 2.0, 6.0])  # var = (4 + 1 + 9) / 2 = 7, t_{0.975, 2} = 4.3027
    half = 4.3027 * math.sqrt(7.0) / math.sqrt(3.0)
    assert (mean, std) == (3.0, pytest.approx(math.sqrt(7.0))) and (lo, hi) == pytest.approx((3 - half, 3 + half))
    assert mean_std_ci([2.5]) == (2.5, None, None) and mean_std_ci([]) == (None, None, None)


def test_t_quantiles_match_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    for df in [*range(1, 41), 50, 100, 1000]:
        assert t95(df) == pytest.approx(stats.t.ppf(0.975, df), abs=2e-4), df


def test_write_summary_files(sweep: Path) -> None:
    write_summary(sweep)
    md = (sweep / "summary.md").read_text()
    assert "| algo.lr=0.001 | 5 ± 1.414 | [-7.706, 17.71] | 2 |" in md
    assert "| algo.lr=0.01 | 4 ± 4.243 | [-34.12, 42.12] | 2 |" in md
    assert "| 3 | algo.lr=0.01 | 1 | missing |  |" in md
    with open(sweep / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    settings = [r for r in rows if r["kind"] == "setting"]
    jobs = [r for r in rows if r["kind"] == "job"]
    assert [(r["setting"], float(r["mean"]), r["n"]) for r in settings] == [("algo.lr=0.001", 5.0, "2"),
                                                                              ("algo.lr=0.01", 4.0, "2")]
    assert [float(r["std"]) for r in settings] == pytest.approx([SQRT2, 3 * SQRT2])
    assert [(float(r["ci95_low"]), float(r["ci95_high"])) for r in settings] == [
        pytest.approx((5 - T1, 5 + T1)), pytest.approx((4 - 3 * T1, 4 + 3 * T1))]
    assert len(jobs) == 5 and jobs[0]["final_return"] == "4.0" and jobs[3]["final_return"] == ""


def test_no_seed_override_reads_config(tmp_path: Path) -> None:
    fake_job(tmp_path, 0, [], ["global_step,eval/return", "10,2.5"])
    (tmp_path / "0" / ".hydra" / "config.yaml").write_text("seed: 7\n")
    (setting,) = summarize(tmp_path)
    assert setting["setting"] == "(defaults)"
    assert setting["jobs"][0]["seed"] == 7 and setting["mean"] == 2.5
    assert setting["std"] is None and setting["ci95"] is None  # one seed: no spread, no interval
    write_summary(tmp_path)
    assert "| (defaults) | 2.5 | none (n < 2) | 1 |" in (tmp_path / "summary.md").read_text()


APP = """
import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from marl.config import LoggerConfig
from marl.logging import RunLogger


@hydra.main(config_path=".", config_name="config", version_base=None)
def main(cfg: DictConfig) -> None:
    run = OmegaConf.create({"logger": OmegaConf.structured(LoggerConfig)})
    log = RunLogger(HydraConfig.get().runtime.output_dir, run)
    log.log(100, {"eval/return": cfg.lr * 100 + cfg.seed})
    log.close()


main()
"""

CONFIG = """
lr: 0.1
seed: 0
hydra:
  callbacks:
    summary:
      _target_: marl.sweep.SweepSummary
"""


def test_real_multirun_writes_summary(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "config.yaml").write_text(CONFIG)
    sweep = tmp_path / "multirun"
    cmd = [sys.executable, "app.py", "-m", "lr=0.1,0.2", "seed=0,2", f"hydra.sweep.dir={sweep}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}  # this marl
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    md = (sweep / "summary.md").read_text()
    # returns: lr*100 + seed -> lr=0.1: {10, 12}, lr=0.2: {20, 22}
    assert "| lr=0.1 | 11 ± 1.414 | [-1.706, 23.71] | 2 |" in md
    assert "| lr=0.2 | 21 ± 1.414 | [8.294, 33.71] | 2 |" in md
