"""Env adapters: every env (PettingZoo AEC / parallel, gymnasium) behind one batched, fixed-shape step interface."""

from marl.adapters.base import EnvSpec, EpisodeStat, GroupSpec, StepOut, VecMultiEnv
from marl.adapters.registry import available_envs, make_env, make_vec_env, resolve_env_config

__all__ = [
    "EnvSpec",
    "EpisodeStat",
    "GroupSpec",
    "StepOut",
    "VecMultiEnv",
    "available_envs",
    "make_env",
    "make_vec_env",
    "resolve_env_config",
]
