"""A Ray rollout worker: a share of the env copies plus a CPU copy of the learner, collecting whole rollouts.

The worker holds a learner of the run's own algorithm built from the same config on ``envs_per_worker`` copies, and
collects with that learner's own :meth:`~marl.algos.onpolicy.OnPolicyLearner.collect` (the one rollout path): the
driver sends the policy weights and the normalizer statistics, the worker collects ``algo.num_steps`` steps of its
copies and returns the rollout buffer as numpy arrays ``[R(+1), E_w, ...]`` together with what the learner needs to
join it: the next observation, finished episodes (env indices in the run's numbering), its share of the
observation / reward statistics gathered during the rollout, its copies' running discounted returns, and the
version of the weights it acted with. What is per env copy stays here between rollouts: the env copies mid-episode,
the carry rows of transitions a turn-based game left open (:func:`marl.rollout.carry_over`, applied by the worker
itself right after the rollout, exactly as the learner does on the joined buffer) and the reward scaler's running
returns.

Off-policy learners collect ``algo.train_freq`` steps with their own :meth:`marl.algos.ddpg.DDPG.collect` into a
record (actions and outcome per step) instead of their replay; GRPO returns its whole rounds and its groups'
advantages; a self-play worker's opponent pool plays the learner's snapshots for this worker's copies.

The class is plain Python; :mod:`marl.distributed.driver` wraps it with ``ray.remote``. Without Ray it runs as is
(handy to debug a worker in one process).
"""

from __future__ import annotations

import os
import sys
from dataclasses import fields

import numpy as np
import torch
from omegaconf import OmegaConf

from marl.adapters.base import StepOut
from marl.algos.base import rng_state, seed_everything, set_rng_state
from marl.algos.ddpg import DDPG
from marl.algos.grpo import GRPO
from marl.core.normalization import RunningMeanStd
from marl.distributed.driver import acting_modules, join_steps
from marl.rollout import Rollout, carry_over
from marl.selfplay import attach_pool


def _resolve(ref):
    """An object-store reference's value (a worker run without Ray gets the values themselves)."""
    import ray

    return ray.get(ref) if isinstance(ref, ray.ObjectRef) else ref


class StatsTee:
    """A :class:`RunningMeanStd` that also gathers what it is updated with into ``delta`` (a fresh statistic with no
    samples), so the driver can merge each worker's share of a rollout exactly (:meth:`RunningMeanStd.merge`)."""

    def __init__(self, main: RunningMeanStd):
        self.main = main
        self.delta = RunningMeanStd(tuple(main.mean.shape), eps=0.0)

    def update(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        self.main.update(x, mask)
        self.delta.update(x, mask)

    def __getattr__(self, name: str):
        if name in ("main", "delta") or name.startswith("__"):  # (copy / pickle look-ups before __init__)
            raise AttributeError(name)
        return getattr(self.main, name)


def rollout_arrays(buf: Rollout) -> dict[str, np.ndarray]:
    """Every tensor of ``buf`` as a numpy copy, keyed ``field`` or ``group/field`` (``mask`` only where it exists)."""
    out = {}
    for f in fields(buf):
        v = getattr(buf, f.name)
        if torch.is_tensor(v):
            out[f.name] = v.detach().cpu().numpy().copy()
    for g, gb in buf.groups.items():
        for f in fields(gb):
            v = getattr(gb, f.name)
            if v is not None:
                out[f"{g}/{f.name}"] = v.detach().cpu().numpy().copy()
    return out


def load_arrays(buf: Rollout, arrays: dict[str, np.ndarray], rows: int | None = None) -> None:
    """Write ``arrays`` (as :func:`rollout_arrays` gives, possibly joined along the env axis) into ``buf`` (only its
    first ``rows`` rows where given: GRPO's rounds)."""
    for key, a in arrays.items():
        if "/" in key:
            g, name = key.split("/", 1)
            dst = getattr(buf.groups[g], name)
        else:
            dst = getattr(buf, key)
        (dst if rows is None else dst[:rows]).copy_(torch.from_numpy(a))


class RolloutWorker:
    """``num_envs`` env copies (the run's copies ``offset .. offset + num_envs - 1``) and a CPU learner of the run's
    algorithm. ``seed`` seeds this worker's torch / numpy / python RNGs (action sampling); the env copies get their
    seeds from :meth:`reset`."""

    def __init__(self, cfg: dict, index: int, num_envs: int, offset: int, seed: int, paths: dict | None = None):
        paths = paths or {}
        for p in reversed(paths.get("sys_path", [])):
            if p not in sys.path:
                sys.path.insert(0, p)
        if paths.get("cwd") and os.path.isdir(paths["cwd"]):
            os.chdir(paths["cwd"])
        torch.set_num_threads(1)
        from marl.algos import make_learner
        from marl.train import build

        conf = OmegaConf.create(cfg)
        conf.num_envs = num_envs
        conf.env.backend = "inprocess"
        self.index, self.offset, self.E = index, offset, num_envs
        seed_everything(seed)
        self.env = build(conf, num_envs=num_envs)
        self.learner = make_learner(conf, self.env, "cpu")
        lr = self.learner
        run = OmegaConf.create(cfg)  # the run's num_envs: which of its copies the opponent pool plays
        self.pool = attach_pool(run, lr, offset=offset, seed=seed)  # its snapshots: the learner's (collect)
        if self.pool is not None:
            self.pool.takes_snapshots = False
        self.grpo = isinstance(lr, GRPO)
        if self.grpo:  # whole groups of the run's numbering: group j here is the run's group offset / G + j
            lr.group_offset = offset // lr.G
        self.offpolicy = isinstance(lr, DDPG)
        self.tees: dict[str, StatsTee] = {}
        if self.offpolicy:  # the off-policy learner collects into this list, and the driver stores it in its replay
            lr.record = []
            lr.step_envs = int(cfg["num_envs"]) if cfg["ray"]["mode"] == "sync" else num_envs
            for g, gs in lr.groups.items():
                if gs.obs_rms is not None:
                    self.tees[f"obs/{g}"] = gs.obs_rms = StatsTee(gs.obs_rms)
            return
        if lr.obs_rms is not None:
            for g in list(lr.obs_rms):
                self.tees[f"obs/{g}"] = lr.obs_rms[g] = StatsTee(lr.obs_rms[g])
        if lr.state_rms is not None:
            self.tees["state"] = lr.state_rms = StatsTee(lr.state_rms)
        if lr.reward_scaler is not None:
            self.tees["reward"] = lr.reward_scaler.rms = StatsTee(lr.reward_scaler.rms)

    # ------------------------------------------------------------------ env copies
    def ping(self) -> int:
        return self.index

    def reset(self, seed: int) -> StepOut:
        """Reset the copies (copy ``e`` gets ``seed + e``; pass the run seed plus :attr:`offset`), forget open
        transitions and running returns; returns the first observation."""
        self.learner.reset_env(seed)
        return self.learner.last

    def history(self) -> dict:
        """The copies' action record (:class:`marl.adapters.replay.History` state) and this worker's RNG states."""
        out = {"history": self.env.history.state_dict(), "rng": rng_state(self.learner.gen)}
        if self.grpo:  # this worker's round counter (its rounds' reset seeds)
            out["rounds"] = self.learner.rounds
        if self.pool is not None:  # the pool's opponent and seat per copy, its RNG states and snapshots
            out["pool"] = self.pool.state_dict()
        if self.offpolicy:  # the exploration noise of the copies (Ornstein-Uhlenbeck's state)
            out["noise"] = {g: gs.noise.state_dict() for g, gs in self.learner.groups.items() if gs.noise is not None}
        return out

    def restore(self, history: dict, carry: dict, ret: torch.Tensor | None) -> StepOut:
        """Rebuild the copies mid-episode from :meth:`history`'s record; set the carry rows and running returns the
        learner checkpointed for these copies. Raises :class:`marl.adapters.replay.NotRestorable` when it cannot."""
        out = self.env.restore(history["history"])
        set_rng_state(history["rng"], self.learner.gen)
        self.learner.last = out
        if self.grpo:
            self.learner.rounds = int(history["rounds"])
        if self.pool is not None:
            self.pool.load_state_dict(history["pool"])
            self.pool.takes_snapshots, self.pool.mirrored = False, True  # (its snapshots are the learner's)
        if self.offpolicy:
            for g, state in history.get("noise", {}).items():
                self.learner.groups[g].noise.load_state_dict(state)
            return out
        self.learner._load_carry(carry)
        if self.learner.reward_scaler is not None:
            self.learner.reward_scaler.ret = ret if ret is not None and ret.numel() else None
        return out

    # ------------------------------------------------------------------ collection
    def collect(self, weights: dict) -> dict:
        """One rollout with ``weights`` (see :func:`marl.distributed.driver.weights_payload`)."""
        lr = self.learner
        for key, module in acting_modules(lr).items():
            module.load_state_dict(weights["modules"][key])
        for key, tee in self.tees.items():
            tee.main.load_state_dict(weights["stats"][key])
            tee.delta = RunningMeanStd(tuple(tee.main.mean.shape), eps=0.0)
        lr.env_steps = int(weights["env_steps"])
        if self.pool is not None:
            refs = dict(weights["snapshots"])
            self.pool.mirror(list(refs), lambda step: _resolve(refs[step]))
        if self.offpolicy:
            return self._collect_steps(int(weights["version"]))
        buf = lr.collect()
        if self.grpo:
            return self._grpo_result(buf, int(weights["version"]))
        arrays = rollout_arrays(buf)
        acting, terminated, left = lr.unit_flags(buf)
        done = buf.done.unsqueeze(-1) | terminated | left
        carry_over(buf, lr.units.unit_of, *lr.open_transitions(buf, acting, done))
        episodes = self._episodes()
        scaler = lr.reward_scaler
        return {
            "index": self.index,
            "version": int(weights["version"]),
            "arrays": arrays,
            "last": lr.last,
            "episodes": episodes,
            "stats": {k: t.main.state_dict() for k, t in self.tees.items()},
            "deltas": {k: t.delta.state_dict() for k, t in self.tees.items()},
            "ret": scaler.ret.clone() if scaler is not None and scaler.ret is not None else None,
        }

    def _grpo_result(self, buf: Rollout, version: int) -> dict:
        """GRPO: the ``R_w`` rows of this worker's whole rounds (``[R_w, E_w, ...]``; other workers' rounds may be
        longer or shorter) and its groups' advantages ``[R_w, E_w, U]``, computed here, where the rounds are
        known (they need rewards only, no weights)."""
        lr = self.learner
        rows = lr._rows
        adv = lr.group_advantages(buf)
        arrays = {k: a[:rows] for k, a in rollout_arrays(buf).items()}
        return {"index": self.index, "version": version, "arrays": arrays, "rows": rows,
                "adv": adv.detach().cpu().numpy(), "live_frac": lr._live_frac, "last": lr.last,
                "episodes": self._episodes(), "stats": {k: t.main.state_dict() for k, t in self.tees.items()},
                "deltas": {k: t.delta.state_dict() for k, t in self.tees.items()}, "ret": None}

    def _collect_steps(self, version: int) -> dict:
        """Off-policy: ``algo.train_freq`` steps of the copies with the learner's own exploration
        (:meth:`marl.algos.ddpg.DDPG.collect`); returns the observation before them (``first``) and each step's
        ``(actions, out)``, for the driver to store in the learner's replay as the learner would have."""
        lr = self.learner
        first = join_steps([lr.last])  # copies: the env may reuse its arrays
        lr.record = []
        lr.collect()
        steps = [({g: a.detach().cpu() for g, a in actions.items()}, join_steps([out])) for actions, out in lr.record]
        lr.record = []
        return {"index": self.index, "version": version, "first": first, "steps": steps, "last": lr.last,
                "episodes": self._episodes(), "stats": {k: t.main.state_dict() for k, t in self.tees.items()},
                "deltas": {k: t.delta.state_dict() for k, t in self.tees.items()}}

    def _episodes(self) -> list:
        """The episodes finished since the last call, with env indices in the run's numbering."""
        episodes, self.learner.episodes = self.learner.episodes, []
        for ep in episodes:
            ep.env_index += self.offset
        return episodes
