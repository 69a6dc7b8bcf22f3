"""Training-time augmentation of window batches (numpy, no torch).

Shape legend: B windows, N bars, S steps per bar.
"""

from __future__ import annotations

import numpy as np

from tvae.config import N_SPECIAL, PAD, GridConfig


def transpose_tokens(tokens: np.ndarray, limit: int, rng: np.random.Generator,
                     grid: GridConfig = GridConfig()) -> np.ndarray:
    """Shift the onset classes of each window (B, N, S) by one random amount in [-limit, limit],
    narrowed per window so that every onset stays in the vocabulary. PAD/REST/HOLD stay."""
    if tokens.size == 0:
        return tokens
    onset = tokens >= N_SPECIAL  # (B, N, S)
    lo = np.where(onset, tokens, grid.vocab_size).min(axis=(1, 2))  # (B,)
    hi = np.where(onset, tokens, 0).max(axis=(1, 2))  # (B,)
    low = np.maximum(-limit, N_SPECIAL - lo)  # (B,)
    high = np.minimum(limit, grid.vocab_size - 1 - hi)  # (B,) empty windows: full range
    low, high = np.minimum(low, 0), np.maximum(high, 0)  # never forced out of range
    shift = low + np.floor(rng.random(len(tokens)) * (high - low + 1)).astype(np.int64)  # (B,)
    return np.where(onset, tokens + shift[:, None, None], tokens)


def add_repeats(tokens: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """In a `share` of the windows (B, N, S), one bar k after the first becomes an exact copy of
    an earlier bar j of the same shape (its PAD steps in the same places, so a pickup is never
    copied into a full bar), j uniform: every repeat offset appears in training."""
    tokens = tokens.copy()
    pad = tokens == PAD  # (B, N, S)
    real = ~pad.all(-1)  # (B, N)
    for b in np.flatnonzero(rng.random(len(tokens)) < share):
        later = np.flatnonzero(real[b, 1:]) + 1
        if len(later) == 0:
            continue
        k = int(rng.choice(later))
        sources = [j for j in range(k) if real[b, j] and (pad[b, j] == pad[b, k]).all()]
        if sources:
            tokens[b, k] = tokens[b, int(rng.choice(sources))]
    return tokens
