"""PPO / HAPPO fit the critic in an idle env worker while the main process runs the actors' epochs (subprocess
backend of PettingZoo envs, learner on the CPU): the run is the same to the bit as in-process, where the critic is
fitted locally (as with gymnasium's own subprocess vector env, which runs no job but its env's)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import TINY, TINY_PPO, WALL_CLOCK, read_rows, run_cli_inprocess

from marl.adapters.vector import SubprocVecEnv
from marl.algos.onpolicy import OnPolicyLearner

CASES = {
    "ippo-simple_spread": ["env=simple_spread", "algo=ippo"],
    "mappo-simple_spread": ["env=simple_spread", "algo=mappo"],
    "happo-simple_spread": ["env=simple_spread", "algo=happo"],
    # target_kl stops the epochs early: the critic is then fitted after them, on the minibatches the actors used
    "mappo-target_kl": ["env=simple_spread", "algo=mappo", "algo.target_kl=1e-4", "algo.update_epochs=6"],
}


@pytest.mark.parametrize("case", list(CASES))
def test_critic_fitted_in_a_worker_gives_the_same_run(case: str, tmp_path: Path, monkeypatch) -> None:
    submitted: list[str] = []
    real = SubprocVecEnv.submit

    def spy(self, key, fn, payload):
        submitted.append(key)
        return real(self, key, fn, payload)

    monkeypatch.setattr(SubprocVecEnv, "submit", spy)
    epochs_run: list[int] = []
    real_epochs = OnPolicyLearner.run_epochs

    def count(self, batch, step_fn, plans=None, used=None):
        used = [] if used is None else used
        out = real_epochs(self, batch, step_fn, plans, used)
        epochs_run.append(len(used))
        return out

    monkeypatch.setattr(OnPolicyLearner, "run_epochs", count)
    args = [*CASES[case], *TINY, *TINY_PPO, "total_steps=256"]
    if "algo.update_epochs=6" in args:
        args.remove("algo.update_epochs=2")
    rows, finals = [], []
    for backend in ("inprocess", "subprocess"):
        res = run_cli_inprocess([*args, f"env.backend={backend}", "env.workers=1", f"run_dir={tmp_path / backend}"],
                                tmp_path)
        assert res.returncode == 0, res
        rows.append(read_rows(tmp_path / backend / "metrics.csv", WALL_CLOCK))
        finals.append(torch.load(tmp_path / backend / "checkpoints" / "final.pt", weights_only=False))
        if backend == "inprocess":
            assert submitted == []
    assert len(submitted) == 256 // 32  # every update's critic went to the worker
    assert rows[0] == rows[1] and len(rows[0]) > 0
    if case == "mappo-target_kl":
        assert min(epochs_run) < 6  # the early stop did happen
    for key in ("manager", "critic", "critic_opt", "actor_opt0"):
        a, b = finals[0]["learner"]["modules"][key], finals[1]["learner"]["modules"][key]
        torch.testing.assert_close(a, b, rtol=0, atol=0)
