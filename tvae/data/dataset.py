"""MIDI folder -> cached song arrays (the N-bar training windows are in tvae.data.windows).

`load_folder` reads every MIDI file of a folder once (in a process pool), encodes each melody
as bars of step classes and caches the arrays as one .npz keyed by the folder's file list, so
later loads take a moment.

Shape legend: B windows in a batch, N bars per window, S steps per bar, T total bars of all songs.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tvae.config import DataConfig, GridConfig
from tvae.errors import TvaeError
from tvae.melody import METERS, Bars, meter_id

CACHE_VERSION = 1  # bump when the encoding changes: old cache files are then ignored
MIDI_SUFFIXES = (".mid", ".midi")
SPLITS = ("train", "valid", "test")
DEFAULT_GRID = GridConfig()
DEFAULT_DATA = DataConfig()


@dataclass
class SongArrays:
    """All songs of a folder as flat arrays; song i covers bars offsets[i]:offsets[i + 1]."""

    tokens: np.ndarray  # (T, S) uint8 step classes
    offsets: np.ndarray  # (n_songs + 1,) int64 bar offsets of each song in `tokens`
    meters: np.ndarray  # (n_songs,) int8 meter ids (tvae.melody.meter_id)
    pickups: np.ndarray  # (n_songs,) int8 pickup steps
    paths: list[str]  # file paths relative to the folder
    splits: np.ndarray  # (n_songs,) str: 'train', 'valid' or 'test'
    labels: list[str] | None = None  # optional per-song label (manifest column or folder)
    qpms: np.ndarray | None = None  # (n_songs,) float64 tempi; 120 if absent
    titles: list[str] | None = None  # per-song titles; the file name if absent

    @property
    def n_songs(self) -> int:
        return len(self.paths)

    @property
    def lengths(self) -> np.ndarray:
        """(n_songs,) int64 bars of each song."""
        return np.diff(self.offsets)

    def song(self, i: int) -> Bars:
        """Song `i` as `Bars` (tokens as int64), ready for `bars_to_melody`."""
        tokens = self.tokens[self.offsets[i] : self.offsets[i + 1]].astype(np.int64)  # (N, S)
        qpm = 120.0 if self.qpms is None else float(self.qpms[i])
        title = Path(self.paths[i]).stem if self.titles is None else self.titles[i]
        return Bars(tokens, METERS[int(self.meters[i])], qpm, int(self.pickups[i]), title)

    def subset(self, mask: np.ndarray) -> SongArrays:
        """The songs where the boolean `mask` (n_songs,) is true, in their order."""
        keep = np.flatnonzero(np.asarray(mask, dtype=bool))
        lengths = self.lengths[keep]
        starts = self.offsets[keep]
        # Index of every kept bar: each song's start repeated over its length, plus 0..len-1.
        bar_index = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(
            lengths.sum()
        )  # (T',)
        pick = [int(i) for i in keep]
        return SongArrays(
            tokens=self.tokens[bar_index],
            offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            meters=self.meters[keep],
            pickups=self.pickups[keep],
            paths=[self.paths[i] for i in pick],
            splits=self.splits[keep],
            labels=None if self.labels is None else [self.labels[i] for i in pick],
            qpms=None if self.qpms is None else self.qpms[keep],
            titles=None if self.titles is None else [self.titles[i] for i in pick],
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


# --- reading one file (worker) -----------------------------------------------------------------


def _read_song(args: tuple[str, str, GridConfig]) -> dict[str, Any]:
    """Read and encode one file; {'error': reason} if it cannot be read."""
    from tvae.data.corpus import melody_hash
    from tvae.melody import melody_to_bars
    from tvae.midi import read_midi

    root, rel, grid = args
    try:
        melody, _ = read_midi(Path(root) / rel, grid=grid)
        bars = melody_to_bars(melody, grid)
    except TvaeError as exc:
        return {"error": exc.reason}
    return {
        "tokens": bars.tokens.astype(np.uint8),
        "meter": meter_id(melody.meter),
        "pickup": melody.pickup,
        "qpm": melody.qpm,
        "title": melody.title,
        "hash": melody_hash(melody),
    }


def iter_read(root: Path, files: list[str], grid: GridConfig, workers: int | None,
              progress: bool) -> Iterator[dict[str, Any]]:
    """Read and encode `files` (relative to `root`) in a process pool, yielding each file's
    `_read_song` result in order, so that callers can stream them to disk."""
    from multiprocessing import Pool

    from tqdm import tqdm

    jobs = [(str(root), rel, grid) for rel in files]
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    bar = tqdm(total=len(jobs), disable=not progress, unit="file", desc="reading MIDI")
    if workers == 1 or len(jobs) < 64:
        for job in jobs:
            yield _read_song(job)
            bar.update()
    else:
        with Pool(workers) as pool:
            for result in pool.imap(_read_song, jobs, chunksize=32):
                yield result
                bar.update()
    bar.close()


def _read_all(root: Path, files: list[str], grid: GridConfig, workers: int | None,
              progress: bool) -> list[dict[str, Any]]:
    return list(iter_read(root, files, grid, workers, progress))


# --- folder listing, cache ---------------------------------------------------------------------


@dataclass
class _Listing:
    root: Path  # the folder the paths are relative to
    files: list[str]  # relative POSIX paths, in load order
    manifest: dict[str, dict[str, str]] | None  # path -> manifest row, for exported corpora
    manifest_path: Path | None


def _read_manifest(path: Path) -> dict[str, dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TvaeError(f"cannot read manifest: {exc}", path) from None
    if rows and not {"path", "split"} <= set(rows[0]):
        raise TvaeError("manifest needs the columns 'path' and 'split'", path)
    bad = sorted({r["split"] for r in rows} - set(SPLITS))
    if bad:
        raise TvaeError(f"manifest has unknown splits {bad} (expected {list(SPLITS)})", path)
    return {r["path"]: r for r in rows}


def _list_folder(root: str | Path) -> _Listing:
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
        manifest = _read_manifest(manifest_path)
        files = list(manifest)
    else:
        manifest = None
        files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                       if p.suffix.lower() in MIDI_SUFFIXES and p.is_file())
    if not files:
        raise TvaeError("no MIDI files (*.mid, *.midi) found", root)
    return _Listing(root, files, manifest, manifest_path)


def _cache_key(listing: _Listing, grid: GridConfig) -> str:
    """Hash of the folder, its files' sizes and modification times, the grid and the code."""
    stats = []
    for rel in listing.files:
        try:
            st = os.stat(listing.root / rel)
            stats.append((rel, st.st_size, st.st_mtime_ns))
        except OSError:
            stats.append((rel, -1, -1))
    blob = json.dumps([CACHE_VERSION, str(listing.root.resolve()), stats, asdict(grid)])
    return hashlib.sha1(blob.encode()).hexdigest()[:20]


def default_cache_dir() -> Path:
    """$TVAE_CACHE_DIR, or ~/.cache/tvae."""
    return Path(os.environ.get("TVAE_CACHE_DIR") or Path.home() / ".cache" / "tvae")


def _encode(listing: _Listing, grid: GridConfig, workers: int | None,
            progress: bool) -> dict[str, np.ndarray]:
    """Read every file; the arrays that the cache stores (songs that could be read)."""
    results = _read_all(listing.root, listing.files, grid, workers, progress)
    skipped = Counter(r["error"] for r in results if "error" in r)
    ok = [(rel, r) for rel, r in zip(listing.files, results, strict=True) if "error" not in r]
    lengths = np.array([len(r["tokens"]) for _, r in ok], dtype=np.int64)
    empty = np.zeros((0, grid.steps_per_bar), dtype=np.uint8)
    return {
        "tokens": np.concatenate([r["tokens"] for _, r in ok]) if ok else empty,  # (T, S)
        "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        "meters": np.array([r["meter"] for _, r in ok], dtype=np.int8),
        "pickups": np.array([r["pickup"] for _, r in ok], dtype=np.int8),
        "qpms": np.array([r["qpm"] for _, r in ok], dtype=np.float64),
        "titles": np.array([r["title"] for _, r in ok], dtype=str),
        "paths": np.array([rel for rel, _ in ok], dtype=str),
        "hashes": np.array([r["hash"] for _, r in ok], dtype=str),
        "skipped": np.array(json.dumps(dict(skipped))),
    }


def _load_cache(path: Path) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None if the file is missing or unreadable."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        json.loads(str(arrays["skipped"]))
        if len(arrays["offsets"]) != len(arrays["paths"]) + 1:
            return None
        return arrays
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def _save_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write the cache atomically; a folder that cannot be written only costs speed."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(tmp, path)
    except OSError:
        pass


# --- loading -----------------------------------------------------------------------------------


def _labels(listing: _Listing, paths: list[str], label_column: str | None) -> list[str] | None:
    if label_column is None:
        return None
    if label_column == "folder":
        return [p.split("/")[0] if "/" in p else "" for p in paths]
    if listing.manifest is None:
        raise TvaeError(f"label column '{label_column}' needs a manifest.csv (or use 'folder')",
                        listing.root)
    first = next(iter(listing.manifest.values()))
    if label_column not in first:
        raise TvaeError(f"manifest has no column '{label_column}'", listing.manifest_path)
    return [listing.manifest[p][label_column] for p in paths]


def _splits(listing: _Listing, paths: list[str], hashes: np.ndarray,
            data: DataConfig) -> np.ndarray:
    """(n_songs,) splits: the manifest's, or decided by each melody's content hash."""
    from tvae.data.corpus import split_of

    if listing.manifest is not None:
        names = [listing.manifest[p]["split"] for p in paths]
    else:
        names = [split_of(str(h), data.valid_fraction, data.test_fraction) for h in hashes]
    return np.array(names, dtype="<U5")


def load_folder(root: str | Path, grid: GridConfig = DEFAULT_GRID, data: DataConfig = DEFAULT_DATA,
                label_column: str | None = None, workers: int | None = None,
                cache_dir: str | Path | None = None,
                progress: bool = True) -> tuple[SongArrays, dict[str, int]]:
    """Load every melody of a MIDI folder (or of a manifest .csv) as `SongArrays`.

    Files that cannot be read are skipped; the second value counts them by reason. Splits (and
    labels from `label_column`) come from the folder's manifest.csv when it has one; otherwise
    the split is decided by a hash of each melody's notes and `label_column="folder"` labels
    each song with its first sub-folder. The encoded songs are cached under `cache_dir`
    (default `default_cache_dir()`), keyed by the folder's files, so the next load is fast.
    """
    listing = _list_folder(root)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache_file = cache / f"songs-{_cache_key(listing, grid)}.npz"
    arrays = _load_cache(cache_file)
    if arrays is None:
        arrays = _encode(listing, grid, workers, progress)
        _save_cache(cache_file, arrays)
    skipped = Counter(json.loads(str(arrays["skipped"])))
    paths = [str(p) for p in arrays["paths"]]
    songs = SongArrays(
        tokens=arrays["tokens"], offsets=arrays["offsets"], meters=arrays["meters"],
        pickups=arrays["pickups"], paths=paths,
        splits=_splits(listing, paths, arrays["hashes"], data),
        labels=_labels(listing, paths, label_column), qpms=arrays["qpms"],
        titles=[str(t) for t in arrays["titles"]],
    )
    short = songs.lengths < data.min_bars
    if short.any():
        skipped[f"shorter than {data.min_bars} bars"] += int(short.sum())
        songs = songs.subset(~short)
    return songs, dict(skipped)


def format_skipped(skipped: dict[str, int]) -> str:
    """One line such as 'skipped 3 files: 2 no notes, 1 file is empty (0 bytes)'."""
    parts = ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items(), key=lambda x: -x[1]))
    return f"skipped {sum(skipped.values())} files: {parts}" if skipped else "skipped no files"
