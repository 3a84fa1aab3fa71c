"""Checkpoints: written atomically, loaded with ``weights_only=True`` (a checkpoint can never run code), and checked
against the env and algorithm they are loaded into.

File layout: ``<run_dir>/checkpoints/step_<env_steps>.pt`` (periodic, the newest few kept) and ``final.pt``.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

import marl
from marl.adapters.base import EnvSpec
from marl.config import validate
from marl.errors import CheckpointError

CKPT_DIR = "checkpoints"
_STEP_RE = re.compile(r"step_(\d+)\.pt$")


def spaces_signature(spec: EnvSpec) -> str:
    """A string naming every group's agents and spaces; two envs with the same signature can share checkpoints."""
    parts = [f"{g.name}:{','.join(g.agents)}|{g.obs_space}|{g.action_space}" for g in spec.groups]
    return ";".join(parts)


def save(path: str | Path, learner_state: dict, cfg: DictConfig, spec: EnvSpec) -> Path:
    """Write ``{meta, config, learner}`` to ``path`` atomically (temp file in the same dir, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "meta": {
            "marl_version": marl.__version__,
            "env": str(cfg.env.name),
            "algo": str(cfg.algo.name),
            "spaces": spaces_signature(spec),
            "env_steps": int(learner_state["counters"]["env_steps"]),
        },
        "config": OmegaConf.to_yaml(cfg, resolve=True),
        "learner": learner_state,
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp_", suffix=".pt")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load(path: str | Path) -> dict:
    """Load a checkpoint safely; a missing, truncated, corrupt or code-carrying file is a :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at '{path}'", "pass a run directory or a .pt file written by marl")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = _unpickling_reason(e)
        what = ("it holds objects other than tensors and plain data" if "GLOBAL" in reason
                else "it is not a torch checkpoint (corrupt, or not written by marl)")
        raise CheckpointError(
            f"refused to load '{path}': {what} ({reason[:200]})",
            "only load checkpoints written by marl; this file may be corrupt or crafted to run code",
        ) from None
    except Exception as e:  # noqa: BLE001 - zip / pickle / tensor-storage failures of a damaged file all land here
        lines = str(e).strip().splitlines() or [""]
        raise CheckpointError(
            f"'{path}' is truncated or corrupt ({type(e).__name__}: {lines[0][:200]})",
            "resume from an earlier checkpoint in the same directory, or retrain",
        ) from None
    if not isinstance(payload, dict) or not {"meta", "config", "learner"} <= payload.keys():
        raise CheckpointError(f"'{path}' is not a marl checkpoint", "pass a .pt file written by marl")
    return payload


def _unpickling_reason(e: Exception) -> str:
    """The informative line of torch's weights_only refusal (e.g. "... unsupported GLOBAL posix.system ...")."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for ln in lines:
        if "GLOBAL" in ln or ln.startswith("Unsupported"):
            return ln
    return lines[0] if lines else type(e).__name__


# keys added to the run config since a checkpoint may have been written, with the value that reproduces how such a
# run was trained (a run from before presets existed had none)
ADDED_KEYS = {"preset": "none"}


# on-policy algorithms whose critic optimizer also stepped every actor before algo.critic_lr existed (2026-12-07):
# the actors moved two Adam steps of algo.lr per minibatch. Not listed: happo (only the first agent of each order),
# reinforce (its actors' gradient was also clipped by the joint norm with the baseline's, large on Monte-Carlo
# returns, so the second step was small: CartPole ran as the old code did at 1x, and collapsed at 2x), trpo, hatrpo
# and grpo (not affected)
DOUBLED_ACTOR_LR = ("ppo", "a2c", "ippo", "mappo")


def _split_lr(algo: DictConfig) -> str | None:
    """A run config from before ``algo.critic_lr`` (an algorithm whose schema has it): the critic keeps ``lr`` and,
    where the actors were stepped twice, the actors get ``2 * lr``, the dynamics that run trained with. Returns the
    note to show, or None."""
    from dataclasses import fields

    from marl.config import ALGOS

    info = ALGOS.get(str(algo.get("name")))
    has_key = info is not None and any(f.name == "critic_lr" for f in fields(info.schema))
    if not has_key or "critic_lr" in algo or "lr" not in algo:
        return None
    lr = float(algo.lr)
    algo.critic_lr = lr
    if algo.name not in DOUBLED_ACTOR_LR:
        return None
    algo.lr = 2 * lr
    return (f"this run was written before the critic's optimizer stopped stepping the actors (2026-12-07): its "
            f"actors moved two Adam steps of algo.lr={lr:g} per minibatch; it goes on with the same dynamics, "
            f"algo.lr={2 * lr:g} (the actors) and algo.critic_lr={lr:g}")


def stored_config(payload: dict, notes: list[str] | None = None) -> DictConfig:
    """The validated run config a checkpoint was written with; keys added to marl since (:data:`ADDED_KEYS`,
    ``algo.critic_lr``) get the value that reproduces that run (what changed is appended to ``notes``)."""
    cfg = OmegaConf.create(payload["config"])
    for key, value in ADDED_KEYS.items():
        if key not in cfg:
            cfg[key] = value
    note = _split_lr(cfg.algo) if "algo" in cfg else None
    if note is not None and notes is not None:
        notes.append(note)
    if "ray" not in cfg:  # written before env.backend=ray existed: the ray section's defaults (unused by that run)
        from marl.config import CONFIG_DIR

        cfg.ray = OmegaConf.load(CONFIG_DIR / "config.yaml").ray
    return validate(cfg)


def check_compatible(payload: dict, env_name: str, algo_name: str | None, spec: EnvSpec, path: str | Path) -> None:
    """Refuse a checkpoint written for another env, algorithm, or agent spaces."""
    meta = payload["meta"]
    if meta["env"] != env_name:
        raise CheckpointError(
            f"checkpoint '{path}' was trained on env '{meta['env']}', not on '{env_name}'",
            f"use env={meta['env']} or a checkpoint trained on {env_name}",
        )
    here = spaces_signature(spec)
    if meta["spaces"] != here:
        raise CheckpointError(
            f"checkpoint '{path}' was trained on env '{env_name}' with other agents or spaces:\n"
            f"  checkpoint: {meta['spaces'][:300]}\n  this env:   {here[:300]}",
            "use the env settings (env.kwargs) the checkpoint was trained with",
        )
    if algo_name is not None and meta["algo"] != algo_name:
        raise CheckpointError(
            f"checkpoint '{path}' was written by algo '{meta['algo']}', not '{algo_name}'",
            f"use algo={meta['algo']} to resume it",
        )


# algo keys that decide the shapes of the networks and their saved state: fixed for the life of a run
ARCH_KEYS = ("hidden", "critic_hidden", "activation", "conv", "sharing", "groups", "agent_id", "symmetric",
             "normalize_obs", "normalize_reward", "value_norm", "team_reward")


def load_learner(learner: Any, payload: dict, path: str | Path, cfg: DictConfig | None = None) -> None:
    """``learner.load_state_dict(payload["learner"])``; networks of another shape than the checkpoint's (an
    architecture key changed on resume) are a :class:`CheckpointError` naming the tensor and the changed keys."""
    state = payload["learner"]
    try:
        learner.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError, ValueError) as err:
        where = _first_mismatch(learner, state) or f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
        changed = _changed_arch_keys(payload, cfg) if cfg is not None else []
        keys = ", ".join(f"algo.{k}" for k in ARCH_KEYS[:4])
        raise CheckpointError(
            f"checkpoint '{path}' does not fit the networks this config builds: {where}"
            + (f"; changed since training: {'; '.join(changed)}" if changed else ""),
            f"architecture keys ({keys}, ...) cannot change on resume: drop "
            f"{' '.join(c.split(' ')[0] + '=...' for c in changed) or 'the architecture overrides'} to resume the "
            "run as trained, or start a new run",
        ) from None


def _first_mismatch(learner: Any, state: dict) -> str | None:
    """The first tensor whose shape (or presence) differs between ``learner`` and the saved ``state``."""
    for name, m in learner.modules().items():
        saved = state["modules"].get(name)
        if saved is None:
            return f"'{name}' is not in the checkpoint"
        if not isinstance(m, torch.nn.Module):
            continue
        here = m.state_dict()
        for k, v in here.items():
            if k not in saved:
                return f"'{name}.{k}' {list(v.shape)} is not in the checkpoint"
            if tuple(saved[k].shape) != tuple(v.shape):
                return f"'{name}.{k}' is {list(saved[k].shape)} in the checkpoint, {list(v.shape)} here"
        extra = [k for k in saved if k not in here]
        if extra:
            return f"the checkpoint holds '{name}.{extra[0]}', which these networks lack"
    return None


def _changed_arch_keys(payload: dict, cfg: DictConfig) -> list[str]:
    """``"algo.hidden [64, 64] -> [128, 128]"`` for each architecture key that differs from the trained config."""
    trained = OmegaConf.create(payload["config"]).get("algo", {})
    out = []
    for k in ARCH_KEYS:
        was, now = trained.get(k), cfg.algo.get(k)
        was = OmegaConf.to_container(was) if OmegaConf.is_config(was) else was
        now = OmegaConf.to_container(now) if OmegaConf.is_config(now) else now
        if was != now:
            out.append(f"algo.{k} {was} -> {now}")
    return out


def find_latest(run_or_file: str | Path) -> Path:
    """The checkpoint to use for a run directory (``final.pt``, else the newest ``step_*.pt``) or a file itself."""
    p = Path(run_or_file)
    if p.is_file():
        return p
    d = p / CKPT_DIR
    if not p.exists():
        raise CheckpointError(f"'{p}' does not exist", "pass an existing run directory or checkpoint file")
    cands = sorted((int(m.group(1)), f) for f in d.glob("step_*.pt") if (m := _STEP_RE.search(f.name)))
    if (d / "final.pt").is_file():
        final_steps = load(d / "final.pt")["meta"]["env_steps"]
        if not cands or final_steps >= cands[-1][0]:
            return d / "final.pt"
    if not cands:
        raise CheckpointError(f"no checkpoint found in '{p}'", f"expected {d}/step_*.pt or final.pt")
    return cands[-1][1]


def prune(run_dir: str | Path, keep: int = 3) -> None:
    """Delete all but the newest ``keep`` periodic checkpoints (``final.pt`` is never deleted)."""
    d = Path(run_dir) / CKPT_DIR
    cands = sorted((int(m.group(1)), f) for f in d.glob("step_*.pt") if (m := _STEP_RE.search(f.name)))
    for _, f in cands[:-keep]:
        f.unlink(missing_ok=True)
