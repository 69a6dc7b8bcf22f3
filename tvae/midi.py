"""MIDI files <-> `Melody`: the only module that touches a MIDI library (symusic).

Reading picks the melody track, reduces polyphony to its top voice, quantizes to sixteenths and
folds pitches into the grid's range. Every such change is counted in the `ReadReport` and raised
as a `TvaeWarning` by `read_melody`; nothing is changed silently. Anything that cannot be read
raises a one-line `TvaeError` naming the file.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from math import gcd
from pathlib import Path

import numpy as np
import symusic

from tvae.config import MAX_BARS, GridConfig
from tvae.errors import TvaeError, TvaeWarning
from tvae.files import readable, write_bytes_atomic
from tvae.melody import Melody, Note, fit_pitch_range, meter_steps, normalize_meter

MAX_FILE_BYTES = 64 * 1024 * 1024  # larger files are refused before parsing
POLYPHONY_TOLERANCE = 0.05  # share of overlapping onsets a "monophonic" track may have
MAX_MERGED_PARTS = 64  # same-name tracks tried one by one as parts of the melody, at most
WRITE_TPQ = 480  # ticks per quarter note of written files
VELOCITY = 90


@dataclass
class ReadReport:
    """What `read_midi` found in a file and what it changed."""

    path: str
    n_tracks: int = 0
    track: int = -1  # index of the chosen track in the file
    track_name: str = ""
    meter: str = ""  # as written in the file, e.g. "2/2"
    qpm: float = 120.0
    pickup: int = 0
    n_notes: int = 0  # notes in the melody read
    changes: dict[str, int] = field(default_factory=dict)  # what was changed, counted
    warnings: list[str] = field(default_factory=list)

    def warn(self, key: str, count: int, message: str) -> None:
        if count:
            self.changes[key] = self.changes.get(key, 0) + count
            self.warnings.append(message)


def _load_score(path: Path) -> symusic.Score:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise TvaeError(f"cannot open file: {exc.strerror or exc}", path) from None
    if not path.is_file():
        raise TvaeError("not a file", path)
    if size == 0:
        raise TvaeError("file is empty (0 bytes)", path)
    if size > MAX_FILE_BYTES:
        raise TvaeError(f"file is {size / 2**20:.0f} MB; tvae reads MIDI files up to 64 MB", path)
    data = path.read_bytes()
    if data[:4] != b"MThd":
        raise TvaeError("not a MIDI file (no MThd header)", path)
    if len(data) < 14:
        raise TvaeError("truncated MIDI file (header cut short)", path)
    division = int.from_bytes(data[12:14], "big")
    if division == 0 or division & 0x8000:
        raise TvaeError("unsupported MIDI time division (zero or SMPTE)", path)
    try:
        return symusic.Score.from_midi(data)
    except Exception as exc:  # symusic raises RuntimeError/ValueError with a message
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise TvaeError(f"cannot parse MIDI ({reason})", path) from None


def _track_name(track: symusic.core.TrackTick) -> str:
    try:
        name = str(track.name)
    except Exception:  # undecodable bytes
        return ""
    return "".join(ch for ch in name if ch.isprintable())[:200]


def _is_monophonic(starts: np.ndarray, ends: np.ndarray) -> bool:
    order = np.argsort(starts, kind="stable")
    s, e = starts[order], ends[order]
    overlaps = np.count_nonzero(s[1:] < np.maximum.accumulate(e)[:-1])
    return overlaps <= POLYPHONY_TOLERANCE * max(len(s), 1)


def _overlap_share(starts: np.ndarray, ends: np.ndarray) -> float:
    """Share of notes that start while an earlier note still sounds (0: monophonic)."""
    if len(starts) < 2:
        return 0.0
    order = np.argsort(starts, kind="stable")
    s, e = starts[order], ends[order]
    return float(np.count_nonzero(s[1:] < np.maximum.accumulate(e)[:-1]) / len(s))


MAX_LISTED_TRACKS = 256  # `tvae inspect` lists at most this many tracks


def list_tracks(path: str | Path) -> list[dict]:
    """Every track of a MIDI file (at most MAX_LISTED_TRACKS): index, name, program, notes,
    polyphony (share of notes starting while another sounds) and whether it is a drum track,
    so that `--track` need not be guessed."""
    score = _load_score(Path(path))
    rows = []
    for i, t in enumerate(list(score.tracks)[:MAX_LISTED_TRACKS]):
        arr = t.notes.numpy()
        start = arr["time"].astype(np.int64)
        rows.append({"index": i, "name": _track_name(t), "program": int(t.program),
                     "notes": int(t.note_num()), "drum": bool(t.is_drum),
                     "polyphony": round(_overlap_share(start, start + arr["duration"]), 3)})
    return rows


def _choose_track(score: symusic.Score, track: int | None, path: Path) -> int:
    tracks = list(score.tracks)
    if track is not None:
        if not 0 <= track < len(tracks):
            raise TvaeError(f"--track {track} does not exist (the file has {len(tracks)})", path)
        if tracks[track].note_num() == 0:
            raise TvaeError(f"track {track} has no notes", path)
        return track
    melodic = [i for i, t in enumerate(tracks) if not t.is_drum and t.note_num() > 0]
    if not melodic:
        if any(t.note_num() > 0 for t in tracks):
            raise TvaeError("only drum tracks have notes", path)
        raise TvaeError("no notes", path)
    mono = []
    for i in melodic:
        arr = tracks[i].notes.numpy()
        start = arr["time"].astype(np.int64)
        if _is_monophonic(start, start + arr["duration"]):
            mono.append(i)
    pool = mono or melodic
    return max(pool, key=lambda i: (tracks[i].note_num(), -i))


def _track_notes(score: symusic.Score, index: int, report: ReadReport) -> dict[str, np.ndarray]:
    """The chosen track's notes, merged with the parts symusic split off it at program changes
    (melodic tracks of the same name whose notes interleave without overlapping).

    Linear in the notes when all the parts together with the track are monophonic (the usual
    case: one line split at instrument changes). Otherwise each part is tried in turn and kept
    when it adds no overlaps; that costs a pass over the merged notes per part, so at most
    MAX_MERGED_PARTS parts are tried (a file with 65,535 one-note tracks took 39 s before)."""
    tracks = list(score.tracks)
    name = _track_name(tracks[index])
    arr = tracks[index].notes.numpy()
    parts = [other.notes.numpy() for i, other in enumerate(tracks)
             if i != index and not other.is_drum and other.note_num() > 0
             and _track_name(other) == name]
    if not parts:
        return arr
    keys = ("time", "duration", "pitch", "velocity")
    every = {k: np.concatenate([arr[k]] + [part[k] for part in parts]) for k in keys}
    start = every["time"].astype(np.int64)
    if _is_monophonic(start, start + every["duration"]):
        merged = len(parts)
        arr = every
    else:
        merged = 0
        for part in parts[:MAX_MERGED_PARTS]:
            both = {k: np.concatenate([arr[k], part[k]]) for k in keys}
            start = both["time"].astype(np.int64)
            if _is_monophonic(start, start + both["duration"]):
                arr, merged = both, merged + 1
        skipped = len(parts) - MAX_MERGED_PARTS
        report.warn("parts_not_merged", max(skipped, 0),
                    f"{skipped} more tracks named '{name}' were not tried as parts of the melody "
                    f"(tvae tries at most {MAX_MERGED_PARTS} when they overlap)")
    report.warn("merged_parts", merged, f"merged {merged} more parts of track '{name}' that "
                "instrument changes split off")
    return arr


def _meter_and_pickup(score: symusic.Score, tpq: int, report: ReadReport, path: Path):
    sigs = sorted(((int(t.time), int(t.numerator), int(t.denominator))
                   for t in score.time_signatures), key=lambda s: s[0])
    sigs = [s for i, s in enumerate(sigs) if i + 1 == len(sigs) or sigs[i + 1][0] != s[0]]
    if not sigs or sigs[0][0] > 0:
        sigs.insert(0, (0, 4, 4))  # MIDI's default meter
    pickup_ticks = 0
    if len(sigs) >= 2 and sigs[0][2] > 0:
        t1, n0, d0 = sigs[0][0], sigs[0][1], sigs[0][2]
        bar0 = tpq * 4 * n0 // d0
        nxt = sigs[1]
        bar1 = tpq * 4 * nxt[1] // max(nxt[2], 1)
        if t1 == 0 and nxt[0] == bar0 and 0 < bar0 < bar1 and (bar0 * 4) % tpq == 0:
            pickup_ticks = bar0
            sigs = sigs[1:]
    num, den = sigs[0][1], sigs[0][2]
    report.meter = f"{num}/{den}"
    try:
        meter = normalize_meter((num, den))
    except TvaeError as exc:
        raise TvaeError(exc.reason, path) from None
    others = {f"{n}/{d}" for _, n, d in sigs[1:] if (n, d) != (num, den)}
    report.warn("meter_changes", len(others),
                f"meter changes mid-song to {', '.join(sorted(others))}; read as {num}/{den} "
                "throughout")
    pickup = pickup_ticks * 4 // tpq
    if pickup >= meter_steps(meter):
        pickup = 0
    return meter, pickup, pickup_ticks


def _tempo(score: symusic.Score, report: ReadReport) -> float:
    """The dominant tempo: the one in force for the most ticks of the song (a melody has one
    tempo on the grid), ignoring tempi outside 1-1000 qpm; 120 when there is none."""
    tempos = sorted((int(t.time), float(t.qpm)) for t in score.tempos)
    usable = [(t, q) for t, q in tempos if math.isfinite(q) and 1.0 <= q <= 1000.0]
    if len(usable) < len(tempos):
        report.warn("tempo", len(tempos) - len(usable), "tempo out of range ignored")
    if not usable:
        return 120.0
    end = max(int(score.end()), usable[-1][0] + 1)
    span: dict[float, int] = {}
    for (start, qpm), nxt in zip(usable, [t for t, _ in usable[1:]] + [end], strict=True):
        span[round(qpm, 3)] = span.get(round(qpm, 3), 0) + max(nxt - max(start, 0), 0)
    qpm = max(span, key=lambda q: (span[q], -list(span).index(q)))  # ties: the earliest
    if len(span) > 1:
        share = span[qpm] / max(sum(span.values()), 1)
        report.warn("tempo_changes", len(span) - 1,
                    f"tempo changes mid-song ({len(span)} tempi); written with the dominant "
                    f"{qpm:g} qpm, in force for {share:.0%} of the song")
    return qpm


def _check_span(arr: dict, tpq: int, bar: int, path: Path) -> None:
    """Refuse a melody much longer than MAX_BARS before building its notes: millions of notes
    would otherwise take seconds and gigabytes before the exact length check in `read_midi`."""
    start = arr["time"][arr["duration"] > 0].astype(np.int64)
    start = start[start >= 0]
    if len(start):
        bars = int(start.max() - start.min()) * 4 // tpq // bar
        if bars > MAX_BARS:
            raise TvaeError(f"melody is {bars} bars long; tvae reads at most {MAX_BARS}", path)


def _notes_on_grid(arr: dict, tpq: int, shift_ticks: int, report: ReadReport) -> list[Note]:
    """Quantize to sixteenths, keep the top voice, cut overlaps. Counts every change."""
    start = arr["time"].astype(np.int64) + shift_ticks
    dur = arr["duration"].astype(np.int64)
    pitch = arr["pitch"].astype(np.int64) & 0x7F
    keep = (dur > 0) & (start >= 0)
    report.warn("zero_length", int(np.count_nonzero(dur <= 0)),
                f"dropped {np.count_nonzero(dur <= 0)} zero-length notes")
    # symusic holds ticks in 32 bits: a note after tick 2^31 - 1 comes back at a negative time.
    past = int(np.count_nonzero((dur > 0) & (start < 0)))
    report.warn("past_max_tick", past, f"dropped {past} notes after tick 2^31 - 1 (the latest "
                "time tvae's MIDI reader can hold)")
    start, dur, pitch = start[keep], dur[keep], pitch[keep]
    off_grid = int(np.count_nonzero((start * 4) % tpq))
    s = (start * 8 + tpq) // (2 * tpq)  # round to the nearest sixteenth
    e = ((start + dur) * 8 + tpq) // (2 * tpq)
    report.warn("quantized", off_grid, f"moved {off_grid} off-grid onsets to the nearest sixteenth")
    short = int(np.count_nonzero(e <= s))
    e = np.maximum(e, s + 1)
    report.warn("lengthened", short, f"lengthened {short} notes shorter than a sixteenth")
    order = np.lexsort((-pitch, s))  # by onset, highest pitch first
    s, e, pitch = s[order], e[order], pitch[order]
    top = np.ones(len(s), dtype=bool)
    top[1:] = s[1:] != s[:-1]
    report.warn("skyline", int(np.count_nonzero(~top)),
                f"dropped {np.count_nonzero(~top)} lower notes of chords (kept the top voice)")
    s, e, pitch = s[top], e[top], pitch[top]
    cut = np.minimum(e[:-1], s[1:])
    report.warn("overlaps", int(np.count_nonzero(cut < e[:-1])),
                f"shortened {np.count_nonzero(cut < e[:-1])} notes that overlapped the next one")
    e[:-1] = cut
    return [Note(int(a), int(p), int(b - a)) for a, b, p in zip(s, e, pitch, strict=True)]


def read_midi(
    path: str | Path, track: int | None = None, grid: GridConfig = GridConfig()
) -> tuple[Melody, ReadReport]:
    """Read the melody of a MIDI file and report what was found and changed."""
    path = Path(path)
    return read_score(_load_score(path), path, track, grid)


def read_score(score: symusic.Score, path: str | Path = "score", track: int | None = None,
               grid: GridConfig = GridConfig()) -> tuple[Melody, ReadReport]:
    """`read_midi` for a symusic Score already in memory; `path` names it in messages."""
    path = Path(path)
    report = ReadReport(str(path))
    tpq = int(score.ticks_per_quarter)
    report.n_tracks = len(score.tracks)
    index = _choose_track(score, track, path)
    report.track, report.track_name = index, _track_name(score.tracks[index])
    meter, pickup, pickup_ticks = _meter_and_pickup(score, tpq, report, path)
    report.qpm = _tempo(score, report)
    arr = _track_notes(score, index, report)
    _check_span(arr, tpq, meter_steps(meter), path)
    # Without a pickup, tick 0 is a downbeat; with one, tick `pickup_ticks` is.
    notes = _notes_on_grid(arr, tpq, 0, report)
    if not notes:
        raise TvaeError("no notes", path)
    bar = meter_steps(meter)
    offset = (bar - pickup) % bar
    empty_bars = (notes[0].start + offset) // bar
    if empty_bars:  # the first kept bar is a full one: an empty pickup bar goes too
        shift = empty_bars * bar - offset
        notes = [Note(n.start - shift, n.pitch, n.duration) for n in notes]
        pickup = offset = 0
        report.warn("leading_bars", empty_bars, f"dropped {empty_bars} empty bars at the start")
    last = notes[-1].start + notes[-1].duration + offset
    if last > MAX_BARS * bar:
        raise TvaeError(f"melody is {-(-last // bar)} bars long (its last note ends in bar "
                        f"{-(-last // bar)}); tvae reads at most {MAX_BARS}", path)
    title = readable(report.track_name or path.stem)
    melody = Melody(tuple(notes), meter, report.qpm, pickup, title)
    melody, moved = fit_pitch_range(melody, grid)
    report.warn("octave_moved", moved,
                f"moved {moved} notes by octaves into the range {grid.min_pitch}-{grid.max_pitch}")
    report.pickup, report.n_notes = pickup, len(melody.notes)
    return melody, report


def read_melody(
    path: str | Path, track: int | None = None, grid: GridConfig = GridConfig()
) -> Melody:
    """Read a MIDI file's melody; each change made while reading is a `TvaeWarning`."""
    melody, report = read_midi(path, track, grid)
    for message in report.warnings:
        warnings.warn(f"{path}: {message}", TvaeWarning, stacklevel=2)
    return melody


def _melody_score(melody: Melody, program: int) -> symusic.Score:
    step = WRITE_TPQ // 4
    score = symusic.Score(WRITE_TPQ)
    num, den = melody.meter
    if melody.pickup:
        g = gcd(melody.pickup, 16)
        score.time_signatures.append(symusic.TimeSignature(0, melody.pickup // g, 16 // g))
        score.time_signatures.append(symusic.TimeSignature(melody.pickup * step, num, den))
    else:
        score.time_signatures.append(symusic.TimeSignature(0, num, den))
    score.tempos.append(symusic.Tempo(0, float(melody.qpm)))
    track = symusic.Track(name=readable(melody.title or "melody"), program=program, is_drum=False)
    for note in melody.notes:
        track.notes.append(
            symusic.Note(note.start * step, note.duration * step, note.pitch, VELOCITY)
        )
    score.tracks.append(track)
    return score


def melody_to_midi_bytes(melody: Melody, program: int = 0) -> bytes:
    """The bytes of a standard MIDI file holding `melody` (for pages and tests)."""
    return bytes(_melody_score(melody, program).dumps_midi())


def write_melody(melody: Melody, path: str | Path, program: int = 0) -> None:
    """Write `melody` as a one-track MIDI file (tempo, meter and pickup preserved)."""
    write_bytes_atomic(melody_to_midi_bytes(melody, program), path)
