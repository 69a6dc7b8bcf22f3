"""Conversions to and from symusic.Score and muspy.Music: exact round trips in every meter,
with and without a pickup, and on the example melodies."""

from __future__ import annotations

import pytest

from tests.paths import DATA
from tvae.convert import melody_to_muspy, melody_to_score, muspy_to_melody, score_to_melody
from tvae.melody import Melody, Note
from tvae.midi import read_melody

BAR = {(4, 4): 16, (2, 4): 8, (3, 4): 12, (6, 8): 12}


def _melody(meter: tuple[int, int], pickup: int) -> Melody:
    notes, t = [], 0
    total = pickup + 3 * BAR[meter]
    pitches = [60, 62, 64, 65, 67, 69, 71, 72]
    while t < total:
        d = min(2 if t % 4 else 4, total - t)
        notes.append(Note(t, pitches[(t // 2) % len(pitches)], d))
        t += d
    return Melody(tuple(notes), meter, 96.0, pickup, "m")


@pytest.mark.parametrize("meter", list(BAR))
@pytest.mark.parametrize("pickup", [0, 4])
def test_round_trips_through_symusic_and_muspy(meter: tuple[int, int], pickup: int) -> None:
    melody = _melody(meter, pickup)
    assert score_to_melody(melody_to_score(melody), name="m") == melody
    music = melody_to_muspy(melody)
    assert music.resolution == 4 and music.tempos[0].qpm == 96.0
    last = music.time_signatures[-1]
    assert (last.numerator, last.denominator) == meter and last.time == pickup
    assert muspy_to_melody(music, name="m") == melody
    aligned = melody_to_muspy(melody, align_downbeats=True)  # downbeats on multiples of a bar
    shift = (BAR[meter] - pickup) % BAR[meter]
    assert [n.time for n in aligned.tracks[0].notes] == [n.start + shift for n in melody.notes]


@pytest.mark.parametrize("name", ["mary", "jingle", "twinkle", "ode"])
def test_example_melodies_round_trip(name: str) -> None:
    melody = read_melody(DATA / f"{name}.mid")
    assert score_to_melody(melody_to_score(melody), name=melody.title) == melody
    assert muspy_to_melody(melody_to_muspy(melody), name=melody.title).notes == melody.notes


def test_a_quarter_based_score_is_read_too() -> None:
    melody = read_melody(DATA / "mary.mid")
    quarter = melody_to_score(melody).to("quarter")
    assert score_to_melody(quarter, name=melody.title).notes == melody.notes
