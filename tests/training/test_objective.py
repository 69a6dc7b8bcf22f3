"""The training objective (tvae.training.objective) on what the model returns: PAD steps ignored,
free bits, the plain teacher-forced path, the supervised head and the pointer's auxiliary loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

from tests.model.test_model import DECODERS, random_bars, tiny
from tvae.config import PAD
from tvae.model.forward import kl_per_bar
from tvae.training.objective import pointer_nll, vae_objective

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.mark.parametrize("copy", ["bar", "step", "none"])
def test_pad_steps_are_ignored_by_the_loss(copy: str) -> None:
    """Generator logits on PAD steps (or padding bars) change no bar's log-likelihood; logits on
    real steps do."""
    model = tiny(copy=copy)
    tokens, meters = random_bars(2, 4, seed=10)  # mixed meters: PAD steps at bar ends
    tokens[1, 3] = PAD  # and a padding bar
    bar_mask = (tokens != PAD).any(-1)
    with torch.no_grad():
        out = model(tokens, meters, sample=False)
        log_pi, log_eps = model.pointer_weights(out.mu, bar_mask)
        h = model._decode_hidden(model.bar_encoder(tokens, meters), model._memory(out.mu),
                                 bar_mask)
        logits = model.bar_decoder(h, meters, tokens, 1.0)

    def lik(logits: Tensor) -> Tensor:
        return model._outputs(logits, meters, tokens, tokens, log_pi, log_eps)[1] * bar_mask

    noisy = logits.clone()
    noisy[tokens == PAD] = torch.randn_like(noisy[tokens == PAD]) * 10
    assert (tokens == PAD).any() and torch.equal(lik(noisy), lik(logits))
    noisy = logits.clone()
    noisy[tokens != PAD] += torch.randn_like(noisy[tokens != PAD])
    assert not torch.equal(lik(noisy), lik(logits))  # real steps do count


def test_free_bits_floor_the_kl_penalty() -> None:
    model = tiny()
    tokens, meters = random_bars(2, 3, seed=11)
    with torch.no_grad():
        out = model(tokens, meters, sample=False)
    plain = vae_objective(out, tokens, beta=1.0)
    floored = vae_objective(out, tokens, beta=1.0, free_bits=1000.0)
    torch.testing.assert_close(floored.kl, plain.kl)  # the reported KL is unchanged
    expected = plain.recon + 1000.0 * np.log(2.0)  # every bar is below the floor
    torch.testing.assert_close(floored.loss, expected.float(), rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("copy", ["bar", "none"])
@pytest.mark.parametrize("decoder", DECODERS)
def test_full_teacher_forcing_is_the_plain_path(decoder: str, copy: str) -> None:
    model = tiny(bar_decoder=decoder, copy=copy)
    tokens, meters = random_bars(2, 4, seed=12)
    with torch.no_grad():
        torch.manual_seed(5)
        out = model(tokens, meters, p_tf=1.0)
        torch.manual_seed(5)
        mu, logvar = model.encode(tokens, meters)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        log_probs, log_lik = model.decode_teacher_forced(z, tokens, meters)
    loss = vae_objective(out, tokens, beta=0.5)
    n_bars = (tokens != PAD).any(-1).sum()
    recon = -log_lik.sum() / n_bars
    kl = kl_per_bar(mu, logvar).sum() / n_bars
    assert torch.equal(out.log_probs, log_probs)
    torch.testing.assert_close(loss.recon, recon)
    torch.testing.assert_close(loss.loss, recon + 0.5 * kl)
    if copy == "none":  # the stock model's likelihood is the plain cross-entropy
        ce = torch.nn.functional.cross_entropy(log_probs.flatten(0, 2), tokens.flatten(),
                                               ignore_index=PAD, reduction="sum") / n_bars
        torch.testing.assert_close(loss.recon, ce)


def test_class_head_adds_its_loss() -> None:
    model = tiny(n_classes=3)
    tokens, meters = random_bars(4, 3, seed=14)
    with torch.no_grad():
        out = model(tokens, meters, sample=False)
    base = vae_objective(out, tokens, beta=1.0)
    labelled = vae_objective(out, tokens, beta=1.0, labels=torch.tensor([0, 2, -1, 1]),
                             class_weight=2.0)
    unlabelled = vae_objective(out, tokens, beta=1.0, labels=torch.full((4,), -1))
    assert out.class_logits is not None and out.class_logits.shape == (4, 3)
    assert base.class_loss is None
    # No labelled window: the head adds exactly nothing (computed on the device, no host sync).
    assert unlabelled.class_loss is not None and float(unlabelled.class_loss) == 0.0
    torch.testing.assert_close(unlabelled.loss, base.loss)
    assert labelled.class_loss is not None and float(labelled.class_loss) > 0
    torch.testing.assert_close(labelled.loss, base.loss + 2.0 * labelled.class_loss)
    expected = torch.nn.functional.cross_entropy(out.class_logits[[0, 1, 3]],
                                                 torch.tensor([0, 2, 1]))
    torch.testing.assert_close(labelled.class_loss, expected)


def test_pointer_loss_is_minus_log_weight_on_the_repeated_bars() -> None:
    """Bar 3 repeats bars 0 and 1 (identical): the loss is -log(pi_0 + pi_1); bars without an
    exact earlier repeat add nothing; the weight adds it to the total."""
    model = tiny()
    tokens, meters = random_bars(1, 4, seed=15, meters=torch.zeros(1, 4, dtype=torch.long))
    tokens[0, 1] = tokens[0, 0]
    tokens[0, 3] = tokens[0, 0]
    with torch.no_grad():
        out = model(tokens, meters, sample=False)
    assert out.log_pi is not None
    total, count = pointer_nll(out.log_pi, tokens)
    pi = out.log_pi.exp()[0]  # (N, 1 + N)
    expected = -torch.log(pi[1, 1]) - torch.log(pi[3, 1] + pi[3, 2])  # bar 1 repeats bar 0 too
    assert int(count) == 2
    torch.testing.assert_close(total, expected)
    plain = vae_objective(out, tokens, beta=1.0)
    weighted = vae_objective(out, tokens, beta=1.0, pointer_weight=0.5)
    torch.testing.assert_close(weighted.loss, plain.loss + 0.5 * total / 2)
