"""The on-policy template (REINFORCE, A2C, PPO, IPPO, MAPPO, HAPPO): collect -> values -> advantages -> update.

Subclasses set three class flags and may override :meth:`update` (default: one gradient step) and :meth:`pg_loss`:
``central_critic`` (value of the global state instead of each agent's observation), ``separate_actors`` (one
module and optimizer per agent, HAPPO / HATRPO), ``uses_critic`` (REINFORCE without a baseline and GRPO learn no
value: no critic network or optimizer is built).

Recurrent networks (``algo.rnn``: gru | lstm): the learner holds the actor states of every env copy and agent and
the critic's per value unit, records them in the rollout (the state fed to each step) and resets them per copy at
episode start; the update replays chunks of ``algo.rnn_chunk`` steps from the recorded states
(:mod:`marl.core.recurrent`) instead of shuffled single steps.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from marl.adapters.base import VecMultiEnv, as_tensor
from marl.algos.base import Learner
from marl.core import losses
from marl.core.buffers import minibatch_indices
from marl.core.networks import adam
from marl.core.normalization import RewardScaler, RunningMeanStd
from marl.core.recurrent import chunk_rows, chunk_starts, episode_starts
from marl.core.returns import gae, vtrace
from marl.core.symmetry import Mirror
from marl.errors import ConfigError
from marl.multi.critics import Critic, ValueUnits
from marl.multi.manager import AgentManager, flat_dim
from marl.rollout import Rollout, allocate, carry_over, store_outcome, store_step, to_env_actions


@dataclass
class PGBatch:
    """A flattened rollout ``[B = R * E, ...]`` (per-group dicts keyed by group name; ``U`` = value units)."""

    obs: dict[str, torch.Tensor]  # [B, N, D]
    mask: dict[str, torch.Tensor | None]  # [B, N, A]
    action: dict[str, torch.Tensor]  # [B, N, *A]
    logp_old: dict[str, torch.Tensor]  # [B, N]
    acting: dict[str, torch.Tensor]  # [B, N]
    adv: dict[str, torch.Tensor]  # [B, N]
    state: torch.Tensor  # [B, S]
    target: torch.Tensor  # [B, U] value targets (normalized when value_norm is on)
    value_old: torch.Tensor  # [B, U] (same scale as target)
    vmask: torch.Tensor  # [B, U] where the value unit was evaluated on an acting step
    weight: torch.Tensor | None = None  # [B] per-sample surrogate weight (HAPPO's M), None = 1
    logp_ref: dict[str, torch.Tensor] | None = None  # [B, N] log-probs of a reference policy (GRPO's KL term)
    # every entry of every acting mask and of vmask is True (checked once on the whole batch, so its minibatches take
    # the dense loss paths without a host sync each)
    full: bool = False
    # recurrent networks: B = K chunks of L steps, every field above [K, L, ...]; replayed from these states
    h0: dict[str, torch.Tensor] | None = None  # [K, N, S] actor states fed to each chunk's first step
    hv0: torch.Tensor | None = None  # [K, U, H] critic states fed to each chunk's first step
    reset: torch.Tensor | None = None  # [K, L] an episode starts at this step (its state is zeroed)
    advance: dict[str, torch.Tensor] | None = None  # [K, L, N] the agent acted (its actor state advances)
    vadvance: torch.Tensor | None = None  # [K, L, U] the value unit acted (its critic state advances)

    def index(self, idx: torch.Tensor) -> PGBatch:
        """The rows ``idx`` of every field: a 1-D integer tensor is gathered with ``index_select`` (3-5x faster than
        ``x[idx]`` on the CPU for minibatches of a large rollout, the same values); anything else indexes as usual."""
        gather = torch.is_tensor(idx) and idx.dim() == 1 and not idx.dtype.is_floating_point and idx.dtype != torch.bool

        def take(v: torch.Tensor) -> torch.Tensor:
            return torch.index_select(v, 0, idx) if gather else v[idx]

        def sel(x):
            if x is None or isinstance(x, bool):
                return x
            if isinstance(x, dict):
                return {k: (take(v) if v is not None else None) for k, v in x.items()}
            return take(x)

        return PGBatch(**{f.name: sel(getattr(self, f.name)) for f in fields(self)})

    @property
    def size(self) -> int:
        return self.state.shape[0]


class OnPolicyLearner(Learner):
    central_critic = False
    separate_actors = False
    uses_critic = True

    def __init__(self, cfg: DictConfig, env: VecMultiEnv, device: str):
        super().__init__(cfg, env, device)
        a, spec = self.algo, self.spec
        self.T, self.E = int(a.num_steps), spec.num_envs
        self.manager = AgentManager(spec, a, separate=self.separate_actors).to(self.device)
        self.team_reduce = getattr(a, "team_reward", "none")
        team = self.team_reduce != "none"
        self.critic: Critic | None = None
        self.critic_opt: torch.optim.Adam | None = None
        if self.uses_critic:
            self.critic = Critic(spec, a, self.manager, self.central_critic, team=team).to(self.device)
            self.critic_opt = adam(self.critic.parameters(), self.critic_lr(), self.algo.adam_eps)
            self.units = self.critic.units
        else:  # the advantage units without a value: per team on a team reward, else per agent
            self.units = ValueUnits(spec, team)
        self.actor_opts = self._actor_optimizers()
        U = self.units.U
        self.obs_rms = {g.name: RunningMeanStd((flat_dim(g),)) for g in spec.groups} if a.normalize_obs else None
        self.state_rms = RunningMeanStd(tuple(spec.state_shape)) if a.normalize_obs and self.central_critic else None
        self.reward_scaler = RewardScaler(a.gamma, (U,)) if getattr(a, "normalize_reward", False) else None  # per unit
        self.value_norm = RunningMeanStd((U,)) if getattr(a, "value_norm", False) and self.uses_critic else None
        self.rnn = getattr(a, "rnn", None)
        self.buf = allocate(spec, self.T, self.E, self.device, units=U, carry=U,
                            actor_state={g: p.state_dim for g, p in self.manager.policies.items()},
                            critic_state=self.critic.state_dim if self.critic is not None else 0)
        # recurrent: the actor states fed to the next step {g: [E, N_g, S]}, the critic's [E, U, H] (states of the
        # running rollout; act() keeps its own, ``act_state``, for evaluation and the API)
        self.h_actor = self.manager.initial_state(self.E, self.device)
        self.h_critic = (torch.zeros(self.E, U, self.critic.state_dim, device=self.device)
                         if self.critic is not None and self.critic.recurrent else None)
        self.act_state: dict[str, torch.Tensor] | None = None
        self.opponents = None  # an object with override(last, actions, buf, t) -> actions (see marl/selfplay.py)
        self._remote_critic: RemoteCritic | None = None  # the critic's copy in an env worker (see fit_critic)
        if getattr(a, "symmetric", False):  # mirror-equivariant actor and (local) critic
            for g, m in self._mirrors().items():
                self.manager.policies[g].mirror = m

    # ---------------------------------------------------------------- set-up
    def _mirrors(self) -> dict[str, Mirror]:
        """One :class:`Mirror` per group from ``env.symmetry`` (algo.symmetric); ConfigError where it cannot apply."""
        name = self.cfg.algo.name
        if self.rnn:
            raise ConfigError(f"algo.symmetric with algo.rnn={self.rnn}: the mirror average runs the network twice "
                              "per step, which a recurrent state does not support",
                              "drop algo.symmetric, or set algo.rnn=null")
        if self.central_critic:
            raise ConfigError(f"algo.symmetric is not available for algo={name}: its centralized critic reads the "
                              "global state, which has no declared mirror image",
                              "use algo=ppo or algo=ippo, or drop algo.symmetric")
        if self.algo.normalize_obs:
            raise ConfigError("algo.symmetric with algo.normalize_obs=true: per-feature statistics are not "
                              "mirror-symmetric",
                              "set algo.normalize_obs=false (board observations need no normalization)")
        sym = self.cfg.env.get("symmetry") or {}
        return {g.name: Mirror.for_space(g.name, g.obs_space, g.action_space, sym.get("flip_axis"),
                                         sym.get("action_perm"), self.cfg.env.name) for g in self.spec.groups}

    def _adam(self, params) -> torch.optim.Adam:
        return adam(params, self.algo.lr, self.algo.adam_eps)

    def _actor_optimizers(self) -> list[torch.optim.Adam]:
        if not self.separate_actors:
            return [self._adam(self.manager.parameters())]
        return [self._adam(self.manager.policies[g].agent_parameters(k)) for g, k in self.manager.agent_units()]

    def modules(self) -> dict[str, nn.Module | torch.optim.Optimizer]:
        mods: dict[str, nn.Module | torch.optim.Optimizer] = {"manager": self.manager}
        if self.critic is not None:
            mods["critic"] = self.critic
        mods |= {f"actor_opt{i}": o for i, o in enumerate(self.actor_opts)}
        if self.critic_opt is not None:
            mods["critic_opt"] = self.critic_opt
        return mods

    def load_state_dict(self, state: dict) -> None:
        mods = state["modules"]
        if self.critic is not None and any(k.startswith("manager.") for k in mods.get("critic", {})):
            state = {**state, "modules": {**mods, **_unregister_manager(mods, self.critic)}}
        super().load_state_dict(state)

    def extra_state(self) -> dict:
        st: dict = {"carry": self._carry_state()}
        if self.obs_rms:
            st["obs_rms"] = {k: v.state_dict() for k, v in self.obs_rms.items()}
        if self.state_rms:
            st["state_rms"] = self.state_rms.state_dict()
        if self.reward_scaler:
            st["reward_scaler"] = self.reward_scaler.state_dict()
        if self.value_norm:
            st["value_norm"] = self.value_norm.state_dict()
        if self.rnn:
            st["rnn"] = {f"actor/{k}": v.cpu().clone() for k, v in self.h_actor.items()}
            if self.h_critic is not None:
                st["rnn"]["critic"] = self.h_critic.cpu().clone()
        return st

    def load_extra_state(self, state: dict) -> None:
        for k, v in state.get("obs_rms", {}).items():
            self.obs_rms[k].load_state_dict(v)
        if "state_rms" in state:
            self.state_rms.load_state_dict(state["state_rms"])
        if "reward_scaler" in state:
            self.reward_scaler.load_state_dict(state["reward_scaler"])
        if "value_norm" in state:
            self.value_norm.load_state_dict(state["value_norm"])
        if "carry" in state:
            self._load_carry(state["carry"])
        rnn = state.get("rnn", {})
        if self.rnn and all(rnn.get(f"actor/{k}", torch.empty(0)).shape == v.shape for k, v in self.h_actor.items()):
            self.h_actor = {k: rnn[f"actor/{k}"].to(self.device) for k in self.h_actor}  # same copies only
            if self.h_critic is not None:
                self.h_critic = rnn["critic"].to(self.device)

    def reset_env(self, seed: int) -> None:
        """Reset every env copy and forget what referred to the dropped episodes: open transitions in the carry rows
        and the reward scaler's running returns."""
        super().reset_env(seed)
        E, U = self.E, self.units.U
        carry_over(self.buf, self.units.unit_of, torch.zeros(E, U, dtype=torch.long, device=self.device),
                   torch.zeros(E, U, dtype=torch.bool, device=self.device))
        if self.reward_scaler is not None:
            self.reward_scaler.ret = None
        self.reset_states(np.ones(E, dtype=bool))

    def reset_states(self, starts: np.ndarray) -> None:
        """Recurrent: zero the actor and critic states of the copies where a new episode starts (``starts [E]``)."""
        if not self.rnn or not starts.any():
            return
        self.h_actor = self._zeroed(self.h_actor, starts)
        if self.h_critic is not None:
            self.h_critic = self._zeroed({"critic": self.h_critic}, starts)["critic"]

    def _zeroed(self, states: dict[str, torch.Tensor], starts) -> dict[str, torch.Tensor]:
        """``states {k: [E, ...]}`` with the copies where ``starts [E]`` (numpy or tensor) is True set to 0."""
        keep = ~as_tensor(starts, self.device).bool()
        return {k: h * keep.reshape(-1, *([1] * (h.dim() - 1))) for k, h in states.items()}

    def _carry_state(self) -> dict:
        """The carry rows of the rollout buffer: transitions the next rollout completes (see marl/rollout.py)."""
        C, buf = self.buf.carry, self.buf
        out = {"state": buf.state[:C].cpu().clone(), "unit_reward": buf.unit_reward[:C].cpu().clone()}
        if buf.hv is not None:
            out["hv"] = buf.hv[:C].cpu().clone()
        for k, gb in buf.groups.items():
            for f in ("obs", "action", "logp", "alive", "acting") + _optional(gb):
                out[f"{k}/{f}"] = getattr(gb, f)[:C].cpu().clone()
        return out

    def _load_carry(self, st: dict) -> None:
        """Restore the carry rows; a learner with another number of env copies (evaluation) starts without them."""
        C, buf = self.buf.carry, self.buf
        if st["state"].shape != buf.state[:C].shape:
            return
        buf.state[:C] = st["state"].to(self.device)
        buf.unit_reward[:C] = st["unit_reward"].to(self.device)
        if buf.hv is not None:
            buf.hv[:C] = st["hv"].to(self.device)
        for k, gb in buf.groups.items():
            for f in ("obs", "action", "logp", "alive", "acting") + _optional(gb):
                getattr(gb, f)[:C] = st[f"{k}/{f}"].to(self.device)

    # ---------------------------------------------------------------- acting
    def obs_tensors(self, raw: dict[str, np.ndarray], alive: dict[str, np.ndarray] | None = None) -> dict:
        """Env obs ``{g: [E, N, *obs]}`` (numpy, or tensors of a torch env) -> normalized flat ``{g: [E, N, D]}`` on
        ``device``; updates stats when ``alive`` given."""
        out = {}
        for g in self.spec.groups:
            x = torch.as_tensor(raw[g.name], dtype=torch.float32).reshape(*raw[g.name].shape[:2], -1)
            if self.obs_rms is not None:
                rms = self.obs_rms[g.name]
                if alive is not None:
                    rms.update(x[as_tensor(alive[g.name], x.device)])
                x = rms.normalize(x)
            out[g.name] = x.to(self.device)
        return out

    def state_tensor(self, raw: np.ndarray, update: bool) -> torch.Tensor:
        x = torch.as_tensor(raw, dtype=torch.float32)
        if self.state_rms is not None:
            if update:
                self.state_rms.update(x)
            x = self.state_rms.normalize(x)
        return x.to(self.device)

    def masks(self, raw: dict[str, np.ndarray | None]) -> dict[str, torch.Tensor | None]:
        return {k: (as_tensor(v, self.device) if v is not None else None) for k, v in raw.items()}

    def act(self, obs, action_mask, deterministic: bool, acting: dict[str, np.ndarray] | None = None):
        """Actions for raw env obs ``{g: [E, N, *obs]}`` (normalization applied, stats untouched). A recurrent
        policy steps its own state ``act_state`` (not the training rollout's): it advances for the ``acting``
        agents (default: all), and :meth:`reset_memory` clears it where episodes start."""
        x, masks = self.obs_tensors(obs), self.masks(action_mask)
        if not self.rnn:
            return self.manager.act(x, masks, deterministic)[0]
        E = next(iter(x.values())).shape[0]
        if self.act_state is None or next(iter(self.act_state.values())).shape[0] != E:
            self.act_state = self.manager.initial_state(E, self.device)
        on = {k: (as_tensor(acting[k], self.device) if acting is not None
                  else torch.ones(v.shape[:2], dtype=torch.bool, device=self.device)) for k, v in x.items()}
        actions, _, self.act_state = self.manager.act_recurrent(x, masks, self.act_state, on, deterministic)
        return actions

    def reset_memory(self, starts: np.ndarray | None = None) -> None:
        """Clear :meth:`act`'s recurrent state where an episode starts (``starts [E]``; None: every copy)."""
        if self.act_state is None:
            return
        if starts is None:
            self.act_state = None
            return
        self.act_state = self._zeroed(self.act_state, np.asarray(starts, dtype=bool))

    def collect(self) -> Rollout:
        """``T`` steps of every copy into rows ``C .. C+T-1`` of the buffer (the carry rows hold what the previous
        rollout left open)."""
        buf, last, C = self.buf, self.last, self.buf.carry
        first = self.env_steps == 0  # later rollouts start from an observation already counted in the statistics
        obs, state = self.obs_tensors(last.obs, last.alive if first else None), self.state_tensor(last.state, first)
        if self.h_critic is not None:  # recurrent critic: its state at the first step row (advantages() replays it)
            buf.hv[C] = self.h_critic
        for t in range(C, C + self.T):
            masks = self.masks(last.action_mask)
            if self.rnn:  # recurrent: record the states fed to this step; the acting agents' advance
                for k, gb in buf.groups.items():
                    gb.h[t] = self.h_actor[k]
                on = {k: as_tensor(v, self.device) for k, v in last.acting.items()}
                actions, logps, self.h_actor = self.manager.act_recurrent(obs, masks, self.h_actor, on)
            else:
                actions, logps = self.manager.act(obs, masks)
            store_step(buf, t, last, obs, state, masks, actions, logps)
            if self.opponents is not None:  # seats played by frozen / scripted opponents: act for them, never train
                actions = self.opponents.override(last, actions, buf, t)
                for k, gb in buf.groups.items():  # recurrent: the seats an opponent played keep their state
                    if gb.h is not None:
                        self.h_actor[k] = torch.where(gb.acting[t].unsqueeze(-1), self.h_actor[k], gb.h[t])
            out = self.env.step(to_env_actions(actions, self.spec))
            rewards = {k: as_tensor(v, self.device) for k, v in out.reward.items()}
            unit_r = self.units.reduce(rewards, self.team_reduce)  # [E, U]: the reward that enters the advantage
            if self.reward_scaler is not None:
                unit_r = self.reward_scaler(unit_r, as_tensor(out.done, self.device))
            buf.unit_reward[t] = unit_r
            if store_outcome(buf, t, out, rewards):
                final = self.obs_tensors(out.final_obs)
                for k, gb in buf.groups.items():
                    gb.final_obs[t] = final[k]
                buf.final_state[t] = self.state_tensor(out.final_state, False)
            self.episodes.extend(out.episodes)
            self.reset_states(out.done)  # recurrent: new episodes start from zero states
            obs, state, last = self.obs_tensors(out.obs, out.alive), self.state_tensor(out.state, True), out
        R = C + self.T
        for k, gb in buf.groups.items():
            gb.obs[R] = obs[k]
        buf.state[R] = state
        self.last = last
        self.env_steps += self.T * self.E
        return buf

    # ---------------------------------------------------------------- advantages
    def values(self, obs: dict[str, torch.Tensor], state: torch.Tensor) -> torch.Tensor:
        """Critic output ``[..., U]`` (normalized scale when value_norm is on)."""
        return self.critic(obs, state)

    def unit_flags(self, buf: Rollout) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``acting``, ``terminated`` and ``left`` per value unit ``[R, E, U]``. A team's trajectory ends with the
        episode; an agent's (per-agent units) also with its own termination or truncation."""
        g = buf.groups
        acting = self.units.reduce({k: gb.acting for k, gb in g.items()}, "any")
        if self.units.per_team:
            terminated = (buf.done & ~buf.truncated).unsqueeze(-1).expand_as(acting)
            return acting, terminated, torch.zeros_like(acting)
        terminated = self.units.reduce({k: gb.terminated for k, gb in g.items()})
        return acting, terminated, self.units.reduce({k: gb.left for k, gb in g.items()})

    def open_transitions(self, buf: Rollout, acting: torch.Tensor, ended: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(last_row, open) [E, U]``: the row of each unit's last acting step, and whether that transition is still
        open at the end of the buffer — no trajectory end at or after it (``ended [R, E, U]``) and the unit does not
        act at the next observation (a turn-based game cut while the opponent is to move). An open transition's
        reward and next value are only known at the unit's next own turn, in the next rollout."""
        R = buf.T
        rows = torch.arange(R, device=acting.device)[:, None, None]
        last_act = torch.where(acting, rows, -1).amax(0)
        last_end = torch.where(ended, rows, -1).amax(0)
        nxt = self.units.reduce({k: as_tensor(v, acting.device) for k, v in self.last.acting.items()}, "any")
        return last_act.clamp_min(0), (last_act >= 0) & (last_end < last_act) & ~nxt

    @torch.no_grad()
    def advantages(self, buf: Rollout) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-group advantages ``[R, E, N_g]``, value targets and old values ``[R, E, U]`` (critic scale), and the
        value-loss mask ``[R, E, U]``. A transition still open at the buffer's end (see :meth:`open_transitions`)
        gets no advantage here: it bootstraps the unit's earlier steps and is completed by the next rollout."""
        R, g = buf.T, buf.groups
        acting, terminated, left = self.unit_flags(buf)
        if self.h_critic is not None:
            v_all, v_fin = self.recurrent_values(buf, acting, left)
        elif self.uses_critic:
            v_all = self.values({k: gb.obs for k, gb in g.items()}, buf.state)  # [R+1, E, U]
            # [R, E, U]: V(final observation), only read where a copy's episode ended or an agent was truncated on its
            # own (its state: the final state at an episode end, else the state the others go on from)
            v_fin = torch.zeros_like(v_all[:-1])
            d = buf.done | left.any(-1)
            if bool(d.any()):
                fin_state = torch.where(buf.done.unsqueeze(-1), buf.final_state, buf.state[1:])
                v_fin[d] = self.values({k: gb.final_obs[d] for k, gb in g.items()}, fin_state[d])
        else:
            v_all = torch.zeros(R + 1, self.E, self.units.U, device=self.device)
            v_fin = torch.zeros(R, self.E, self.units.U, device=self.device)
        v_old = v_all[:-1]
        if self.value_norm is not None:
            v_all, v_fin = self.value_norm.denormalize(v_all), self.value_norm.denormalize(v_fin)
        done_env = buf.done.unsqueeze(-1)
        done = done_env | terminated | left
        next_v = torch.where(done_env | left, v_fin, v_all[1:])
        last_row, open_ = self.open_transitions(buf, acting, done)
        self._pending = (last_row, open_)
        stop = torch.zeros_like(acting)
        e_o, u_o = open_.nonzero().unbind(-1)
        stop[last_row[e_o, u_o], e_o, u_o] = True
        if self.policy_lag() > 0:  # an async Ray rollout of an older policy: V-trace (marl/distributed)
            corr, adv = self.vtrace(buf, v_all[:-1], next_v, terminated, done, acting, stop)
            target = corr + v_all[:-1]
        else:
            adv = self.estimate(buf.unit_reward, v_all[:-1], next_v, terminated, done, acting, stop)
            target = adv + v_all[:-1]
        vmask = acting & ~stop
        if self.value_norm is not None:
            self.value_norm.update(target, vmask)
            target = self.value_norm.normalize(target, clip=None)
        self._stop = stop
        return self.units.broadcast(adv), target, v_old, vmask

    def recurrent_values(self, buf: Rollout, acting: torch.Tensor, left: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """Recurrent critic: values of every row ``[R+1, E, U]`` and of the final observations ``[R, E, U]`` (as
        :meth:`advantages`), replaying the step rows from the state recorded at collection (``buf.hv[C]``), with
        resets at episode starts; a carried transition from its recorded state alone. Records the state fed to
        every row in ``buf.hv`` and keeps the one after the last step for the next rollout."""
        C, R, g, c = buf.carry, buf.T, buf.groups, self.critic
        U = self.units.U

        def seq(x: torch.Tensor) -> torch.Tensor:  # step rows, batch first: [E, T, ...]
            return x[C:R].transpose(0, 1)

        reset = episode_starts(buf.done, C)[C:R].transpose(0, 1).unsqueeze(-1).expand(-1, -1, U)  # [E, T, U]
        h0 = buf.hv[C]
        v, after = c.sequence({k: seq(gb.obs) for k, gb in g.items()}, seq(buf.state), h0, reset, seq(acting))
        v, after = v.transpose(0, 1), after.transpose(0, 1)  # [T, E, U], [T, E, U, H]
        fed = torch.where(reset.transpose(0, 1).unsqueeze(-1), 0.0, torch.cat([h0[None], after[:-1]]))
        buf.hv[C:R] = fed
        buf.hv[R] = after[-1] * ~buf.done[R - 1, :, None, None]
        v_next, _ = c.step({k: gb.obs[R] for k, gb in g.items()}, buf.state[R], buf.hv[R])
        v_carry, _ = c.step({k: gb.obs[:C] for k, gb in g.items()}, buf.state[:C], buf.hv[:C])
        v_all = torch.cat([v_carry, v, v_next[None]])
        v_fin = torch.zeros(R, self.E, U, device=self.device)
        d = (buf.done | left.any(-1))[C:]  # carry rows never end an episode
        if bool(d.any()):  # the final observation, from the state after its step (before the reset)
            fin_state = torch.where(buf.done.unsqueeze(-1), buf.final_state, buf.state[1:])[C:]
            v_fin[C:][d] = c.step({k: gb.final_obs[C:][d] for k, gb in g.items()}, fin_state[d], after[d])[0]
        self.h_critic = buf.hv[R].clone()
        return v_all, v_fin

    def estimate(self, reward, value, next_value, terminated, done, acting, stop=None) -> torch.Tensor:
        """Advantages ``[R, E, U]`` from the unit tensors (denormalized values); GAE here, A2C may use n-step."""
        return gae(reward, value, next_value, terminated, done, self.algo.gamma, self.algo.gae_lambda, acting, stop)

    def policy_lag(self) -> int:
        """Updates between the weights that collected the current rollout and these (Ray async mode; else 0)."""
        return getattr(self.collector, "lag", 0)

    @torch.no_grad()
    def vtrace(self, buf: Rollout, value, next_value, terminated, done, acting, stop
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """V-trace ``(correction, pg_adv) [R, E, U]`` of a rollout sampled by an older policy mu: per value unit,
        ``log rho`` is the sum over its acting members of ``log pi - log mu`` (a team's joint action), with
        ``ray.rho_bar`` / ``ray.c_bar`` and ``lambda = algo.gae_lambda`` (1 for A2C's n-step returns). Keeps this
        policy's log-probs of the rollout's actions for :meth:`make_batch` (``logp_old``)."""
        R = buf.T
        logp_now = {}
        for k, gb in buf.groups.items():
            obs, mask = gb.obs[:R].flatten(0, 1), (gb.mask.flatten(0, 1) if gb.mask is not None else None)
            logp = self.manager.dist(k, obs, mask).log_prob(gb.action.flatten(0, 1))
            logp_now[k] = logp.reshape(gb.logp.shape)
        self._logp_now = logp_now
        log_rho = self.units.reduce({k: torch.where(gb.acting, logp_now[k] - gb.logp, torch.zeros_like(gb.logp))
                                     for k, gb in buf.groups.items()})
        rc = self.cfg.ray
        lam = float(getattr(self.algo, "gae_lambda", 1.0)) if getattr(self.algo, "returns", "gae") == "gae" else 1.0
        return vtrace(buf.unit_reward, value, next_value, terminated, done, log_rho, self.algo.gamma, lam,
                      float(rc.rho_bar), float(rc.c_bar), acting, stop)

    def make_batch(self, buf: Rollout) -> PGBatch:
        adv, target, v_old, vmask = self.advantages(buf)
        R = buf.T
        B = R * self.E

        def flat(x: torch.Tensor) -> torch.Tensor:
            return x[:R].reshape(B, *x.shape[2:])

        # entries that enter the policy loss: the acting agents, less the open transitions (completed next rollout)
        stop = self.units.broadcast(self._stop)
        acting = {k: gb.acting & ~stop[k] for k, gb in buf.groups.items()}
        if self.algo.norm_adv:
            for k in buf.groups:
                m = acting[k]
                if m.sum() > 1:
                    sel = adv[k][m]
                    adv[k] = torch.where(m, (adv[k] - sel.mean()) / (sel.std() + 1e-8), torch.zeros_like(adv[k]))
        gs = buf.groups
        batch = PGBatch(
            obs={k: flat(gb.obs) for k, gb in gs.items()},
            mask={k: (flat(gb.mask) if gb.mask is not None else None) for k, gb in gs.items()},
            action={k: flat(gb.action) for k, gb in gs.items()},
            # lagged (async Ray) rollouts: the ratio is to this policy; V-trace corrected the advantages for mu
            logp_old={k: flat(self._logp_now[k] if self.policy_lag() > 0 else gb.logp) for k, gb in gs.items()},
            acting={k: flat(acting[k]) for k in gs},
            adv={k: flat(v) for k, v in adv.items()},
            state=flat(buf.state),
            target=flat(target),
            value_old=flat(v_old),
            vmask=flat(vmask),
        ) if not self.rnn else self.sequence_batch(buf, acting, adv, target, v_old, vmask)
        batch = drop_idle(batch)
        batch.full = bool(batch.vmask.all()) and all(bool(a.all()) for a in batch.acting.values())
        return batch

    def sequence_batch(self, buf: Rollout, acting: dict[str, torch.Tensor], adv: dict[str, torch.Tensor],
                       target: torch.Tensor, v_old: torch.Tensor, vmask: torch.Tensor) -> PGBatch:
        """Recurrent: the rollout as ``K`` chunks of ``L = rnn_chunk`` steps (:func:`marl.core.recurrent.chunk_rows`;
        each carried transition a chunk of its own), with the recorded states at every chunk's start."""
        C, L, gs = buf.carry, int(self.algo.rnn_chunk), buf.groups

        def seq(x: torch.Tensor, fill: float | bool = 0) -> torch.Tensor:
            return chunk_rows(x[: buf.T], C, L, fill)

        unit_acting = self.unit_flags(buf)[0]
        return PGBatch(
            obs={k: seq(gb.obs) for k, gb in gs.items()},
            mask={k: (seq(gb.mask, True) if gb.mask is not None else None) for k, gb in gs.items()},
            action={k: seq(gb.action) for k, gb in gs.items()},
            logp_old={k: seq(gb.logp) for k, gb in gs.items()},
            acting={k: seq(acting[k], False) for k in gs},
            adv={k: seq(v) for k, v in adv.items()},
            state=seq(buf.state),
            target=seq(target),
            value_old=seq(v_old),
            vmask=seq(vmask, False),
            h0={k: chunk_starts(gb.h, C, L) for k, gb in gs.items()},
            hv0=chunk_starts(buf.hv[: buf.T], C, L) if buf.hv is not None else None,
            reset=seq(episode_starts(buf.done, C), False),
            advance={k: seq(gb.acting, False) for k, gb in gs.items()},
            vadvance=seq(unit_acting, False),
        )

    def policy_dist(self, k: str, mb: PGBatch):
        """Group ``k``'s distribution over the minibatch ``[B, N]`` (recurrent: over its chunks ``[K, L, N]``)."""
        if not self.rnn:
            return self.manager.dist(k, mb.obs[k], mb.mask[k])
        reset = mb.reset.unsqueeze(-1).expand_as(mb.advance[k])
        return self.manager.policies[k].sequence(mb.obs[k], mb.h0[k], reset, mb.advance[k], mb.mask[k])

    def agent_dist(self, g: str, k: int, mb: PGBatch):
        """Agent ``k`` of group ``g`` alone (separate actors) -> over ``[B, 1]`` (recurrent: ``[K, L, 1]``)."""
        pol = self.manager.policies[g]
        if not self.rnn:
            return pol.agent(k, mb.obs[g], mb.mask[g])
        reset = mb.reset.unsqueeze(-1).expand_as(mb.advance[g])
        return pol.agent_sequence(k, mb.obs[g], mb.h0[g], reset, mb.advance[g], mb.mask[g])

    def batch_values(self, mb: PGBatch) -> torch.Tensor:
        """Critic values of the minibatch ``[B, U]`` (recurrent: ``[K, L, U]``, replayed from ``mb.hv0``)."""
        return critic_values(self.critic, mb)

    # ---------------------------------------------------------------- losses shared by the updates
    def pg_loss(self, logp, logp_old, adv, mask, weight=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Policy-gradient loss of one group; REINFORCE/A2C use this one, PPO overrides it."""
        return losses.reinforce_loss(logp, adv if weight is None else adv * weight, mask), {}

    def actor_loss(self, mb: PGBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """Sum over groups of (policy loss - ent_coef * entropy), each averaged over its acting entries."""
        total, stats = 0.0, {}
        for k in mb.obs:
            acting, pol = mb.acting[k], self.manager.policies[k]
            ref = mb.logp_ref[k] if mb.logp_ref is not None else None
            if pol.dense and not mb.full and bool(acting.any()) and not bool(acting.all()):  # acting entries only
                b, n = acting.nonzero().unbind(-1)
                d = pol.entries(mb.obs[k], mb.mask[k], b, n)
                logp = d.log_prob(mb.action[k][b, n].unsqueeze(1))
                mask, ref = None, (ref[b, n].unsqueeze(1) if ref is not None else None)
                pg, st = self.pg_loss(logp, mb.logp_old[k][b, n].unsqueeze(1), mb.adv[k][b, n].unsqueeze(1), None)
            else:
                d = self.policy_dist(k, mb)
                logp, mask = d.log_prob(mb.action[k]), acting
                pg, st = self.pg_loss(logp, mb.logp_old[k], mb.adv[k], acting)
            ent = losses.entropy_bonus(d.entropy(), mask)
            total = total + pg - self.algo.ent_coef * ent
            if ref is not None:  # GRPO: KL to the frozen reference policy
                kl = losses.reference_kl(logp, ref, mask)
                total = total + self.algo.kl_coef * kl
                st = {**st, "ref_kl": kl}
            _accumulate(stats, {"policy_loss": pg, "entropy": ent, **st}, len(mb.obs))
        return total, stats

    def critic_loss(self, mb: PGBatch) -> torch.Tensor:
        if not self.uses_critic:
            return torch.zeros((), device=self.device)
        return value_loss_of(self.critic, mb, self.vclip())

    def vclip(self) -> float | None:
        """The value-clip range (algo.clip_vloss), else None."""
        return self.algo.vclip_coef if getattr(self.algo, "clip_vloss", False) else None

    def step(self, opts: list[torch.optim.Optimizer], loss: torch.Tensor, params: list[list[nn.Parameter]]) -> None:
        """Backward once, clip each parameter set's gradient norm, step each optimizer."""
        for o in opts:
            o.zero_grad(set_to_none=True)
        loss.backward()
        if self.algo.max_grad_norm > 0:
            for p in params:
                nn.utils.clip_grad_norm_(p, self.algo.max_grad_norm)
        for o in opts:
            o.step()

    def all_params(self, critic: bool = True) -> tuple[list[torch.optim.Optimizer], list[list[nn.Parameter]]]:
        """The optimizers and parameter sets stepped together by a joint update (actors + critic; the actors only
        with ``critic=False``)."""
        opts = list(self.actor_opts) + ([self.critic_opt] if critic and self.uses_critic else [])
        return opts, [[p for g in o.param_groups for p in g["params"]] for o in opts]

    def critic_lr(self) -> float:
        """The critic's learning rate: ``algo.critic_lr``, else ``algo.lr``."""
        lr = getattr(self.algo, "critic_lr", None)
        return float(self.algo.lr if lr is None else lr)

    def set_lr(self) -> float:
        """Set the actors' (``lr``) and the critic's (``critic_lr``) learning rates, annealed where asked; returns
        the actors'."""
        frac = max(0.0, 1.0 - self.env_steps / float(self.cfg.total_steps)) if self.algo.anneal_lr else 1.0
        rates = [(o, self.algo.lr * frac) for o in self.actor_opts]
        if self.critic_opt is not None:
            rates.append((self.critic_opt, self.critic_lr() * frac))
        for o, lr in rates:
            for g in o.param_groups:
                g["lr"] = lr
        return self.algo.lr * frac

    def epoch_plan(self, batch: PGBatch) -> list[torch.Tensor]:
        """One epoch's shuffled minibatch indices (``num_minibatches`` near-equal parts, on the learner's device)."""
        parts = list(minibatch_indices(batch.size, self.algo.num_minibatches, self.gen))
        return list(torch.cat(parts).to(self.device).split([len(p) for p in parts]))  # one copy per epoch

    def plans(self, batch: PGBatch) -> list[list[torch.Tensor]] | None:
        """Every epoch's minibatches drawn now, or None where the epochs may stop early (``target_kl``): they are
        then drawn one epoch at a time, as the update goes (the same draws either way)."""
        if getattr(self.algo, "target_kl", None) is not None:
            return None
        return [self.epoch_plan(batch) for _ in range(self.algo.update_epochs)]

    def run_epochs(self, batch: PGBatch, step_fn, plans: list[list[torch.Tensor]] | None = None,
                   used: list | None = None) -> dict[str, float]:
        """Call ``step_fn(minibatch) -> stats`` over ``update_epochs`` shuffled passes of ``num_minibatches`` (the
        given ``plans``, else drawn per epoch); stop after an epoch whose mean approx KL exceeds ``target_kl`` (where
        the algorithm has one). Appends the epochs run to ``used``; returns the mean stats."""
        stats: list[dict[str, float]] = []
        target_kl = getattr(self.algo, "target_kl", None)
        for e in range(self.algo.update_epochs):
            plan = plans[e] if plans is not None else self.epoch_plan(batch)
            if used is not None:
                used.append(plan)
            epoch = [step_fn(batch.index(idx)) for idx in plan]
            if target_kl is not None:  # the epoch's stats are read back now (else once, after the last epoch)
                epoch = resolve(epoch)
                stats += epoch
                if sum(st.get("approx_kl", 0.0) for st in epoch) / len(epoch) > target_kl:
                    break
            else:
                stats += epoch
        return mean_stats(resolve(stats))

    def epochs_with_critic(self, batch: PGBatch, actor_step) -> dict[str, float]:
        """:meth:`run_epochs` of ``actor_step`` and the critic's epochs over the same minibatches (:meth:`fit_critic`:
        in an idle env worker meanwhile, where there is one; after the actors' epochs where ``target_kl`` may stop
        them early). Actors and critic share no parameter, so this is the joint step on ``actor loss + vf_coef *
        value loss`` to the bit. The mean stats, with ``value_loss``."""
        plans = self.plans(batch)
        fit = self.fit_critic(batch, plans) if plans is not None else None
        used: list = []
        stats = self.run_epochs(batch, actor_step, plans, used)
        stats["value_loss"] = (fit or self.fit_critic(batch, used)).result()
        return stats

    def fit_critic(self, batch: PGBatch, plans: list[list[torch.Tensor]]) -> CriticFit:
        """The critic's epochs over ``plans`` (its own loss, optimizer and gradient clip; no parameter is shared with
        the actors, so this equals the joint actor + critic step). Where the env has a worker process idle during
        the update (``env.backend=subprocess``) and the learner is on the CPU, they run there, concurrently with the
        actors' epochs in this process, from this critic's state to the same numbers; else here, when the result is
        asked for. ``.result()`` -> the mean value loss (the critic and its optimizer updated)."""
        a = self.algo
        args = (critic_fields(batch), plans, float(a.vf_coef), float(a.max_grad_norm), self.vclip())
        submit = getattr(self.env, "submit", None)
        if submit is not None and self.device.type == "cpu":
            if self._remote_critic is None:
                self._remote_critic = RemoteCritic(self.critic)
            return CriticFit(self, submit(self._remote_critic.key, self._remote_critic, self._remote_critic.call(
                self.critic, self.critic_opt, *args)))
        return CriticFit(self, None, lambda: fit_critic_epochs(self.critic, self.critic_opt, *args))

    # ---------------------------------------------------------------- the template
    def update(self, batch: PGBatch) -> dict[str, float]:
        """One gradient step on the whole rollout (REINFORCE, A2C); PPO and HAPPO override this."""
        actor, stats = self.actor_loss(batch)
        vloss = self.critic_loss(batch)
        opts, params = self.all_params()
        self.step(opts, actor + self.algo.vf_coef * vloss, params)
        return resolve([{**stats, "value_loss": vloss.detach()}])[0]

    def iteration(self) -> dict[str, float]:
        lr = self.set_lr()
        buf = self.gather()
        batch = self.make_batch(buf)
        metrics = self.update(batch)
        carry_over(buf, self.units.unit_of, *self._pending)  # after the update: the batch holds views of the buffer
        self.iterations += 1
        if self.uses_critic:
            with torch.no_grad():
                v = self.batch_values(batch)
            metrics["explained_variance"] = losses.explained_variance(v, batch.target, batch.vmask)
        metrics["learning_rate"] = lr
        out = {(f"losses/{k}" if k != "learning_rate" else "charts/learning_rate"): float(v)
               for k, v in metrics.items()}
        if self.collector is not None:  # env.backend=ray
            out["charts/policy_lag"] = float(self.policy_lag())
        return out


def _unregister_manager(mods: dict, critic: Critic) -> dict:
    """Saved modules from a checkpoint written while the critic registered the actors (``manager.*``) as a submodule
    of its own (before 2026-12-07): the critic's state without them, and the critic optimizer's without the actors'
    parameters (its second Adam step on them). Returns the replaced ``critic`` and ``critic_opt`` entries."""
    # the old critic's parameters in optimizer order: the manager was registered before the value nets
    names = [f"manager.{k}" for k, _ in critic.manager.named_parameters()] + [k for k, _ in critic.named_parameters()]
    keep = [i for i, k in enumerate(names) if not k.startswith("manager.")]
    out = {"critic": {k: v for k, v in mods["critic"].items() if not k.startswith("manager.")}}
    opt = mods.get("critic_opt")
    if opt is not None:
        new_index = {old: new for new, old in enumerate(keep)}
        groups = [{**g, "params": [new_index[i] for i in g["params"] if i in new_index]} for g in opt["param_groups"]]
        out["critic_opt"] = {"state": {new_index[i]: v for i, v in opt["state"].items() if i in new_index},
                             "param_groups": groups}
    return out


def critic_values(critic: Critic, mb: PGBatch) -> torch.Tensor:
    """Critic values of the minibatch ``[B, U]`` (recurrent: ``[K, L, U]``, replayed from ``mb.hv0``)."""
    if not critic.recurrent:
        return critic(mb.obs, mb.state)
    reset = mb.reset.unsqueeze(-1).expand_as(mb.vadvance)
    return critic.sequence(mb.obs, mb.state, mb.hv0, reset, mb.vadvance)[0]


def value_loss_of(critic: Critic, mb: PGBatch, clip: float | None) -> torch.Tensor:
    """The value loss of the minibatch on its ``vmask`` entries (a local critic with shared nets evaluates only
    those: the same loss)."""
    if critic.sparse_ok and not mb.full and not bool(mb.vmask.all()):
        v, off = torch.zeros_like(mb.target), 0
        for g in critic.spec.groups:
            b, n = mb.vmask[:, off : off + g.n_agents].nonzero().unbind(-1)
            v = v.index_put((b, n + off), critic.local_entries(g.name, mb.obs[g.name], b, n))
            off += g.n_agents
    else:
        v = critic_values(critic, mb)
    return losses.value_loss(v, mb.target, mb.value_old, clip, mb.vmask)


CRITIC_FIELDS = ("obs", "state", "target", "value_old", "vmask", "full", "hv0", "reset", "vadvance")


def critic_fields(batch: PGBatch) -> dict:
    """The fields of ``batch`` the value loss reads."""
    return {k: getattr(batch, k) for k in CRITIC_FIELDS}


def fit_critic_epochs(critic: Critic, opt: torch.optim.Optimizer, fields: dict, plans: list[list[torch.Tensor]],
                      vf_coef: float, max_grad_norm: float, clip: float | None) -> torch.Tensor:
    """The critic's minibatch steps over ``plans`` (epochs of index tensors into the batch ``fields``): backward of
    ``vf_coef * value loss``, the critic's gradient-norm clip, one optimizer step each. Returns the value losses
    ``[epochs * minibatches]`` (before each step)."""
    batch = PGBatch(mask={}, action={}, logp_old={}, acting={}, adv={}, **fields)
    params = list(critic.parameters())
    out = []
    for plan in plans:
        for idx in plan:
            vloss = value_loss_of(critic, batch.index(idx), clip)
            opt.zero_grad(set_to_none=True)
            (vf_coef * vloss).backward()
            if max_grad_norm > 0:
                nn.utils.clip_grad_norm_(params, max_grad_norm)
            opt.step()
            out.append(vloss.detach())
    return torch.stack(out)


def _numpy(x: Any) -> Any:
    """Tensors (in dicts, lists, tuples) -> numpy arrays, which cross a pipe as plain buffers."""
    if torch.is_tensor(x):
        return x.detach().cpu().numpy()
    if isinstance(x, dict):
        return {k: _numpy(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return type(x)(_numpy(v) for v in x)
    return x


def _torch(x: Any) -> Any:
    """The inverse of :func:`_numpy` (numpy arrays -> CPU tensors sharing their memory)."""
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    if isinstance(x, dict):
        return {k: _torch(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return type(x)(_torch(v) for v in x)
    return x


class RemoteCritic:
    """A copy of the learner's critic in an env worker process: pickled there once (``env.submit`` caches it under
    ``key``), then on each update given the critic's and its optimizer's state, the batch and the minibatch plans,
    it runs :func:`fit_critic_epochs` and returns their new state and the value losses. The learner's critic stays
    the one that counts (checkpoints, values): it loads the returned state."""

    def __init__(self, critic: Critic):
        self.key = f"critic-{id(self)}"
        self.critic = critic
        self.opt: torch.optim.Optimizer | None = None

    @staticmethod
    def call(critic: Critic, opt: torch.optim.Optimizer, *args: Any) -> tuple:
        """The arguments of one remote fit (numpy, for the pipe)."""
        return _numpy((critic.state_dict(), opt.state_dict(), args, torch.get_num_threads()))

    def __getstate__(self) -> dict:
        return {"key": self.key, "critic": self.critic, "opt": None}

    def __call__(self, payload: tuple) -> tuple:  # in the worker
        state, opt_state, args, threads = _torch(payload)
        torch.set_num_threads(threads)  # the same kernels as the learner's process: the same numbers
        self.critic.load_state_dict(state)
        if self.opt is None:
            self.opt = adam(self.critic.parameters(), 1.0, 1.0)  # lr and eps come with the state
        self.opt.load_state_dict(opt_state)
        out = fit_critic_epochs(self.critic, self.opt, *args)
        return _numpy((self.critic.state_dict(), self.opt.state_dict(), out))


class CriticFit:
    """The critic's epochs of one update, running (in an env worker) or to run (here) until :meth:`result`."""

    def __init__(self, learner: OnPolicyLearner, pending: Any = None, local: Any = None):
        self.learner, self.pending, self.local = learner, pending, local

    def result(self) -> float:
        """Finish the fit (load the remote critic's state into the learner's); the mean value loss."""
        if self.pending is not None:
            state, opt_state, out = _torch(self.pending.result())
            self.learner.critic.load_state_dict(state)
            self.learner.critic_opt.load_state_dict(opt_state)
        else:
            out = self.local()
        vals = out.double().tolist()
        return sum(vals) / len(vals)


def drop_idle(batch: PGBatch) -> PGBatch:
    """The rows ``[B]`` where some trained agent acted: in turn-based games with pool opponents, the opponents'
    moves (no trained agent to move) add nothing to any loss (every term is masked by ``acting`` / ``vmask``), so
    dropping them leaves the losses unchanged and saves their forward and backward passes."""
    keep = batch.vmask.flatten(1).any(-1)  # per row [B], or per chunk [K] (recurrent)
    for a in batch.acting.values():
        keep = keep | a.flatten(1).any(-1)
    return batch if bool(keep.all()) else batch.index(keep.nonzero().squeeze(-1))


class GroupMean(list):
    """Terms ``(value, n)`` of a stat averaged over ``n`` groups, kept as (detached) tensors until :func:`resolve`
    reads every stat of an update back from the device at once; its value is ``sum(float(value) / n)``."""


def _optional(gb) -> tuple[str, ...]:
    """The optional carry fields a group's rollout has: its action mask, its recurrent actor state."""
    return (("mask",) if gb.mask is not None else ()) + (("h",) if gb.h is not None else ())


def _accumulate(into: dict, new: dict[str, torch.Tensor], n: int) -> None:
    """Average stats over ``n`` groups into ``into`` (as :class:`GroupMean` terms; no host sync)."""
    for k, v in new.items():
        into.setdefault(k, GroupMean()).append((v.detach() if torch.is_tensor(v) else v, n))


def resolve(items: list[dict]) -> list[dict[str, float]]:
    """Stats dicts whose values are floats, 0-d tensors or :class:`GroupMean` terms -> floats, reading every tensor
    back from the device in one transfer (not one per minibatch and stat)."""
    leaves = [x for d in items for v in d.values() for x in ((t for t, _ in v) if isinstance(v, GroupMean) else (v,))
              if torch.is_tensor(x)]
    host = iter(torch.stack([t.reshape(()).double() for t in leaves]).tolist() if leaves else [])

    def val(x) -> float:
        return next(host) if torch.is_tensor(x) else float(x)

    out = []
    for d in items:
        row = {}
        for k, v in d.items():
            if isinstance(v, GroupMean):
                total = 0.0
                for x, n in v:
                    total = total + val(x) / n
                row[k] = total
            else:
                row[k] = val(v)
        out.append(row)
    return out


def mean_stats(items: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each stat of ``items[0]`` over the items that have it (a NaN stays NaN, so the run stops on it)."""
    out: dict[str, float] = {}
    for k in items[0] if items else []:
        vals = [d[k] for d in items if k in d]
        out[k] = sum(vals) / len(vals)
    return out
