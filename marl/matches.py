"""Matches between players, result tables with 95% confidence intervals, and rendering (video, terminal, window).

* :func:`play_matches`: ``episodes`` matches of a subject against an opponent on a batched env, the subject's seat
  alternating match by match; :func:`duel_summary` / :func:`format_duel` turn them into wins / draws / losses per
  seat with Wilson 95% intervals, plus the subject's mean payoff (± 95% normal interval).
* :func:`team_summary` / :func:`format_team`: team and per-agent returns (mean ± 95% CI) of cooperative / parallel
  episodes.
* :func:`single_env`: one env copy whose moves are watched by a :class:`Watcher` (frames for a video, boards printed
  in the terminal), so the final position of every game is seen before the copy resets itself.
* :func:`load_policy`: a trained learner from a run directory or checkpoint, checked against the env.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from omegaconf import DictConfig, OmegaConf
from pettingzoo import AECEnv
from pettingzoo.utils.wrappers import BaseParallelWrapper, BaseWrapper

from marl import checkpoint as ckpt
from marl.adapters.base import EpisodeStat, VecMultiEnv
from marl.adapters.registry import build_layout, make_env
from marl.adapters.vector import InProcessVecEnv
from marl.algos.base import Learner
from marl.config import validate
from marl.errors import ConfigError
from marl.opponents import Player
from marl.selfplay import seat_rows
from marl.train import make_learner

Z95 = 1.959963984540054  # two-sided 95% normal quantile


# ---------------------------------------------------------------------------------------------- playing


@dataclass
class MatchResult:
    """One finished match: the subject's seat (an agent name), everyone's return, the number of moves."""

    seat: str
    returns: dict[str, float]
    length: int

    @property
    def payoff(self) -> float:
        return self.returns[self.seat]

    @property
    def outcome(self) -> str:
        """win | draw | loss: the subject's return against the best other seat's."""
        best_other = max(v for a, v in self.returns.items() if a != self.seat)
        if self.payoff > best_other:
            return "win"
        return "loss" if self.payoff < best_other else "draw"


def play_matches(env: VecMultiEnv, subject: Player, opponent: Player, episodes: int, seed: int,
                 first_seat: int = 0, on_start: Callable[[int, str], None] | None = None,
                 on_result: Callable[[int, MatchResult], None] | None = None) -> list[MatchResult]:
    """Play ``episodes`` matches on the turn-based ``env``; match ``j`` seats the subject at agent
    ``(first_seat + j) % n_agents`` and the opponent at every other seat. Every env copy starts a new match when
    its previous one ends until all are assigned; copies with no match left play on unrecorded.
    ``on_start(j, seat)`` is called before match ``j``'s first move, ``on_result(j, result)`` when it ends."""
    spec = env.spec
    E, n_seats = spec.num_envs, len(spec.agents)
    match_of = np.full(E, -1, dtype=np.int64)  # match index each copy is playing (-1: none)
    seat = np.zeros(E, dtype=np.int64)
    results: list[MatchResult | None] = [None] * episodes
    started = 0

    def start(e: int) -> None:
        nonlocal started
        match_of[e] = started if started < episodes else -1
        seat[e] = (first_seat + started) % n_seats
        if on_start is not None and match_of[e] >= 0:
            on_start(started, spec.agents[seat[e]])
        started += 1

    last = env.reset(seed=seed)
    for e in range(E):
        start(e)
    while any(r is None for r in results):
        mine = seat_rows(spec, seat, np.ones(E, dtype=bool))
        a_sub = subject.act(last, {g: m & last.acting[g] for g, m in mine.items()})
        a_opp = opponent.act(last, {g: ~m & last.acting[g] for g, m in mine.items()})
        actions = {g: np.where(mine[g], a_sub[g], a_opp[g]) for g in mine}
        last = env.step(actions)
        for ep in last.episodes:
            e = ep.env_index
            if match_of[e] >= 0:
                results[match_of[e]] = MatchResult(spec.agents[seat[e]], dict(ep.returns), ep.length)
                if on_result is not None:
                    on_result(int(match_of[e]), results[match_of[e]])
            start(e)
    return [r for r in results if r is not None]


# ---------------------------------------------------------------------------------------------- statistics


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k / n`` (``(0, 1)`` when ``n == 0``)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def mean_ci(x: np.ndarray | list[float], z: float = Z95) -> tuple[float, float]:
    """Mean and the half-width of its normal 95% interval (``z * std / sqrt(n)``, sample std; 0 for n < 2)."""
    x = np.asarray(x, dtype=np.float64)
    if x.size < 2:
        return float(x.mean()) if x.size else float("nan"), 0.0
    return float(x.mean()), float(z * x.std(ddof=1) / math.sqrt(x.size))


def _wdl(results: list[MatchResult]) -> dict[str, Any]:
    n = len(results)
    out: dict[str, Any] = {"n": n}
    for key in ("win", "draw", "loss"):
        k = sum(r.outcome == key for r in results)
        lo, hi = wilson(k, n)
        out[key] = {"count": k, "rate": k / n if n else float("nan"), "ci": [lo, hi]}
    mean, half = mean_ci([r.payoff for r in results])
    out["payoff"] = {"mean": mean, "ci": half}
    out["length"] = float(np.mean([r.length for r in results])) if n else float("nan")
    return out


def duel_summary(results: list[MatchResult], agents: tuple[str, ...]) -> dict[str, Any]:
    """``{"all": stats, "seats": {agent: stats}}``; stats = n, win / draw / loss {count, rate, ci [lo, hi]},
    payoff {mean, ci half-width}, mean length (moves)."""
    return {"all": _wdl(results), "seats": {a: _wdl([r for r in results if r.seat == a]) for a in agents}}


def format_duel(summary: dict[str, Any], subject: str, opponent: str) -> str:
    """A plain-text table of :func:`duel_summary` (rates in %, Wilson 95% intervals in brackets)."""

    def cell(s: dict, key: str) -> str:
        d = s[key]
        return f"{d['count']:>4} {100 * d['rate']:5.1f}% [{100 * d['ci'][0]:5.1f}, {100 * d['ci'][1]:5.1f}]"

    head = f"{'subject seat':<14}{'n':>5}  {'wins':<27}{'draws':<27}{'losses':<27}{'payoff (mean ± 95% CI)':<24}"
    lines = [f"{subject} vs {opponent}: wins / draws / losses of {subject} (Wilson 95% CI)", head, "-" * len(head)]
    rows = [*summary["seats"].items(), ("all", summary["all"])]
    for name, s in rows:
        if s["n"] == 0:
            continue
        pay = f"{s['payoff']['mean']:+.3f} ± {s['payoff']['ci']:.3f}"
        lines.append(f"{name:<14}{s['n']:>5}  {cell(s, 'win'):<27}{cell(s, 'draw'):<27}{cell(s, 'loss'):<27}{pay}")
    return "\n".join(lines)


def team_summary(episodes: list[EpisodeStat]) -> dict[str, Any]:
    """Team return (sum over agents) and each agent's return: mean and 95% CI half-width; episode count, length."""
    mean, half = mean_ci([e.team_return for e in episodes])
    agents = list(episodes[0].returns) if episodes else []
    per = {a: dict(zip(("mean", "ci"), mean_ci([e.returns[a] for e in episodes]), strict=True)) for a in agents}
    return {"n": len(episodes), "team": {"mean": mean, "ci": half}, "agents": per,
            "length": float(np.mean([e.length for e in episodes])) if episodes else float("nan")}


def format_team(summary: dict[str, Any], name: str) -> str:
    lines = [f"{name}: {summary['n']} episodes, mean length {summary['length']:.1f}",
             f"{'':<20}{'return (mean ± 95% CI)':>26}",
             f"{'team':<20}{summary['team']['mean']:>16.3f} ± {summary['team']['ci']:.3f}"]
    lines += [f"{a:<20}{s['mean']:>16.3f} ± {s['ci']:.3f}" for a, s in summary["agents"].items()]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- policies


def load_policy(run_or_ckpt: str | Path) -> tuple[DictConfig, dict, Path]:
    """The validated config, payload and path of the checkpoint of a run directory (or a checkpoint file)."""
    path = ckpt.find_latest(run_or_ckpt)
    payload = ckpt.load(path)
    return validate(OmegaConf.create(payload["config"])), payload, path


def make_policy(cfg: DictConfig, payload: dict, path: Path, env: VecMultiEnv) -> Learner:
    """A learner restored from ``payload`` for ``env`` (refused, naming both envs, when the checkpoint does not fit)."""
    ckpt.check_compatible(payload, env.spec.name, None, env.spec, path)
    learner = make_learner(cfg, env, "cpu")
    ckpt.load_learner(learner, payload, path)
    return learner


# ---------------------------------------------------------------------------------------------- rendering


def text_board(env: Any) -> str | None:
    """Connect Four / tic-tac-toe boards as text (X = first player, O = second; empty tic-tac-toe cells show their
    number 1-9, Connect Four columns are numbered 1-7 below the board); None for other games."""
    name = str(env.metadata.get("name", ""))
    u = env.unwrapped
    if name.startswith("connect_four"):
        marks = ".XO"
        rows = [" ".join(marks[v] for v in u.board[r * 7:(r + 1) * 7]) for r in range(6)]
        return "\n".join([*rows, " ".join(str(c + 1) for c in range(7))])
    if name.startswith("tictactoe"):
        sq = u.board.squares
        cells = [str(i + 1) if v == 0 else "XO"[v - 1] for i, v in enumerate(sq)]
        return "\n---+---+---\n".join(" " + " | ".join(cells[r * 3:(r + 1) * 3]) for r in range(3))
    return None


def move_label(env: Any, action: Any) -> str:
    """How a move is named to a person: a Connect Four column / tic-tac-toe cell (1-based), else the action."""
    name = str(env.metadata.get("name", ""))
    if name.startswith("connect_four"):
        return f"column {int(action) + 1}"
    if name.startswith("tictactoe"):
        return f"cell {int(action) + 1}"
    return f"action {action}"


class Watcher:
    """Sees every move of one env copy for the first ``games`` games: ``mode="rgb_array"`` keeps the env's frames
    (the final position held for ``hold`` extra frames, at most ``max_frames`` in all), ``mode="text"`` prints each
    move and the board. ``roles`` (agent -> e.g. "policy" / "opponent") marks whose move it was; a new game's first
    board is printed with its first move, so a result printed between two games comes after the game it ends."""

    def __init__(self, mode: str, games: int, hold: int = 3, out: TextIO | None = None,
                 max_frames: int | None = None):
        self.mode, self.remaining, self.hold, self.out = mode, games, hold, out or sys.stdout
        self.max_frames = max_frames
        self.frames: list[np.ndarray] = []
        self.started = False
        self.pending: str | None = None  # the text of a new game's first board, printed with its first move
        self.roles: dict[str, str] = {}
        self.env: Any = None  # the watched (raw) env, known after its first reset

    def watch(self, games: int) -> None:
        """Watch the next ``games`` games (from the next reset on)."""
        self.remaining, self.started = games, False

    def on_reset(self, env: Any) -> None:
        """Called just after the env reset: the previous game (if any) is over."""
        self.env = env
        self.pending = None
        if self.started:
            self.remaining -= 1
            if self.mode == "rgb_array" and self.frames:
                self._add([self.frames[-1]] * self.hold)
        self.started = True
        if self.remaining > 0:
            self._show(env, "new game", defer=True)

    def on_move(self, env: Any, who: str | None, action: Any) -> None:
        """Called after every move (``who`` None: a joint step of a parallel env)."""
        if self.remaining > 0:
            role = f" ({self.roles[who]})" if who in self.roles else ""
            self._show(env, f"{who}{role} plays {move_label(env, action)}" if who else "all agents acted")

    def _add(self, frames: list[np.ndarray]) -> None:
        room = len(frames) if self.max_frames is None else max(0, self.max_frames - len(self.frames))
        self.frames.extend(frames[:room])

    def _show(self, env: Any, what: str, defer: bool = False) -> None:
        if self.mode == "rgb_array":
            if self.max_frames is None or len(self.frames) < self.max_frames:
                self._add([np.asarray(env.render())])
            return
        board = env.render() if env.render_mode == "ansi" else text_board(env)
        text = what + (f"\n{board}\n" if board else "")
        if defer:
            self.pending = text
            return
        if self.pending is not None:
            print(self.pending, file=self.out, flush=True)
            self.pending = None
        print(text, file=self.out, flush=True)


class _WatchedAEC(BaseWrapper):
    def __init__(self, env: AECEnv, watcher: Watcher):
        super().__init__(env)
        self.watcher = watcher

    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        self.env.reset(seed=seed, options=options)
        self.watcher.on_reset(self.env)

    def step(self, action: Any) -> None:
        who = self.env.agent_selection
        self.env.step(action)
        if action is not None:  # done agents are stepped with None to leave; that is no move
            self.watcher.on_move(self.env, who, action)


class _WatchedParallel(BaseParallelWrapper):
    def __init__(self, env: Any, watcher: Watcher):
        super().__init__(env)
        self.watcher = watcher

    def reset(self, seed: int | None = None, options: dict | None = None):
        out = self.env.reset(seed=seed, options=options)
        self.watcher.on_reset(self.env)
        return out

    def step(self, actions: dict):
        out = self.env.step(actions)
        self.watcher.on_move(self.env, None, actions)
        return out


def single_env(cfg: DictConfig, render_mode: str | None, watcher: Watcher | None, seed: int) -> VecMultiEnv:
    """One copy of ``cfg``'s PettingZoo env, grouped as training grouped it, built with ``render_mode`` and watched
    by ``watcher`` (None: not watched). A text watcher gets the env's own ``ansi`` rendering where it has one."""
    if cfg.env.kind != "pettingzoo":
        raise ConfigError(f"env '{cfg.env.name}' is a gymnasium env; watching single moves needs a PettingZoo env",
                          "use render=rgb_array video=... (recorded from the vectorized env) for gymnasium envs")
    grouping = "prefix" if cfg.algo.sharing == "by_prefix" else "spaces"
    groups = OmegaConf.to_container(cfg.algo.groups) if cfg.algo.groups is not None else None
    if cfg.env.pad:
        grouping, groups = "spaces", None
    probe = make_env(cfg.env)
    try:
        layout = build_layout(probe, cfg.env.name, grouping, groups, seed)
    finally:
        probe.close()
    if watcher is not None and watcher.mode == "text":
        render_mode = "ansi" if "ansi" in layout.render_modes else None
    raw = make_env(cfg.env, render_mode)
    env = raw
    if watcher is not None:
        env = _WatchedAEC(raw, watcher) if isinstance(raw, AECEnv) else _WatchedParallel(raw, watcher)
    return InProcessVecEnv(lambda: env, layout, 1, seed)


def check_display() -> None:
    """A window needs a display: raise a ConfigError with alternatives when there is none."""
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise ConfigError("render=human needs a display, and none is available here (DISPLAY is not set)",
                          "use render=rgb_array video=match.gif to write a video, or render=ansi to print the moves")


def env_fps(env_cfg: Any, default: float = 10.0) -> float:
    """The env's own playback speed, ``metadata["render_fps"]`` (``default`` where it declares none)."""
    env = make_env(env_cfg)
    try:
        fps = (getattr(env, "metadata", None) or {}).get("render_fps")
    finally:
        env.close()
    return float(fps) if fps else default


def write_video(frames: list[np.ndarray], path: str | Path, fps: float, max_side: int = 320) -> Path:
    """Write ``frames`` (``[H, W, 3]`` uint8) at ``fps`` frames per second as a GIF or MP4 (by suffix), scaled
    down to ``max_side`` pixels.

    GIFs share one 64-colour palette (no dithering), so unchanged regions stay identical from frame to frame and
    the file stays small."""
    from PIL import Image

    path = Path(path)
    if path.suffix.lower() not in (".gif", ".mp4"):
        raise ConfigError(f"video file '{path}' must end in .gif or .mp4", "pass e.g. video=match.gif")
    if not frames:
        raise ConfigError("no frames were rendered", "check that the env supports render_mode=rgb_array")
    h, w = frames[0].shape[:2]
    scale = min(1.0, max_side / max(h, w))
    size = (max(2, int(w * scale)) // 2 * 2, max(2, int(h * scale)) // 2 * 2)  # even sizes for the mp4 codec
    small = [Image.fromarray(np.ascontiguousarray(f[..., :3])).resize(size, Image.Resampling.BOX) for f in frames]
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".gif":
        sample = Image.fromarray(np.concatenate([np.asarray(small[0]), np.asarray(small[-1])], axis=0))
        palette = sample.quantize(colors=64, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        q = [f.quantize(palette=palette, dither=Image.Dither.NONE) for f in small]
        q[0].save(path, save_all=True, append_images=q[1:], duration=int(1000 / fps), loop=0)
    else:
        import imageio.v2 as iio2

        iio2.mimwrite(path, [np.asarray(f) for f in small], fps=fps, macro_block_size=2)
    return path


def parse_kv(argv: list[str], allowed: dict[str, Callable[[str], Any]], usage: str) -> dict[str, Any]:
    """``key=value`` arguments -> typed values; unknown keys and bad values are ConfigErrors naming the valid keys."""
    out: dict[str, Any] = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep:
            raise ConfigError(f"argument '{arg}' is not of the form key=value", usage)
        if key not in allowed:
            raise ConfigError(f"unknown argument '{key}'", f"valid keys: {', '.join(allowed)}; {usage}")
        try:
            out[key] = allowed[key](value)
        except ValueError as e:
            raise ConfigError(f"bad value for '{key}': {value!r} ({e})", usage) from None
    return out


def as_bool(value: str) -> bool:
    """true/false, yes/no, 1/0 (case-insensitive)."""
    v = value.lower()
    if v in ("true", "yes", "1"):
        return True
    if v in ("false", "no", "0"):
        return False
    raise ValueError("expected true or false")
