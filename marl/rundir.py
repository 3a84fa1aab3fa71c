"""Run directories: their default name, one writing process at a time, reuse after an early failure, and
``train.log`` (a copy of what the console showed).

* :func:`default_run_dir`: ``outputs/<date>/<time>_<env>_<algo>_seed<seed>``, created only once a run starts training
  (a command refused at validation leaves nothing behind).
* :class:`RunLock`: an advisory ``flock`` on ``<run dir>/.lock`` held while a run writes; the kernel drops it when the
  process ends, however it ends, so a crashed run never leaves a stale lock. The file names its holder while held.
* :func:`check_fresh`: a new run may write into a directory that holds no checkpoint; the files of a run that ended
  before its first checkpoint (it can be neither resumed nor kept) are replaced, with a note.
* :class:`ConsoleLog`: what this process prints (stdout and stderr) also goes to ``train.log``, buffered until the
  run directory exists; a progress bar's redraws (``\\r``) keep only their last state.
"""

from __future__ import annotations

import datetime
import fcntl
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import IO, Any

from omegaconf import DictConfig

from marl import checkpoint as ckpt
from marl.errors import RunDirError

LOCK = ".lock"
LOG = "train.log"
RUN_FILES = ("metrics.csv", "config.yaml", LOG, "wandb_id.txt")  # what a run writes besides checkpoints
RUN_DIRS = ("videos", "tensorboard", "wandb")


def default_run_dir(cfg: DictConfig) -> Path:
    """``outputs/<date>/<time>_<env>_<algo>_seed<seed>`` (microseconds in the time: two runs never share one)."""
    now = datetime.datetime.now()
    return Path("outputs") / f"{now:%Y-%m-%d}" / f"{now:%H-%M-%S-%f}_{cfg.env.name}_{cfg.algo.name}_seed{cfg.seed}"


def run_dir_of(resume: str | Path) -> Path:
    """The run directory of ``resume=``: the directory itself, or the run a ``checkpoints/*.pt`` file belongs to."""
    p = Path(resume)
    return p.parent.parent if p.suffix == ".pt" and p.parent.name == ckpt.CKPT_DIR else p


def has_checkpoint(run_dir: Path) -> bool:
    return any((run_dir / ckpt.CKPT_DIR).glob("*.pt"))


def has_run(run_dir: Path) -> bool:
    """True when ``run_dir`` holds files of a run (with or without a checkpoint)."""
    return any((run_dir / f).exists() for f in RUN_FILES[:2]) or has_checkpoint(run_dir)


def check_fresh(run_dir: Path, clean: bool = False) -> None:
    """Refuse a new run in a directory holding a resumable run (a checkpoint); with ``clean``, remove the files of a
    run there that ended before its first checkpoint."""
    if has_checkpoint(run_dir):
        raise RunDirError(f"run directory '{run_dir}' already holds a run; it is never overwritten",
                          f"pass resume={run_dir} to continue it, or choose another run_dir")
    if clean and has_run(run_dir):
        print(f"note: run directory '{run_dir}' held a run that ended before its first checkpoint; "
              "its files are replaced by this run's")
        for f in RUN_FILES:
            (run_dir / f).unlink(missing_ok=True)
        for d in RUN_DIRS:
            shutil.rmtree(run_dir / d, ignore_errors=True)


class RunLock:
    """An exclusive, non-blocking lock on a run directory for as long as a run writes into it."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK
        self.file: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock; a :class:`RunDirError` naming the holder when another process has it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")  # noqa: SIM115 - held open for the whole run
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise RunDirError(f"run directory '{self.path.parent}' is being written by {holder}",
                              "wait until that run ends (or stop it), or choose another run_dir") from None
        f.truncate(0)
        f.write(f"process {os.getpid()} on {socket.gethostname()} (started "
                f"{datetime.datetime.now():%Y-%m-%d %H:%M:%S}: {' '.join(sys.argv)})\n")
        f.flush()
        self.file = f

    def release(self) -> None:
        if self.file is not None:
            self.file.truncate(0)
            fcntl.flock(self.file, fcntl.LOCK_UN)
            self.file.close()
            self.file = None


class _Tee:
    """A text stream writing to ``stream`` and feeding ``log``; everything else is the stream's."""

    def __init__(self, stream: Any, log: ConsoleLog, key: str):
        self._stream, self._log, self._key = stream, log, key

    def write(self, s: str) -> int:
        self._log.feed(self._key, s)
        return self._stream.write(s)

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class ConsoleLog:
    """Copy stdout and stderr into a log file from :meth:`start` to :meth:`stop`; lines printed before
    :meth:`open` are kept and written when the file opens."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.partial = {"out": "", "err": ""}
        self.file: IO[str] | None = None
        self.saved: tuple[Any, Any] | None = None

    def start(self) -> None:
        self.saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(sys.stdout, self, "out"), _Tee(sys.stderr, self, "err")

    def open(self, path: Path, append: bool) -> None:
        """Write the buffered lines to ``path`` (appended on resume) and every later line as it ends."""
        self.file = open(path, "a" if append else "w")  # noqa: SIM115 - closed by stop()
        self.file.writelines(line + "\n" for line in self.lines)
        self.file.flush()
        self.lines = []

    def note(self, text: str) -> None:
        """A line for the log only (the CLI prints it itself, e.g. the error that ended the run)."""
        for line in text.splitlines():
            self._emit(line)

    def feed(self, key: str, s: str) -> None:
        text = self.partial[key] + s
        *done, rest = text.split("\n")
        for line in done:
            self._emit(_last_redraw(line))
        self.partial[key] = _last_redraw(rest)

    def _emit(self, line: str) -> None:
        if self.file is None:
            self.lines.append(line)
        else:
            self.file.write(line + "\n")
            self.file.flush()

    def stop(self) -> None:
        for key in self.partial:
            if self.partial[key].strip():
                self._emit(self.partial[key])
            self.partial[key] = ""
        if self.saved is not None:
            sys.stdout, sys.stderr = self.saved
            self.saved = None
        if self.file is not None:
            self.file.close()
            self.file = None


def _last_redraw(line: str) -> str:
    """The text a terminal shows for ``line``: what follows its last carriage return (a progress bar's last state)."""
    parts = [p for p in line.split("\r") if p]
    return parts[-1] if parts else ""
