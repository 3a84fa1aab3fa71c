"""The speed bench's BenchMARL part reads BenchMARL's CSV logs right (a stand-in interpreter writes them), and its
report renders every part with its own date and load."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from benches.benchmarl_vs import BATCH, run_benchmarl  # noqa: E402
from benches.speed import render  # noqa: E402

# a stand-in for BenchMARL's python: writes the CSV scalars of 3 iterations (evaluations after the 1st and the 3rd)
# under experiment.save_folder=<dir>, as BenchMARL's csv logger lays them out
FAKE = """#!/bin/bash
for a in "$@"; do case $a in experiment.save_folder=*) out=${a#experiment.save_folder=};; esac; done
d=$out/mappo_simple_spread_x/mappo_simple_spread_x/scalars; mkdir -p $d
printf '0,6000.0\\n1,12000.0\\n2,18000.0\\n' > $d/counters_total_frames.csv
printf '0,9.0\\n1,9.0\\n2,9.0\\n' > $d/timers_training_time.csv
printf '0,10.0\\n1,10.0\\n2,10.0\\n' > $d/timers_iteration_time.csv
printf '0,-150.0\\n2,-120.5\\n' > $d/eval_reward_episode_reward_mean.csv
"""


@pytest.fixture
def fake_python(tmp_path: Path) -> str:
    p = tmp_path / "python"
    p.write_text(FAKE)
    p.chmod(p.stat().st_mode | stat.S_IEXEC)
    return str(p)


def test_run_benchmarl_reads_frames_times_and_summed_returns(tmp_path, fake_python):
    res = run_benchmarl(fake_python, 3 * BATCH, tmp_path / "bm", eval_every=2 * BATCH)
    assert res["frames"] == 18000
    assert res["training_share"] == pytest.approx(0.9)
    # per-agent means x 3 agents, at the frames of the iteration that evaluated
    assert res["eval"] == [(6000, -450.0), (18000, pytest.approx(-361.5))]
    assert res["steps_per_s"] > 0
    assert "task.max_steps=25" in res["command"] and "experiment.prefer_continuous_actions=False" in res["command"]


def test_a_failed_benchmarl_run_is_an_error(tmp_path):
    bad = tmp_path / "python"
    bad.write_text("#!/bin/bash\nexit 3\n")
    bad.chmod(bad.stat().st_mode | stat.S_IEXEC)
    with pytest.raises(RuntimeError, match="BenchMARL failed"):
        run_benchmarl(str(bad), BATCH, tmp_path / "bm", eval_every=BATCH)


def test_render_lists_each_part_with_its_own_load():
    meta = {"date": "2026-01-01 00:00:00", "load_before": 2.5, "busy_before": 1.4, "load_after": 2.0,
            "command": "python x"}
    row = {"env_steps": 1000, "steps_per_s": 500.0, "loop_sps": 600.0, "random_steps_per_s": 1000.0,
           "ratio_to_random": 0.5, "peak_rss_mb": 100, "eval_return": -400.0}
    report = {"parts": {
        "vmas": {"meta": meta, "rows": {"512": row}},
        "mpe2": {"meta": {**meta, "busy_before": 0.1}, **row, "backend": "inprocess (x)"},
        "benchmarl": {"meta": meta, "frames": 6000, "marl_over_benchmarl_speed": 10.0,
                      "benchmarl": {"frames": 6000, "wall_s": 60.0, "steps_per_s": 100.0, "training_share": 0.98,
                                    "eval": [(6000, -450.0)]},
                      "marl": {"env_steps": 12800, "wall_s": 12.8, "steps_per_s": 1000.0, "num_envs": 256,
                               "eval": [(12800, -400.0), (25600, -390.0)]}},
        "others": {"meta": meta, "rows": {"balance": {**row, "num_envs": 512, "eval_return": 10.0,
                                                      "train_return": -12.5, "random_return": -38.25}}},
        "long": {"meta": meta, "num_envs": 512, "env_steps": 10_000_000, "wall_s": 500.0, "steps_per_s": 20000.0,
                 "loop_sps": 21000.0, "peak_rss_mb": 400, "eval": [(1_000_000, -360.0), (10_000_000, -340.5)]}}}
    md = render(report)
    assert "| 512 | 1,000 | 500 | 600 | 1,000 | 0.50 | 100 | -400.0 |" in md
    # the vmas part loaded, the mpe2 part idle (the load average counts the bench's own previous part: not read)
    assert "1.4 cores busy with other processes as it started: the machine was shared" in md
    assert "0.1 cores busy with other processes as it started: the machine was otherwise idle" in md
    assert "| BenchMARL | 6,000 | 60.0 | 100 | 98% |" in md
    assert "| 6,000 | -450.0 | 12,800 | -400.0 |" in md and "|  |  | 25,600 | -390.0 |" in md
    assert "marl / BenchMARL env steps/s: 10.0x." in md and "marl with its preset (256 copies)" in md
    assert "| balance | 512 | 1,000 | 500 | 1,000 | 0.50 | 100 | 10.00 | -12.50 | -38.25 |" in md
    assert "for 10,000,000 env steps (512 copies)" in md and "20,000 env steps/s" in md
    assert "| 10,000,000 | -340.5 |" in md
    assert "| 1,000 | 500 | 1,000 | 0.50 | inprocess (x) |" in md  # an mpe2 record of the older layout


def test_render_mpe2_with_both_backends_and_the_random_rates_around_them():
    meta = {"date": "2026-01-01 00:00:00", "load_before": 0.1, "busy_before": 0.0, "load_after": 1.0,
            "command": "python x"}
    run = {"env_steps": 100_000, "steps_per_s": 3000.0, "loop_sps": 3500.0, "random_around": 2500.0,
           "ratio_to_random": 1.2, "ratio_to_direct": 0.6, "ratios": [1.1, 1.2, 1.3],
           "backend": "subprocess (1 worker(s) + 4 copies in the main process; y)"}
    mpe2 = {"meta": meta, **run, "random_steps_per_s": 2500.0, "random_slices": [2400, 2600, 2500],
            "direct_steps_per_s": 5000.0, "rounds": 1,
            "inprocess": {**run, "steps_per_s": 2000.0, "loop_sps": None, "ratio_to_random": 0.8,
                          "ratio_to_direct": 0.4, "ratios": [0.8], "backend": "inprocess (env.backend)"}}
    md = render({"parts": {"mpe2": mpe2}})
    assert "a 3-slice sandwich around the training runs: 2,400, 2,600, 2,500 env steps/s (median 2,500)" in md
    assert ("| auto (the default) | 100,000 | 3,000 | 3,500 | 2,500 | 1.20 | 0.60 | 1.10, 1.20, 1.30 | "
            "subprocess (1 worker(s)") in md
    assert "| inprocess | 100,000 | 2,000 | — | 2,500 | 0.80 | 0.40 | 0.80 | inprocess (env.backend) |" in md
