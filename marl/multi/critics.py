"""Value functions over "value units" ``U``, so one GAE call serves every scheme:

* ``local`` (IPPO, and the single-agent algorithms): each agent's value from its own observation; ``U = N`` (all
  agents of all groups, in group order), same sharing as the actors.
* ``central`` + team reward (MAPPO / HAPPO on cooperative envs): one value of the global state per env copy on the
  team reward; ``U = 1``; the advantage is broadcast to every agent (joint GAE).
* ``central`` per agent (MAPPO / HAPPO on competitive or turn-based games): the global state plus an agent-id one-hot,
  each agent on its own reward; ``U = N``.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch import nn

from marl.adapters.base import EnvSpec
from marl.core.networks import ValueCritic
from marl.multi.manager import AgentManager, conv_kwargs, flat_dim


class Critic(nn.Module):
    def __init__(self, spec: EnvSpec, algo: DictConfig, manager: AgentManager, central: bool, team: bool):
        super().__init__()
        self.spec, self.manager, self.central, self.team = spec, manager, central, team and central
        self.n_total = sum(g.n_agents for g in spec.groups)
        hidden = list(getattr(algo, "critic_hidden", None) or algo.hidden)
        if not central:
            self.nets = nn.ModuleDict()
            for g in spec.groups:
                pol = manager.policies[g.name]
                in_dim = flat_dim(g) + (g.n_agents if pol.one_hot else 0)
                self.nets[g.name] = ValueCritic(in_dim, hidden, 1 if pol.shared else g.n_agents, algo.activation,
                                                **conv_kwargs(g, algo))
        else:
            s_dim = int(spec.state_shape[0])
            self.net = ValueCritic(s_dim + (0 if self.team else self.n_total), hidden, 1, algo.activation)
            self.register_buffer("eye", torch.eye(self.n_total))

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
        return not self.central and all(self.manager.policies[g.name].shared for g in self.spec.groups)

    @property
    def units(self) -> int:
        return 1 if self.team else self.n_total

    def forward(self, obs: dict[str, torch.Tensor], state: torch.Tensor) -> torch.Tensor:
        """Values ``[..., U]`` from obs ``{group: [..., N_g, D]}`` and state ``[..., S]``."""
        if not self.central:
            return torch.cat([self._local(g.name, obs[g.name]) for g in self.spec.groups], dim=-1)
        if self.team:
            return self.net(state.unsqueeze(-2))
        x = state.unsqueeze(-2).expand(*state.shape[:-1], self.n_total, state.shape[-1])
        return self.net(torch.cat([x, self.eye.expand(*state.shape[:-1], self.n_total, self.n_total)], dim=-1))

    def to_groups(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split (or broadcast, for the team value) ``[..., U]`` into ``{group: [..., N_g]}``."""
        if self.team:
            return {g.name: x.expand(*x.shape[:-1], g.n_agents) for g in self.spec.groups}
        parts = torch.split(x, [g.n_agents for g in self.spec.groups], dim=-1)
        return {g.name: p for g, p in zip(self.spec.groups, parts, strict=True)}

    def from_groups(self, per_group: dict[str, torch.Tensor], team_reduce: str = "sum") -> torch.Tensor:
        """Join ``{group: [..., N_g]}`` into ``[..., U]``; for the team value reduce over agents (sum | mean | any)."""
        x = torch.cat([per_group[g.name] for g in self.spec.groups], dim=-1)
        if not self.team:
            return x
        if team_reduce == "any":
            return x.any(dim=-1, keepdim=True)
        if team_reduce == "all":
            return x.all(dim=-1, keepdim=True)
        return x.sum(-1, keepdim=True) if team_reduce == "sum" else x.mean(-1, keepdim=True)
