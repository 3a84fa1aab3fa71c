"""User-facing errors: what went wrong and how to fix it, shown without a traceback by the CLI."""

from __future__ import annotations


class MarlError(Exception):
    """A mistake the user can fix (bad config, missing checkpoint, broken custom env, ...).

    The CLI prints ``str(err)`` (problem, then ``fix:`` hint) and exits non-zero without a traceback;
    ``debug=true`` shows the traceback too.
    """

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(problem if fix is None else f"{problem}\n  fix: {fix}")


class ConfigError(MarlError):
    """The configuration is invalid (unknown key or option, wrong type, out-of-range value, unsupported combination)."""


class EnvError(MarlError):
    """An environment could not be built, breaks the PettingZoo / gymnasium API, or failed while stepping."""


class CheckpointError(MarlError):
    """A checkpoint is missing, corrupt, unsafe, or does not match the env / algorithm it is loaded into."""


class TrainingError(MarlError):
    """Training cannot go on (e.g. a loss became NaN); the last good checkpoint is kept."""


class RunDirError(MarlError):
    """A run directory cannot be written: it holds a run that must not be overwritten, or another process writes it."""
