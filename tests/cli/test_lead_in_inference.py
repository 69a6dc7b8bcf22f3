"""The lead-in head in inference: decoding latents alone reads bar 0's lead-in from z_0 and the
melody opens with that pickup; a reconstruction (its song's layout known) and a transfer (B's
layout, decoded freely) do not read it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from tests.cli.test_inference import _melody
from tests.tiny import TINY_MODEL
from tvae.inference import TrainedModel, load_model
from tvae.model.checkpoint import save_checkpoint
from tvae.model.vae import TransformerVAE

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def leading(tmp_path_factory: pytest.TempPathFactory) -> TrainedModel:
    """A tiny model whose lead-in head always reads 6 steps (a 10-step pickup in 4/4)."""
    torch.manual_seed(0)
    model = TransformerVAE(replace(TINY_MODEL, lead_in=True))
    with torch.no_grad():
        model.lead.bias[6] = 9.0
    path = save_checkpoint(tmp_path_factory.mktemp("lead") / "lead", model)
    return load_model(path)


def test_decoding_latents_opens_with_the_pickup_the_head_reads(leading: TrainedModel) -> None:
    z = leading.encode(_melody(4))
    out = leading.decode(z, (4, 4), 100.0)
    assert out.pickup == 10
    tokens = leading.bars(out).tokens
    assert (tokens[0, :6] == 0).all() and (tokens[0, 6:] != 0).all()
    again = leading.decode(z, (4, 4), 100.0, lead_in=False)  # the head not read
    assert again.pickup == 0


def test_a_reconstruction_keeps_its_songs_layout(leading: TrainedModel) -> None:
    plain = leading.reconstruct(_melody(4))  # no pickup: none is read from the head
    assert plain.pickup == 0
    with_pickup = leading.reconstruct(_melody(5, pickup=4))
    assert with_pickup.pickup == 4


def test_a_transfer_decodes_bs_layout_freely(leading: TrainedModel) -> None:
    a, b = _melody(4), _melody(6)
    out = leading.transfer(a, b)
    assert out.pickup == 0
    z, _ = leading.transfer_posterior(a, b)
    expect = leading.decode(z, b.meter, b.qpm, "x", b.pickup, lead_in=False)
    assert np.array_equal(leading.bars(out).tokens, leading.bars(expect).tokens)
