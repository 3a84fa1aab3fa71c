"""DDPG (Lillicrap et al. 2016): a deterministic actor ``mu(s)`` trained through a Q critic, off-policy from replay.

Per agent group: actor ``mu(s)`` (tanh-scaled into the Box bounds), critic ``Q(s, a)``, slow target copies of both
(Polyak averaging with ``tau``), Adam optimizers and replay. A multi-agent group runs independent DDPG per agent:
``sharing=per_agent`` gives every agent its own weights (the networks' member axis, still one batched call) and its
own replay buffer; otherwise one network and one buffer serve the whole group (with an agent-id one-hot when the
group has several agents and ``agent_id`` is on). Only transitions of agents that were alive and acting are stored.

One env step: uniform random actions for the first ``learning_starts`` env steps, then ``mu(s)`` plus exploration
noise (Gaussian or Ornstein-Uhlenbeck, ``noise_std`` times the half-range), clipped to the bounds. The TD target is
``r + gamma (1 - terminated) Q'(s', mu'(s'))`` where ``s'`` is the final observation of an episode that ended this
step, or of an agent that left while the episode goes on, so a time-limit truncation (of the episode or of one
agent on its own) bootstraps and a termination does not. The critic sees actions rescaled to
``[-1, 1]``; the replay buffer stores them that way.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from omegaconf import DictConfig

from marl.adapters.base import GroupSpec, StepOut, VecMultiEnv
from marl.algos.base import Learner
from marl.core.buffers import ReplayBuffer
from marl.core.losses import dpg_actor_loss, q_loss, q_target
from marl.core.networks import DeterministicActor, QCritic, polyak_update
from marl.core.noise import GaussianNoise, OUNoise, make_noise
from marl.core.normalization import RunningMeanStd
from marl.errors import ConfigError
from marl.rollout import to_env_actions


@dataclass
class _Group:
    """Everything DDPG keeps for one agent group (``M`` = members: ``N`` with per-agent weights, else 1)."""

    spec: GroupSpec
    members: int
    obs_dim: int
    act_dim: int
    id_dim: int  # agent-id one-hot size appended to the input (0: none)
    actor: DeterministicActor
    critic: QCritic
    actor_target: DeterministicActor
    critic_target: QCritic
    actor_optim: torch.optim.Adam
    critic_optim: torch.optim.Adam
    buffers: list[ReplayBuffer]  # one per member
    noise: GaussianNoise | OUNoise  # state [E, N, D]
    obs_rms: RunningMeanStd | None
    low: torch.Tensor  # [D]
    high: torch.Tensor  # [D]


class DDPG(Learner):
    """Deep deterministic policy gradient for Box action spaces (see the module docstring)."""

    def __init__(self, cfg: DictConfig, env: VecMultiEnv, device: str):
        super().__init__(cfg, env, device)
        self.updates = 0  # critic updates so far (drives policy_delay)
        self.groups = {g.name: self._build_group(g) for g in self.spec.groups}

    # ------------------------------------------------------------------ construction
    def _build_group(self, g: GroupSpec) -> _Group:
        a = self.algo
        space = g.action_space
        if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
            raise ConfigError(
                f"algo=ddpg needs finite action bounds, but group '{g.name}' has low={space.low}, high={space.high}",
                "wrap the env to rescale actions into finite bounds (e.g. gymnasium's RescaleAction), or use algo=ppo",
            )
        n = g.n_agents
        members = n if a.sharing == "per_agent" else 1
        id_dim = n if (members == 1 and n > 1 and a.agent_id) else 0
        obs_dim = int(math.prod(g.obs_space.shape))
        act_dim = int(math.prod(space.shape))
        in_dim = obs_dim + id_dim
        hidden = list(a.hidden)
        actor = DeterministicActor(in_dim, space, hidden, members, a.activation).to(self.device)
        critic = QCritic(in_dim, act_dim, hidden, members, a.activation).to(self.device)
        shapes = {
            "obs": (obs_dim,),
            "action": (act_dim,),
            "reward": (),
            "next_obs": (obs_dim,),
            "terminated": (),
            "agent": (),
        }
        return _Group(
            spec=g,
            members=members,
            obs_dim=obs_dim,
            act_dim=act_dim,
            id_dim=id_dim,
            actor=actor,
            critic=critic,
            actor_target=copy.deepcopy(actor).requires_grad_(False),
            critic_target=copy.deepcopy(critic).requires_grad_(False),
            actor_optim=torch.optim.Adam(actor.parameters(), lr=a.actor_lr, eps=a.adam_eps),
            critic_optim=torch.optim.Adam(critic.parameters(), lr=a.critic_lr, eps=a.adam_eps),
            buffers=[ReplayBuffer(a.buffer_size, shapes, str(self.device)) for _ in range(members)],
            noise=make_noise(a.noise, (self.spec.num_envs, n, act_dim), a.noise_std, a.ou_theta, self.gen),
            obs_rms=RunningMeanStd((obs_dim,)) if a.normalize_obs else None,
            low=torch.as_tensor(space.low, dtype=torch.float32, device=self.device).reshape(-1),
            high=torch.as_tensor(space.high, dtype=torch.float32, device=self.device).reshape(-1),
        )

    # ------------------------------------------------------------------ helpers
    def _features(self, gs: _Group, obs: torch.Tensor, agent: torch.Tensor) -> torch.Tensor:
        """Network input ``[..., M', obs_dim + id_dim]`` from flat observations ``[..., M', obs_dim]`` and agent
        indices ``[..., M']`` (normalized when ``normalize_obs``; agent-id one-hot appended for a shared net)."""
        x = gs.obs_rms.normalize(obs) if gs.obs_rms is not None else obs
        if gs.id_dim:
            x = torch.cat([x, torch.nn.functional.one_hot(agent.long(), gs.id_dim).to(x.dtype)], dim=-1)
        return x

    def _unit(self, gs: _Group, action: torch.Tensor) -> torch.Tensor:
        """Env-unit actions ``[..., D]`` -> ``[-1, 1]`` (the critic's input scale)."""
        return (action - (gs.high + gs.low) / 2) / ((gs.high - gs.low) / 2)

    def _mu(self, gs: _Group, obs: torch.Tensor) -> torch.Tensor:
        """Deterministic actions ``[E, N, D]`` for flat observations ``[E, N, obs_dim]``."""
        agent = torch.arange(gs.spec.n_agents, device=obs.device).expand(obs.shape[:-1])
        return gs.actor(self._features(gs, obs, agent))

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def act(
        self,
        obs: dict[str, torch.Tensor | np.ndarray],
        action_mask: dict[str, torch.Tensor | np.ndarray | None],
        deterministic: bool,
    ) -> dict[str, torch.Tensor]:
        """Actions ``[E, N_g, *action_shape]`` for raw observations ``[E, N_g, *obs]`` (tensors or numpy arrays, as
        a StepOut holds them) per group: ``mu(s)``, or ``mu(s)`` plus fresh Gaussian noise
        (``noise_std`` times the half-range, from ``self.gen``) clipped to the bounds when not ``deterministic``.
        ``action_mask`` is ignored (Box actions have none)."""
        out = {}
        for name, gs in self.groups.items():
            o = torch.as_tensor(obs[name], dtype=torch.float32, device=self.device)
            e, n = o.shape[:2]
            a = self._mu(gs, o.reshape(e, n, gs.obs_dim))
            if not deterministic:
                half = (gs.high - gs.low) / 2
                eps = torch.randn(a.shape, generator=self.gen).to(self.device)
                a = torch.clamp(a + self.algo.noise_std * half * eps, gs.low, gs.high)
            out[name] = a.reshape(e, n, *gs.spec.action_space.shape)
        return out

    @torch.no_grad()
    def _explore(self, name: str, gs: _Group, last: StepOut) -> torch.Tensor:
        """Exploration actions ``[E, N, D]`` in env units: uniform during warm-up, then noisy ``mu(s)``."""
        obs = self.to_tensor(last.obs[name]).reshape(self.spec.num_envs, gs.spec.n_agents, gs.obs_dim)
        if gs.obs_rms is not None:
            gs.obs_rms.update(obs[torch.as_tensor(last.alive[name], device=self.device)])
        if self.env_steps < self.algo.learning_starts:
            u = torch.rand(obs.shape[:-1] + (gs.act_dim,), generator=self.gen).to(self.device)
            return gs.low + (gs.high - gs.low) * u
        half = (gs.high - gs.low) / 2
        return torch.clamp(self._mu(gs, obs) + half * gs.noise.sample().to(self.device), gs.low, gs.high)

    def _store(self, name: str, gs: _Group, last: StepOut, action: torch.Tensor, out: StepOut) -> None:
        """Add the transitions ``last -> out`` of agents that were alive and acting to the group's replay. The next
        observation ``[E, N, D]`` is the final one where the episode ended or the agent left (alive before, not
        after, not terminated, episode going on); else the new observation."""
        e, n = self.spec.num_envs, gs.spec.n_agents
        done = torch.as_tensor(out.done, device=self.device).reshape(e, 1)
        term = torch.as_tensor(out.terminated[name], device=self.device)
        left = (torch.as_tensor(last.alive[name], device=self.device)
                & ~torch.as_tensor(out.alive[name], device=self.device) & ~term & ~done)
        next_obs = torch.where(
            (done | left).unsqueeze(-1), self.to_tensor(out.final_obs[name]).reshape(e, n, -1),
            self.to_tensor(out.obs[name]).reshape(e, n, -1)
        )
        row = {
            "obs": self.to_tensor(last.obs[name]).reshape(e, n, -1),
            "action": self._unit(gs, action),
            "reward": self.to_tensor(out.reward[name]),
            "next_obs": next_obs,
            "terminated": term.float(),
            "agent": torch.arange(n, dtype=torch.float32, device=self.device).expand(e, n),
        }
        valid = torch.as_tensor(last.alive[name] & last.acting[name], device=self.device)
        if gs.members == 1:
            gs.buffers[0].add(**{k: v[valid] for k, v in row.items()})
            return
        for m, buf in enumerate(gs.buffers):
            sel = valid[:, m]
            if bool(sel.any()):
                buf.add(**{k: v[:, m][sel] for k, v in row.items()})

    # ------------------------------------------------------------------ learning
    def _sample(self, gs: _Group) -> dict[str, torch.Tensor]:
        """A minibatch ``[B, M, ...]``: ``batch_size`` transitions from each member's buffer."""
        parts = [buf.sample(self.algo.batch_size, self.gen) for buf in gs.buffers]
        return {k: torch.stack([p[k] for p in parts], dim=1) for k in parts[0]}

    def td_target(self, gs: _Group, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``y = r + gamma (1 - terminated) Q'(s', mu'(s'))`` for a batch ``[B, M, ...]`` -> ``[B, M]``."""
        with torch.no_grad():
            x2 = self._features(gs, batch["next_obs"], batch["agent"])
            next_q = gs.critic_target(x2, self._unit(gs, gs.actor_target(x2)))
            return q_target(batch["reward"], next_q, batch["terminated"], self.algo.gamma)

    def _clip(self, module: torch.nn.Module) -> None:
        if self.algo.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(module.parameters(), self.algo.max_grad_norm)

    def update(self, gs: _Group, batch: dict[str, torch.Tensor], actor_step: bool) -> dict[str, float]:
        """One critic step on ``batch [B, M, ...]`` (each member minimizes its own batch-mean TD error), and when
        ``actor_step`` one actor step on ``-Q(s, mu(s))`` followed by Polyak averaging of both targets."""
        a, m = self.algo, gs.members
        x = self._features(gs, batch["obs"], batch["agent"])
        y = self.td_target(gs, batch)
        q = gs.critic(x, batch["action"])
        qf_loss = q_loss(q, y)
        gs.critic_optim.zero_grad(set_to_none=True)
        (qf_loss * m).backward()
        self._clip(gs.critic)
        gs.critic_optim.step()
        metrics = {"losses/qf_loss": qf_loss.item(), "losses/qf_values": q.mean().item()}
        if actor_step:
            gs.critic.requires_grad_(False)
            actor_loss = dpg_actor_loss(gs.critic(x, self._unit(gs, gs.actor(x))))
            gs.actor_optim.zero_grad(set_to_none=True)
            (actor_loss * m).backward()
            gs.critic.requires_grad_(True)
            self._clip(gs.actor)
            gs.actor_optim.step()
            polyak_update(gs.actor_target, gs.actor, a.tau)
            polyak_update(gs.critic_target, gs.critic, a.tau)
            metrics["losses/actor_loss"] = actor_loss.item()
        return metrics

    def iteration(self) -> dict[str, float]:
        """``train_freq`` env steps of all copies, then ``gradient_steps`` updates once past ``learning_starts``.

        Returns the means over updates and groups of ``losses/qf_loss``, ``losses/qf_values`` and
        ``losses/actor_loss`` (empty during warm-up; ``actor_loss`` only when an actor step happened)."""
        a = self.algo
        if self.last is None:
            self.reset_env(int(self.cfg.seed))
        for _ in range(a.train_freq):
            last = self.last
            actions = {name: self._explore(name, gs, last) for name, gs in self.groups.items()}
            out = self.env.step(to_env_actions(actions, self.spec))
            for name, gs in self.groups.items():
                self._store(name, gs, last, actions[name], out)
                gs.noise.reset(torch.as_tensor(out.done))
            self.episodes.extend(out.episodes)
            self.env_steps += self.spec.num_envs
            self.last = out
        self.iterations += 1
        ready = all(len(b) > 0 for gs in self.groups.values() for b in gs.buffers)
        if self.env_steps < a.learning_starts or not ready:
            return {}
        sums: dict[str, list[float]] = {}
        for _ in range(a.gradient_steps):
            self.updates += 1
            actor_step = self.updates % a.policy_delay == 0
            for gs in self.groups.values():
                for k, v in self.update(gs, self._sample(gs), actor_step).items():
                    sums.setdefault(k, []).append(v)
        return {k: float(np.mean(v)) for k, v in sums.items()}

    # ------------------------------------------------------------------ state
    def reset_env(self, seed: int) -> None:
        """Reset every env copy (copy ``e`` gets ``seed + e``) and the exploration noise of the dropped episodes."""
        super().reset_env(seed)
        for gs in self.groups.values():
            gs.noise.reset()

    def modules(self) -> dict[str, torch.nn.Module | torch.optim.Optimizer]:
        out: dict[str, torch.nn.Module | torch.optim.Optimizer] = {}
        for name, gs in self.groups.items():
            out[f"{name}/actor"] = gs.actor
            out[f"{name}/critic"] = gs.critic
            out[f"{name}/actor_target"] = gs.actor_target
            out[f"{name}/critic_target"] = gs.critic_target
            out[f"{name}/actor_optim"] = gs.actor_optim
            out[f"{name}/critic_optim"] = gs.critic_optim
        return out

    def extra_state(self) -> dict:
        """Replay buffers, noise state and observation statistics per group, and the update counter."""
        return {
            "updates": self.updates,
            "groups": {
                name: {
                    "buffers": [b.state_dict() for b in gs.buffers],
                    "noise": gs.noise.state_dict(),
                    "obs_rms": gs.obs_rms.state_dict() if gs.obs_rms is not None else {},
                }
                for name, gs in self.groups.items()
            },
        }

    def load_extra_state(self, state: dict) -> None:
        self.updates = int(state["updates"])
        for name, gs in self.groups.items():
            s = state["groups"][name]
            for b, bs in zip(gs.buffers, s["buffers"], strict=True):
                b.load_state_dict(bs)
            gs.noise.load_state_dict(s["noise"])
            if gs.obs_rms is not None:
                gs.obs_rms.load_state_dict(s["obs_rms"])
