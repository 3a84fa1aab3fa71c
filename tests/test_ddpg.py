"""DDPG: Polyak averaging, exploration noise, truncation-aware TD targets through the update path, bounds, refusal of
discrete actions, checkpoint round trip, determinism, per-agent replay, and small learning checks on Pendulum-v1."""

from __future__ import annotations

import copy
import io
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from test_adapters_core import Survivors

from marl.adapters import make_vec_env
from marl.adapters.base import EnvSpec, EpisodeStat, GroupSpec, StepOut
from marl.algos.base import seed_everything
from marl.algos.ddpg import DDPG
from marl.config import compose
from marl.core.networks import MLP, polyak_update
from marl.core.noise import GaussianNoise, OUNoise
from marl.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: small MLPs run fastest single-threaded


# ---------------------------------------------------------------------------------------------- stand-in envs
class GymVec:
    """A gymnasium env as a VecMultiEnv: one group "agent" of one agent, same-step autoreset."""

    def __init__(self, env_id: str, num_envs: int):
        self.venv = gym.vector.SyncVectorEnv(
            [lambda: gym.make(env_id) for _ in range(num_envs)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
        )
        e = num_envs
        obs_space = self.venv.single_observation_space
        self.spec = EnvSpec(
            name=env_id,
            groups=(GroupSpec("agent", ("agent",), obs_space, self.venv.single_action_space),),
            state_shape=obs_space.shape,
            turn_based=False,
            num_envs=e,
        )
        self.ret, self.len = np.zeros(e), np.zeros(e, dtype=int)

    def _out(self, obs, reward, term, trunc, info) -> StepOut:
        e = self.spec.num_envs
        done = term | trunc
        final = obs.copy()
        if done.any():
            for i in np.flatnonzero(done):
                final[i] = info["final_obs"][i]
        o = obs.astype(np.float32)
        return StepOut(
            obs={"agent": o[:, None]},
            action_mask={"agent": None},
            alive={"agent": np.ones((e, 1), bool)},
            acting={"agent": np.ones((e, 1), bool)},
            state=o,
            reward={"agent": reward.astype(np.float32)[:, None]},
            terminated={"agent": term[:, None]},
            truncated=trunc,
            done=done,
            final_obs={"agent": final.astype(np.float32)[:, None]},
            final_state=final.astype(np.float32),
        )

    def reset(self, seed: int | None = None) -> StepOut:
        obs, info = self.venv.reset(seed=seed)
        e = self.spec.num_envs
        self.ret[:], self.len[:] = 0, 0
        return self._out(obs, np.zeros(e), np.zeros(e, bool), np.zeros(e, bool), info)

    def step(self, actions: dict[str, np.ndarray]) -> StepOut:
        obs, reward, term, trunc, info = self.venv.step(actions["agent"][:, 0])
        out = self._out(obs, reward, term, trunc, info)
        self.ret += reward
        self.len += 1
        for i in np.flatnonzero(out.done):
            out.episodes.append(EpisodeStat(int(i), {"agent": float(self.ret[i])}, int(self.len[i])))
            self.ret[i], self.len[i] = 0, 0
        return out

    def render(self, index: int = 0):
        return None

    def close(self) -> None:
        self.venv.close()


class ScriptEnv:
    """E=1, groups with N agents, obs = [t] (step count), reward 1; ends after ``length`` steps by truncation or
    termination with final_obs = [100]. Agent 1 (if any) is dead on odd steps."""

    def __init__(self, length: int = 3, terminate: bool = False, n_agents: int = 1, num_envs: int = 1):
        box = spaces.Box(-1.0, 1.0, (1,), np.float32)
        obs_space = spaces.Box(-np.inf, np.inf, (1,), np.float32)
        agents = tuple(f"a{i}" for i in range(n_agents))
        self.spec = EnvSpec("script", (GroupSpec("g", agents, obs_space, box),), (n_agents,), False, num_envs)
        self.length, self.terminate, self.n, self.t = length, terminate, n_agents, 0
        self.seen: list[np.ndarray] = []

    def _out(self, t: int, reward: float, end: bool) -> StepOut:
        e, n = self.spec.num_envs, self.n
        alive = np.ones((e, n), bool)
        if n > 1 and t % 2 == 1:
            alive[:, 1] = False
        full = lambda v: np.full((e, n, 1), v, np.float32)
        return StepOut(
            obs={"g": full(0.0 if end else t)},
            action_mask={"g": None},
            alive={"g": alive},
            acting={"g": alive.copy()},
            state=np.zeros((e, n), np.float32),
            reward={"g": np.full((e, n), reward, np.float32)},
            terminated={"g": np.full((e, n), end and self.terminate)},
            truncated=np.full(e, end and not self.terminate),
            done=np.full(e, end),
            final_obs={"g": full(100.0 if end else 0.0)},
            final_state=np.zeros((e, n), np.float32),
        )

    def reset(self, seed: int | None = None) -> StepOut:
        self.t = 0
        return self._out(0, 0.0, False)

    def step(self, actions: dict[str, np.ndarray]) -> StepOut:
        self.seen.append(actions["g"].copy())
        self.t += 1
        end = self.t == self.length
        out = self._out(self.t, 1.0, end)
        if end:
            self.t = 0
        return out

    def render(self, index: int = 0):
        return None

    def close(self) -> None:
        return None


def make_cfg(num_envs: int = 1, seed: int = 0, total_steps: int = 20_000, **algo):
    """The CLI's config for ``env=pendulum algo=ddpg`` (configs/algo/ddpg.yaml) with these values."""
    return compose({"env": {"name": "pendulum"}, "algo": {"name": "ddpg", **algo}, "seed": seed,
                    "num_envs": num_envs, "total_steps": total_steps})


def make_learner(env, seed: int = 0, **algo) -> DDPG:
    seed_everything(seed)
    return DDPG(make_cfg(env.spec.num_envs, seed, **algo), env, "cpu")


def evaluate(learner: DDPG, episodes: int = 10, seed: int = 10_000) -> float:
    """Mean deterministic return over ``episodes`` Pendulum episodes."""
    env = gym.make("Pendulum-v1")
    rets = []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        done, ret = False, 0.0
        while not done:
            o = torch.as_tensor(obs, dtype=torch.float32).reshape(1, 1, -1)
            a = learner.act({"agent": o}, {"agent": None}, deterministic=True)["agent"]
            obs, r, term, trunc, _ = env.step(a.reshape(-1).numpy())
            ret += float(r)
            done = term or trunc
        rets.append(ret)
    env.close()
    return float(np.mean(rets))


# ---------------------------------------------------------------------------------------------- core pieces
def test_polyak_tau_one_copies_tau_zero_keeps_and_hand_computed_mix():
    torch.manual_seed(0)
    src, tgt = MLP(3, [4], 2), MLP(3, [4], 2)
    before = [p.clone() for p in tgt.parameters()]
    polyak_update(tgt, src, 0.0)
    assert all(torch.equal(p, b) for p, b in zip(tgt.parameters(), before, strict=True))
    polyak_update(tgt, src, 0.3)
    for p, b, s in zip(tgt.parameters(), before, src.parameters(), strict=True):
        torch.testing.assert_close(p, 0.3 * s + 0.7 * b)
    polyak_update(tgt, src, 1.0)
    assert all(torch.equal(p, s) for p, s in zip(tgt.parameters(), src.parameters(), strict=True))


def test_ou_noise_reverts_to_mean_and_has_the_stationary_std():
    gen = torch.Generator().manual_seed(0)
    ou = OUNoise((1,), std=0.0, theta=0.2, generator=gen)
    ou.x.fill_(5.0)
    xs = [float(ou.sample()) for _ in range(10)]
    np.testing.assert_allclose(xs, [5.0 * 0.8 ** (k + 1) for k in range(10)], rtol=1e-6)

    ou = OUNoise((20_000,), std=0.3, theta=0.15, generator=gen)
    for _ in range(100):  # burn in past the correlation time ~1/theta
        prev = ou.sample()
    cur = ou.sample()
    assert abs(float(cur.std()) - 0.3) < 0.01
    assert abs(float(cur.mean())) < 0.01
    lag1 = float(torch.corrcoef(torch.stack([prev, cur]))[0, 1])
    assert abs(lag1 - 0.85) < 0.02
    ou.reset(torch.tensor([True] + [False] * 19_999))
    assert ou.x[0] == 0 and ou.x[1] != 0


def test_gaussian_noise_scale_and_independence():
    g = GaussianNoise((50_000,), std=0.2, generator=torch.Generator().manual_seed(1))
    a, b = g.sample(), g.sample()
    assert abs(float(a.std()) - 0.2) < 0.005 and abs(float(a.mean())) < 0.005
    assert abs(float(torch.corrcoef(torch.stack([a, b]))[0, 1])) < 0.02


# ---------------------------------------------------------------------------------------------- learner
@pytest.mark.parametrize("terminate", [False, True])
def test_td_target_truncation_bootstraps_from_final_obs_termination_does_not(terminate):
    env = ScriptEnv(length=3, terminate=terminate)
    ln = make_learner(env, learning_starts=10_000, batch_size=1)
    for _ in range(3):
        ln.iteration()
    buf = ln.groups["g"].buffers[0]
    assert len(buf) == 3
    last = {k: v[2:3].unsqueeze(1) for k, v in buf.data.items()}  # the episode's final transition [1, 1, ...]
    assert float(last["next_obs"]) == 100.0  # the final observation, not the reset one
    assert float(last["terminated"]) == float(terminate)
    gs = ln.groups["g"]
    with torch.no_grad():
        q_next = gs.critic_target(torch.tensor([[[100.0]]]), gs.actor_target(torch.tensor([[[100.0]]])))
    expected = 1.0 + (0.0 if terminate else ln.algo.gamma * float(q_next))
    torch.testing.assert_close(float(ln.td_target(gs, last)), expected)
    # the update regresses Q(s, a) on exactly that target
    with torch.no_grad():
        q = float(gs.critic(last["obs"], last["action"]))
    metrics = ln.update(gs, last, actor_step=False)
    assert float(metrics["losses/qf_loss"]) == pytest.approx((q - expected) ** 2, rel=1e-5)


def test_actions_within_bounds_warmup_noise_and_act():
    env = GymVec("Pendulum-v1", 2)
    ln = make_learner(env, learning_starts=50, noise="ou", noise_std=3.0, batch_size=8)
    seen = []
    orig = env.step
    env.step = lambda actions: (seen.append(actions["agent"].copy()), orig(actions))[1]
    for _ in range(100):
        ln.iteration()
    a = np.concatenate(seen)
    assert a.shape == (200, 1, 1) and np.all(np.abs(a) <= 2.0)
    assert np.abs(a).max() == 2.0  # heavy noise is clipped onto the bound
    obs = {"agent": torch.randn(64, 1, 3) * 10}
    for det in (True, False):
        out = ln.act(obs, {"agent": None}, deterministic=det)["agent"]
        assert out.shape == (64, 1, 1) and out.abs().max() <= 2.0
    from_numpy = ln.act({"agent": obs["agent"].numpy()}, {"agent": None}, deterministic=True)["agent"]
    assert torch.equal(from_numpy, ln.act(obs, {"agent": None}, deterministic=True)["agent"])
    env.close()


@pytest.mark.parametrize("num_envs", [1, 4, 8])
def test_default_replay_ratio_is_one_update_per_transition(num_envs):
    cfg = make_cfg(num_envs)
    assert cfg.algo.gradient_steps == num_envs and cfg.algo.train_freq == 1


def test_discrete_action_space_is_refused_with_a_config_error():
    env = GymVec("CartPole-v1", 1)
    with pytest.raises(ConfigError, match="Box") as err:
        make_learner(env)
    assert "algo=ppo" in str(err.value)
    env.close()


def test_per_agent_replay_stores_only_alive_acting_agents():
    env = ScriptEnv(length=5, n_agents=2, num_envs=1)
    ln = make_learner(env, sharing="per_agent", learning_starts=4, batch_size=4)
    assert ln.groups["g"].actor.net.net[0].members == 2
    metrics = {}
    for _ in range(8):
        metrics = ln.iteration()
    b0, b1 = ln.groups["g"].buffers
    assert len(b0) == 8
    assert len(b1) == 4  # agent 1 is dead on odd steps: those moves are never stored
    assert torch.all(b1.data["agent"][:4] == 1)
    assert {"losses/qf_loss", "losses/actor_loss", "losses/qf_values"} <= metrics.keys()
    shared = make_learner(ScriptEnv(length=5, n_agents=2), learning_starts=4)
    assert shared.groups["g"].id_dim == 2
    for _ in range(8):
        shared.iteration()
    assert len(shared.groups["g"].buffers[0]) == 12


class BoxSurvivors(Survivors):
    """:class:`test_adapters_core.Survivors` (obs [index + 1, t]; ``leave="trunc"``: a_1 is truncated on its own at
    step ``death``) with Box(-1, 1, (1,)) actions and no action mask."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self._act = spaces.Box(-1.0, 1.0, (1,), np.float32)

    def _info(self):
        return {a: {} for a in self.agents}

    def step(self, actions):  # the dynamics ignore the actions
        return super().step(dict.fromkeys(actions, 0))


def box_survivors(**kw) -> BoxSurvivors:
    return BoxSurvivors(**kw)


def test_agent_truncated_on_its_own_bootstraps_from_its_final_observation():
    """a_1 leaves by truncation at step 2 while a_0 and a_2 go on: its stored next observation is its last one
    ([2, 2]), not the zero padding of the step's observation."""
    env = make_vec_env({"name": "box_survivors", "entry_point": "test_ddpg:box_survivors", "check": False,
                        "kwargs": {"death": 2, "max_cycles": 4, "leave": "trunc"}}, 1, seed=0)
    ln = make_learner(env, learning_starts=1000)
    for _ in range(3):
        ln.iteration()
    data, n = ln.groups["a"].buffers[0].data, len(ln.groups["a"].buffers[0])
    agent, obs, nxt, term = data["agent"][:n], data["obs"][:n], data["next_obs"][:n], data["terminated"][:n]
    a1 = agent == 1
    assert a1.sum() == 2 and not term.any()  # a_1 moved at steps 1 and 2, then it was gone
    torch.testing.assert_close(obs[a1], torch.tensor([[2.0, 0.0], [2.0, 1.0]]))
    torch.testing.assert_close(nxt[a1], torch.tensor([[2.0, 1.0], [2.0, 2.0]]))  # [2, 2]: its final observation
    torch.testing.assert_close(nxt[agent == 0][1], torch.tensor([1.0, 2.0]))  # the others: the next observation
    env.close()


def test_state_dict_round_trip_same_actions_and_training_continues():
    env = GymVec("Pendulum-v1", 2)
    ln = make_learner(env, learning_starts=100, batch_size=32, normalize_obs=True, noise="ou")
    for _ in range(80):
        ln.iteration()
    blob = io.BytesIO()
    torch.save(ln.state_dict(), blob)  # as a checkpoint does: no tensor shared with the live learner
    blob.seek(0)
    state = torch.load(blob, weights_only=True)
    env2 = copy.deepcopy(env)  # the same env copies in the same state
    ln2 = make_learner(env2, seed=5, learning_starts=100, batch_size=32, normalize_obs=True, noise="ou")
    ln2.load_state_dict(state)
    obs = {"agent": torch.randn(16, 1, 3)}
    torch.testing.assert_close(
        ln.act(obs, {"agent": None}, True)["agent"], ln2.act(obs, {"agent": None}, True)["agent"], rtol=0, atol=0
    )
    assert ln2.env_steps == 160 and len(ln2.groups["agent"].buffers[0]) == 160
    torch.testing.assert_close(ln2.groups["agent"].noise.x, ln.groups["agent"].noise.x)
    ln2.last = ln.last
    m1, m2 = ln.iteration(), ln2.iteration()
    assert m1 == m2 and math.isfinite(m2["losses/qf_loss"])
    env.close()


def test_same_seed_gives_identical_metrics():
    def run(seed):
        env = GymVec("Pendulum-v1", 2)
        ln = make_learner(env, seed=seed, learning_starts=64, batch_size=32, policy_delay=2)
        out = [ln.iteration() for _ in range(60)]
        env.close()
        return out

    a, b, c = run(3), run(3), run(4)
    assert a == b and a[-1] and a != c


def test_short_learning_smoke_run():
    env = GymVec("Pendulum-v1", 1)
    ln = make_learner(env, learning_starts=100, batch_size=64, hidden=[64, 64])
    metrics = {}
    for _ in range(400):
        metrics = ln.iteration()
    assert ln.env_steps == 400 and ln.iterations == 400
    assert {"losses/qf_loss", "losses/actor_loss", "losses/qf_values", "charts/replay_mb",
            "charts/replay_capacity_mb"} == metrics.keys()
    assert all(math.isfinite(v) for v in metrics.values())
    assert len(ln.pop_episodes()) == 2 and ln.episodes == []
    env.close()


@pytest.mark.slow
def test_pendulum_learns_within_10k_steps():
    env = GymVec("Pendulum-v1", 1)
    ln = make_learner(env, seed=0)
    while ln.env_steps < 10_000:
        ln.iteration()
    env.close()
    assert evaluate(ln) >= -400
