"""Melodies on the sixteenth-note grid, and their bar tensors.

A `Melody` is a monophonic list of notes in sixteenth-note steps, with its meter, tempo and
pickup. `Bars` is the same melody as a (N, S) array of step classes (PAD, REST, HOLD or a pitch
onset), one row per bar, aligned to downbeats. `melody_to_bars` and `bars_to_melody` are exact
inverses for every melody whose pitches lie in the grid's range.

Shape legend: N bars, S steps per bar (the model's bar size, 16).

"Bars" names five things in tvae; each is meant where the context says:
- `Bars` (this module): a whole melody as its (N, S) grid of step classes; the grid itself.
- N, `Bars.n_bars`, `Melody.n_bars`: how many bars a melody (or a tensor) spans.
- `DataConfig.bars` (`--bars` of `tvae train`/`evaluate`): the length in bars of the training
  and evaluation windows cut from songs (`tvae.data.windows`), not a song's length.
- `tvae sample --bars N`: how many bars to sample; `tvae transfer --bars 1,2`: which bars.
- `bar` in a function body: the steps of one bar of the meter (`meter_steps`), at most S.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from tvae.config import HOLD, N_SPECIAL, PAD, REST, GridConfig
from tvae.errors import TvaeError

Meter = tuple[int, int]

# Supported meters, in the order of their ids, and their bar length in sixteenths.
METERS: tuple[Meter, ...] = ((4, 4), (2, 4), (3, 4), (6, 8))
METER_STEPS: dict[Meter, int] = {(4, 4): 16, (2, 4): 8, (3, 4): 12, (6, 8): 12}
# Steps between beats: quarter notes, or dotted quarters in compound 6/8.
BEAT_STEPS: dict[Meter, int] = {(4, 4): 4, (2, 4): 4, (3, 4): 4, (6, 8): 6}
METER_ALIASES: dict[Meter, Meter] = {(2, 2): (4, 4)}


def normalize_meter(meter: tuple[int, int]) -> Meter:
    """The supported meter that `meter` is read as (2/2 is read as 4/4), or a TvaeError."""
    meter = (int(meter[0]), int(meter[1]))
    meter = METER_ALIASES.get(meter, meter)
    if meter not in METER_STEPS:
        supported = ", ".join(f"{a}/{b}" for a, b in METERS)
        raise TvaeError(f"unsupported meter {meter[0]}/{meter[1]} (supported: {supported}, 2/2)")
    return meter


def meter_id(meter: Meter) -> int:
    """The id of `meter` (its index in METERS; any spelling `normalize_meter` reads)."""
    return METERS.index(normalize_meter(meter))


def meter_steps(meter: Meter) -> int:
    """Steps of one bar of `meter` (16 for 4/4, 12 for 3/4 and 6/8, 8 for 2/4)."""
    return METER_STEPS[normalize_meter(meter)]


@dataclass(frozen=True, order=True)
class Note:
    """One note on the grid."""

    start: int  # onset, in sixteenth steps from the start of the melody (the pickup's start)
    pitch: int  # MIDI pitch number
    duration: int  # length in sixteenth steps, at least 1


@dataclass(frozen=True)
class Melody:
    """A monophonic melody on the sixteenth grid.

    Step 0 is the first step of the melody. With a pickup of `pickup` steps, the first downbeat
    falls on step `pickup`; without one (pickup 0), step 0 is a downbeat.
    """

    notes: tuple[Note, ...]
    meter: Meter = (4, 4)
    qpm: float = 120.0  # tempo in quarter notes per minute
    pickup: int = 0  # steps of the partial first bar; 0 if the melody starts on a downbeat
    title: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "notes", tuple(sorted(self.notes)))
        object.__setattr__(self, "meter", normalize_meter(self.meter))
        if not 0 <= self.pickup < meter_steps(self.meter):
            raise TvaeError(f"pickup of {self.pickup} steps does not fit a {self.meter} bar")
        end = 0
        for note in self.notes:
            if note.duration < 1:
                raise TvaeError(f"note at step {note.start} has duration {note.duration}")
            if note.start < end:
                raise TvaeError(f"notes overlap at step {note.start}: a melody is monophonic")
            end = note.start + note.duration

    @property
    def n_steps(self) -> int:
        """Steps from the start of the melody to the end of its last note."""
        return max((n.start + n.duration for n in self.notes), default=0)

    @property
    def n_bars(self) -> int:
        """Bars the melody spans, a partial pickup bar counted as one."""
        bar = meter_steps(self.meter)
        offset = (bar - self.pickup) % bar
        return -(-(offset + self.n_steps) // bar)

    def transpose(self, semitones: int) -> Melody:
        """The melody shifted by `semitones` (no range check: see `fit_pitch_range`)."""
        notes = tuple(replace(n, pitch=n.pitch + semitones) for n in self.notes)
        return replace(self, notes=notes)


@dataclass(eq=False)
class Bars:
    """A melody as bar tensors: `tokens` (N, S) of step classes, plus what decoding needs."""

    tokens: np.ndarray  # (N, S) int64 step classes; PAD after the meter's bar length
    meter: Meter = (4, 4)
    qpm: float = 120.0
    pickup: int = 0  # steps of the partial first bar (its leading steps are PAD)
    title: str = ""

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Bars):
            return NotImplemented
        return (
            np.array_equal(self.tokens, other.tokens)
            and self.meter == other.meter
            and self.qpm == other.qpm
            and self.pickup == other.pickup
            and self.title == other.title
        )

    @property
    def n_bars(self) -> int:
        """N, the rows of `tokens`."""
        return int(self.tokens.shape[0])


def fit_pitch_range(melody: Melody, grid: GridConfig = GridConfig()) -> tuple[Melody, int]:
    """Move notes outside the grid's pitch range by octaves into it; returns (melody, moved)."""
    notes, moved = [], 0
    for note in melody.notes:
        pitch = note.pitch
        while pitch < grid.min_pitch:
            pitch += 12
        while pitch > grid.max_pitch:
            pitch -= 12
        if pitch < grid.min_pitch:  # range narrower than an octave
            pitch = grid.min_pitch
        moved += pitch != note.pitch
        notes.append(replace(note, pitch=pitch))
    return replace(melody, notes=tuple(notes)), moved


def melody_to_bars(melody: Melody, grid: GridConfig = GridConfig()) -> Bars:
    """Lay `melody` on the grid: a (N, S) array of classes aligned to downbeats.

    Raises TvaeError if a pitch is outside the grid's range (see `fit_pitch_range`).
    """
    bar = meter_steps(melody.meter)
    if bar > grid.steps_per_bar:
        raise TvaeError(f"a {melody.meter} bar needs {bar} steps; the grid has "
                        f"{grid.steps_per_bar}")
    offset = (bar - melody.pickup) % bar  # leading PAD steps of the partial first bar
    n_bars = max(melody.n_bars, 1)
    flat = np.full(n_bars * bar, REST, dtype=np.int64)  # (N * bar,)
    flat[:offset] = PAD
    for note in melody.notes:
        if not grid.min_pitch <= note.pitch <= grid.max_pitch:
            raise TvaeError(
                f"pitch {note.pitch} is outside the range {grid.min_pitch}-{grid.max_pitch}"
            )
        start = offset + note.start
        flat[start] = grid.pitch_to_class(note.pitch)
        flat[start + 1 : start + note.duration] = HOLD
    tokens = np.full((n_bars, grid.steps_per_bar), PAD, dtype=np.int64)  # (N, S)
    tokens[:, :bar] = flat.reshape(n_bars, bar)
    return Bars(tokens, melody.meter, melody.qpm, melody.pickup, melody.title)


def tokens_to_notes(flat: np.ndarray, grid: GridConfig = GridConfig()) -> list[Note]:
    """Read notes off a flat step sequence. HOLD without a sounding note and PAD read as rests."""
    notes: list[Note] = []
    start = pitch = -1
    for step, cls in enumerate([int(c) for c in flat]):
        if cls == HOLD and pitch >= 0:
            continue
        if pitch >= 0:
            notes.append(Note(start, pitch, step - start))
            pitch = -1
        if cls >= N_SPECIAL:
            start, pitch = step, grid.class_to_pitch(cls)
    if pitch >= 0:
        notes.append(Note(start, pitch, len(flat) - start))
    return notes


def bars_to_melody(bars: Bars, grid: GridConfig = GridConfig()) -> Melody:
    """Inverse of `melody_to_bars`; also reads any model output (stray PAD/HOLD are rests)."""
    tokens = np.asarray(bars.tokens)
    if tokens.ndim != 2 or tokens.shape[1] != grid.steps_per_bar:
        raise TvaeError(f"bars must have shape (N, {grid.steps_per_bar}), got {tokens.shape}")
    bar = meter_steps(bars.meter)
    offset = (bar - bars.pickup) % bar
    flat = tokens[:, :bar].reshape(-1)[offset:]  # (N * bar - offset,)
    if len(flat) and flat.max() >= grid.vocab_size:
        raise TvaeError(f"class {int(flat.max())} is outside a vocabulary of {grid.vocab_size}")
    notes = tokens_to_notes(flat, grid)
    return Melody(tuple(notes), bars.meter, bars.qpm, bars.pickup, bars.title)
