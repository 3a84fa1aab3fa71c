"""GRPO, TRPO and HATRPO: group seeding, group-relative advantages, the reference-KL estimator, no critic; conjugate
gradient, the Fisher-vector product, the KL bound of an accepted step, a rejected line search, HATRPO = TRPO."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_multi import flat_params, learner_for
from torch import nn

from marl.config import compose
from marl.core import losses
from marl.core.distributions import MaskedCategorical
from marl.core.trust_region import conjugate_gradient, fisher_vector_product, flat, line_search
from marl.errors import ConfigError
from marl.train import build

# ------------------------------------------------------------------------------------------------ GRPO


@pytest.mark.parametrize("env,backend", [("cartpole", "inprocess"), ("simple_spread", "inprocess"),
                                         ("simple_spread", "subprocess"), ("connect_four", "inprocess")])
def test_group_reset_copies_start_alike_and_groups_differ(env, backend):
    cfg = compose({"env": {"name": env, "backend": backend, "workers": 1}, "algo": {"name": "grpo"},
                   "num_envs": 6})
    venv = build(cfg)
    try:
        first = {}
        for rnd, seed in enumerate((11, 12)):
            out = venv.reset(seed=seed, group_size=3)
            x = np.concatenate([o.reshape(6, -1) for o in out.obs.values()], -1)
            first[rnd] = x
            if env == "connect_four":  # a board game starts from the empty board: the same in every copy
                continue
            assert np.array_equal(x[0], x[1]) and np.array_equal(x[0], x[2])
            assert np.array_equal(x[3], x[4]) and np.array_equal(x[3], x[5])
            assert not np.array_equal(x[0], x[3])
        if env != "connect_four":
            assert not np.array_equal(first[0][0], first[1][0])  # a fresh seed: another start
        # same actions in a group -> the same episode, step by step (the group's copies are replicas)
        rng = np.random.default_rng(0)
        out = venv.reset(seed=5, group_size=3)
        for _ in range(8):
            acts = {}
            for g in venv.spec.groups:
                a = np.stack([np.asarray(g.action_space.sample()) for _ in range(2 * g.n_agents)]).reshape(
                    2, 1, g.n_agents, *np.shape(g.action_space.sample()))
                if out.action_mask[g.name] is not None:  # a legal move of copy 0 (identical boards within a group)
                    m = out.action_mask[g.name]
                    a = np.stack([np.full(g.n_agents, rng.choice(np.flatnonzero(m[3 * i].any(0)))) for i in range(2)]
                                 )[:, None]
                acts[g.name] = np.repeat(a, 3, axis=1).reshape(6, g.n_agents, *a.shape[3:])
            out = venv.step(acts)
            for v in out.obs.values():
                assert np.array_equal(v[0], v[2]) and np.array_equal(v[3], v[5])
    finally:
        venv.close()


def test_grpo_rounds_reset_groups_alike_and_collect_whole_episodes():
    L = learner_for("grpo", "cartpole", num_envs=4, group_size=2, num_steps=8)
    starts = []
    reset = L.env.reset

    def spy(seed=None, group_size=1):
        out = reset(seed=seed, group_size=group_size)
        starts.append(out.obs["agent"][:, 0].copy())
        return out

    L.env.reset = spy
    buf = L.collect()
    assert len(starts) >= 1 and L._rows >= 8
    for s in starts:
        assert np.array_equal(s[0], s[1]) and np.array_equal(s[2], s[3]) and not np.array_equal(s[0], s[2])
    if len(starts) > 1:
        assert not np.array_equal(starts[0][0], starts[1][0])
    # every copy: per round exactly one episode end, and no acting row after it within the round
    R, rid = L._rows, L._round_of
    acting, done = buf.groups["agent"].acting[:R, :, 0], buf.done[:R]
    for r in range(int(rid.max()) + 1):
        rows = (rid == r).nonzero().squeeze(-1)
        for e in range(4):
            d = done[rows, e].nonzero().squeeze(-1)
            assert len(d) == 1
            assert bool(acting[rows[: d[0] + 1], e].all()) and not bool(acting[rows[d[0] + 1 :], e].any())
        assert bool(done[rows[-1]].any())  # the round ends with its last episode


def _hand_batch(L):
    """3 rows, 4 copies (groups {0, 1}, {2, 3}); rewards and episode ends set by hand (gamma = 1)."""
    buf = L.collect()
    gb = buf.groups["agent"]
    rewards = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 1.0, 3.0], [1.0, 0.0, 0.0, 0.0]])
    acting = torch.tensor([[1, 1, 1, 1], [1, 0, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    done = torch.tensor([[0, 1, 0, 0], [0, 0, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    buf.unit_reward[:] = 0
    buf.unit_reward[:3, :, 0] = rewards
    gb.acting[:] = False
    gb.acting[:3, :, 0] = acting
    buf.done[:] = False
    buf.done[:3] = done
    gb.terminated[:] = False
    gb.terminated[:3, :, 0] = done
    gb.left[:] = False
    L._rows, L._round_of = 3, torch.zeros(3, dtype=torch.long)
    return buf


def test_grpo_episode_advantages_hand_computed():
    L = learner_for("grpo", "cartpole", num_envs=4, group_size=2, num_steps=4, gamma=1.0)
    adv = L.group_advantages(_hand_batch(L))[..., 0]
    # returns: group 0 [3, 1] -> mean 2, std 1 -> [1, -1]; group 1 [2, 4] -> [-1, 1]; on every step of the episode
    eps = 1e-8
    a = 1.0 / (1.0 + eps)
    expected = torch.tensor([[a, -a, -a, a], [a, 0.0, -a, a], [a, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(adv, expected)


def test_grpo_step_advantages_hand_computed():
    L = learner_for("grpo", "cartpole", num_envs=4, group_size=2, num_steps=4, gamma=1.0, grpo_advantage="step")
    adv = L.group_advantages(_hand_batch(L))[..., 0]
    # reward-to-go: copy 0 [3, 2, 1], copy 1 [1], copy 2 [2, 1], copy 3 [4, 3]; per step index within each group:
    # row 0: [3, 1] -> [1, -1], [2, 4] -> [-1, 1]; row 1: copy 0 alone -> 0, [1, 3] -> [-1, 1]; row 2: copy 0 -> 0
    a = 1.0 / (1.0 + 1e-8)
    expected = torch.tensor([[a, -a, -a, a], [0.0, 0.0, -a, a], [0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(adv, expected)


def test_grpo_team_statistic_on_team_reward_broadcast_to_members():
    L = learner_for("grpo", "simple_spread", num_envs=4, group_size=2, num_steps=25)
    assert L.units.U == 1  # one cooperative team
    batch = L.make_batch(L.collect())
    adv = batch.adv["agent"]
    torch.testing.assert_close(adv[:, 0], adv[:, 1])
    torch.testing.assert_close(adv[:, 0], adv[:, 2])


def test_reference_kl_estimator_value_gradient_and_expectation():
    logp = torch.log(torch.tensor([0.5, 0.2, 0.3])).requires_grad_(True)
    logp_ref = torch.log(torch.tensor([0.3, 0.4, 0.3]))
    kl = losses.reference_kl(logp, logp_ref)
    r = torch.tensor([0.6, 2.0, 1.0])  # pi_ref / pi
    torch.testing.assert_close(kl, (r - torch.log(r) - 1).mean())
    kl.backward()
    torch.testing.assert_close(logp.grad, (1 - r) / 3)  # d/dlogp (r - log r - 1) = 1 - r
    # E_pi[estimator] = KL(pi || pi_ref) exactly: weight each action by its probability
    p = logp.detach().exp()
    est = (p * (r - torch.log(r) - 1)).sum()
    torch.testing.assert_close(est, (p * (logp.detach() - logp_ref)).sum())
    assert float(losses.reference_kl(logp_ref.clone(), logp_ref)) == 0.0


def test_grpo_builds_no_critic():
    L = learner_for("grpo", "simple_spread", num_envs=2, group_size=2, num_steps=25)
    assert L.critic is None and L.critic_opt is None
    mods = L.modules()
    assert "critic" not in mods and "critic_opt" not in mods
    params = {id(p) for m in mods.values() if isinstance(m, nn.Module) for p in m.parameters()}
    assert params == {id(p) for p in [*L.manager.parameters(), *L.ref.parameters()]}
    assert not any(p.requires_grad for p in L.ref.parameters())
    m = L.iteration()
    assert "losses/value_loss" not in m and "losses/ref_kl" in m


def test_grpo_reference_frozen_or_refreshed():
    for every in (0, 1):
        L = learner_for("grpo", "cartpole", num_envs=4, group_size=2, num_steps=16, ref_update_every=every)
        ref0 = flat_params(L.ref)
        L.iteration()
        after_first = flat_params(L.manager)
        L.iteration()  # every=1: the reference of the second update is the policy after the first
        assert torch.equal(flat_params(L.ref), ref0 if every == 0 else after_first)
        assert not torch.equal(flat_params(L.manager), flat_params(L.ref))


def test_grpo_group_size_must_divide_num_envs():
    with pytest.raises(ConfigError, match="group_size=3 does not divide num_envs=4"):
        learner_for("grpo", "cartpole", num_envs=4, group_size=3)


# ------------------------------------------------------------------------------------------------ TRPO


def test_conjugate_gradient_solves_spd_system():
    g = torch.Generator().manual_seed(0)
    M = torch.randn(6, 6, generator=g, dtype=torch.float64)
    A = M @ M.T + 0.5 * torch.eye(6, dtype=torch.float64)
    b = torch.randn(6, generator=g, dtype=torch.float64)
    x = conjugate_gradient(lambda v: A @ v, b, iters=20)
    torch.testing.assert_close(x, torch.linalg.solve(A, b))


def _tiny():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    obs = torch.randn(7, 3, dtype=torch.float64)
    return net, obs


def test_fisher_vector_product_is_the_hessian_of_the_kl_at_the_old_policy():
    net, obs = _tiny()
    params = list(net.parameters())
    with torch.no_grad():
        old = MaskedCategorical(net(obs))

    def kl_fn():
        return losses.kl_divergence(old, MaskedCategorical(net(obs))).mean()

    damping = 0.1
    fvp = fisher_vector_product(kl_fn, params, damping)
    theta0 = flat([p.detach() for p in params])
    shapes = [p.shape for p in params]

    def kl_of(theta):
        out, off = [], 0
        for s in shapes:
            n = int(np.prod(s))
            out.append(theta[off : off + n].view(s))
            off += n
        h = torch.tanh(obs @ out[0].T + out[1])
        return losses.kl_divergence(old, MaskedCategorical(h @ out[2].T + out[3])).mean()

    H = torch.autograd.functional.hessian(kl_of, theta0)
    # the Fisher matrix E_s[sum_a p_a grad log p_a grad log p_a^T] at the old policy equals that Hessian
    logits = net(obs)
    p = torch.softmax(logits, -1).detach()
    F = torch.zeros_like(H)
    for s in range(len(obs)):
        for a in range(3):
            gl = flat(torch.autograd.grad(torch.log_softmax(net(obs[s : s + 1]), -1)[0, a], params))
            F += p[s, a] * torch.outer(gl, gl) / len(obs)
    torch.testing.assert_close(H, F, rtol=1e-6, atol=1e-9)
    v = torch.randn_like(theta0)
    torch.testing.assert_close(fvp(v), H @ v + damping * v, rtol=1e-6, atol=1e-9)


def test_rejected_line_search_leaves_parameters_unchanged():
    net, obs = _tiny()
    params = list(net.parameters())
    before = [p.detach().clone() for p in params]
    with torch.no_grad():
        old = MaskedCategorical(net(obs))

    def evaluate():
        kl = float(losses.kl_divergence(old, MaskedCategorical(net(obs))).mean())
        return 0.0, kl  # the surrogate never improves

    step = torch.randn(sum(p.numel() for p in params), dtype=torch.float64)
    ok, frac, gain, _ = line_search(params, step, evaluate, max_kl=1.0, iters=5, coef=0.5)
    assert not ok and frac == 0.0 and gain == 0.0
    assert all(torch.equal(a, b.detach()) for a, b in zip(before, params, strict=True))

    def evaluate_far():  # improves, but every trial breaks the KL bound
        kl = float(losses.kl_divergence(old, MaskedCategorical(net(obs))).mean())
        return -1.0 - kl, kl

    ok, *_ = line_search(params, 1e3 * step, evaluate_far, max_kl=1e-9, iters=3, coef=0.5)
    assert not ok and all(torch.equal(a, b.detach()) for a, b in zip(before, params, strict=True))


@pytest.mark.parametrize("env,max_kl", [("cartpole", 0.01), ("cartpole", 0.001), ("pendulum", 0.01)])
def test_trpo_accepted_step_satisfies_the_kl_bound_and_improves(env, max_kl):
    L = learner_for("trpo", env, num_envs=2, num_steps=64, max_kl=max_kl)
    batch = L.make_batch(L.collect())
    old = L.old_dists(batch)
    with torch.no_grad():
        loss0 = float(L.actor_loss(batch)[0])
    params0 = flat_params(L.manager)
    st = L.update(batch)
    assert st["tr_accepted"] == 1.0
    with torch.no_grad():
        kl, loss1 = float(L.mean_kl(batch, old)), float(L.actor_loss(batch)[0])
    assert 0.0 < kl <= max_kl and loss1 < loss0
    assert not torch.equal(params0, flat_params(L.manager))


def test_hatrpo_with_one_agent_equals_trpo():
    common = dict(num_steps=32, update_epochs=2, num_minibatches=2, sharing="per_agent", ent_coef=0.01,
                  gae_lambda=0.95, lr=1e-3)
    out = {}
    for algo, extra in (("hatrpo", {"value_norm": False}), ("trpo", {})):
        L = learner_for(algo, "cartpole", num_envs=2, **common, **extra)
        L.iteration()
        out[algo] = (flat_params(L.manager), flat_params(L.critic))
    torch.testing.assert_close(out["trpo"][0], out["hatrpo"][0], rtol=0, atol=1e-6)
    torch.testing.assert_close(out["trpo"][1], out["hatrpo"][1], rtol=0, atol=1e-6)


def test_hatrpo_refuses_shared_parameters():
    with pytest.raises(ConfigError, match="HATRPO needs per-agent policies"):
        learner_for("hatrpo", "simple_spread", sharing="shared")


@pytest.mark.parametrize("setting", [["env=cartpole", "algo=grpo", "algo.group_size=2"],
                                     ["env=simple_spread", "algo=hatrpo"]], ids=["grpo", "hatrpo"])
def test_checkpoints_do_not_change_the_run(setting, tiny_cfg):
    """Same seed, with and without periodic checkpoints: the same metrics (GRPO's round seeds, the reference policy
    and the trust-region steps are all in the state)."""
    from conftest import read_rows

    from marl.train import run

    runs = []
    for every in (0, 200):
        cfg = tiny_cfg(*setting, "algo.update_epochs=2", "algo.num_minibatches=2", "total_steps=600",
                       f"checkpoint_every={every}")
        run(cfg)
        runs.append(read_rows(Path(cfg.run_dir) / "metrics.csv"))
    assert len(runs[0]) > 3 and runs[0] == runs[1]
