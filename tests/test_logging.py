"""RunLogger: CSV widening, resume and truncation, offline wandb run files, TensorBoard events, logger config group."""

from __future__ import annotations

import csv
import shutil
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from marl.config import LoggerConfig
from marl.errors import ConfigError
from marl.logging import RunLogger, read_metrics

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def make_cfg(wandb: bool = False, tensorboard: bool = False, **wandb_kw: object) -> DictConfig:
    """A minimal run config: only ``logger`` matters to RunLogger (plus whatever goes into wandb's config)."""
    logger = OmegaConf.structured(LoggerConfig)
    logger.wandb.enabled = wandb
    logger.tensorboard.enabled = tensorboard
    for k, v in wandb_kw.items():
        logger.wandb[k] = v
    return OmegaConf.create({"seed": 0, "env": {"name": "fake"}, "logger": logger})


@pytest.fixture
def offline_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")


def header(path: Path) -> list[str]:
    with open(path, newline="") as f:
        return next(csv.reader(f))


def test_csv_widens_header_and_keeps_blanks(tmp_path: Path) -> None:
    log = RunLogger(tmp_path, make_cfg())
    log.log(100, {"charts/episodic_return": 1.5, "charts/SPS": 900})
    log.log(200, {"charts/SPS": 950, "losses/policy_loss": -0.25})
    # the file is readable mid-run (flushed after each row)
    first = ["global_step", "charts/episodic_return", "charts/SPS", "losses/policy_loss"]
    assert header(tmp_path / "metrics.csv") == first
    log.log(300, {"eval/return": 7.0})
    log.close()
    assert header(tmp_path / "metrics.csv") == [*first, "eval/return"]
    assert read_metrics(tmp_path / "metrics.csv") == [
        {"global_step": 100.0, "charts/episodic_return": 1.5, "charts/SPS": 900.0},
        {"global_step": 200.0, "charts/SPS": 950.0, "losses/policy_loss": -0.25},
        {"global_step": 300.0, "eval/return": 7.0},
    ]
    assert not list(tmp_path.glob("*.tmp"))


def test_fresh_run_replaces_old_csv(tmp_path: Path) -> None:
    (tmp_path / "metrics.csv").write_text("global_step,old\n1,2\n")
    log = RunLogger(tmp_path, make_cfg())
    log.log(5, {"new": 1.0})
    log.close()
    assert read_metrics(tmp_path / "metrics.csv") == [{"global_step": 5.0, "new": 1.0}]


def test_resume_appends_widens_and_truncates(tmp_path: Path) -> None:
    log = RunLogger(tmp_path, make_cfg())
    for step in (100, 200, 300, 400):
        log.log(step, {"charts/episodic_return": step / 100})
    log.close()

    # the checkpoint is from step 200: rows after it are dropped, then logging continues with a new metric
    log = RunLogger(tmp_path, make_cfg(), resume=True)
    log.truncate_after(200)
    log.log(300, {"charts/episodic_return": 30.0, "eval/return": 5.0})
    log.close()
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [r["global_step"] for r in rows] == [100.0, 200.0, 300.0]
    assert [r["charts/episodic_return"] for r in rows] == [1.0, 2.0, 30.0]
    assert [r.get("eval/return") for r in rows] == [None, None, 5.0]


def test_read_metrics_parses_nan(tmp_path: Path) -> None:
    log = RunLogger(tmp_path, make_cfg())
    log.log(1, {"losses/value_loss": float("nan"), "charts/SPS": None})  # type: ignore[dict-item]
    log.close()
    (row,) = read_metrics(tmp_path / "metrics.csv")
    assert row["losses/value_loss"] != row["losses/value_loss"]
    assert "charts/SPS" not in row


def test_tensorboard_event_file(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = RunLogger(tmp_path, make_cfg(tensorboard=True))
    log.log(10, {"charts/episodic_return": 1.0})
    log.log(20, {"charts/episodic_return": 2.0})
    log.close()
    events = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    scalars = acc.Scalars("charts/episodic_return")
    assert [(s.step, s.value) for s in scalars] == [(10, 1.0), (20, 2.0)]


def test_wandb_offline_run_files(tmp_path: Path, offline_wandb: None) -> None:
    run_dir = tmp_path / "run_a"
    log = RunLogger(run_dir, make_cfg(wandb=True))
    log.log(128, {"charts/episodic_return": 3.25, "losses/policy_loss": 0.5})
    log.close()
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    run_id = (run_dir / "wandb_id.txt").read_text().strip()
    assert offline.name.endswith(run_id)
    (records,) = offline.glob("*.wandb")
    # wandb's service process writes the records file asynchronously after finish() returns
    deadline = time.monotonic() + 30
    while b"losses/policy_loss" not in (data := records.read_bytes()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert b"charts/episodic_return" in data and b"losses/policy_loss" in data
    assert read_metrics(run_dir / "metrics.csv")[0]["charts/episodic_return"] == 3.25

    # a resumed run reuses the same wandb id
    log = RunLogger(run_dir, make_cfg(wandb=True), resume=True)
    log.log(256, {"charts/episodic_return": 4.0})
    log.close()
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(f"-{run_id}" in p.name for p in runs)


def test_wandb_offline_video(tmp_path: Path, offline_wandb: None) -> None:
    from PIL import Image

    video = tmp_path / "eval.gif"
    frames = [Image.new("RGB", (8, 8), (40 * i, 0, 0)) for i in range(3)]
    frames[0].save(video, save_all=True, append_images=frames[1:], duration=100)
    log = RunLogger(tmp_path / "run", make_cfg(wandb=True))
    log.log_video(50, video)
    log.close()
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*/files/media/videos/eval/video_*.gif"))


def test_wandb_disabled_mode_and_bad_mode(tmp_path: Path, offline_wandb: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    log = RunLogger(tmp_path / "off", make_cfg(wandb=True))
    log.log(1, {"a": 1.0})
    log.log_video(1, tmp_path / "no_such_video.mp4")
    log.close()
    assert not (tmp_path / "off" / "wandb").exists()
    with pytest.raises(ConfigError, match="logger.wandb.mode"):
        RunLogger(tmp_path / "bad", make_cfg(wandb=True, mode="sometimes"))


def test_log_video_without_wandb_is_noop(tmp_path: Path) -> None:
    log = RunLogger(tmp_path, make_cfg())
    log.log_video(10, tmp_path / "missing.mp4")
    log.close()
    assert read_metrics(tmp_path / "metrics.csv") == []


def _compose(tmp_path: Path, overrides: list[str]) -> DictConfig:
    conf = tmp_path / "conf"
    shutil.copytree(CONFIGS / "logger", conf / "logger")
    (conf / "config.yaml").write_text("defaults:\n  - logger: csv\n  - _self_\n")
    with initialize_config_dir(config_dir=str(conf), version_base=None):
        return compose(config_name="config", overrides=overrides)


@pytest.mark.parametrize(
    ("overrides", "wandb", "tensorboard"),
    [
        ([], False, False),
        (["logger=wandb"], True, False),
        (["logger=[csv,wandb]"], True, False),
        (["logger=[csv,tensorboard,wandb]"], True, True),
    ],
)
def test_logger_group_composes(tmp_path: Path, overrides: list[str], wandb: bool, tensorboard: bool) -> None:
    cfg = _compose(tmp_path, overrides)
    logger = OmegaConf.merge(OmegaConf.structured(LoggerConfig), cfg.logger)  # unknown keys would raise here
    assert logger.csv is True
    assert logger.wandb.enabled is wandb
    assert logger.tensorboard.enabled is tensorboard
    assert logger.wandb.mode is None and logger.wandb.project == "marl"


def test_tensorboard_truncate_purges_later_events(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = RunLogger(tmp_path, make_cfg(tensorboard=True))
    for step in (10, 20, 30):
        log.log(step, {"charts/episodic_return": float(step)})
    log.close()
    log = RunLogger(tmp_path, make_cfg(tensorboard=True), resume=True)
    log.truncate_after(10)
    log.log(20, {"charts/episodic_return": -1.0})
    log.close()
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert [(s.step, s.value) for s in acc.Scalars("charts/episodic_return")] == [(10, 10.0), (20, -1.0)]
    assert [r["charts/episodic_return"] for r in read_metrics(tmp_path / "metrics.csv")] == [10.0, -1.0]


def test_training_run_logs_an_evaluation_video_to_offline_wandb(tmp_path: Path, offline_wandb: None) -> None:
    """With logger=wandb the final evaluation episode is rendered by the env to a GIF and logged as eval/video."""
    from marl.train import run

    run_dir = tmp_path / "run"
    run({"env": {"name": "simple_spread", "entry_point": "mpe2.simple_spread_v3:parallel_env",
                 "kwargs": {"max_cycles": 10}},
         "algo": {"name": "mappo", "num_steps": 10, "hidden": [8]}, "logger": {"wandb": {"enabled": True}},
         "num_envs": 2, "total_steps": 40, "eval_episodes": 1, "progress": False, "run_dir": str(run_dir)})
    (gif,) = (run_dir / "videos").glob("eval_*.gif")
    import imageio.v3 as iio

    frames = iio.imread(gif)
    assert frames.shape[0] > 2 and not (frames[0] == frames[-1]).all()
    deadline = time.monotonic() + 30
    media = []
    while not media and time.monotonic() < deadline:
        media = list((run_dir / "wandb").glob("offline-run-*/files/media/videos/eval/*.gif"))
        time.sleep(0.2)
    assert media, "the video did not reach the wandb run"
