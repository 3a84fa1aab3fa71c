"""Recurrent policies and critics (algo.rnn): the cells against torch's, the state rules (reset at episode start,
frozen when not acting, own turns only in turn-based games), chunked replay with ratio exactly 1 before the first
gradient step (chunk lengths dividing the rollout, episode starts inside chunks, carried transitions), checkpoints,
the downstream paths (evaluation, the Python API, self-play snapshots) and a learning check on the memory env."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import TINY, TINY_PPO, WALL_CLOCK, read_rows, run_cli_inprocess
from gymnasium import spaces
from pettingzoo import ParallelEnv
from pettingzoo.test import api_test, parallel_api_test, parallel_seed_test
from pettingzoo.utils.conversions import parallel_to_aec
from test_resume import kill_after_checkpoint

from envs import memory
from marl.config import compose
from marl.core.recurrent import MemberGRU, MemberLSTM, RecurrentNet, chunk_rows, chunk_starts, episode_starts
from marl.evaluate import run_episodes
from marl.rollout import carry_over
from marl.train import build, make_learner


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def learner_for(*overrides: str, num_envs: int = 2):
    cfg = compose(None, [f"num_envs={num_envs}", "progress=false", "env.check=false", "preset=none", *overrides])
    env = build(cfg)
    learner = make_learner(cfg, env, "cpu")
    learner.reset_env(int(cfg.seed))
    return learner


# ------------------------------------------------------------------------------------------------ cells and chunks


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_member_cells_match_torch_cells_per_member(kind: str) -> None:
    torch.manual_seed(0)
    members, d, h = 3, 5, 4
    cell = (MemberGRU if kind == "gru" else MemberLSTM)(d, h, members)
    x, state = torch.randn(7, members, d), torch.randn(7, members, cell.state_dim)
    out, new = cell.cell(cell.ih(x), state)
    for k in range(members):
        ref = (torch.nn.GRUCell if kind == "gru" else torch.nn.LSTMCell)(d, h)
        with torch.no_grad():
            ref.weight_ih.copy_(cell.ih.weight[k])
            ref.bias_ih.copy_(cell.ih.bias[k])
            ref.weight_hh.copy_(cell.hh.weight[k])
            ref.bias_hh.copy_(cell.hh.bias[k])
        if kind == "gru":
            expect = ref(x[:, k], state[:, k])
            torch.testing.assert_close(new[:, k], expect)
        else:
            hx, cx = ref(x[:, k], (state[:, k, :h], state[:, k, h:]))
            torch.testing.assert_close(new[:, k], torch.cat([hx, cx], -1))
            expect = hx
        torch.testing.assert_close(out[:, k], expect)


def test_sequence_resets_and_keeps_states_of_agents_not_acting() -> None:
    torch.manual_seed(0)
    net = RecurrentNet(3, [8], 2, members=1, activation="tanh", out_gain=1.0, kind="gru", rnn_hidden=6)
    x = torch.randn(1, 5, 2, 3)  # [B=1, L=5, M=2, in]
    h0 = torch.randn(1, 2, 6)
    reset = torch.zeros(1, 5, 2, dtype=torch.bool)
    reset[0, 3] = True  # an episode starts at step 3
    advance = torch.ones(1, 5, 2, dtype=torch.bool)
    advance[0, 1:3, 1] = False  # member 1 waits at steps 1 and 2
    y, after = net.sequence(x, h0, reset, advance)
    torch.testing.assert_close(after[0, 1, 1], after[0, 0, 1])  # frozen while waiting
    torch.testing.assert_close(after[0, 2, 1], after[0, 0, 1])
    # from step 3 on, the same as a fresh start from zero at step 3
    y2, after2 = net.sequence(x[:, 3:], torch.zeros(1, 2, 6), reset[:, 3:] & False, advance[:, 3:])
    torch.testing.assert_close(y[:, 3:], y2)
    torch.testing.assert_close(after[:, 3:], after2)
    # one step at a time gives the same outputs
    state = h0
    for t in range(5):
        state = torch.where(reset[:, t].unsqueeze(-1), 0.0, state)
        out, new = net.step(x[:, t], state)
        torch.testing.assert_close(out, y[:, t])
        state = torch.where(advance[:, t].unsqueeze(-1), new, state)


def test_chunk_layout_and_carry_rows_hand_computed() -> None:
    # R = C + T rows (C=1 carry row, T=4 steps), E=2 copies; value = 10 * row + copy
    rows = torch.tensor([[10 * r + e for e in range(2)] for r in range(5)])
    chunks = chunk_rows(rows, carry=1, length=2, fill=-1)
    # steps rows 1..4 cut in 2 chunks per copy (chunk-major, then copy), then the carry row alone, padded
    assert chunks.tolist() == [[10, 20], [11, 21], [30, 40], [31, 41], [0, -1], [1, -1]]
    assert chunk_starts(rows, carry=1, length=2).tolist() == [10, 11, 30, 31, 0, 1]
    done = torch.zeros(5, 2, dtype=torch.bool)
    done[2, 0] = done[0, 1] = True  # copy 0's episode ends at row 2; a carry row never resets anything
    assert episode_starts(done, 1).nonzero().tolist() == [[3, 0]]


# ------------------------------------------------------------------------------------------------ ratio exactly 1

RATIO_CASES = {
    # episodes of 25 steps, rollouts of 20: episode starts inside chunks of 10 and 20, on chunk edges for 5
    "mappo-gru-chunk5": ("env=simple_spread", "algo=mappo", "algo.rnn=gru", "algo.num_steps=20", "algo.rnn_chunk=5"),
    "mappo-gru-chunk10": ("env=simple_spread", "algo=mappo", "algo.rnn=gru", "algo.num_steps=20",
                          "algo.rnn_chunk=10"),
    "ippo-lstm-chunk20": ("env=simple_spread", "algo=ippo", "algo.rnn=lstm", "algo.num_steps=20",
                          "algo.rnn_chunk=20", "algo.sharing=per_agent"),
    "happo-gru-speaker": ("env=simple_speaker_listener", "algo=happo", "algo.rnn=gru", "algo.num_steps=20",
                          "algo.rnn_chunk=10"),
    "ppo-box-multiwalker": ("env=multiwalker", "algo=ppo", "algo.rnn=gru", "algo.num_steps=16", "algo.rnn_chunk=8"),
    # turn-based: carried transitions (chunks of one step), own turns only, action masks
    "ppo-gru-nim": ("env=nim", "algo=ppo", "algo.rnn=gru", "algo.num_steps=15", "algo.rnn_chunk=5",
                    "selfplay.pool_fraction=0"),
    "mappo-lstm-relay": ("env=relay", "algo=mappo", "algo.rnn=lstm", "algo.num_steps=12", "algo.rnn_chunk=4"),
    # MultiDiscrete actions with a per-sub-action mask (tests/test_adapters_core.py's Dials)
    "ppo-multidiscrete-dials": ("env=custom", "env.entry_point=test_adapters_core:dials", "algo=ppo", "algo.rnn=gru",
                                "algo.num_steps=12", "algo.rnn_chunk=4"),
    # the conv torso before the cell, by_prefix sharing
    "ppo-conv-tictactoe": ("env=tictactoe", "algo=ppo", "algo.rnn=gru", "algo.num_steps=12", "algo.rnn_chunk=6",
                           "algo.conv=[[8,2]]", "algo.symmetric=false", "algo.sharing=by_prefix",
                           "selfplay.pool_fraction=0"),
}


def rollout_without_update(learner) -> None:
    """An iteration less its update, so the carried transitions' log-probs are the current policy's too (after an
    update they are the previous policy's, as without recurrence)."""
    buf = learner.collect()
    learner.make_batch(buf)
    carry_over(buf, learner.units.unit_of, *learner._pending)


def first_step_logps(learner, batch) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return {k: learner.policy_dist(k, batch).log_prob(batch.action[k]) for k in batch.obs}


@pytest.mark.parametrize("case", list(RATIO_CASES))
def test_replayed_chunks_give_ratio_one_before_the_first_step(case: str) -> None:
    learner = learner_for(*RATIO_CASES[case], "algo.update_epochs=1", "algo.num_minibatches=1")
    rollout_without_update(learner)  # states carried across rollouts, open transitions into the carry rows
    buf = learner.collect()
    carried = any(bool(gb.acting[: buf.carry].any()) for gb in buf.groups.values())
    batch = learner.make_batch(buf)
    assert batch.obs[next(iter(batch.obs))].shape[1] == int(learner.algo.rnn_chunk)
    logps = first_step_logps(learner, batch)
    n = 0
    for k, logp in logps.items():
        m = batch.acting[k]
        n += int(m.sum())
        torch.testing.assert_close(logp[m], batch.logp_old[k][m], rtol=0, atol=2e-5)
    assert n > 0
    with torch.no_grad():
        v = learner.batch_values(batch)
    torch.testing.assert_close(v[batch.vmask], batch.value_old[batch.vmask], rtol=0, atol=2e-5)
    if "simple_spread" in RATIO_CASES[case][0] and learner.algo.rnn_chunk > 5:
        assert bool(batch.reset[:, 1:].any()), "no episode start inside a chunk: the case does not test it"
    if case == "ppo-gru-nim":
        assert carried, "no carried transition: the case does not test the carry rows"
    if "happo" in case:  # the per-agent replay HAPPO's update uses
        for g, k in learner.manager.agent_units():
            with torch.no_grad():
                lp = learner.agent_dist(g, k, batch).log_prob(batch.action[g][..., k : k + 1])[..., 0]
            m = batch.acting[g][..., k]
            torch.testing.assert_close(lp[m], batch.logp_old[g][..., k][m], rtol=0, atol=2e-5)


def test_ratio_check_fails_when_chunks_replay_from_zero_states() -> None:
    """The control: the recorded start states matter (replaying every chunk from zero gives other log-probs)."""
    learner = learner_for(*RATIO_CASES["mappo-gru-chunk10"], "algo.update_epochs=1", "algo.num_minibatches=1")
    rollout_without_update(learner)
    batch = learner.make_batch(learner.collect())
    batch.h0 = {k: torch.zeros_like(h) for k, h in batch.h0.items()}
    logps = first_step_logps(learner, batch)
    assert any((logps[k] - batch.logp_old[k])[batch.acting[k]].abs().max() > 1e-3 for k in logps)


# ------------------------------------------------------------------------------------------------ state rules


def test_states_reset_at_episode_start_and_freeze_for_agents_that_left() -> None:
    """relay: the scout leaves after 3 steps (its state stays as it was), every episode starts from zero."""
    learner = learner_for("env=relay", "algo=mappo", "algo.rnn=gru", "algo.num_steps=40", "algo.rnn_chunk=10",
                          "env.kwargs.max_cycles=12")
    buf = learner.collect()
    C, R = buf.carry, buf.T
    starts = episode_starts(buf.done, C)
    starts[C] = True  # the first rollout begins with fresh episodes
    seen_start = seen_frozen = False
    for gb in buf.groups.values():
        for t in range(C, R):
            for e in range(learner.E):
                if starts[t, e]:
                    assert bool((gb.h[t, e] == 0).all())
                    seen_start = True
                elif t > C:
                    waiting = ~gb.acting[t - 1, e]  # agents that did not act at t-1 (the scout after leaving)
                    assert torch.equal(gb.h[t, e][waiting], gb.h[t - 1, e][waiting])
                    seen_frozen = seen_frozen or bool(waiting.any())
                    assert bool((gb.h[t, e][~waiting] != gb.h[t - 1, e][~waiting]).any()) or not bool(
                        (~waiting).any())
    assert seen_start and seen_frozen
    # the critic's states follow the same rule per value unit
    hv = buf.hv
    learner.make_batch(buf)
    for t in range(C, R):
        for e in range(learner.E):
            if starts[t, e]:
                assert bool((hv[t, e] == 0).all())


def test_turn_based_state_advances_on_own_turns_only() -> None:
    """nim: each player's recorded states are those of its own observation sequence alone, from zero at each
    episode start; the opponent's moves leave them unchanged."""
    learner = learner_for("env=nim", "algo=ppo", "algo.rnn=gru", "algo.num_steps=30", "algo.rnn_chunk=10",
                          "selfplay.pool_fraction=0")
    buf = learner.collect()
    C, R = buf.carry, buf.T
    (g, gb), = buf.groups.items()
    pol = learner.manager.policies[g]
    starts = episode_starts(buf.done, C)
    starts[C] = True
    checked = 0
    for e in range(learner.E):
        for n in range(gb.acting.shape[2]):
            state = torch.zeros(1, gb.acting.shape[2], pol.state_dim)
            for t in range(C, R):
                if starts[t, e]:
                    state = torch.zeros_like(state)
                torch.testing.assert_close(gb.h[t, e, n], state[0, n], rtol=0, atol=1e-6)
                if gb.acting[t, e, n]:
                    with torch.no_grad():
                        _, new = pol.step(gb.obs[t, e][None], state)
                    state = state.clone()
                    state[0, n] = new[0, n]
                    checked += 1
    assert checked >= 20


def test_hidden_states_are_checkpointed_and_restored() -> None:
    learner = learner_for("env=simple_spread", "algo=mappo", "algo.rnn=gru", "algo.num_steps=20",
                          "algo.rnn_chunk=10", "algo.update_epochs=1")
    learner.iteration()
    state = learner.state_dict()
    assert set(state["extra"]["rnn"]) == {"actor/agent", "critic"}
    fresh = learner_for("env=simple_spread", "algo=mappo", "algo.rnn=gru", "algo.num_steps=20",
                        "algo.rnn_chunk=10", "algo.update_epochs=1")
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.h_actor["agent"], learner.h_actor["agent"], rtol=0, atol=0)
    torch.testing.assert_close(fresh.h_critic, learner.h_critic, rtol=0, atol=0)
    assert bool(learner.h_actor["agent"].abs().sum() > 0)


# ------------------------------------------------------------------------------------------------ memory env


def test_memory_env_pettingzoo_api_and_seed() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parallel_api_test(memory.parallel_env(render_mode="ansi"), num_cycles=100)
        parallel_seed_test(memory.parallel_env)
        api_test(parallel_to_aec(memory.parallel_env()), num_cycles=100)


def test_memory_env_rules() -> None:
    env = memory.parallel_env(n_agents=1, num_cues=3, delay=2)
    obs, _ = env.reset(seed=3)
    cue = int(np.argmax(obs["agent_0"][:3]))
    assert obs["agent_0"][cue] == 1 and obs["agent_0"][3:].tolist() == [0, 0]
    obs, r, term, *_ = env.step({"agent_0": cue})  # before the query: ignored
    assert r["agent_0"] == 0 and not term["agent_0"] and obs["agent_0"].tolist() == [0, 0, 0, 1, 0]
    obs, r, term, *_ = env.step({"agent_0": 0})
    assert obs["agent_0"].tolist() == [0, 0, 0, 0, 1] and r["agent_0"] == 0 and not term["agent_0"]
    _, r, term, *_ = env.step({"agent_0": cue})  # the query: +1 for naming the cue
    assert r["agent_0"] == 1 and term["agent_0"] and env.agents == []


MEMORY_RUN = ("env=memory", "algo=ppo", "algo.num_steps=16", "algo.num_minibatches=2", "algo.update_epochs=4",
              "algo.lr=6e-3", "algo.critic_lr=3e-3", "algo.hidden=[32]", "algo.rnn_hidden=32", "algo.rnn_chunk=16",
              "seed=0")


@pytest.mark.parametrize("rnn", ["gru", "null"])
def test_memory_env_gru_solves_feed_forward_stays_at_chance(rnn: str) -> None:
    learner = learner_for(*MEMORY_RUN, f"algo.rnn={rnn}", num_envs=8)
    for _ in range(30):  # 3,840 env steps
        learner.iteration()
        learner.pop_episodes()
    eval_env = build(learner.cfg, num_envs=4)
    ret = float(np.mean([ep.team_return for ep in run_episodes(learner, eval_env, 40, seed=99)]))
    if rnn == "gru":
        assert ret == 2.0  # both agents name their cue every time (deterministic evaluation)
    else:
        assert 0.5 <= ret <= 1.5  # chance is 1.0 (two agents, two cues); the query looks the same for every cue


# ------------------------------------------------------------------------------------------------ downstream


def test_api_policy_reset_clears_the_state_and_plays_the_memory_env(tmp_path) -> None:
    import marl

    run = marl.train("memory", "ppo", **{"total_steps": 3840, "num_envs": 8, "preset": "none", "progress": False,
                                        "eval_episodes": 4, "run_dir": str(tmp_path / "run"),
                                        **{f"algo.{k}": v for k, v in (("rnn", "gru"), ("num_steps", 16),
                                                                       ("num_minibatches", 2), ("update_epochs", 4),
                                                                       ("lr", 3e-3), ("hidden", [32]),
                                                                       ("rnn_hidden", 32), ("rnn_chunk", 16))}})
    policy = marl.load(run.dir)
    env = memory.parallel_env()
    total = 0.0
    for ep in range(10):
        policy.reset()
        obs, infos = env.reset(seed=ep)
        while env.agents:
            obs, rewards, *_ = env.step(policy.act(obs, infos))
            total += sum(rewards.values())
    assert total == 20.0
    assert policy.learner.act_state is not None
    policy.reset()
    assert policy.learner.act_state is None


def test_selfplay_snapshots_carry_their_own_states() -> None:
    learner = learner_for("env=tictactoe", "algo=ppo", "algo.symmetric=false", "algo.rnn=gru", "algo.num_steps=16",
                          "algo.rnn_chunk=8", "algo.num_minibatches=2", "selfplay.pool_fraction=1",
                          "selfplay.snapshot_every=32", "selfplay.baselines=[]", num_envs=4)
    from marl.selfplay import attach_pool

    pool = attach_pool(learner.cfg, learner)
    learner.reset_env(0)
    for _ in range(3):
        learner.iteration()
    snaps = pool.snapshots
    assert snaps and all(s.manager.recurrent for s in snaps)
    played = [s for s in snaps if s.state]
    assert played, "no snapshot played"
    st = pool.state_dict()
    assert len(st["snapshot_state"]) == len(snaps)
    pool.load_state_dict(st)
    for s, saved in zip(pool.snapshots, st["snapshot_state"], strict=True):
        assert set(s.state) == set(saved)


# ------------------------------------------------------------------------------------------------ resume, backends

KILL_RNN = {  # name: (run, final step)
    "mappo-gru-simple_spread": (["env=simple_spread", "algo=mappo", *TINY, *TINY_PPO, "algo.rnn=gru",
                                 "algo.rnn_chunk=8"], 768),
    # turn-based: carried transitions with their recorded states, the opponent pool's snapshots with theirs
    "ppo-lstm-tictactoe-selfplay": (["env=tictactoe", "algo=ppo", *TINY, *TINY_PPO, "num_envs=4",
                                     "algo.symmetric=false", "algo.rnn=lstm", "algo.rnn_chunk=8",
                                     "selfplay.pool_fraction=0.5", "selfplay.snapshot_every=128"], 1024),
}


@pytest.mark.parametrize("name", list(KILL_RNN))
def test_sigkill_resume_is_bit_identical_with_recurrent_states(name: str, tmp_path) -> None:
    args, final = KILL_RNN[name]
    res = run_cli_inprocess([*args, f"total_steps={final}", f"run_dir={tmp_path / 'straight'}"], tmp_path)
    assert res.returncode == 0, res
    reference = read_rows(tmp_path / "straight" / "metrics.csv")
    run_dir = tmp_path / "run"
    kill_after_checkpoint(args, run_dir, tmp_path, final)
    res = run_cli_inprocess([f"resume={run_dir}", f"total_steps={final}"], tmp_path)
    assert res.returncode == 0, res
    assert "warning" not in res.stderr, res
    assert read_rows(run_dir / "metrics.csv") == reference


def test_subprocess_backend_gives_the_same_recurrent_run(tmp_path) -> None:
    args = ["env=simple_spread", "algo=mappo", *TINY, *TINY_PPO, "algo.rnn=gru", "algo.rnn_chunk=8",
            "total_steps=256"]
    rows = []
    for backend in ("inprocess", "subprocess"):
        res = run_cli_inprocess([*args, f"env.backend={backend}", "env.workers=1", f"run_dir={tmp_path / backend}"],
                                tmp_path)
        assert res.returncode == 0, res
        rows.append([{k: v for k, v in r.items() if k not in WALL_CLOCK} for r in
                     read_rows(tmp_path / backend / "metrics.csv")])
    assert rows[0] == rows[1] and len(rows[0]) > 0


class LateJoin(ParallelEnv):
    """Two agents; ``b`` joins at step 2 (padded before that), episodes of 5 steps."""

    metadata = {"name": "late_join_v0"}

    def __init__(self):
        self.possible_agents = ["a_0", "a_1"]
        self._obs = spaces.Box(-1.0, 1.0, (3,), np.float32)
        self._act = spaces.Discrete(2)
        self.t, self.rng = 0, np.random.default_rng()

    def observation_space(self, agent):
        return self._obs

    def action_space(self, agent):
        return self._act

    def _o(self):
        return {a: self.rng.uniform(-1, 1, 3).astype(np.float32) for a in self.agents}

    def reset(self, seed=None, options=None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.t, self.agents = 0, ["a_0"]
        return self._o(), {a: {} for a in self.agents}

    def step(self, actions):
        self.t += 1
        if self.t == 2:
            self.agents = ["a_0", "a_1"]
        end = self.t >= 5
        obs = self._o()
        out = (obs, dict.fromkeys(self.agents, 0.0), dict.fromkeys(self.agents, end),
               dict.fromkeys(self.agents, False), {a: {} for a in self.agents})
        if end:
            self.agents = []
        return out


def late_join(**kwargs) -> ParallelEnv:
    return LateJoin()


def test_padded_agent_state_stays_zero_until_it_joins() -> None:
    learner = learner_for("env=custom", "env.entry_point=test_recurrent:late_join", "algo=ppo", "algo.rnn=gru",
                          "algo.num_steps=20", "algo.rnn_chunk=10")
    buf = learner.collect()
    gb = next(iter(buf.groups.values()))
    C = buf.carry
    pad = ~gb.alive[C:, :, 1]
    assert bool(pad.any()) and bool((~pad).any())
    assert bool((gb.h[C:, :, 1][pad] == 0).all())  # the padded slot's state: zero until it joins
    joined = gb.alive[C:-1, :, 1] & ~episode_starts(buf.done, C)[C + 1:]
    assert bool((gb.h[C + 1:, :, 1][joined] != 0).any())
