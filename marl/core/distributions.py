"""Action distributions: masked categorical, multi-categorical, a Gaussian bounded to a Box, the reparameterized
tanh-squashed Gaussian of SAC, and straight-through Gumbel-softmax samples (MADDPG's discrete actions).

Every distribution works on arbitrary leading dims ``[...]`` (e.g. ``[B, N]``), returns actions in the form sent to the
env, and gives ``log_prob`` of exactly that action.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Normal

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


class MaskedCategorical:
    """Categorical over ``A`` actions; ``mask[..., a] = False`` gives action ``a`` probability exactly 0.

    A row whose mask is all False (an agent that is not acting, whose action is ignored) is treated as unmasked.
    The same numbers as ``torch.distributions.Categorical`` (normalized logits, ``multinomial`` on the softmax, the
    same random draws) without its per-call argument validation and broadcasting, which cost several times the
    policy's own forward pass at the small batches of acting.
    """

    def __init__(self, logits: torch.Tensor, mask: torch.Tensor | None = None):
        if mask is not None:
            mask = mask.bool()
            mask = mask | ~mask.any(dim=-1, keepdim=True)
            logits = logits.masked_fill(~mask, float("-inf"))
        self.mask = mask
        self.logits = logits - logits.logsumexp(dim=-1, keepdim=True)  # [..., A] log-probabilities
        self._probs: torch.Tensor | None = None

    @property
    def probs(self) -> torch.Tensor:
        """[..., A]."""
        if self._probs is None:
            self._probs = torch.softmax(self.logits, dim=-1)
        return self._probs

    def sample(self) -> torch.Tensor:
        """[...] int64."""
        p = self.probs
        return torch.multinomial(p.reshape(-1, p.shape[-1]), 1, True).reshape(p.shape[:-1])

    def mode(self) -> torch.Tensor:
        return self.logits.argmax(dim=-1)

    def log_prob(self, action: torch.Tensor) -> torch.Tensor:
        """``action [...]`` -> ``[...]``."""
        a = action.long().unsqueeze(-1)
        logits = self.logits
        if a.shape[:-1] != logits.shape[:-1]:
            a, logits = torch.broadcast_tensors(a, logits)
            a = a[..., :1]
        return logits.gather(-1, a).squeeze(-1)

    def entropy(self) -> torch.Tensor:
        """[...]: ``-sum p log p`` with ``p = exp(log p)`` (the logits are normalized): on the CPU an elementwise exp
        is ~20x cheaper than a softmax over a few actions, and its backward too (within float rounding of it)."""
        p = self.logits.exp()
        logp = self.logits.clamp_min(torch.finfo(p.dtype).min)
        return -(p * logp).sum(-1)

    def kl(self, other: MaskedCategorical) -> torch.Tensor:
        """Exact ``KL(self || other)`` ``[...]``: 0 where ``self`` has probability 0, inf where only ``other`` has."""
        t = self.probs * (self.logits - other.logits)
        t = t.masked_fill((other.probs == 0).expand_as(t), float("inf"))
        t = t.masked_fill((self.probs == 0).expand_as(t), 0.0)
        return t.sum(-1)


class MultiCategorical:
    """Independent categoricals, one per MultiDiscrete component; actions ``[..., K]``; mask ``[..., sum(nvec)]``."""

    def __init__(self, logits: torch.Tensor, nvec: list[int], mask: torch.Tensor | None = None):
        lsplit = torch.split(logits, nvec, dim=-1)
        msplit = torch.split(mask, nvec, dim=-1) if mask is not None else [None] * len(nvec)
        self.parts = [MaskedCategorical(lg, m) for lg, m in zip(lsplit, msplit, strict=True)]

    def sample(self) -> torch.Tensor:
        return torch.stack([p.sample() for p in self.parts], dim=-1)

    def mode(self) -> torch.Tensor:
        return torch.stack([p.mode() for p in self.parts], dim=-1)

    def log_prob(self, action: torch.Tensor) -> torch.Tensor:
        return sum(p.log_prob(action[..., i]) for i, p in enumerate(self.parts))

    def entropy(self) -> torch.Tensor:
        return sum(p.entropy() for p in self.parts)


class BoundedGaussian:
    """Diagonal Gaussian whose samples are brought into ``[low, high]`` by ``bound``:

    * ``"clip"``: the sent action is ``clip(u)``; its log-prob is that of the clipped Gaussian (Fujita & Maeda 2018):
      the normal density inside the box, the tail mass ``log Phi`` at a bound. So ``log_prob(sample())`` is the log
      probability of exactly the action the env received.
    * ``"squash"``: the sent action is ``low + (tanh(u) + 1) (high - low) / 2`` with the change-of-variables correction.
      A dimension without two finite bounds cannot be squashed and follows the ``"clip"`` rule instead.

    An infinite bound is no bound: ``Box(-inf, inf)`` gives the plain Gaussian (finite log-probs and gradients).

    ``mean``/``log_std``: ``[..., D]``; actions ``[..., D]``; log_prob and entropy sum over ``D`` -> ``[...]``.
    Entropy is that of the underlying Gaussian (a standard, state-independent approximation for both bounds).
    """

    def __init__(self, mean: torch.Tensor, log_std: torch.Tensor, low: torch.Tensor, high: torch.Tensor, bound: str):
        self.mean, self.log_std = mean, log_std.expand_as(mean)
        self.std = self.log_std.exp()
        self.low, self.high, self.bound = low, high, bound
        self.has_low, self.has_high = torch.isfinite(low), torch.isfinite(high)
        self.squashed = self.has_low & self.has_high & (bound == "squash")  # [D]: dims sent through tanh
        # infinite bounds replaced by finite stand-ins wherever they enter arithmetic (their branch is never selected)
        self.safe_low = torch.where(self.has_low, low, torch.zeros_like(low))
        self.safe_high = torch.where(self.has_high, high, torch.ones_like(high))
        self.normal = Normal(self.mean, self.std, validate_args=False)  # finite: divergence is caught on the weights

    def _to_env(self, u: torch.Tensor) -> torch.Tensor:
        clipped = torch.maximum(torch.minimum(u, self.high), self.low)
        if not self.squashed.any():
            return clipped
        squashed = self.safe_low + (torch.tanh(u) + 1) * 0.5 * (self.safe_high - self.safe_low)
        return torch.where(self.squashed, squashed, clipped)

    def sample(self) -> torch.Tensor:
        with torch.no_grad():
            return self._to_env(self.normal.sample())

    def mode(self) -> torch.Tensor:
        return self._to_env(self.mean)

    def log_prob(self, action: torch.Tensor) -> torch.Tensor:
        lp = self._clip_log_prob(action)
        if self.squashed.any():
            half = torch.where(self.squashed, 0.5 * (self.safe_high - self.safe_low), torch.ones_like(self.safe_low))
            y = ((action - self.safe_low) / half - 1).clamp(-1 + 1e-6, 1 - 1e-6)
            u = torch.atanh(y)
            # log|da/du| = log(half) + log(1 - tanh(u)^2)
            squash = self.normal.log_prob(u) - torch.log(half) - torch.log1p(-y.pow(2))
            lp = torch.where(self.squashed, squash, lp)
        return lp.sum(-1)

    def _clip_log_prob(self, action: torch.Tensor) -> torch.Tensor:
        """Per-dim log-prob of the clipped Gaussian (the tail mass at a finite bound, the density inside)."""
        z_low = (self.safe_low - self.mean) / self.std
        z_high = (self.safe_high - self.mean) / self.std
        inner = self.normal.log_prob(action)
        at_low, at_high = self.has_low & (action <= self.low), self.has_high & (action >= self.high)
        return torch.where(at_low, _log_ndtr(z_low), torch.where(at_high, _log_ndtr(-z_high), inner))

    def entropy(self) -> torch.Tensor:
        return (0.5 + _LOG_SQRT_2PI + self.log_std).sum(-1)


def _log_ndtr(z: torch.Tensor) -> torch.Tensor:
    """log Phi(z), stable in both tails."""
    return torch.special.log_ndtr(z)


def squashed_gaussian_sample(
    mean: torch.Tensor, log_std: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """SAC's reparameterized sample ``a = tanh(mean + std * eps)`` in ``[-1, 1]^D`` and its log-density
    ``log N(u; mean, std) - sum_d log(1 - tanh(u_d)^2)`` (Haarnoja et al. 2018, appendix C), the correction written
    as ``2 (log 2 - u - softplus(-2u))`` so it stays finite where ``tanh(u)`` rounds to 1.

    ``mean`` / ``log_std``: ``[..., D]`` -> action ``[..., D]`` (gradients flow to both), log-prob ``[...]``. The
    log-prob is of the ``[-1, 1]`` action (the affine map to the env's bounds only shifts it by a constant).
    """
    std = log_std.exp()
    eps = torch.randn(mean.shape, generator=generator).to(mean.device)
    u = mean + std * eps
    logp = (-0.5 * eps.pow(2) - log_std - _LOG_SQRT_2PI).sum(-1)
    logp = logp - (2.0 * (math.log(2.0) - u - torch.nn.functional.softplus(-2.0 * u))).sum(-1)
    return torch.tanh(u), logp


def gumbel_softmax_st(
    logits: torch.Tensor, generator: torch.Generator | None = None, temperature: float = 1.0
) -> torch.Tensor:
    """Straight-through Gumbel-softmax (Jang et al. 2017; MADDPG's discrete actions): the forward value is the
    one-hot of ``argmax(logits + g)`` with Gumbel noise ``g`` (a sample of ``softmax(logits)``), the gradient that
    of the relaxed ``softmax((logits + g) / temperature)``. ``logits [..., A]`` -> one-hot ``[..., A]``."""
    u = torch.rand(logits.shape, generator=generator).to(logits.device)
    g = -torch.log(-torch.log(u.clamp(1e-10, 1.0 - 1e-7)))
    soft = torch.softmax((logits + g) / temperature, dim=-1)
    hard = torch.nn.functional.one_hot(soft.argmax(-1), logits.shape[-1]).to(soft.dtype)
    return hard - soft.detach() + soft
