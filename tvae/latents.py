"""Latents as numbers and files: checking their values, reading `tvae encode`'s `.npy` files
(header first, so a hostile file is refused before its data is read), and spherical
interpolation. No torch.

Shape legend: N bars, Z latent size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tvae.config import MAX_BARS
from tvae.errors import TvaeError
from tvae.files import open_regular_file

MAX_LATENTS_BYTES = 2**30  # a latents .npy (4,096 bars of the widest latents fit)
MAX_LATENT = 1e3  # |z| above this is refused: posteriors lie within a few units of 0


def check_latent_values(z: np.ndarray, path: str | Path | None = None) -> None:
    """Refuse latents (N, Z) that are not finite or lie beyond ±MAX_LATENT: far outside any
    posterior, where the decoder's arithmetic overflows and bars go missing."""
    if not np.isfinite(z).all():
        raise TvaeError("latents contain NaN or infinite values", path)
    if z.size and np.abs(z).max() > MAX_LATENT:
        bar, dim = np.unravel_index(int(np.abs(z).argmax()), z.shape)
        raise TvaeError(f"latents must lie within ±{MAX_LATENT:g} (a model's lie within a few "
                        f"units of 0); bar {bar + 1}, value {dim + 1} is "
                        f"{float(z[bar, dim]):.3g}", path)



def slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Spherical interpolation between vectors a and b (Z,), linear when they are parallel."""
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    cos = float(np.dot(a, b) / (na * nb)) if na and nb else 1.0
    omega = np.arccos(np.clip(cos, -1.0, 1.0))
    if omega < 1e-6:
        return (1 - t) * a + t * b
    return (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)


def load_latents(path: str | Path, d_latent: int | None = None, max_bars: int = MAX_BARS
                 ) -> np.ndarray:
    """Per-bar latents (N, Z) from a `.npy` file written by `tvae encode`. The header's shape
    and type are checked before any data is read, so a file claiming millions of bars is
    refused at once (at most `max_bars` bars, and `d_latent` values a bar when given) instead
    of being loaded and then decoded."""
    path = Path(path)
    try:
        with open_regular_file(path, MAX_LATENTS_BYTES, "latents") as handle:  # never a FIFO
            version = np.lib.format.read_magic(handle)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(handle)
            if dtype.kind not in "fiu" or len(shape) != 2:
                raise TvaeError(f"latents must be a 2-D array of numbers (bars, Z); this one "
                                f"has shape {shape} and type {dtype}", path)
            if shape[0] > max_bars:
                raise TvaeError(f"{shape[0]} bars of latents; tvae decodes at most {max_bars}",
                                path)
            if d_latent is not None and shape[1] != d_latent:
                raise TvaeError(f"latents must have shape (bars, {d_latent}), got {shape}", path)
            handle.seek(0)
            z = np.load(handle, allow_pickle=False)
        check_latent_values(z, path)
        return z
    except TvaeError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        reason = " ".join(str(getattr(exc, "strerror", None) or exc).split())[:160]
        raise TvaeError(f"not a latents .npy file ({reason})", path) from None
