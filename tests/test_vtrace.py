"""V-trace (marl.core.returns.vtrace) against hand-computed arrays: truncated importance weights (rho_bar, c_bar),
episode ends (termination cuts, truncation bootstraps from the final observation), and GAE as its on-policy case."""

import math

import torch

from marl.core.returns import gae, vtrace

R = torch.tensor([1.0, 2.0, 3.0])
V = torch.tensor([0.5, 1.0, 1.5])
LOG_RHO = torch.tensor([2.0, 0.5, 1.0]).log()  # behaviour probabilities: pi/mu = 2, 0.5, 1


def flags(*idx, n=3):
    x = torch.zeros(n, dtype=torch.bool)
    x[list(idx)] = True
    return x


def test_truncated_weights_no_episode_end():
    # rho = min(1.5, [2, .5, 1]) = [1.5, .5, 1]; c = min(.8, ...) = [.8, .5, .8]; gamma .9, lambda 1
    # delta = r + .9 V' - V = [1.4, 2.35, 3.3]
    corr, pg = vtrace(R, V, torch.tensor([1.0, 1.5, 2.0]), flags(), flags(), LOG_RHO, 0.9, 1.0, rho_bar=1.5,
                      c_bar=0.8)
    c2 = 3.3
    c1 = 0.5 * 2.35 + 0.9 * 0.5 * c2  # 2.66
    c0 = 1.5 * 1.4 + 0.9 * 0.8 * c1  # 4.0152
    torch.testing.assert_close(corr, torch.tensor([c0, c1, c2]))
    # pg_adv_t = rho_t (r_t + .9 v_{t+1} - V_t), v_{t+1} = V_{t+1} + corr_{t+1}; the last step bootstraps V' = 2
    torch.testing.assert_close(pg, torch.tensor([1.5 * (1 + 0.9 * (1.0 + c1) - 0.5), 0.5 * (2 + 0.9 * (1.5 + c2) - 1),
                                                 1.0 * (3 + 0.9 * 2.0 - 1.5)]))


def test_termination_cuts_and_does_not_bootstrap():
    corr, pg = vtrace(R, V, torch.tensor([1.0, 9.0, 2.0]), flags(1), flags(1), LOG_RHO, 0.9, 1.0, rho_bar=1.5,
                      c_bar=0.8)
    c1 = 0.5 * (2 - 1.0)  # terminal: the 9.0 final value is ignored, nothing follows
    torch.testing.assert_close(corr, torch.tensor([1.5 * 1.4 + 0.9 * 0.8 * c1, c1, 3.3]))
    torch.testing.assert_close(pg[:2], torch.tensor([1.5 * (1 + 0.9 * (1.0 + c1) - 0.5), c1]))


def test_truncation_bootstraps_from_the_final_observation():
    corr, pg = vtrace(R, V, torch.tensor([1.0, 5.0, 2.0]), flags(), flags(1), LOG_RHO, 0.9, 1.0, rho_bar=1.5,
                      c_bar=0.8)
    c1 = 0.5 * (2 + 0.9 * 5.0 - 1.0)  # V(final obs) = 5 bootstraps; step 2 starts a new episode
    torch.testing.assert_close(corr, torch.tensor([1.5 * 1.4 + 0.9 * 0.8 * c1, c1, 3.3]))
    torch.testing.assert_close(pg[1], torch.tensor(c1))


def test_weights_below_the_bars_are_kept_and_lambda_scales_the_traces():
    log_rho = torch.tensor([0.5, 0.25, 0.8]).log()
    corr, _ = vtrace(R, V, torch.tensor([1.0, 1.5, 2.0]), flags(), flags(), log_rho, 0.9, 0.5)
    c2 = 0.8 * 3.3
    c1 = 0.25 * 2.35 + 0.9 * (0.5 * 0.25) * c2
    torch.testing.assert_close(corr, torch.tensor([0.5 * 1.4 + 0.9 * (0.5 * 0.5) * c1, c1, c2]))


def test_on_policy_vtrace_is_gae_also_with_turns_and_cuts():
    g = torch.Generator().manual_seed(0)
    T, E = 12, 5
    r, v, nv = (torch.randn(T, E, generator=g) for _ in range(3))
    done = torch.rand(T, E, generator=g) < 0.2
    term = done & (torch.rand(T, E, generator=g) < 0.5)
    acting = torch.rand(T, E, generator=g) < 0.6
    stop = torch.zeros(T, E, dtype=torch.bool)
    stop[-2] = acting[-2]
    expect = gae(r, v, nv, term, done, 0.97, 0.9, acting, stop)
    corr, pg = vtrace(r, v, nv, term, done, torch.zeros(T, E), 0.97, 0.9, 1.0, 1.0, acting, stop)
    torch.testing.assert_close(corr, expect)
    assert (pg[~acting] == 0).all() and (corr[stop] == 0).all()
    assert math.isclose(float(pg[~acting | stop].abs().sum()), 0.0)
