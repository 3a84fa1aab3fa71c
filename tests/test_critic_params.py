"""The critic owns only its value nets: the actors are not registered in it, so no actor parameter gets a second
Adam step from the critic's optimizer, and a checkpoint written while they were is loaded without them."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY, TINY_PPO, compose, run_cli_inprocess
from omegaconf import OmegaConf

from marl.config import validate
from marl.train import build, make_learner

ON_POLICY = ["ppo", "a2c", "ippo", "mappo", "happo", "trpo", "hatrpo"]


def learner(algo: str, env: str = "simple_spread", *overrides: str):
    cfg = validate(compose([f"env={env}", f"algo={algo}", "num_envs=2", "algo.num_steps=8", *overrides]))
    torch.manual_seed(0)
    L = make_learner(cfg, build(cfg), "cpu")
    L.reset_env(0)
    return L


def optimizers(L) -> dict[str, torch.optim.Optimizer]:
    return {k: m for k, m in L.modules().items() if isinstance(m, torch.optim.Optimizer)}


@pytest.mark.parametrize("algo", ON_POLICY)
def test_every_parameter_is_stepped_by_one_optimizer(algo):
    L = learner(algo, "simple_spread" if algo not in ("ppo", "a2c", "trpo") else "cartpole")
    owners: dict[int, str] = {}
    for name, opt in optimizers(L).items():
        for g in opt.param_groups:
            for p in g["params"]:
                assert id(p) not in owners, f"a parameter is in both {owners[id(p)]} and {name}"
                owners[id(p)] = name
    actor = {id(p) for p in L.manager.parameters()}
    critic = {id(p) for p in L.critic.parameters()}
    assert not actor & critic
    assert critic <= set(owners) <= actor | critic  # TRPO steps its actors without an optimizer
    assert not any(k.startswith("manager.") for k in L.critic.state_dict())


def test_one_a2c_step_moves_each_actor_weight_by_one_adam_step():
    """Adam's first step moves every weight with a gradient by lr * |g| / (|g| + eps) <= lr; two optimizers on the
    same weight (the critic's included) would move it by up to 2 lr."""
    L = learner("a2c", "cartpole", "algo.max_grad_norm=0")
    before = [p.detach().clone() for p in L.manager.parameters()]
    L.iteration()
    lr = float(L.algo.lr)
    moved = torch.cat([(p.detach() - b).abs().flatten() for p, b in zip(L.manager.parameters(), before, strict=True)])
    assert float(moved.max()) <= lr * (1 + 1e-4)
    assert float(moved.max()) > 0.99 * lr


def old_layout(state: dict) -> dict:
    """A learner state as written before the fix: critic state with ``manager.*`` entries first, critic optimizer
    over the actors' parameters (moments unlike the actors' own, to tell them apart) followed by the value nets'."""
    mods = state["modules"]
    old_critic = {**{f"manager.{k}": v for k, v in mods["manager"].items()}, **mods["critic"]}
    actor_states = [mods[k]["state"][i] for k in sorted(m for m in mods if m.startswith("actor_opt"))
                    for i in sorted(mods[k]["state"])]
    n_actor = len(actor_states)
    opt = mods["critic_opt"]
    shifted = {i + n_actor: v for i, v in opt["state"].items()}
    bogus = {i: {k: (v + 99 if torch.is_tensor(v) and v.dim() else v) for k, v in st.items()}
             for i, st in enumerate(actor_states)}
    old_opt = {"state": {**bogus, **shifted},
               "param_groups": [{**opt["param_groups"][0], "params": list(range(n_actor + len(opt["state"])))}]}
    return {**state, "modules": {**mods, "critic": old_critic, "critic_opt": old_opt}}


def test_a_checkpoint_whose_critic_held_the_actors_loads_without_them(tmp_path):
    """Loading the old layout keeps the value nets and their Adam moments only."""
    L = learner("mappo")
    L.iteration()
    state = L.state_dict()
    mods = state["modules"]
    opt = mods["critic_opt"]
    old = old_layout(state)

    M = learner("mappo")
    M.load_state_dict(old)
    for k, v in mods["critic"].items():
        assert torch.equal(M.critic.state_dict()[k], v)
    got = M.critic_opt.state_dict()
    assert got["param_groups"][0]["params"] == list(range(len(opt["state"])))
    for i, st in opt["state"].items():
        assert torch.equal(got["state"][i]["exp_avg"], st["exp_avg"])
        assert torch.equal(got["state"][i]["exp_avg_sq"], st["exp_avg_sq"])


@pytest.mark.parametrize(("algo", "env"), [("ddpg", "pendulum"), ("td3", "pendulum"), ("sac", "pendulum"),
                                           ("sac", "cartpole"), ("maddpg", "simple_spread"),
                                           ("matd3", "simple_spread")])
def test_off_policy_optimizers_share_no_parameter(algo, env):
    cfg = validate(compose([f"env={env}", f"algo={algo}", "num_envs=2"]))
    L = make_learner(cfg, build(cfg), "cpu")
    seen: dict[int, str] = {}
    for name, opt in optimizers(L).items():
        for g in opt.param_groups:
            for p in g["params"]:
                assert id(p) not in seen, f"a parameter is in both {seen[id(p)]} and {name}"
                seen[id(p)] = name
    assert seen


@pytest.mark.parametrize(("algo", "lr", "critic_lr", "noted"), [("mappo", 1.4e-3, 7e-4, True),
                                                                ("happo", 7e-4, 7e-4, False),
                                                                ("hatrpo", 7e-4, None, False)])
def test_a_run_from_before_the_fix_resumes_with_the_dynamics_it_trained_with(tmp_path, algo, lr, critic_lr, noted):
    """A run directory written before ``algo.critic_lr`` (old critic layout, no critic_lr in its config) resumes:
    its actors get the rate they effectively ran at (twice lr where the critic's optimizer stepped them all), the
    critic keeps lr, and the start says so."""
    args = [f"algo={algo}", "env=simple_spread", *TINY, *TINY_PPO, "algo.lr=7e-4", f"run_dir={tmp_path / 'old'}"]
    assert run_cli_inprocess([*args, "total_steps=64"], tmp_path).returncode == 0
    path = tmp_path / "old" / "checkpoints" / "final.pt"
    payload = torch.load(path, weights_only=False)
    cfg = OmegaConf.create(payload["config"])
    if critic_lr is not None:  # hatrpo has no critic_lr and its critic never held the actors
        del cfg.algo["critic_lr"]
        payload["learner"] = old_layout(payload["learner"])
    payload["config"] = OmegaConf.to_yaml(cfg)
    torch.save(payload, path)
    res = run_cli_inprocess([f"resume={tmp_path / 'old'}", "total_steps=128"], tmp_path)
    assert res.returncode == 0, res
    assert ("before the critic's optimizer stopped stepping the actors" in res.stderr) == noted, res.stderr
    stored = OmegaConf.load(tmp_path / "old" / "config.yaml")
    assert stored.algo.lr == pytest.approx(lr) and stored.algo.get("critic_lr") == pytest.approx(critic_lr)
