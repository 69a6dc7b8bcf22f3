"""Conversions between tvae's `Melody` and the score types of symusic and muspy.

    score = melody_to_score(melody)        # symusic.Score, 480 ticks per quarter
    melody = score_to_melody(score)        # the melody track, read as a MIDI file would be
    music = melody_to_muspy(melody)        # muspy.Music, 4 time steps per quarter (sixteenths)
    melody = muspy_to_melody(music)

Reading a score applies the same track choice, quantization and range folding as `read_midi`,
and reports its changes as warnings; a melody converted and read back is the same melody.
"""

from __future__ import annotations

import io
import warnings
from math import gcd
from pathlib import Path
from typing import Any

from tvae.config import GridConfig
from tvae.errors import TvaeWarning
from tvae.melody import Melody, meter_steps
from tvae.midi import _melody_score, read_score

VELOCITY = 80


def melody_to_score(melody: Melody, program: int = 0) -> Any:
    """A one-track `symusic.Score` of the melody (tempo, meter and pickup kept)."""
    return _melody_score(melody, program)


def score_to_melody(score: Any, track: int | None = None, grid: GridConfig = GridConfig(),
                    name: str = "score") -> Melody:
    """The melody of a `symusic.Score` (any time unit is converted to ticks first)."""
    if type(score).__name__ != "ScoreTick":  # quarter- or second-based scores
        score = score.to("tick")
    melody, report = read_score(score, Path(name), track, grid)
    for message in report.warnings:
        warnings.warn(f"{name}: {message}", TvaeWarning, stacklevel=2)
    return melody


def melody_to_muspy(melody: Melody, align_downbeats: bool = False) -> Any:
    """A `muspy.Music` at 4 time steps per quarter. A pickup gets a short first measure (a time
    signature of its own, as in tvae's MIDI files), so the melody converts back exactly; with
    `align_downbeats`, the notes are shifted instead so that every downbeat falls on a multiple
    of the bar length (what measure-based metrics such as groove consistency expect)."""
    import muspy

    bar = meter_steps(melody.meter)
    num, den = melody.meter
    shift = (bar - melody.pickup) % bar if align_downbeats and melody.pickup else 0
    signatures = [muspy.TimeSignature(time=0, numerator=num, denominator=den)]
    if melody.pickup and not align_downbeats:
        g = gcd(melody.pickup, 16)
        signatures = [muspy.TimeSignature(time=0, numerator=melody.pickup // g,
                                          denominator=16 // g),
                      muspy.TimeSignature(time=melody.pickup, numerator=num, denominator=den)]
    notes = [muspy.Note(time=n.start + shift, pitch=n.pitch, duration=n.duration,
                        velocity=VELOCITY) for n in melody.notes]
    return muspy.Music(resolution=4, tempos=[muspy.Tempo(time=0, qpm=float(melody.qpm))],
                       time_signatures=signatures,
                       tracks=[muspy.Track(name=melody.title, notes=notes)],
                       metadata=muspy.Metadata(title=melody.title or None))


def muspy_to_melody(music: Any, track: int | None = None, grid: GridConfig = GridConfig(),
                    name: str = "muspy") -> Melody:
    """The melody of a `muspy.Music` (through MIDI, as `read_midi` reads it)."""
    import muspy
    import symusic

    buffer = io.BytesIO()
    muspy.to_mido(music).save(file=buffer)
    return score_to_melody(symusic.Score.from_midi(buffer.getvalue()), track, grid, name)
