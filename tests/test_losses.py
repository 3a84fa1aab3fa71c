"""Losses against hand-worked examples."""

import math

import torch

from marl.core import losses


def test_clipped_surrogate_equals_pg_loss_at_ratio_one():
    logp = torch.tensor([-0.5, -1.0, -2.0], requires_grad=True)
    adv = torch.tensor([1.0, -2.0, 0.5])
    ppo, stats = losses.clipped_surrogate(logp, logp.detach(), adv, clip=0.2)
    pg = losses.reinforce_loss(logp, adv)
    torch.testing.assert_close(ppo, torch.tensor(-(1.0 - 2.0 + 0.5) / 3))
    (g_ppo,) = torch.autograd.grad(ppo, logp)
    (g_pg,) = torch.autograd.grad(pg, logp)
    torch.testing.assert_close(g_ppo, g_pg)
    assert stats["clipfrac"] == 0 and abs(float(stats["approx_kl"])) < 1e-7


def test_clipped_surrogate_hand_example():
    ratio = torch.tensor([1.5, 0.5, 1.1])
    adv = torch.tensor([1.0, -1.0, 2.0])
    loss, stats = losses.clipped_surrogate(ratio.log(), torch.zeros(3), adv, clip=0.2)
    # min(1.5, 1.2) = 1.2 ; min(-0.5, -0.8) = -0.8 ; min(2.2, 2.2) = 2.2
    torch.testing.assert_close(loss, torch.tensor(-(1.2 - 0.8 + 2.2) / 3))
    torch.testing.assert_close(stats["clipfrac"], torch.tensor(2 / 3))


def test_weight_of_one_changes_nothing_and_weight_scales_advantage():
    torch.manual_seed(0)
    logp, old, adv = torch.randn(10), torch.randn(10), torch.randn(10)
    base, _ = losses.clipped_surrogate(logp, old, adv, 0.2)
    ones, _ = losses.clipped_surrogate(logp, old, adv, 0.2, weight=torch.ones(10))
    assert torch.equal(base, ones)
    w = torch.rand(10) + 0.5
    weighted, _ = losses.clipped_surrogate(logp, old, adv, 0.2, weight=w)
    manual, _ = losses.clipped_surrogate(logp, old, adv * w, 0.2)
    torch.testing.assert_close(weighted, manual)


def test_mask_excludes_entries():
    logp = torch.tensor([-1.0, -1.0, -1.0])
    adv = torch.tensor([1.0, 1000.0, 3.0])
    mask = torch.tensor([True, False, True])
    loss, _ = losses.clipped_surrogate(logp, logp, adv, 0.2, mask=mask)
    torch.testing.assert_close(loss, torch.tensor(-2.0))
    torch.testing.assert_close(losses.masked_mean(adv, mask), torch.tensor(2.0))


def test_kl_penalty_surrogate():
    logp_old = torch.zeros(2)
    logp = torch.tensor([math.log(2.0), math.log(0.5)])
    adv = torch.tensor([1.0, 1.0])
    loss, st = losses.kl_penalty_surrogate(logp, logp_old, adv, beta=0.5)
    kl = torch.tensor([(2 - 1) - math.log(2.0), (0.5 - 1) - math.log(0.5)])
    torch.testing.assert_close(loss, -(torch.tensor([2.0, 0.5]) - 0.5 * kl).mean())
    torch.testing.assert_close(st["approx_kl"], kl.mean())


def test_adaptive_kl_coefficient():
    c = losses.AdaptiveKLCoef(1.0, target=0.01)
    assert c.update(0.001) == 0.5  # below target / 1.5: halve
    assert c.update(0.01) == 0.5  # within [target/1.5, target*1.5]: keep
    assert c.update(0.05) == 1.0  # above target * 1.5: double
    fixed = losses.AdaptiveKLCoef(1.0, target=0.01, adaptive=False)
    assert fixed.update(1.0) == 1.0


def test_value_loss_with_and_without_clipping():
    v, v_old, target = torch.tensor([2.0]), torch.tensor([1.0]), torch.tensor([3.0])
    torch.testing.assert_close(losses.value_loss(v, target), torch.tensor(0.5))
    # clipped prediction 1.2 -> (1.2 - 3)^2 = 3.24 > 1.0: the pessimistic max is taken
    torch.testing.assert_close(losses.value_loss(v, target, v_old, clip=0.2), torch.tensor(0.5 * 3.24))


def test_dpg_losses():
    q = torch.tensor([1.0, 3.0])
    torch.testing.assert_close(losses.dpg_actor_loss(q), torch.tensor(-2.0))
    y = losses.q_target(torch.tensor([1.0, 1.0]), torch.tensor([10.0, 10.0]), torch.tensor([True, False]), 0.9)
    torch.testing.assert_close(y, torch.tensor([1.0, 10.0]))
    torch.testing.assert_close(losses.q_loss(torch.tensor([1.0, 9.0]), y), torch.tensor(0.5))
