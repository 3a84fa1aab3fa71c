"""On-policy rollout: collect ``T`` steps of ``E`` env copies into preallocated time-major tensors ``[R, E, N_g, ...]``.

Observations are stored as the networks saw them (flattened, normalized). The critic is not run while acting: values
of all rows (and of the final observations of episodes that ended) are computed afterwards in one batched pass.

Rows: ``R = C + T``. The first ``C`` rows ("carry rows", one per value unit) hold transitions left open by the
previous rollout: in a turn-based game the agent that moved last before the cut has not yet seen its next own turn,
so its reward and next value are not known. Its transition is moved to carry row ``u`` (its value unit) and completes
in this rollout, as if the rollout had not been cut (:func:`carry_over`). Rows ``C .. C+T-1`` are this rollout's steps;
``obs`` / ``state`` have one more row (``R``): the observation after the last step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from gymnasium import spaces

from marl.adapters.base import EnvSpec, StepOut, as_tensor


@dataclass
class GroupRollout:
    """One group's rows (``R = C + T`` step rows; see the module docstring)."""

    obs: torch.Tensor  # [R+1, E, N, D] float (normalized, flat)
    final_obs: torch.Tensor  # [T, E, N, D]  valid where done, and where the agent left
    action: torch.Tensor  # [T, E, N, *A]
    logp: torch.Tensor  # [T, E, N]
    mask: torch.Tensor | None  # [T, E, N, A] bool
    alive: torch.Tensor  # [T, E, N] bool
    acting: torch.Tensor  # [T, E, N] bool
    reward: torch.Tensor  # [T, E, N] raw rewards of each agent (the advantages read Rollout.unit_reward)
    terminated: torch.Tensor  # [T, E, N] bool
    left: torch.Tensor  # [T, E, N] bool: the agent was truncated on its own at t (left unterminated; episode goes on)
    h: torch.Tensor | None = None  # [T, E, N, S] recurrent policies: the actor state fed to step t (None: feed-forward)


@dataclass
class Rollout:
    groups: dict[str, GroupRollout]
    state: torch.Tensor  # [R+1, E, S]
    final_state: torch.Tensor  # [R, E, S]
    truncated: torch.Tensor  # [R, E] bool
    done: torch.Tensor  # [R, E] bool
    unit_reward: torch.Tensor  # [R, E, U] the reward of each value unit (team or agent), scaled when normalize_reward
    carry: int = 0  # C: carry rows in front of the steps
    hv: torch.Tensor | None = None  # [R+1, E, U, S] recurrent critic: the unit states fed to each row (None: none)

    @property
    def T(self) -> int:
        """All step rows ``R`` (carry rows included)."""
        return self.done.shape[0]


def action_shape(space: spaces.Space) -> tuple[tuple[int, ...], torch.dtype]:
    if isinstance(space, spaces.Discrete):
        return (), torch.int64
    if isinstance(space, spaces.MultiDiscrete):
        return (len(space.nvec),), torch.int64
    return (int(math.prod(space.shape)),), torch.float32


def allocate(spec: EnvSpec, T: int, E: int, device: torch.device, units: int = 1, carry: int = 0,
             actor_state: dict[str, int] | None = None, critic_state: int = 0) -> Rollout:
    """Zeroed buffers for ``carry + T`` step rows of ``E`` copies and ``units`` value units; recurrent networks:
    ``actor_state`` (state size per group) and ``critic_state`` (per value unit) add the state fields."""
    groups = {}
    T = T + carry
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
            h=torch.zeros(T, E, n, actor_state[g.name], device=device) if (actor_state or {}).get(g.name) else None,
        )
    s = int(spec.state_shape[0])
    return Rollout(
        groups=groups,
        state=torch.zeros(T + 1, E, s, device=device),
        final_state=torch.zeros(T, E, s, device=device),
        truncated=torch.zeros(T, E, dtype=torch.bool, device=device),
        done=torch.zeros(T, E, dtype=torch.bool, device=device),
        unit_reward=torch.zeros(T, E, units, device=device),
        carry=carry,
        hv=torch.zeros(T + 1, E, units, critic_state, device=device) if critic_state else None,
    )


def to_env_actions(actions: dict[str, torch.Tensor], spec: EnvSpec) -> dict[str, np.ndarray | torch.Tensor]:
    """Policy actions ``[E, N, *A]`` -> the env's action shape: numpy for a numpy env, tensors on the env's device
    for a torch env (``spec.device``)."""
    out = {}
    for g in spec.groups:
        a = actions[g.name]
        a = a.cpu().numpy() if spec.device is None else a.to(spec.device)
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
        gb.alive[t] = as_tensor(last.alive[name], gb.alive.device)
        gb.acting[t] = as_tensor(last.acting[name], gb.acting.device)
        gb.action[t] = actions[name]
        gb.logp[t] = logps[name]
    buf.state[t] = state


def store_outcome(buf: Rollout, t: int, out: StepOut, rewards: dict[str, torch.Tensor]) -> bool:
    """Write what step ``t`` produced (rewards, flags; final observations are written by the caller). True when the
    step has final observations to keep: an episode ended, or an agent was truncated on its own."""
    dev = buf.done.device
    done = as_tensor(out.done, dev)
    any_left = False
    for name, gb in buf.groups.items():
        gb.reward[t] = rewards[name]
        term = as_tensor(out.terminated[name], dev)
        gb.terminated[t] = term
        left = gb.alive[t] & ~as_tensor(out.alive[name], dev) & ~term & ~done.unsqueeze(-1)
        gb.left[t] = left
        any_left = any_left or bool(left.any())
    buf.truncated[t] = as_tensor(out.truncated, dev)
    buf.done[t] = done
    return any_left or bool(out.done.any())


def carry_over(buf: Rollout, unit_of: torch.Tensor, last_row: torch.Tensor, open_: torch.Tensor) -> None:
    """Move every open transition into its carry row, for the next rollout to complete.

    ``unit_of [N]``: the value unit of every agent (group order); ``last_row [E, U]``: the row of unit ``u``'s last
    acting step in copy ``e``; ``open_ [E, U]``: that step's transition is still open (no episode end after it and
    the unit does not act at the next observation). Carry row ``u`` then holds, for copy ``e``, unit ``u``'s members
    that acted at that step (observation, action, log-prob, mask, state; recurrent networks: the actor and critic
    states fed to that step, which the update replays it from) and the unit's reward accumulated from that step to
    the end of the buffer; everything else in the carry rows is cleared. A transition already in a carry
    row that stays open (the unit did not act again) is kept, with the new rewards added."""
    C, E = buf.carry, buf.done.shape[1]
    if C == 0:
        return
    dev = buf.done.device
    e_idx = torch.arange(E, device=dev)
    # the unit reward from each row to the end: reverse cumulative sum, read at the pending row
    tail = buf.unit_reward.flip(0).cumsum(0).flip(0)  # [R, E, U]
    units = torch.arange(open_.shape[1], device=dev)
    pending_r = tail[last_row, e_idx[:, None], units[None, :]]  # [E, U]
    state = buf.state[last_row, e_idx[:, None]]  # [E, U, S]
    hv = buf.hv[last_row, e_idx[:, None], units[None, :]] if buf.hv is not None else None  # [E, U, H] critic states
    moved = []
    off = 0
    for gb in buf.groups.values():
        n = gb.acting.shape[2]
        ua = unit_of[off : off + n].to(dev)  # [N_g]
        off += n
        src = last_row[:, ua]  # [E, N_g]
        ee, nn = e_idx[:, None].expand(E, n), torch.arange(n, device=dev)[None, :].expand(E, n)
        take = open_[:, ua] & gb.acting[src, ee, nn]
        e_i, n_i = take.nonzero().unbind(-1)
        rows_src, rows_dst = src[e_i, n_i], ua[n_i]
        vals = {k: getattr(gb, k)[rows_src, e_i, n_i].clone() for k in ("obs", "action", "logp")}
        if gb.h is not None:
            vals["h"] = gb.h[rows_src, e_i, n_i].clone()
        if gb.mask is not None:
            vals["mask"] = gb.mask[rows_src, e_i, n_i].clone()
        moved.append((gb, rows_dst, e_i, n_i, vals))
    for gb in buf.groups.values():
        for k in ("obs", "final_obs", "action", "logp", "reward") + (("h",) if gb.h is not None else ()):
            getattr(gb, k)[:C] = 0
        for k in ("alive", "acting", "terminated", "left"):
            getattr(gb, k)[:C] = False
        if gb.mask is not None:
            gb.mask[:C] = True
    for gb, rows, e_i, n_i, vals in moved:
        for k, v in vals.items():
            getattr(gb, k)[rows, e_i, n_i] = v
        gb.alive[rows, e_i, n_i] = True
        gb.acting[rows, e_i, n_i] = True
    buf.unit_reward[:C] = 0
    buf.done[:C] = False
    buf.truncated[:C] = False
    e_o, u_o = open_.nonzero().unbind(-1)
    buf.unit_reward[u_o, e_o, u_o] = pending_r[e_o, u_o]
    buf.state[u_o, e_o] = state[e_o, u_o]
    if hv is not None:
        buf.hv[:C] = 0
        buf.hv[u_o, e_o, u_o] = hv[e_o, u_o]
