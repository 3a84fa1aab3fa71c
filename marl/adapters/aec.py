"""One copy of a PettingZoo AECEnv (turn-based, or any AEC env): exactly one agent acts per adapter step.

Per step: the selected agent moves; every agent's reward from that move is reported (``env.rewards``, whoever moved);
agents that are done are then driven out with ``env.step(None)`` as PettingZoo requires (any reward they still collect
is added to the same step) and flagged ``terminated`` in that step. When the game ends, on anyone's move, every agent
therefore gets its final reward and its flag in the same step; the copy then resets itself. Observations of all
live agents come from ``env.observe(agent)``.
"""

from __future__ import annotations

from typing import Any

from pettingzoo.utils.wrappers import AssertOutOfBoundsWrapper, BaseWrapper, OrderEnforcingWrapper

from marl.adapters.base import EpisodeStat
from marl.adapters.parallel import CopyBase
from marl.errors import EnvError

# wrappers whose observe() only checks call order / action bounds: observing below them gives the same observation
_CHECK_ONLY = (OrderEnforcingWrapper, AssertOutOfBoundsWrapper)


def _owner(env: Any, name: str) -> Any:
    """The object in a wrapper chain that really holds attribute ``name`` (BaseWrapper forwards reads inwards)."""
    obj = env
    while isinstance(obj, BaseWrapper) and name not in vars(obj) and not hasattr(type(obj), name):
        obj = obj.env
    return obj


class AECCopy(CopyBase):
    """An AECEnv; ``acting`` is ``env.agent_selection`` only."""

    def load_reset(self, seed: int | None) -> None:
        self.env.reset(seed=seed)
        # Reading env.agents etc. through a chain of wrappers costs microseconds per attribute: read them from the
        # object that holds them (found again after every reset, since an env may rebind them).
        self.own = {k: _owner(self.env, k) for k in ("agents", "agent_selection", "rewards", "terminations",
                                                       "truncations", "infos")}
        obs_env = self.env
        while type(obs_env) in _CHECK_ONLY:  # exact types: SuperSuit's wrappers subclass OrderEnforcingWrapper
            obs_env = obs_env.env
        self.observe = obs_env.observe
        self._load()

    def _load(self) -> None:
        own, observe = self.own, self.observe
        present, sel = own["agents"].agents, own["agent_selection"].agent_selection
        infos = own["infos"].infos
        for a in self.layout.agents:
            alive, acting, _, _, i = self.at[a]
            if a in present:
                self.write_obs(a, observe(a), infos.get(a))
                alive[i] = True
                acting[i] = a == sel
                if a != sel and self.mask[a] is not None:
                    self.mask[a][:] = True  # only the acting agent's mask matters; keep the others finite
            else:
                self.clear_agent(a)
                alive[i] = acting[i] = False
        self.write_state()

    def _collect(self) -> None:
        """Add every agent's reward from the last env.step to this step's rewards and the episode returns."""
        returns = self.returns
        for a, r in self.own["rewards"].rewards.items():
            if r:
                rew, i = self.at[a][2], self.at[a][4]
                rew[i] += r
                returns[a] += r

    def step(self) -> EpisodeStat | None:
        env, own = self.env, self.own
        env.step(self.action(own["agent_selection"].agent_selection))
        self.t += 1
        self.total_steps += 1
        self.clear_step()
        self._collect()
        terms, truncs = own["terminations"].terminations, own["truncations"].truncations
        agents = own["agents"].agents
        over = all(terms[a] or truncs[a] for a in agents)
        if over:  # game over: observe everyone before they are removed
            infos = own["infos"].infos
            for a in agents:
                self.write_obs(a, self.observe(a), infos.get(a))
            self.write_state(final=True)
        truncated = False
        for _ in range(len(self.layout.agents) + 1):
            if not own["agents"].agents:
                break
            sel = own["agent_selection"].agent_selection
            if not (terms[sel] or truncs[sel]):
                break
            term, trunc = terms[sel], truncs[sel]
            if not over:  # it leaves while the game goes on: keep its last observation (see write_final)
                self.write_final(sel, self.observe(sel))
            env.step(None)
            _, _, _, flag, i = self.at[sel]
            flag[i] = term
            truncated |= trunc and not term
            self._collect()
            terms, truncs = own["terminations"].terminations, own["truncations"].truncations
        else:
            raise EnvError(f"env '{self.layout.name}': done agents were not removed by env.step(None)",
                           "the env must remove a terminated/truncated agent when it is stepped with None")
        if own["agents"].agents:
            self._load()
            return None
        return self.finish(truncated)
