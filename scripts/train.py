"""Train from the command line: `python scripts/train.py env=simple_spread algo=mappo algo.lr=3e-4 seed=3`.

Hydra composes configs/ (multirun: `-m seed=0,1,2`); marl validates the result against typed schemas. A user mistake
prints a short message naming the problem and the fix (no traceback unless debug=true) and exits with code 2.
"""

from __future__ import annotations

import os
import sys
import traceback

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from marl.errors import MarlError
from marl.train import run


@hydra.main(config_path="../configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    os.environ.setdefault("WANDB_MODE", "offline")
    hc = HydraConfig.get()
    if cfg.run_dir is None:
        cfg.run_dir = hc.runtime.output_dir
    explicit = any(o.split("=", 1)[0].lstrip("+~") == "total_steps" for o in hc.overrides.task)
    try:
        final = run(cfg, explicit_total_steps=explicit)
    except MarlError as e:
        if cfg.get("debug", False):
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"interrupted: checkpoint written under {cfg.run_dir}/checkpoints; resume with resume={cfg.run_dir}",
              file=sys.stderr)
        sys.exit(130)
    ret = final.get("eval/return")
    print(f"run dir: {cfg.run_dir}\nfinal eval/return: {ret:.3f}" if ret is not None else f"run dir: {cfg.run_dir}")
    return ret


if __name__ == "__main__":
    main()
