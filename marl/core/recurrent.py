"""Recurrent torsos (GRU / LSTM) over the member axis, and the chunking of rollouts into BPTT sequences.

A :class:`RecurrentNet` is ``pre -> cell -> out``: the MLP (and optional conv) layers of ``hidden``, a GRU or LSTM
cell of ``rnn_hidden`` units, a linear output. Like :class:`marl.core.networks.MLP` it takes inputs ``[..., M, in]``
(``M`` members: one weight set shared by all, or one per agent, still one batched call). Its state is one tensor
``[..., M, S]`` (``S = rnn_hidden`` for a GRU, ``2 * rnn_hidden`` for an LSTM: ``h`` then ``c``).

State rules, the same at collection and in the update (:meth:`RecurrentNet.sequence`): the state fed to step ``t``
is zero where ``reset[t]`` (an episode starts there), and the state after step ``t`` is the cell's output only where
``advance[t]`` (the agent acted: padded, waiting and departed agents keep theirs; a padded agent's stays zero).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from marl.core.networks import ACTIVATIONS, ConvTorso, MemberLinear

RNN_KINDS = ("gru", "lstm")


class MemberGRU(nn.Module):
    """GRU cell with ``members`` weight sets: ``x [..., M, in]``, ``h [..., M, H] -> h' [..., M, H]``."""

    def __init__(self, in_dim: int, hidden: int, members: int = 1):
        super().__init__()
        self.hidden, self.state_dim = hidden, hidden
        self.ih = MemberLinear(in_dim, 3 * hidden, members, gain=1.0)
        self.hh = MemberLinear(hidden, 3 * hidden, members, gain=1.0)

    def cell(self, gi: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step from the input projection ``gi = ih(x)`` -> (output, new state), both ``[..., M, H]``."""
        ir, iz, in_ = gi.chunk(3, dim=-1)
        hr, hz, hn = self.hh(h).chunk(3, dim=-1)
        r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
        n = torch.tanh(in_ + r * hn)
        h = n + z * (h - n)
        return h, h


class MemberLSTM(nn.Module):
    """LSTM cell with ``members`` weight sets; the state ``[..., M, 2H]`` is ``h`` then ``c``; forget bias 1."""

    def __init__(self, in_dim: int, hidden: int, members: int = 1):
        super().__init__()
        self.hidden, self.state_dim = hidden, 2 * hidden
        self.ih = MemberLinear(in_dim, 4 * hidden, members, gain=1.0)
        self.hh = MemberLinear(hidden, 4 * hidden, members, gain=1.0)
        with torch.no_grad():
            self.ih.bias[:, hidden : 2 * hidden] = 1.0

    def cell(self, gi: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, c = state.split(self.hidden, dim=-1)
        i, f, g, o = (gi + self.hh(h)).chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, torch.cat([h, c], dim=-1)


CELLS = {"gru": MemberGRU, "lstm": MemberLSTM}


class RecurrentNet(nn.Module):
    """``[..., M, in] -> [..., M, out]`` through ``hidden`` layers, a ``kind`` cell of ``rnn_hidden`` units and a
    linear output (orthogonal init, output gain ``out_gain``); ``conv`` layers first for (H, W, C) observations."""

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int, members: int, activation: str,
                 out_gain: float, kind: str, rnn_hidden: int, image_shape: Sequence[int] | None = None,
                 conv: Sequence[Sequence[int]] | None = None):
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        if conv:
            torso = ConvTorso(image_shape or (), conv, in_dim, members)
            layers.append(torso)
            d = torso.out_dim
        for h in hidden:
            layers += [MemberLinear(d, h, members, gain=math.sqrt(2)), ACTIVATIONS[activation]()]
            d = h
        self.pre = nn.Sequential(*layers)
        self.rnn = CELLS[kind](d, rnn_hidden, members)
        self.out = MemberLinear(rnn_hidden, out_dim, members, gain=out_gain)
        self.state_dim = self.rnn.state_dim

    def step(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: ``x [..., M, in]``, ``state [..., M, S]`` -> (output ``[..., M, out]``, new state)."""
        y, state = self.rnn.cell(self.rnn.ih(self.pre(x)), state)
        return self.out(y), state

    def sequence(self, x: torch.Tensor, state: torch.Tensor, reset: torch.Tensor, advance: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Replay of sequences (batch first): ``x [B, L, ..., M, in]`` from ``state [B, ..., M, S]`` (the state fed
        to step 0), with ``reset`` / ``advance [B, L, ..., M]`` (module docstring) -> (outputs
        ``[B, L, ..., M, out]``, the states after every step ``[B, L, ..., M, S]``). The layers around the cell run
        once over all ``L`` steps."""
        gi = self.rnn.ih(self.pre(x))
        dims = tuple(d for d in range(reset.dim()) if d != 1)
        any_reset, all_advance = reset.any(dim=dims).tolist(), advance.all(dim=dims).tolist()  # skip no-op masks
        ys, after = [], []
        for t in range(x.shape[1]):
            if any_reset[t]:
                state = torch.where(reset[:, t].unsqueeze(-1), torch.zeros_like(state), state)
            y, new = self.rnn.cell(gi[:, t], state)
            state = new if all_advance[t] else torch.where(advance[:, t].unsqueeze(-1), new, state)
            ys.append(y)
            after.append(state)
        return self.out(torch.stack(ys, dim=1)), torch.stack(after, dim=1)


def chunk_rows(x: torch.Tensor, carry: int, length: int, fill: float | bool = 0) -> torch.Tensor:
    """Rollout rows ``[R = C + T, E, ...]`` -> sequences ``[K, L, ...]``: the ``T`` step rows of every copy cut into
    ``T / L`` chunks of ``L`` steps (chunk-major, then copy), then the ``C`` carry rows of every copy, each its own
    chunk of one step padded with ``fill`` to ``L`` (a carried transition replays from its recorded state alone).
    ``K = (T / L) * E + C * E``."""
    C, L = carry, length
    T, E = x.shape[0] - C, x.shape[1]
    rest = x.shape[2:]
    steps = x[C:].reshape(T // L, L, E, *rest).transpose(1, 2).reshape(T // L * E, L, *rest)
    if C == 0:
        return steps
    carried = x[:C].reshape(C * E, 1, *rest)
    pad = torch.full((C * E, L - 1, *rest), fill, dtype=x.dtype, device=x.device)
    return torch.cat([steps, torch.cat([carried, pad], dim=1)], dim=0)


def chunk_starts(x: torch.Tensor, carry: int, length: int) -> torch.Tensor:
    """The value of rows ``[R, E, ...]`` at the first step of every chunk of :func:`chunk_rows` -> ``[K, ...]``
    (the recorded states a chunk replays from)."""
    C, L = carry, length
    T, E = x.shape[0] - C, x.shape[1]
    starts = x[C::L][: T // L].reshape(T // L * E, *x.shape[2:])
    return starts if C == 0 else torch.cat([starts, x[:C].reshape(C * E, *x.shape[2:])], dim=0)


def episode_starts(done: torch.Tensor, carry: int) -> torch.Tensor:
    """``reset [R, E]``: row ``t`` starts a new episode (the copy's episode ended at step row ``t - 1``). The first
    step row and the carry rows never reset: their recorded state already is the state after any reset."""
    reset = torch.zeros_like(done)
    reset[carry + 1 :] = done[carry:-1]
    return reset
