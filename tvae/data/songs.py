"""Which files of a folder are songs, their split and label, and why a file was skipped.

Both ways of loading a folder (`tvae.data.prepare`, which writes shards, and
`tvae.data.dataset.load_folder`, which prepares into a cache) take every rule from here:

- songs: a folder's manifest.csv rows (or a manifest .csv given itself), else every *.mid/*.midi
  under the folder, in sorted order (`list_folder`);
- split: the manifest's 'split' column, else a hash of the melody's notes (`song_splits`);
- label: a manifest column, or 'folder' for the first sub-folder (`song_labels`);
- skipped: a file tvae cannot read, with the reader's reason (`read_song`), and a song shorter
  than `DataConfig.min_bars`, dropped when it is loaded (`drop_short`). Every skip is kept with
  its file name (`Skipped`) and written as a CSV of path, reason (`write_skipped`).

Shape legend: T bars of all songs, S steps per bar.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tvae.config import DataConfig, GridConfig
from tvae.data.arrays import SongArrays
from tvae.errors import TvaeError
from tvae.files import write_bytes_atomic
from tvae.melody import Melody, meter_id

MIDI_SUFFIXES = (".mid", ".midi")
SPLITS = ("train", "valid", "test")
Manifest = dict[str, dict[str, str]]  # relative path -> the manifest's row


# --- which files are songs ---------------------------------------------------------------------


@dataclass
class Listing:
    """The files of a folder (or manifest) to read as songs."""

    root: Path  # the folder the paths are relative to
    files: list[str]  # relative POSIX paths, in load order
    manifest: Manifest | None  # path -> manifest row, for exported corpora
    manifest_path: Path | None


def read_manifest(path: Path) -> Manifest:
    """The rows of a manifest .csv by path, checked to have 'path' and known 'split's."""
    try:
        with open(path, newline="", encoding="utf-8", errors="surrogateescape") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, csv.Error) as exc:
        raise TvaeError(f"cannot read manifest: {exc}", path) from None
    if rows and not {"path", "split"} <= set(rows[0]):
        raise TvaeError("manifest needs the columns 'path' and 'split'", path)
    bad = sorted({r["split"] for r in rows} - set(SPLITS))
    if bad:
        raise TvaeError(f"manifest has unknown splits {bad} (expected {list(SPLITS)})", path)
    return {r["path"]: r for r in rows}


def list_folder(root: str | Path) -> Listing:
    """The MIDI files to load: a manifest's rows, or every *.mid/*.midi under the folder."""
    root = Path(root)
    if root.is_file():
        if root.suffix.lower() != ".csv":
            raise TvaeError("expected a folder of MIDI files or a manifest .csv", root)
        manifest_path: Path | None = root
        root = root.parent
    elif root.is_dir():
        manifest_path = root / "manifest.csv" if (root / "manifest.csv").is_file() else None
    else:
        raise TvaeError("no such folder", root)
    if manifest_path is not None:
        manifest: Manifest | None = read_manifest(manifest_path)
        files = list(manifest or {})
    else:
        manifest = None
        files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                       if p.suffix.lower() in MIDI_SUFFIXES and p.is_file())
    if not files:
        raise TvaeError("no MIDI files (*.mid, *.midi) found", root)
    return Listing(root, files, manifest, manifest_path)


# --- split and label ---------------------------------------------------------------------------


def melody_hash(melody: Melody) -> str:
    """A hash of the note sequence that ignores transposition, tempo, title and pickup.

    It covers the pitch intervals, the durations and the gaps between notes.
    """
    parts, prev = [], None
    for note in melody.notes:
        interval = 0 if prev is None else note.pitch - prev.pitch
        gap = 0 if prev is None else note.start - (prev.start + prev.duration)
        parts.append(f"{interval},{note.duration},{gap}")
        prev = note
    return hashlib.sha1(";".join(parts).encode()).hexdigest()


def split_of(content_hash: str, valid_fraction: float = 0.05, test_fraction: float = 0.05) -> str:
    """'train', 'valid' or 'test', decided by the hash alone (about the given fractions)."""
    u = int(content_hash[:12], 16) / float(16**12)  # uniform in [0, 1)
    if u < test_fraction:
        return "test"
    if u < test_fraction + valid_fraction:
        return "valid"
    return "train"


def song_splits(paths: list[str], hashes: Iterable[str], manifest: Manifest | None,
                data: DataConfig) -> np.ndarray:
    """(n_songs,) splits: the manifest's, or decided by each melody's content hash
    (`split_of`, so identical tunes share a split)."""
    if manifest is not None:
        names = [manifest[p]["split"] for p in paths]
    else:
        names = [split_of(str(h), data.valid_fraction, data.test_fraction) for h in hashes]
    return np.array(names, dtype="<U5")


def folder_label(rel: str) -> str:
    """The label 'folder' gives a song: its first sub-folder ('' for a file at the top)."""
    return rel.split("/")[0] if "/" in rel else ""


def song_labels(paths: list[str], column: str | None, manifest: Manifest | None,
                where: str | Path) -> list[str] | None:
    """Each song's label from the manifest column `column` ('folder': `folder_label`); None
    without a column. `where` names the folder or manifest in errors."""
    if column is None:
        return None
    if column == "folder":
        return [folder_label(p) for p in paths]
    if manifest is None:
        raise TvaeError(f"label column '{column}' needs a manifest.csv (or use 'folder')", where)
    if manifest and column not in next(iter(manifest.values())):
        raise TvaeError(f"manifest has no column '{column}'", where)
    return [manifest[p][column] for p in paths]


# --- reading one file --------------------------------------------------------------------------


def read_song(args: tuple[str, str, GridConfig]) -> dict[str, Any]:
    """Read and encode one file (root, relative path, grid); {'error': reason} if it cannot
    be read. Runs in worker processes."""
    from tvae.melody import melody_to_bars
    from tvae.midi import read_midi

    root, rel, grid = args
    try:
        melody, _ = read_midi(Path(root) / rel, grid=grid)
        bars = melody_to_bars(melody, grid)
    except TvaeError as exc:
        return {"error": exc.reason}
    return {
        "tokens": bars.tokens.astype(np.uint8),  # (N, S)
        "meter": meter_id(melody.meter),
        "pickup": melody.pickup,
        "qpm": melody.qpm,
        "title": melody.title,
        "hash": melody_hash(melody),
    }


def iter_read(root: Path, files: list[str], grid: GridConfig, workers: int | None,
              progress: bool) -> Iterator[dict[str, Any]]:
    """Read and encode `files` (relative to `root`) in a process pool, yielding each file's
    `read_song` result in order, so that callers can stream them to disk."""
    from multiprocessing import Pool

    from tqdm import tqdm

    jobs = [(str(root), rel, grid) for rel in files]
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    bar = tqdm(total=len(jobs), disable=not progress, unit="file", desc="reading MIDI")
    if workers == 1 or len(jobs) < 64:
        for job in jobs:
            yield read_song(job)
            bar.update()
    else:
        with Pool(workers) as pool:
            for result in pool.imap(read_song, jobs, chunksize=32):
                yield result
                bar.update()
    bar.close()


# --- skipped files -----------------------------------------------------------------------------


class Skipped(dict[str, int]):
    """Skipped files: a dict of counts by reason (it compares and prints as one), with `files`,
    the (path, reason) of each file in the order they were skipped."""

    def __init__(self, files: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__()
        self.files: list[tuple[str, str]] = []
        for path, reason in files:
            self.add(path, reason)

    def add(self, path: str, reason: str) -> None:
        """Count one more file skipped for `reason`."""
        self.files.append((path, reason))
        self[reason] = self.get(reason, 0) + 1

    def extend(self, other: Skipped) -> None:
        """Add every file of `other`."""
        for path, reason in other.files:
            self.add(path, reason)


def drop_short(songs: SongArrays, skipped: Skipped, data: DataConfig) -> SongArrays:
    """The one rule for short songs: a song shorter than `data.min_bars` is dropped when it is
    loaded and added to `skipped` (prepared shards keep every song, so `min_bars` can change)."""
    short = songs.lengths < data.min_bars  # (n_songs,)
    if not short.any():
        return songs
    for i in np.flatnonzero(short):
        skipped.add(songs.paths[int(i)], f"shorter than {data.min_bars} bars")
    return songs.subset(~short)


def format_skipped(skipped: dict[str, int]) -> str:
    """One line such as 'skipped 3 files: 2 no notes, 1 file is empty (0 bytes)'."""
    parts = ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items(), key=lambda x: -x[1]))
    return f"skipped {sum(skipped.values())} files: {parts}" if skipped else "skipped no files"


def skipped_csv(skipped: Skipped) -> bytes:
    """The CSV text of path, reason; file names that are not UTF-8 keep their own bytes."""
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["path", "reason"])
    writer.writerows(skipped.files)
    return text.getvalue().encode("utf-8", errors="surrogateescape")


def write_skipped(path: str | Path, skipped: Skipped) -> Path:
    """Write `skipped` as the CSV `path` (columns path, reason; atomically). Returns the path."""
    write_bytes_atomic(skipped_csv(skipped), path)
    return Path(path)


def read_skipped(path: str | Path) -> Skipped:
    """The rows of a skipped.csv (`write_skipped`, or a prepared shard's) as `Skipped`."""
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as handle:
        return Skipped((row["path"], row["reason"]) for row in csv.DictReader(handle))

