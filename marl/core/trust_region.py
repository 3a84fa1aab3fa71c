"""The trust-region step of TRPO (Schulman et al. 2015) and HATRPO (Kuba et al. 2022), on a flat parameter vector.

Maximize the surrogate ``L(theta)`` subject to ``mean KL(pi_old || pi_theta) <= max_kl``: with ``g = grad L`` and
``F`` the Fisher matrix (the Hessian of the mean KL at ``theta_old``), the natural direction is ``x = F^-1 g``
(:func:`conjugate_gradient` on :func:`fisher_vector_product`, never forming ``F``), scaled to the boundary of the
quadratic KL model, ``step = sqrt(2 max_kl / x^T F x) x``; :func:`line_search` then backtracks until the exact KL
is within ``max_kl`` and the surrogate improved, or leaves the parameters unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn


def flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def get_flat(params: Sequence[nn.Parameter]) -> torch.Tensor:
    return flat([p.detach() for p in params]).clone()


def set_flat(params: Sequence[nn.Parameter], vec: torch.Tensor) -> None:
    """Write the flat vector ``vec`` into ``params`` (in place, no autograd)."""
    off = 0
    with torch.no_grad():
        for p in params:
            n = p.numel()
            p.copy_(vec[off : off + n].view_as(p))
            off += n


def flat_grad(y: torch.Tensor, params: Sequence[nn.Parameter], **kw) -> torch.Tensor:
    """``d y / d params`` as one flat vector (zeros for parameters ``y`` does not depend on)."""
    grads = torch.autograd.grad(y, list(params), allow_unused=True, **kw)
    return flat([torch.zeros_like(p) if g is None else g for g, p in zip(grads, params, strict=True)])


def conjugate_gradient(Avp: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iters: int,
                       tol: float = 1e-10) -> torch.Tensor:
    """Approximate ``A^-1 b`` for a symmetric positive-definite ``A`` given only ``v -> A v`` (``iters`` steps;
    exact after ``len(b)`` steps in exact arithmetic)."""
    x = torch.zeros_like(b)
    r, p = b.clone(), b.clone()
    rr = r @ r
    for _ in range(iters):
        if rr <= tol:
            break
        Ap = Avp(p)
        alpha = rr / (p @ Ap)
        x = x + alpha * p
        r = r - alpha * Ap
        rr_new = r @ r
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def fisher_vector_product(kl_fn: Callable[[], torch.Tensor], params: Sequence[nn.Parameter], damping: float
                          ) -> Callable[[torch.Tensor], torch.Tensor]:
    """``v -> (H + damping I) v`` with ``H`` the Hessian of ``kl_fn()`` (the mean ``KL(pi_old || pi_theta)``, old
    distribution detached) at the current parameters; at ``theta = theta_old`` it is the Fisher matrix. The KL's
    gradient graph is built once and reused for every product."""
    grad = flat_grad(kl_fn(), params, create_graph=True)

    def fvp(v: torch.Tensor) -> torch.Tensor:
        return flat_grad(grad @ v, params, retain_graph=True) + damping * v

    return fvp


def line_search(params: Sequence[nn.Parameter], step: torch.Tensor, evaluate: Callable[[], tuple[float, float]],
                max_kl: float, iters: int, coef: float) -> tuple[bool, float, float, float]:
    """Try ``theta_old + coef^i step`` for ``i = 0 .. iters - 1``; accept the first whose ``evaluate() -> (surrogate
    loss, mean KL)`` has a lower loss than at ``theta_old`` and ``KL <= max_kl``. Returns ``(accepted, step fraction,
    loss improvement, KL)``; when no step is accepted the parameters are left exactly as they were (fraction 0)."""
    old = get_flat(params)
    with torch.no_grad():
        loss0, _ = evaluate()
        frac = 1.0
        for _ in range(iters):
            set_flat(params, old + frac * step)
            loss, kl = evaluate()
            if kl <= max_kl and loss < loss0:
                return True, frac, loss0 - loss, kl
            frac *= coef
        set_flat(params, old)
    return False, 0.0, 0.0, 0.0


def trust_region_step(params: Sequence[nn.Parameter], loss_fn: Callable[[], torch.Tensor],
                      kl_fn: Callable[[], torch.Tensor], max_kl: float, cg_iters: int, cg_damping: float,
                      backtrack_iters: int, backtrack_coef: float) -> dict[str, float]:
    """One TRPO policy step on ``params``: ``loss_fn()`` is the surrogate loss to minimize (``-L``), ``kl_fn()`` the
    mean KL to the policy before the step (0 with zero gradient at the start). Returns the step's statistics."""
    params = list(params)
    g = -flat_grad(loss_fn(), params)  # ascent direction of L
    if not bool(torch.isfinite(g).all()) or float(g.abs().max()) == 0.0:
        return {"tr_accepted": 0.0, "tr_step_frac": 0.0, "tr_improvement": 0.0, "approx_kl": 0.0}
    fvp = fisher_vector_product(kl_fn, params, cg_damping)
    x = conjugate_gradient(fvp, g, cg_iters)
    xFx = float(x @ fvp(x))
    step = (2.0 * max_kl / max(xFx, 1e-12)) ** 0.5 * x

    def evaluate() -> tuple[float, float]:
        return float(loss_fn()), float(kl_fn())

    ok, frac, gain, kl = line_search(params, step, evaluate, max_kl, backtrack_iters, backtrack_coef)
    return {"tr_accepted": float(ok), "tr_step_frac": frac, "tr_improvement": gain, "approx_kl": kl}
