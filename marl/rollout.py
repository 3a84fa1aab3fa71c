"""On-policy rollout: collect ``T`` steps of ``E`` env copies into preallocated time-major tensors ``[T, E, N_g, ...]``.

Observations are stored as the networks saw them (flattened, normalized). The critic is not run while acting: values
of all ``T + 1`` observations (and of the final observations of episodes that ended) are computed afterwards in one
batched pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from gymnasium import spaces

from marl.adapters.base import EnvSpec, StepOut


@dataclass
class GroupRollout:
    obs: torch.Tensor  # [T+1, E, N, D] float (normalized, flat)
    final_obs: torch.Tensor  # [T, E, N, D]  valid where done, and where the agent left
    action: torch.Tensor  # [T, E, N, *A]
    logp: torch.Tensor  # [T, E, N]
    mask: torch.Tensor | None  # [T, E, N, A] bool
    alive: torch.Tensor  # [T, E, N] bool
    acting: torch.Tensor  # [T, E, N] bool
    reward: torch.Tensor  # [T, E, N] (scaled when reward normalization is on)
    terminated: torch.Tensor  # [T, E, N] bool
    left: torch.Tensor  # [T, E, N] bool: the agent was truncated on its own at t (left unterminated; episode goes on)


@dataclass
class Rollout:
    groups: dict[str, GroupRollout]
    state: torch.Tensor  # [T+1, E, S]
    final_state: torch.Tensor  # [T, E, S]
    truncated: torch.Tensor  # [T, E] bool
    done: torch.Tensor  # [T, E] bool

    @property
    def T(self) -> int:
        return self.done.shape[0]


def action_shape(space: spaces.Space) -> tuple[tuple[int, ...], torch.dtype]:
    if isinstance(space, spaces.Discrete):
        return (), torch.int64
    if isinstance(space, spaces.MultiDiscrete):
        return (len(space.nvec),), torch.int64
    return (int(math.prod(space.shape)),), torch.float32


def allocate(spec: EnvSpec, T: int, E: int, device: torch.device) -> Rollout:
    groups = {}
    for g in spec.groups:
        n, d = g.n_agents, int(math.prod(g.obs_space.shape))
        a_shape, a_dtype = action_shape(g.action_space)
        mask = None
        if g.has_action_mask:
            a = int(g.action_space.n) if isinstance(g.action_space, spaces.Discrete) else int(g.action_space.nvec.sum())
            mask = torch.zeros(T, E, n, a, dtype=torch.bool, device=device)
        groups[g.name] = GroupRollout(
            obs=torch.zeros(T + 1, E, n, d, device=device),
            final_obs=torch.zeros(T, E, n, d, device=device),
            action=torch.zeros(T, E, n, *a_shape, dtype=a_dtype, device=device),
            logp=torch.zeros(T, E, n, device=device),
            mask=mask,
            alive=torch.zeros(T, E, n, dtype=torch.bool, device=device),
            acting=torch.zeros(T, E, n, dtype=torch.bool, device=device),
            reward=torch.zeros(T, E, n, device=device),
            terminated=torch.zeros(T, E, n, dtype=torch.bool, device=device),
            left=torch.zeros(T, E, n, dtype=torch.bool, device=device),
        )
    s = int(spec.state_shape[0])
    return Rollout(
        groups=groups,
        state=torch.zeros(T + 1, E, s, device=device),
        final_state=torch.zeros(T, E, s, device=device),
        truncated=torch.zeros(T, E, dtype=torch.bool, device=device),
        done=torch.zeros(T, E, dtype=torch.bool, device=device),
    )


def to_env_actions(actions: dict[str, torch.Tensor], spec: EnvSpec) -> dict[str, np.ndarray]:
    """Policy actions ``[E, N, *A]`` -> numpy in the env's action shape."""
    out = {}
    for g in spec.groups:
        a = actions[g.name].cpu().numpy()
        if isinstance(g.action_space, spaces.Box):
            a = a.reshape(*a.shape[:2], *g.action_space.shape)
        out[g.name] = a
    return out


def store_step(
    buf: Rollout, t: int, last: StepOut, obs: dict[str, torch.Tensor], state: torch.Tensor, masks: dict, actions, logps
) -> None:
    """Write what the agents saw (normalized ``obs`` / ``state``) and did at step ``t``."""
    for name, gb in buf.groups.items():
        gb.obs[t] = obs[name]
        if gb.mask is not None:
            gb.mask[t] = masks[name]
        gb.alive[t] = torch.from_numpy(last.alive[name])
        gb.acting[t] = torch.from_numpy(last.acting[name])
        gb.action[t] = actions[name]
        gb.logp[t] = logps[name]
    buf.state[t] = state


def store_outcome(buf: Rollout, t: int, out: StepOut, rewards: dict[str, torch.Tensor]) -> bool:
    """Write what step ``t`` produced (rewards, flags; final observations are written by the caller). True when the
    step has final observations to keep: an episode ended, or an agent was truncated on its own."""
    dev = buf.done.device
    done = torch.from_numpy(out.done).to(dev)
    any_left = False
    for name, gb in buf.groups.items():
        gb.reward[t] = rewards[name]
        term = torch.from_numpy(out.terminated[name]).to(dev)
        gb.terminated[t] = term
        left = gb.alive[t] & ~torch.from_numpy(out.alive[name]).to(dev) & ~term & ~done.unsqueeze(-1)
        gb.left[t] = left
        any_left = any_left or bool(left.any())
    buf.truncated[t] = torch.from_numpy(out.truncated)
    buf.done[t] = done
    return any_left or bool(out.done.any())
