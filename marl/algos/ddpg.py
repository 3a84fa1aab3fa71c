"""DDPG (Lillicrap et al. 2016): a deterministic actor ``mu(s)`` trained through a Q critic, off-policy from replay;
and the shared off-policy core that TD3, SAC (marl/algos/td3.py, sac.py) and MADDPG / MATD3 (marl/multi/maddpg.py)
override in a few hooks.

Per agent group: actor ``mu(s)`` (tanh-scaled into the Box bounds), critic ``Q(s, a)`` (an ensemble of
``n_critics`` in one batched call), slow target copies of both (Polyak averaging with ``tau``), Adam optimizers and
replay. A multi-agent group runs independent DDPG per agent: ``sharing=per_agent`` gives every agent its own weights
(the networks' member axis, still one batched call) and its own replay buffer; otherwise one network and one buffer
serve the whole group (with an agent-id one-hot when the group has several agents and ``agent_id`` is on). Only
transitions of agents that were alive and acting are stored.

One env step: uniform random actions for the first ``learning_starts`` env steps, then ``mu(s)`` plus exploration
noise (Gaussian or Ornstein-Uhlenbeck, ``noise_std`` times the half-range), clipped to the bounds. The TD target is
``r + gamma (1 - terminated) Q'(s', mu'(s'))`` where ``s'`` is the final observation of an episode that ended this
step, or of an agent that left while the episode goes on, so a time-limit truncation (of the episode or of one
agent on its own) bootstraps and a termination does not. The critic sees actions rescaled to
``[-1, 1]``; the replay buffer stores them that way (a Discrete action as its index).

Hooks (the subclasses' whole difference): :meth:`DDPG._make_actor`, :meth:`DDPG._act_one` and
:meth:`DDPG._explore_action` (acting),
:meth:`DDPG.td_target`, :meth:`DDPG.actor_loss`, :meth:`DDPG._after_actor_step`; MADDPG also replaces the storage
and update of a whole step (:meth:`DDPG._store_step`, :meth:`DDPG._update_all`).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from gymnasium import spaces
from omegaconf import DictConfig

from marl.adapters.base import GroupSpec, StepOut, VecMultiEnv
from marl.algos.base import Learner
from marl.core.buffers import ReplayBuffer
from marl.core.losses import dpg_actor_loss, q_loss, q_target
from marl.core.networks import DeterministicActor, QCritic, adam, polyak_update
from marl.core.noise import GaussianNoise, OUNoise, make_noise
from marl.core.normalization import RunningMeanStd
from marl.errors import ConfigError
from marl.rollout import to_env_actions


@dataclass
class _Group:
    """Everything an off-policy learner keeps for one agent group (``M`` = members: ``N`` with per-agent weights,
    else 1). ``critic`` / ``actor_target`` are None where an algorithm has none (MADDPG's critic is joint; SAC has
    no actor target)."""

    spec: GroupSpec
    members: int
    obs_dim: int
    act_dim: int  # Box: D; Discrete: the number of actions A
    id_dim: int  # agent-id one-hot size appended to the input (0: none)
    discrete: bool
    actor: torch.nn.Module
    critic: QCritic | None
    actor_target: torch.nn.Module | None
    critic_target: QCritic | None
    actor_optim: torch.optim.Adam
    critic_optim: torch.optim.Adam | None
    buffers: list[ReplayBuffer]  # one per member (empty when the replay is joint)
    noise: GaussianNoise | OUNoise | None  # state [E, N, D]
    obs_rms: RunningMeanStd | None
    low: torch.Tensor  # [D] (Discrete: 0)
    high: torch.Tensor  # [D] (Discrete: A - 1)
    extra: dict = field(default_factory=dict)  # algorithm-specific state (SAC's temperature)


class DDPG(Learner):
    """Deep deterministic policy gradient for Box action spaces (see the module docstring)."""

    n_critics = 1  # critics in the ensemble (TD3 / SAC: 2)
    discrete_ok = False  # whether Discrete action groups are served

    def __init__(self, cfg: DictConfig, env: VecMultiEnv, device: str):
        super().__init__(cfg, env, device)
        a = self.algo
        # hot-loop settings as plain attributes (an OmegaConf lookup costs ~10 us)
        self.gamma, self.tau, self.batch_size = float(a.gamma), float(a.tau), int(a.batch_size)
        self.learning_starts, self.policy_delay = int(a.learning_starts), int(a.policy_delay)
        self.max_grad_norm = float(a.max_grad_norm)
        self.train_freq, self.gradient_steps = int(a.train_freq), int(a.gradient_steps)  # ${num_envs}: parsed once
        self.target_noise = float(a.get("target_noise", 0.0))  # TD3 / MATD3's smoothing (others: unused)
        self.target_noise_clip = float(a.get("target_noise_clip", 0.0))
        self.updates = 0  # critic updates so far (drives policy_delay)
        self.step_envs = self.spec.num_envs  # env_steps per step of the copies (a Ray worker: the run's, not its own)
        self.record: list | None = None  # a Ray rollout worker's transitions, stored by the learner (see collect)
        self.groups = {g.name: self._build_group(g) for g in self.spec.groups}

    # ------------------------------------------------------------------ construction
    def _check_space(self, g: GroupSpec) -> None:
        space, name = g.action_space, self.algo.name
        if isinstance(space, spaces.Discrete) and self.discrete_ok:
            if g.has_action_mask:
                raise ConfigError(f"algo={name} does not support action masks (group '{g.name}' has one)",
                                  "use algo=ppo (or mappo) for envs with action masks")
            return
        if not isinstance(space, spaces.Box):
            raise ConfigError(f"algo={name} cannot act in group '{g.name}''s {type(space).__name__} action space",
                              "use algo=ppo (or mappo) for this env")
        if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
            raise ConfigError(
                f"algo={name} needs finite action bounds, but group '{g.name}' has low={space.low}, high={space.high}",
                "wrap the env to rescale actions into finite bounds (e.g. gymnasium's RescaleAction), or use algo=ppo",
            )

    def _make_actor(self, gs: _Group, in_dim: int) -> torch.nn.Module:
        """The group's actor on inputs ``[..., M, in_dim]`` (DDPG: ``mu(s)`` in the bounds)."""
        return DeterministicActor(in_dim, gs.spec.action_space, list(self.algo.hidden), gs.members,
                                  self.algo.activation)

    def _make_critic(self, gs: _Group, in_dim: int) -> QCritic | None:
        """The group's critic ensemble (Box: ``Q(s, a)``; Discrete: ``Q(s, .)`` over the actions); None: joint."""
        act_in, out = (0, gs.act_dim) if gs.discrete else (gs.act_dim, 1)
        return QCritic(in_dim, act_in, list(self.algo.hidden), gs.members, self.algo.activation, self.n_critics, out)

    def _has_actor_target(self) -> bool:
        return True

    def _make_noise(self, gs: _Group) -> GaussianNoise | OUNoise | None:
        a = self.algo
        return make_noise(a.noise, (self.spec.num_envs, gs.spec.n_agents, gs.act_dim), a.noise_std, a.ou_theta,
                          self.gen)

    def _buffer_shapes(self, gs: _Group) -> dict[str, tuple[int, ...]] | None:
        """Fields of the group's per-member replay (None: the learner keeps a joint replay instead)."""
        return {"obs": (gs.obs_dim,), "action": () if gs.discrete else (gs.act_dim,), "reward": (),
                "next_obs": (gs.obs_dim,), "terminated": (), "agent": ()}

    def _build_group(self, g: GroupSpec) -> _Group:
        a = self.algo
        self._check_space(g)
        space = g.action_space
        discrete = isinstance(space, spaces.Discrete)
        n = g.n_agents
        members = n if a.sharing == "per_agent" else 1
        obs_dim = int(math.prod(g.obs_space.shape))
        act_dim = int(space.n) if discrete else int(math.prod(space.shape))
        low = np.zeros(1) if discrete else space.low
        high = np.full(1, act_dim - 1) if discrete else space.high
        gs = _Group(
            spec=g, members=members, obs_dim=obs_dim, act_dim=act_dim,
            id_dim=n if (members == 1 and n > 1 and a.agent_id) else 0, discrete=discrete,
            actor=None, critic=None, actor_target=None, critic_target=None,  # type: ignore[arg-type]
            actor_optim=None, critic_optim=None, buffers=[], noise=None,  # type: ignore[arg-type]
            obs_rms=RunningMeanStd((obs_dim,)) if a.normalize_obs else None,
            low=torch.as_tensor(low, dtype=torch.float32, device=self.device).reshape(-1),
            high=torch.as_tensor(high, dtype=torch.float32, device=self.device).reshape(-1),
        )
        in_dim = obs_dim + gs.id_dim
        gs.actor = self._make_actor(gs, in_dim).to(self.device)
        gs.actor_optim = adam(gs.actor.parameters(), a.actor_lr, a.adam_eps)
        if self._has_actor_target():
            gs.actor_target = copy.deepcopy(gs.actor).requires_grad_(False)
        critic = self._make_critic(gs, in_dim)
        if critic is not None:
            gs.critic = critic.to(self.device)
            gs.critic_target = copy.deepcopy(gs.critic).requires_grad_(False)
            gs.critic_optim = adam(gs.critic.parameters(), a.critic_lr, a.adam_eps)
        shapes = self._buffer_shapes(gs)
        if shapes is not None:
            gs.buffers = [ReplayBuffer(a.buffer_size, shapes, str(self.device)) for _ in range(members)]
        if not discrete:
            gs.noise = self._make_noise(gs)
        return gs

    # ------------------------------------------------------------------ helpers
    def _features(self, gs: _Group, obs: torch.Tensor, agent: torch.Tensor) -> torch.Tensor:
        """Network input ``[..., M', obs_dim + id_dim]`` from flat observations ``[..., M', obs_dim]`` and agent
        indices ``[..., M']`` (normalized when ``normalize_obs``; agent-id one-hot appended for a shared net)."""
        x = gs.obs_rms.normalize(obs) if gs.obs_rms is not None else obs
        if gs.id_dim:
            x = torch.cat([x, torch.nn.functional.one_hot(agent.long(), gs.id_dim).to(x.dtype)], dim=-1)
        return x

    def _obs_features(self, gs: _Group, obs: torch.Tensor) -> torch.Tensor:
        """:meth:`_features` of every agent's flat observation ``[..., N, obs_dim]`` (agent ``n`` in slot ``n``)."""
        agent = torch.arange(gs.spec.n_agents, device=obs.device).expand(obs.shape[:-1])
        return self._features(gs, obs, agent)

    def _unit(self, gs: _Group, action: torch.Tensor) -> torch.Tensor:
        """Env-unit actions ``[..., D]`` -> ``[-1, 1]`` (the critic's input scale)."""
        return (action - (gs.high + gs.low) / 2) / ((gs.high - gs.low) / 2)

    def _from_unit(self, gs: _Group, u: torch.Tensor) -> torch.Tensor:
        """``[-1, 1]`` actions ``[..., D]`` -> env units."""
        return (gs.high + gs.low) / 2 + (gs.high - gs.low) / 2 * u

    def _q(self, gs: _Group, critic: QCritic, x: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Critic ensemble values ``[B, M, K]`` of stored actions ``action`` (Box ``[B, M, D]`` in ``[-1, 1]``;
        Discrete ``[B, M]`` indices) at inputs ``x [B, M, in]``."""
        if not gs.discrete:
            return critic(x, action)
        q = critic(x)  # [B, M, K, A]
        idx = action.long()[..., None, None].expand(*q.shape[:-1], 1)
        return q.gather(-1, idx).squeeze(-1)

    def _mu(self, gs: _Group, obs: torch.Tensor) -> torch.Tensor:
        """Deterministic actions ``[E, N, D]`` for flat observations ``[E, N, obs_dim]``."""
        return gs.actor(self._obs_features(gs, obs))

    # ------------------------------------------------------------------ acting
    def _explore_action(self, gs: _Group, obs: torch.Tensor) -> torch.Tensor:
        """Training-time env actions ``[E, N, D]`` (Discrete: ``[E, N]``) after warm-up for flat observations
        ``[E, N, obs_dim]``: DDPG's ``mu(s)`` plus the group's noise process (Gaussian or Ornstein-Uhlenbeck)
        clipped to the bounds."""
        half = (gs.high - gs.low) / 2
        return torch.clamp(self._mu(gs, obs) + half * gs.noise.sample().to(self.device), gs.low, gs.high)

    @torch.no_grad()
    def act(
        self,
        obs: dict[str, torch.Tensor | np.ndarray],
        action_mask: dict[str, torch.Tensor | np.ndarray | None],
        deterministic: bool,
        acting: dict[str, np.ndarray] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Actions ``[E, N_g, *action_shape]`` for raw observations ``[E, N_g, *obs]`` (tensors or numpy arrays, as
        a StepOut holds them) per group: the policy's deterministic action, or (not ``deterministic``) a fresh
        exploratory one: DDPG adds Gaussian noise (``noise_std`` times the half-range, from ``self.gen``) clipped
        to the bounds, whatever the training noise process. ``action_mask`` is ignored (none are served)."""
        out = {}
        for name, gs in self.groups.items():
            o = torch.as_tensor(obs[name], dtype=torch.float32, device=self.device)
            e, n = o.shape[:2]
            a = self._act_one(gs, o.reshape(e, n, gs.obs_dim), deterministic)
            out[name] = a.reshape(e, n, *gs.spec.action_space.shape)
        return out

    def _act_one(self, gs: _Group, obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        """:meth:`act` for one group's flat observations ``[E, N, obs_dim]`` -> env actions (the acting hook)."""
        a = self._mu(gs, obs)
        if deterministic:
            return a
        half = (gs.high - gs.low) / 2
        eps = torch.randn(a.shape, generator=self.gen).to(self.device)
        return torch.clamp(a + self.algo.noise_std * half * eps, gs.low, gs.high)

    @torch.no_grad()
    def _explore(self, name: str, gs: _Group, last: StepOut) -> torch.Tensor:
        """Exploration actions ``[E, N, D]`` (Discrete ``[E, N]``) in env units: uniform during warm-up, then
        :meth:`_explore_action`."""
        obs = self.to_tensor(last.obs[name]).reshape(self.spec.num_envs, gs.spec.n_agents, gs.obs_dim)
        if gs.obs_rms is not None:
            gs.obs_rms.update(obs[torch.as_tensor(last.alive[name], device=self.device)])
        if self.env_steps < self.learning_starts:
            if gs.discrete:
                return torch.randint(0, gs.act_dim, obs.shape[:-1], generator=self.gen).to(self.device)
            u = torch.rand(obs.shape[:-1] + (gs.act_dim,), generator=self.gen).to(self.device)
            return gs.low + (gs.high - gs.low) * u
        return self._explore_action(gs, obs)

    def _next_obs(self, name: str, last: StepOut, out: StepOut) -> tuple[torch.Tensor, torch.Tensor]:
        """The bootstrap observation ``[E, N, obs_dim]`` of ``last -> out`` and ``terminated [E, N]``: the final
        observation where the episode ended or the agent left (alive before, not after, not terminated, episode
        going on), else the new observation."""
        e = self.spec.num_envs
        done = torch.as_tensor(out.done, device=self.device).reshape(e, 1)
        term = torch.as_tensor(out.terminated[name], device=self.device)
        left = (torch.as_tensor(last.alive[name], device=self.device)
                & ~torch.as_tensor(out.alive[name], device=self.device) & ~term & ~done)
        n = term.shape[1]
        next_obs = torch.where(
            (done | left).unsqueeze(-1), self.to_tensor(out.final_obs[name]).reshape(e, n, -1),
            self.to_tensor(out.obs[name]).reshape(e, n, -1)
        )
        return next_obs, term

    def _stored_action(self, gs: _Group, action: torch.Tensor) -> torch.Tensor:
        """Replay form of env actions: Box ``[-1, 1]`` (``[..., D]``), Discrete the index (``[...]``)."""
        return action.float() if gs.discrete else self._unit(gs, action)

    def _store(self, name: str, gs: _Group, last: StepOut, action: torch.Tensor, out: StepOut) -> None:
        """Add the transitions ``last -> out`` of agents that were alive and acting to the group's replay (next
        observation: :meth:`_next_obs`)."""
        e, n = self.spec.num_envs, gs.spec.n_agents
        next_obs, term = self._next_obs(name, last, out)
        row = {
            "obs": self.to_tensor(last.obs[name]).reshape(e, n, -1),
            "action": self._stored_action(gs, action),
            "reward": self.to_tensor(out.reward[name]),
            "next_obs": next_obs,
            "terminated": term.float(),
            "agent": torch.arange(n, dtype=torch.float32, device=self.device).expand(e, n),
        }
        valid = torch.as_tensor(last.alive[name] & last.acting[name], device=self.device)
        if gs.members == 1:
            if bool(valid.all()):
                gs.buffers[0].add(**{k: v.reshape(e * n, *v.shape[2:]) for k, v in row.items()})
            else:
                gs.buffers[0].add(**{k: v[valid] for k, v in row.items()})
            return
        for m, buf in enumerate(gs.buffers):
            sel = valid[:, m]
            if bool(sel.any()):
                buf.add(**{k: v[:, m][sel] for k, v in row.items()})

    def _store_step(self, last: StepOut, actions: dict[str, torch.Tensor], out: StepOut) -> None:
        """Store one env step of every group (per-group replay)."""
        for name, gs in self.groups.items():
            self._store(name, gs, last, actions[name], out)

    # ------------------------------------------------------------------ learning
    def _sample(self, gs: _Group) -> dict[str, torch.Tensor]:
        """A minibatch ``[B, M, ...]``: ``batch_size`` transitions from each member's buffer."""
        if len(gs.buffers) == 1:
            return {k: v.unsqueeze(1) for k, v in gs.buffers[0].sample(self.batch_size, self.gen).items()}
        rows = torch.stack([buf.sample_rows(self.batch_size, self.gen) for buf in gs.buffers], dim=1)  # [B, M, F]
        buf = gs.buffers[0]
        return {k: rows[..., a:a + n].reshape(*rows.shape[:2], *buf.shapes[k]) for k, (a, n) in buf.slices.items()}

    def td_target(self, gs: _Group, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``y = r + gamma (1 - terminated) Q'(s', mu'(s'))`` for a batch ``[B, M, ...]`` -> ``[B, M]``."""
        with torch.no_grad():
            x2 = self._features(gs, batch["next_obs"], batch["agent"])
            next_q = gs.critic_target(x2, self._unit(gs, gs.actor_target(x2))).squeeze(-1)
            return q_target(batch["reward"], next_q, batch["terminated"], self.gamma)

    def actor_loss(self, gs: _Group, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The actor's loss at inputs ``x [B, M, in]`` (the critic is frozen meanwhile) and extra metrics
        (detached): DDPG's ``-Q_1(s, mu(s))`` (TD3: the first critic only)."""
        return dpg_actor_loss(gs.critic(x, self._unit(gs, gs.actor(x)), first=True)[..., 0]), {}

    def _after_actor_step(self, gs: _Group, info: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """After each actor step (SAC: the temperature step); returns extra metrics."""
        return {}

    def _clip(self, module: torch.nn.Module) -> None:
        if self.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(module.parameters(), self.max_grad_norm)

    def _step(self, loss: torch.Tensor, optim: torch.optim.Optimizer, module: torch.nn.Module) -> None:
        optim.zero_grad(set_to_none=True)
        loss.backward()
        self._clip(module)
        optim.step()

    def update(self, gs: _Group, batch: dict[str, torch.Tensor], actor_step: bool) -> dict[str, torch.Tensor]:
        """One critic step on ``batch [B, M, ...]`` (each critic of each member minimizes its own batch-mean TD
        error), and when ``actor_step`` one actor step on :meth:`actor_loss` followed by Polyak averaging of the
        targets. Returns detached scalar tensors (no sync per update)."""
        m = gs.members
        x = self._features(gs, batch["obs"], batch["agent"])
        y = self.td_target(gs, batch)
        q = self._q(gs, gs.critic, x, batch["action"])  # [B, M, K]
        qf_loss = q_loss(q, y)
        self._step(qf_loss * m, gs.critic_optim, gs.critic)
        metrics = {"losses/qf_loss": qf_loss.detach(), "losses/qf_values": q.detach().mean()}
        if actor_step:
            params = list(gs.critic.parameters())
            for p in params:
                p.requires_grad_(False)
            loss, info = self.actor_loss(gs, x)
            self._step(loss * m, gs.actor_optim, gs.actor)
            for p in params:
                p.requires_grad_(True)
            metrics.update(self._after_actor_step(gs, info))
            if gs.actor_target is not None:
                polyak_update(gs.actor_target, gs.actor, self.tau)
            polyak_update(gs.critic_target, gs.critic, self.tau)
            metrics["losses/actor_loss"] = loss.detach()
            metrics.update({k: v for k, v in info.items() if k.startswith("losses/")})
        return metrics

    def _ready(self) -> bool:
        return all(len(b) > 0 for gs in self.groups.values() for b in gs.buffers)

    def _update_all(self, actor_step: bool) -> dict[str, torch.Tensor]:
        """One update of every group; the summed metrics are averaged over groups by the caller."""
        out: dict[str, list[torch.Tensor]] = {}
        for gs in self.groups.values():
            for k, v in self.update(gs, self._sample(gs), actor_step).items():
                out.setdefault(k, []).append(v)
        return {k: torch.stack(v).mean() for k, v in out.items()}

    def replay_buffers(self) -> list[ReplayBuffer]:
        return [b for gs in self.groups.values() for b in gs.buffers]

    def collect(self) -> None:
        """``train_freq`` env steps of all copies with the exploration actions (:meth:`_explore`), each stored in the
        replay as it happens; or, where ``record`` is a list (a Ray rollout worker,
        :mod:`marl.distributed.worker`), appended to it as ``(actions, out)`` for the learner to store instead."""
        for _ in range(self.train_freq):
            last = self.last
            actions = {name: self._explore(name, gs, last) for name, gs in self.groups.items()}
            out = self.env.step(to_env_actions(actions, self.spec))
            if self.record is None:
                self._store_step(last, actions, out)
            else:
                self.record.append((actions, out))
            for gs in self.groups.values():
                if gs.noise is not None:
                    gs.noise.reset(torch.as_tensor(out.done))
            self.episodes.extend(out.episodes)
            self.env_steps += self.step_envs
            self.last = out

    def iteration(self) -> dict[str, float]:
        """``train_freq`` env steps of all copies (:meth:`collect`, or the Ray workers': ``env.backend=ray``), then
        ``gradient_steps`` updates once past ``learning_starts``.

        Returns the means over updates and groups of ``losses/qf_loss``, ``losses/qf_values`` and
        ``losses/actor_loss`` (empty during warm-up; ``actor_loss`` only when an actor step happened; SAC adds
        ``losses/alpha`` and ``losses/alpha_loss``), ``charts/replay_mb`` (replay rows filled so far) and
        ``charts/replay_capacity_mb`` (the bound: all rows filled); with Ray also ``charts/policy_lag``."""
        if self.last is None:
            self.reset_env(int(self.cfg.seed))
        self.gather()
        self.iterations += 1
        lag = {} if self.collector is None else {"charts/policy_lag": float(getattr(self.collector, "lag", 0))}
        if self.env_steps < self.learning_starts or not self._ready():
            return lag
        sums: dict[str, list[torch.Tensor]] = {}
        for _ in range(self.gradient_steps):
            self.updates += 1
            for k, v in self._update_all(self.updates % self.policy_delay == 0).items():
                sums.setdefault(k, []).append(v)
        metrics = {k: float(torch.stack(v).mean()) for k, v in sums.items()}
        bufs = self.replay_buffers()
        metrics["charts/replay_mb"] = sum(b.filled_bytes for b in bufs) / 2**20
        metrics["charts/replay_capacity_mb"] = sum(b.nbytes for b in bufs) / 2**20
        return metrics | lag

    # ------------------------------------------------------------------ state
    def reset_env(self, seed: int) -> None:
        """Reset every env copy (copy ``e`` gets ``seed + e``) and the exploration noise of the dropped episodes."""
        super().reset_env(seed)
        for gs in self.groups.values():
            if gs.noise is not None:
                gs.noise.reset()

    def modules(self) -> dict[str, torch.nn.Module | torch.optim.Optimizer]:
        out: dict[str, torch.nn.Module | torch.optim.Optimizer] = {}
        for name, gs in self.groups.items():
            for key in ("actor", "critic", "actor_target", "critic_target", "actor_optim", "critic_optim"):
                if getattr(gs, key) is not None:
                    out[f"{name}/{key}"] = getattr(gs, key)
        return out

    def extra_state(self) -> dict:
        """Replay buffers, noise state and observation statistics per group, and the update counter."""
        return {
            "updates": self.updates,
            "groups": {
                name: {
                    "buffers": [b.state_dict() for b in gs.buffers],
                    "noise": gs.noise.state_dict() if gs.noise is not None else {},
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
            if gs.noise is not None:
                gs.noise.load_state_dict(s["noise"])
            if gs.obs_rms is not None:
                gs.obs_rms.load_state_dict(s["obs_rms"])
