"""One copy of a PettingZoo AECEnv (turn-based, or any AEC env): exactly one agent acts per adapter step.

Per step: the selected agent moves; every agent's reward from that move is reported (``env.rewards``, whoever moved);
agents that are done are then driven out with ``env.step(None)`` as PettingZoo requires (any reward they still collect
is added to the same step) and flagged ``terminated`` in that step. When the game ends, on anyone's move, every agent
therefore gets its final reward and its flag in the same step; the copy then resets itself. Observations of all
live agents come from ``env.observe(agent)``.
"""

from __future__ import annotations

from marl.adapters.base import EpisodeStat
from marl.adapters.parallel import CopyBase
from marl.errors import EnvError


class AECCopy(CopyBase):
    """An AECEnv; ``acting`` is ``env.agent_selection`` only."""

    def load_reset(self, seed: int | None) -> None:
        self.env.reset(seed=seed)
        self._load()

    def _load(self) -> None:
        env = self.env
        present, sel = env.agents, env.agent_selection
        infos = env.infos
        for a in self.layout.agents:
            alive, acting, _, _, i = self.at[a]
            if a in present:
                self.write_obs(a, env.observe(a), infos.get(a))
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
        for a, r in self.env.rewards.items():
            if r:
                rew, i = self.at[a][2], self.at[a][4]
                rew[i] += r
                returns[a] += r

    def step(self) -> EpisodeStat | None:
        env = self.env
        env.step(self.action(env.agent_selection))
        self.t += 1
        self.total_steps += 1
        self.clear_step()
        self._collect()
        terms, truncs = env.terminations, env.truncations
        ending = all(terms[a] or truncs[a] for a in env.agents)
        if ending:  # observe everyone before they are removed: this is the final observation
            for a in env.agents:
                self.write_obs(a, env.observe(a), env.infos.get(a))
            self.write_state(final=True)
        truncated = False
        for _ in range(len(self.layout.agents) + 1):
            if not env.agents:
                break
            sel = env.agent_selection
            if not (terms[sel] or truncs[sel]):
                break
            term, trunc = terms[sel], truncs[sel]
            env.step(None)
            _, _, _, flag, i = self.at[sel]
            flag[i] = term
            truncated |= trunc and not term
            self._collect()
            terms, truncs = env.terminations, env.truncations
        else:
            raise EnvError(f"env '{self.layout.name}': done agents were not removed by env.step(None)",
                           "the env must remove a terminated/truncated agent when it is stepped with None")
        if env.agents:
            self._load()
            return None
        return self.finish(truncated)
