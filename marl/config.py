"""Typed config schemas and validation.

Hydra composes ``configs/`` into a DictConfig; :func:`validate` checks it against the dataclasses below, so an
unknown key, a wrong type or an out-of-range value stops the run before training with a message naming the key and
the valid choices. Every field is documented here (the YAML files repeat the user-facing ones).
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field, fields, is_dataclass
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
    kind: str = "pettingzoo"  # pettingzoo | gymnasium
    entry_point: str = MISSING  # "module.path:factory" for PettingZoo (parallel_env or env), gymnasium id otherwise
    kwargs: dict[str, Any] = field(default_factory=dict)  # passed to the factory (e.g. N, max_cycles)
    # run PettingZoo's api_test / parallel_api_test on load; null: on for your own envs (an entry point outside the
    # pettingzoo and mpe2 packages), off for PettingZoo's own
    check: bool | None = None
    backend: str = "inprocess"  # inprocess | subprocess: where the env copies run
    workers: int = 0  # subprocess worker processes (the main process steps a share too); 0 = CPU cores - 1
    pad: bool = False  # pad unlike agents' spaces to one group (SuperSuit) with an agent-id one-hot
    max_episode_steps: int | None = None  # gymnasium only: override the time limit
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    symmetry: SymmetryConfig = field(default_factory=SymmetryConfig)  # a mirror symmetry (connect_four), or none


# --------------------------------------------------------------------------------------------------- algos


@dataclass
class AlgoConfig:
    """Fields every algorithm has."""

    name: str = MISSING
    lr: float = 3e-4  # Adam learning rate
    adam_eps: float = 1e-5  # Adam epsilon
    gamma: float = 0.99  # discount
    hidden: list[int] = field(default_factory=lambda: [64, 64])  # MLP hidden sizes (actor and critic)
    activation: str = "tanh"  # tanh | relu | elu
    max_grad_norm: float = 0.5  # gradient-norm clip (0: off)
    normalize_obs: bool = False  # running mean/std observation normalization
    sharing: str = "shared"  # shared | per_agent | by_prefix: how agents of a group map to policies
    groups: dict[str, list[str]] | None = None  # explicit group -> agents map (overrides the automatic grouping)
    agent_id: bool = True  # add an agent-id one-hot to the input when one policy serves several agents
    action_bound: str = "clip"  # clip | squash: how Gaussian actions meet Box bounds


@dataclass
class OnPolicyConfig(AlgoConfig):
    num_steps: int = 128  # rollout length T per env copy and iteration
    gae_lambda: float = 0.95  # GAE lambda (1: Monte Carlo with bootstrap)
    ent_coef: float = 0.0  # entropy bonus coefficient
    vf_coef: float = 0.5  # value loss coefficient
    norm_adv: bool = True  # normalize advantages over the batch
    normalize_reward: bool = False  # scale rewards by the running std of the discounted return
    anneal_lr: bool = False  # linearly decay lr to 0 over total_steps
    log_std_init: float = 0.0  # initial log std of Gaussian policies
    # conv layers [channels, kernel] or [channels, kernel, stride] (ReLU) applied to image / board observations
    # (H, W, C) before the MLP, in the actor and the local critic; null: flatten the observation into the MLP
    conv: list[list[int]] | None = None
    symmetric: bool = False  # average actor logits and local values over the position and its mirror (env.symmetry)


@dataclass
class ReinforceConfig(OnPolicyConfig):
    baseline: bool = True  # learn V(s) and subtract it (variance reduction); false: plain reward-to-go
    gae_lambda: float = 1.0
    norm_adv: bool = True


@dataclass
class A2CConfig(OnPolicyConfig):
    returns: str = "gae"  # gae | nstep
    n_step: int = 5  # n for returns=nstep
    num_steps: int = 5
    lr: float = 7e-4


@dataclass
class PPOConfig(OnPolicyConfig):
    variant: str = "clip"  # clip | kl | adaptive_kl
    clip_coef: float = 0.2  # epsilon of the clipped surrogate (variant=clip)
    clip_vloss: bool = False  # clip the value update around the old value
    vclip_coef: float = 0.2  # value clip range (clip_vloss)
    update_epochs: int = 10  # passes over each rollout
    num_minibatches: int = 4  # minibatches per epoch
    target_kl: float | None = None  # stop the epoch loop early above this approx KL (null: off)
    kl_coef: float = 0.2  # initial KL penalty coefficient (variant=kl|adaptive_kl)
    kl_target: float = 0.01  # adaptive_kl: halve coef below target/1.5, double above target*1.5


@dataclass
class MultiPPOConfig(PPOConfig):
    value_norm: bool = True  # running mean/std of return targets (Yu et al. 2022)
    critic_hidden: list[int] | None = None  # centralized critic sizes (null: same as hidden)
    team_reward: str = "auto"  # mappo/happo: sum | mean of agents' rewards as one team reward (joint GAE), none:
    # each agent's own reward with a per-agent central value (competitive games); auto: none if turn-based, else sum


@dataclass
class HAPPOConfig(MultiPPOConfig):
    sharing: str = "per_agent"  # HAPPO's sequential update needs each agent's own parameters
    update_epochs: int = 5


@dataclass
class DDPGConfig(AlgoConfig):
    actor_lr: float = 1e-3
    critic_lr: float = 1e-3
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    activation: str = "relu"
    max_grad_norm: float = 0.0
    buffer_size: int = 1_000_000  # replay capacity (transitions)
    batch_size: int = 256
    tau: float = 0.005  # Polyak averaging rate of the target networks
    learning_starts: int = 1000  # env steps of uniform random actions before learning
    train_freq: int = 1  # env steps (per copy) between updates
    gradient_steps: int = 1  # updates per train step
    noise: str = "gaussian"  # gaussian | ou
    noise_std: float = 0.1  # exploration noise std, as a fraction of the action range half-width
    ou_theta: float = 0.15  # Ornstein-Uhlenbeck mean reversion
    policy_delay: int = 1  # critic updates per actor update


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
    "mappo": AlgoInfo(MultiPPOConfig, True, True, True, True),
    "happo": AlgoInfo(HAPPOConfig, True, True, True, True, needs_per_agent=True),
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

    pool_fraction: float = 0.25  # fraction of env copies playing pool opponents (0: pure self-play), in [0, 1]
    pool_size: int = 8  # frozen snapshots kept (the oldest is dropped); the initial policy is the first
    snapshot_every: int = 50_000  # env steps between snapshots of the learning policy
    baselines: list[str] = field(default_factory=list)  # scripted opponents in the pool: random | heuristic | minimax
    baseline_prob: float = 0.5  # chance a pool episode draws a baseline instead of a snapshot (when baselines given)
    seat: str = "alternate"  # alternate | random: the learner's seat in a pool copy, per episode
    eval_opponents: list[str] = field(default_factory=lambda: ["random"])  # baselines the periodic evaluation plays


# ----------------------------------------------------------------------------------------------------- run


@dataclass
class TrainConfig:
    env: EnvConfig = field(default_factory=EnvConfig)
    algo: Any = MISSING  # one of the ALGOS schemas, chosen by algo.name
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    selfplay: SelfPlayConfig = field(default_factory=SelfPlayConfig)
    seed: int = 0
    total_steps: int = 100_000  # env steps (one step of all E copies counts E)
    num_envs: int = 8  # env copies E
    device: str = "cpu"  # cpu | cuda | auto (cuda when available)
    threads: int = 0  # torch intra-op threads; 0 = auto (1 when env workers use the other core)
    eval_every: int = 0  # env steps between deterministic evaluations (0: off)
    eval_episodes: int = 10
    checkpoint_every: int = 0  # env steps between checkpoints (0: only final); always on Ctrl-C
    resume: str | None = None  # run directory (or checkpoint file) to continue
    run_dir: str | None = None  # where this run writes (default: Hydra's output dir)
    progress: bool = True  # live progress bar
    debug: bool = False  # show tracebacks for user errors


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
    "env.workers": ("ge0", None),
    "env.preprocess.frame_stack": ("ge1", None),
}

CHOICES: dict[str, tuple[str, ...]] = {
    "device": ("cpu", "cuda", "auto"),
    "env.kind": ("pettingzoo", "gymnasium"),
    "env.backend": ("inprocess", "subprocess"),
    "algo.activation": ("tanh", "relu", "elu"),
    "algo.sharing": ("shared", "per_agent", "by_prefix"),
    "algo.action_bound": ("clip", "squash"),
    "algo.variant": ("clip", "kl", "adaptive_kl"),
    "algo.returns": ("gae", "nstep"),
    "algo.noise": ("gaussian", "ou"),
    "algo.team_reward": ("auto", "sum", "mean", "none"),
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
    top = OmegaConf.masked_copy(cfg, [k for k in cfg.keys() if k not in ("algo", "hydra")])
    merged = _merge(TrainConfig, top, "")
    merged.algo = _merge(ALGOS[name].schema, algo, "algo")
    OmegaConf.set_readonly(merged, False)
    missing = sorted(OmegaConf.missing_keys(merged))
    if missing:
        raise ConfigError(
            f"missing required config value(s): {', '.join(missing)}", "set them on the command line or in the YAML"
        )
    _check_ranges(merged)
    _check_minibatches(merged)
    return merged


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
