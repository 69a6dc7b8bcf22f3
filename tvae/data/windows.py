"""Training windows: the N-bar windows of one split's songs, batched and augmented.

Shape legend: B windows, N bars, S steps per bar.
"""

from __future__ import annotations

import numpy as np

from tvae.config import PAD, DataConfig, GridConfig
from tvae.data.arrays import SongArrays
from tvae.data.augment import add_repeats, transpose_tokens
from tvae.errors import TvaeError

DEFAULT_DATA = DataConfig()
DEFAULT_GRID = GridConfig()


class Windows:
    """The N-bar windows (N = `DataConfig.bars`) of one split's songs, started every `stride`
    bars; `batch` reads any of them (the trainer draws the order).

    A song shorter than N bars gives one window, padded at the end with all-PAD bars.
    """

    def __init__(self, songs: SongArrays, split: str | None, data: DataConfig = DEFAULT_DATA,
                 grid: GridConfig = DEFAULT_GRID) -> None:
        if data.bars < 1 or data.stride < 1:
            raise TvaeError("window bars and stride must be at least 1")
        self.songs, self.data, self.grid = songs, data, grid
        chosen = np.arange(songs.n_songs) if split is None else np.flatnonzero(
            songs.splits == split)
        lengths = songs.lengths[chosen]
        counts = np.maximum(lengths - data.bars, 0) // data.stride + 1  # windows per song
        self.song = np.repeat(chosen, counts).astype(np.int64)  # (W,) song of each window
        self._lengths, self._starts = songs.lengths, np.asarray(songs.starts)  # (n_songs,)
        first = np.repeat(np.cumsum(counts) - counts, counts)  # (W,) index of song's 1st window
        self.start = (np.arange(len(self.song)) - first) * data.stride  # (W,) first bar

    def __len__(self) -> int:
        return len(self.song)

    @property
    def lengths(self) -> np.ndarray:
        """(W,) bars of each window that hold song (the rest is padding)."""
        return np.minimum(self._lengths[self.song] - self.start, self.data.bars)

    def epoch_order(self, batch_size: int, rng: np.random.Generator, group: int = 32
                    ) -> np.ndarray:
        """A shuffled order of the windows in which each run of `batch_size` holds windows of
        similar length: the windows are shuffled, cut into chunks of `group` batches, sorted by
        length inside each chunk, and the batches are shuffled again. With `batch(..., trim=
        True)` a batch of short songs then costs what its bars cost, not the full window."""
        order = rng.permutation(len(self))
        chunk = batch_size * group
        lengths = self.lengths
        parts = [c[np.argsort(-lengths[c], kind="stable")] for c in
                 (order[i : i + chunk] for i in range(0, len(order), chunk))]
        order = np.concatenate(parts) if parts else order
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
        return np.concatenate([batches[i] for i in rng.permutation(len(batches))]) if batches \
            else order

    def song_of(self, indices: np.ndarray) -> np.ndarray:
        """(B,) song index (into the SongArrays) of each window."""
        return self.song[np.asarray(indices)]

    def batch(self, indices: np.ndarray, rng: np.random.Generator | None = None,
              trim: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Tokens (B, N, S) int64 and meter ids (B, N) int64 of the windows `indices`. With
        `trim`, N is cut to the longest of them (padding that every window has is dropped;
        no bar of any window changes).

        With `rng`, each window is transposed by a random shift in [-transpose, transpose],
        narrowed so that every onset class stays inside the vocabulary, and a `repeat_augment`
        share of the windows gets a repeated phrase, some of them with edits (`add_repeats`).
        A `repeat_reach` share of the batches keeps the whole window (even with `trim`), and in
        them a short song is played on past its end before its repeat is placed.
        """
        indices = np.asarray(indices, dtype=np.int64)
        song, start = self.song[indices], self.start[indices]  # (B,)
        N = self.data.bars
        reach = rng is not None and self.data.repeat_augment > 0 and self.data.repeat_reach > 0 \
            and rng.random() < self.data.repeat_reach  # this batch keeps the whole window
        if trim and len(indices) and not reach:
            N = int(self.lengths[indices].max())
        bar = start[:, None] + np.arange(N)[None, :]  # (B, N) bar within the song
        inside = bar < self._lengths[song][:, None]  # (B, N)
        flat = np.where(inside, self._starts[song][:, None] + bar, 0)  # (B, N)
        tokens = self.songs.tokens[flat].astype(np.int64)  # (B, N, S)
        tokens[~inside] = PAD
        meters = np.broadcast_to(self.songs.meters[song][:, None], (len(song), N))
        if rng is not None and self.data.transpose > 0:
            tokens = transpose_tokens(tokens, self.data.transpose, rng, self.grid)
        if rng is not None and self.data.repeat_augment > 0:
            tokens = add_repeats(tokens, self.data.repeat_augment, rng, self.data.repeat_edits,
                                 self.grid, extend=reach)
        return tokens, meters.astype(np.int64)
