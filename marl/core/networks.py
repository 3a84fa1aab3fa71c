"""Networks: MLP (and optional conv) torsos with orthogonal init, policy heads, V and Q critics.

Every module takes inputs ``[..., M, in]`` where ``M`` is the member (agent) axis. With ``members=1`` one set of
weights serves every agent (shared policy); with ``members=M`` each agent has its own weights, yet all agents still
run in ONE batched matmul (a batched-weight linear layer), so per-agent policies cost no Python loop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from gymnasium import spaces
from torch import nn

from marl.core.distributions import BoundedGaussian, MaskedCategorical, MultiCategorical

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU}


class MemberLinear(nn.Module):
    """Linear layer with ``members`` independent weight sets: ``[..., M, in] -> [..., M, out]``."""

    def __init__(
        self, in_dim: int, out_dim: int, members: int = 1, gain: float = math.sqrt(2), bias_const: float = 0.0
    ):
        super().__init__()
        self.members = members
        w = torch.empty(members, out_dim, in_dim)
        for k in range(members):
            nn.init.orthogonal_(w[k], gain)
        self.weight = nn.Parameter(w)
        self.bias = nn.Parameter(torch.full((members, out_dim), bias_const))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.members == 1:
            return nn.functional.linear(x, self.weight.squeeze(0), self.bias.squeeze(0))  # views: cheap backward
        lead = x.shape[:-2]
        m, d = x.shape[-2], x.shape[-1]
        xm = x.reshape(-1, m, d).transpose(0, 1)  # [M, B, in]
        y = torch.baddbmm(self.bias.unsqueeze(1), xm, self.weight.transpose(1, 2))  # [M, B, out]
        return y.transpose(0, 1).reshape(*lead, m, -1)


class MLP(nn.Module):
    """``[..., M, in] -> [..., M, out]``; hidden ``activation``; orthogonal init, output gain ``out_gain``."""

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int],
        out_dim: int,
        members: int = 1,
        activation: str = "tanh",
        out_gain: float = 1.0,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        for h in hidden:
            layers += [MemberLinear(d, h, members), ACTIVATIONS[activation]()]
            d = h
        layers.append(MemberLinear(d, out_dim, members, gain=out_gain))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvTorso(nn.Module):
    """Conv layers for image / board observations: ``[..., M, P + K] -> [..., M, out_dim]``.

    The first ``P = H * W * C`` inputs are an observation in PettingZoo's ``(H, W, C)`` layout, flattened; they go
    through ``layers`` (``[channels, kernel]`` or ``[channels, kernel, stride]``, ReLU after each) and are flattened
    again; the last ``K`` inputs (e.g. an agent-id one-hot) pass through and are appended. ``members > 1`` gives
    every member its own conv weights.
    """

    def __init__(self, image_shape: Sequence[int], layers: Sequence[Sequence[int]], in_dim: int, members: int = 1):
        super().__init__()
        if len(image_shape) != 3:
            raise ValueError(f"a conv torso needs (H, W, C) observations, got shape {tuple(image_shape)}")
        self.h, self.w, self.c = (int(v) for v in image_shape)
        self.pixels = self.h * self.w * self.c
        self.extra = in_dim - self.pixels

        def build() -> nn.Sequential:
            mods: list[nn.Module] = []
            ch = self.c
            for spec in layers:
                out, k, stride = int(spec[0]), int(spec[1]), int(spec[2]) if len(spec) > 2 else 1
                conv = nn.Conv2d(ch, out, k, stride)
                nn.init.orthogonal_(conv.weight, math.sqrt(2))
                nn.init.zeros_(conv.bias)
                mods += [conv, nn.ReLU()]
                ch = out
            return nn.Sequential(*mods, nn.Flatten())

        self.convs = nn.ModuleList(build() for _ in range(members))
        with torch.no_grad():
            conv_out = self.convs[0](torch.zeros(1, self.c, self.h, self.w)).shape[-1]
        self.out_dim = int(conv_out) + self.extra

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead, m = x.shape[:-2], x.shape[-2]
        img = x[..., : self.pixels].reshape(-1, m, self.h, self.w, self.c).permute(0, 1, 4, 2, 3)  # [B, M, C, H, W]
        if len(self.convs) == 1:
            feats = self.convs[0](img.reshape(-1, self.c, self.h, self.w)).reshape(img.shape[0], m, -1)
        else:
            feats = torch.stack([conv(img[:, k]) for k, conv in enumerate(self.convs)], dim=1)
        feats = feats.reshape(*lead, m, -1)
        return torch.cat([feats, x[..., self.pixels :]], dim=-1) if self.extra else feats


def torso_mlp(in_dim: int, hidden: Sequence[int], out_dim: int, members: int, activation: str, out_gain: float,
              image_shape: Sequence[int] | None = None, conv: Sequence[Sequence[int]] | None = None,
              rnn: str | None = None, rnn_hidden: int = 64) -> nn.Module:
    """An :class:`MLP`, preceded by a :class:`ConvTorso` when ``conv`` layers are given (``image_shape`` needed);
    with ``rnn`` (gru | lstm) a :class:`marl.core.recurrent.RecurrentNet` (a cell between the layers and the output)."""
    if rnn:
        from marl.core.recurrent import RecurrentNet  # recurrent.py builds on this module's layers

        return RecurrentNet(in_dim, hidden, out_dim, members, activation, out_gain, rnn, rnn_hidden, image_shape, conv)
    if not conv:
        return MLP(in_dim, hidden, out_dim, members, activation, out_gain)
    torso = ConvTorso(image_shape or (), conv, in_dim, members)
    return nn.Sequential(torso, MLP(torso.out_dim, hidden, out_dim, members, activation, out_gain))


def action_dim(space: spaces.Space) -> int:
    """Network output size for a policy over ``space`` (logits or means)."""
    if isinstance(space, spaces.Discrete):
        return int(space.n)
    if isinstance(space, spaces.MultiDiscrete):
        return int(space.nvec.sum())
    if isinstance(space, spaces.Box):
        return int(math.prod(space.shape))
    raise TypeError(f"unsupported action space {space!r}")


class Actor(nn.Module):
    """Stochastic policy head for Discrete (masked categorical), MultiDiscrete, or Box (bounded Gaussian) actions."""

    def __init__(
        self,
        in_dim: int,
        action_space: spaces.Space,
        hidden: Sequence[int],
        members: int = 1,
        activation: str = "tanh",
        action_bound: str = "clip",
        log_std_init: float = 0.0,
        image_shape: Sequence[int] | None = None,
        conv: Sequence[Sequence[int]] | None = None,
        rnn: str | None = None,
        rnn_hidden: int = 64,
    ):
        super().__init__()
        self.space = action_space
        self.net = torso_mlp(in_dim, hidden, action_dim(action_space), members, activation, 0.01, image_shape, conv,
                             rnn, rnn_hidden)
        self.recurrent = bool(rnn)
        self.continuous = isinstance(action_space, spaces.Box)
        if self.continuous:
            d = action_dim(action_space)
            self.log_std = nn.Parameter(torch.full((members, d), float(log_std_init)))
            self.register_buffer("low", torch.as_tensor(action_space.low, dtype=torch.float32).reshape(-1))
            self.register_buffer("high", torch.as_tensor(action_space.high, dtype=torch.float32).reshape(-1))
            self.action_bound = action_bound

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None):
        """x ``[..., M, in]``, mask ``[..., M, A]`` -> a distribution over ``[..., M]`` agents."""
        return self.head(self.net(x), mask)

    def step(self, x: torch.Tensor, state: torch.Tensor, mask: torch.Tensor | None = None):
        """Recurrent actor, one step: x ``[..., M, in]``, state ``[..., M, S]`` -> (distribution, new state)."""
        out, state = self.net.step(x, state)
        return self.head(out, mask), state

    def sequence(self, x, state, reset, advance, mask: torch.Tensor | None = None):
        """Recurrent actor over sequences ``[B, L, ..., M, in]`` (see :meth:`RecurrentNet.sequence`) ->
        distribution over ``[B, L, ..., M]``."""
        out, _ = self.net.sequence(x, state, reset, advance)
        return self.head(out, mask)

    def head(self, out: torch.Tensor, mask: torch.Tensor | None = None, log_std: torch.Tensor | None = None):
        """Distribution from the network output ``[..., M, A]`` (logits or means; ``log_std`` overrides ``M``'s)."""
        if self.continuous:
            ls = (self.log_std if log_std is None else log_std).clamp(-20.0, 2.0)
            return BoundedGaussian(out, ls, self.low, self.high, self.action_bound)
        if isinstance(self.space, spaces.MultiDiscrete):
            return MultiCategorical(out, [int(n) for n in self.space.nvec], mask)
        return MaskedCategorical(out, mask)


class ValueCritic(nn.Module):
    """``V(x)``: ``[..., M, in] -> [..., M]``."""

    def __init__(self, in_dim: int, hidden: Sequence[int], members: int = 1, activation: str = "tanh",
                 image_shape: Sequence[int] | None = None, conv: Sequence[Sequence[int]] | None = None,
                 rnn: str | None = None, rnn_hidden: int = 64):
        super().__init__()
        self.net = torso_mlp(in_dim, hidden, 1, members, activation, 1.0, image_shape, conv, rnn, rnn_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)

    def step(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Recurrent critic, one step -> (values ``[..., M]``, new state ``[..., M, S]``)."""
        v, state = self.net.step(x, state)
        return v.squeeze(-1), state

    def sequence(self, x, state, reset, advance) -> tuple[torch.Tensor, torch.Tensor]:
        """Recurrent critic over sequences ``[B, L, ..., M, in]`` -> (values ``[B, L, ..., M]``, states after each
        step)."""
        v, after = self.net.sequence(x, state, reset, advance)
        return v.squeeze(-1), after


class DeterministicActor(nn.Module):
    """``mu(x)`` in the Box bounds (tanh scaled): ``[..., M, in] -> [..., M, D]``."""

    def __init__(
        self, in_dim: int, action_space: spaces.Box, hidden: Sequence[int], members: int = 1, activation="relu"
    ):
        super().__init__()
        self.net = MLP(in_dim, hidden, action_dim(action_space), members, activation, out_gain=0.01)
        low = torch.as_tensor(action_space.low, dtype=torch.float32).reshape(-1)
        high = torch.as_tensor(action_space.high, dtype=torch.float32).reshape(-1)
        self.register_buffer("center", (high + low) / 2)
        self.register_buffer("half_range", (high - low) / 2)  # not "half": nn.Module.half() exists

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.center + self.half_range * torch.tanh(self.net(x))


class QCritic(nn.Module):
    """An ensemble of ``n_q`` Q functions (1 for DDPG; TD3 and SAC's twin critics: 2):
    ``Q(x, a)``: ``[..., M, in]``, ``[..., M, D] -> [..., M, n_q]``; ``first=True`` evaluates the first only
    (``[..., M, 1]``: TD3's actor loss). With ``n_out > 1`` (discrete SAC: one value per action, no action input,
    ``act_dim=0``) -> ``[..., M, n_q, n_out]``."""

    def __init__(self, in_dim: int, act_dim: int, hidden: Sequence[int], members: int = 1, activation: str = "relu",
                 n_q: int = 1, n_out: int = 1):
        super().__init__()
        self.n_q, self.n_out = n_q, n_out
        self.nets = nn.ModuleList(MLP(in_dim + act_dim, hidden, n_out, members, activation, out_gain=1.0)
                                  for _ in range(n_q))

    def forward(self, x: torch.Tensor, action: torch.Tensor | None = None, first: bool = False) -> torch.Tensor:
        h = x if action is None else torch.cat([x, action], dim=-1)
        nets = self.nets[:1] if first else self.nets
        if self.n_out == 1:
            return torch.stack([net(h).squeeze(-1) for net in nets], dim=-1)
        return torch.stack([net(h) for net in nets], dim=-2)


class SquashedGaussianActor(nn.Module):
    """SAC's actor: mean and state-dependent log-std ``[..., M, in] -> ([..., M, D], [..., M, D])``, log-std clamped
    to ``[-20, 2]``; sample with :func:`marl.core.distributions.squashed_gaussian_sample`."""

    def __init__(self, in_dim: int, act_dim: int, hidden: Sequence[int], members: int = 1, activation: str = "relu"):
        super().__init__()
        self.act_dim = act_dim
        self.net = MLP(in_dim, hidden, 2 * act_dim, members, activation, out_gain=0.01)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.net(x).split(self.act_dim, dim=-1)
        return mean, log_std.clamp(-20.0, 2.0)


@torch.no_grad()
def polyak_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Target averaging ``theta' <- tau theta + (1 - tau) theta'`` of the parameters; float buffers are copied."""
    torch._foreach_lerp_(list(target.parameters()), list(source.parameters()), tau)
    for t, s in zip(target.buffers(), source.buffers(), strict=True):
        if t.is_floating_point():
            t.copy_(s)


def adam(params, lr: float, eps: float) -> torch.optim.Adam:
    """Adam, fused on the CPU too: one kernel for all parameters instead of a Python loop over tensors (~0.25 ms a
    step for the small MLPs of RL; the same update up to float rounding)."""
    return torch.optim.Adam(params, lr=lr, eps=eps, fused=True)
