"""AgentManager: agents -> groups -> policies, and one batched forward pass per group.

Groups come from the adapter (agents with the same spaces, or by name prefix, or an explicit map). Inside a group
``sharing`` decides the parameters: ``shared`` / ``by_prefix`` use one policy for the whole group (with an agent-id
one-hot appended to the input when it serves several agents); ``per_agent`` gives every agent its own weights, still
evaluated in one batched matmul. ``separate=True`` (HAPPO) keeps one module per agent, each with its own optimizer.
"""

from __future__ import annotations

import math

import torch
from omegaconf import DictConfig
from torch import nn

from marl.adapters.base import EnvSpec, GroupSpec
from marl.core.networks import Actor
from marl.core.symmetry import Mirror
from marl.errors import ConfigError


def flat_dim(group: GroupSpec) -> int:
    return int(math.prod(group.obs_space.shape))


def conv_kwargs(group: GroupSpec, algo: DictConfig) -> dict:
    """``image_shape`` / ``conv`` for the networks of ``group`` when ``algo.conv`` is set (else nothing)."""
    conv = getattr(algo, "conv", None)
    if not conv:
        return {}
    shape = tuple(group.obs_space.shape)
    if len(shape) != 3:
        raise ConfigError(f"algo.conv needs image or board observations (H, W, C); group '{group.name}' has "
                          f"observation shape {shape}", "drop algo.conv (null) for this env")
    return {"image_shape": shape, "conv": [list(map(int, layer)) for layer in conv]}


def rnn_kwargs(algo: DictConfig) -> dict:
    """``rnn`` / ``rnn_hidden`` for the networks when ``algo.rnn`` is set (else nothing: feed-forward)."""
    kind = getattr(algo, "rnn", None)
    return {"rnn": kind, "rnn_hidden": int(algo.rnn_hidden)} if kind else {}


class GroupPolicy(nn.Module):
    """The actor(s) of one group: ``[..., N, D] -> distribution over [..., N]``."""

    def __init__(self, group: GroupSpec, algo: DictConfig, separate: bool):
        super().__init__()
        n = group.n_agents
        self.n, self.shared = n, algo.sharing != "per_agent"
        self.one_hot = self.shared and bool(algo.agent_id) and n > 1
        in_dim = flat_dim(group) + (n if self.one_hot else 0)
        kw = dict(
            hidden=list(algo.hidden),
            activation=algo.activation,
            action_bound=algo.action_bound,
            log_std_init=float(getattr(algo, "log_std_init", 0.0)),
            **conv_kwargs(group, algo),
            **rnn_kwargs(algo),
        )
        self.recurrent = bool(getattr(algo, "rnn", None))
        self.separate = separate and not self.shared
        if self.separate:
            self.actors = nn.ModuleList(Actor(in_dim, group.action_space, members=1, **kw) for _ in range(n))
        else:
            self.actor = Actor(in_dim, group.action_space, members=1 if self.shared else n, **kw)
        self.register_buffer("eye", torch.eye(n))
        self.mirror: Mirror | None = None  # algo.symmetric: average the logits over the position and its mirror

    def inputs(self, obs: torch.Tensor) -> torch.Tensor:
        """``[..., N, D]`` normalized flat obs -> network input ``[..., N, D (+N)]``."""
        if not self.one_hot:
            return obs
        return torch.cat([obs, self.eye.expand(*obs.shape[:-1], self.n)], dim=-1)

    @property
    def dense(self) -> bool:
        """One network for every agent of the group (shared parameters): any subset of entries can be evaluated."""
        return self.shared and not self.separate and not self.recurrent

    @property
    def state_dim(self) -> int:
        """Size ``S`` of one agent's recurrent state (0: feed-forward)."""
        if not self.recurrent:
            return 0
        return (self.actors[0] if self.separate else self.actor).net.state_dim

    def step(self, obs: torch.Tensor, state: torch.Tensor, mask: torch.Tensor | None = None):
        """Recurrent policy, one step: obs ``[..., N, D]``, state ``[..., N, S]`` -> (distribution, new state)."""
        x = self.inputs(obs)
        if not self.separate:
            return self.actor.step(x, state, mask)
        outs, states = zip(*(a.net.step(x[..., k : k + 1, :], state[..., k : k + 1, :])
                             for k, a in enumerate(self.actors)), strict=True)
        return self._join(list(outs), mask), torch.cat(states, dim=-2)

    def sequence(self, obs, state, reset, advance, mask: torch.Tensor | None = None):
        """Recurrent policy over sequences ``obs [B, L, N, D]`` from ``state [B, N, S]`` with ``reset`` /
        ``advance [B, L, N]`` (:meth:`marl.core.recurrent.RecurrentNet.sequence`) -> distribution over
        ``[B, L, N]``."""
        x = self.inputs(obs)
        if not self.separate:
            return self.actor.sequence(x, state, reset, advance, mask)
        outs = [a.net.sequence(x[..., k : k + 1, :], state[..., k : k + 1, :], reset[..., k : k + 1],
                               advance[..., k : k + 1])[0] for k, a in enumerate(self.actors)]
        return self._join(outs, mask)

    def agent_sequence(self, k: int, obs, state, reset, advance, mask: torch.Tensor | None = None):
        """Agent ``k`` alone (``separate``), as :meth:`sequence` -> distribution over ``[B, L, 1]``."""
        sl = slice(k, k + 1)
        m = mask[..., sl, :] if mask is not None else None
        return self.actors[k].sequence(self.inputs(obs)[..., sl, :], state[..., sl, :], reset[..., sl],
                                       advance[..., sl], m)

    def _join(self, outs: list[torch.Tensor], mask: torch.Tensor | None):
        """One distribution from the per-agent head outputs ``[..., 1, A]`` of separate actors."""
        first = self.actors[0]
        if first.continuous:
            log_std = torch.cat([a.log_std for a in self.actors], dim=0)
            return first.head(torch.cat(outs, dim=-2), None, log_std=log_std)
        return first.head(torch.cat(outs, dim=-2), mask)

    def forward(self, obs: torch.Tensor, mask: torch.Tensor | None = None):
        x = self.inputs(obs)
        if not self.separate:
            return self._shared(x, mask)
        # one module per agent (HAPPO): run each on its slice and join the head outputs into one distribution
        return self._join([a.net(x[..., k : k + 1, :]) for k, a in enumerate(self.actors)], mask)

    def _shared(self, x: torch.Tensor, mask: torch.Tensor | None):
        if self.mirror is None:
            return self.actor(x, mask)
        return self.actor.head(self.mirror.average(self.actor.net, x, per_action=True), mask)

    def entries(self, obs: torch.Tensor, mask: torch.Tensor | None, b: torch.Tensor, n: torch.Tensor):
        """Distribution of the entries ``(b[i], n[i])`` of ``obs [B, N, D]`` alone -> over ``[M, 1]``; the other
        entries are never run through the network (turn-based games: only the agent to move). Needs ``dense``."""
        return self._shared(self.inputs_at(obs, b, n), mask[b, n].unsqueeze(-2) if mask is not None else None)

    def inputs_at(self, obs: torch.Tensor, b: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        """Network input ``[M, 1, D (+N)]`` of the entries ``(b[i], n[i])`` of ``obs [B, N, D]`` (as :meth:`inputs`,
        built for those entries only)."""
        x = obs[b, n]
        return (torch.cat([x, self.eye[n]], dim=-1) if self.one_hot else x).unsqueeze(-2)

    def agent(self, k: int, obs: torch.Tensor, mask: torch.Tensor | None = None):
        """Distribution of agent ``k`` alone (``obs [..., N, D]``) -> over ``[..., 1]``; needs ``separate``."""
        x = self.inputs(obs)[..., k : k + 1, :]
        m = mask[..., k : k + 1, :] if mask is not None else None
        return self.actors[k](x, m)

    def agent_parameters(self, k: int) -> list[nn.Parameter]:
        return list(self.actors[k].parameters())


class AgentManager(nn.Module):
    """Holds one :class:`GroupPolicy` per group of ``spec`` and acts for every agent of every group."""

    def __init__(self, spec: EnvSpec, algo: DictConfig, separate: bool = False):
        super().__init__()
        self.spec = spec
        self.policies = nn.ModuleDict({g.name: GroupPolicy(g, algo, separate) for g in spec.groups})

    def dist(self, group: str, obs: torch.Tensor, mask: torch.Tensor | None = None):
        return self.policies[group](obs, mask)

    @torch.no_grad()
    def act(
        self, obs: dict[str, torch.Tensor], mask: dict[str, torch.Tensor | None], deterministic: bool = False
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Actions and their log-probs per group, ``[E, N_g, ...]`` and ``[E, N_g]``."""
        actions, logps = {}, {}
        for g in self.spec.groups:
            d = self.dist(g.name, obs[g.name], mask.get(g.name))
            a = d.mode() if deterministic else d.sample()
            actions[g.name], logps[g.name] = a, d.log_prob(a)
        return actions, logps

    @property
    def recurrent(self) -> bool:
        return any(p.recurrent for p in self.policies.values())

    def initial_state(self, num_envs: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """Zero recurrent states ``{group: [E, N_g, S]}`` (empty for feed-forward policies)."""
        if not self.recurrent:
            return {}
        return {g.name: torch.zeros(num_envs, g.n_agents, self.policies[g.name].state_dim, device=device)
                for g in self.spec.groups}

    @torch.no_grad()
    def act_recurrent(
        self, obs: dict[str, torch.Tensor], mask: dict[str, torch.Tensor | None], state: dict[str, torch.Tensor],
        acting: dict[str, torch.Tensor], deterministic: bool = False,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """As :meth:`act` from the states fed to this step ``{g: [E, N_g, S]}``; also returns the states after
        it: advanced where ``acting [E, N_g]``, kept elsewhere."""
        actions, logps, after = {}, {}, {}
        for g in self.spec.groups:
            d, new = self.policies[g.name].step(obs[g.name], state[g.name], mask.get(g.name))
            a = d.mode() if deterministic else d.sample()
            actions[g.name], logps[g.name] = a, d.log_prob(a)
            after[g.name] = torch.where(acting[g.name].unsqueeze(-1), new, state[g.name])
        return actions, logps, after

    def agent_units(self) -> list[tuple[str, int]]:
        """Every (group, index) pair: the units HAPPO updates one at a time."""
        return [(g.name, k) for g in self.spec.groups for k in range(g.n_agents)]
