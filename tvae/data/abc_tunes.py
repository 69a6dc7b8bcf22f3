"""music21's ABC folk tunes -> `Melody`: the written notes of one tune on the sixteenth grid.

`tune_to_melody` parses one tune with music21 and lays its written bars (repeats not expanded)
on the downbeat grid: a short first bar is the pickup, ties join notes, grace notes are dropped,
and a tune that does not fit the grid (chords, tuplets, other meters...) raises
`UnusableTuneError` with a short reason that the corpus export counts.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from tvae.errors import TvaeError
from tvae.melody import Melody, Note, meter_steps

MIN_BARS = 4  # shorter tunes are skipped as "too short"
DEFAULT_QPM = 120.0


class UnusableTuneError(TvaeError):
    """A tune that cannot become a `Melody`; `reason` is a short countable key."""


@dataclass(frozen=True)
class TuneSource:
    """One tune's ABC text, with the header lines of the file it comes from."""

    collection: str
    file: str  # file name inside the collection folder
    ordinal: int  # 1-based position of the tune in its file
    text: str  # file header + the tune, ready for music21

    @property
    def id(self) -> str:
        return f"{Path(self.file).stem}-{self.ordinal:04d}"



def split_abc(text: str) -> tuple[str, list[str]]:
    """(file header, tunes): the text before the first `X:` line and each `X:` block."""
    starts = [m.start() for m in re.finditer(r"^X:", text, flags=re.MULTILINE)]
    if not starts:
        return text, []
    bounds = [*starts, len(text)]
    return text[: starts[0]], [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def header_field(text: str, letter: str) -> str:
    """The first value of header field `letter` (e.g. 'T') in an ABC tune; '' if none."""
    match = re.search(rf"^{letter}:[ \t]*(.*?)[ \t]*$", text, flags=re.MULTILINE)
    return match.group(1).split("%")[0].strip() if match else ""


def _tune_meter_field(text: str) -> str:
    """The M: field that applies to the tune body (the last one before `K:`)."""
    head = text.split("\nK:", 1)[0]
    fields = re.findall(r"^M:[ \t]*(.*?)[ \t]*$", head, flags=re.MULTILINE)
    return fields[-1].split("%")[0].strip() if fields else ""


def clean_abc(text: str) -> str:
    """The tune without what music21 misreads: in body lines (after `K:`), quoted annotations
    and chord names, `!...!` decorations and the `H` fermata shorthand (music21 drops the
    note after `H`, and half a note after an annotation such as `">"`)."""
    head, sep, body = text.partition("\nK:")
    if not sep:
        return text
    key_line, _, rest = body.partition("\n")
    lines = []
    for line in rest.splitlines():
        if not re.match(r"^[A-Za-z]:", line) and not line.startswith("%"):
            line = re.sub(r'"[^"]*"', "", line)
            line = re.sub(r"![^!]*!", "", line).replace("H", "")
        lines.append(line)
    return f"{head}{sep}{key_line}\n" + "\n".join(lines)


def parse_tune(source: TuneSource) -> Any:
    """music21's Score of the tune, or UnusableTuneError('parse error')."""
    import warnings

    from music21 import converter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            parsed = converter.parse(clean_abc(source.text), format="abc")
        except Exception:  # music21 raises many types on bad ABC
            raise UnusableTuneError("parse error") from None
    scores = list(getattr(parsed, "scores", []))
    return scores[0] if scores else parsed


# --- ABC tune -> Melody ------------------------------------------------------------------------

Event = tuple[int, int, int, str | None]  # (onset step, duration steps, pitch or -1 rest, tie)


@dataclass
class _Measure:
    length: int  # written length in steps
    events: list[Event]
    left: bool  # has a written left barline (repeat start, double bar...)
    right: bool  # has a written right barline (repeat end, double bar, final bar...)


def _steps(quarter_length: Any, has_tuplet: bool = False) -> int:
    value = Fraction(quarter_length).limit_denominator(10_000) * 4
    if value.denominator != 1:
        raise UnusableTuneError("tuplets" if has_tuplet else "off the sixteenth grid")
    return int(value)


def _measure(measure: Any, repairs: Counter) -> _Measure:
    """The notes of one music21 Measure, in steps from its start."""
    from music21 import harmony

    if measure.voices:
        raise UnusableTuneError("multiple voices")
    events: list[Event] = []
    for el in measure.notesAndRests:
        if isinstance(el, harmony.ChordSymbol):
            continue
        if el.duration.isGrace:
            repairs["grace notes dropped"] += 1
            continue
        if el.isChord:
            raise UnusableTuneError("chords")
        tuplet = bool(el.duration.tuplets)
        onset, dur = _steps(el.offset, tuplet), _steps(el.quarterLength, tuplet)
        if dur == 0:
            continue
        pitch = -1 if el.isRest else int(el.pitch.midi)
        events.append((onset, dur, pitch, el.tie.type if el.tie is not None else None))
    return _Measure(_steps(measure.highestTime), events,
                    measure.leftBarline is not None, measure.rightBarline is not None)


def _is_pickup(i: int, measures: list[_Measure], bar: int) -> bool:
    """Whether a short measure that starts on a downbeat mid-tune leads into the next bar."""
    m = measures[i]
    if i + 1 == len(measures) or m.right or m.length + measures[i + 1].length <= bar:
        return False  # a section's last bar, or one split in two pieces
    return m.left or measures[i - 1].right


def _layout(measures: list[_Measure], bar: int, repairs: Counter) -> tuple[int, list[Event]]:
    """(pickup, events on the melody's time line): written bars laid on the downbeat grid.

    A short first measure is the pickup. Mid-tune, a short measure and the one completing it
    share a bar; a short measure left without its complement is padded with a rest, and one
    that leads into the next section is placed at the end of its bar.
    """
    pickup = measures[0].length if measures[0].length < bar else 0
    pos, out = 0, []
    for i, m in enumerate(measures):
        phase = (pos - pickup) % bar  # 0 on a downbeat
        if m.length > bar and m.length % bar:
            repairs["irregular bars"] += 1
        if phase and phase + m.length > bar:
            pos += bar - phase
            repairs["bars padded"] += 1
        elif i > 0 and phase == 0 and m.length < bar and _is_pickup(i, measures, bar):
            pos += bar - m.length
            repairs["pickups aligned"] += 1
        out.extend((pos + onset, dur, pitch, tie) for onset, dur, pitch, tie in m.events)
        pos += m.length
    return pickup, out


def _notes(events: list[Event]) -> list[Note]:
    """Notes from timed events; a tie joins two adjacent notes of the same pitch."""
    notes: list[Note] = []
    tie_open = False
    for onset, dur, pitch, tie in events:
        if pitch < 0:
            tie_open = False
            continue
        prev = notes[-1] if notes else None
        joined = (tie_open or tie in ("stop", "continue")) and prev is not None
        if joined and prev.pitch == pitch and prev.start + prev.duration == onset:
            notes[-1] = Note(prev.start, pitch, prev.duration + dur)
        else:
            notes.append(Note(onset, pitch, dur))
        tie_open = tie in ("start", "continue")
    return notes


def _meter(score: Any, text: str) -> tuple[int, int]:
    from tvae.melody import normalize_meter

    written = _tune_meter_field(text).lower()
    if not written or written == "none" or "frei" in written:
        raise UnusableTuneError("no meter")
    sigs = set()
    for ts in score.recurse().getElementsByClass("TimeSignature"):
        try:
            sigs.add(normalize_meter((ts.numerator, ts.denominator)))
        except TvaeError:
            raise UnusableTuneError("unsupported meter") from None
    if len(sigs) != 1:
        raise UnusableTuneError("meter changes" if sigs else "no meter")
    return sigs.pop()


def _qpm(score: Any) -> float:
    marks = list(score.recurse().getElementsByClass("MetronomeMark"))
    qpm = marks[0].getQuarterBPM() if marks else None
    if qpm is None or not 20 <= qpm <= 400:
        return DEFAULT_QPM
    micros = round(60_000_000 / round(qpm))  # MIDI stores microseconds per quarter note
    return round(60_000_000 / micros, 3)  # the tempo a MIDI reader gets back


def _fit_octaves(notes: list[Note], repairs: Counter) -> list[Note]:
    from tvae.config import GridConfig

    grid = GridConfig()
    lo, hi = min(n.pitch for n in notes), max(n.pitch for n in notes)
    shift = 0
    while lo + shift < grid.min_pitch:
        shift += 12
    while hi + shift > grid.max_pitch:
        shift -= 12
    if lo + shift < grid.min_pitch:
        raise UnusableTuneError("pitch range wider than the grid")
    if shift:
        repairs["octave shifted"] += 1
    return [Note(n.start, n.pitch + shift, n.duration) for n in notes]


def tune_to_melody(source: TuneSource, score: Any = None) -> tuple[Melody, dict[str, int]]:
    """The tune's written notes as a Melody, and the repairs made; or UnusableTuneError(reason)."""
    score = parse_tune(source) if score is None else score
    repairs: Counter = Counter()
    meter = _meter(score, source.text)
    bar = meter_steps(meter)
    parts = list(score.parts)
    if len(parts) > 1:
        raise UnusableTuneError("multiple voices")
    part = parts[0] if parts else score
    measures = [_measure(m, repairs) for m in part.getElementsByClass("Measure")]
    measures = [m for m in measures if m.length > 0]
    if not measures:
        raise UnusableTuneError("no bar lines" if part.flatten().notes else "empty")
    pickup, events = _layout(measures, bar, repairs)
    notes = _notes(events)
    if not notes:
        raise UnusableTuneError("empty")
    offset = (bar - pickup) % bar
    shift = (notes[0].start + offset) // bar * bar  # drop empty leading bars, as the reader does
    notes = _fit_octaves([Note(n.start - shift, n.pitch, n.duration) for n in notes], repairs)
    title = "".join(ch for ch in header_field(source.text, "T") if ch.isprintable())[:200]
    try:
        melody = Melody(tuple(notes), meter, _qpm(score), pickup, title.strip() or source.id)
    except TvaeError:
        raise UnusableTuneError("overlapping notes") from None
    if melody.n_bars < MIN_BARS:
        raise UnusableTuneError("too short")
    return melody, dict(repairs)
