"""MADDPG (Lowe et al. 2017) and MATD3 (Ackermann et al. 2019) on the DDPG core (marl/algos/ddpg.py).

Actors are decentralized: each agent acts on its own observation, with the groups' parameter sharing of DDPG
(``shared`` / ``per_agent`` / ``by_prefix``). The critic is centralized: ``Q_u(s, a_1, ..., a_N)`` on the global
state ``s`` (``env.state()``, else all observations) and every agent's action, one value unit ``u`` per **team**
(``env.teams``, as MAPPO's :class:`marl.multi.critics.ValueUnits`; a unit one-hot is appended when there are
several) on the team's reward, so competing teams never share an objective; ``team_reward: none`` gives every agent
its own unit on its own reward (the paper's per-agent critics).

Replay holds joint transitions: one row per env copy and step, with every agent's observation, action (``[-1, 1]``
for Box, one-hot for Discrete; zero for agents not acting) and flags. TD target of unit ``u``:
``r_u + gamma (1 - terminated_u) Q'_u(s', mu'_1(o'_1), ..., mu'_N(o'_N))``, where ``s'`` / ``o'`` are the final
state / observations where the episode ended (or the agent left on its own, DDPG's rule), so truncation bootstraps;
a unit is terminated when none of its members that were alive goes on (alive and not terminated), and the target
actions of agents that do not go on are zero. Agent ``i``'s actor loss is ``-Q_{u(i)}(s, a_1, ..., mu_i(o_i), ...,
a_N)`` with the other agents' actions from the replay, so its gradient flows through its own action only.
Discrete actions: a straight-through Gumbel-softmax sample (the paper's relaxation) in the actor loss and the target,
a sample of ``softmax(logits)`` when exploring, the most likely action when deterministic. Box actions: ``mu(s)`` plus
exploration noise, as DDPG. MATD3 adds twin critics (min in the target), target-policy smoothing (Box) and
``policy_delay``.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from marl.adapters.base import StepOut, VecMultiEnv
from marl.algos.ddpg import DDPG, _Group
from marl.core.buffers import ReplayBuffer
from marl.core.distributions import gumbel_softmax_st
from marl.core.losses import clipped_double_q, masked_mean, q_loss, q_target
from marl.core.networks import MLP, QCritic, adam, polyak_update
from marl.core.noise import smoothed_target_action
from marl.multi.critics import ValueUnits


class MADDPG(DDPG):
    """Decentralized actors, a centralized critic per team (see the module docstring)."""

    discrete_ok = True
    smoothing = False  # TD3's target-policy smoothing of Box target actions (MATD3)

    def __init__(self, cfg: DictConfig, env: VecMultiEnv, device: str):
        super().__init__(cfg, env, device)
        a, spec = self.algo, self.spec
        self.units = ValueUnits(spec, per_team=a.team_reward != "none")
        self.unit_of = self.units.unit_of.to(self.device)  # [N]
        self.reward_how = "sum" if a.team_reward == "none" else str(a.team_reward)
        self.temperature = float(a.gumbel_temperature)
        # joint action layout: the groups' agents side by side, each agent a block of its action width
        widths = [gs.act_dim for gs in self.groups.values() for _ in range(gs.spec.n_agents)]
        self.joint_dim = sum(widths)
        owner = torch.repeat_interleave(torch.arange(len(widths)), torch.tensor(widths))
        self.slot = (owner.unsqueeze(0) == torch.arange(len(widths)).unsqueeze(1)).float().to(self.device)  # [N, J]
        s_dim, u = int(spec.state_shape[0]), self.units.U
        self.unit_id = u > 1
        in_dim = s_dim + self.joint_dim + (u if self.unit_id else 0)
        self.critic = QCritic(in_dim, 0, list(a.hidden), 1, a.activation, self.n_critics).to(self.device)
        self.critic_target = QCritic(in_dim, 0, list(a.hidden), 1, a.activation, self.n_critics).to(self.device)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        self.critic_optim = adam(self.critic.parameters(), a.critic_lr, a.adam_eps)
        self.eye = torch.eye(u, device=self.device)
        shapes: dict[str, tuple[int, ...]] = {"state": (s_dim,), "next_state": (s_dim,), "reward": (u,),
                                              "terminated": (u,)}
        for name, gs in self.groups.items():
            n = gs.spec.n_agents
            shapes.update({f"{name}/obs": (n, gs.obs_dim), f"{name}/next_obs": (n, gs.obs_dim),
                           f"{name}/action": (n, gs.act_dim), f"{name}/acting": (n,), f"{name}/goes_on": (n,)})
        self.replay = ReplayBuffer(a.buffer_size, shapes, str(self.device))

    # ------------------------------------------------------------------ construction hooks
    def _make_actor(self, gs: _Group, in_dim: int) -> torch.nn.Module:
        if gs.discrete:
            return MLP(in_dim, list(self.algo.hidden), gs.act_dim, gs.members, self.algo.activation, out_gain=0.01)
        return super()._make_actor(gs, in_dim)

    def _make_critic(self, gs: _Group, in_dim: int) -> None:
        return None  # one joint critic (self.critic)

    def _buffer_shapes(self, gs: _Group) -> None:
        return None  # one joint replay (self.replay)

    # ------------------------------------------------------------------ acting
    def _act_one(self, gs: _Group, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        if not gs.discrete:
            return super()._act_one(gs, obs, deterministic)
        logits = gs.actor(self._obs_features(gs, obs))
        return logits.argmax(-1) if deterministic else gumbel_softmax_st(logits, self.gen).argmax(-1)

    def _explore_action(self, gs: _Group, obs: torch.Tensor) -> torch.Tensor:
        if gs.discrete:
            return self._act_one(gs, obs, deterministic=False)
        return super()._explore_action(gs, obs)

    def _critic_action(self, gs: _Group, action: torch.Tensor) -> torch.Tensor:
        """Env actions -> the critic's form ``[..., N, d]``: ``[-1, 1]`` (Box) or one-hot (Discrete)."""
        if gs.discrete:
            return torch.nn.functional.one_hot(action.long(), gs.act_dim).float()
        return self._unit(gs, action)

    # ------------------------------------------------------------------ replay
    def _store_step(self, last: StepOut, actions: dict[str, torch.Tensor], out: StepOut) -> None:
        """One joint row per env copy: state, every agent's observation / action / flags, the units' rewards and
        terminations (see the module docstring)."""
        e = self.spec.num_envs
        done = torch.as_tensor(out.done, device=self.device).reshape(e, 1)
        row = {"state": self.to_tensor(last.state).reshape(e, -1),
               "next_state": torch.where(done, self.to_tensor(out.final_state).reshape(e, -1),
                                         self.to_tensor(out.state).reshape(e, -1))}
        goes_on = {}
        for name, gs in self.groups.items():
            n = gs.spec.n_agents
            acting = torch.as_tensor(last.alive[name] & last.acting[name], device=self.device)
            next_obs, term = self._next_obs(name, last, out)
            goes_on[name] = torch.as_tensor(last.alive[name], device=self.device) & ~term
            row[f"{name}/obs"] = self.to_tensor(last.obs[name]).reshape(e, n, -1)
            row[f"{name}/next_obs"] = next_obs
            row[f"{name}/action"] = self._critic_action(gs, actions[name]) * acting.unsqueeze(-1)
            row[f"{name}/acting"] = acting.float()
            row[f"{name}/goes_on"] = goes_on[name].float()
        reward = {name: self.to_tensor(out.reward[name]) for name in self.groups}
        row["reward"] = self.units.reduce(reward, self.reward_how)
        row["terminated"] = (~self.units.reduce(goes_on, "any")).float()
        self.replay.add(**row)

    def _ready(self) -> bool:
        return len(self.replay) > 0

    def replay_buffers(self) -> list[ReplayBuffer]:
        return [self.replay]

    # ------------------------------------------------------------------ learning
    def _critic_in(self, state: torch.Tensor, joint: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
        """Critic inputs ``[B, R, in]`` for ``R`` rows: state ``[B, S]``, joint actions ``[B, R, J]`` and the unit
        of each row ``[R]`` (its one-hot appended when there are several units)."""
        b, r = joint.shape[:2]
        parts = [state.unsqueeze(1).expand(b, r, state.shape[-1]), joint]
        if self.unit_id:
            parts.append(self.eye[units].expand(b, r, self.units.U))
        return torch.cat(parts, dim=-1)

    def _policy_actions(self, batch: dict[str, torch.Tensor], key: str, target: bool) -> torch.Tensor:
        """Every agent's critic-form action ``[B, J]`` from its actor (or target actor) at ``batch[group/key]``:
        ``[-1, 1]`` for Box (smoothed for a MATD3 target), a straight-through Gumbel-softmax one-hot for Discrete."""
        parts = []
        for name, gs in self.groups.items():
            x = self._obs_features(gs, batch[f"{name}/{key}"])
            out = (gs.actor_target if target else gs.actor)(x)
            if gs.discrete:
                a = gumbel_softmax_st(out, self.gen, self.temperature)
            else:
                a = self._unit(gs, out)
                if target and self.smoothing:
                    a = smoothed_target_action(a, self.target_noise, self.target_noise_clip, self.gen)
            if target:
                a = a * batch[f"{name}/goes_on"].unsqueeze(-1)
            parts.append(a.flatten(1))
        return torch.cat(parts, dim=-1)

    def td_target_joint(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``[B, U]`` TD targets of the units (module docstring; MATD3: min over the twin critics)."""
        with torch.no_grad():
            joint2 = self._policy_actions(batch, "next_obs", target=True).unsqueeze(1)  # [B, 1, J]
            u = torch.arange(self.units.U, device=self.device)
            x2 = self._critic_in(batch["next_state"], joint2.expand(-1, self.units.U, -1), u)
            next_q = clipped_double_q(self.critic_target(x2))
            return q_target(batch["reward"], next_q, batch["terminated"], self.gamma)

    def _stored_joint(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([batch[f"{name}/action"].flatten(1) for name in self.groups], dim=-1)

    def actor_loss_joint(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Sum over groups of (members x) the mean over acting agents of ``-Q_{u(i)}`` with agent ``i``'s own
        action replaced by its actor's (all ``N`` agents in one critic call of ``N`` rows)."""
        old = self._stored_joint(batch).unsqueeze(1)  # [B, 1, J]
        new = self._policy_actions(batch, "obs", target=False).unsqueeze(1)  # [B, 1, J]
        joint = old * (1.0 - self.slot) + new * self.slot  # [B, N, J]: row i = replay actions, agent i's own new
        q = self.critic(self._critic_in(batch["state"], joint, self.unit_of), first=True)[..., 0]  # [B, N]
        loss, start = q.new_zeros(()), 0
        for name, gs in self.groups.items():
            n = gs.spec.n_agents
            loss = loss + gs.members * masked_mean(-q[:, start:start + n], batch[f"{name}/acting"])
            start += n
        return loss

    def _update_all(self, actor_step: bool) -> dict[str, torch.Tensor]:
        """One step of the joint critic and, when ``actor_step``, of every actor, then Polyak averaging."""
        batch = self.replay.sample(self.batch_size, self.gen)
        y = self.td_target_joint(batch)
        u = torch.arange(self.units.U, device=self.device)
        joint = self._stored_joint(batch).unsqueeze(1).expand(-1, self.units.U, -1)
        q = self.critic(self._critic_in(batch["state"], joint, u))  # [B, U, K]
        qf_loss = q_loss(q, y)
        self._step(qf_loss, self.critic_optim, self.critic)
        metrics = {"losses/qf_loss": qf_loss.detach(), "losses/qf_values": q.detach().mean()}
        if actor_step:
            self.critic.requires_grad_(False)
            loss = self.actor_loss_joint(batch)
            for gs in self.groups.values():
                gs.actor_optim.zero_grad(set_to_none=True)
            loss.backward()
            self.critic.requires_grad_(True)
            for gs in self.groups.values():
                self._clip(gs.actor)
                gs.actor_optim.step()
                polyak_update(gs.actor_target, gs.actor, self.tau)
            polyak_update(self.critic_target, self.critic, self.tau)
            metrics["losses/actor_loss"] = loss.detach()
        return metrics

    # ------------------------------------------------------------------ state
    def modules(self) -> dict[str, torch.nn.Module | torch.optim.Optimizer]:
        out = super().modules()
        out.update({"critic": self.critic, "critic_target": self.critic_target, "critic_optim": self.critic_optim})
        return out

    def extra_state(self) -> dict:
        """DDPG's (noise, observation statistics, update counter) plus the joint replay."""
        return {**super().extra_state(), "replay": self.replay.state_dict()}

    def load_extra_state(self, state: dict) -> None:
        super().load_extra_state(state)
        self.replay.load_state_dict(state["replay"])


class MATD3(MADDPG):
    """MADDPG with TD3's twin critics, target-policy smoothing and delayed actor updates."""

    n_critics = 2
    smoothing = True
