"""Typed config schemas, validation, and composition of ``configs/`` for the Python API.

The values live in one place, the YAMLs under ``configs/`` (``config.yaml``, ``env/``, ``algo/``, ``logger/``);
the dataclasses below hold types, docs and validation, and no competing values: a key a YAML sets is ``MISSING``
here, so a YAML lacking it fails loudly. Only optional env keys (a user's own env YAML may leave them out) and the
logger switches (off unless a logger option turns them on) keep a default here; the shipped YAMLs agree with them
(``tests/test_defaults.py``). Hydra composes ``configs/`` into a DictConfig (the CLI, or :func:`compose` from
Python); :func:`validate` checks it against the schemas, so an unknown key, a wrong type or an out-of-range value
stops the run before training with a message naming the key and the valid choices.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from marl.errors import ConfigError

# ----------------------------------------------------------------------------------------------------- env


@dataclass
class PreprocessConfig:
    """SuperSuit preprocessing for image observations (applied per agent, in this order)."""

    color_reduction: str | None = None  # null | full | R | G | B: to one channel
    resize: list[int] | None = None  # [H, W] (null: keep)
    frame_stack: int = 1  # stack the last k observations (1: off)
    dtype_float: bool = True  # cast observations to float32 (pixel values are scaled to [0, 1])


@dataclass
class SymmetryConfig:
    """A mirror symmetry of a board game, for mirror-equivariant networks (``algo.symmetric=true``);
    see marl/core/symmetry.py."""

    flip_axis: int | None = None  # axis of the (H, W, C) observation the mirror reverses (1: columns); null: none
    action_perm: list[int] | None = None  # the mirror image of Discrete action a is action_perm[a]


@dataclass
class EnvConfig:
    """Which env to build and how."""

    name: str = MISSING  # short name shown in run names (cartpole, simple_spread, ..., custom)
    kind: str = "pettingzoo"  # pettingzoo | gymnasium | vmas
    entry_point: str = MISSING  # "module.path:factory" for PettingZoo (parallel_env or env), gymnasium id otherwise
    scenario: str | None = None  # vmas: the VMAS scenario (simple_spread, navigation, ...); env.kwargs go to it
    kwargs: dict[str, Any] = field(default_factory=dict)  # passed to the factory (e.g. N, max_cycles)
    # run PettingZoo's api_test / parallel_api_test on load; null: on for your own envs (an entry point outside the
    # pettingzoo and mpe2 packages), off for PettingZoo's own
    check: bool | None = None
    backend: str = "auto"  # auto | inprocess | subprocess: where the env copies run (auto: measured at start)
    workers: int = 0  # subprocess worker processes (the main process steps a share too); 0 = CPU cores - 1
    pad: bool = False  # pad unlike agents' spaces to one group (SuperSuit) with an agent-id one-hot
    max_episode_steps: int | None = None  # gymnasium only: override the time limit
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    symmetry: SymmetryConfig = field(default_factory=SymmetryConfig)  # a mirror symmetry (connect_four), or none
    # who shares a reward objective: {team: [agents or patterns like adversary_*]}; null: inferred from agent-name
    # prefixes (adversary_0 / agent_0; player_* agents are each their own team). One team = a cooperative env.
    # Independent of the policy groups (one shared policy may serve agents of several teams).
    teams: dict[str, list[str]] | None = None


# --------------------------------------------------------------------------------------------------- algos


@dataclass
class AlgoConfig:
    """Fields every algorithm has. The values live in ``configs/algo/<name>.yaml`` (one YAML per algorithm sets
    every key of its schema); the schemas hold types, docs and validation, no competing defaults."""

    name: str = MISSING
    lr: float = MISSING  # Adam learning rate
    adam_eps: float = MISSING  # Adam epsilon
    gamma: float = MISSING  # discount
    hidden: list[int] = MISSING  # MLP hidden sizes (actor and critic)
    activation: str = MISSING  # tanh | relu | elu
    max_grad_norm: float = MISSING  # gradient-norm clip (0: off)
    normalize_obs: bool = MISSING  # running mean/std observation normalization
    sharing: str = MISSING  # shared | per_agent | by_prefix: how agents of a group map to policies
    groups: dict[str, list[str]] | None = MISSING  # explicit group -> agents map (overrides the automatic grouping)
    agent_id: bool = MISSING  # add an agent-id one-hot to the input when one policy serves several agents
    action_bound: str = MISSING  # clip | squash: how Gaussian actions meet Box bounds


@dataclass
class OnPolicyConfig(AlgoConfig):
    num_steps: int = MISSING  # rollout length T per env copy and iteration
    gae_lambda: float = MISSING  # GAE lambda (1: Monte Carlo with bootstrap)
    ent_coef: float = MISSING  # entropy bonus coefficient
    vf_coef: float = MISSING  # value loss coefficient
    norm_adv: bool = MISSING  # normalize advantages over the batch
    normalize_reward: bool = MISSING  # scale rewards by the running std of the discounted return
    anneal_lr: bool = MISSING  # linearly decay lr to 0 over total_steps
    critic_lr: float | None = MISSING  # the critic's Adam learning rate (null: lr; lr is then the actors')
    log_std_init: float = MISSING  # initial log std of Gaussian policies
    # conv layers [channels, kernel] or [channels, kernel, stride] (ReLU) applied to image / board observations
    # (H, W, C) before the MLP, in the actor and the local critic; null: flatten the observation into the MLP
    conv: list[list[int]] | None = MISSING
    symmetric: bool = MISSING  # average actor logits and local values over the position and its mirror (env.symmetry)
    rnn: str | None = MISSING  # gru | lstm: a recurrent cell in the actor and the critic; null: feed-forward
    rnn_hidden: int = MISSING  # units of the recurrent cell (algo.rnn)
    rnn_chunk: int = MISSING  # BPTT length: the update replays chunks of this many steps; must divide num_steps


@dataclass
class ReinforceConfig(OnPolicyConfig):
    baseline: bool = MISSING  # learn V(s) and subtract it (variance reduction); false: plain reward-to-go


@dataclass
class A2CConfig(OnPolicyConfig):
    returns: str = MISSING  # gae | nstep
    n_step: int = MISSING  # n for returns=nstep


@dataclass
class PPOConfig(OnPolicyConfig):
    variant: str = MISSING  # clip | kl | adaptive_kl
    clip_coef: float = MISSING  # epsilon of the clipped surrogate (variant=clip)
    clip_vloss: bool = MISSING  # clip the value update around the old value
    vclip_coef: float = MISSING  # value clip range (clip_vloss)
    update_epochs: int = MISSING  # passes over each rollout
    num_minibatches: int = MISSING  # minibatches per epoch
    target_kl: float | None = MISSING  # stop the epoch loop early above this approx KL (null: off)
    kl_coef: float = MISSING  # initial KL penalty coefficient (variant=kl|adaptive_kl)
    kl_target: float = MISSING  # adaptive_kl: halve coef below target/1.5, double above target*1.5


@dataclass
class MultiPPOConfig(PPOConfig):
    """IPPO: PPO per agent on its own reward (no team reward: see CentralPPOConfig)."""

    value_norm: bool = MISSING  # running mean/std of return targets, per value unit (Yu et al. 2022)
    critic_hidden: list[int] | None = MISSING  # critic hidden sizes (null: same as hidden)


@dataclass
class CentralPPOConfig(MultiPPOConfig):
    """MAPPO / HAPPO: a centralized critic on the global state."""

    # sum | mean of each team's members' rewards: the team reward of its joint GAE and team value (a team of one:
    # the agent's own reward); none: every agent its own reward and its own central value
    team_reward: str = MISSING


@dataclass
class HAPPOConfig(CentralPPOConfig):
    """HAPPO: MAPPO's keys; its sequential update needs each agent's own parameters (``sharing: per_agent``)."""


@dataclass
class GRPOConfig(AlgoConfig):
    """GRPO: no critic; group-relative advantages over ``group_size`` env copies reset with the same seed."""

    num_steps: int = MISSING  # rows per copy and iteration, at least: whole rounds are collected until this many
    group_size: int = MISSING  # G: env copies per group (reset with the same seed); must divide num_envs
    grpo_advantage: str = MISSING  # episode | step: the episode's return, or the reward-to-go per step index
    clip_coef: float = MISSING  # epsilon of the clipped surrogate
    update_epochs: int = MISSING  # passes over each rollout
    num_minibatches: int = MISSING  # minibatches per epoch
    target_kl: float | None = MISSING  # stop the epoch loop early above this approx KL (null: off)
    kl_coef: float = MISSING  # weight of the KL term to the reference policy (0: none)
    ref_update_every: int = MISSING  # iterations between refreshes of the reference policy (0: the initial policy)
    ent_coef: float = MISSING  # entropy bonus coefficient
    anneal_lr: bool = MISSING  # linearly decay lr to 0 over total_steps
    log_std_init: float = MISSING  # initial log std of Gaussian policies
    conv: list[list[int]] | None = MISSING  # conv layers of the actor (as OnPolicyConfig.conv)
    symmetric: bool = MISSING  # mirror-equivariant actor (env.symmetry)
    team_reward: str = MISSING  # sum | mean: a team's group statistic on its team reward; none: per agent


@dataclass
class TRPOConfig(AlgoConfig):
    """TRPO: the natural-gradient actor step under a KL bound; ``lr`` is the critic's (the actor has no optimizer)."""

    num_steps: int = MISSING  # rollout length T per env copy and iteration
    gae_lambda: float = MISSING  # GAE lambda
    ent_coef: float = MISSING  # entropy bonus in the surrogate
    norm_adv: bool = MISSING  # normalize advantages over the batch
    normalize_reward: bool = MISSING  # scale rewards by the running std of the discounted return
    anneal_lr: bool = MISSING  # linearly decay the critic lr to 0 over total_steps
    log_std_init: float = MISSING  # initial log std of Gaussian policies
    conv: list[list[int]] | None = MISSING  # conv layers (as OnPolicyConfig.conv)
    symmetric: bool = MISSING  # mirror-equivariant actor and local critic (env.symmetry)
    max_kl: float = MISSING  # trust region: mean KL(pi_old || pi) of an accepted step is at most this
    cg_iters: int = MISSING  # conjugate-gradient iterations for F^-1 g
    cg_damping: float = MISSING  # added to the Fisher-vector product (F + damping I) for stability
    backtrack_iters: int = MISSING  # line-search trials (step fractions 1, coef, coef^2, ...)
    backtrack_coef: float = MISSING  # line-search shrink factor in (0, 1)
    update_epochs: int = MISSING  # critic passes over each rollout
    num_minibatches: int = MISSING  # critic minibatches per pass
    rnn: str | None = MISSING  # gru | lstm | null (as OnPolicyConfig.rnn)
    rnn_hidden: int = MISSING  # units of the recurrent cell
    rnn_chunk: int = MISSING  # BPTT chunk length; must divide num_steps


@dataclass
class HATRPOConfig(TRPOConfig):
    """HATRPO: TRPO's keys plus the centralized critic's (as MAPPO); needs ``sharing: per_agent``."""

    value_norm: bool = MISSING  # running mean/std of return targets, per value unit (Yu et al. 2022)
    critic_hidden: list[int] | None = MISSING  # critic hidden sizes (null: same as hidden)
    team_reward: str = MISSING  # sum | mean | none (as CentralPPOConfig.team_reward)


@dataclass
class OffPolicyConfig(AlgoConfig):
    """Replay-based actor-critics (DDPG, TD3, SAC, MADDPG, MATD3)."""

    actor_lr: float = MISSING
    critic_lr: float = MISSING
    buffer_size: int = MISSING  # replay capacity (transitions)
    batch_size: int = MISSING
    tau: float = MISSING  # Polyak averaging rate of the target networks
    learning_starts: int = MISSING  # env steps of uniform random actions before learning
    train_freq: int = MISSING  # env steps (per copy) between updates
    gradient_steps: int = MISSING  # updates per train step
    policy_delay: int = MISSING  # critic updates per actor update


@dataclass
class DDPGConfig(OffPolicyConfig):
    noise: str = MISSING  # gaussian | ou
    noise_std: float = MISSING  # exploration noise std, as a fraction of the action range half-width
    ou_theta: float = MISSING  # Ornstein-Uhlenbeck mean reversion


@dataclass
class TD3Config(DDPGConfig):
    target_noise: float = MISSING  # std of the target-policy smoothing noise (fraction of the half-range)
    target_noise_clip: float = MISSING  # the smoothing noise is clipped to +-this


@dataclass
class SACConfig(OffPolicyConfig):
    alpha: float = MISSING  # initial entropy temperature
    autotune: bool = MISSING  # tune alpha towards target_entropy
    alpha_lr: float = MISSING  # Adam learning rate of log(alpha)
    target_entropy: float | None = MISSING  # null: -|A| (Box), target_entropy_scale * log|A| (Discrete)
    target_entropy_scale: float = MISSING  # Discrete, target_entropy null: fraction of the maximum entropy log|A|


@dataclass
class MADDPGConfig(DDPGConfig):
    """MADDPG: decentralized actors, a centralized critic per team on the global state and all agents' actions."""

    # sum | mean of each team's members' rewards: the reward of its centralized critic; none: one critic unit per
    # agent on its own reward (MADDPG's original per-agent critics)
    team_reward: str = MISSING
    gumbel_temperature: float = MISSING  # Discrete: temperature of the straight-through Gumbel-softmax


@dataclass
class MATD3Config(MADDPGConfig):
    target_noise: float = MISSING  # as TD3 (Box actions)
    target_noise_clip: float = MISSING


@dataclass(frozen=True)
class AlgoInfo:
    """Capability flags per algorithm; they drive validation and the algo x env test matrix."""

    schema: type
    on_policy: bool
    discrete: bool
    continuous: bool
    centralized_critic: bool
    needs_per_agent: bool = False
    turn_based: bool = True


ALGOS: dict[str, AlgoInfo] = {
    "reinforce": AlgoInfo(ReinforceConfig, True, True, True, False),
    "a2c": AlgoInfo(A2CConfig, True, True, True, False),
    "ppo": AlgoInfo(PPOConfig, True, True, True, False),
    "ddpg": AlgoInfo(DDPGConfig, False, False, True, False, turn_based=False),
    "ippo": AlgoInfo(MultiPPOConfig, True, True, True, False),
    "mappo": AlgoInfo(CentralPPOConfig, True, True, True, True),
    "happo": AlgoInfo(HAPPOConfig, True, True, True, True, needs_per_agent=True),
    "td3": AlgoInfo(TD3Config, False, False, True, False, turn_based=False),
    "sac": AlgoInfo(SACConfig, False, True, True, False, turn_based=False),
    "maddpg": AlgoInfo(MADDPGConfig, False, True, True, True, turn_based=False),
    "matd3": AlgoInfo(MATD3Config, False, True, True, True, turn_based=False),
    "grpo": AlgoInfo(GRPOConfig, True, True, True, False),
    "trpo": AlgoInfo(TRPOConfig, True, True, True, False),
    "hatrpo": AlgoInfo(HATRPOConfig, True, True, True, True, needs_per_agent=True),
}

# -------------------------------------------------------------------------------------------------- logger


@dataclass
class WandbConfig:
    enabled: bool = False
    project: str = "marl"
    entity: str | None = None
    mode: str | None = None  # online | offline | disabled; null: $WANDB_MODE, else offline
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    log_videos: bool = True  # upload evaluation videos written during training


@dataclass
class TensorboardConfig:
    enabled: bool = False


@dataclass
class LoggerConfig:
    """CSV is always on (``metrics.csv`` in the run directory); wandb and tensorboard on request."""

    csv: bool = True
    wandb: WandbConfig = field(default_factory=WandbConfig)
    tensorboard: TensorboardConfig = field(default_factory=TensorboardConfig)


# ------------------------------------------------------------------------------------------------ self-play


@dataclass
class SelfPlayConfig:
    """Self-play in turn-based (AEC) games (marl/selfplay.py); parallel and single-agent envs ignore it.

    One policy (``algo.sharing=shared``) plays every seat; in a fraction of the env copies the seats other than the
    learner's are played by an opponent drawn per episode from the pool (frozen snapshots of earlier policies, and
    optional scripted baselines). Opponent moves are never trained on.
    """

    pool_fraction: float = MISSING  # fraction of env copies playing pool opponents (0: pure self-play), in [0, 1]
    pool_size: int = MISSING  # frozen snapshots kept (the oldest is dropped); the initial policy is the first
    snapshot_every: int = MISSING  # env steps between snapshots of the learning policy
    baselines: list[str] = MISSING  # scripted opponents in the pool: random | heuristic | minimax
    baseline_prob: float = MISSING  # chance a pool episode draws a baseline, not a snapshot (when baselines given)
    seat: str = MISSING  # alternate | random: the learner's seat in a pool copy, per episode
    eval_opponents: list[str] = MISSING  # baselines the periodic evaluation plays


# ------------------------------------------------------------------------------------------------------ ray


@dataclass
class RayConfig:
    """``env.backend=ray``: rollout workers as Ray actors (marl/distributed, docs/distributed.md)."""

    address: str | None = MISSING  # null: start Ray on this machine; auto: join `ray start --head`; ray://host:port
    mode: str = MISSING  # sync (the in-process algorithm) | async (V-trace corrects the policy lag)
    envs_per_worker: int | None = MISSING  # env copies per worker (num_envs = env.workers x this); null: shared
    num_cpus: int | None = MISSING  # a local Ray's CPUs (null: this machine's cores)
    object_store_mb: int = MISSING  # a local Ray's object store size (MiB)
    worker_cpus: float = MISSING  # CPUs each rollout worker reserves
    timeout_s: float = MISSING  # a worker call taking longer is a hung worker: it is rebuilt
    max_failures: int = MISSING  # failures of one worker in a row that stop the run (with a checkpoint)
    rho_bar: float = MISSING  # V-trace: truncation of the importance weights in the targets and policy gradient
    c_bar: float = MISSING  # V-trace: truncation of the trace coefficients


# ----------------------------------------------------------------------------------------------------- run


@dataclass
class TrainConfig:
    """The run config. Values: ``configs/config.yaml`` (run keys, ``selfplay``), ``configs/env/*.yaml``,
    ``configs/algo/*.yaml``, ``configs/logger/*.yaml``; optional env keys and the logger switches (off) default here."""

    env: EnvConfig = field(default_factory=EnvConfig)
    algo: Any = MISSING  # one of the ALGOS schemas, chosen by algo.name
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    selfplay: SelfPlayConfig = field(default_factory=SelfPlayConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    preset: str = MISSING  # the tuned preset applied (configs/preset/<name>.yaml, by default <env>_<algo>), or none
    seed: int = MISSING
    total_steps: int = MISSING  # env steps (one step of all E copies counts E)
    num_envs: int = MISSING  # env copies E
    device: str = MISSING  # cpu | cuda | auto (cuda when available)
    threads: int = MISSING  # torch intra-op threads; 0 = auto (1 when env workers use the other core)
    eval_every: int = MISSING  # env steps between deterministic evaluations (0: off)
    eval_episodes: int = MISSING
    checkpoint_every: int = MISSING  # env steps between checkpoints (0: only final); always on Ctrl-C
    resume: str | None = MISSING  # run directory (or checkpoint file) to continue
    run_dir: str | None = MISSING  # where this run writes (default: Hydra's output dir)
    progress: bool = MISSING  # live progress bar
    debug: bool = MISSING  # show tracebacks for user errors


RANGES: dict[str, tuple[str, Any]] = {
    # key -> (rule, bound); rule is one of gt0 | ge0 | ge1 | unit_open_closed | unit_closed
    "seed": ("ge0", None),
    "total_steps": ("gt0", None),
    "num_envs": ("ge1", None),
    "eval_episodes": ("ge1", None),
    "eval_every": ("ge0", None),
    "checkpoint_every": ("ge0", None),
    "threads": ("ge0", None),
    "algo.lr": ("gt0", None),
    "algo.actor_lr": ("gt0", None),
    "algo.critic_lr": ("gt0", None),
    "algo.gamma": ("unit_open_closed", None),
    "algo.rnn_hidden": ("ge1", None),
    "algo.rnn_chunk": ("ge1", None),
    "algo.gae_lambda": ("unit_closed", None),
    "algo.clip_coef": ("gt0", None),
    "algo.vclip_coef": ("gt0", None),
    "algo.num_steps": ("ge1", None),
    "algo.update_epochs": ("ge1", None),
    "algo.num_minibatches": ("ge1", None),
    "algo.ent_coef": ("ge0", None),
    "algo.vf_coef": ("ge0", None),
    "algo.max_grad_norm": ("ge0", None),
    "algo.kl_coef": ("ge0", None),
    "algo.kl_target": ("gt0", None),
    "algo.tau": ("unit_open_closed", None),
    "algo.batch_size": ("ge1", None),
    "algo.buffer_size": ("ge1", None),
    "algo.noise_std": ("ge0", None),
    "algo.n_step": ("ge1", None),
    "algo.learning_starts": ("ge0", None),
    "algo.train_freq": ("ge1", None),
    "algo.gradient_steps": ("ge1", None),
    "algo.policy_delay": ("ge1", None),
    "algo.target_noise": ("ge0", None),
    "algo.target_noise_clip": ("ge0", None),
    "algo.alpha": ("gt0", None),
    "algo.alpha_lr": ("gt0", None),
    "algo.target_entropy_scale": ("ge0", None),
    "algo.gumbel_temperature": ("gt0", None),
    "algo.group_size": ("ge1", None),
    "algo.ref_update_every": ("ge0", None),
    "algo.max_kl": ("gt0", None),
    "algo.cg_iters": ("ge1", None),
    "algo.cg_damping": ("ge0", None),
    "algo.backtrack_iters": ("ge1", None),
    "algo.backtrack_coef": ("unit_open_closed", None),
    "env.workers": ("ge0", None),
    "ray.envs_per_worker": ("ge1", None),
    "ray.object_store_mb": ("ge1", None),
    "ray.worker_cpus": ("gt0", None),
    "ray.timeout_s": ("gt0", None),
    "ray.max_failures": ("ge1", None),
    "ray.rho_bar": ("gt0", None),
    "ray.c_bar": ("gt0", None),
    "env.preprocess.frame_stack": ("ge1", None),
}

CHOICES: dict[str, tuple[str, ...]] = {
    "device": ("cpu", "cuda", "auto"),
    "env.kind": ("pettingzoo", "gymnasium", "vmas"),
    "env.backend": ("auto", "inprocess", "subprocess", "ray"),
    "ray.mode": ("sync", "async"),
    "algo.activation": ("tanh", "relu", "elu"),
    "algo.sharing": ("shared", "per_agent", "by_prefix"),
    "algo.action_bound": ("clip", "squash"),
    "algo.variant": ("clip", "kl", "adaptive_kl"),
    "algo.rnn": ("gru", "lstm"),
    "algo.returns": ("gae", "nstep"),
    "algo.noise": ("gaussian", "ou"),
    "algo.team_reward": ("sum", "mean", "none"),
    "algo.grpo_advantage": ("episode", "step"),
}


def _valid_keys(schema: type) -> list[str]:
    return [f.name for f in fields(schema)]


def _merge(schema: type, node: Any, path: str) -> DictConfig:
    """Merge a user node into a structured schema, turning OmegaConf errors into a ConfigError with the key."""
    base = OmegaConf.structured(schema)
    try:
        return OmegaConf.merge(base, node)
    except ConfigKeyError as e:
        key = str(getattr(e, "key", "") or "").split(".")[-1] or str(e)
        full = f"{path}.{key}" if path else key
        parent = getattr(e, "full_key", "") or ""
        sub = schema
        for part in parent.split(".")[:-1]:
            fld = {f.name: f for f in fields(sub)}.get(part)
            if fld is None or not is_dataclass(fld.default_factory() if callable(fld.default_factory) else None):
                break
            sub = type(fld.default_factory())
        valid = _valid_keys(sub)
        close = difflib.get_close_matches(key, valid, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigError(
            f"unknown config key '{full if not parent else (path + '.' if path else '') + parent}'",
            f"{hint}valid keys here: {', '.join(valid)}",
        ) from None
    except ValidationError as e:
        key = getattr(e, "full_key", "") or ""
        full = f"{path}.{key}" if path else key
        value = getattr(e, "value", None)
        if isinstance(value, float) and "to Integer" in str(e):
            whole = f"{full}={int(value)}" if value.is_integer() else f"{full}=<a whole number>"
            raise ConfigError(f"'{full}' must be an integer, got {_short(value)}",
                              f"write it without a decimal point or exponent, e.g. {whole}") from None
        msg = str(e).splitlines()[0]
        raise ConfigError(
            f"bad value for '{full}': {msg}", "check the type expected by the schema in marl/config.py"
        ) from None


def _short(value: float) -> str:
    """A float as a person would type it: 2000.0 -> 2e3, 1500000.0 -> 1.5e6, 0.5 -> 0.5."""
    if value.is_integer() and abs(value) >= 1000:
        mantissa, exp = f"{value:e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exp)}"
    return repr(value)


def _check_recurrent(cfg: DictConfig) -> None:
    """``algo.rnn``: the chunk length must divide the rollout, and the minibatches split chunks."""
    a = cfg.algo
    if not a.get("rnn"):
        return
    if a.num_steps % a.rnn_chunk:
        raise ConfigError(f"'algo.rnn_chunk={a.rnn_chunk}' does not divide algo.num_steps={a.num_steps}: the update "
                          "replays every rollout as whole chunks of rnn_chunk steps",
                          "pick an algo.rnn_chunk that divides algo.num_steps (e.g. "
                          f"{max(d for d in range(1, min(a.num_steps, 16) + 1) if a.num_steps % d == 0)})")
    n, chunks = a.get("num_minibatches"), a.num_steps // a.rnn_chunk * cfg.num_envs
    if n is not None and n > chunks:
        raise ConfigError(f"'algo.num_minibatches={n}' is larger than the number of chunks a recurrent update "
                          f"splits: num_steps / rnn_chunk x num_envs = {a.num_steps} / {a.rnn_chunk} x "
                          f"{cfg.num_envs} = {chunks}",
                          f"pass algo.num_minibatches={chunks} or less, or a shorter algo.rnn_chunk")


def _check_minibatches(cfg: DictConfig) -> None:
    """PPO family: an epoch splits the num_steps * num_envs rollout into num_minibatches; more is refused."""
    n, batch = cfg.algo.get("num_minibatches"), cfg.algo.get("num_steps", 0) * cfg.num_envs
    if n is not None and n > batch:
        raise ConfigError(f"'algo.num_minibatches={n}' is larger than the batch it splits: algo.num_steps x num_envs "
                          f"= {cfg.algo.num_steps} x {cfg.num_envs} = {batch} samples",
                          f"pass algo.num_minibatches={batch} or less, or raise algo.num_steps / num_envs")


def _check_ranges(cfg: DictConfig) -> None:
    for key, (rule, _) in RANGES.items():
        val = OmegaConf.select(cfg, key, default=None)
        if val is None:
            continue
        ok = {
            "gt0": lambda v: v > 0,
            "ge0": lambda v: v >= 0,
            "ge1": lambda v: v >= 1,
            "unit_open_closed": lambda v: 0 < v <= 1,
            "unit_closed": lambda v: 0 <= v <= 1,
        }[rule](val)
        if not ok:
            need = {
                "gt0": "> 0",
                "ge0": ">= 0",
                "ge1": ">= 1",
                "unit_open_closed": "in (0, 1]",
                "unit_closed": "in [0, 1]",
            }[rule]
            raise ConfigError(f"'{key}={val}' is out of range: it must be {need}", f"pass e.g. {key}=<value {need}>")
    for key, choices in CHOICES.items():
        val = OmegaConf.select(cfg, key, default=None)
        if val is not None and val not in choices:
            raise ConfigError(f"'{key}={val}' is not a valid choice", f"choose one of: {', '.join(choices)}")


def validate(cfg: DictConfig | dict) -> DictConfig:
    """Return the config merged into its typed schema; raise :class:`ConfigError` naming the key on any problem."""
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(cfg)
    algo = cfg.get("algo")
    if algo is None or not isinstance(algo, DictConfig) or "name" not in algo:
        raise ConfigError("no algorithm selected", f"pass algo=NAME with NAME one of: {', '.join(ALGOS)}")
    name = algo.name
    if name not in ALGOS:
        raise ConfigError(f"unknown algorithm '{name}'", f"choose one of: {', '.join(ALGOS)}")
    if "team_reward" in algo and not any(f.name == "team_reward" for f in fields(ALGOS[name].schema)):
        raise ConfigError(f"algo.team_reward does not apply to algo={name}: it trains every agent on its own reward "
                          "with its own value (a team reward needs the centralized critic of mappo / happo)",
                          "drop algo.team_reward, or use algo=mappo (or happo) to train each team on its team reward")
    if algo.get("rnn") and not any(f.name == "rnn" for f in fields(ALGOS[name].schema)):
        raise ConfigError(f"algo.rnn={algo.rnn} is not available for algo={name}: "
                          + ("its collection runs whole rounds of seed-matched group copies and records no "
                             "recurrent states" if name == "grpo" else "it has no recurrent networks"),
                          "use an on-policy learner for a recurrent policy (ppo, ippo, mappo, happo, a2c, reinforce, "
                          "trpo, hatrpo), or set algo.rnn=null")
    top = OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k not in ("algo", "hydra")])
    merged = _merge(TrainConfig, top, "")
    merged.algo = _merge(ALGOS[name].schema, algo, "algo")
    OmegaConf.set_readonly(merged, False)
    missing = sorted(OmegaConf.missing_keys(merged))
    if missing:
        raise ConfigError(
            f"missing required config value(s): {', '.join(missing)}",
            "set them on the command line or in the YAML; from Python, pass a dict to marl.train.run or "
            "marl.config.compose, which start from configs/ as the CLI does",
        )
    _check_ranges(merged)
    _check_ray(merged)
    _check_minibatches(merged)
    _check_recurrent(merged)
    _check_groups(merged)
    return merged


def _check_groups(cfg: DictConfig) -> None:
    """GRPO's groups start their copies from one state, which a VMAS batch cannot do (checked before the run
    directory exists)."""
    if cfg.env.kind == "vmas" and int(cfg.algo.get("group_size") or 1) > 1:
        raise ConfigError(f"VMAS envs cannot start groups of copies from the same state (algo.group_size="
                          f"{cfg.algo.group_size} with env '{cfg.env.name}')",
                          "use a PettingZoo or gymnasium env for GRPO's replicated starts, or another algo (mappo)")


def _check_ray(cfg: DictConfig) -> None:
    """``env.backend=ray``: an algorithm whose rollout the workers run, and ``num_envs`` from
    ``ray.envs_per_worker`` where given."""
    if cfg.env.backend != "ray":
        return
    name = cfg.algo.name
    if cfg.env.kind == "vmas":
        raise ConfigError(f"env.backend=ray with the VMAS env '{cfg.env.name}': VMAS steps all its copies as one "
                          "batched torch env in this process, which Ray workers would only split",
                          "drop env.backend (raise num_envs instead, or use device=cuda)")
    epw, workers = cfg.ray.envs_per_worker, int(cfg.env.workers)
    if epw is not None:
        if not workers:
            raise ConfigError("ray.envs_per_worker needs env.workers (the number of Ray rollout workers)",
                              f"pass env.workers=N (num_envs becomes N x {epw}), or drop ray.envs_per_worker")
        cfg.num_envs = workers * int(epw)
    if workers and cfg.num_envs % workers:
        raise ConfigError(f"num_envs={cfg.num_envs} copies cannot be shared equally by env.workers={workers} Ray "
                          "workers", f"pass num_envs={workers * max(1, cfg.num_envs // workers)} (a multiple of "
                          f"{workers}), or ray.envs_per_worker=N for N copies per worker")
    if name == "grpo":
        ray_grpo(int(cfg.algo.group_size), cfg.num_envs // workers if workers else None, str(cfg.ray.mode))
    if cfg.ray.mode == "async" and cfg.algo.get("rnn"):
        raise ConfigError(f"ray.mode=async with algo.rnn={cfg.algo.rnn}: V-trace's importance weights need the current "
                          "policy's log-probabilities of a lagged rollout, which marl computes for feed-forward "
                          "policies only", "use ray.mode=sync with a recurrent policy, or algo.rnn=null")
    if cfg.ray.mode == "async" and not ALGOS[name].on_policy and workers:
        async_gradient_steps(name, int(cfg.algo.gradient_steps), workers)
    n_mb = cfg.algo.get("num_minibatches")
    batch = cfg.algo.num_steps * (cfg.num_envs // max(workers, 1)) if ALGOS[name].on_policy else 0
    if cfg.ray.mode == "async" and workers and n_mb is not None and n_mb > batch:
        raise ConfigError(f"'algo.num_minibatches={n_mb}' is larger than an async update's batch: one worker's "
                          f"rollout, algo.num_steps x num_envs / env.workers = {batch} samples",
                          f"pass algo.num_minibatches={batch} or less, or raise algo.num_steps / num_envs")


def ray_grpo(group_size: int, envs_per_worker: int | None, mode: str) -> None:
    """``env.backend=ray`` with GRPO: sync mode, and whole groups in every worker (``envs_per_worker`` None: not
    known yet)."""
    if mode == "async":
        raise ConfigError("ray.mode=async with algo=grpo: a lagged rollout is corrected with V-trace, which needs the "
                          "critic's values, and GRPO has no critic", "use ray.mode=sync with grpo")
    if envs_per_worker is not None and envs_per_worker % group_size:
        raise ConfigError(f"env.backend=ray with algo=grpo: each Ray worker must hold whole groups, but its "
                          f"{envs_per_worker} env copies are not a multiple of algo.group_size={group_size}",
                          f"pass ray.envs_per_worker={group_size * max(1, envs_per_worker // group_size)} (a multiple "
                          "of algo.group_size), or another num_envs")


def async_gradient_steps(name: str, steps: int, workers: int) -> int:
    """The updates per round of an off-policy learner in ``ray.mode=async``: a round trains on one worker's
    ``algo.train_freq`` steps, ``1 / workers`` of a round in one process, so ``gradient_steps / workers`` keeps the
    updates per env step; refused where that is not a whole number."""
    if steps % workers:
        raise ConfigError(f"ray.mode=async with algo={name}: each update round trains on one worker's "
                          f"algo.train_freq steps, 1/{workers} of a round in one process, so it runs "
                          f"algo.gradient_steps / env.workers updates, but gradient_steps={steps} is not a "
                          f"multiple of env.workers={workers}",
                          f"pass algo.gradient_steps={workers * max(1, steps // workers)} (the default ${{num_envs}} "
                          "always is one), or ray.mode=sync")
    return steps // workers


def resolve_device(device: str) -> str:
    """Map cpu | cuda | auto to a torch device string, refusing cuda where none exists."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA device is available", "use device=cpu (or device=auto)")
    return device


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# ---------------------------------------------------------------------------------------------- composition

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"

# hydra.output_subdir in configs/config.yaml: Hydra's .hydra/ record in the job dirs of a sweep (marl's sweep summary
# reads it); none for a single run, whose Hydra dir is "." (the run makes its own directory: marl.rundir)
OmegaConf.register_new_resolver("marl_job_subdir", lambda mode: ".hydra" if str(mode).endswith("MULTIRUN") else None,
                                replace=True)


def check_preset(name: str) -> None:
    """A preset asked for by name must exist (Hydra skips a missing one silently: its default is optional)."""
    shipped = sorted(p.stem for p in (CONFIG_DIR / "preset").glob("*.yaml"))
    if name not in shipped:
        close = difflib.get_close_matches(name, shipped, n=1)
        raise ConfigError(f"unknown preset '{name}' (no configs/preset/{name}.yaml)",
                          (f"did you mean '{close[0]}'? " if close else "") + f"choose one of: {', '.join(shipped)}")


def compose(values: Mapping[str, Any] | None = None, overrides: Sequence[str] = ()) -> DictConfig:
    """The validated config that ``scripts/train.py env=E algo=A [preset=P] OVERRIDES`` composes, with ``values`` on
    top.

    ``values`` is a nested dict such as ``{"env": {"name": "cartpole"}, "algo": {"name": "ppo", "lr": 1e-3}}``;
    E and A are its ``env.name`` and ``algo.name`` (the CLI's defaults where absent), P its ``preset`` (default: the
    tuned ``configs/preset/<E>_<A>.yaml`` where one exists; ``"none"``: no preset). An env with no YAML of its name
    starts from ``env=custom`` and needs its own ``env.entry_point``.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    user = OmegaConf.create(dict(values or {}))
    groups = []
    if user.get("preset") is not None:
        preset = str(user.pop("preset"))
        check_preset(preset)
        groups.append(f"preset={preset}")
    env, algo = user.get("env") or {}, user.get("algo") or {}
    if "name" in algo:
        if algo["name"] not in ALGOS:
            raise ConfigError(f"unknown algorithm '{algo['name']}'", f"choose one of: {', '.join(ALGOS)}")
        groups.append(f"algo={algo['name']}")
    if "name" in env:
        shipped = sorted(p.stem for p in (CONFIG_DIR / "env").glob("*.yaml"))
        if env["name"] in shipped:
            groups.append(f"env={env['name']}")
        elif env.get("entry_point") is not None:
            groups.append("env=custom")
        else:
            close = difflib.get_close_matches(str(env["name"]), shipped, n=1)
            raise ConfigError(f"unknown env '{env['name']}' (no configs/env/{env['name']}.yaml) and no env.entry_point",
                              (f"did you mean '{close[0]}'? " if close else "") + "choose one of: "
                              f"{', '.join(shipped)}; or give your own env's entry_point (module.path:factory)")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=[*groups, *overrides])
    OmegaConf.set_struct(cfg, False)  # unknown keys in values: validate names them and suggests the closest
    return validate(OmegaConf.merge(cfg, user))
