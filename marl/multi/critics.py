"""Value functions over "value units" ``U``, so one GAE call serves every scheme:

* ``local`` (IPPO, and the single-agent algorithms): each agent's value from its own observation; ``U = N`` (all
  agents of all groups, in group order), same sharing as the actors.
* ``central`` + team reward (MAPPO / HAPPO): one value of the global state per **team** (``env.teams``; a team
  one-hot is appended when there are several) on the team's reward (sum or mean over its members); ``U`` = number of
  teams; the team's advantage is broadcast to its members (joint GAE). Competing teams never share an advantage; a
  team of one is that agent's own reward. Teams are independent of the policy groups.
* ``central`` per agent (``team_reward: none``): the global state plus an agent-id one-hot, each agent on its own
  reward; ``U = N``.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch import nn

from marl.adapters.base import EnvSpec
from marl.core.networks import ValueCritic
from marl.multi.manager import AgentManager, conv_kwargs, flat_dim, rnn_kwargs


class ValueUnits:
    """Which value unit each agent belongs to: ``unit_of[n]`` for the agents of ``spec.agents`` (group order).

    Per-agent units (``U = N``) are the identity; team units map every member of a team to the team's unit."""

    def __init__(self, spec: EnvSpec, per_team: bool):
        self.spec = spec
        self.n_agents = len(spec.agents)
        self.per_team = per_team and len(spec.teams) < self.n_agents  # teams of one: the per-agent units
        if self.per_team:
            self.names = tuple(t for t, _ in spec.teams)
            self.unit_of = torch.tensor(spec.team_index())
        else:
            self.names = spec.agents
            self.unit_of = torch.arange(self.n_agents)
        self.U = len(self.names)
        # [N, U] membership (float, for sums over members); counts [U]
        self.member = torch.nn.functional.one_hot(self.unit_of, self.U).float()
        self.sizes = [g.n_agents for g in spec.groups]

    def reduce(self, per_group: dict[str, torch.Tensor], how: str = "sum") -> torch.Tensor:
        """Join ``{group: [..., N_g]}`` into ``[..., U]``: per agent as is; per team the sum | mean | any over its
        members."""
        x = torch.cat([per_group[g.name] for g in self.spec.groups], dim=-1)
        if not self.per_team:
            return x
        m = self.member.to(x.device)
        if how == "any":
            return (x.to(m.dtype) @ m) > 0
        total = x.to(m.dtype) @ m
        return total / m.sum(0) if how == "mean" else total

    def broadcast(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``[..., U]`` -> ``{group: [..., N_g]}``: every agent gets its unit's value."""
        if self.per_team:
            x = x[..., self.unit_of.to(x.device)]
        parts = torch.split(x, self.sizes, dim=-1)
        return {g.name: p for g, p in zip(self.spec.groups, parts, strict=True)}


class Critic(nn.Module):
    def __init__(self, spec: EnvSpec, algo: DictConfig, manager: AgentManager, central: bool, team: bool):
        super().__init__()
        self.spec, self.central = spec, central
        # the actors' input encoding (agent-id one-hot, mirror) is read from the manager, which is NOT a submodule:
        # registered, its weights would join the critic's parameters, optimizer (a second Adam step on the actors
        # every minibatch) and state dict
        self._manager = (manager,)
        self.units = ValueUnits(spec, team and central)
        self.team = self.units.per_team
        hidden = list(getattr(algo, "critic_hidden", None) or algo.hidden)
        if not central:
            self.nets = nn.ModuleDict()
            for g in spec.groups:
                pol = manager.policies[g.name]
                in_dim = flat_dim(g) + (g.n_agents if pol.one_hot else 0)
                self.nets[g.name] = ValueCritic(in_dim, hidden, 1 if pol.shared else g.n_agents, algo.activation,
                                                **conv_kwargs(g, algo), **rnn_kwargs(algo))
        else:
            s_dim, u = int(spec.state_shape[0]), self.units.U
            self.unit_id = u > 1  # a unit one-hot (team or agent id) appended to the state
            self.net = ValueCritic(s_dim + (u if self.unit_id else 0), hidden, 1, algo.activation, **rnn_kwargs(algo))
            self.register_buffer("eye", torch.eye(u))
        self.recurrent = bool(getattr(algo, "rnn", None))
        # recurrent: one state [..., U, S] per value unit (local critic: the agents, in group order)
        self.state_dim = 0
        if self.recurrent:
            self.state_dim = (self.net if central else next(iter(self.nets.values()))).net.state_dim

    @property
    def manager(self) -> AgentManager:
        return self._manager[0]

    def _local(self, group: str, obs: torch.Tensor) -> torch.Tensor:
        """Own-observation values ``[..., N_g]``; averaged with the mirror image's when the policy is symmetric."""
        return self._value(group, self.manager.policies[group].inputs(obs))

    def _value(self, group: str, x: torch.Tensor) -> torch.Tensor:
        """The group's value net on inputs ``[..., M, D]``, averaged with the mirror image's when symmetric."""
        pol, net = self.manager.policies[group], self.nets[group]
        return net(x) if pol.mirror is None else pol.mirror.average(net, x, per_action=False)

    def local_entries(self, group: str, obs: torch.Tensor, b: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        """Own-observation values ``[M]`` of the entries ``(b[i], n[i])`` of ``obs [B, N_g, D]`` alone (local critic
        with shared parameters; see :meth:`GroupPolicy.entries`)."""
        return self._value(group, self.manager.policies[group].inputs_at(obs, b, n)).squeeze(-1)

    @property
    def sparse_ok(self) -> bool:
        """Whether :meth:`local_entries` can evaluate any subset of the value units (local critic, shared nets)."""
        return not self.central and not self.recurrent and all(
            self.manager.policies[g.name].shared for g in self.spec.groups)

    @property
    def n_units(self) -> int:
        return self.units.U

    def forward(self, obs: dict[str, torch.Tensor], state: torch.Tensor) -> torch.Tensor:
        """Values ``[..., U]`` from obs ``{group: [..., N_g, D]}`` and state ``[..., S]``."""
        if not self.central:
            return torch.cat([self._local(g.name, obs[g.name]) for g in self.spec.groups], dim=-1)
        if not self.unit_id:
            return self.net(state.unsqueeze(-2))
        u = self.units.U
        x = state.unsqueeze(-2).expand(*state.shape[:-1], u, state.shape[-1])
        return self.net(torch.cat([x, self.eye.expand(*state.shape[:-1], u, u)], dim=-1))

    def _central_input(self, state: torch.Tensor) -> torch.Tensor:
        """The central net's input ``[..., U (or 1), S (+U)]`` from the global state ``[..., S]``."""
        if not self.unit_id:
            return state.unsqueeze(-2)
        u = self.units.U
        x = state.unsqueeze(-2).expand(*state.shape[:-1], u, state.shape[-1])
        return torch.cat([x, self.eye.expand(*state.shape[:-1], u, u)], dim=-1)

    def step(self, obs: dict[str, torch.Tensor], state: torch.Tensor, h: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Recurrent critic, one step: obs ``{group: [..., N_g, D]}``, state ``[..., S]``, unit states
        ``h [..., U, H]`` -> (values ``[..., U]``, new unit states)."""
        if self.central:
            return self.net.step(self._central_input(state), h)
        vs, hs = [], []
        for g, hg in zip(self.spec.groups, h.split(self.units.sizes, dim=-2), strict=True):
            v, hn = self.nets[g.name].step(self.manager.policies[g.name].inputs(obs[g.name]), hg)
            vs.append(v)
            hs.append(hn)
        return torch.cat(vs, dim=-1), torch.cat(hs, dim=-2)

    def sequence(self, obs: dict[str, torch.Tensor], state: torch.Tensor, h: torch.Tensor, reset: torch.Tensor,
                 advance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Recurrent critic over sequences ``[B, L, ...]`` from unit states ``h [B, U, H]``, with ``reset`` /
        ``advance [B, L, U]`` -> (values ``[B, L, U]``, unit states after each step ``[B, L, U, H]``)."""
        if self.central:
            return self.net.sequence(self._central_input(state), h, reset, advance)
        vs, hs = [], []
        parts = zip(self.spec.groups, h.split(self.units.sizes, dim=-2), reset.split(self.units.sizes, dim=-1),
                    advance.split(self.units.sizes, dim=-1), strict=True)
        for g, hg, rg, ag in parts:
            v, after = self.nets[g.name].sequence(self.manager.policies[g.name].inputs(obs[g.name]), hg, rg, ag)
            vs.append(v)
            hs.append(after)
        return torch.cat(vs, dim=-1), torch.cat(hs, dim=-2)
