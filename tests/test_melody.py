"""Melodies on the grid: exact token grids, exact round trips in every meter, pickups, PAD."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tvae.config import HOLD, PAD, REST, GridConfig
from tvae.errors import TvaeError
from tvae.melody import (
    METER_STEPS,
    METERS,
    Bars,
    Melody,
    Note,
    bars_to_melody,
    fit_pitch_range,
    melody_to_bars,
    meter_id,
    meter_steps,
    normalize_meter,
)

GRID = GridConfig()
H = HOLD


def c(pitch: int) -> int:
    """The class of an onset of `pitch`."""
    return GRID.pitch_to_class(pitch)


# A 3/4 fixture with a one-beat pickup: G4 | C5 (half) D5 | E5 (dotted quarter), rest, D5 | C5.
FIXTURE = Melody(
    (Note(0, 67, 4), Note(4, 72, 8), Note(12, 74, 4), Note(16, 76, 6), Note(24, 74, 4),
     Note(28, 72, 4)),
    meter=(3, 4), qpm=96.0, pickup=4, title="fixture",
)
FIXTURE_TOKENS = np.array([
    [PAD] * 8 + [c(67), H, H, H] + [PAD] * 4,
    [c(72), H, H, H, H, H, H, H, c(74), H, H, H] + [PAD] * 4,
    [c(76), H, H, H, H, H, REST, REST, c(74), H, H, H] + [PAD] * 4,
    [c(72), H, H, H] + [REST] * 8 + [PAD] * 4,
])


def test_fixture_token_grid_is_exact() -> None:
    bars = melody_to_bars(FIXTURE)
    assert bars.tokens.dtype == np.int64 and bars.tokens.shape == (4, 16)
    np.testing.assert_array_equal(bars.tokens, FIXTURE_TOKENS)
    assert (bars.meter, bars.qpm, bars.pickup, bars.title) == ((3, 4), 96.0, 4, "fixture")
    assert FIXTURE.n_bars == bars.n_bars == 4 and FIXTURE.n_steps == 32
    assert bars_to_melody(bars) == FIXTURE
    assert (c(48), c(96)) == (3, GRID.vocab_size - 1)


def scale(meter: tuple[int, int], pickup: int, bars: int) -> Melody:
    """Quarter notes with a rest and a held note in each bar, starting with the pickup."""
    bar = meter_steps(meter)
    notes, start, pitch = [], 0, 60
    end = pickup + bars * bar
    while start < end - 2:
        duration = 2 if pitch % 3 == 0 else 3
        notes.append(Note(start, pitch, duration))
        start += duration + (pitch % 2)  # some rests
        pitch = 60 + (pitch - 59) % 12
    return Melody(tuple(notes), meter, 120.0, pickup, "scale")


@pytest.mark.parametrize("meter", [(4, 4), (2, 4), (3, 4), (6, 8), (2, 2)])
@pytest.mark.parametrize("with_pickup", [False, True])
def test_round_trip_in_every_meter(meter: tuple[int, int], with_pickup: bool) -> None:
    bar = METER_STEPS[normalize_meter(meter)]
    pickup = bar // 4 + 1 if with_pickup else 0
    melody = scale(meter, pickup, 3)
    bars = melody_to_bars(melody)
    assert bars.tokens.shape == (4 if with_pickup else 3, 16)
    assert bool((bars.tokens[:, bar:] == PAD).all())  # short meters are PAD-padded
    assert not bool((bars.tokens[:, :bar] == PAD).any(axis=1)[1:].any())  # ... and only there
    assert bool((bars.tokens[0, : (bar - pickup) % bar] == PAD).all())  # the pickup's lead-in
    assert bars.tokens[0, (bar - pickup) % bar] == c(60)  # the first note
    back = bars_to_melody(bars)
    assert back == melody and back.meter == normalize_meter(meter)


def test_two_two_is_read_as_four_four() -> None:
    assert normalize_meter((2, 2)) == (4, 4) and meter_id((2, 2)) == meter_id((4, 4)) == 0
    assert Melody((), (2, 2)).meter == (4, 4)
    assert [meter_id(m) for m in METERS] == [0, 1, 2, 3]
    with pytest.raises(TvaeError, match="unsupported meter 5/4"):
        normalize_meter((5, 4))
    with pytest.raises(TvaeError, match="unsupported meter 7/8"):
        Melody((), (7, 8))


def test_melody_validation() -> None:
    with pytest.raises(TvaeError, match="overlap"):
        Melody((Note(0, 60, 4), Note(2, 62, 4)))
    with pytest.raises(TvaeError, match="duration 0"):
        Melody((Note(0, 60, 0),))
    with pytest.raises(TvaeError, match="pickup"):
        Melody((), (3, 4), pickup=12)
    assert Melody((Note(4, 62, 2), Note(0, 60, 4))).notes == (Note(0, 60, 4), Note(4, 62, 2))


def test_empty_and_edge_melodies() -> None:
    empty = melody_to_bars(Melody((), (2, 4)))
    np.testing.assert_array_equal(empty.tokens, [[REST] * 8 + [PAD] * 8])
    assert bars_to_melody(empty) == Melody((), (2, 4))
    repeated = Melody((Note(0, 60, 1), Note(1, 60, 1), Note(2, 60, 14)))  # same pitch, re-struck
    np.testing.assert_array_equal(melody_to_bars(repeated).tokens[0, :4], [c(60)] * 3 + [H])
    assert bars_to_melody(melody_to_bars(repeated)) == repeated
    across = Melody((Note(12, 72, 8),), (4, 4))  # a note held across the bar line
    np.testing.assert_array_equal(melody_to_bars(across).tokens[:, :4],
                                  [[REST] * 4, [H] * 4])
    assert bars_to_melody(melody_to_bars(across)) == across


def test_out_of_range_pitch_and_bad_bars() -> None:
    with pytest.raises(TvaeError, match="pitch 100 is outside the range 48-96"):
        melody_to_bars(Melody((Note(0, 100, 4),)))
    moved, count = fit_pitch_range(Melody((Note(0, 100, 4), Note(4, 30, 4), Note(8, 60, 4))))
    assert count == 2 and [n.pitch for n in moved.notes] == [88, 54, 60]
    with pytest.raises(TvaeError, match="shape"):
        bars_to_melody(Bars(np.zeros((2, 12), dtype=np.int64)))
    with pytest.raises(TvaeError, match="outside a vocabulary"):
        bars_to_melody(Bars(np.full((1, 16), GRID.vocab_size, dtype=np.int64)))
    with pytest.raises(TvaeError, match="needs 16 steps"):
        melody_to_bars(Melody((Note(0, 60, 4),)), GridConfig(steps_per_bar=12))


def test_model_output_with_stray_classes_reads_as_rests() -> None:
    tokens = np.array([[H, H, c(60), H, PAD, REST, c(62), H] + [PAD] * 8])
    melody = bars_to_melody(Bars(tokens, (2, 4)))
    assert melody.notes == (Note(2, 60, 2), Note(6, 62, 2))


def test_other_grids() -> None:
    grid = GridConfig(min_pitch=60, max_pitch=71, steps_per_bar=12)
    melody = Melody((Note(0, 60, 6), Note(6, 71, 6)), (6, 8))
    bars = melody_to_bars(melody, grid)
    np.testing.assert_array_equal(bars.tokens, [[3, H, H, H, H, H, 14, H, H, H, H, H]])
    assert bars_to_melody(bars, grid) == melody


@st.composite
def melodies(draw: st.DrawFn, grid: GridConfig = GRID) -> Melody:
    """Random valid melodies: monophonic, pitches in range, any meter and pickup; the first note
    lies in the first bar (so a MIDI reader has no empty bars to drop)."""
    meter = draw(st.sampled_from([*METERS, (2, 2)]))
    bar = METER_STEPS[normalize_meter(meter)]
    pickup = draw(st.integers(0, bar - 1))
    first_bar = pickup or bar
    start = draw(st.integers(0, first_bar - 1))
    notes = []
    for _ in range(draw(st.integers(1, 24))):
        duration = draw(st.integers(1, 20))
        notes.append(Note(start, draw(st.integers(grid.min_pitch, grid.max_pitch)), duration))
        start += duration + draw(st.sampled_from([0, 0, 0, 1, 2, 5, 17]))
    qpm = float(draw(st.integers(30, 240)))
    return Melody(tuple(notes), meter, qpm, pickup, draw(st.sampled_from(["tune", "A b"])))


@settings(max_examples=150, deadline=None)
@given(melodies())
def test_random_melodies_round_trip_through_bars(melody: Melody) -> None:
    bars = melody_to_bars(melody)
    bar = meter_steps(melody.meter)
    assert bars.tokens.shape == (melody.n_bars, 16)
    assert int((bars.tokens >= 3).sum()) == len(melody.notes)  # one onset per note
    assert bool((bars.tokens[:, bar:] == PAD).all())
    assert int((bars.tokens == PAD).sum()) == bars.n_bars * (16 - bar) + (bar - melody.pickup) % bar
    assert bars_to_melody(bars) == melody
