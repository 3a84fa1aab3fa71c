"""One copy of a PettingZoo ParallelEnv, written into row ``e`` of the batch arrays (see :mod:`marl.adapters.vector`).

Agents keep the fixed order of ``possible_agents``; agents that left (terminated / truncated) or have not joined yet
are padded with zeros and flagged ``alive=False``; every alive agent is ``acting``. The episode ends when no agent is
left; the copy then resets itself (seeded from the run seed, see :func:`marl.adapters.replay.episode_seed`) and
keeps the last observation in ``final_obs`` / ``final_state``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from marl.adapters.base import EpisodeStat
from marl.adapters.replay import episode_seed
from marl.adapters.vector import Buffers, Layout


class CopyBase(ABC):
    """Row views and obs / action conversion shared by the parallel and the AEC copy."""

    def __init__(self, env: Any, layout: Layout, buf: Buffers, index: int):
        self.env, self.layout, self.index = env, layout, index
        self.slots = layout.slots
        self.t = 0  # steps in the current episode
        self.total_steps = 0  # steps since construction
        self.run_seed: int | None = None  # seed of the last run reset (None: unseeded)
        self.episode = 0  # episodes finished since the last run reset
        self.slot = index  # seed slot: index // group size of the last run reset (see VecMultiEnv.reset)
        self.returns = dict.fromkeys(layout.agents, 0.0)
        e = index
        self.state = buf["state"][e]
        self.final_state = buf["final_state"][e]
        self.truncated, self.done = buf["truncated"][e:e + 1], buf["done"][e:e + 1]
        self.obs: dict[str, np.ndarray] = {}
        self.final: dict[str, np.ndarray] = {}  # the agent's final_obs row
        self.mask: dict[str, np.ndarray | None] = {}
        self.act: dict[str, tuple[np.ndarray, int]] = {}
        self.act_rows = {g.name: buf[f"act/{g.name}"][e] for g in layout.groups}
        self.at: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]] = {}  # alive, acting, rew, term
        for a, s in self.slots.items():
            g, i = s.group, s.index
            self.obs[a] = buf[f"obs/{g}"][e, i]
            self.final[a] = buf[f"final_obs/{g}"][e, i]
            m = buf.get(f"mask/{g}")
            self.mask[a] = None if m is None else m[e, i]
            self.act[a] = (buf[f"act/{g}"][e], i)
            self.at[a] = (buf[f"alive/{g}"][e], buf[f"acting/{g}"][e], buf[f"reward/{g}"][e], buf[f"term/{g}"][e], i)
        self.rows = [(buf[f"alive/{g.name}"][e], buf[f"acting/{g.name}"][e], buf[f"reward/{g.name}"][e],
                      buf[f"term/{g.name}"][e], buf[f"obs/{g.name}"][e], buf[f"final_obs/{g.name}"][e])
                     for g in layout.groups]
        self.state_slices = {a: slice(*s.state_slice) for a, s in self.slots.items()}
        # where the state comes from: env.state() (env_state), the agents' observations (obs_state), or nowhere
        self.env_state = layout.compute_state and layout.has_state
        self.obs_state = layout.compute_state and not layout.has_state

    def action(self, agent: str) -> Any:
        """The env-format action of ``agent`` from the batch action array."""
        s = self.slots[agent]
        row, i = self.act[agent]
        if s.action == "discrete":
            return int(row[i]) + s.action_offset
        if s.action == "multidiscrete":
            return row[i] + s.action_offset
        return row[i].astype(s.action_dtype)

    def _obs_into(self, agent: str, raw: Any, view: np.ndarray) -> Any:
        """Write the observation part of one agent's raw observation into ``view``; return a mask found in it."""
        s = self.slots[agent]
        mask = None
        if s.obs == "dict":
            mask = raw["action_mask"]
            raw = raw["observation"]
        if s.obs == "discrete":
            view[:] = 0.0
            view[int(raw)] = 1.0
        else:
            view[...] = raw
        return mask

    def write_obs(self, agent: str, raw: Any, info: dict | None) -> None:
        """Write one agent's observation (and action mask) into its row; the mask defaults to all legal."""
        view = self.obs[agent]
        mask = self._obs_into(agent, raw, view)
        if mask is None and self.slots[agent].mask == "info" and info:
            mask = info.get("action_mask")
        m = self.mask[agent]
        if m is not None:
            if mask is None:
                m[:] = True
            elif isinstance(mask, (tuple, list)):  # MultiDiscrete: one mask per sub-action (gymnasium's format)
                m[:] = np.concatenate([np.ravel(x) for x in mask])
            else:
                m[:] = mask
        if self.obs_state:
            self.state[self.state_slices[agent]] = view.ravel()

    def write_final(self, agent: str, raw: Any) -> None:
        """An agent leaves while the episode goes on: keep its last observation in its final_obs row (a learner
        bootstraps from it when the agent was truncated rather than terminated)."""
        self._obs_into(agent, raw, self.final[agent])

    def clear_agent(self, agent: str) -> None:
        """Pad an absent agent: zero observation, all-legal mask (keeps a masked softmax finite)."""
        self.obs[agent][...] = 0.0
        m = self.mask[agent]
        if m is not None:
            m[:] = True
        if self.obs_state:
            self.state[self.state_slices[agent]] = 0.0

    def clear_step(self) -> None:
        for alive, acting, rew, term, _, _ in self.rows:
            alive[:] = False
            acting[:] = False
            rew[:] = 0.0
            term[:] = False
        self.truncated[0] = False
        self.done[0] = False

    def write_state(self, final: bool = False) -> None:
        """env.state() into the state row. Some envs cannot give a state once the episode is over (multiwalker
        destroys its bodies): at the final step such a failure keeps the previous step's state."""
        if not self.env_state:
            return
        if not final:
            self.state[:] = self.env.state()
            return
        try:
            self.state[:] = self.env.state()
        except Exception:  # noqa: BLE001 - see docstring: an env that has nothing left to describe
            pass

    def finish(self, truncated: bool) -> EpisodeStat:
        """Episode over: keep the last observation as final_obs, reset the env, report the episode."""
        self.truncated[0] = truncated
        self.done[0] = True
        for *_, obs, final_obs in self.rows:
            final_obs[...] = obs
        self.final_state[:] = self.state
        stat = EpisodeStat(self.index, dict(self.returns), self.t)
        self.returns = dict.fromkeys(self.layout.agents, 0.0)
        self.t = 0
        self.episode += 1
        self.load_reset(episode_seed(self.run_seed, self.slot, self.episode))
        return stat

    @abstractmethod
    def load_reset(self, seed: int | None) -> None:
        """Reset the env and write the first observation of the new episode."""

    def reset(self, seed: int | None, episode: int = 0, group_size: int = 1) -> None:
        """Start episode ``episode`` after a run reset with ``seed`` in groups of ``group_size`` copies (its reset
        seed: ``episode_seed(seed, index // group_size, episode)``) and clear rewards / flags (the first StepOut of
        a run)."""
        self.clear_step()
        self.returns = dict.fromkeys(self.layout.agents, 0.0)
        self.t = 0
        self.run_seed, self.episode, self.slot = seed, episode, self.index // int(group_size)
        self.load_reset(episode_seed(seed, self.slot, episode))

    def restore(self, seed: int, episode: int, actions: dict[str, np.ndarray], group_size: int = 1) -> bool:
        """Rebuild episode ``episode`` in progress: reset as :meth:`reset` does and replay ``actions[g]``
        ``[L, N_g, ...]``. False when the episode ended during the replay (the env did not repeat itself)."""
        self.reset(seed, episode, group_size)
        for j in range(len(next(iter(actions.values()), ()))):
            for g, a in actions.items():
                self.act_rows[g][...] = a[j]
            if self.step() is not None:
                return False
        return True


class ParallelCopy(CopyBase):
    """A ParallelEnv: every alive agent acts at every step."""

    def load_reset(self, seed: int | None) -> None:
        obs, infos = self.env.reset(seed=seed)
        self._load(obs, infos, set(self.env.agents))

    def _load(self, obs: dict, infos: dict, live: set[str]) -> None:
        for a in self.layout.agents:
            alive, acting, _, _, i = self.at[a]
            if a in live and a in obs:
                self.write_obs(a, obs[a], infos.get(a))
                alive[i] = acting[i] = True
            else:
                self.clear_agent(a)
                alive[i] = acting[i] = False
        self.write_state()

    def step(self) -> EpisodeStat | None:
        env = self.env
        obs, rewards, terms, truncs, infos = env.step({a: self.action(a) for a in env.agents})
        self.t += 1
        self.total_steps += 1
        self.clear_step()
        returns = self.returns
        for a, r in rewards.items():
            _, _, rew, term, i = self.at[a]
            rew[i] = r
            returns[a] += r
            if terms.get(a):
                term[i] = True
        live = {a for a in env.agents if not (terms.get(a) or truncs.get(a))}
        if live:
            for a in obs.keys() - live:  # agents that left at this step
                self.write_final(a, obs[a])
            self._load(obs, infos, live)
            return None
        for a, o in obs.items():  # the last observation of every agent, for bootstrapping a truncated episode
            self.write_obs(a, o, infos.get(a))
        self.write_state(final=True)
        return self.finish(any(truncs.get(a) and not terms.get(a) for a in truncs))
