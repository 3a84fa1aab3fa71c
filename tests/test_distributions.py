"""Distributions: masks give probability exactly 0; Gaussian log-probs are those of the action sent."""

import math

import torch
from gymnasium import spaces
from torch.distributions import Categorical, Normal, kl_divergence

from marl.core.distributions import BoundedGaussian, MaskedCategorical
from marl.core.networks import Actor, MemberLinear


def test_masked_sampling_never_picks_illegal_actions():
    torch.manual_seed(0)
    logits = torch.randn(1000, 5) * 3
    mask = torch.rand(1000, 5) < 0.5
    mask[:, 0] |= ~mask.any(-1)
    d = MaskedCategorical(logits, mask)
    for _ in range(20):
        a = d.sample()
        assert mask.gather(1, a[:, None]).all()
    assert (d.probs[~mask] == 0).all()
    assert torch.isfinite(d.entropy()).all()
    assert mask.gather(1, d.mode()[:, None]).all()


def test_masked_categorical_draws_and_scores_exactly_as_torch_categorical():
    """The lean categorical gives torch's numbers: the same samples from the same seed, the same log-probs and KL
    (masked actions included), entropies within float rounding (``exp(log p)`` for the softmax: far cheaper on CPU)."""
    logits = torch.randn(3, 4, 5) * 2
    mask = torch.rand(3, 4, 5) < 0.7
    mask[..., 0] = True
    masked = logits.masked_fill(~mask, float("-inf"))
    ours, ref = MaskedCategorical(logits, mask), Categorical(logits=masked)
    torch.manual_seed(3)
    a = torch.stack([ours.sample() for _ in range(50)])
    torch.manual_seed(3)
    b = torch.stack([ref.sample() for _ in range(50)])
    assert a.shape == (50, 3, 4) and torch.equal(a, b)
    assert torch.equal(ours.log_prob(a), ref.log_prob(a))
    assert torch.equal(ours.probs, ref.probs) and torch.equal(ours.mode(), ref.probs.argmax(-1))
    torch.testing.assert_close(ours.entropy(), ref.entropy(), rtol=0, atol=1e-6)
    other = torch.randn(3, 4, 5)
    torch.testing.assert_close(ours.kl(MaskedCategorical(other)), kl_divergence(ref, Categorical(logits=other)),
                               rtol=0, atol=0)
    assert torch.isinf(MaskedCategorical(other).kl(ours)).any()  # mass where the other has none


def test_masked_logits_have_finite_gradients():
    logits = torch.randn(4, 3, requires_grad=True)
    mask = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 1], [0, 0, 1]]).bool()
    d = MaskedCategorical(logits, mask)
    (d.log_prob(torch.tensor([0, 1, 2, 2])).sum() + d.entropy().sum()).backward()
    assert torch.isfinite(logits.grad).all()
    assert (logits.grad[~mask] == 0).all()


def test_all_false_mask_row_is_treated_as_unmasked():
    d = MaskedCategorical(torch.zeros(1, 3), torch.zeros(1, 3, dtype=torch.bool))
    torch.testing.assert_close(d.probs, torch.full((1, 3), 1 / 3))


def test_clipped_gaussian_log_prob_is_that_of_the_sent_action():
    mean, log_std = torch.zeros(1), torch.zeros(1)
    d = BoundedGaussian(mean, log_std, torch.tensor([-1.0]), torch.tensor([1.0]), "clip")
    inside = torch.tensor([0.3])
    torch.testing.assert_close(d.log_prob(inside), Normal(0.0, 1.0).log_prob(inside).sum())
    # at a bound the action has point mass P(u >= 1) = 1 - Phi(1)
    p_high = 1 - 0.5 * (1 + math.erf(1 / math.sqrt(2)))
    torch.testing.assert_close(d.log_prob(torch.tensor([1.0])), torch.tensor(math.log(p_high)))
    torch.testing.assert_close(d.log_prob(torch.tensor([-1.0])), torch.tensor(math.log(p_high)))
    torch.manual_seed(0)
    a = d.sample()
    assert -1.0 <= float(a) <= 1.0


def test_clipped_gaussian_probabilities_sum_to_one():
    d = BoundedGaussian(torch.tensor([0.4]), torch.tensor([math.log(0.7)]), torch.tensor([-1.0]), torch.tensor([1.0]),
                        "clip")
    xs = torch.linspace(-1, 1, 20001)[1:-1]
    dens = torch.stack([d.log_prob(x.reshape(1)).exp() for x in xs[::10]])
    inside = float(dens.sum()) * float(xs[10] - xs[0])
    tails = float(d.log_prob(torch.tensor([-1.0])).exp() + d.log_prob(torch.tensor([1.0])).exp())
    assert abs(inside + tails - 1.0) < 2e-3


def test_squashed_gaussian_log_prob_matches_change_of_variables():
    torch.manual_seed(1)
    mean, log_std = torch.tensor([0.2, -0.3]), torch.tensor([-0.5, 0.1])
    low, high = torch.tensor([-2.0, 0.0]), torch.tensor([2.0, 1.0])
    d = BoundedGaussian(mean, log_std, low, high, "squash")
    u = Normal(mean, log_std.exp()).sample()
    sent = low + (torch.tanh(u) + 1) * 0.5 * (high - low)
    jac = torch.log(0.5 * (high - low) * (1 - torch.tanh(u) ** 2))
    expected = (Normal(mean, log_std.exp()).log_prob(u) - jac).sum()
    torch.testing.assert_close(d.log_prob(sent), expected, rtol=1e-4, atol=1e-4)


def test_actor_gaussian_clipped_actions_get_tail_log_prob():
    actor = Actor(3, spaces.Box(-0.1, 0.1, (2,)), [16], log_std_init=1.0)  # wide std: most samples hit a bound
    x = torch.randn(256, 1, 3)
    d = actor(x)
    a = d.sample()
    assert (a.abs() <= 0.1).all()
    at_bound = (a.abs() == 0.1).all(-1)
    assert at_bound.any()
    z_hi = (0.1 - d.mean) / d.std
    z_lo = (-0.1 - d.mean) / d.std
    tail = torch.where(a >= 0.1, torch.special.log_ndtr(-z_hi), torch.special.log_ndtr(z_lo)).sum(-1)
    torch.testing.assert_close(d.log_prob(a)[at_bound], tail[at_bound])


def test_member_linear_members_are_independent_and_batched():
    torch.manual_seed(0)
    layer = MemberLinear(4, 3, members=2)
    x = torch.randn(5, 2, 4)
    y = layer(x)
    for k in range(2):
        torch.testing.assert_close(y[:, k], x[:, k] @ layer.weight[k].T + layer.bias[k])
    with torch.no_grad():
        layer.weight[1].add_(1.0)
    torch.testing.assert_close(layer(x)[:, 0], y[:, 0])


def test_unbounded_box_is_the_plain_gaussian_with_finite_gradients():
    """Box(-inf, inf): clip and squash both send the Gaussian sample itself, with the normal log-prob."""
    torch.manual_seed(0)
    mean = torch.randn(16, 2, requires_grad=True)
    log_std = torch.zeros(2, requires_grad=True)
    low, high = torch.full((2,), -math.inf), torch.full((2,), math.inf)
    for bound in ("clip", "squash"):
        d = BoundedGaussian(mean, log_std, low, high, bound)
        a = d.sample()
        assert torch.isfinite(a).all()
        torch.testing.assert_close(d.mode(), mean.detach())
        lp = d.log_prob(a)
        torch.testing.assert_close(lp, Normal(mean, log_std.exp()).log_prob(a).sum(-1))
        lp.sum().backward()
        assert torch.isfinite(mean.grad).all() and torch.isfinite(log_std.grad).all()
        mean.grad, log_std.grad = None, None


def test_squash_squashes_only_the_dims_with_two_finite_bounds():
    """Dim 0 in [-1, 1] is squashed (never reaches the bound); dim 1 in [0, inf) is clipped at 0."""
    low, high = torch.tensor([-1.0, 0.0]), torch.tensor([1.0, math.inf])
    d = BoundedGaussian(torch.tensor([[5.0, -5.0]]), torch.zeros(2), low, high, "squash")
    a = d.mode()
    assert -1 < a[0, 0] < 1 and a[0, 1] == 0
    expected_dim1 = torch.special.log_ndtr(torch.tensor(5.0))  # P(u <= 0) for u ~ N(-5, 1): the tail at the bound
    dim0 = BoundedGaussian(torch.tensor([[5.0]]), torch.zeros(1), low[:1], high[:1], "squash")
    expected_dim0 = dim0.log_prob(a[:, :1])
    torch.testing.assert_close(d.log_prob(a), expected_dim0 + expected_dim1)


def test_entropy_gradient_matches_torch_categorical():
    logits = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(6, 5) < 0.7
    mask[:, 0] = True
    (g_ours,) = torch.autograd.grad(MaskedCategorical(logits, mask).entropy().sum(), logits)
    ref = Categorical(logits=logits.masked_fill(~mask, float("-inf")))
    (g_ref,) = torch.autograd.grad(ref.entropy().sum(), logits)
    torch.testing.assert_close(g_ours, g_ref)
    assert torch.isfinite(g_ours).all() and (g_ours[~mask] == 0).all()
