"""The folk corpus export: music21's bundled ABC tunes -> one MIDI file per usable tune.

music21's wheel ships about 12,900 folk tunes in ABC (`essenFolksong`, `oneills1850`,
`ryansMammoth`, `airdsAirs`, `miscFolk`). `export_corpus` splits each ABC file into tunes at its
`X:` headers, turns every tune into a `Melody` in a process pool (`tvae.data.abc_tunes`: music21,
written notes, repeats not expanded) and writes it with `tvae.midi.write_melody`
to OUT_DIR/<collection>/<id>.mid. Every written file is read back with `tvae.midi.read_midi`
and must give the same melody without warnings. Unusable tunes are skipped and counted by reason.

OUT_DIR also gets `manifest.csv` (id, collection, title, meter, key, bars, split, path),
`summary.json` (counts) and `state.jsonl` (one line per tune done, so a rerun resumes).
The train/valid/test split hashes each tune's transposition-invariant note sequence, so
identical tunes always share a split.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from tvae.data.abc_tunes import (
    TuneSource,
    UnusableTuneError,
    header_field,
    split_abc,
    tune_to_melody,
)
from tvae.data.songs import melody_hash, split_of  # the split rule, shared with loading
from tvae.errors import TvaeError, TvaeWriteError
from tvae.files import check_replaceable, read_regular_file, write_bytes_atomic

COLLECTIONS = ("essenFolksong", "oneills1850", "ryansMammoth", "airdsAirs", "miscFolk")
EXPORT_VERSION = 2  # bump when the conversion changes; state lines of other versions are redone
STATE_FILE = "state.jsonl"
MANIFEST_COLUMNS = ("id", "collection", "title", "meter", "key", "bars", "split", "path")


MAX_STATE_BYTES = 256 * 2**20  # the export's state file (about 3 MB for the whole corpus)

@dataclass
class TuneResult:
    """What happened to one tune; one line of the state file."""

    id: str
    collection: str
    status: str  # "ok" or "skip"
    reason: str = ""  # skip reason key
    title: str = ""
    meter: str = ""
    key: str = ""
    bars: int = 0
    path: str = ""  # relative to OUT_DIR
    content_hash: str = ""
    repairs: dict[str, int] = field(default_factory=dict)  # grace notes dropped, bars padded...
    version: int = EXPORT_VERSION


# --- reading ABC -------------------------------------------------------------------------------


def corpus_root() -> Path:
    """music21's bundled corpus folder (music21 is the optional `tvae[corpus]` extra)."""
    try:
        import music21
    except ImportError:
        raise TvaeError("tvae corpus reads music21's folk corpus, and music21 is not installed: "
                        'pip install "tvae[corpus]"') from None
    return Path(music21.__file__).parent / "corpus"


def list_tunes(root: Path | None = None) -> list[TuneSource]:
    """Every tune of the bundled collections, in a deterministic order spread over collections.

    Within a collection the order is a fixed shuffle (by the hash of the id); the collections
    then take turns, so the first N tunes sample every collection.
    """
    root = corpus_root() if root is None else Path(root)
    per_collection: list[list[TuneSource]] = []
    for collection in COLLECTIONS:
        tunes = []
        for path in sorted((root / collection).glob("*.abc")):
            raw = path.read_bytes()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("latin-1")
            header, blocks = split_abc(text)
            header = "\n".join(ln for ln in header.splitlines() if re.match(r"^[A-Za-z]:", ln))
            for i, block in enumerate(blocks, start=1):
                tunes.append(TuneSource(collection, path.name, i, f"{header}\n{block}"))
        tunes.sort(key=lambda t: hashlib.sha1(t.id.encode()).hexdigest())
        per_collection.append(tunes)
    order: list[TuneSource] = []
    for rank in range(max((len(t) for t in per_collection), default=0)):
        order.extend(tunes[rank] for tunes in per_collection if rank < len(tunes))
    return order


# --- export ------------------------------------------------------------------------------------


def export_tune(source: TuneSource, out_dir: Path) -> TuneResult:
    """Convert, write and verify one tune (runs in a worker process)."""
    from tvae.midi import read_midi, write_melody

    result = TuneResult(source.id, source.collection, "skip",
                        key=header_field(source.text, "K"))
    try:
        melody, result.repairs = tune_to_melody(source)
    except UnusableTuneError as exc:
        result.reason = exc.reason
        return result
    rel = f"{source.collection}/{source.id}.mid"
    write_melody(melody, out_dir / rel)
    back, report = read_midi(out_dir / rel)
    if back != melody or report.warnings:
        (out_dir / rel).unlink()
        result.reason = "MIDI round trip differs"
        return result
    result.status, result.path, result.title = "ok", rel, melody.title
    result.meter, result.bars = f"{melody.meter[0]}/{melody.meter[1]}", melody.n_bars
    result.content_hash = melody_hash(melody)
    return result


def _export_one(args: tuple[TuneSource, str]) -> TuneResult:
    source, out_dir = args
    try:
        return export_tune(source, Path(out_dir))
    except Exception as exc:  # noqa: BLE001 - a music21 failure on one tune must not stop the run
        return TuneResult(source.id, source.collection, "skip",
                          reason=f"music21 failure ({type(exc).__name__})")


def load_state(out_dir: Path) -> dict[str, TuneResult]:
    """Results of earlier runs of this export version; unreadable lines are ignored."""
    done: dict[str, TuneResult] = {}
    path = out_dir / STATE_FILE
    if not path.exists() and not path.is_symlink():
        return done
    text = read_regular_file(path, MAX_STATE_BYTES, "the export's state file")
    for line in text.decode("utf-8", "replace").splitlines():
        result = _state_line(line)
        if result is None:
            continue
        ok_file = result.status != "ok" or (out_dir / result.path).is_file()
        if result.version == EXPORT_VERSION and ok_file:
            done[result.id] = result
    return done


def _state_line(line: str) -> TuneResult | None:
    """One line of the state file as a TuneResult, or None if it is not one (a torn last line,
    an edit, another version's fields): such tunes are simply exported again."""
    try:
        result = TuneResult(**json.loads(line))
    except (ValueError, TypeError, RecursionError):
        return None
    hints = {f.name: f.type for f in fields(TuneResult)}
    for name, kind in hints.items():
        value = getattr(result, name)
        if kind in ("str", "int") and type(value).__name__ != kind:
            return None
    if not isinstance(result.repairs, dict) or not all(
            isinstance(k, str) and type(v) is int for k, v in result.repairs.items()):
        return None
    return result


def write_manifest(out_dir: Path, results: list[TuneResult]) -> None:
    """manifest.csv with one row per usable tune (written through a temporary file)."""
    handle = io.StringIO(newline="")
    writer = csv.writer(handle)
    writer.writerow(MANIFEST_COLUMNS)
    for r in results:
        if r.status == "ok":
            split = split_of(r.content_hash)
            writer.writerow([r.id, r.collection, r.title, r.meter, r.key, r.bars, split, r.path])
    write_bytes_atomic(handle.getvalue().encode("utf-8"), out_dir / "manifest.csv")


def summarize(results: list[TuneResult]) -> dict[str, Any]:
    """Counts of usable tunes (per meter, collection, split), skips and repairs."""
    ok = [r for r in results if r.status == "ok"]
    repairs: Counter = Counter()
    for r in ok:
        repairs.update(r.repairs)
    return {
        "tunes": len(results),
        "usable": len(ok),
        "usable_per_meter": dict(Counter(r.meter for r in ok).most_common()),
        "usable_per_collection": dict(Counter(r.collection for r in ok).most_common()),
        "usable_per_split": dict(Counter(split_of(r.content_hash) for r in ok).most_common()),
        "skipped_per_reason": dict(Counter(r.reason for r in results if r.status != "ok")
                                   .most_common()),
        "skipped_per_collection": dict(Counter(r.collection for r in results
                                               if r.status != "ok").most_common()),
        "repairs_in_usable_tunes": dict(repairs.most_common()),
    }


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a few readable lines."""
    lines = [f"usable tunes: {summary['usable']} of {summary['tunes']}"]
    for key in ("usable_per_meter", "usable_per_collection", "usable_per_split",
                "skipped_per_reason", "skipped_per_collection", "repairs_in_usable_tunes"):
        lines.append(f"{key.replace('_', ' ')}:")
        lines.extend(f"  {name:<32} {count}" for name, count in summary[key].items())
    return "\n".join(lines)


def export_corpus(out_dir: str | Path, limit: int | None = None, workers: int | None = None,
                  progress: bool = True, root: Path | None = None) -> dict[str, Any]:
    """Export the bundled folk tunes to MIDI under `out_dir`; returns the summary counts.

    Resumable: tunes recorded in `state.jsonl` (whose files exist) are not redone.
    """
    from multiprocessing import Pool

    from tqdm import tqdm

    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TvaeError(f"cannot create the folder: {exc.strerror or exc}", out_dir) from None
    sources = list_tunes(root)
    if limit is not None:
        sources = sources[: max(limit, 0)]
    done = load_state(out_dir)
    todo = [(s, str(out_dir)) for s in sources if s.id not in done]
    workers = workers or os.cpu_count() or 1
    for name in ("manifest.csv", "summary.json"):  # a folder in the way: before any work
        check_replaceable(out_dir / name)
    if todo:
        state_path = out_dir / STATE_FILE
        try:
            with state_path.open("a") as state, Pool(min(workers, len(todo))) as pool:
                results = pool.imap_unordered(_export_one, todo, chunksize=4)
                for result in tqdm(results, total=len(todo), disable=not progress, unit="tune"):
                    state.write(json.dumps(asdict(result)) + "\n")
                    state.flush()
                    done[result.id] = result
        except OSError as exc:  # a full disk: what was recorded stays, and is not redone
            raise TvaeWriteError(f"cannot write ({exc.strerror or exc}); run `tvae corpus` "
                                 "again to go on where it stopped", state_path) from None
    results = [done[s.id] for s in sources]
    write_manifest(out_dir, results)
    summary = summarize(results)
    write_bytes_atomic((json.dumps(summary, indent=2) + "\n").encode(), out_dir / "summary.json")
    return summary
