"""The bundled model through the inference API: a song longer than its training window, and
the README's headline transfer (Mary's opening developed in Jingle Bells)."""

from __future__ import annotations

import numpy as np

from tests.paths import DATA
from tvae.inference import load_model
from tvae.melody import Bars, bars_to_melody
from tvae.midi import read_melody


def test_bundled_model_reconstructs_a_song_longer_than_its_training_window() -> None:
    """The bundled model was trained on 33-bar windows; a 36-bar song (Twinkle played three
    times) is read and decoded window by window, so its last bars still come back (they used
    to collapse). Bar 33 and every bar after it sit at the last position of their window,
    which training shows rarely (most songs are shorter than 33 bars): the bundled model before
    stage 4 brought them back at about 0.8 of their steps, today's at 1.0 like bars 1-32. The
    bound for them stays looser, as a known weak spot of the windowed reading."""
    model = load_model()
    assert model.window == 33
    once = model.bars(read_melody(DATA / "twinkle.mid"))
    assert len(once.tokens) == 12
    three = Bars(np.concatenate([once.tokens] * 3), once.meter, once.qpm, 0, "twinkle x3")
    twinkle = bars_to_melody(three, model.grid)
    truth = model.bars(twinkle).tokens
    again = model.bars(model.reconstruct(twinkle)).tokens
    assert again.shape == truth.shape
    per_bar = (again == truth).mean(-1)  # (12,) share of each bar's steps
    assert per_bar[:32].min() >= 0.9 and per_bar[:32].mean() >= 0.98
    assert per_bar[32:].min() >= 0.7 and per_bar.mean() >= 0.95


def test_bundled_model_transfer_develops_marys_opening_in_jingle_bells() -> None:
    """Jingle Bells repeats its first bar in bar 2: after the transfer, bar 2 repeats the new
    bar 1 (Mary's), and the model encodes Jingle's bar 2 as a copy of its bar 1."""
    model = load_model()
    mary, jingle = read_melody(DATA / "mary.mid"), read_melody(DATA / "jingle.mid")
    assert model.copy_sources(jingle)[1] == 0
    out = model.bars(model.transfer(mary, jingle)).tokens
    assert np.array_equal(out[1], out[0]) and np.array_equal(out[0], model.bars(mary).tokens[0])
