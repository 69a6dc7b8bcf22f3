"""Fitting a trained model's lead-in head on its frozen posterior means (`fit_lead_in`): the head
learns the songs' lead-ins, nothing else moves, and decoding then lays bar 0 out by it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.model.test_model import tiny
from tvae.config import PAD, GridConfig
from tvae.data.arrays import SongArrays
from tvae.melody import METERS
from tvae.training.lead_fit import fit_lead_in, lead_in_counts, lead_rows

pytestmark = pytest.mark.usefixtures("torch_one_thread")
S = GridConfig().steps_per_bar
LEADS = (0, 4, 8, 12)


def songs_with_pickups(n: int = 48, bars: int = 6, seed: int = 0) -> SongArrays:
    """`n` random 4/4 songs of `bars` bars, song i opening with a lead-in of LEADS[i % 4] steps;
    all in the train split but the last 8."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, GridConfig().vocab_size, size=(n * bars, S)).astype(np.uint8)
    for i in range(n):
        tokens[i * bars, : LEADS[i % 4]] = PAD
    return SongArrays(tokens=tokens, offsets=np.arange(n + 1) * bars,
                      meters=np.full(n, METERS.index((4, 4)), dtype=np.int8),
                      pickups=np.array([(S - LEADS[i % 4]) % S for i in range(n)], dtype=np.int8),
                      paths=[f"song{i}.mid" for i in range(n)],
                      splits=np.array(["train"] * (n - 8) + ["test"] * 8))


def test_lead_rows_are_first_bars_and_as_many_inside_bars() -> None:
    songs = songs_with_pickups()
    tokens, meters = lead_rows(songs)
    assert tokens.shape == (80, 1, S) and meters.shape == (80, 1)
    firsts = torch.as_tensor(songs.tokens[songs.starts[:40]].astype(np.int64))
    assert torch.equal(tokens[:40, 0], firsts)
    assert not bool((tokens[40:, 0, 0] == PAD).any())  # inside bars have no lead-in


def test_fit_learns_the_lead_ins_and_moves_nothing_else() -> None:
    model = tiny(seed=4, d_latent=32, d_model=64, bar_hidden=64, lead_in=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    songs = songs_with_pickups()
    fitted, fit = fit_lead_in(model, songs, steps=800, lr=3e-2)
    assert (fit.first_bars, fit.inside_bars) == (40, 40)
    assert fit.accuracy == 1.0 and fit.nll < 0.1
    assert fitted.config.lead_in and fitted.lead is not None
    after = fitted.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    tokens = torch.as_tensor(songs.tokens[:36].astype(np.int64)).view(6, 6, S)  # songs 0..5
    meters = torch.full((6, 6), METERS.index((4, 4)))
    with torch.no_grad():
        decoded = fitted.free_run(fitted.encode(tokens, meters)[0], meters)
    assert torch.equal(decoded[:, 0] == PAD, tokens[:, 0] == PAD)


def test_lead_in_counts_count_first_bars_and_later_ones() -> None:
    songs = songs_with_pickups()  # 48 songs of 6 bars; 3 of every 4 open with a lead-in
    counts = lead_in_counts(songs)
    assert (counts.songs, counts.songs_with_lead_in) == (48, 36)
    assert (counts.later_bars, counts.later_bars_with_lead_in) == (240, 0)
    songs.tokens[7, :2] = PAD  # song 1's bar 2 gets a lead-in too
    assert lead_in_counts(songs).later_bars_with_lead_in == 1
