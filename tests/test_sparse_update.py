"""The update runs the networks on the entries that enter the losses only (acting agents, rows where a trained agent
moved): the losses and their gradients must equal those of the full batch, where the other entries are masked."""

from __future__ import annotations

import pytest
import torch

from marl.algos import onpolicy
from marl.multi.critics import Critic
from marl.multi.manager import GroupPolicy
from marl.selfplay import attach_pool
from marl.train import build, make_learner

CASES = {
    # turn-based: one of two seats moves per step; half the games against a random pool opponent (its moves dropped)
    "connect_four_pool": ("env=connect_four", "algo=ippo", "selfplay.pool_fraction=0.5", "selfplay.baselines=[random]",
                          "selfplay.baseline_prob=1.0"),
    "connect_four_symmetric": ("env=connect_four", "algo=ppo", "algo.symmetric=true"),
    # parallel, two groups, an agent that leaves mid-episode (padded, not acting)
    "relay": ("env=relay", "algo=ippo"),
    # centralized critic: the actor takes the sparse path, the critic the full one
    "connect_four_mappo": ("env=connect_four", "algo=mappo"),
}


def _losses_and_grads(learner, mb) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    params = [*learner.manager.parameters(), *learner.critic.parameters()]
    for p in params:
        p.grad = None
    actor, _ = learner.actor_loss(mb)
    critic = learner.critic_loss(mb)
    (actor + critic).backward()
    return actor.detach(), critic.detach(), [p.grad.clone() if p.grad is not None else torch.zeros_like(p)
                                             for p in params]


@pytest.mark.parametrize("case", list(CASES))
def test_sparse_update_equals_the_full_batch(tiny_cfg, monkeypatch, case: str) -> None:
    cfg = tiny_cfg(*CASES[case], "algo.num_steps=32", "num_envs=4")
    env = build(cfg)
    try:
        torch.manual_seed(0)
        learner = make_learner(cfg, env, "cpu")
        attach_pool(cfg, learner)
        learner.reset_env(0)
        buf = learner.collect()
        real_drop = onpolicy.drop_idle
        with monkeypatch.context() as mp:  # make_batch once (it updates the value normalizer's statistics)
            mp.setattr(onpolicy, "drop_idle", lambda b: b)
            full_batch = learner.make_batch(buf)
        small = real_drop(full_batch)
        sparse = _losses_and_grads(learner, small)
        with monkeypatch.context() as mp:  # the plain path: every row and every entry through the networks
            mp.setattr(GroupPolicy, "dense", property(lambda self: False))
            mp.setattr(Critic, "sparse_ok", property(lambda self: False))
            full = _losses_and_grads(learner, full_batch)
        acting = torch.cat([a.any(-1, keepdim=True) for a in full_batch.acting.values()], -1).any(-1)
        assert small.size == int(acting.sum())
        if case != "connect_four_symmetric":  # (the symmetric case has no pool: every step is a trained move)
            assert small.size < full_batch.size or case == "relay"
        torch.testing.assert_close(sparse[0], full[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(sparse[1], full[1], rtol=1e-5, atol=1e-6)
        for a, b in zip(sparse[2], full[2], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    finally:
        env.close()


@pytest.mark.parametrize("overrides", [("env=relay", "algo=ippo"), ("env=simple_spread", "algo=mappo", "algo.rnn=gru",
                                                                    "algo.rnn_chunk=8")])
def test_minibatch_rows_gathered_with_index_select_equal_plain_indexing(tiny_cfg, overrides) -> None:
    """``PGBatch.index`` gathers the rows of a 1-D integer index with ``index_select``: every field (per-group dicts,
    ``None`` entries, recurrent chunks) equals ``x[idx]``; a boolean mask still indexes as usual."""
    from dataclasses import fields

    cfg = tiny_cfg(*overrides, "algo.num_steps=16", "num_envs=4")
    env = build(cfg)
    try:
        torch.manual_seed(0)
        learner = make_learner(cfg, env, "cpu")
        learner.reset_env(0)
        batch = learner.make_batch(learner.collect())
    finally:
        env.close()
    idx = torch.randperm(batch.size)[: batch.size // 2 + 1]
    keep = torch.rand(batch.size) < 0.5
    for sel in (idx, keep):
        got = batch.index(sel)
        for f in fields(batch):
            x, y = getattr(batch, f.name), getattr(got, f.name)
            if isinstance(x, dict):
                assert x.keys() == y.keys()
                for k in x:
                    assert (x[k] is None and y[k] is None) or torch.equal(x[k][sel], y[k]), (f.name, k)
            elif torch.is_tensor(x):
                assert torch.equal(x[sel], y), f.name
            else:
                assert x == y, f.name
    assert (batch.h0 is not None) == ("algo.rnn=gru" in overrides)  # the recurrent fields were gathered too
