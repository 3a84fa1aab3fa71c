"""A trained learner from a run directory or checkpoint, checked against the env it is to play."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from marl import checkpoint as ckpt
from marl.adapters.base import VecMultiEnv
from marl.algos import make_learner
from marl.algos.base import Learner


def load_policy(run_or_ckpt: str | Path) -> tuple[DictConfig, dict, Path]:
    """The validated config, payload and path of the checkpoint of a run directory (or a checkpoint file)."""
    path = ckpt.find_latest(run_or_ckpt)
    payload = ckpt.load(path)
    return ckpt.stored_config(payload), payload, path


def make_policy(cfg: DictConfig, payload: dict, path: Path, env: VecMultiEnv) -> Learner:
    """A learner restored from ``payload`` for ``env`` (refused, naming both envs, when the checkpoint does not fit)."""
    ckpt.check_compatible(payload, env.spec.name, None, env.spec, path)
    learner = make_learner(cfg, env, "cpu")
    ckpt.load_learner(learner, payload, path)
    return learner
