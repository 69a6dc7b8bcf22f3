"""Large MIDI collections: encode a folder once into sharded, memory-mapped arrays.

`prepare_folder` (`tvae prepare MIDI_DIR OUT_DIR [--shard I/N]`) reads the files whose path
hashes to shard I of N (which files are songs, their splits and skip reasons: tvae.data.songs)
and streams them into OUT_DIR/shard-I-of-N/:

    tokens.npy   (T, S) uint8 step classes of every bar, song after song
    offsets.npy  (n + 1,) int64: song i covers bars offsets[i]:offsets[i + 1]
    meters.npy, pickups.npy (n,) int8; qpms.npy (n,) float64
    paths.npy, splits.npy, hashes.npy (n,): the index `load_prepared` reads
    titles.npy   the melodies' titles, UTF-8 one after the other, after their (n + 1,) offsets
    manifest.csv path, split, the source manifest's other columns, bars, hash (one row a song)
    skipped.csv  path, reason of every file that could not be read
    prepared.json the marker: format, grid, shard, counts (written last)

Shards can be made on different machines and copied under one parent folder. `load_prepared`
memory-maps the arrays of every shard (the tokens are never read whole), so start-up time and
memory grow only with the per-song index. A MIDI folder given to `tvae train` is prepared the
same way into a cache (`tvae.data.dataset.load_folder`): one format, one loader.

Shape legend: T bars of all songs, S steps per bar, B/N index arrays of any shape.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tvae import __version__
from tvae.config import DataConfig, GridConfig, config_to_dict
from tvae.data.arrays import SongArrays
from tvae.data.songs import (
    Listing,
    Manifest,
    Skipped,
    drop_short,
    iter_read,
    list_folder,
    read_manifest,
    read_skipped,
    song_labels,
    song_splits,
    write_skipped,
)
from tvae.errors import TvaeError, TvaeWarning, TvaeWriteError
from tvae.files import ensure_folder, read_json

MARKER = "prepared.json"
FORMAT = "tvae-prepared"
FORMAT_VERSION = 1
HEADER_BYTES = 128  # room reserved for the .npy header of tokens.npy (written last)
BASE_COLUMNS = ("path", "split", "bars", "hash")


def shard_of(rel: str, shards: int) -> int:
    """The shard of a file: a stable hash of its relative path, modulo `shards`."""
    return int(hashlib.sha1(os.fsencode(rel)).hexdigest()[:15], 16) % shards  # any file name


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N), checked: 0 <= I < N."""
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise TvaeError(f"--shard must look like I/N (such as 0/4), got {text!r}") from None
    if not 0 <= index < count:
        raise TvaeError(f"--shard {text}: needs 0 <= I < N")
    return index, count


class _RowWriter:
    """Streams rows of a (T, S) uint8 array into a .npy file whose header is written last."""

    def __init__(self, path: Path, width: int) -> None:
        self.path, self.width, self.rows = path, width, 0
        self.handle = open(path, "wb")  # noqa: SIM115 (closed by __exit__)
        self.handle.write(b"\0" * HEADER_BYTES)

    def __enter__(self) -> _RowWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def append(self, rows: np.ndarray) -> None:
        self.handle.write(np.ascontiguousarray(rows, dtype=np.uint8).tobytes())
        self.rows += len(rows)

    def close(self) -> None:
        header = repr({"descr": "|u1", "fortran_order": False, "shape": (self.rows, self.width)})
        prefix = np.lib.format.magic(1, 0) + (HEADER_BYTES - 10).to_bytes(2, "little")
        text = header.ljust(HEADER_BYTES - len(prefix) - 1) + "\n"
        self.handle.seek(0)
        self.handle.write(prefix + text.encode("latin1"))
        self.handle.close()


def _write_shard(listing: Listing, files: list[str], folder: Path, grid: GridConfig,
                 data: DataConfig, workers: int | None, progress: bool) -> dict[str, Any]:
    """Encode `files` into `folder`; returns the counts for the marker."""
    songs: dict[str, list[Any]] = {k: [] for k in ("path", "bars", "meter", "pickup", "qpm",
                                                  "title", "hash")}
    skipped = Skipped()
    with _RowWriter(folder / "tokens.npy", grid.steps_per_bar) as tokens:
        for rel, song in zip(files, iter_read(listing.root, files, grid, workers, progress),
                             strict=True):
            if "error" in song:
                skipped.add(rel, song["error"])
                continue
            tokens.append(song["tokens"])
            for key, value in (("path", rel), ("bars", len(song["tokens"])),
                               ("meter", song["meter"]), ("pickup", song["pickup"]),
                               ("qpm", song["qpm"]), ("title", song["title"]),
                               ("hash", song["hash"])):
                songs[key].append(value)
    write_skipped(folder / "skipped.csv", skipped)
    hashes = np.array(songs["hash"], dtype="S40")
    splits = song_splits(songs["path"], songs["hash"], listing.manifest, data)
    arrays = {"offsets": np.concatenate([[0], np.cumsum(songs["bars"], dtype=np.int64)]),
              "meters": np.array(songs["meter"], np.int8),
              "pickups": np.array(songs["pickup"], np.int8),
              "qpms": np.array(songs["qpm"], np.float64),
              "paths": np.array(songs["path"], dtype=str), "splits": splits, "hashes": hashes}
    for name, array in arrays.items():
        np.save(folder / f"{name}.npy", array)
    _save_texts(folder / "titles.npy", songs["title"])
    columns = _write_manifest(folder / "manifest.csv", listing, songs, splits)
    return {"songs": len(songs["path"]), "bars": tokens.rows, "skipped": dict(skipped),
            "columns": columns}


def _save_texts(path: Path, texts: list[str]) -> None:
    """Strings as one uint8 array: n + 1 int64 byte offsets, then the UTF-8 of each, so that
    disk grows with the text, not with the longest string times n (as a numpy str array does)."""
    encoded = [t.encode("utf-8", "surrogatepass") for t in texts]
    ends = np.cumsum([len(b) for b in encoded], dtype=np.int64)  # (n,)
    offsets = np.concatenate([[0], ends]).astype("<i8")  # (n + 1,)
    np.save(path, np.frombuffer(offsets.tobytes() + b"".join(encoded), dtype=np.uint8))


def _load_texts(path: Path, paths: list[str]) -> list[str]:
    """The strings `_save_texts` wrote; the file stems of `paths` if there is no such file
    (shards prepared before titles were kept)."""
    if not path.is_file():
        return [Path(p).stem for p in paths]
    data = np.load(path).tobytes()
    offsets = np.frombuffer(data[: 8 * (len(paths) + 1)], dtype="<i8")  # (n + 1,)
    text = data[8 * (len(paths) + 1) :]
    return [text[a:b].decode("utf-8", "surrogatepass")
            for a, b in zip(offsets[:-1], offsets[1:], strict=True)]


def _write_manifest(path: Path, listing: Listing, songs: dict[str, list[Any]],
                    splits: np.ndarray) -> list[str]:
    """manifest.csv: path, split, the source manifest's other columns, bars, hash."""
    extra: list[str] = []
    if listing.manifest:
        first = next(iter(listing.manifest.values()))
        extra = [c for c in first if c not in BASE_COLUMNS]
    with open(path, "w", newline="", encoding="utf-8", errors="surrogateescape") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "split", *extra, "bars", "hash"])
        for i, rel in enumerate(songs["path"]):
            source = listing.manifest[rel] if listing.manifest else {}
            writer.writerow([rel, str(splits[i]), *(source.get(c, "") for c in extra),
                             songs["bars"][i], songs["hash"][i]])
    return ["path", "split", *extra, "bars", "hash"]


def prepare_folder(midi_dir: str | Path | Listing, out_dir: str | Path, *,
                   grid: GridConfig = GridConfig(), data: DataConfig = DataConfig(),
                   shard: tuple[int, int] = (0, 1), workers: int | None = None,
                   progress: bool = True) -> dict[str, Any]:
    """Encode shard `shard` = (I, N) of a MIDI folder (or manifest .csv, or its `Listing`) into
    OUT_DIR/shard-I-of-N.

    Splits come from the folder's manifest.csv, else from each melody's content hash with
    `data`'s fractions. Returns the shard's marker (with 'folder' added). The shard is written
    to a hidden temporary folder and renamed when complete, so a killed run or a full disk
    leaves no half shard; an output path that cannot be written is one TvaeWriteError.
    """
    index, count = shard
    listing = midi_dir if isinstance(midi_dir, Listing) else list_folder(midi_dir)
    files = [rel for rel in listing.files if shard_of(rel, count) == index]
    final = Path(out_dir) / f"shard-{index}-of-{count}"
    ensure_folder(final)  # OUT_DIR made, or one line saying why not (a file in the way...)
    if final.exists():
        raise TvaeError("this shard is already prepared (delete the folder to prepare it again)",
                        final)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        counts = _write_shard(listing, files, tmp, grid, data, workers, progress)
        marker = {"format": FORMAT, "format_version": FORMAT_VERSION, "tvae_version": __version__,
                  "grid": config_to_dict(grid), "shard": index, "shards": count,
                  "source": str(listing.root.resolve()), "files": len(files),
                  "split_from": "manifest" if listing.manifest is not None else "hash",
                  "valid_fraction": data.valid_fraction, "test_fraction": data.test_fraction,
                  **counts}
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")  # marks it complete
        os.replace(tmp, final)
    except OSError as exc:
        if (final / MARKER).is_file():  # another process finished the same shard first
            raise TvaeError("this shard is already prepared (by another process)", final) from None
        raise TvaeWriteError(f"cannot write the shard ({exc.strerror or exc})", final) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {**marker, "folder": str(final)}


# --- loading -----------------------------------------------------------------------------------


class ShardTokens:
    """The (T_k, S) token arrays of several shards seen as one (T, S) array. Indexing with
    integers, index arrays of any shape or a slice reads only the rows asked for."""

    def __init__(self, parts: list[np.ndarray]) -> None:
        self.parts = parts
        self.starts = np.concatenate([[0], np.cumsum([len(p) for p in parts])])  # (K + 1,)
        self.shape = (int(self.starts[-1]), parts[0].shape[1])
        self.dtype = parts[0].dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: Any) -> np.ndarray:
        if isinstance(index, slice):
            index = np.arange(*index.indices(len(self)))
        index = np.asarray(index, dtype=np.int64)  # (B...)
        part = np.searchsorted(self.starts, index, side="right") - 1  # (B...) shard of each row
        out = np.empty((*index.shape, self.shape[1]), dtype=self.dtype)  # (B..., S)
        for k in np.unique(part):
            chosen = part == k
            out[chosen] = self.parts[k][index[chosen] - self.starts[k]]
        return out


def is_prepared(path: str | Path) -> bool:
    """Whether `path` is a prepared shard folder or a folder holding some."""
    path = Path(path)
    return (path / MARKER).is_file() or (path.is_dir() and any(path.glob(f"*/{MARKER}")))


def find_shards(paths: Sequence[str | Path]) -> list[tuple[Path, dict[str, Any]]]:
    """(folder, marker) of every shard in `paths` (shard folders or their parents), checked to
    share one grid and shard count; warns when shards are missing."""
    import warnings

    folders: list[Path] = []
    for path in map(Path, paths):
        found = [path] if (path / MARKER).is_file() else sorted(
            p.parent for p in path.glob(f"*/{MARKER}"))
        if not found:
            raise TvaeError("not a prepared folder (no prepared.json): run `tvae prepare`", path)
        folders.extend(found)
    shards = []
    for folder in folders:
        marker = read_json(folder / MARKER, "prepared.json")
        if not isinstance(marker, dict) or not isinstance(marker.get("shard"), int):
            raise TvaeError("prepared.json is not a prepared shard's marker", folder / MARKER)
        if marker.get("format") != FORMAT or marker.get("format_version") != FORMAT_VERSION:
            raise TvaeError("prepared with another tvae version: run `tvae prepare` again", folder)
        shards.append((folder, marker))
    shards.sort(key=lambda s: s[1]["shard"])
    first = shards[0][1]
    for folder, marker in shards:
        if marker["grid"] != first["grid"] or marker["shards"] != first["shards"]:
            raise TvaeError("shards were prepared with different grids or shard counts", folder)
    seen = [m["shard"] for _, m in shards]
    if len(set(seen)) != len(seen):
        raise TvaeError(f"the same shard is given twice (shards {seen})", shards[0][0])
    missing = sorted(set(range(first["shards"])) - set(seen))
    if missing:
        warnings.warn(f"{paths[0]}: shards {missing} of {first['shards']} are missing; training "
                      "on the others", TvaeWarning, stacklevel=2)
    return shards


def _shard_splits(folder: Path, marker: dict[str, Any], data: DataConfig) -> np.ndarray:
    """(n,) splits of a shard; hash-decided splits are redone if `data` asks other fractions."""
    splits = np.load(folder / "splits.npy")
    same = (marker["valid_fraction"], marker["test_fraction"]) == (data.valid_fraction,
                                                                   data.test_fraction)
    if marker["split_from"] == "manifest" or same:
        return splits
    hashes = np.load(folder / "hashes.npy", mmap_mode="r")
    return song_splits([], [h.decode() for h in hashes], None, data)


def _shard_skipped(folder: Path, marker: dict[str, Any]) -> Skipped:
    """The files a shard skipped, by name (its skipped.csv; the marker's counts without it)."""
    try:
        return read_skipped(folder / "skipped.csv")
    except (OSError, KeyError, csv.Error):
        return Skipped(("", reason) for reason, n in marker["skipped"].items() for _ in range(n))


def _shard_labels(folder: Path, marker: dict[str, Any], paths: list[str],
                  column: str) -> list[str] | None:
    """Labels by `song_labels`; the manifest is the source's columns kept in manifest.csv."""
    manifest: Manifest | None = None
    if column != "folder" and marker["split_from"] == "manifest":
        manifest = read_manifest(folder / "manifest.csv")
    return song_labels(paths, column, manifest, folder / "manifest.csv")


def load_prepared(paths: Sequence[str | Path], grid: GridConfig = GridConfig(),
                  data: DataConfig = DataConfig(), label_column: str | None = None
                  ) -> tuple[SongArrays, Skipped]:
    """The songs of prepared shards as `SongArrays` whose tokens are memory-mapped, and the
    files skipped: those `tvae prepare` could not read and the songs `drop_short` drops."""
    shards = find_shards(paths)
    if shards[0][1]["grid"] != config_to_dict(grid):
        raise TvaeError(f"prepared with the grid {shards[0][1]['grid']}; train with the same "
                        "--min-pitch, --max-pitch and --steps-per-bar", shards[0][0])
    skipped = Skipped()
    parts: dict[str, list[Any]] = {k: [] for k in ("tokens", "offsets", "meters", "pickups",
                                                  "qpms", "paths", "splits", "labels",
                                                  "titles")}
    start = 0
    for folder, marker in shards:
        skipped.extend(_shard_skipped(folder, marker))
        offsets = np.load(folder / "offsets.npy", mmap_mode="r")
        parts["tokens"].append(np.load(folder / "tokens.npy", mmap_mode="r"))
        parts["offsets"].append(offsets[1:] + start if parts["offsets"] else offsets + start)
        start += int(offsets[-1])
        for name in ("meters", "pickups", "qpms"):
            parts[name].append(np.load(folder / f"{name}.npy", mmap_mode="r"))
        names = np.load(folder / "paths.npy", mmap_mode="r").tolist()
        parts["paths"].extend(names)
        parts["titles"].extend(_load_texts(folder / "titles.npy", names))
        parts["splits"].append(_shard_splits(folder, marker, data))
        if label_column is not None:
            parts["labels"].extend(_shard_labels(folder, marker, names, label_column) or [])
    one = len(shards) == 1
    join = (lambda arrays: arrays[0]) if one else np.concatenate
    songs = SongArrays(
        tokens=parts["tokens"][0] if one else ShardTokens(parts["tokens"]),  # duck-typed (T, S)
        offsets=join(parts["offsets"]), meters=join(parts["meters"]),
        pickups=join(parts["pickups"]), paths=parts["paths"],
        splits=np.concatenate(parts["splits"]),
        labels=parts["labels"] if label_column is not None else None, qpms=join(parts["qpms"]),
        titles=parts["titles"])
    return drop_short(songs, skipped, data), skipped
