"""Evaluate a trained policy in matches (turn-based games) or episodes (cooperative / parallel envs).

    python scripts/evaluate.py run=<run dir or checkpoint> episodes=100 opponent=random|heuristic|minimax|self|<run>
        [seed=0] [deterministic=true] [num_envs=8] [env=<name>]
        [render=rgb_array video=<file.mp4|file.gif> [fps=<n>] [max_frames=<n>]] [render=human] [render=ansi]

Actions are greedy (the most likely action, as in training evaluation and scripts/play.py) unless
``deterministic=false``, which samples them; the mode is printed at start.
Turn-based games: the policy plays ``episodes`` matches against the opponent, its seat alternating match by match;
the table shows its wins / draws / losses per seat with Wilson 95% intervals and its mean payoff (± 95% CI).
Other envs: the policy plays every agent; the table shows team and per-agent returns (mean ± 95% CI).
``opponent``: a baseline (``random`` for any turn-based game, ``heuristic`` for connect_four, ``minimax`` for
tictactoe), ``self``, or another run directory / checkpoint trained on the same env (default: random for turn-based
games, self otherwise). ``render`` plays the first min(episodes, 4) matches once more, rendered: ``rgb_array`` writes
them to ``video`` (GIF or MP4) from the env's own renderer at the env's ``render_fps`` (or ``fps``), at most
``max_frames`` frames; ``human`` opens the env's window (needs a display). ``ansi`` plays the scored matches
themselves in one env copy and prints every move (marked policy or opponent), the board, and each result.
``env=<name>`` evaluates on another configured env (it must match the checkpoint). A user mistake prints the
problem and a fix and exits with code 2.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

import torch
from omegaconf import DictConfig

from marl.adapters.registry import resolve_env_config
from marl.errors import ConfigError, MarlError
from marl.evaluate import render_episodes, run_episodes
from marl.matches import (
    Watcher,
    as_bool,
    check_display,
    duel_summary,
    env_fps,
    format_duel,
    format_team,
    load_policy,
    make_policy,
    parse_kv,
    play_matches,
    single_env,
    team_summary,
    write_video,
)
from marl.opponents import BASELINES, Player, PolicyPlayer, baselines_for, make_baseline
from marl.train import build

RENDER_MODES = ("none", "rgb_array", "human", "ansi")
RENDERED_MATCHES = 4
USAGE = ("usage: python scripts/evaluate.py run=<run dir or checkpoint> episodes=100 "
         "opponent=random|heuristic|minimax|self|<run> [seed=0] [deterministic=false: sample actions] "
         "[render=rgb_array video=out.gif | render=human | render=ansi]")
ARGS = {"run": str, "episodes": int, "opponent": str, "seed": int, "render": str, "video": str,
        "deterministic": as_bool, "num_envs": int, "env": str, "debug": as_bool, "fps": float, "max_frames": int}


def parse(argv: list[str]) -> dict:
    """Validated arguments with defaults filled in (ConfigError on a mistake)."""
    a = parse_kv(argv, ARGS, USAGE)
    if "run" not in a:
        raise ConfigError("no policy given", "pass run=<run directory or checkpoint file>; " + USAGE)
    a.setdefault("episodes", 100)
    a.setdefault("seed", 0)
    a.setdefault("deterministic", True)
    a.setdefault("num_envs", 8)
    a.setdefault("render", "rgb_array" if "video" in a else "none")
    if a["episodes"] < 1 or a["num_envs"] < 1 or a.get("max_frames", 1) < 1 or a.get("fps", 1) <= 0:
        raise ConfigError("episodes, num_envs and max_frames must be >= 1, fps > 0",
                          "pass e.g. episodes=100 num_envs=8 fps=30 max_frames=600")
    if a["render"] not in RENDER_MODES:
        raise ConfigError(f"render='{a['render']}' is not valid", f"choose one of: {', '.join(RENDER_MODES)}")
    if a["render"] == "rgb_array" and "video" not in a:
        raise ConfigError("render=rgb_array needs a video file", "add video=match.gif (or .mp4)")
    if "video" in a and a["render"] != "rgb_array":
        raise ConfigError(f"video=... is written from render=rgb_array frames, not render={a['render']}",
                          "pass render=rgb_array video=match.gif")
    if "video" in a and Path(a["video"]).suffix.lower() not in (".gif", ".mp4"):
        raise ConfigError(f"video file '{a['video']}' must end in .gif or .mp4", "pass e.g. video=match.gif")
    return a


def resolve_opponent(name: str, subject: PolicyPlayer, env, deterministic: bool, seed: int) -> Player:
    """``self``, a baseline valid for ``env``, or another run / checkpoint (checked against ``env``)."""
    spec = env.spec
    valid = [*baselines_for(spec), "self"]
    if name == "self":
        return subject
    if name in valid:
        return make_baseline(name, spec, seed)
    if name not in BASELINES and Path(name).exists():
        cfg, payload, path = load_policy(name)
        return PolicyPlayer(make_policy(cfg, payload, path, env), name=Path(name).name, deterministic=deterministic)
    problem = (f"opponent '{name}' plays {BASELINES[name].game}, not env '{spec.name}'" if name in BASELINES else
               f"unknown opponent '{name}' (not a baseline, 'self', or an existing run directory / checkpoint)")
    raise ConfigError(problem, f"valid opponents for env '{spec.name}': {', '.join(valid)}, or the path of a run "
                               f"directory / checkpoint trained on {spec.name}")


def render_matches(cfg: DictConfig, a: dict, subject: PolicyPlayer, opponent: Player | None) -> None:
    """Play the first matches (episodes) once more in one rendered env copy; write the video for rgb_array."""
    mode, games = a["render"], min(a["episodes"], RENDERED_MATCHES)
    if mode == "human":
        check_display()
    if cfg.env.kind != "pettingzoo":
        if mode != "rgb_array":
            raise ConfigError(f"render={mode} is supported for PettingZoo envs only",
                              "use render=rgb_array video=out.mp4 for gymnasium envs")
        env = build(cfg, num_envs=1, seed=a["seed"], render_mode="rgb_array")
        try:
            frames = render_episodes(subject.learner, env, games, a["seed"], subject.deterministic,
                                     max_frames=a.get("max_frames"))
        finally:
            env.close()
    else:
        watcher = None if mode == "human" else Watcher("rgb_array" if mode == "rgb_array" else "text", games,
                                                       max_frames=a.get("max_frames"))
        env = single_env(cfg, mode if mode != "ansi" else None, watcher, a["seed"])
        try:
            if opponent is not None:
                play_matches(env, subject, opponent, games, a["seed"])
            else:
                run_episodes(subject.learner, env, games, a["seed"], a["deterministic"])
        finally:
            env.close()
        frames = watcher.frames if watcher is not None else []
    if mode == "rgb_array":
        fps = a.get("fps") or env_fps(cfg.env)
        path = write_video(frames, a["video"], fps=fps)
        print(f"video: {path} ({len(frames)} frames at {fps:g} fps, {games} {'matches' if opponent else 'episodes'})")


def watched_matches(cfg: DictConfig, a: dict, subject: PolicyPlayer, opponent: Player) -> list:
    """render=ansi: the scored matches themselves, in one env copy, every move printed (policy or opponent)."""
    watcher = Watcher("text", a["episodes"])
    env = single_env(cfg, None, watcher, a["seed"])

    def on_start(j: int, seat: str) -> None:
        watcher.roles = {x: "policy" if x == seat else "opponent" for x in env.spec.agents}

    def on_result(j: int, r) -> None:
        print(f"game {j + 1}/{a['episodes']} over: policy as {r.seat}: {r.outcome} (returns {r.returns})\n")

    try:
        return play_matches(env, subject, opponent, a["episodes"], a["seed"], on_start=on_start, on_result=on_result)
    finally:
        env.close()


def evaluate(a: dict) -> dict:
    """Run the evaluation described by parsed arguments ``a``; print and return the summary."""
    torch.set_num_threads(1)
    mode = "greedy (deterministic=true)" if a["deterministic"] else "sampled (deterministic=false)"
    print(f"actions: {mode}")
    cfg, payload, path = load_policy(a["run"])
    if "env" in a:
        cfg.env = resolve_env_config(a["env"])
    env = build(cfg, num_envs=min(a["episodes"], a["num_envs"]), seed=a["seed"])
    try:
        subject = PolicyPlayer(make_policy(cfg, payload, path, env), name="policy", deterministic=a["deterministic"])
        spec = env.spec
        duel = spec.turn_based and len(spec.agents) >= 2
        opp_name = a.get("opponent", "random" if duel else "self")
        if not duel and opp_name != "self":
            raise ConfigError(f"opponent={opp_name} applies to turn-based games; env '{spec.name}' is played by "
                              "the policy in every agent's seat", "drop opponent= (or pass opponent=self)")
        opponent = resolve_opponent(opp_name, subject, env, a["deterministic"], a["seed"]) if duel else None
        if a["render"] not in ("none", "ansi") or (a["render"] == "ansi" and not duel):
            render_matches(cfg, a, subject, opponent)
        if duel:
            results = (watched_matches(cfg, a, subject, opponent) if a["render"] == "ansi" else
                       play_matches(env, subject, opponent, a["episodes"], a["seed"]))
            summary = duel_summary(results, spec.agents)
            print(f"{path} on {spec.name}, {a['episodes']} matches, seed {a['seed']}, actions {mode}")
            print(format_duel(summary, "policy", opp_name))
        else:
            eps = run_episodes(subject.learner, env, a["episodes"], a["seed"], a["deterministic"])
            summary = team_summary(eps)
            print(f"{path} on {spec.name}, seed {a['seed']}, actions {mode}")
            print(format_team(summary, "policy"))
        return summary
    finally:
        env.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(x in ("-h", "--help", "help") for x in argv):
        print(__doc__.strip())
        return 0
    debug = any(x.lower() in ("debug=true", "debug=1", "debug=yes") for x in argv)
    try:
        evaluate(parse(argv))
    except MarlError as e:
        if debug:
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
