"""Step a PettingZoo ParallelEnv made by ``parallel_wrapper_fn`` (MPE, SISL, Butterfly) on its AEC env directly.

PettingZoo's ``aec_to_parallel_wrapper`` calls ``env.last()`` before every agent's move and discards it; ``last()``
computes that agent's observation, so every observation is computed twice per step. Its AEC env is also wrapped in
``OrderEnforcingWrapper`` / ``AssertOutOfBoundsWrapper``, which only check call order and action bounds (the adapter
resets before stepping and sends actions drawn from the action space), yet cost a chain of ``__getattr__`` calls on
every attribute read. :class:`DirectParallel` runs the same conversion without either: same observations, rewards,
flags and infos, in the same order (tested bit for bit against the wrapper on every shipped env that uses it), about
twice the env steps/s on mpe2 ``simple_spread``. Wrappers inside the conversion that change what happens (SuperSuit's,
``ClipOutOfBoundsWrapper``) are kept; any other env (a native ParallelEnv, or one wrapped on top of the conversion)
is stepped as it is.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from pettingzoo.utils.conversions import aec_to_parallel_wrapper
from pettingzoo.utils.wrappers import AssertOutOfBoundsWrapper, OrderEnforcingWrapper

CHECKS = (OrderEnforcingWrapper, AssertOutOfBoundsWrapper)  # wrappers that only check, never change what happens


def direct(env: Any) -> Any:
    """``env`` stepped directly on its AEC env where it is exactly PettingZoo's conversion, else ``env`` itself."""
    return DirectParallel(env) if type(env) is aec_to_parallel_wrapper else env


class DirectParallel:
    """The ParallelEnv interface the adapter uses (``reset``, ``step``, ``agents``, ``state``, ``render``, ``close``)
    over the AEC env inside an ``aec_to_parallel_wrapper``, the checking wrappers peeled off; anything else is read
    from the wrapper."""

    def __init__(self, env: aec_to_parallel_wrapper):
        self.wrapped = env
        aec = env.aec_env
        while type(aec) in CHECKS:
            aec = aec.env
        self.aec = aec
        self.agents: list[str] = []

    def __getattr__(self, name: str) -> Any:
        if name == "wrapped":  # not set yet (a copy or unpickling looks attributes up before __init__)
            raise AttributeError(name)
        return getattr(self.wrapped, name)

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        aec = self.aec
        aec.reset(seed=seed, options=options)
        self.agents = aec.agents[:]
        obs = {a: aec.observe(a) for a in aec.agents if not (aec.terminations[a] or aec.truncations[a])}
        return obs, dict(**aec.infos)

    def step(self, actions: dict[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        aec = self.aec
        rewards: dict[str, float] = defaultdict(int)
        for agent in aec.agents:
            if agent != aec.agent_selection:  # as the wrapper: a parallel env steps its agents in a cycle
                raise AssertionError(f"expected agent {agent} got agent {aec.agent_selection}: a parallel env made "
                                     "from an AEC env must step its agents in a cycle and end them only at its end")
            aec.step(actions[agent])
            for a in aec.agents:
                rewards[a] += aec.rewards[a]
        terminations, truncations, infos = dict(**aec.terminations), dict(**aec.truncations), dict(**aec.infos)
        observations = {a: aec.observe(a) for a in aec.agents}
        while aec.agents and (aec.terminations[aec.agent_selection] or aec.truncations[aec.agent_selection]):
            aec.step(None)
        self.agents = aec.agents
        return observations, rewards, terminations, truncations, infos

    def state(self) -> Any:
        return self.aec.state()

    def render(self) -> Any:
        return self.aec.render()  # the wrapper's order check would not know the AEC env was reset

    def close(self) -> None:
        self.wrapped.close()
