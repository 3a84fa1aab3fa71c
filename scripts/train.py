"""Train from the command line: `python scripts/train.py env=simple_spread algo=mappo algo.lr=3e-4 seed=3`.

Hydra composes configs/ (multirun: `-m seed=0,1,2`); marl validates the result against typed schemas. A user mistake
prints a short message naming the problem and the fix (no traceback unless debug=true) and exits with code 2.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from marl.errors import MarlError
from marl.train import run

_started = False  # set once Hydra has composed the config and called main()


@hydra.main(config_path="../configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    global _started
    _started = True
    os.environ.setdefault("WANDB_MODE", "offline")
    hc = HydraConfig.get()
    if cfg.run_dir is None:
        cfg.run_dir = hc.runtime.output_dir
    run_dir = cfg.run_dir
    if cfg.get("resume"):  # the resumed run writes into its own directory
        resume = Path(str(cfg.resume))
        run_dir = str(resume.parent.parent if resume.suffix == ".pt" and resume.parent.name == "checkpoints"
                      else resume)
    keys = [o.split("=", 1)[0].lstrip("+~") for o in hc.overrides.task]
    try:
        final = run(cfg, explicit_total_steps="total_steps" in keys, explicit_keys=keys)
    except MarlError as e:
        if cfg.get("debug", False):
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"interrupted: checkpoint written under {run_dir}/checkpoints; resume with resume={run_dir}",
              file=sys.stderr)
        sys.exit(130)
    ret = final.get("eval/return")
    wins = [k.split("/")[1] for k in final if k.startswith("eval/") and k.endswith("/win_rate") and k.count("/") == 2]
    if wins:  # a turn-based game: how it fares against the evaluation opponents, not a zero-sum return
        print(f"run dir: {run_dir}\nfinal evaluation: " + "; ".join(
            f"vs {n}: win {final[f'eval/{n}/win_rate']:.1%}, draw {final[f'eval/{n}/draw_rate']:.1%}, "
            f"loss {final[f'eval/{n}/loss_rate']:.1%}" for n in wins))
    else:
        print(f"run dir: {run_dir}\nfinal eval/return: {ret:.3f}" if ret is not None else f"run dir: {run_dir}")
    return ret


if __name__ == "__main__":
    try:
        main()
    except SystemExit as e:
        # Hydra reports a bad command line (unknown env/algo/logger option, a key not in the config, an override it
        # cannot parse) with a short message and exit code 1; use 2 like marl's own config errors. A crash inside a
        # run that has started keeps Hydra's code 1.
        if e.code == 1 and not _started:
            sys.exit(2)
        raise
