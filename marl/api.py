"""The Python API: ``marl.train``, ``marl.load``, ``marl.evaluate`` — a thin face over what the scripts run.

    run = marl.train(env="cartpole", algo="ppo", total_steps=50_000, seed=1, **{"algo.lr": 1e-3})
    policy = marl.load(run.dir)                 # a run directory or a checkpoint file
    actions = policy.act(obs, deterministic=True)
    table = marl.evaluate(run.dir, episodes=100, opponent="random")

* :func:`train` composes ``configs/`` exactly as ``scripts/train.py env=E algo=A KEY=VALUE ...`` does (the tuned
  preset included) and runs :func:`marl.train.run`: the same validation, errors, run directory and resume.
* :func:`load` restores a trained policy (:func:`marl.matches.load_policy` / :func:`~marl.matches.make_policy`);
  :meth:`Policy.act` takes what the env gives, a PettingZoo observation dict ``{agent: obs}`` (with
  ``obs["action_mask"]`` or ``infos[agent]["action_mask"]`` honoured) or a gymnasium observation, converted by the
  adapter's own code (groups, padding, one-hot Discrete observations).
* :func:`evaluate` runs ``scripts/evaluate.py``'s evaluation and returns the table it prints.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from marl.adapters.parallel import ParallelCopy
from marl.adapters.vector import Buffers
from marl.algos.base import Learner
from marl.config import CONFIG_DIR, compose
from marl.errors import ConfigError
from marl.rollout import to_env_actions
from marl.rundir import default_run_dir, run_dir_of


@dataclass
class Run:
    """A finished training run: its directory, its final metrics (the last evaluation included), its config."""

    dir: Path
    metrics: dict[str, float]
    config: DictConfig


def _nested(overrides: dict[str, Any]) -> dict[str, Any]:
    """``{"algo.lr": 1e-3, "seed": 1}`` -> ``{"algo": {"lr": 1e-3}, "seed": 1}`` (dotted keys as on the CLI)."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        if isinstance(value, dict) and isinstance(node.get(leaf), dict):
            node[leaf].update(value)
        else:
            node[leaf] = value
    return out


def train(env: str | None = None, algo: str | None = None, **overrides: Any) -> Run:
    """Train ``algo`` on ``env`` like ``scripts/train.py env=ENV algo=ALGO KEY=VALUE ...``; ``overrides`` are config
    keys (``total_steps=50_000``, ``preset="none"``, ``resume=<run dir>``; dotted keys as ``**{"algo.lr": 1e-3}``).
    A mistake raises the :class:`marl.errors.MarlError` the CLI would print."""
    from marl.train import run

    values = _nested(overrides)
    if env is not None:
        values.setdefault("env", {})["name"] = env
    if algo is not None:
        values.setdefault("algo", {})["name"] = algo
    cfg = compose(values)
    if cfg.resume:
        run_dir = run_dir_of(cfg.resume)
    else:
        cfg.run_dir = cfg.run_dir or str(default_run_dir(cfg))
        run_dir = Path(cfg.run_dir)
    keys = [k for k in overrides if k != "resume"] + [k for k, v in (("env", env), ("algo", algo)) if v is not None]
    metrics = run(cfg, explicit_total_steps="total_steps" in overrides, explicit_keys=keys)
    return Run(run_dir, metrics, cfg)


class Policy:
    """A trained policy acting on env observations (:func:`load`); ``agents`` are the env's agents. Observations are
    what the configured env gives: for a run with ``env.preprocess`` or ``env.pad``, the env with those wrappers
    (:func:`marl.adapters.registry.make_env` builds it from ``policy.cfg.env``)."""

    def __init__(self, learner: Learner, cfg: DictConfig, env: Any):
        self.learner, self.cfg, self.spec = learner, cfg, env.spec
        self.gymnasium = cfg.env.kind == "gymnasium"
        self.vmas = cfg.env.kind == "vmas"
        self.agents = self.spec.agents
        if self.vmas:
            self.device = env.device
        elif self.gymnasium:
            self._to_batch = env._obs  # the adapter's conversion: [E, *obs] -> [E, 1, *obs] (one-hot Discrete)
        else:  # one env copy's rows, written by the adapter's own observation / action conversion
            self.buf = Buffers(env.layout, 1)
            self.copy = ParallelCopy(None, env.layout, self.buf, 0)

    def reset(self) -> None:
        """Start a new episode: clears a recurrent policy's state (``algo.rnn``); call it before every episode."""
        self.learner.reset_memory()

    @torch.no_grad()
    def act(self, obs: Any, infos: dict[str, dict] | None = None, deterministic: bool = True) -> Any:
        """Actions for ``obs``: a PettingZoo dict ``{agent: observation}`` of the agents to act (in an AEC game, the
        agent to move: ``{env.agent_selection: env.last()[0]}``) -> ``{agent: action}`` for those agents; a
        gymnasium observation -> one action. ``infos`` (PettingZoo): per-agent infos holding ``action_mask``.
        VMAS: its batched observations (a list in agent order, or ``{agent: [E, D]}``) -> ``{agent: [E, ...]}``
        action tensors (the list ``[actions[a] for a in policy.agents]`` is what ``vmas_env.step`` takes)."""
        if self.vmas:
            return self._act_vmas(obs, deterministic)
        if self.gymnasium:
            x = self._to_batch(np.asarray(obs)[None])
            actions = to_env_actions(self.learner.act({"agent": x}, {"agent": None}, deterministic), self.spec)
            a = actions["agent"][0, 0]
            return int(a) if a.ndim == 0 and np.issubdtype(a.dtype, np.integer) else a
        if not isinstance(obs, dict):
            raise ConfigError(f"policy.act needs a dict {{agent: observation}} for PettingZoo env "
                              f"'{self.spec.name}', got {type(obs).__name__}", f"agents: {', '.join(self.agents)}")
        unknown = [a for a in obs if a not in self.agents]
        if unknown:
            raise ConfigError(f"'{unknown[0]}' is not an agent of env '{self.spec.name}'",
                              f"agents: {', '.join(self.agents)}")
        copy, buf = self.copy, self.buf
        copy.clear_step()
        for a in self.agents:
            alive, acting, _, _, i = copy.at[a]
            if a in obs:
                copy.write_obs(a, obs[a], (infos or {}).get(a))
                alive[i] = acting[i] = True
            else:
                copy.clear_agent(a)
        groups = [g.name for g in self.spec.groups]
        actions = self.learner.act({g: buf[f"obs/{g}"] for g in groups},
                                   {g: buf.get(f"mask/{g}") for g in groups}, deterministic,
                                   {g: buf[f"acting/{g}"] for g in groups})  # recurrent: only these agents advance
        for g, a in to_env_actions(actions, self.spec).items():
            buf[f"act/{g}"][...] = a
        return {a: copy.action(a) for a in obs}


    def _act_vmas(self, obs: Any, deterministic: bool) -> dict[str, torch.Tensor]:
        by_agent = dict(zip(self.agents, obs, strict=True)) if isinstance(obs, list | tuple) else dict(obs)
        missing = [a for a in self.agents if a not in by_agent]
        if missing:
            raise ConfigError(f"policy.act needs the observations of every agent of VMAS env '{self.spec.name}', "
                              f"missing '{missing[0]}'", f"pass the list vmas_env.reset() / step() returns, or "
                              f"{{agent: [E, D]}} for {', '.join(self.agents)}")
        x = {g.name: torch.stack([torch.as_tensor(by_agent[a], device=self.device).reshape(
            len(by_agent[a]), -1).float() for a in g.agents], 1) for g in self.spec.groups}
        actions = self.learner.act(x, {g.name: None for g in self.spec.groups}, deterministic)
        return {a: actions[g.name][:, j] for g in self.spec.groups for j, a in enumerate(g.agents)}


def load(run_or_ckpt: str | Path) -> Policy:
    """The policy of a run directory (its newest checkpoint) or of a checkpoint file, checked against its env."""
    from marl.matches import load_policy, make_policy
    from marl.train import build

    cfg, payload, path = load_policy(run_or_ckpt)
    cfg.env.backend = "inprocess"  # one copy, only to describe the env's spaces
    env = build(cfg, num_envs=1)
    try:
        return Policy(make_policy(cfg, payload, path, env), cfg, env)
    finally:
        env.close()


@dataclass
class Evaluation:
    """What ``scripts/evaluate.py`` prints (``text``) and the numbers behind it (``summary``: wins / draws / losses
    per seat for turn-based games, team and per-agent returns otherwise, each with its 95% interval)."""

    summary: dict[str, Any]
    text: str

    def __str__(self) -> str:
        return self.text


def evaluate(run: str | Path, episodes: int = 100, opponent: str | None = None, **options: Any) -> Evaluation:
    """``scripts/evaluate.py run=RUN episodes=N [opponent=...] [KEY=VALUE ...]`` (``options``: seed, deterministic,
    num_envs, env, render, video): the same checks and errors; the table is printed and returned."""
    script = _evaluate_script()
    args = {"run": run, "episodes": episodes, **({"opponent": opponent} if opponent is not None else {}), **options}
    parsed = script.parse([f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in args.items()])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        summary = script.evaluate(parsed)
    print(out.getvalue(), end="")
    return Evaluation(summary, out.getvalue())


def _evaluate_script() -> Any:
    """``scripts/evaluate.py`` as a module (next to ``configs/``, as :data:`marl.config.CONFIG_DIR` is): one
    evaluation for the script and the API."""
    path = CONFIG_DIR.parent / "scripts" / "evaluate.py"
    spec = importlib.util.spec_from_file_location("marl_evaluate_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
