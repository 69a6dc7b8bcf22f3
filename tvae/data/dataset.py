"""Loading songs: a MIDI folder (prepared once into a cache) or prepared shard folders.

Data preparation is an offline, cached step and datasets only load: `load_folder` prepares a
MIDI folder with `tvae.data.prepare.prepare_folder` into one shard under the cache folder, keyed
by the folder's file list, and loads it with `load_prepared` like any `tvae prepare` output. So
there is one cache format and one loader; the rules (which files, splits, labels, skips) are in
`tvae.data.songs`. The N-bar training windows are in tvae.data.windows.

Shape legend: T total bars of all songs, S steps per bar.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from tvae.config import DataConfig, GridConfig
from tvae.data.arrays import SongArrays
from tvae.data.prepare import MARKER, is_prepared, load_prepared, prepare_folder
from tvae.data.songs import (
    MIDI_SUFFIXES,
    Listing,
    Skipped,
    format_skipped,
    list_folder,
    song_labels,
)
from tvae.errors import TvaeError
from tvae.files import read_json

__all__ = ["SongArrays", "Skipped", "default_cache_dir", "format_skipped", "load_folder",
           "load_songs"]

CACHE_VERSION = 2  # bump when the encoding changes: caches of other versions are not found
# (version 1 caches were songs-*.npz files; nothing reads them now, and they may be deleted)
DEFAULT_GRID = GridConfig()
DEFAULT_DATA = DataConfig()


def default_cache_dir() -> Path:
    """$TVAE_CACHE_DIR, or ~/.cache/tvae."""
    return Path(os.environ.get("TVAE_CACHE_DIR") or Path.home() / ".cache" / "tvae")


def cache_key(listing: Listing, grid: GridConfig) -> str:
    """Hash of the folder, its files' (and manifest's) sizes and modification times, the grid
    and the cache version: any change to them prepares the folder again."""
    stats = []
    names = listing.files + ([listing.manifest_path.name] if listing.manifest_path else [])
    for rel in names:
        try:
            st = os.stat(listing.root / rel)
            stats.append((rel, st.st_size, st.st_mtime_ns))
        except OSError:
            stats.append((rel, -1, -1))
    blob = json.dumps([CACHE_VERSION, str(listing.root.resolve()), stats, asdict(grid)])
    return hashlib.sha1(blob.encode()).hexdigest()[:20]


def _open_cached(shard: Path, listing: Listing, grid: GridConfig, data: DataConfig,
                 label_column: str | None) -> tuple[SongArrays, Skipped] | None:
    """The cached shard's songs, or None if it is missing, unreadable or not of this listing."""
    if not (shard / MARKER).is_file():
        return None
    try:
        songs, skipped = load_prepared([shard], grid, data, label_column)
        complete = read_json(shard / MARKER, "prepared.json")["files"] == len(listing.files)
        complete = complete and len(songs.tokens) == int(np.load(shard / "offsets.npy")[-1])
    except (TvaeError, OSError, ValueError, KeyError, TypeError, EOFError):
        return None
    return (songs, skipped) if complete else None


def _in_memory(songs: SongArrays) -> SongArrays:
    """`songs` with every array read into memory (its files may then be deleted)."""
    return replace(songs, tokens=np.array(songs.tokens), offsets=np.array(songs.offsets),
                   meters=np.array(songs.meters), pickups=np.array(songs.pickups),
                   qpms=None if songs.qpms is None else np.array(songs.qpms))


def load_folder(root: str | Path, grid: GridConfig = DEFAULT_GRID, data: DataConfig = DEFAULT_DATA,
                label_column: str | None = None, workers: int | None = None,
                cache_dir: str | Path | None = None,
                progress: bool = True) -> tuple[SongArrays, Skipped]:
    """Load every melody of a MIDI folder (or of a manifest .csv) as `SongArrays`.

    Returns the songs and the files skipped (`Skipped`: counts by reason, and `.files`, each
    path with its reason): files that cannot be read, and songs shorter than `data.min_bars`.
    Splits (and labels from `label_column`) come from the folder's manifest.csv when it has one;
    otherwise the split is decided by a hash of each melody's notes and `label_column="folder"`
    labels each song with its first sub-folder (tvae.data.songs). The folder is prepared once
    into `cache_dir` (default `default_cache_dir()`), keyed by its files, and memory-mapped from
    there; a cache that is corrupt is prepared again, one that cannot be written only costs
    speed.
    """
    listing = list_folder(root)
    song_labels(listing.files, label_column, listing.manifest,  # a bad column: refused first
                listing.manifest_path or listing.root)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = cache / f"folder-{cache_key(listing, grid)}"
    shard = folder / "shard-0-of-1"
    found = _open_cached(shard, listing, grid, data, label_column)
    if found is not None:
        return found
    shutil.rmtree(shard, ignore_errors=True)  # a corrupt one (another process's temporary
    # folder beside it is left alone: that process renames it into place when it is done)
    try:
        prepare_folder(listing, folder, grid=grid, data=data, workers=workers, progress=progress)
    except TvaeError:  # the cache cannot be written (or another process is writing it)
        found = _open_cached(shard, listing, grid, data, label_column)
        if found is not None:
            return found
        with tempfile.TemporaryDirectory(prefix="tvae-") as tmp:
            prepare_folder(listing, tmp, grid=grid, data=data, workers=workers,
                           progress=progress)
            songs, skipped = load_prepared([Path(tmp) / shard.name], grid, data, label_column)
            return _in_memory(songs), skipped
    found = _open_cached(shard, listing, grid, data, label_column)
    if found is None:
        raise TvaeError("the prepared cache could not be read back", shard)
    return found


def _refuse_midi_beside_shards(folder: str | Path) -> None:
    """A folder holding both prepared shards and MIDI files (`tvae prepare DIR DIR`) would
    be read as prepared, its MIDI files silently left out: refused in one line."""
    if Path(folder).is_dir() and any(p.suffix.lower() in MIDI_SUFFIXES
                                     for p in Path(folder).rglob("*")):
        raise TvaeError("holds both MIDI files and prepared shards, and only the shards would "
                        "be read: give the MIDI files and the shards folders of their own",
                        folder)


def load_songs(data_dir: str | Path | Sequence[str | Path], grid: GridConfig = DEFAULT_GRID,
               data: DataConfig = DEFAULT_DATA, label_column: str | None = None,
               progress: bool = True) -> tuple[SongArrays, Skipped]:
    """Songs of prepared folders (`load_prepared`) or of one MIDI folder (`load_folder`)."""
    dirs = [data_dir] if isinstance(data_dir, (str, Path)) else list(data_dir)
    if any(is_prepared(d) for d in dirs):
        for folder in dirs:
            _refuse_midi_beside_shards(folder)
        return load_prepared(dirs, grid, data, label_column)
    if len(dirs) != 1:
        raise TvaeError("several folders can only be given when they are prepared folders "
                        "(`tvae prepare`)", dirs[0])
    return load_folder(dirs[0], grid, data, label_column=label_column, progress=progress)
