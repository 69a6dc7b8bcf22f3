"""Free-running accuracy in `tvae evaluate` with and without the steps outside the melody
(before a pickup) known to the decoder."""

from __future__ import annotations

import pytest
import torch

from tests.model.test_model import random_bars, tiny
from tvae.config import PAD
from tvae.eval.windows import evaluate_batch

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_pickups_known_decodes_the_steps_outside_the_melody_as_pad() -> None:
    """`free_known_correct` counts the free-running run that is given the steps outside the
    melody; without such steps it is the plain free-running count."""
    torch.manual_seed(0)
    model = tiny().eval()
    tokens, meters = random_bars(2, 5, seed=3, meters=torch.zeros(2, 5, dtype=torch.long))
    plain, _ = evaluate_batch(model, tokens, meters)
    assert int(plain["free_known_correct"]) == int(plain["free_correct"])
    tokens[:, 0, :6] = PAD  # a pickup: the melody starts at step 6
    target = tokens != PAD
    counts, _ = evaluate_batch(model, tokens, meters)
    with torch.no_grad():
        mu = model.encode(tokens, meters)[0]
        free = model.free_run(mu, meters)
        known = model.free_run(mu, meters, outside=~target)
    assert not bool((free[~target] == PAD).all())  # the decoder fills the pickup's rest
    assert bool((known[~target] == PAD).all())
    assert int(counts["free_correct"]) == int(((free == tokens) & target).sum())
    assert int(counts["free_known_correct"]) == int(((known == tokens) & target).sum())
