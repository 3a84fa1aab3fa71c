"""Videos of rendered frames (GIF or MP4) at the env's own playback speed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from marl.adapters.registry import make_env
from marl.errors import ConfigError


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
