"""Adapter semantics on tiny synthetic envs with hand-computed expectations (AEC credit, deaths, masks, flags)."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces
from pettingzoo import AECEnv, ParallelEnv
from pettingzoo.utils import AgentSelector
from pettingzoo.utils.conversions import aec_to_parallel, parallel_to_aec

from marl.adapters import make_vec_env, resolve_env_config
from marl.adapters.base import random_actions
from marl.errors import ConfigError

# ------------------------------------------------------------------------------------------ synthetic envs


class Duel(AECEnv):
    """Two players add 1 or 2 to a counter in turn; reaching ``target`` wins (+1 mover, -1 other, both terminated).

    A non-final move costs the *other* player 0.1 (so rewards reach agents that did not move). ``max_moves``
    truncates. Observation [counter, moves, is_my_turn].
    """

    metadata = {"name": "duel", "render_modes": []}

    def __init__(self, target: int = 4, max_moves: int = 100):
        super().__init__()
        self.target, self.max_moves = target, max_moves
        self.possible_agents = ["p_0", "p_1"]
        self._obs = spaces.Box(0.0, 100.0, (3,), np.float32)
        self._act = spaces.Discrete(2)

    def observation_space(self, agent):
        return self._obs

    def action_space(self, agent):
        return self._act

    def reset(self, seed=None, options=None):
        self.agents = list(self.possible_agents)
        self.counter = self.moves = 0
        self.rewards = dict.fromkeys(self.agents, 0.0)
        self._cumulative_rewards = dict.fromkeys(self.agents, 0.0)
        self.terminations = dict.fromkeys(self.agents, False)
        self.truncations = dict.fromkeys(self.agents, False)
        self.infos = {a: {} for a in self.agents}
        self._sel = AgentSelector(self.agents)
        self.agent_selection = self._sel.reset()

    def observe(self, agent):
        return np.array([self.counter, self.moves, agent == self.agent_selection], np.float32)

    def step(self, action):
        agent = self.agent_selection
        if self.terminations[agent] or self.truncations[agent]:
            self._was_dead_step(action)
            return
        self._cumulative_rewards[agent] = 0.0
        self._clear_rewards()
        other = "p_1" if agent == "p_0" else "p_0"
        self.counter += int(action) + 1
        self.moves += 1
        if self.counter >= self.target:
            self.rewards[agent], self.rewards[other] = 1.0, -1.0
            self.terminations = dict.fromkeys(self.agents, True)
        else:
            self.rewards[other] = -0.1
            if self.moves >= self.max_moves:
                self.truncations = dict.fromkeys(self.agents, True)
        self.agent_selection = self._sel.next()
        self._accumulate_rewards()


class Survivors(ParallelEnv):
    """Three agents; ``a_1`` terminates after step ``death`` (``leave="trunc"``: is truncated there, on its own, while
    the others go on); the rest are truncated at ``max_cycles``.

    Reward: 1 + index for every agent present at the step. Obs [index + 1, t]. Actions Discrete(3) with
    info["action_mask"] = [1, 1, 0] (action 2 is illegal and raises). Heterogeneous variant: ``a_2`` observes 3 numbers.
    ``join > 0``: ``a_2`` joins late, after step ``join``.
    """

    metadata = {"name": "survivors", "render_modes": []}

    def __init__(self, death: int = 2, max_cycles: int = 4, hetero: bool = False, join: int = 0, leave: str = "term"):
        self.death, self.max_cycles, self.join, self.leave = death, max_cycles, join, leave
        self.possible_agents = ["a_0", "a_1", "a_2"]
        small = spaces.Box(0.0, 100.0, (2,), np.float32)
        self._obs = {a: small for a in self.possible_agents}
        if hetero:
            self._obs["a_2"] = spaces.Box(0.0, 100.0, (3,), np.float32)
        self._act = spaces.Discrete(3)

    def observation_space(self, agent):
        return self._obs[agent]

    def action_space(self, agent):
        return self._act

    def _ob(self, a):
        i = self.possible_agents.index(a)
        return np.array([i + 1, self.t, 7.0][: self._obs[a].shape[0]], np.float32)

    def _info(self):
        return {a: {"action_mask": np.array([1, 1, 0], np.int8)} for a in self.agents}

    def reset(self, seed=None, options=None):
        self.agents, self.t = list(self.possible_agents[: 2 if self.join else 3]), 0
        return {a: self._ob(a) for a in self.agents}, self._info()

    def step(self, actions):
        assert set(actions) == set(self.agents), (actions, self.agents)
        if any(int(x) == 2 for x in actions.values()):
            raise ValueError("illegal action 2")
        self.t += 1
        obs = {a: self._ob(a) for a in self.agents}
        rew = {a: 1.0 + self.possible_agents.index(a) for a in self.agents}
        gone = {a: a == "a_1" and self.t >= self.death for a in self.agents}
        term = {a: gone[a] and self.leave == "term" for a in self.agents}
        trunc = {a: (self.t >= self.max_cycles or gone[a]) and not term[a] for a in self.agents}
        infos = self._info()
        self.agents = [a for a in self.agents if not (term[a] or trunc[a])]
        if self.join and self.t == self.join:
            self.agents.append("a_2")
            obs["a_2"] = self._ob("a_2")
            infos = self._info()
        return obs, rew, term, trunc, infos


class Dials(ParallelEnv):
    """Two agents set a dial: MultiDiscrete([2, 3]) actions (direction, speed) with gymnasium's per-sub-action mask
    (a tuple of two arrays) in ``obs["action_mask"]``: at even steps direction 1 is illegal, at odd steps speed 2.
    An illegal action raises. Reward: the speed. ``max_cycles`` truncates."""

    metadata = {"name": "dials", "render_modes": []}

    def __init__(self, max_cycles: int = 6):
        self.max_cycles = max_cycles
        self.possible_agents = ["d_0", "d_1"]
        mask = spaces.Tuple((spaces.Box(0, 1, (2,), np.int8), spaces.Box(0, 1, (3,), np.int8)))
        self._obs = spaces.Dict({"observation": spaces.Box(0.0, 100.0, (1,), np.float32), "action_mask": mask})
        self._act = spaces.MultiDiscrete([2, 3])

    def observation_space(self, agent):
        return self._obs

    def action_space(self, agent):
        return self._act

    def _mask(self):
        even = self.t % 2 == 0
        return (np.array([1, 0 if even else 1], np.int8), np.array([1, 1, 1 if even else 0], np.int8))

    def _obs_all(self):
        return {a: {"observation": np.array([self.t], np.float32), "action_mask": self._mask()} for a in self.agents}

    def reset(self, seed=None, options=None):
        self.agents, self.t = list(self.possible_agents), 0
        return self._obs_all(), {a: {} for a in self.agents}

    def step(self, actions):
        direction, speed = self._mask()
        for a, (d, v) in actions.items():
            if not (direction[int(d)] and speed[int(v)]):
                raise ValueError(f"illegal action {(int(d), int(v))} for {a} at step {self.t}")
        self.t += 1
        rew = {a: float(actions[a][1]) for a in self.agents}
        done = self.t >= self.max_cycles
        term, trunc = dict.fromkeys(self.agents, False), dict.fromkeys(self.agents, done)
        obs, infos = self._obs_all(), {a: {} for a in self.agents}
        if done:
            self.agents = []
        return obs, rew, term, trunc, infos


def duel(**kw):
    return Duel(**kw)


def survivors(**kw):
    return Survivors(**kw)


def survivors_roundtrip(**kw):
    return aec_to_parallel(parallel_to_aec(Survivors(**kw)))


def survivors_aec(**kw):
    return parallel_to_aec(Survivors(**kw))


def dials_aec(**kw):
    return parallel_to_aec(Dials(**kw))


def cfg(entry: str, **kw) -> dict:
    """Env config of one of the synthetic envs above."""
    return {"name": entry, "entry_point": f"test_adapters_core:{entry}", "kwargs": kw, "check": False}


# ------------------------------------------------------------------------------------------------- AEC


def test_turn_based_credit_game_ends_on_opponents_move():
    env = make_vec_env(cfg("duel", target=4), 1, seed=0)
    g = env.spec.group("p")
    assert env.spec.turn_based and g.agents == ("p_0", "p_1")
    out = env.reset()
    assert out.acting["p"].tolist() == [[True, False]] and out.alive["p"].all()
    out = env.step({"p": np.array([[1, 0]])})  # p_0 adds 2 -> counter 2; p_1 is charged 0.1
    np.testing.assert_allclose(out.reward["p"], [[0.0, -0.1]])
    assert out.acting["p"].tolist() == [[False, True]] and not out.done[0]
    out = env.step({"p": np.array([[0, 1]])})  # p_1 adds 2 -> 4: p_1 wins on its move, p_0 loses in the same step
    np.testing.assert_allclose(out.reward["p"], [[-1.0, 1.0]])
    assert out.terminated["p"].tolist() == [[True, True]]
    assert out.done[0] and not out.truncated[0]
    np.testing.assert_allclose(out.final_obs["p"][0, :, 0], [4, 4])  # final obs: counter 4 for both
    np.testing.assert_allclose(out.obs["p"][0, :, :2], 0)  # auto-reset: the new game's first obs
    assert out.acting["p"].tolist() == [[True, False]]
    (ep,) = out.episodes
    assert ep.returns == pytest.approx({"p_0": -1.0, "p_1": 0.9}) and ep.length == 2
    env.close()


def test_aec_truncation_and_state_is_concatenated_obs():
    env = make_vec_env(cfg("duel", target=100, max_moves=3), 2, seed=0)
    assert not env.spec.has_state and env.spec.state_shape == (6,)
    out = env.reset()
    for k in range(3):
        out = env.step({"p": np.zeros((2, 2), np.int64)})
        assert out.done.tolist() == [k == 2] * 2
    assert out.truncated.all() and not out.terminated["p"].any()
    np.testing.assert_allclose(out.final_obs["p"][:, :, 1], 3)  # 3 moves made
    np.testing.assert_allclose(out.final_state, out.final_obs["p"].reshape(2, -1))
    np.testing.assert_allclose(out.state, out.obs["p"].reshape(2, -1))
    env.close()


# -------------------------------------------------------------------------------------------- parallel


def test_agent_dies_mid_episode():
    env = make_vec_env(cfg("survivors", death=2, max_cycles=4), 1, seed=0)
    (g,) = env.spec.groups
    assert g.name == "a" and g.agents == ("a_0", "a_1", "a_2") and g.has_action_mask
    out = env.reset()
    a = np.zeros((1, 3), np.int64)
    out = env.step({"a": a})
    np.testing.assert_allclose(out.reward["a"], [[1, 2, 3]])
    out = env.step({"a": a})  # a_1 terminates here
    np.testing.assert_allclose(out.reward["a"], [[1, 2, 3]])
    assert out.terminated["a"].tolist() == [[False, True, False]]
    assert out.alive["a"].tolist() == [[True, False, True]] and out.acting["a"].tolist() == [[True, False, True]]
    np.testing.assert_array_equal(out.obs["a"][0, 1], 0)  # padded
    np.testing.assert_array_equal(out.state[0, 2:4], 0)  # its part of the concatenated state too
    assert out.action_mask["a"][0, 1].all()  # dead agent: all-True mask keeps a masked softmax finite
    out = env.step({"a": np.array([[0, 2, 0]])})  # the dead agent's (illegal) action is ignored
    np.testing.assert_allclose(out.reward["a"], [[1, 0, 3]])
    assert not out.terminated["a"].any() and not out.done[0]
    out = env.step({"a": a})  # t = 4: truncation
    assert out.done[0] and out.truncated[0] and not out.terminated["a"].any()
    np.testing.assert_allclose(out.final_obs["a"][0], [[1, 4], [0, 0], [3, 4]])
    np.testing.assert_allclose(out.obs["a"][0], [[1, 0], [2, 0], [3, 0]])  # reset obs, everyone back
    assert out.alive["a"].all()
    (ep,) = out.episodes
    assert ep.returns == {"a_0": 4.0, "a_1": 4.0, "a_2": 12.0} and ep.length == 4
    env.close()


@pytest.mark.parametrize("form", ["survivors", "survivors_aec"])
def test_agent_truncated_on_its_own_keeps_its_final_observation(form):
    """An agent truncated while the others go on leaves (padded, not alive) without a termination flag, and its last
    observation is in ``final_obs`` at that step, for the learner to bootstrap from, as at a truncated episode end."""
    env = make_vec_env(cfg(form, death=2, max_cycles=4, leave="trunc"), 1, seed=0)
    out = env.reset()
    was = None
    while was is None or was[1]:  # step until a_1 has left
        was = out.alive["a"][0].copy()
        out = env.step({"a": np.zeros((1, 3), np.int64)})
    assert not out.alive["a"][0, 1] and not out.terminated["a"].any() and not out.done[0]
    np.testing.assert_allclose(out.final_obs["a"][0, 1], [2, 2])  # a_1's observation after step 2
    np.testing.assert_array_equal(out.obs["a"][0, 1], 0)  # padded from here on
    env.close()


def test_agent_that_joins_late_is_padded_until_it_arrives():
    env = make_vec_env(cfg("survivors", death=10, max_cycles=5, join=2), 1, seed=0)
    out = env.reset()
    assert out.alive["a"].tolist() == [[True, True, False]]
    np.testing.assert_array_equal(out.obs["a"][0, 2], 0)
    a = {"a": np.zeros((1, 3), np.int64)}
    out = env.step(a)
    assert out.alive["a"].tolist() == [[True, True, False]] and out.reward["a"][0, 2] == 0
    out = env.step(a)  # a_2 joins: alive and acting from the next observation on
    assert out.alive["a"].tolist() == [[True, True, True]] and out.acting["a"].all()
    np.testing.assert_allclose(out.obs["a"][0, 2], [3, 2])
    out = env.step(a)
    np.testing.assert_allclose(out.reward["a"], [[1, 2, 3]])
    env.close()


def test_action_mask_from_info_is_exposed():
    env = make_vec_env(cfg("survivors"), 2, seed=0)
    out = env.reset()
    assert out.action_mask["a"].shape == (2, 3, 3) and out.action_mask["a"].dtype == bool
    assert out.action_mask["a"][..., 2].sum() == 0 and out.action_mask["a"][..., :2].all()
    rng = np.random.default_rng(0)
    for _ in range(8):  # random legal actions never hit the illegal action (which raises)
        out = env.step(random_actions(env.spec, out, rng))
    env.close()


def dials(**kw):
    return Dials(**kw)


def test_multidiscrete_action_mask_in_gymnasiums_tuple_format():
    """A MultiDiscrete env that passes PettingZoo's parallel_api_test (which samples with the tuple mask) trains
    through the adapter: the mask arrives flat, [E, N, sum(nvec)], and random legal actions never break it."""
    env = make_vec_env({**cfg("dials"), "check": True}, 2, seed=0)
    (g,) = env.spec.groups
    assert isinstance(g.action_space, spaces.MultiDiscrete) and g.has_action_mask
    out = env.reset()
    assert out.action_mask[g.name].shape == (2, 2, 5)
    np.testing.assert_array_equal(out.action_mask[g.name][0, 0], [1, 0, 1, 1, 1])
    rng = np.random.default_rng(0)
    for t in range(1, 13):  # two episodes; the env raises on any illegal sub-action
        out = env.step(random_actions(env.spec, out, rng))
        even = t % 6 % 2 == 0
        np.testing.assert_array_equal(out.action_mask[g.name][1, 1], [1, 0, 1, 1, 1] if even else [1, 1, 1, 1, 0])
    env.close()


def test_heterogeneous_spaces_make_two_groups():
    env = make_vec_env(cfg("survivors", hetero=True), 2, seed=0)
    assert [(g.name, g.agents, g.obs_space.shape) for g in env.spec.groups] == [
        ("group0", ("a_0", "a_1"), (2,)),
        ("group1", ("a_2",), (3,)),
    ]
    out = env.reset()
    assert out.obs["group1"].shape == (2, 1, 3) and out.state.shape == (2, 7)
    env.close()


def test_prefix_groups_and_named_groups():
    env = make_vec_env(cfg("survivors"), 1, seed=0, groups={"x": ["a_2", "a_0"], "y": ["a_1"]})
    assert [(g.name, g.agents) for g in env.spec.groups] == [("x", ("a_0", "a_2")), ("y", ("a_1",))]
    out = env.reset()
    np.testing.assert_allclose(out.obs["y"][0, 0], [2, 0])
    env.close()
    env = make_vec_env(resolve_env_config("simple_tag"), 1, seed=0, grouping="prefix")
    assert [(g.name, g.n_agents) for g in env.spec.groups] == [("adversary", 3), ("agent", 1)]
    env.close()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"grouping": "prefix"}, "env.pad=true"),  # a_0..a_2 share a prefix but a_2's obs differ
        ({"groups": {"x": ["a_0", "a_1"]}}, "leave out agent"),
        ({"groups": {"x": ["a_0", "a_1"], "y": ["a_1", "a_2"]}}, "two groups"),
        ({"groups": {"x": ["a_0", "a_1", "a_2"]}}, "different spaces"),
        ({"groups": {"x": ["a_0", "a_1"], "y": ["a_2", "zz_9"]}}, "does not have"),
        ({"grouping": "by_color"}, "not valid"),
    ],
)
def test_grouping_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match) as err:
        make_vec_env(cfg("survivors", hetero=True), 1, **kwargs)
    assert err.value.fix


def test_pad_makes_one_group_with_agent_id():
    env = make_vec_env({**cfg("survivors", hetero=True), "pad": True}, 2, seed=0)
    (g,) = env.spec.groups
    assert g.agents == ("a_0", "a_1", "a_2") and g.obs_space.shape == (6,)  # 3 padded + 3 one-hot
    out = env.reset()
    np.testing.assert_array_equal(out.obs[g.name][0, :, 3:] > 0, np.eye(3, dtype=bool))  # SuperSuit's one-hot
    env.close()


# ------------------------------------------------------------------------------------ AEC vs parallel


def _rollout(env, steps: int, seed: int = 3):
    rng = np.random.default_rng(seed)
    out = env.reset()
    outs = [out]
    for _ in range(steps):
        out = env.step(random_actions(env.spec, out, rng))
        outs.append(out)
    return outs


def test_parallel_and_roundtrip_forms_give_same_transitions():
    a = make_vec_env(cfg("survivors", death=3, max_cycles=5), 2, seed=0)
    b = make_vec_env(cfg("survivors_roundtrip", death=3, max_cycles=5), 2, seed=0)
    assert a.spec.groups == b.spec.groups and a.spec.state_shape == b.spec.state_shape
    for x, y in zip(_rollout(a, 12), _rollout(b, 12), strict=True):
        for key in ("obs", "reward", "terminated", "alive", "acting", "action_mask", "final_obs"):
            np.testing.assert_array_equal(getattr(x, key)["a"], getattr(y, key)["a"], err_msg=key)
        np.testing.assert_array_equal(x.done, y.done)
        np.testing.assert_array_equal(x.truncated, y.truncated)
    a.close()
    b.close()


def test_aec_form_delivers_the_parallel_rewards():
    par = make_vec_env(cfg("survivors", death=2, max_cycles=3), 1, seed=0)
    aec = make_vec_env(cfg("survivors_aec", death=2, max_cycles=3), 1, seed=0)
    assert aec.spec.turn_based and not par.spec.turn_based
    par_eps, aec_eps = [], []
    for env, eps in ((par, par_eps), (aec, aec_eps)):
        out = env.reset()
        while not eps:
            assert env.spec.turn_based == (out.acting["a"].sum() == 1)
            out = env.step({"a": np.zeros((1, 3), np.int64)})
            eps += out.episodes
    assert par_eps[0].returns == aec_eps[0].returns == {"a_0": 3.0, "a_1": 4.0, "a_2": 9.0}
    assert (par_eps[0].length, aec_eps[0].length) == (3, 8)  # 3 + 3 + 2 moves in the AEC form
    par.close()
    aec.close()


def _agent_transitions(env, episodes: int) -> list[list[tuple]]:
    """Run ``env`` (one copy) for ``episodes`` episodes and cut the stream into each agent's own transitions, as the
    learner reads them: (observation it acted on, its action, the rewards it received until its next move or the
    episode's end, terminated, the episode ended by truncation within it, its final observation if the episode
    ended). Actions are a deterministic function of the agent, its move count and its mask (so both forms of an env
    get the same actions)."""
    (g,) = env.spec.groups
    sp, n_agents = g.action_space, g.n_agents
    nvec = [int(sp.n)] if isinstance(sp, spaces.Discrete) else [int(x) for x in sp.nvec]
    per: list[list[list]] = [[] for _ in range(n_agents)]
    moves = [0] * n_agents
    out, done_eps = env.reset(), 0
    while done_eps < episodes:
        act = np.zeros((1, n_agents, *([] if len(nvec) == 1 and isinstance(sp, spaces.Discrete) else [len(nvec)])),
                       np.int64)
        for n in np.flatnonzero(out.acting[g.name][0]):
            mask = out.action_mask[g.name][0, n] if g.has_action_mask else np.ones(sum(nvec), bool)
            parts = np.split(mask, np.cumsum(nvec)[:-1])
            choice = [np.flatnonzero(m)[(moves[n] + n + j) % int(m.sum())] for j, m in enumerate(parts)]
            act[0, n] = choice[0] if act.ndim == 2 else choice
            per[n].append([out.obs[g.name][0, n].tolist(), np.atleast_1d(act[0, n]).tolist(), 0.0, False, False, None])
            moves[n] += 1
        prev_open = [bool(p) and p[-1][5] is None and not p[-1][3] for p in per]
        was_alive = out.alive[g.name][0].copy()
        out = env.step({g.name: act})
        for n in range(n_agents):
            if not prev_open[n]:
                continue
            tr = per[n][-1]
            tr[2] += float(out.reward[g.name][0, n])
            tr[3] |= bool(out.terminated[g.name][0, n])
            left = was_alive[n] and not out.alive[g.name][0, n] and not tr[3]  # truncated on its own
            if out.done[0] or left:
                tr[4] = bool(out.truncated[0]) or bool(left)
                tr[5] = out.final_obs[g.name][0, n].tolist()
        if out.done[0]:
            done_eps += 1
            moves = [0] * n_agents
    return [[tuple(map(str, tr)) for tr in p] for p in per]


@pytest.mark.parametrize(("name", "kw"), [("survivors", {"death": 2, "max_cycles": 4}),
                                         ("survivors", {"death": 2, "max_cycles": 4, "leave": "trunc"}),
                                         ("dials", {"max_cycles": 3})])
def test_aec_form_gives_each_agent_the_parallel_transitions(name, kw):
    """PettingZoo's parallel_to_aec form of a parallel env, through the AEC adapter (one mover per step, rewards
    credited to each agent's own last move), gives every agent the same transitions as the parallel form: same
    observations, actions, rewards, termination (an agent that dies mid-episode) and truncation at the time limit."""
    par = make_vec_env(cfg(name, **kw), 1, seed=0)
    aec = make_vec_env(cfg(f"{name}_aec", **kw), 1, seed=0)
    assert aec.spec.turn_based and not par.spec.turn_based
    a, b = _agent_transitions(par, 2), _agent_transitions(aec, 2)
    assert a == b
    assert sum(len(x) for x in a) > 10
    died = any(tr[3] == "True" for x in a for tr in x)
    assert died == (kw.get("leave", "term") == "term" and name == "survivors")  # a_1 terminates mid-episode
    assert all(x[-1][4] == "True" for x in a if x[-1][3] == "False")  # the others' last moves end in a truncation
    par.close()
    aec.close()


def test_non_turn_based_aec_env_one_mover_per_step():
    """Pistonball's AEC form: one piston moves per adapter step; the cycle's rewards reach every piston at its end."""
    cfg = {**resolve_env_config("pistonball"), "entry_point": "pettingzoo.butterfly.pistonball_v6:env",
           "kwargs": {"n_pistons": 3, "continuous": False, "max_cycles": 20}}
    env = make_vec_env(cfg, 1, seed=0)
    (g,) = env.spec.groups
    assert env.spec.turn_based and g.n_agents == 3 and g.obs_space.shape == (32, 32, 3)
    out = env.reset()
    cycle_ends = []
    for k in range(9):
        assert out.acting["piston"][0].tolist() == [i == k % 3 for i in range(3)]
        out = env.step({"piston": np.full((1, 3), 2, np.int64)})
        if k % 3 == 2:  # the last piston of the cycle moved: the cycle's rewards reach every piston now
            cycle_ends.append(out.reward["piston"][0])
        else:
            assert (out.reward["piston"] == 0).all()
    assert (cycle_ends[-1] != 0).all()  # time penalty for all three
    env.close()
