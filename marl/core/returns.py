"""Returns and advantages, time-major ``[T, ...]`` (any trailing dims, e.g. ``[T, E, N]``).

Conventions shared by every function:

* ``next_value[t]``: value of the observation that follows step ``t`` — the final observation of the episode when the
  episode ended at ``t`` (so a truncated episode bootstraps from it), ``value[t + 1]`` otherwise.
* ``terminated[t]``: step ``t`` reached a terminal state: nothing is bootstrapped after it.
* ``done[t]``: the episode ended at ``t`` (terminated or truncated): no return crosses it.
* ``acting[t]`` (optional): the agent chose an action at ``t``. Steps where it did not (the opponent's turn in an
  AEC game, a dead agent's padding) are skipped: the rewards received there, and an episode end that happens
  there, are credited to the agent's own previous action, and its "next value" is its value at its next turn.
  Outputs at non-acting steps are 0. Without ``acting`` every step is an acting step.
* ``stop[t]`` (optional, with ``acting``): the trajectory is cut at this acting step — its transition is still open
  (turn-based games: the rollout ended before the agent's next own turn), so it gets no advantage (0) and the
  agent's earlier steps bootstrap from ``value[t]``, exactly as at the end of a rollout.
"""

from __future__ import annotations

import torch


def gae(
    reward: torch.Tensor,
    value: torch.Tensor,
    next_value: torch.Tensor,
    terminated: torch.Tensor,
    done: torch.Tensor,
    gamma: float,
    lam: float,
    acting: torch.Tensor | None = None,
    stop: torch.Tensor | None = None,
) -> torch.Tensor:
    """Generalized advantage estimates ``[T, ...]`` (Schulman et al. 2015). Returns = advantages + value."""

    def step(t, r, nv, tm, d, next_adv):
        delta = r + gamma * (1.0 - tm) * nv - value[t]
        return (delta + gamma * lam * (1.0 - d) * next_adv,)

    return _own_step_scan(reward, value, next_value, terminated, done, acting, stop, step)[0]


def vtrace(
    reward: torch.Tensor,
    value: torch.Tensor,
    next_value: torch.Tensor,
    terminated: torch.Tensor,
    done: torch.Tensor,
    log_rho: torch.Tensor,
    gamma: float,
    lam: float = 1.0,
    rho_bar: float = 1.0,
    c_bar: float = 1.0,
    acting: torch.Tensor | None = None,
    stop: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """V-trace (Espeholt et al. 2018) for data sampled by a behaviour policy mu older than the policy pi being
    trained: ``(correction, pg_adv)``, both ``[T, ...]``.

    ``log_rho [T, ...]``: ``log pi(a_t|x_t) - log mu(a_t|x_t)`` (read at acting steps only). With
    ``rho_t = min(rho_bar, exp(log_rho_t))``, ``c_t = lam * min(c_bar, exp(log_rho_t))`` and the one-step error
    ``delta_t = r_t + gamma V(x_{t+1}) - V(x_t)`` (``next_value`` and the episode / acting conventions of the module
    docstring, exactly as :func:`gae`), the value target is ``v_t = V(x_t) + correction_t`` with
    ``correction_t = rho_t delta_t + gamma c_t correction_{t+1}`` (no term crosses an episode end), and the
    policy-gradient advantage is ``pg_adv_t = rho_t (r_t + gamma v_{t+1} - V(x_t))`` (``v_{t+1}``: the bootstrap
    ``next_value`` where the episode ended at ``t``). With ``log_rho = 0`` and ``c_bar >= 1`` the correction is
    GAE(lam)'s advantage.
    """
    ratio = log_rho.to(reward.dtype).exp()
    rho, c = ratio.clamp(max=rho_bar), lam * ratio.clamp(max=c_bar)

    def step(t, r, nv, tm, d, next_corr):
        delta = r + gamma * (1.0 - tm) * nv - value[t]
        follow = (1.0 - d) * next_corr  # v_{t+1} - V(x_{t+1}) of the next own step, 0 across an episode end
        a = rho[t] * delta + gamma * c[t] * follow
        return a, rho[t] * (r + gamma * (1.0 - tm) * (nv + follow) - value[t])

    corr, pg = _own_step_scan(reward, value, next_value, terminated, done, acting, stop, step)
    return corr, pg


def _own_step_scan(reward, value, next_value, terminated, done, acting, stop, step) -> list[torch.Tensor]:
    """The backward scan :func:`gae` and :func:`vtrace` share, over each agent's own acting steps (the module
    docstring's conventions). ``step(t, r, nv, tm, d, nxt)`` gives step ``t``'s outputs from the trajectory seen
    from ``t`` (reward ``r`` gathered up to the next own step, its next value ``nv``, terminal ``tm`` and end ``d``
    flags) and ``nxt``, the first output of the next own step (0 across an episode end is the step's business);
    returns one ``[T, ...]`` tensor per output (0 at non-acting and stopped steps)."""
    T = reward.shape[0]
    term = terminated.to(reward.dtype)
    dn = done.to(reward.dtype)
    outs: list[torch.Tensor] = []
    # What the next acting step (in time) passes back: rewards gathered since, and how the agent's trajectory continues.
    carry_r = torch.zeros_like(reward[0])
    carry_nv = next_value[T - 1].clone()
    carry_term = torch.zeros_like(reward[0])
    carry_done = torch.zeros_like(reward[0])
    nxt = torch.zeros_like(reward[0])
    for t in range(T - 1, -1, -1):
        ended = dn[t] > 0
        # the trajectory seen from step t: if the episode ended at t, it stops here; else it continues as carried
        r = torch.where(ended, reward[t], reward[t] + carry_r)
        nv = torch.where(ended, next_value[t], carry_nv)
        tm = torch.where(ended, term[t], carry_term)
        d = torch.where(ended, dn[t], carry_done)
        vals = step(t, r, nv, tm, d, nxt)
        if not outs:
            outs = [torch.zeros_like(reward) for _ in vals]
        if acting is None:
            for o, v in zip(outs, vals, strict=True):
                o[t] = v
            carry_nv, nxt = value[t], vals[0]
            continue
        act = acting[t].bool()
        if stop is not None:
            cut = stop[t].bool()
            vals = tuple(torch.where(cut, torch.zeros_like(v), v) for v in vals)
        for o, v in zip(outs, vals, strict=True):
            o[t] = torch.where(act, v, torch.zeros_like(v))
        carry_r = torch.where(act, torch.zeros_like(r), r)
        carry_nv = torch.where(act, value[t], nv)
        carry_term = torch.where(act, torch.zeros_like(tm), tm)
        carry_done = torch.where(act, torch.zeros_like(d), d)
        nxt = torch.where(act, vals[0], nxt)
    return outs


def discounted_returns(
    reward: torch.Tensor,
    next_value: torch.Tensor,
    terminated: torch.Tensor,
    done: torch.Tensor,
    gamma: float,
    acting: torch.Tensor | None = None,
) -> torch.Tensor:
    """Discounted reward-to-go ``G_t = r_t + gamma G_{t+1}`` within each episode ``[T, ...]``.

    A truncated episode, and the rollout's end, bootstrap from ``next_value`` (pass zeros for pure Monte Carlo).
    """
    zeros = torch.zeros_like(reward)
    return gae(reward, zeros, next_value, terminated, done, gamma, 1.0, acting)


def nstep_returns(
    reward: torch.Tensor,
    value: torch.Tensor,
    next_value: torch.Tensor,
    terminated: torch.Tensor,
    done: torch.Tensor,
    gamma: float,
    n: int,
) -> torch.Tensor:
    """n-step returns ``G_t = sum_{k<n} gamma^k r_{t+k} + gamma^n V(s_{t+n})``, cut at episode ends ``[T, ...]``.

    At an episode end inside the window the sum stops and bootstraps from ``next_value`` there (0 if terminated);
    a window reaching past the rollout bootstraps from ``next_value[T - 1]``. Every step is an acting step.
    """
    T = reward.shape[0]
    term = terminated.to(reward.dtype)
    dn = done.to(reward.dtype)
    out = torch.zeros_like(reward)
    for t in range(T):
        g = torch.zeros_like(reward[0])
        disc = torch.ones_like(reward[0])
        alive = torch.ones_like(reward[0])  # 1 while the window has not crossed an episode end
        for k in range(n):
            s = t + k
            g = g + alive * disc * reward[s]
            disc = disc * gamma
            last = (k == n - 1) or (s == T - 1)
            # bootstrap at an episode end (from the final obs unless terminal) or at the window's end
            boot = torch.where(dn[s] > 0, (1 - term[s]) * next_value[s], next_value[s] if last else torch.zeros_like(g))
            stop = torch.maximum(dn[s], torch.full_like(g, float(last)))
            g = g + alive * stop * disc * boot
            alive = alive * (1 - stop)
            if last:
                break
        out[t] = g
    return out


def group_normalize(x: torch.Tensor, dim: int, mask: torch.Tensor | None = None, eps: float = 1e-8) -> torch.Tensor:
    """GRPO's group-relative advantage ``(x - mean) / (std + eps)`` over dimension ``dim`` (the copies of a group),
    with the population std (``1/G``); with ``mask`` only the entries where it is true count and the others are 0.
    A group whose entries are all equal (or a single entry) gives 0."""
    m = torch.ones_like(x) if mask is None else mask.to(x.dtype)
    n = m.sum(dim, keepdim=True).clamp_min(1.0)
    mean = (x * m).sum(dim, keepdim=True) / n
    std = (((x - mean) ** 2) * m).sum(dim, keepdim=True).div(n).sqrt()
    return (x - mean) / (std + eps) * m
