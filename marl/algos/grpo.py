"""GRPO (Shao et al. 2024, DeepSeekMath): group-relative advantages, no critic, a KL term to a frozen reference.

The ``E`` env copies form groups of ``group_size`` G replicas (``E / G`` groups): every *round* resets them with a
fresh seed in groups (``env.reset(seed, group_size=G)``: the copies of a group start from the same state, other
groups from other states), so a group's G episodes are alternative answers to one question. A round lasts until
every copy has finished its episode; a copy that finished early is stepped with its actions ignored and its rows
masked out (they enter no loss), so a rollout never cuts an episode or a group. An iteration collects whole rounds
until it holds at least ``num_steps`` rows per copy: with fixed-length episodes (MPE: 25 steps) that is
``ceil(num_steps / 25)`` rounds; with variable ones (CartPole, board games) a round lasts as long as the group's
longest episode. Every row stepped counts as an env step (the masked ones too).

Advantages (``grpo_advantage``): ``episode`` gives every step of an episode ``(R_i - mean(R_group)) /
(std(R_group) + eps)`` with ``R_i`` its undiscounted return (population std; the group of a unit is its copies in
which it acted: a seat played by a self-play pool opponent is left out); ``step`` normalizes the discounted reward-to-go
(``gamma``) of the entries at each step index of the round over the group's copies acting there. Multi-agent: per
value unit — per team on a team reward (``team_reward: sum | mean``), else per agent (in turn-based games each
player's own outcome). The loss is PPO's clipped surrogate plus ``kl_coef`` times :func:`marl.core.losses.
reference_kl` to a frozen copy of the policy, refreshed every ``ref_update_every`` iterations (0: the initial policy
throughout).
"""

from __future__ import annotations

import copy
from dataclasses import fields

import numpy as np
import torch

from marl.algos.onpolicy import OnPolicyLearner, PGBatch, drop_idle
from marl.core import losses
from marl.core.returns import discounted_returns, group_normalize
from marl.errors import ConfigError
from marl.rollout import Rollout, allocate, store_outcome, store_step, to_env_actions


class GRPO(OnPolicyLearner):
    uses_critic = False

    def __init__(self, cfg, env, device):
        G, E = int(cfg.algo.group_size), int(env.spec.num_envs)
        if E % G:
            raise ConfigError(f"algo.group_size={G} does not divide num_envs={E}: GRPO's groups are sets of "
                              "group_size env copies reset with the same seed",
                              f"pass num_envs as a multiple of {G} (e.g. num_envs={G * max(1, E // G)}) or another "
                              "algo.group_size")
        super().__init__(cfg, env, device)
        self.G = G
        self.buf = allocate(self.spec, self.T, self.E, self.device, units=self.units.U, carry=0)
        self.ref = copy.deepcopy(self.manager).requires_grad_(False)  # the frozen reference policy
        self.rounds = 0  # rounds collected since the start (their seeds follow from the run seed)
        self._rows, self._round_of, self._live_frac = 0, torch.zeros(0, dtype=torch.long), 1.0
        self._pending = (None, None)  # whole episodes: no transition is ever left open (carry_over does nothing)
        self.group_offset = 0  # the run's index of this learner's first group (a Ray worker's share: its offset / G)
        self.given_adv: torch.Tensor | None = None  # [R, E, U] advantages the Ray workers computed for their groups

    def pg_loss(self, logp, logp_old, adv, mask, weight=None):
        return losses.clipped_surrogate(logp, logp_old, adv, self.algo.clip_coef, mask, weight)

    def modules(self):
        return {**super().modules(), "ref": self.ref}

    def extra_state(self) -> dict:
        return {**super().extra_state(), "rounds": self.rounds}

    def load_extra_state(self, state: dict) -> None:
        super().load_extra_state(state)
        self.rounds = int(state.get("rounds", 0))

    # ---------------------------------------------------------------- collection: whole rounds of group episodes
    def round_seed(self) -> int:
        """Reset seed of the next round (group j starts from ``round_seed + j``), a function of the run seed and the
        round number, below 2**30 (some envs take a C int)."""
        ss = np.random.SeedSequence([int(self.cfg.seed) % 2**64, 0x6772706F, self.rounds])
        return int(ss.generate_state(1, np.uint32)[0] >> 2)

    def _grow(self, buf: Rollout) -> Rollout:
        """A buffer with twice the rows, holding ``buf``'s rows (a round outlasted the rows allocated)."""
        new = allocate(self.spec, 2 * buf.T, self.E, self.device, units=self.units.U, carry=0)
        pairs = [(new, buf)] + [(new.groups[k], gb) for k, gb in buf.groups.items()]
        for dst, src in pairs:
            for f in fields(src):
                x = getattr(src, f.name)
                if torch.is_tensor(x):
                    getattr(dst, f.name)[: x.shape[0]] = x
        return new

    def collect(self) -> Rollout:
        """Whole rounds until at least ``num_steps`` rows: rows ``0 .. R-1`` of the buffer, ``R = self._rows``."""
        t, round_of, used, r = 0, [], 0, 0
        while t < self.T:
            last = self.env.reset(seed=self.round_seed() + self.group_offset, group_size=self.G)
            self.rounds += 1
            live = np.ones(self.E, bool)  # copies whose episode of this round is still running
            obs = self.obs_tensors(last.obs, last.alive)
            state = self.state_tensor(last.state, False)
            while live.any():
                if t >= self.buf.T:
                    self.buf = self._grow(self.buf)
                buf = self.buf
                masks = self.masks(last.action_mask)
                actions, logps = self.manager.act(obs, masks)
                store_step(buf, t, last, obs, state, masks, actions, logps)
                if self.opponents is not None:
                    actions = self.opponents.override(last, actions, buf, t)
                out = self.env.step(to_env_actions(actions, self.spec))
                rewards = {k: torch.as_tensor(v, device=self.device) for k, v in out.reward.items()}
                buf.unit_reward[t] = self.units.reduce(rewards, self.team_reduce)
                store_outcome(buf, t, out, rewards)
                idle = torch.from_numpy(~live).to(self.device)  # finished earlier this round: padding
                for gb in buf.groups.values():
                    gb.acting[t][idle] = False
                    gb.alive[t][idle] = False
                buf.unit_reward[t][idle] = 0.0
                buf.done[t][idle] = False
                self.episodes.extend(ep for ep in out.episodes if live[ep.env_index])
                used += int(live.sum())
                live &= ~out.done
                obs = self.obs_tensors(out.obs, {k: a & live[:, None] for k, a in out.alive.items()})
                state, last = self.state_tensor(out.state, False), out
                round_of.append(r)
                t += 1
            r += 1
        self._rows, self._round_of = t, torch.tensor(round_of, dtype=torch.long)
        self._live_frac = used / float(t * self.E)
        self.last = last
        self.env_steps += t * self.E
        return self.buf

    # ---------------------------------------------------------------- advantages and the batch
    @torch.no_grad()
    def group_advantages(self, buf: Rollout) -> torch.Tensor:
        """Group-relative advantages ``[R, E, U]`` of the acting entries of the rows collected (0 elsewhere)."""
        R, E, G, U = self._rows, self.E, self.G, self.units.U
        acting, terminated, left = (x[:R] for x in self.unit_flags(buf))
        reward = buf.unit_reward[:R]
        if self.algo.grpo_advantage == "episode":
            rid = self._round_of.to(self.device)
            n = int(rid.max()) + 1
            ret = torch.zeros(n, E, U, device=self.device).index_add_(0, rid, reward)  # [n, E, U] episode returns
            # the units that acted in the episode (a seat played by a pool opponent is no answer of the learner's)
            acted = torch.zeros(n, E, U, device=self.device).index_add_(0, rid, acting.float()) > 0
            adv = group_normalize(ret.view(n, E // G, G, U), dim=2, mask=acted.view(n, E // G, G, U))
            adv = adv.view(n, E, U)[rid]
            return torch.where(acting, adv, torch.zeros_like(adv))
        done = buf.done[:R].unsqueeze(-1) | terminated | left
        rtg = discounted_returns(reward, torch.zeros_like(reward), terminated, done, self.algo.gamma, acting)
        adv = group_normalize(rtg.view(R, E // G, G, U), dim=2, mask=acting.view(R, E // G, G, U))
        return adv.view(R, E, U)

    @torch.no_grad()
    def make_batch(self, buf: Rollout) -> PGBatch:
        R = self._rows
        every = int(self.algo.ref_update_every)
        if every > 0 and self.iterations > 0 and self.iterations % every == 0:
            self.ref.load_state_dict(self.manager.state_dict())
        adv = self.given_adv if self.given_adv is not None else self.group_advantages(buf)
        self.given_adv = None
        adv = self.units.broadcast(adv)
        B = R * self.E

        def flat(x: torch.Tensor) -> torch.Tensor:
            return x[:R].reshape(B, *x.shape[2:])

        gs, U = buf.groups, self.units.U
        zeros = torch.zeros(B, U, device=self.device)
        batch = PGBatch(
            obs={k: flat(gb.obs) for k, gb in gs.items()},
            mask={k: (flat(gb.mask) if gb.mask is not None else None) for k, gb in gs.items()},
            action={k: flat(gb.action) for k, gb in gs.items()},
            logp_old={k: flat(gb.logp) for k, gb in gs.items()},
            acting={k: flat(gb.acting) for k, gb in gs.items()},
            adv={k: flat(v) for k, v in adv.items()},
            state=flat(buf.state),
            target=zeros,
            value_old=zeros,
            vmask=zeros.bool(),
        )
        batch = drop_idle(batch)
        batch.logp_ref = {k: self.ref.dist(k, batch.obs[k], batch.mask[k]).log_prob(batch.action[k])
                          for k in batch.obs}
        return batch

    def update(self, batch: PGBatch) -> dict[str, float]:
        opts, params = self.all_params()

        def step(mb: PGBatch) -> dict[str, float]:
            loss, st = self.actor_loss(mb)
            self.step(opts, loss, params)
            return st

        return {**self.run_epochs(batch, step), "grpo_live_frac": self._live_frac}
