"""Algorithm name -> Learner class and a learner bound to an env (capability flags live in
:data:`marl.config.ALGOS`)."""

from __future__ import annotations

import importlib

_LEARNERS = {
    "reinforce": "marl.algos.reinforce:Reinforce",
    "a2c": "marl.algos.a2c:A2C",
    "ppo": "marl.algos.ppo:PPO",
    "ddpg": "marl.algos.ddpg:DDPG",
    "td3": "marl.algos.td3:TD3",
    "sac": "marl.algos.sac:SAC",
    "maddpg": "marl.multi.maddpg:MADDPG",
    "matd3": "marl.multi.maddpg:MATD3",
    "ippo": "marl.multi.ippo:IPPO",
    "mappo": "marl.multi.mappo:MAPPO",
    "happo": "marl.multi.happo:HAPPO",
    "grpo": "marl.algos.grpo:GRPO",
    "trpo": "marl.algos.trpo:TRPO",
    "hatrpo": "marl.multi.hatrpo:HATRPO",
}


def learner_class(name: str) -> type:
    module, cls = _LEARNERS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def make_learner(cfg, env, device: str):
    """The learner of ``cfg.algo.name`` for ``env`` on ``device`` (a :class:`marl.algos.base.Learner`)."""
    return learner_class(cfg.algo.name)(cfg, env, device)
