"""Policy-gradient losses, and the off-policy TD targets and losses (DDPG, TD3, SAC, MADDPG). Every loss is a
scalar to *minimize*, averaged over ``mask`` entries only (``mask`` = the ``acting`` flags: padded, dead and waiting
agents never contribute). Inputs share one shape ``[B...]`` unless a docstring says otherwise.
"""

from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``x`` over entries where ``mask`` is true (0 if none)."""
    if mask is None:
        return x.mean()
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp_min(1.0)


def reinforce_loss(logp: torch.Tensor, weight: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``-E[log pi(a|s) * w]`` with ``w`` the return-to-go or an advantage (treated as a constant)."""
    return -masked_mean(logp * weight.detach(), mask)


def _ratio_terms(logp, logp_old, adv, weight) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``r = pi / pi_old``, the per-sample KL estimate ``(r - 1) - log r`` and the (weighted) advantage."""
    log_ratio = logp - logp_old
    ratio = log_ratio.exp()
    return ratio, (ratio - 1) - log_ratio, adv if weight is None else adv * weight.detach()


def clipped_surrogate(
    logp: torch.Tensor,
    logp_old: torch.Tensor,
    adv: torch.Tensor,
    clip: float,
    mask: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate ``-E[min(r A, clip(r, 1-eps, 1+eps) A)]`` with ``r = pi/pi_old``.

    ``weight`` (detached) multiplies the advantage per sample: HAPPO passes the product of the policy ratios of the
    agents updated before this one; ``None`` or all ones leaves plain PPO. Also returns ``approx_kl`` (the
    ``(r - 1) - log r`` estimator) and ``clipfrac``.
    """
    ratio, kl, a = _ratio_terms(logp, logp_old, adv, weight)
    surr = torch.min(ratio * a, ratio.clamp(1.0 - clip, 1.0 + clip) * a)
    loss = -masked_mean(surr, mask)
    with torch.no_grad():
        stats = {
            "approx_kl": masked_mean(kl, mask),
            "clipfrac": masked_mean(((ratio - 1.0).abs() > clip).float(), mask),
        }
    return loss, stats


def kl_penalty_surrogate(
    logp: torch.Tensor,
    logp_old: torch.Tensor,
    adv: torch.Tensor,
    beta: float,
    mask: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """KL-penalized surrogate ``-E[r A - beta KL(pi_old || pi)]``.

    KL is estimated per sample by ``(r - 1) - log r`` (non-negative, unbiased for KL(old||new) under pi_old samples,
    and its gradient is that of the exact KL). Returns the loss and ``{"approx_kl": mean KL}`` (detached).
    """
    ratio, kl, a = _ratio_terms(logp, logp_old, adv, weight)
    loss = -masked_mean(ratio * a - beta * kl, mask)
    return loss, {"approx_kl": masked_mean(kl.detach(), mask)}


def surrogate(
    logp: torch.Tensor,
    logp_old: torch.Tensor,
    adv: torch.Tensor,
    mask: torch.Tensor | None = None,
    weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """TRPO's (unclipped) importance-sampled surrogate ``-E[r A]`` with ``r = pi/pi_old`` (its gradient at
    ``pi = pi_old`` is the policy gradient); ``weight`` as in :func:`clipped_surrogate` (HATRPO's M). Also returns
    ``approx_kl``."""
    ratio, kl, a = _ratio_terms(logp, logp_old, adv, weight)
    return -masked_mean(ratio * a, mask), {"approx_kl": masked_mean(kl.detach(), mask)}


def reference_kl(logp: torch.Tensor, logp_ref: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """GRPO's KL term to a frozen reference policy: the mean of ``pi_ref/pi - log(pi_ref/pi) - 1`` over ``mask``,
    for actions sampled from ``pi`` (``logp = log pi(a|s)``, ``logp_ref = log pi_ref(a|s)`` ``[B...]``).

    Per sample it is non-negative; its expectation under ``pi`` is ``KL(pi || pi_ref)`` (Schulman's unbiased "k3"
    estimator, used by DeepSeek's GRPO), and its gradient in ``logp`` is ``1 - pi_ref/pi`` (0 at ``pi = pi_ref``).
    """
    log_r = logp_ref.detach() - logp
    return masked_mean(log_r.exp() - log_r - 1.0, mask)


def kl_divergence(old, new) -> torch.Tensor:
    """Exact ``KL(old || new)`` per entry ``[...]`` of two distributions of :mod:`marl.core.distributions` of the
    same kind (the trust-region constraint of TRPO). Categoricals: masked actions have probability 0 under both;
    Gaussians: the KL of the underlying normals (the bounding of the action is the same map for both)."""
    from torch.distributions import kl_divergence as kl

    if hasattr(old, "parts"):  # MultiCategorical: independent components
        return sum(kl_divergence(o, n) for o, n in zip(old.parts, new.parts, strict=True))
    if hasattr(old, "normal"):  # BoundedGaussian
        return kl(old.normal, new.normal).sum(-1)
    return old.kl(new)


class AdaptiveKLCoef:
    """Adaptive KL coefficient (Schulman et al. 2017): after an update with mean KL ``d``, halve ``beta`` if
    ``d < target / 1.5`` and double it if ``d > target * 1.5``."""

    def __init__(self, beta: float, target: float, adaptive: bool = True):
        self.beta, self.target, self.adaptive = float(beta), float(target), adaptive

    def update(self, kl: float) -> float:
        if self.adaptive:
            if kl < self.target / 1.5:
                self.beta /= 2.0
            elif kl > self.target * 1.5:
                self.beta *= 2.0
        return self.beta

    def state_dict(self) -> dict[str, float]:
        return {"beta": self.beta}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.beta = float(state["beta"])


def value_loss(
    value: torch.Tensor,
    target: torch.Tensor,
    value_old: torch.Tensor | None = None,
    clip: float | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``0.5 E[(V - target)^2]``; with ``clip`` the pessimistic max with the update clipped around ``value_old``."""
    err = (value - target).pow(2)
    if clip is not None and value_old is not None:
        clipped = value_old + (value - value_old).clamp(-clip, clip)
        err = torch.max(err, (clipped - target).pow(2))
    return 0.5 * masked_mean(err, mask)


def entropy_bonus(entropy: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean entropy over ``mask``; the total loss subtracts ``ent_coef`` times it."""
    return masked_mean(entropy, mask)


def dpg_actor_loss(q: torch.Tensor) -> torch.Tensor:
    """Deterministic policy gradient: maximize ``Q(s, mu(s))`` -> minimize ``-E[Q]``."""
    return -q.mean()


def q_target(reward: torch.Tensor, next_q: torch.Tensor, terminated: torch.Tensor, gamma: float) -> torch.Tensor:
    """One-step TD target ``r + gamma (1 - terminated) Q'(s', mu'(s'))`` (truncation bootstraps); all ``[B...]``."""
    return reward + gamma * (1.0 - terminated.to(reward.dtype)) * next_q


def clipped_double_q(next_q: torch.Tensor) -> torch.Tensor:
    """TD3's clipped double-Q (Fujimoto et al. 2018): the min over the critic ensemble ``[B..., K] -> [B...]``
    (``K = 1``: the one critic's value, plain DDPG)."""
    return next_q.min(dim=-1).values


def soft_q_target(
    reward: torch.Tensor,
    next_q: torch.Tensor,
    next_logp: torch.Tensor,
    alpha: torch.Tensor | float,
    terminated: torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    """SAC's soft TD target ``r + gamma (1 - terminated) (min_k Q'_k(s', a') - alpha log pi(a'|s'))`` with ``a'``
    sampled from the current policy at ``s'``: ``next_q [B..., K]``, ``next_logp [B...]`` -> ``[B...]``."""
    return q_target(reward, clipped_double_q(next_q) - alpha * next_logp, terminated, gamma)


def soft_value_discrete(q: torch.Tensor, probs: torch.Tensor, logp: torch.Tensor, alpha: torch.Tensor | float):
    """Discrete SAC's soft state value (Christodoulou 2019), the exact expectation over the ``A`` actions:
    ``V(s) = sum_a pi(a|s) (min_k Q_k(s, a) - alpha log pi(a|s))``: ``q [B..., K, A]``, ``probs`` / ``logp``
    ``[B..., A]`` -> ``[B...]``. Use it as ``next_q`` of :func:`q_target`."""
    return (probs * (q.min(dim=-2).values - alpha * logp)).sum(-1)


def sac_actor_loss(logp: torch.Tensor, q: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
    """SAC's policy loss ``E[alpha log pi(a|s) - min_k Q_k(s, a)]``, ``a`` reparameterized: ``logp [B...]``,
    ``q [B..., K]``."""
    return (alpha * logp - clipped_double_q(q)).mean()


def sac_discrete_actor_loss(
    probs: torch.Tensor, logp: torch.Tensor, q: torch.Tensor, alpha: torch.Tensor | float
) -> torch.Tensor:
    """Discrete SAC's policy loss ``E_s[sum_a pi(a|s) (alpha log pi(a|s) - min_k Q_k(s, a))]`` (no sampling):
    ``probs`` / ``logp [B..., A]``, ``q [B..., K, A]`` (detached here)."""
    return (probs * (alpha * logp - q.detach().min(dim=-2).values)).sum(-1).mean()


def temperature_loss(log_alpha: torch.Tensor, entropy: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """SAC's automatic temperature: ``E[log(alpha) (H - H_target)]`` with ``H`` the policy entropy (an estimate
    ``-log pi(a|s)`` per sample, or the exact entropy for discrete actions; treated as a constant). Its gradient in
    ``log alpha`` is ``E[H] - H_target``: descending it raises alpha while the entropy is below target, lowers it
    above."""
    return (log_alpha * (entropy.detach() - target_entropy)).mean()


def q_loss(q: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Critic regression to a fixed TD target: ``E[(Q - y)^2]``; for an ensemble ``q [B..., K]`` against
    ``target [B...]`` the sum over the ``K`` critics of each one's mean."""
    y = target.detach()
    if q.dim() == y.dim() + 1:
        return (q - y.unsqueeze(-1)).pow(2).mean(dim=tuple(range(y.dim()))).sum()
    return (q - y).pow(2).mean()


def explained_variance(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """``1 - Var[target - pred] / Var[target]`` over ``mask`` (nan when the target is constant)."""
    if mask is not None:
        pred, target = pred[mask.bool()], target[mask.bool()]
    var = target.var() if target.numel() > 1 else torch.tensor(0.0)
    if var == 0:
        return float("nan")
    return float(1 - (target - pred).var() / var)
