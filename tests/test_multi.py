"""Multi-agent schemes: joint GAE, HAPPO's weight, one-agent equivalence, dead-agent masks, the exclusive game."""

import copy

import numpy as np
import pytest
import torch

from marl.adapters.registry import resolve_env_config
from marl.config import compose
from marl.train import build, make_learner

EXCLUSIVE = {"name": "exclusive", "entry_point": "matrix_games:exclusive_parallel_env", "check": False}


def learner_for(algo: str, env: dict | str = EXCLUSIVE, seed: int = 0, num_envs: int = 1, **algo_over):
    env_cfg = resolve_env_config(env) if isinstance(env, str) else env
    cfg = compose({"env": env_cfg, "algo": {"name": algo, **algo_over}, "num_envs": num_envs, "seed": seed,
                    "total_steps": 10_000, "preset": "none"})  # the algorithm's own YAML values
    torch.manual_seed(seed)
    learner = make_learner(cfg, build(cfg), "cpu")
    learner.reset_env(seed)
    return learner


def two_step_rollout(learner, rewards):
    """Collect 2 steps, then overwrite rewards [T, E, N] and clear the episode ends (one continuing episode); the
    (empty) carry rows in front of the steps are dropped from the returned advantages by :func:`steps`."""
    buf = learner.collect()
    C, gb = buf.carry, buf.groups["agent"]
    r = torch.tensor(rewards, dtype=torch.float32)[:, None, :]
    gb.reward[C:] = r
    buf.unit_reward[C:] = learner.units.reduce({"agent": r}, learner.team_reduce)
    gb.terminated[:] = False
    gb.acting[C:] = True
    buf.done[:] = False
    buf.truncated[:] = False
    return buf


def steps(x, buf):
    """The step rows of a per-row tensor (the carry rows removed)."""
    return x[buf.carry :]


def test_mappo_joint_gae_on_team_reward_hand_computed():
    L = learner_for("mappo", num_steps=2, num_minibatches=1, value_norm=False, gamma=0.9, gae_lambda=1.0)
    L.values = lambda obs, state: torch.full((*state.shape[:-1], 1), 0.5)
    buf = two_step_rollout(L, [[1.0, 0.0], [0.0, 2.0]])
    adv, target, _, _ = L.advantages(buf)
    # team reward [1, 2]; delta = r + 0.9 * 0.5 - 0.5 ; A_1 = 1.95 ; A_0 = 0.95 + 0.9 * 1.95
    expected = torch.tensor([0.95 + 0.9 * 1.95, 1.95])
    for k in range(2):  # broadcast to both agents
        torch.testing.assert_close(steps(adv["agent"], buf)[:, 0, k], expected)
    torch.testing.assert_close(steps(target, buf)[:, 0, 0], expected + 0.5)


def test_ippo_gae_per_agent_on_own_reward():
    L = learner_for("ippo", num_steps=2, num_minibatches=1, value_norm=False, gamma=0.9, gae_lambda=1.0)
    L.values = lambda obs, state: torch.full((*state.shape[:-1], 2), 0.5)
    buf = two_step_rollout(L, [[1.0, 0.0], [0.0, 2.0]])
    adv, _, _, _ = L.advantages(buf)
    adv = steps(adv["agent"], buf)
    torch.testing.assert_close(adv[:, 0, 0], torch.tensor([0.95 + 0.9 * -0.05, -0.05]))
    torch.testing.assert_close(adv[:, 0, 1], torch.tensor([-0.05 + 0.9 * 1.95, 1.95]))


def test_happo_weight_is_one_then_product_of_earlier_ratios():
    L = learner_for("happo", "simple_spread", num_envs=2, num_steps=8, update_epochs=3, num_minibatches=2)
    batch = L.make_batch(L.collect())
    old = {k: v.clone() for k, v in batch.logp_old.items()}
    gen = torch.Generator()
    gen.set_state(L.gen.get_state())
    order = torch.randperm(3, generator=gen).tolist()
    seen = []
    real = L.run_epochs
    L.run_epochs = lambda b, fn, *rest: (seen.append(b.weight.clone()), real(b, fn, *rest))[1]
    L.update(batch)
    assert len(seen) == 3
    torch.testing.assert_close(seen[0], torch.ones_like(seen[0]))
    with torch.no_grad():  # each agent is updated once, so its final parameters give its ratio
        d = L.manager.dist("agent", batch.obs["agent"], None)
        ratio = torch.exp(d.log_prob(batch.action["agent"]) - old["agent"])
    expected = torch.ones_like(seen[0])
    for i in range(1, 3):
        expected = expected * ratio[:, order[i - 1]]
        torch.testing.assert_close(seen[i], expected)
    assert not torch.allclose(seen[2], torch.ones_like(seen[2]))


def flat_params(module):
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def test_one_agent_happo_equals_mappo_equals_ippo():
    common = dict(num_steps=32, update_epochs=2, num_minibatches=2, sharing="per_agent", ent_coef=0.01,
                  lr=1e-3, critic_lr=5e-4)  # the shipped YAMLs differ in lr; the algorithms must not
    out = {}
    for algo in ("happo", "mappo", "ippo"):
        L = learner_for(algo, "cartpole", num_envs=2, **common)
        L.iteration()
        out[algo] = (flat_params(L.manager), flat_params(L.critic))
    for algo in ("mappo", "ippo"):
        torch.testing.assert_close(out[algo][0], out["happo"][0], rtol=0, atol=1e-6)
        torch.testing.assert_close(out[algo][1], out["happo"][1], rtol=0, atol=1e-6)


@pytest.mark.parametrize("algo", ["ippo", "mappo"])
def test_padded_agent_entries_do_not_reach_the_loss(algo):
    L = learner_for(algo, "simple_spread", num_envs=2, num_steps=4)
    batch = L.make_batch(L.collect())
    batch.acting["agent"][:, 1] = False  # agent 1 is dead / padded
    batch.vmask[:] = batch.vmask & (algo == "mappo" or torch.tensor([True, False, True]))

    def loss_and_grads(b):
        L.manager.zero_grad()
        L.critic.zero_grad()
        a, _ = L.actor_loss(b)
        v = L.critic_loss(b)
        (a + v).backward()
        grads = [p.grad.clone() for p in [*L.manager.parameters(), *L.critic.parameters()] if p.grad is not None]
        return a.detach(), v.detach(), grads

    base = loss_and_grads(batch)
    garbage = copy.deepcopy(batch)
    garbage.adv["agent"][:, 1] = 1e6
    garbage.logp_old["agent"][:, 1] = -50.0
    garbage.action["agent"][:, 1] = 4
    if algo == "ippo":
        garbage.obs["agent"][:, 1] = 1e3  # the local critic must not see the padded observation either
        garbage.target[:, 1] = 1e6
    pert = loss_and_grads(garbage)
    torch.testing.assert_close(pert[0], base[0])
    torch.testing.assert_close(pert[1], base[1])
    for g1, g2 in zip(base[2], pert[2], strict=True):
        torch.testing.assert_close(g1, g2)


def train_exclusive(algo: str, seed: int, **over) -> float:
    # norm_adv off: once both agents are deterministic the true advantages vanish, and batch normalization would
    # rescale the critic's residual noise to unit size (a known property of that trick, not what this test is about)
    L = learner_for(algo, seed=seed, num_envs=8, num_steps=16, lr=0.01, ent_coef=0.0, update_epochs=4,
                    norm_adv=False, **over)
    rets = []
    while L.env_steps < 6000:
        L.iteration()
        rets += [e.returns["agent_0"] for e in L.pop_episodes()]
    return float(np.mean(rets[-256:]))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("algo", ["ippo", "happo", "hatrpo"])
def test_exclusive_game_per_agent_policies_learn_to_differ(algo, seed):
    assert train_exclusive(algo, seed, sharing="per_agent") >= 0.95


@pytest.mark.parametrize("seed", [0, 1])
def test_exclusive_game_single_shared_policy_cannot_exceed_half(seed):
    assert train_exclusive("ippo", seed, sharing="shared", agent_id=False) <= 0.55
