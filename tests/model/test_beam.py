"""Beam search over a bar's steps (`BarDecoderGRU.beam_search`, `free_run(beam=K)`): exact where
the beam holds every prefix, greedy at width 1, never worse than greedy on the decoder's own
score, and a no-op for the MLP bar decoder (whose steps are independent given the bar).

Shape legend: B batch, N bars, S steps per bar, V vocabulary.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from tests.tiny import TINY_FIELDS
from tvae.config import PAD, GridConfig, ModelConfig
from tvae.model.modules import BarDecoderGRU, mask_logits
from tvae.model.vae import TransformerVAE

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def bar_log_lik(dec: BarDecoderGRU, h: torch.Tensor, meters: torch.Tensor,
                bars: torch.Tensor) -> torch.Tensor:
    """(B,) log p(bar | h) under teacher forcing. h (B, 1, D), meters (B, 1), bars (B, 1, S)."""
    logits = mask_logits(dec(h, meters, targets=bars), meters).log_softmax(-1)  # (B, 1, S, V)
    return logits.gather(-1, bars[..., None])[..., 0].sum((-1, -2))


def test_a_wide_beam_finds_the_likeliest_bar_by_brute_force() -> None:
    grid = GridConfig(min_pitch=60, max_pitch=61, steps_per_bar=3)  # V = 5: 4 classes a step
    torch.manual_seed(0)
    dec = BarDecoderGRU(grid, d_model=8, hidden=8).eval()
    with torch.no_grad():
        for weight in dec.parameters():  # sharper steps, so that greedy choices can mislead
            weight.mul_(3)
    B = 200
    h = torch.randn(B, 1, 8) * 3
    meters = torch.zeros(B, 1, dtype=torch.long)
    classes = [c for c in range(grid.vocab_size) if c != PAD]
    every = torch.tensor(list(itertools.product(classes, repeat=3)))  # (64, S)
    with torch.no_grad():
        scores = torch.stack([bar_log_lik(dec, h, meters, seq.expand(B, 1, 3)) for seq in every],
                             dim=1)  # (B, 64)
        best = every[scores.argmax(1)]  # (B, S)
        found = dec.beam_search(h, meters, width=16)  # holds every 2-step prefix: exact
        greedy = dec.generate(h, meters, lambda logits: logits.argmax(-1))
        narrow = dec.beam_search(h, meters, width=1)
    assert torch.equal(found[:, 0], best)
    assert torch.equal(narrow, greedy)
    # a brute-force check that the test can fail: greedy misses the likeliest bar somewhere
    assert not torch.equal(greedy[:, 0], best)


@pytest.mark.parametrize("copy", ["bar", "step", "none"])
def test_free_run_with_a_beam_is_greedy_at_width_1_and_no_worse_at_width_4(copy: str) -> None:
    torch.manual_seed(1)
    fields = dict(TINY_FIELDS, dropout=0.0, bar_decoder="gru", copy=copy, copy_offsets=4)
    model = TransformerVAE(ModelConfig(**fields), GridConfig()).eval()  # type: ignore[arg-type]
    B, N = 8, 5
    z = torch.randn(B, N, model.config.d_latent) * 2
    meters = torch.full((B, N), 2, dtype=torch.long)
    greedy = model.free_run(z, meters)
    assert torch.equal(model.free_run(z, meters, beam=1), greedy)
    wide = model.free_run(z, meters, beam=4)
    assert wide.shape == greedy.shape
    assert ((wide == PAD) == (greedy == PAD)).all()  # the meter's layout is kept
    # bar 0 sees no earlier bar: the beam's bar scores at least the greedy one there
    with torch.no_grad():
        _, log_lik_wide = model.decode_teacher_forced(z[:, :1], wide[:, :1], meters[:, :1])
        _, log_lik_greedy = model.decode_teacher_forced(z[:, :1], greedy[:, :1], meters[:, :1])
    assert (log_lik_wide >= log_lik_greedy - 1e-4).all()


def test_the_mlp_bar_decoder_ignores_the_beam() -> None:
    torch.manual_seed(2)
    model = TransformerVAE(ModelConfig(**dict(TINY_FIELDS, dropout=0.0)),  # type: ignore[arg-type]
                           GridConfig()).eval()
    z = torch.randn(3, 4, model.config.d_latent)
    meters = torch.full((3, 4), 2, dtype=torch.long)
    assert torch.equal(model.free_run(z, meters, beam=4), model.free_run(z, meters))
