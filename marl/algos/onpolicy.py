"""The on-policy template (REINFORCE, A2C, PPO, IPPO, MAPPO, HAPPO): collect -> values -> advantages -> update.

Subclasses set three class flags and may override :meth:`update` (default: one gradient step) and :meth:`pg_loss`:
``central_critic`` (value of the global state instead of each agent's observation), ``separate_actors`` (one
module and optimizer per agent, HAPPO), ``uses_critic`` (REINFORCE without a baseline learns no value).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from marl.adapters.base import VecMultiEnv
from marl.algos.base import Learner
from marl.core import losses
from marl.core.normalization import RewardScaler, RunningMeanStd
from marl.core.returns import gae
from marl.core.symmetry import Mirror
from marl.errors import ConfigError
from marl.multi.critics import Critic
from marl.multi.manager import AgentManager, flat_dim
from marl.rollout import Rollout, allocate, store_outcome, store_step, to_env_actions


@dataclass
class PGBatch:
    """A flattened rollout ``[B = T * E, ...]`` (per-group dicts keyed by group name; ``U`` = value units)."""

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

    def index(self, idx: torch.Tensor) -> PGBatch:
        def sel(x):
            if x is None:
                return None
            if isinstance(x, dict):
                return {k: (v[idx] if v is not None else None) for k, v in x.items()}
            return x[idx]

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
        team_mode = getattr(a, "team_reward", "none")
        if team_mode == "auto":
            team_mode = "none" if spec.turn_based else "sum"
        self.team_reduce = team_mode
        self.critic = Critic(spec, a, self.manager, self.central_critic, team=team_mode != "none").to(self.device)
        self.actor_opts = self._actor_optimizers()
        self.critic_opt = self._adam(self.critic.parameters())
        self.obs_rms = {g.name: RunningMeanStd((flat_dim(g),)) for g in spec.groups} if a.normalize_obs else None
        self.state_rms = RunningMeanStd(tuple(spec.state_shape)) if a.normalize_obs and self.central_critic else None
        self.reward_scalers = {g.name: RewardScaler(a.gamma) for g in spec.groups} if a.normalize_reward else None
        self.value_norm = RunningMeanStd(()) if getattr(a, "value_norm", False) and self.uses_critic else None
        self.buf = allocate(spec, self.T, self.E, self.device)
        self.opponents = None  # an object with override(last, actions, buf, t) -> actions (see marl/selfplay.py)
        if getattr(a, "symmetric", False):  # mirror-equivariant actor and (local) critic
            for g, m in self._mirrors().items():
                self.manager.policies[g].mirror = m

    # ---------------------------------------------------------------- set-up
    def _mirrors(self) -> dict[str, Mirror]:
        """One :class:`Mirror` per group from ``env.symmetry`` (algo.symmetric); ConfigError where it cannot apply."""
        name = self.cfg.algo.name
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
        return torch.optim.Adam(params, lr=self.algo.lr, eps=self.algo.adam_eps)

    def _actor_optimizers(self) -> list[torch.optim.Adam]:
        if not self.separate_actors:
            return [self._adam(self.manager.parameters())]
        return [self._adam(self.manager.policies[g].agent_parameters(k)) for g, k in self.manager.agent_units()]

    def modules(self) -> dict[str, nn.Module | torch.optim.Optimizer]:
        mods: dict[str, nn.Module | torch.optim.Optimizer] = {"manager": self.manager, "critic": self.critic}
        mods |= {f"actor_opt{i}": o for i, o in enumerate(self.actor_opts)}
        mods["critic_opt"] = self.critic_opt
        return mods

    def extra_state(self) -> dict:
        st: dict = {}
        if self.obs_rms:
            st["obs_rms"] = {k: v.state_dict() for k, v in self.obs_rms.items()}
        if self.state_rms:
            st["state_rms"] = self.state_rms.state_dict()
        if self.reward_scalers:
            st["reward_scalers"] = {k: v.state_dict() for k, v in self.reward_scalers.items()}
        if self.value_norm:
            st["value_norm"] = self.value_norm.state_dict()
        return st

    def load_extra_state(self, state: dict) -> None:
        for k, v in state.get("obs_rms", {}).items():
            self.obs_rms[k].load_state_dict(v)
        if "state_rms" in state:
            self.state_rms.load_state_dict(state["state_rms"])
        for k, v in state.get("reward_scalers", {}).items():
            self.reward_scalers[k].load_state_dict(v)
        if "value_norm" in state:
            self.value_norm.load_state_dict(state["value_norm"])

    # ---------------------------------------------------------------- acting
    def obs_tensors(self, raw: dict[str, np.ndarray], alive: dict[str, np.ndarray] | None = None) -> dict:
        """Env obs ``{g: [E, N, *obs]}`` -> normalized flat ``{g: [E, N, D]}``; updates stats when ``alive`` given."""
        out = {}
        for g in self.spec.groups:
            x = torch.as_tensor(raw[g.name], dtype=torch.float32).reshape(*raw[g.name].shape[:2], -1)
            if self.obs_rms is not None:
                rms = self.obs_rms[g.name]
                if alive is not None:
                    rms.update(x[torch.from_numpy(alive[g.name])])
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
        return {k: (torch.as_tensor(v, device=self.device) if v is not None else None) for k, v in raw.items()}

    def act(self, obs, action_mask, deterministic: bool):
        """Actions for raw env obs ``{g: [E, N, *obs]}`` (normalization applied, stats untouched)."""
        actions, _ = self.manager.act(self.obs_tensors(obs), self.masks(action_mask), deterministic)
        return actions

    def collect(self) -> Rollout:
        buf, last = self.buf, self.last
        obs, state = self.obs_tensors(last.obs, last.alive), self.state_tensor(last.state, True)
        for t in range(self.T):
            masks = self.masks(last.action_mask)
            actions, logps = self.manager.act(obs, masks)
            store_step(buf, t, last, obs, state, masks, actions, logps)
            if self.opponents is not None:  # seats played by frozen / scripted opponents: act for them, never train
                actions = self.opponents.override(last, actions, buf, t)
            out = self.env.step(to_env_actions(actions, self.spec))
            rewards = {k: torch.as_tensor(v, device=self.device) for k, v in out.reward.items()}
            if self.reward_scalers is not None:
                done = torch.from_numpy(out.done)
                rewards = {k: self.reward_scalers[k](r, done) for k, r in rewards.items()}
            if store_outcome(buf, t, out, rewards):
                final = self.obs_tensors(out.final_obs)
                for k, gb in buf.groups.items():
                    gb.final_obs[t] = final[k]
                buf.final_state[t] = self.state_tensor(out.final_state, False)
            self.episodes.extend(out.episodes)
            obs, state, last = self.obs_tensors(out.obs, out.alive), self.state_tensor(out.state, True), out
        for k, gb in buf.groups.items():
            gb.obs[self.T] = obs[k]
        buf.state[self.T] = state
        self.last = last
        self.env_steps += self.T * self.E
        return buf

    # ---------------------------------------------------------------- advantages
    def values(self, obs: dict[str, torch.Tensor], state: torch.Tensor) -> torch.Tensor:
        """Critic output ``[..., U]`` (normalized scale when value_norm is on)."""
        return self.critic(obs, state)

    @torch.no_grad()
    def advantages(self, buf: Rollout) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-group advantages ``[T, E, N_g]``, value targets and old values ``[T, E, U]`` (critic scale), and the
        value-loss mask ``[T, E, U]``."""
        c, T = self.critic, buf.T
        g = buf.groups
        if self.uses_critic:
            v_all = self.values({k: gb.obs for k, gb in g.items()}, buf.state)  # [T+1, E, U]
            # [T, E, U]: V(final observation), only read where a copy's episode ended or an agent was truncated on its
            # own (its state: the final state at an episode end, else the state the others go on from)
            v_fin = torch.zeros_like(v_all[:-1])
            d = buf.done | torch.stack([gb.left.any(-1) for gb in g.values()]).any(0)
            if bool(d.any()):
                fin_state = torch.where(buf.done.unsqueeze(-1), buf.final_state, buf.state[1:])
                v_fin[d] = self.values({k: gb.final_obs[d] for k, gb in g.items()}, fin_state[d])
        else:
            v_all = torch.zeros(T + 1, self.E, c.units, device=self.device)
            v_fin = torch.zeros(T, self.E, c.units, device=self.device)
        v_old = v_all[:-1]
        if self.value_norm is not None:
            v_all, v_fin = self.value_norm.denormalize(v_all), self.value_norm.denormalize(v_fin)
        done_env = buf.done.unsqueeze(-1)
        reward = c.from_groups({k: gb.reward for k, gb in g.items()}, self.team_reduce)
        acting = c.from_groups({k: gb.acting for k, gb in g.items()}, "any")
        if c.team:
            terminated = (buf.done & ~buf.truncated).unsqueeze(-1)
            done = done_env
            next_v = torch.where(done_env, v_fin, v_all[1:])
        else:  # per agent: its own termination, and a truncation on its own, end its trajectory
            terminated = c.from_groups({k: gb.terminated for k, gb in g.items()})
            left = c.from_groups({k: gb.left for k, gb in g.items()})
            done = done_env | terminated | left
            next_v = torch.where(done_env | left, v_fin, v_all[1:])
        adv = self.estimate(reward, v_all[:-1], next_v, terminated, done, acting)
        target = adv + v_all[:-1]
        if self.value_norm is not None:
            self.value_norm.update(target[acting])
            target = self.value_norm.normalize(target, clip=None)
        return c.to_groups(adv), target, v_old, acting

    def estimate(self, reward, value, next_value, terminated, done, acting) -> torch.Tensor:
        """Advantages ``[T, E, U]`` from the unit tensors (denormalized values); GAE here, A2C may use n-step."""
        return gae(reward, value, next_value, terminated, done, self.algo.gamma, self.algo.gae_lambda, acting)

    def make_batch(self, buf: Rollout) -> PGBatch:
        adv, target, v_old, vmask = self.advantages(buf)
        B = self.T * self.E

        def flat(x: torch.Tensor) -> torch.Tensor:
            return x[: self.T].reshape(B, *x.shape[2:])

        if self.algo.norm_adv:
            for k, gb in buf.groups.items():
                m = gb.acting
                if m.sum() > 1:
                    sel = adv[k][m]
                    adv[k] = torch.where(m, (adv[k] - sel.mean()) / (sel.std() + 1e-8), torch.zeros_like(adv[k]))
        gs = buf.groups
        batch = PGBatch(
            obs={k: flat(gb.obs) for k, gb in gs.items()},
            mask={k: (flat(gb.mask) if gb.mask is not None else None) for k, gb in gs.items()},
            action={k: flat(gb.action) for k, gb in gs.items()},
            logp_old={k: flat(gb.logp) for k, gb in gs.items()},
            acting={k: flat(gb.acting) for k, gb in gs.items()},
            adv={k: flat(v) for k, v in adv.items()},
            state=flat(buf.state),
            target=flat(target),
            value_old=flat(v_old),
            vmask=flat(vmask),
        )
        return drop_idle(batch)

    # ---------------------------------------------------------------- losses shared by the updates
    def pg_loss(self, logp, logp_old, adv, mask, weight=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Policy-gradient loss of one group; REINFORCE/A2C use this one, PPO overrides it."""
        return losses.reinforce_loss(logp, adv if weight is None else adv * weight, mask), {}

    def actor_loss(self, mb: PGBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """Sum over groups of (policy loss - ent_coef * entropy), each averaged over its acting entries."""
        total, stats = 0.0, {}
        for k in mb.obs:
            acting, pol = mb.acting[k], self.manager.policies[k]
            if pol.dense and bool(acting.any()) and not bool(acting.all()):  # acting entries only (same loss)
                b, n = acting.nonzero().unbind(-1)
                d = pol.entries(mb.obs[k], mb.mask[k], b, n)
                logp = d.log_prob(mb.action[k][b, n].unsqueeze(1))
                pg, st = self.pg_loss(logp, mb.logp_old[k][b, n].unsqueeze(1), mb.adv[k][b, n].unsqueeze(1), None)
                ent = losses.entropy_bonus(d.entropy())
            else:
                d = self.manager.dist(k, mb.obs[k], mb.mask[k])
                logp = d.log_prob(mb.action[k])
                pg, st = self.pg_loss(logp, mb.logp_old[k], mb.adv[k], acting)
                ent = losses.entropy_bonus(d.entropy(), acting)
            total = total + pg - self.algo.ent_coef * ent
            _accumulate(stats, {"policy_loss": pg, "entropy": ent, **st}, len(mb.obs))
        return total, stats

    def critic_loss(self, mb: PGBatch) -> torch.Tensor:
        if not self.uses_critic:
            return torch.zeros((), device=self.device)
        c = self.critic
        if c.sparse_ok and not bool(mb.vmask.all()):  # only the entries that enter the loss (same loss)
            v, off = torch.zeros_like(mb.target), 0
            for g in self.spec.groups:
                b, n = mb.vmask[:, off : off + g.n_agents].nonzero().unbind(-1)
                v = v.index_put((b, n + off), c.local_entries(g.name, mb.obs[g.name], b, n))
                off += g.n_agents
        else:
            v = self.values(mb.obs, mb.state)
        clip = self.algo.vclip_coef if getattr(self.algo, "clip_vloss", False) else None
        return losses.value_loss(v, mb.target, mb.value_old, clip, mb.vmask)

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

    def all_params(self) -> tuple[list[torch.optim.Optimizer], list[list[nn.Parameter]]]:
        """The optimizers and parameter sets stepped together by a joint update (actors + critic)."""
        opts = list(self.actor_opts) + ([self.critic_opt] if self.uses_critic else [])
        return opts, [[p for g in o.param_groups for p in g["params"]] for o in opts]

    def set_lr(self) -> float:
        lr = self.algo.lr
        if self.algo.anneal_lr:
            lr = lr * max(0.0, 1.0 - self.env_steps / float(self.cfg.total_steps))
        for o in [*self.actor_opts, self.critic_opt]:
            for g in o.param_groups:
                g["lr"] = lr
        return lr

    # ---------------------------------------------------------------- the template
    def update(self, batch: PGBatch) -> dict[str, float]:
        """One gradient step on the whole rollout (REINFORCE, A2C); PPO and HAPPO override this."""
        actor, stats = self.actor_loss(batch)
        vloss = self.critic_loss(batch)
        opts, params = self.all_params()
        self.step(opts, actor + self.algo.vf_coef * vloss, params)
        return {**stats, "value_loss": vloss.item()}

    def iteration(self) -> dict[str, float]:
        lr = self.set_lr()
        buf = self.collect()
        batch = self.make_batch(buf)
        metrics = self.update(batch)
        self.iterations += 1
        if self.uses_critic:
            with torch.no_grad():
                v = self.values(batch.obs, batch.state)
            metrics["explained_variance"] = losses.explained_variance(v, batch.target, batch.vmask)
        metrics["learning_rate"] = lr
        return {
            (f"losses/{k}" if k != "learning_rate" else "charts/learning_rate"): float(v) for k, v in metrics.items()
        }


def drop_idle(batch: PGBatch) -> PGBatch:
    """The rows ``[B]`` where some trained agent acted: in turn-based games with pool opponents, the opponents'
    moves (no trained agent to move) add nothing to any loss (every term is masked by ``acting`` / ``vmask``), so
    dropping them leaves the losses unchanged and saves their forward and backward passes."""
    keep = batch.vmask.any(-1)
    for a in batch.acting.values():
        keep = keep | a.any(-1)
    return batch if bool(keep.all()) else batch.index(keep.nonzero().squeeze(-1))


def _accumulate(into: dict[str, float], new: dict[str, torch.Tensor], n: int) -> None:
    """Average stats over ``n`` groups into ``into``."""
    for k, v in new.items():
        into[k] = into.get(k, 0.0) + float(v.detach() if torch.is_tensor(v) else v) / n


def mean_stats(items: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each stat of ``items[0]`` over the items that have it (a NaN stays NaN, so the run stops on it)."""
    out: dict[str, float] = {}
    for k in items[0] if items else []:
        vals = [d[k] for d in items if k in d]
        out[k] = sum(vals) / len(vals)
    return out
