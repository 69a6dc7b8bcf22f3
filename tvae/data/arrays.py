"""`SongArrays`: every song of a data set as a few flat arrays (the container; how songs are
found, split, labelled and skipped is in tvae.data.songs).

Shape legend: T bars stored in `tokens`, S steps per bar, N bars of one song.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tvae.melody import METERS, Bars


@dataclass
class SongArrays:
    """All songs of a data set as flat arrays. Song i has `lengths[i]` bars, stored in
    `tokens[starts[i] : starts[i] + lengths[i]]`; without `song_starts` the songs lie one after
    the other and song i covers bars offsets[i]:offsets[i + 1]."""

    tokens: np.ndarray  # (T, S) uint8 step classes (may be memory-mapped)
    offsets: np.ndarray  # (n_songs + 1,) int64 cumulative bar counts: lengths = diff(offsets)
    meters: np.ndarray  # (n_songs,) int8 meter ids (tvae.melody.meter_id)
    pickups: np.ndarray  # (n_songs,) int8 pickup steps
    paths: list[str]  # file paths relative to the folder
    splits: np.ndarray  # (n_songs,) str: 'train', 'valid' or 'test'
    labels: list[str] | None = None  # optional per-song label (manifest column or folder)
    qpms: np.ndarray | None = None  # (n_songs,) float64 tempi; 120 if absent
    titles: list[str] | None = None  # per-song titles; the file name if absent
    song_starts: np.ndarray | None = None  # (n_songs,) int64 first row of each song in tokens;
    # None: offsets[:-1] (set by `subset`, which keeps `tokens` as it is: no copy of a memmap)

    @property
    def n_songs(self) -> int:
        return len(self.paths)

    @property
    def lengths(self) -> np.ndarray:
        """(n_songs,) int64 bars of each song."""
        return np.diff(self.offsets)

    @property
    def starts(self) -> np.ndarray:
        """(n_songs,) int64 row of `tokens` where each song's first bar is."""
        if self.song_starts is None:
            return np.asarray(self.offsets[:-1], dtype=np.int64)
        return self.song_starts

    def song(self, i: int) -> Bars:
        """Song `i` as `Bars` (tokens as int64), ready for `bars_to_melody`."""
        first = int(self.starts[i])
        tokens = self.tokens[first : first + int(self.lengths[i])].astype(np.int64)  # (N, S)
        qpm = 120.0 if self.qpms is None else float(self.qpms[i])
        title = Path(self.paths[i]).stem if self.titles is None else self.titles[i]
        return Bars(tokens, METERS[int(self.meters[i])], qpm, int(self.pickups[i]), title)

    def subset(self, mask: np.ndarray) -> SongArrays:
        """The songs where the boolean `mask` (n_songs,) is true, in their order. The tokens
        array is shared, not copied, so a memory-mapped one stays on disk."""
        keep = np.flatnonzero(np.asarray(mask, dtype=bool))
        pick = [int(i) for i in keep]
        return SongArrays(
            tokens=self.tokens,
            offsets=np.concatenate([[0], np.cumsum(self.lengths[keep])]).astype(np.int64),
            meters=self.meters[keep],
            pickups=self.pickups[keep],
            paths=[self.paths[i] for i in pick],
            splits=self.splits[keep],
            labels=None if self.labels is None else [self.labels[i] for i in pick],
            qpms=None if self.qpms is None else self.qpms[keep],
            titles=None if self.titles is None else [self.titles[i] for i in pick],
            song_starts=self.starts[keep],
        )

    def save_split(self, path: str | Path) -> None:
        """A CSV of path, split (and label) per song, to record which songs a run trained on."""
        # file names that are not UTF-8 are written back as the bytes they were read from
        with open(path, "w", newline="", encoding="utf-8", errors="surrogateescape") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "split", "label"])
            for i, rel in enumerate(self.paths):
                label = "" if self.labels is None else self.labels[i]
                writer.writerow([rel, str(self.splits[i]), label])
