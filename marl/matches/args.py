"""``key=value`` command-line arguments of the match scripts (evaluate.py, play.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from marl.errors import ConfigError


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
