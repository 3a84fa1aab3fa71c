"""TD3, SAC, MADDPG and MATD3: every target and loss against a hand-computed batch (TD3's min and smoothing, SAC's
soft target and tanh log-prob correction, the temperature's gradient sign, discrete SAC's expectations), MADDPG's
critic sees all actions and an actor's gradient flows through its own action only, straight-through Gumbel-softmax
gradients, per-team critic rewards, the replay buffer's resume round trip and a learner checkpoint round trip."""

from __future__ import annotations

import copy
import io
import math

import numpy as np
import pytest
import torch
from gymnasium import spaces
from test_ddpg import GymVec, ScriptEnv

from marl.adapters import make_vec_env
from marl.adapters.registry import resolve_env_config
from marl.algos import learner_class
from marl.algos.base import seed_everything
from marl.config import compose
from marl.core import losses
from marl.core.buffers import ReplayBuffer
from marl.core.distributions import gumbel_softmax_st, squashed_gaussian_sample
from marl.core.noise import smoothed_target_action
from marl.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: small MLPs run fastest single-threaded


def learner(algo: str, env, seed: int = 0, env_name: str = "pendulum", **over):
    seed_everything(seed)
    cfg = compose({"env": {"name": env_name}, "algo": {"name": algo, **over}, "seed": seed,
                   "num_envs": env.spec.num_envs, "total_steps": 10_000})
    return learner_class(algo)(cfg, env, "cpu")


class DiscreteScriptEnv(ScriptEnv):
    """:class:`test_ddpg.ScriptEnv` with Discrete(3) actions."""

    def __init__(self, **kw):
        super().__init__(**kw)
        g = self.spec.groups[0]
        self.spec = type(self.spec)("script", (type(g)(g.name, g.agents, g.obs_space, spaces.Discrete(3)),),
                                    self.spec.state_shape, False, self.spec.num_envs)


def spread(num_envs: int = 2, continuous: bool = False, env: str = "simple_spread"):
    cfg = resolve_env_config(env)
    cfg.merge_with({"kwargs": {"max_cycles": 10, "continuous_actions": continuous}})
    return make_vec_env(cfg, num_envs, seed=0)


# ---------------------------------------------------------------------------------------------- core targets / losses
def test_clipped_double_q_and_q_loss_sum_over_critics_by_hand():
    next_q = torch.tensor([[2.0, 3.0], [5.0, -1.0]])
    torch.testing.assert_close(losses.clipped_double_q(next_q), torch.tensor([2.0, -1.0]))
    y = losses.q_target(torch.tensor([1.0, 1.0]), losses.clipped_double_q(next_q), torch.tensor([0.0, 1.0]), 0.5)
    torch.testing.assert_close(y, torch.tensor([2.0, 1.0]))
    q = torch.tensor([[1.0, 2.0], [1.0, 3.0]])  # critic 1: errors 1, 0 -> 0.5; critic 2: errors 0, 2 -> 2
    torch.testing.assert_close(losses.q_loss(q, y), torch.tensor(2.5))


def test_target_policy_smoothing_clips_noise_then_action_by_hand():
    a = torch.tensor([0.9, -0.2, 0.0, -0.95])
    gen = torch.Generator().manual_seed(3)
    raw = 0.4 * torch.randn(a.shape, generator=torch.Generator().manual_seed(3))
    expected = (a + raw.clamp(-0.5, 0.5)).clamp(-1.0, 1.0)
    out = smoothed_target_action(a, 0.4, 0.5, gen)
    torch.testing.assert_close(out, expected)
    assert (out - a).abs().max() <= 0.5 + 1e-6 and out.abs().max() <= 1.0
    assert smoothed_target_action(a, 0.0, 0.5, gen).equal(a)


def test_soft_q_target_by_hand():
    y = losses.soft_q_target(torch.tensor([1.0, 0.5]), torch.tensor([[2.0, 3.0], [5.0, 4.0]]),
                             torch.tensor([0.5, -1.0]), 0.2, torch.tensor([0.0, 1.0]), 0.9)
    torch.testing.assert_close(y, torch.tensor([1.0 + 0.9 * (2.0 - 0.2 * 0.5), 0.5]))


def test_squashed_gaussian_log_prob_has_the_tanh_correction():
    mean, log_std = torch.tensor([[0.3, -1.0]]), torch.tensor([[-0.5, 0.2]])
    a, logp = squashed_gaussian_sample(mean, log_std, torch.Generator().manual_seed(0))
    eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(0))
    u = mean + log_std.exp() * eps
    torch.testing.assert_close(a, torch.tanh(u))
    normal = torch.distributions.Normal(mean, log_std.exp()).log_prob(u)
    expected = (normal - torch.log(1 - torch.tanh(u) ** 2)).sum(-1)  # the change of variables, by hand
    torch.testing.assert_close(logp, expected)
    assert not torch.allclose(logp, normal.sum(-1))  # the correction matters
    # finite where tanh(u) rounds to 1
    _, lp = squashed_gaussian_sample(torch.tensor([[30.0]]), torch.tensor([[-5.0]]), torch.Generator())
    assert torch.isfinite(lp).all()


def test_temperature_loss_gradient_sign_raises_alpha_below_target_entropy():
    for entropy, sign in ((torch.tensor([-2.0, -1.0]), -1.0), (torch.tensor([0.5, 1.5]), 1.0)):
        log_alpha = torch.zeros((), requires_grad=True)
        losses.temperature_loss(log_alpha, entropy, target_entropy=-0.5).backward()
        torch.testing.assert_close(log_alpha.grad, entropy.mean() + 0.5)  # E[H] - H_target
        assert math.copysign(1.0, float(log_alpha.grad)) == sign  # descent: below target -> alpha grows


def test_discrete_soft_value_and_actor_loss_by_hand():
    q = torch.tensor([[[1.0, 4.0], [2.0, 3.0]]])  # [B=1, K=2, A=2]: min over critics = [1, 3]
    probs = torch.tensor([[0.25, 0.75]])
    logp = probs.log()
    v = losses.soft_value_discrete(q, probs, logp, 0.5)
    torch.testing.assert_close(v, torch.tensor([0.25 * (1 - 0.5 * math.log(0.25)) + 0.75 * (3 - 0.5 * math.log(0.75))]))
    loss = losses.sac_discrete_actor_loss(probs, logp, q, 0.5)
    torch.testing.assert_close(loss, -v[0])


def test_gumbel_softmax_straight_through_value_and_gradient():
    logits = torch.tensor([[0.5, -1.0, 2.0]], requires_grad=True)
    w = torch.tensor([[1.0, 2.0, -3.0]])
    y = gumbel_softmax_st(logits, torch.Generator().manual_seed(7), temperature=0.7)
    assert torch.equal(y.detach().sum(-1), torch.ones(1)) and set(y.detach().flatten().tolist()) <= {0.0, 1.0}
    (y * w).sum().backward()
    ref = logits.detach().clone().requires_grad_(True)
    u = torch.rand(ref.shape, generator=torch.Generator().manual_seed(7)).clamp(1e-10, 1.0 - 1e-7)
    soft = torch.softmax((ref - torch.log(-torch.log(u))) / 0.7, -1)
    (soft * w).sum().backward()
    torch.testing.assert_close(logits.grad, ref.grad)  # the relaxed sample's gradient
    assert int(y.detach().argmax()) == int(soft.detach().argmax())  # forward: the hard sample of the same noise
    draws = torch.stack([gumbel_softmax_st(torch.tensor([0.0, math.log(3.0)]), torch.Generator().manual_seed(s))
                         for s in range(2000)])
    assert abs(float(draws[:, 1].mean()) - 0.75) < 0.03  # a sample of softmax(logits)


# ---------------------------------------------------------------------------------------------- replay
def test_replay_wraps_and_state_round_trip_samples_the_same():
    buf = ReplayBuffer(5, {"x": (2,), "r": ()})
    for k in range(4):  # 8 rows into 5: the newest 5 survive, in ring order
        buf.add(x=torch.full((2, 2), float(k)), r=torch.tensor([k, k + 0.5]))
    assert len(buf) == 5 and buf.pos == 3
    assert buf.data["r"].tolist() == [2.5, 3.0, 3.5, 1.5, 2.0]  # rows 0, 0.5, 1 overwritten
    assert buf.nbytes == 5 * 3 * 4 and buf.filled_bytes == buf.nbytes
    blob = io.BytesIO()
    torch.save(buf.state_dict(), blob)
    blob.seek(0)
    other = ReplayBuffer(5, {"x": (2,), "r": ()})
    other.load_state_dict(torch.load(blob, weights_only=True))
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    for _ in range(3):
        a, b = buf.sample(4, g1), other.sample(4, g2)
        assert all(torch.equal(a[k], b[k]) for k in a)
    buf.add(x=torch.zeros(1, 2), r=torch.zeros(1))
    other.add(x=torch.zeros(1, 2), r=torch.zeros(1))
    assert torch.equal(buf.table, other.table) and buf.pos == other.pos == 4


# ---------------------------------------------------------------------------------------------- TD3 / SAC learners
def test_td3_target_is_the_min_of_twin_target_critics_and_the_actor_waits_policy_delay():
    env = ScriptEnv(length=3)
    ln = learner("td3", env, learning_starts=2, batch_size=4, target_noise=0.0, policy_delay=2)
    for _ in range(3):
        ln.iteration()
    gs = ln.groups["g"]
    batch = {k: v.unsqueeze(1) for k, v in gs.buffers[0].sample(4, torch.Generator().manual_seed(0)).items()}
    with torch.no_grad():
        a2 = gs.actor_target(batch["next_obs"])
        q1 = gs.critic_target.nets[0](torch.cat([batch["next_obs"], a2], -1)).squeeze(-1)
        q2 = gs.critic_target.nets[1](torch.cat([batch["next_obs"], a2], -1)).squeeze(-1)
    expected = batch["reward"] + ln.gamma * (1 - batch["terminated"]) * torch.minimum(q1, q2)
    torch.testing.assert_close(ln.td_target(gs, batch), expected)
    before = [p.clone() for p in gs.actor.parameters()]
    ln.updates = 0
    ln.update(gs, batch, actor_step=ln.updates + 1 == ln.policy_delay)
    assert all(torch.equal(p, b) for p, b in zip(gs.actor.parameters(), before, strict=True))
    ln.update(gs, batch, actor_step=True)
    assert not all(torch.equal(p, b) for p, b in zip(gs.actor.parameters(), before, strict=True))


def test_td3_discrete_is_refused():
    env = GymVec("CartPole-v1", 1)
    with pytest.raises(ConfigError, match="needs continuous"):
        learner("td3", env, env_name="cartpole")
    env.close()


def test_sac_continuous_target_uses_the_soft_value_of_a_fresh_sample():
    env = ScriptEnv(length=3)
    ln = learner("sac", env, learning_starts=2, batch_size=4, alpha=0.3, autotune=False)
    for _ in range(3):
        ln.iteration()
    gs = ln.groups["g"]
    batch = {k: v.unsqueeze(1) for k, v in gs.buffers[0].sample(4, torch.Generator().manual_seed(0)).items()}
    state = ln.gen.get_state()
    y = ln.td_target(gs, batch)
    ln.gen.set_state(state)
    with torch.no_grad():
        mean, log_std = gs.actor(batch["next_obs"])
        a2, logp2 = squashed_gaussian_sample(mean, log_std, ln.gen)
        q = torch.stack([net(torch.cat([batch["next_obs"], a2], -1)).squeeze(-1) for net in gs.critic_target.nets], -1)
    expected = batch["reward"] + ln.gamma * (1 - batch["terminated"]) * (q.min(-1).values - 0.3 * logp2)
    torch.testing.assert_close(y, expected)
    assert ln.groups["g"].extra["alpha_optim"] is None and float(ln.alpha(gs)) == pytest.approx(0.3)


def test_discrete_sac_target_actor_and_temperature_by_hand():
    env = DiscreteScriptEnv(length=3)
    ln = learner("sac", env, learning_starts=2, batch_size=4, alpha=0.5)
    gs = ln.groups["g"]
    assert gs.extra["target_entropy"] == pytest.approx(0.89 * math.log(3))
    for _ in range(4):
        ln.iteration()
    batch = {k: v.unsqueeze(1) for k, v in gs.buffers[0].sample(4, torch.Generator().manual_seed(0)).items()}
    with torch.no_grad():
        logits = gs.actor(batch["next_obs"])
        p, lp = torch.softmax(logits, -1), torch.log_softmax(logits, -1)
        q = torch.stack([net(batch["next_obs"]) for net in gs.critic_target.nets], -2).min(-2).values  # [B, M, A]
        v = (p * (q - ln.alpha(gs) * lp)).sum(-1)
    torch.testing.assert_close(ln.td_target(gs, batch), batch["reward"] + ln.gamma * (1 - batch["terminated"]) * v)
    assert batch["action"].dtype == torch.float32 and set(batch["action"].flatten().tolist()) <= {0.0, 1.0, 2.0}
    alpha0 = float(ln.alpha(gs))
    m = ln.update(gs, batch, actor_step=True)
    assert {"losses/alpha", "losses/alpha_loss", "losses/entropy", "losses/actor_loss"} <= m.keys()
    ent = float(m["losses/entropy"])  # a near-uniform policy: entropy above 0.89 log 3 -> alpha falls
    assert ent > gs.extra["target_entropy"] and float(ln.alpha(gs)) < alpha0
    acts = ln.act({"g": torch.zeros(5, 1, 1)}, {"g": None}, deterministic=False)["g"]
    assert acts.shape == (5, 1) and acts.dtype == torch.int64


def test_sac_state_round_trip_same_actions_and_same_next_iteration():
    env = GymVec("Pendulum-v1", 2)
    ln = learner("sac", env, learning_starts=40, batch_size=16, hidden=[32])
    for _ in range(40):
        ln.iteration()
    blob = io.BytesIO()
    torch.save(ln.state_dict(), blob)
    blob.seek(0)
    env2 = copy.deepcopy(env)
    ln2 = learner("sac", env2, seed=9, learning_starts=40, batch_size=16, hidden=[32])
    ln2.load_state_dict(torch.load(blob, weights_only=True))
    ln2.last = ln.last
    obs = {"agent": torch.randn(8, 1, 3)}
    assert torch.equal(ln.act(obs, {"agent": None}, True)["agent"], ln2.act(obs, {"agent": None}, True)["agent"])
    assert torch.equal(ln.groups["agent"].extra["log_alpha"], ln2.groups["agent"].extra["log_alpha"])
    assert [ln.iteration() for _ in range(3)] == [ln2.iteration() for _ in range(3)]
    env.close()


# ---------------------------------------------------------------------------------------------- MADDPG / MATD3
def _batch(ln):
    return ln.replay.sample(8, torch.Generator().manual_seed(0))


def test_maddpg_critic_sees_every_agents_action_and_the_state():
    env = spread()
    ln = learner("maddpg", env, env_name="simple_spread", learning_starts=8, batch_size=8, hidden=[16])
    for _ in range(8):
        ln.iteration()
    assert ln.units.U == 1 and ln.joint_dim == 3 * 5
    b = _batch(ln)
    assert torch.equal(b["agent/action"].sum(-1), b["agent/acting"])  # one-hot per acting agent
    joint = ln._stored_joint(b).unsqueeze(1)
    u = torch.zeros(1, dtype=torch.long)
    q = ln.critic(ln._critic_in(b["state"], joint, u))
    for agent in range(3):
        other = joint.clone()
        block = slice(5 * agent, 5 * agent + 5)
        other[..., block] = other[..., block].roll(1, -1)  # another action of this agent only
        assert not torch.allclose(ln.critic(ln._critic_in(b["state"], other, u)), q)
    env.close()


def test_maddpg_actor_gradient_flows_through_its_own_action_only():
    env = spread(continuous=True)
    ln = learner("maddpg", env, env_name="simple_spread", learning_starts=8, batch_size=8, hidden=[16],
                 sharing="per_agent")
    for _ in range(8):
        ln.iteration()
    b = _batch(ln)
    # the joint rows: row i holds agent i's new action and the replay's actions of the others
    new = torch.randn(8, ln.joint_dim, requires_grad=True)
    old = ln._stored_joint(b)
    joint = old.unsqueeze(1) * (1 - ln.slot) + new.unsqueeze(1) * ln.slot
    q = ln.critic(ln._critic_in(b["state"], joint, ln.unit_of))[..., 0]  # [B, N]
    for i in range(3):
        (g,) = torch.autograd.grad(q[:, i].sum(), new, retain_graph=True)
        own = torch.zeros(ln.joint_dim, dtype=torch.bool)
        own[5 * i: 5 * i + 5] = True
        assert g[:, own].abs().sum() > 0 and torch.all(g[:, ~own] == 0)
    # end to end: only agent 0 acting -> only agent 0's actor (per-agent member 0) gets a gradient
    b["agent/acting"] = torch.zeros_like(b["agent/acting"])
    b["agent/acting"][:, 0] = 1.0
    gs = ln.groups["agent"]
    gs.actor.zero_grad(set_to_none=False)
    ln.actor_loss_joint(b).backward()
    w = gs.actor.net.net[0].weight.grad  # [M=3, out, in]
    assert w[0].abs().sum() > 0 and torch.all(w[1:] == 0)
    env.close()


def test_maddpg_competitive_env_has_one_critic_unit_per_team_on_team_rewards():
    env = spread(env="simple_tag")
    ln = learner("maddpg", env, env_name="simple_tag", learning_starts=10_000, hidden=[16])
    assert ln.units.U == 2 and ln.unit_id
    reward_seen = []
    orig = env.step
    env.step = lambda actions: (lambda out: (reward_seen.append(out.reward), out)[1])(orig(actions))
    for _ in range(4):
        ln.iteration()
    stored = ln.replay.data["reward"][: len(ln.replay)].reshape(4, 2, 2)
    for t, r in enumerate(reward_seen):
        expected = ln.units.reduce({k: torch.as_tensor(v) for k, v in r.items()}, "sum")
        torch.testing.assert_close(stored[t], expected)
    team_of_agent = dict(zip(ln.spec.agents, ln.unit_of.tolist(), strict=True))
    assert team_of_agent["adversary_0"] != team_of_agent["agent_0"]
    env.close()


@pytest.mark.parametrize("algo", ["maddpg", "matd3"])
@pytest.mark.parametrize("continuous", [False, True])
def test_maddpg_matd3_train_and_round_trip(algo, continuous):
    env = spread(continuous=continuous)
    over = dict(learning_starts=16, batch_size=8, hidden=[16])
    ln = learner(algo, env, env_name="simple_spread", **over)
    assert ln.critic.n_q == (2 if algo == "matd3" else 1)
    metrics = {}
    for _ in range(24):
        metrics = ln.iteration()
    assert {"losses/qf_loss", "losses/qf_values", "charts/replay_mb"} <= metrics.keys()
    assert all(math.isfinite(v) for v in metrics.values())
    assert len(ln.replay) == 48 and metrics["charts/replay_capacity_mb"] >= metrics["charts/replay_mb"] > 0
    blob = io.BytesIO()
    torch.save(ln.state_dict(), blob)
    blob.seek(0)
    env2 = spread(continuous=continuous)
    ln2 = learner(algo, env2, seed=4, env_name="simple_spread", **over)
    state = torch.load(blob, weights_only=True)
    ln2.load_state_dict(state)
    ln2.restore_env(state["env"], 0)
    assert torch.equal(ln2.replay.table[:48], ln.replay.table[:48])
    assert [ln.iteration() for _ in range(3)] == [ln2.iteration() for _ in range(3)]
    obs = {"agent": torch.randn(4, 3, 18)}
    a = ln.act(obs, {"agent": None}, True)["agent"]
    assert a.shape == ((4, 3, 5) if continuous else (4, 3))
    env.close()
    env2.close()


def test_maddpg_refuses_turn_based_games():
    cfg = resolve_env_config("tictactoe")
    env = make_vec_env(cfg, 1, seed=0)
    with pytest.raises(ConfigError, match="turn-based"):
        learner("maddpg", env, env_name="tictactoe")
    env.close()


def test_np_actions_sent_to_the_env_are_valid_for_every_new_algo():
    for algo in ("td3", "sac"):
        env = GymVec("Pendulum-v1", 2)
        seen = []
        orig = env.step
        env.step = lambda actions, orig=orig, seen=seen: (seen.append(actions["agent"].copy()), orig(actions))[1]
        ln = learner(algo, env, learning_starts=4, batch_size=4, hidden=[8])
        for _ in range(8):
            ln.iteration()
        a = np.concatenate(seen)
        assert a.shape == (16, 1, 1) and np.all(np.abs(a) <= 2.0)
        env.close()


# ---------------------------------------------------------------------------------------------- API, backend, matches
@pytest.mark.parametrize("algo,env,backend", [("td3", "pendulum", "inprocess"), ("sac", "pendulum", "subprocess"),
                                              ("maddpg", "simple_spread", "subprocess"),
                                              ("matd3", "simple_adversary", "inprocess")])
def test_python_api_backend_and_rendered_match(algo, env, backend, tmp_path, capsys):
    """Train through ``marl.train.run`` (the Python API) on either backend, then play a rendered, evaluated match of
    the saved policy with scripts/evaluate.py."""
    from test_evaluate import load_script

    from marl.train import run

    run_dir = tmp_path / "run"
    cfg = resolve_env_config(env)
    cfg.merge_with({"backend": backend, "workers": 1})
    run({"env": cfg, "algo": {"name": algo, "learning_starts": 32, "batch_size": 16, "hidden": [16]},
         "num_envs": 2, "seed": 0, "total_steps": 96, "progress": False, "eval_every": 0, "eval_episodes": 2,
         "run_dir": str(run_dir), "threads": 1})
    video = tmp_path / "match.gif"
    code = load_script("evaluate").main([f"run={run_dir}", "episodes=2", "render=rgb_array", f"video={video}"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert video.stat().st_size > 1000 and "return" in out.out
