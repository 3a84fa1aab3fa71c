"""Exploration noise for deterministic policies (DDPG): Gaussian and Ornstein-Uhlenbeck.

A noise process produces one sample per env copy, agent and action dimension, ``[E, N, D]``, in units of the
action range half-width (the caller multiplies by the half-width and clips to the bounds). All randomness comes
from a ``torch.Generator`` passed in, so a seeded run draws the same noise.
"""

from __future__ import annotations

import math

import torch


class GaussianNoise:
    """Independent ``N(0, std^2)`` noise every step: ``sample() -> [*shape]``."""

    def __init__(self, shape: tuple[int, ...], std: float, generator: torch.Generator):
        self.shape, self.std, self.gen = tuple(shape), float(std), generator

    def sample(self) -> torch.Tensor:
        return self.std * torch.randn(self.shape, generator=self.gen)

    def reset(self, done: torch.Tensor | None = None) -> None:
        """Stateless: nothing to reset (same signature as :meth:`OUNoise.reset`)."""
        return None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        return None


class OUNoise:
    """Ornstein-Uhlenbeck noise, the discrete-time (dt = 1) AR(1) process ``x <- (1 - theta) x + sigma eps``.

    ``sigma = std * sqrt(1 - (1 - theta)^2)`` so that the stationary standard deviation is ``std``, the same scale as
    :class:`GaussianNoise` with that ``std``; ``theta`` sets the mean reversion (lag-1 autocorrelation ``1 - theta``,
    correlation time about ``1 / theta`` steps). The state ``x`` is ``[*shape]`` and starts at 0; ``reset(done)``
    zeroes the rows (leading axis, e.g. env copies ``[E]``) whose episode ended.
    """

    def __init__(self, shape: tuple[int, ...], std: float, theta: float, generator: torch.Generator):
        if not 0.0 < theta <= 1.0:
            raise ValueError(f"OU theta must be in (0, 1], got {theta}")
        self.shape, self.std, self.theta, self.gen = tuple(shape), float(std), float(theta), generator
        self.sigma = self.std * math.sqrt(1.0 - (1.0 - self.theta) ** 2)
        self.x = torch.zeros(self.shape)

    def sample(self) -> torch.Tensor:
        self.x = (1.0 - self.theta) * self.x + self.sigma * torch.randn(self.shape, generator=self.gen)
        return self.x.clone()

    def reset(self, done: torch.Tensor | None = None) -> None:
        """Zero the whole state (``done=None``) or the rows where ``done [shape[0]]`` is true."""
        if done is None:
            self.x.zero_()
        else:
            self.x[done.to(torch.bool)] = 0.0

    def state_dict(self) -> dict:
        return {"x": self.x.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.x = state["x"].clone().reshape(self.shape)


def make_noise(
    kind: str, shape: tuple[int, ...], std: float, theta: float, generator: torch.Generator
) -> GaussianNoise | OUNoise:
    """``kind`` gaussian | ou -> a noise process over ``[*shape]``."""
    if kind == "gaussian":
        return GaussianNoise(shape, std, generator)
    if kind == "ou":
        return OUNoise(shape, std, theta, generator)
    raise ValueError(f"unknown noise kind {kind!r}: expected gaussian or ou")


def smoothed_target_action(
    action: torch.Tensor, std: float, clip: float, generator: torch.Generator
) -> torch.Tensor:
    """TD3's target-policy smoothing: ``clip(a + clip(N(0, std^2), -clip, clip), -1, 1)`` for target actions
    ``a [..., D]`` in the critic's ``[-1, 1]`` scale (``std`` and ``clip`` as fractions of the half-range)."""
    eps = (std * torch.randn(action.shape, generator=generator)).clamp(-clip, clip).to(action.device)
    return (action + eps).clamp(-1.0, 1.0)
