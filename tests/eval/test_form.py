"""tvae.eval.form on hand-built melodies whose answers are known."""

from __future__ import annotations

import math

import numpy as np

from tvae.config import GridConfig
from tvae.eval.form import form_metrics, form_table, mean_metrics, phrase_repeat, repeat_share
from tvae.melody import Bars, bars_to_melody


def _bar(pitch: int) -> np.ndarray:
    """One 4/4 bar: a whole note of class `pitch` (onset, then holds)."""
    bar = np.full(16, 2)
    bar[0] = pitch
    return bar


def test_repeat_share_counts_bars_identical_to_an_earlier_one() -> None:
    tokens = np.stack([_bar(p) for p in (10, 11, 10, 12, 11, 10)])
    assert repeat_share(tokens) == 3 / 5
    assert math.isnan(repeat_share(tokens[:1]))
    assert repeat_share(np.stack([_bar(p) for p in (10, 11, 12)])) == 0.0


def test_phrase_repeat_needs_two_bars_of_5_to_8_in_place() -> None:
    a = [10, 11, 12, 13]
    assert phrase_repeat(np.stack([_bar(p) for p in a + [10, 11, 20, 21]])) == 1.0
    assert phrase_repeat(np.stack([_bar(p) for p in a + [10, 20, 21, 22]])) == 0.0
    # bars 5-8 that repeat bars of 1-4 but not in place are not a phrase repeat
    assert phrase_repeat(np.stack([_bar(p) for p in a + [11, 10, 13, 12]])) == 0.0
    assert math.isnan(phrase_repeat(np.stack([_bar(p) for p in a])))


def test_form_metrics_of_a_melody_and_its_cut() -> None:
    grid = GridConfig()
    pitches = [15, 17, 19, 15, 15, 17, 19, 15, 27]  # classes: MIDI 60, 62, 64, 60, ..., 72
    melody = bars_to_melody(Bars(np.stack([_bar(p) for p in pitches])), grid)
    full = form_metrics(melody, grid)
    assert full["pitch_range"] == 12 and full["distinct_pitches"] == 4
    assert full["repeat_share"] == 5 / 8 and full["phrase_repeat"] == 1.0
    cut = form_metrics(melody, grid, bars=8)
    assert cut["pitch_range"] == 4 and cut["distinct_pitches"] == 3
    assert cut["repeat_share"] == 5 / 7 and cut["scale_consistency"] == 1.0
    mean = mean_metrics([full, cut])
    assert mean["songs"] == 2 and mean["pitch_range"] == 8.0
    table = form_table(mean, mean_metrics([cut]), "data").splitlines()
    row = next(line for line in table if line.startswith("pitch_range"))
    assert row.split() == ["pitch_range", "8.000", "4.000", "2.00"]  # samples, data, ratio
