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


PHRASES = (1, 2, 4, 8)  # lengths, in bars, of the phrases `add_repeats` repeats


def add_repeats(tokens: np.ndarray, share: float, rng: np.random.Generator,
                edit_share: float = 0.0, grid: GridConfig = GridConfig(),
                extend: bool = False) -> np.ndarray:
    """In a `share` of the windows (B, N, S), a phrase of 1, 2, 4 or 8 bars is repeated at an
    offset drawn uniformly from 1..N-1 (so every offset the window can hold is met as often as
    any other, not just the folk corpus' common 1, 2, 4 and 8), over later bars of the song or
    past its end into the window's padding (the song then goes on with the repeat, as a tune
    played twice does). Only full bars are copied or overwritten (a pickup or a short last bar
    stays). In an `edit_share` of those windows, one repeated bar then gets 1 or 2 of its onsets
    moved by a few semitones: a near-repeat, which the copy path should encode as a copy with
    edits.

    With `extend`, every song that ends before the window does is first played on to the
    window's end (`extend_song`), and the windows given repeats get 1 to 3 phrases at offsets
    from N/4 to N - 1, so that repeats that far back, whose only source is that far, and the
    window's late bars are met by short songs too, not only by the few long ones."""
    tokens = tokens.copy()
    N = tokens.shape[1]
    pads = (tokens == PAD).sum(-1)  # (B, N) PAD steps of each bar
    real = pads < tokens.shape[2]  # (B, N)
    chosen = rng.random(len(tokens)) < share  # (B,)
    for b in range(len(tokens)):
        if not (chosen[b] or extend) or not real[b].any() or N < 2:
            continue
        length = int(np.flatnonzero(real[b])[-1]) + 1  # bars of the song in this window
        full = real[b] & (pads[b] == pads[b][real[b]].min())  # (N,)
        if extend and length < N and full[:length].any():
            length = extend_song(tokens[b], full, length, N, rng, grid)
        if not chosen[b]:
            continue
        # an extended song gets 1-3 phrases from N/4 bars back on (8 to 32 in 33-bar windows):
        # the offsets that short songs never hold and that the data rarely holds (repeats 1 to
        # 8 bars back are most of the corpus'; those 13 to 15 back were met too seldom when
        # these began at N/2: their pointer had learned almost nothing, `copy_misses`)
        far = extend and N >= 4
        for _ in range(int(rng.integers(1, 4)) if far else 1):
            placed = _place_phrase(full, length, N, rng, min_offset=N // 4 if far else 1)
            if placed is None:
                continue
            start, offset, size = placed
            for t in range(start, start + size):  # in order: overlapping phrases stay periodic
                tokens[b, t] = tokens[b, t - offset]
            if rng.random() < edit_share:
                _edit_bar(tokens[b, start + int(rng.integers(size))], rng, grid)
    return tokens


def extend_song(window: np.ndarray, full: np.ndarray, length: int, until: int,
                rng: np.random.Generator, grid: GridConfig) -> int:
    """Play the song of `window` (N, S) on past its last bar `length` - 1 up to bar `until` - 1,
    in place, with its own full bars from the first one on: as written in a quarter of the
    cases (the tune played again, a whole-section repeat `length` bars back), otherwise moved by
    1 to 5 semitones (new bars in the song's style, which repeat nothing before them). `full`
    (N,) is updated; returns `until`."""
    sources = np.flatnonzero(full[:length])
    shift = 0 if rng.random() < 0.25 else int(rng.integers(1, 6)) * (1 if rng.random() < 0.5
                                                                       else -1)
    added = window[np.resize(sources, until - length)]  # (until - length, S)
    onset = added >= N_SPECIAL
    if shift and onset.any():
        lo, hi = int(added[onset].min()), int(added[onset].max())
        if not (lo + shift >= N_SPECIAL and hi + shift < grid.vocab_size):
            shift = -shift
        if lo + shift >= N_SPECIAL and hi + shift < grid.vocab_size:
            added = np.where(onset, added + shift, added)
    window[length:until] = added
    full[length:until] = True
    return until


def _place_phrase(full: np.ndarray, length: int, n: int, rng: np.random.Generator,
                  tries: int = 8, min_offset: int = 1) -> tuple[int, int, int] | None:
    """(start, offset, size) of a phrase repeat in a window of `n` bars whose first `length`
    are the song's (`full` (N,) marks the full bars): the sources are full bars of the song,
    the targets full bars or padding that begins at the song's end (never a hole). The offset
    is drawn first, uniformly from min_offset..n-1, and then a phrase length that fits there:
    an offset near the window's end, where only short phrases fit, is met as often as any
    other (drawing the length first and retrying would skip it)."""
    for _ in range(tries):
        offset = int(rng.integers(min_offset, n))
        fits = []
        for size in PHRASES:
            starts = [k for k in range(offset, min(length, n - size) + 1)
                      if full[k - offset : k - offset + size].all()
                      and all(full[t] or t >= length for t in range(k, k + size))]
            if starts:
                fits.append((size, starts))
        if fits:
            size, starts = fits[int(rng.integers(len(fits)))]
            return int(rng.choice(starts)), offset, size
    return None


def _edit_bar(bar: np.ndarray, rng: np.random.Generator, grid: GridConfig) -> None:
    """Move 1 or 2 onsets of `bar` (S,) in place by 1 to 4 semitones, staying in the
    vocabulary: the rhythm stays, the pitches change."""
    onsets = np.flatnonzero(bar >= N_SPECIAL)
    if len(onsets) == 0:
        return
    for s in rng.choice(onsets, size=min(len(onsets), int(rng.integers(1, 3))), replace=False):
        shift = int(rng.integers(1, 5)) * (1 if rng.random() < 0.5 else -1)
        moved = bar[s] + shift
        if not N_SPECIAL <= moved < grid.vocab_size:
            moved = bar[s] - shift
        bar[s] = moved
