"""Matches between players, result tables with 95% confidence intervals, and rendering (video, terminal, window),
one module per role:

* :mod:`~marl.matches.play`: :func:`play_matches` plays ``episodes`` matches of a subject against an opponent on a
  batched turn-based env, the subject's seat alternating match by match (:class:`MatchResult` each);
* :mod:`~marl.matches.stats`: :func:`duel_summary` (wins / draws / losses per seat with Wilson 95% intervals, the mean
  payoff ± 95%) and :func:`team_summary` (team and per-agent returns of parallel episodes);
* :mod:`~marl.matches.tables`: :func:`format_duel` / :func:`format_team`, their plain-text tables;
* :mod:`~marl.matches.policies`: :func:`load_policy` / :func:`make_policy`, a trained learner from a run directory or
  checkpoint, checked against the env;
* :mod:`~marl.matches.watch`: :func:`single_env`, one env copy whose moves a :class:`Watcher` sees (frames for a
  video, boards printed in the terminal), so the final position of every game is seen before the copy resets;
* :mod:`~marl.matches.video`: :func:`write_video` at the env's :func:`env_fps`;
* :mod:`~marl.matches.args`: the ``key=value`` arguments of scripts/evaluate.py and scripts/play.py.
"""

from marl.matches.args import as_bool, parse_kv
from marl.matches.play import MatchResult, play_matches
from marl.matches.policies import load_policy, make_policy
from marl.matches.stats import Z95, duel_summary, mean_ci, team_summary, wilson
from marl.matches.tables import format_duel, format_team
from marl.matches.video import env_fps, write_video
from marl.matches.watch import Watcher, check_display, move_label, single_env, text_board

__all__ = ["MatchResult", "Watcher", "Z95", "as_bool", "check_display", "duel_summary", "env_fps", "format_duel",
           "format_team", "load_policy", "make_policy", "mean_ci", "move_label", "parse_kv", "play_matches",
           "single_env", "team_summary", "text_board", "wilson", "write_video"]
