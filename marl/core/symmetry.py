"""A mirror symmetry of a game: the mirrored position and move are exactly as good as the original.

Connect Four is symmetric under a left-right flip of the board: the observation ``(H, W, C)`` reversed along the
column axis, and column ``a`` becoming ``W - 1 - a``. Declared per env (``env.symmetry``), used by on-policy learners
with ``algo.symmetric=true``: the policy's logits and the value are averaged over the position and its mirror image,
so the networks are mirror-equivariant by construction and every sample teaches both images. (Training on mirrored
copies of the rollout instead makes those copies off-policy for a policy that is not symmetric: in a 2M-step connect
four run the PPO ratios of such samples exploded once the policy became near-deterministic.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from gymnasium import spaces

from marl.errors import ConfigError


class Mirror:
    """Flip of observation axis ``flip_axis`` of an ``(H, W, C)`` board and the matching permutation of a
    ``Discrete`` action space (``action_perm[a]`` is the mirror image of move ``a``)."""

    def __init__(self, obs_shape: Sequence[int], flip_axis: int, action_perm: Sequence[int]):
        self.obs_shape = tuple(int(v) for v in obs_shape)
        self.axis = int(flip_axis)
        self.size = int(torch.tensor(self.obs_shape).prod())
        self.perm = torch.as_tensor(list(action_perm), dtype=torch.long)

    @classmethod
    def for_space(cls, group: str, obs_space: spaces.Space, act_space: spaces.Space, flip_axis: int | None,
                  action_perm: Sequence[int] | None, env_name: str) -> Mirror:
        """A mirror for one group's spaces; a ConfigError names what does not fit."""
        fix = ("set env.symmetry.flip_axis (the observation axis the mirror reverses) and env.symmetry.action_perm "
               "(the mirror image of every action), or drop algo.symmetric")
        if flip_axis is None or action_perm is None:
            raise ConfigError(f"algo.symmetric=true, but env '{env_name}' declares no symmetry", fix)
        shape = tuple(obs_space.shape or ())
        if not -len(shape) <= flip_axis < len(shape):
            raise ConfigError(f"env.symmetry.flip_axis={flip_axis} is not an axis of group '{group}' observations "
                              f"of shape {shape}", fix)
        if not isinstance(act_space, spaces.Discrete):
            raise ConfigError(f"env.symmetry maps Discrete actions; group '{group}' has {act_space}", fix)
        perm = [int(a) for a in action_perm]
        if sorted(perm) != list(range(int(act_space.n))):
            raise ConfigError(f"env.symmetry.action_perm={perm} is not a permutation of the {act_space.n} actions "
                              f"of group '{group}'", fix)
        return cls(shape, flip_axis % len(shape), perm)

    def obs(self, x: torch.Tensor) -> torch.Tensor:
        """Flat observations ``[..., D]`` (the first ``prod(obs_shape)`` entries are the board) -> mirrored."""
        lead = x.shape[:-1]
        board = x[..., : self.size].reshape(*lead, *self.obs_shape).flip(len(lead) + self.axis).reshape(*lead, -1)
        return torch.cat([board, x[..., self.size :]], dim=-1) if x.shape[-1] > self.size else board

    def action(self, a: torch.Tensor) -> torch.Tensor:
        """Actions ``[...]`` (int) -> their mirror images."""
        return self.perm.to(a.device)[a]

    def logits_back(self, out: torch.Tensor) -> torch.Tensor:
        """Per-action outputs ``[..., A]`` computed on the mirrored position -> indexed by the original actions
        (entry ``a`` is the mirrored position's entry for move ``perm[a]``)."""
        return out[..., self.perm.to(out.device)]

    def average(self, net: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                per_action: bool) -> torch.Tensor:
        """``0.5 * (net(x) + net(mirror(x)))`` for network inputs ``[..., D]``, in one call of ``net`` (both images
        stacked on a new leading axis); ``per_action``: the mirror's outputs ``[..., A]`` are mapped back through
        :meth:`logits_back` first (policy logits; a value needs no mapping)."""
        y = net(torch.stack([x, self.obs(x)]))
        return 0.5 * (y[0] + (self.logits_back(y[1]) if per_action else y[1]))

    def mask(self, m: torch.Tensor) -> torch.Tensor:
        """Legal-move masks ``[..., A]``: mirrored move ``perm[a]`` is legal iff ``a`` was."""
        inv = torch.argsort(self.perm).to(m.device)
        return m[..., inv]
