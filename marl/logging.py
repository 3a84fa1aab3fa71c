"""Run logging: ``metrics.csv`` always, Weights & Biases and TensorBoard on request.

Metric names follow CleanRL (``charts/episodic_return``, ``charts/SPS``, ``losses/policy_loss``, ``eval/return``, ...);
the x-axis everywhere is ``global_step`` (env steps). The CSV is the source of truth that ``scripts/plot.py`` and
:mod:`marl.sweep` read; it is flushed after every row so a killed run loses nothing.
"""

from __future__ import annotations

import csv
import os
import secrets
from pathlib import Path
from typing import IO, Any

from omegaconf import DictConfig, OmegaConf

from marl.errors import ConfigError

STEP = "global_step"
WANDB_MODES = ("online", "offline", "disabled")


def read_metrics(path: str | Path) -> list[dict[str, float]]:
    """Rows of a ``metrics.csv`` as ``{name: value}`` dicts (``global_step`` included); blank cells are left out."""
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if k and v not in (None, "")} for row in csv.DictReader(f)]


def _read_table(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header and raw string rows of a CSV file."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or [STEP]), rows


def _write_table(path: Path, columns: list[str], rows: list[dict[str, str]]) -> None:
    """Write a whole CSV atomically: a temp file in the same directory, then ``os.replace``."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _cell(value: Any) -> str:
    return "" if value is None else repr(float(value))


class RunLogger:
    """Writes one run's metrics to ``run_dir/metrics.csv`` and, if enabled, to wandb and TensorBoard.

    ``cfg`` is the whole validated run config (``cfg.logger`` is a :class:`marl.config.LoggerConfig`). With
    ``resume=True`` the existing CSV rows and the wandb run (id kept in ``run_dir/wandb_id.txt``) are continued.
    """

    def __init__(self, run_dir: str | Path, cfg: DictConfig, resume: bool = False):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.cfg = cfg
        self.csv_path = self.run_dir / "metrics.csv"
        if resume and self.csv_path.exists() and self.csv_path.stat().st_size > 0:
            self._columns, _ = _read_table(self.csv_path)
        else:
            self._columns = [STEP]
            _write_table(self.csv_path, self._columns, [])
        self._open()
        mode = self._wandb_mode() if cfg.logger.wandb.enabled else "disabled"
        self._wandb = self._init_wandb(mode) if mode != "disabled" else None
        self._tb = self._init_tensorboard() if cfg.logger.tensorboard.enabled else None

    # ------------------------------------------------------------------------------------------------ backends

    def _wandb_mode(self) -> str:
        """logger.wandb.mode, else $WANDB_MODE, else offline (never the network unless asked for)."""
        configured = self.cfg.logger.wandb.mode
        mode = configured or os.environ.get("WANDB_MODE") or "offline"
        if mode not in WANDB_MODES:
            source = "logger.wandb.mode" if configured else "$WANDB_MODE"
            raise ConfigError(f"wandb mode '{mode}' (from {source}) is not valid", f"use one of: {WANDB_MODES}")
        return mode

    def _init_wandb(self, mode: str) -> Any:
        import wandb

        wcfg = self.cfg.logger.wandb
        id_file = self.run_dir / "wandb_id.txt"
        if id_file.exists():
            run_id = id_file.read_text().strip()
        else:
            run_id = secrets.token_hex(4)
            id_file.write_text(run_id + "\n")
        try:
            run = wandb.init(
                project=wcfg.project,
                entity=wcfg.entity,
                group=wcfg.group,
                tags=list(wcfg.tags),
                config=OmegaConf.to_container(self.cfg, resolve=True),
                dir=str(self.run_dir),
                mode=mode,
                name=self.run_dir.name,
                id=run_id,
                resume="allow",
            )
        except wandb.errors.Error as e:
            raise ConfigError(
                f"wandb could not start in '{mode}' mode: {e}",
                "run `wandb login`, or log offline with logger.wandb.mode=offline (upload later with `wandb sync`)",
            ) from e
        # global_step is the x-axis; wandb's own step only counts log calls, so a resumed run never hits
        # "step must be monotonically increasing" when it restarts from an older checkpoint.
        run.define_metric(STEP)
        run.define_metric("*", step_metric=STEP)
        return run

    def _init_tensorboard(self, purge_step: int | None = None) -> Any:
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(self.run_dir / "tb"), purge_step=purge_step, flush_secs=10)

    # ----------------------------------------------------------------------------------------------------- API

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Record ``metrics`` at env step ``step``: one CSV row (flushed), one wandb log call, TensorBoard scalars."""
        new = [k for k in metrics if k not in self._columns and k != STEP]
        if new:
            self._widen(new)
        row = {STEP: str(int(step)), **{k: _cell(v) for k, v in metrics.items() if k != STEP}}
        self._writer.writerow([row.get(c, "") for c in self._columns])
        self._file.flush()
        if self._wandb is not None:
            self._wandb.log({STEP: int(step), **{k: float(v) for k, v in metrics.items() if v is not None}})
        if self._tb is not None:
            for k, v in metrics.items():
                if v is not None:
                    self._tb.add_scalar(k, float(v), int(step))

    def log_video(self, step: int, path: str | Path, key: str = "eval/video") -> None:
        """Upload a video file to wandb (if enabled with ``log_videos``); otherwise do nothing."""
        if self._wandb is None or not self.cfg.logger.wandb.log_videos:
            return
        import wandb

        self._wandb.log({STEP: int(step), key: wandb.Video(str(path))})

    def truncate_after(self, step: int) -> None:
        """Drop CSV rows with ``global_step > step`` (and TensorBoard events after it) before resuming at ``step``."""
        self._file.close()
        columns, rows = _read_table(self.csv_path)
        _write_table(self.csv_path, columns, [r for r in rows if r.get(STEP) and float(r[STEP]) <= step])
        self._open()
        if self._tb is not None:
            self._tb.close()
            self._tb = self._init_tensorboard(purge_step=int(step) + 1)

    def close(self) -> None:
        """Flush and close every backend; safe to call twice."""
        if not self._file.closed:
            self._file.close()
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def _widen(self, names: list[str]) -> None:
        """Rewrite the CSV with ``names`` appended to the header; existing rows get blanks there."""
        self._file.close()
        _, rows = _read_table(self.csv_path)
        self._columns = self._columns + names
        _write_table(self.csv_path, self._columns, rows)
        self._open()

    def _open(self) -> None:
        self._file: IO[str] = open(self.csv_path, "a", newline="")
        self._writer = csv.writer(self._file)
