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
from hydra.types import RunMode
from omegaconf import DictConfig

from marl.config import check_preset
from marl.errors import MarlError
from marl.train import run

_started = False  # set once Hydra has composed the config and called main()


@hydra.main(config_path="../configs", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    global _started
    _started = True
    os.environ.setdefault("WANDB_MODE", "offline")
    hc = HydraConfig.get()
    # a sweep job writes into its job dir, and hydra.run.dir=DIR names the run dir; else marl names it (outputs/...)
    hydra_dir = hc.mode == RunMode.MULTIRUN or any(o.startswith("hydra.run.dir=") for o in hc.overrides.hydra)
    if cfg.run_dir is None and not cfg.get("resume") and hydra_dir:
        cfg.run_dir = hc.runtime.output_dir
    keys = [o.split("=", 1)[0].lstrip("+~") for o in hc.overrides.task]
    try:
        if "preset" in keys:
            check_preset(hc.runtime.choices.get("preset"))
        final = run(cfg, explicit_total_steps="total_steps" in keys, explicit_keys=keys)
    except MarlError as e:
        if cfg.get("debug", False):
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # marl.train.run printed where the checkpoint is
        sys.exit(130)
    return final.get("eval/return")


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
