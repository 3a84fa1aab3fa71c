"""marl: multi-agent reinforcement learning on PettingZoo, on a single-agent policy-gradient core.

The Python API (:mod:`marl.api`): ``marl.train(env=..., algo=..., **overrides)``, ``marl.load(run_dir or .pt)``,
``marl.evaluate(run_dir, episodes=..., opponent=...)``. ``import marl`` stays light: each is imported on first use.
"""

from __future__ import annotations

import importlib
import types
from typing import Any

__version__ = "0.1.0"


class ApiModule(types.ModuleType):
    """A submodule whose name is also an API function: ``marl.train(...)`` and ``marl.evaluate(...)`` call
    :func:`marl.api.train` / :func:`marl.api.evaluate`, while ``marl.train.run`` and the other contents of the
    modules stay where they are."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from marl import api

        return getattr(api, self.__name__.rsplit(".", 1)[1])(*args, **kwargs)


def __getattr__(name: str) -> Any:
    if name in ("train", "evaluate"):
        return importlib.import_module(f"marl.{name}")
    if name in ("load", "Policy", "Run", "Evaluation"):
        from marl import api

        return getattr(api, name)
    raise AttributeError(f"module 'marl' has no attribute '{name}'")
