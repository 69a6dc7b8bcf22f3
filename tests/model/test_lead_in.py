"""The lead-in head (`lead_in`): bar 0's latent says how many steps lie before a pickup; its
likelihood is part of bar 0's, and free-running decoding puts PAD on those steps."""

from __future__ import annotations

import math
from dataclasses import asdict

import pytest
import torch

from tests.model.test_model import random_bars, tiny
from tvae.config import PAD, ModelConfig, config_from_dict
from tvae.eval.windows import evaluate_batch
from tvae.melody import METERS
from tvae.model.lead_in import lead_log_lik, lead_outside, lead_steps
from tvae.model.legacy import legacy_model_fields
from tvae.model.sampling import argmax_sampler, make_sampler
from tvae.model.vae import TransformerVAE
from tvae.training.objective import vae_objective

pytestmark = pytest.mark.usefixtures("torch_one_thread")
FOUR_FOUR = METERS.index((4, 4))
THREE_FOUR = METERS.index((3, 4))


def pickup_bars(leads: list[int], N: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random 4/4 bars (B, N, S) whose bar 0 opens with `leads[b]` PAD steps."""
    tokens, meters = random_bars(len(leads), N, seed,
                                 meters=torch.full((len(leads), N), FOUR_FOUR))
    for b, lead in enumerate(leads):
        tokens[b, 0, :lead] = PAD
    return tokens, meters


def test_lead_steps_counts_bar_0s_leading_pad_only() -> None:
    tokens, _ = pickup_bars([0, 4, 15])
    tokens[0, 1, :3] = PAD  # a later bar's leading PAD is not a lead-in
    assert lead_steps(tokens).tolist() == [0, 4, 15]
    tokens[0, 0] = PAD  # an all-PAD bar 0 (no real bar) has none
    assert lead_steps(tokens).tolist() == [0, 4, 15]
    short, _ = random_bars(1, 2, meters=torch.full((1, 2), THREE_FOUR))  # PAD after step 12
    assert lead_steps(short).tolist() == [0]


def test_lead_likelihood_is_bar_0s_and_only_over_lengths_the_meter_allows() -> None:
    tokens, meters = pickup_bars([0, 6])
    meters[1] = THREE_FOUR  # 12 steps: lengths 12..15 are impossible
    tokens[1, :, 12:] = PAD
    logits = torch.zeros(2, 16)
    ll = lead_log_lik(logits, tokens, meters)
    assert torch.equal(ll[:, 1:], torch.zeros(2, 3))
    torch.testing.assert_close(ll[:, 0], torch.tensor([-math.log(16), -math.log(12)]))
    tokens[0] = PAD  # no real bar 0: nothing to score
    assert float(lead_log_lik(logits, tokens, meters)[0, 0]) == 0.0


def test_a_fresh_head_decodes_as_before_and_costs_a_uniform_length() -> None:
    """The head starts at zero (as --init-from adds it): greedy decoding reads no lead-in, so
    the model decodes as the same weights without the head do; bar 0's likelihood gains
    log(1 / lengths the meter allows), and no other bar's changes."""
    with_head = tiny(seed=1, lead_in=True)
    without = TransformerVAE(ModelConfig(**{**asdict(with_head.config), "lead_in": False}),
                             with_head.grid).eval()
    without.load_state_dict({k: v for k, v in with_head.state_dict().items()
                             if not k.startswith("lead.")})
    tokens, meters = pickup_bars([0, 6, 10])
    with torch.no_grad():
        mu = with_head.encode(tokens, meters)[0]
        assert torch.equal(with_head.free_run(mu, meters), without.free_run(mu, meters))
        _, ll_head = with_head.decode_teacher_forced(mu, tokens, meters)
        _, ll_plain = without.decode_teacher_forced(mu, tokens, meters)
    torch.testing.assert_close(ll_head[:, 1:], ll_plain[:, 1:])
    torch.testing.assert_close(ll_head[:, 0] - ll_plain[:, 0], torch.full((3,), -math.log(16)))


def test_the_head_decides_bar_0s_lead_in_when_decoding_free_running() -> None:
    model = tiny(seed=2, lead_in=True)
    with torch.no_grad():
        model.lead.bias[6] = 5.0  # a lead-in of 6 steps, whatever z
    tokens, meters = pickup_bars([0, 6])
    with torch.no_grad():
        mu = model.encode(tokens, meters)[0]
        free = model.free_run(mu, meters)
        outside = torch.zeros_like(tokens, dtype=torch.bool)
        outside[:, 0, :6] = True
        assert torch.equal(free, model.free_run(mu, meters, outside=outside))
        # given outside (the song's own layout), the head is not read
        given = model.free_run(mu, meters, outside=torch.zeros_like(outside))
        # a melody continued from a given bar 0 keeps it as it is
        continued = model.free_run(mu, meters, prefix=tokens[:, :1])
    assert bool((free[:, 0, :6] == PAD).all())
    assert bool((free[:, 0, 6:] != PAD).all()) and bool((free[:, 1:] != PAD).all())
    assert bool((given != PAD).all())
    assert torch.equal(continued[:, 0], tokens[:, 0])
    windowed = model.free_run(mu, meters, window=2)  # a song longer than the window
    assert bool((windowed[:, 0, :6] == PAD).all()) and bool((windowed[:, 1:] != PAD).all())


def test_a_drawn_lead_in_follows_the_sampler() -> None:
    logits = torch.tensor([[0.0] * 4 + [9.0] + [0.0] * 11]).repeat(64, 1)  # (64, 16)
    meters = torch.full((64, 1), FOUR_FOUR)
    greedy = lead_outside(logits, meters, 2, argmax_sampler)
    assert bool(greedy[:, 0, :4].all()) and not bool(greedy[:, 0, 4:].any())
    assert not bool(greedy[:, 1].any())
    hot = make_sampler(50.0, generator=torch.Generator().manual_seed(0))
    drawn = lead_outside(logits, meters, 2, hot).sum(-1)[:, 0]  # (64,) lengths drawn
    assert len(set(drawn.tolist())) > 1 and int(drawn.max()) <= 15


def test_a_tiny_model_learns_the_lead_ins_its_latents_carry() -> None:
    """Songs whose opening bar holds one pitch that tells its lead-in (0, 4, 8 or 12 steps):
    bar 0's latent has to carry the pitch, so trained jointly the head reads every lead-in
    right from the posterior mean, `evaluate_batch` counts them, and free-running decoding
    lays bar 0 out as the song has it."""
    model = tiny(seed=3, layers=1, lead_in=True).train()
    leads = [0, 4, 8, 12] * 4
    tokens, meters = pickup_bars(leads, N=3, seed=5)
    for b, lead in enumerate(leads):
        tokens[b, 0, lead:] = 10 + lead  # one pitch per lead-in length
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss = vae_objective(model(tokens, meters), tokens, beta=0.01).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    counts, _ = evaluate_batch(model, tokens, meters)
    assert int(counts["lead_n"]) == len(leads)
    assert int(counts["lead_right"]) == len(leads)
    with torch.no_grad():
        free = model.free_run(model.encode(tokens, meters)[0], meters)
    assert torch.equal(free[:, 0] == PAD, tokens[:, 0] == PAD)


def test_older_checkpoints_have_no_lead_in_head() -> None:
    fields = asdict(ModelConfig())
    fields.pop("lead_in")
    assert config_from_dict(ModelConfig, legacy_model_fields(fields | {"lead_in": True})).lead_in
    assert config_from_dict(ModelConfig, legacy_model_fields(fields)).lead_in is False
    assert ModelConfig().lead_in is False
    assert TransformerVAE(ModelConfig(lead_in=False)).lead is None
