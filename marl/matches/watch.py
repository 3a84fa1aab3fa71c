"""Watching the moves of one env copy: frames for a video, boards and moves printed in the terminal."""

from __future__ import annotations

import os
import sys
from typing import Any, TextIO

import numpy as np
from omegaconf import DictConfig, OmegaConf
from pettingzoo import AECEnv
from pettingzoo.utils.wrappers import BaseParallelWrapper, BaseWrapper

from marl.adapters.base import VecMultiEnv
from marl.adapters.registry import build_layout, make_env
from marl.adapters.vector import InProcessVecEnv
from marl.errors import ConfigError


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
