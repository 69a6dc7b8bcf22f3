"""The training objective (tvae.training.objective) on what the model returns: PAD steps ignored,
free bits, the plain teacher-forced path, the supervised head and the pointer's and the edit
chances' auxiliary losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

from tests.model.test_model import DECODERS, random_bars, tiny
from tvae.config import PAD
from tvae.model.forward import kl_per_bar
from tvae.training.objective import (
    edit_nll,
    pointer_nll,
    repeat_weights,
    source_weights,
    vae_objective,
)

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


def _near_song() -> tuple[Tensor, Tensor]:
    """Six bars: bar 2 repeats bar 0 exactly, bar 4 is bar 1 with steps 3 and 7 changed,
    bars 0, 1, 3 and 5 are new."""
    tokens, meters = random_bars(1, 6, seed=21, meters=torch.zeros(1, 6, dtype=torch.long))
    tokens[0, 2] = tokens[0, 0]
    tokens[0, 4] = tokens[0, 1]
    for s in (3, 7):
        tokens[0, 4, s] = tokens[0, 1, s] % 20 + 3
    return tokens, meters


def test_edit_loss_teaches_edits_where_a_copy_differs_from_its_source() -> None:
    """Over the bars with a source in reach (2 and 4), the loss is the cross-entropy of each
    real step's edit chance against "changed from the source": -log eps at bar 4's steps 3
    and 7, -log(1 - eps) elsewhere, each group averaged over its steps in the bar; chances
    that are exactly right cost nothing; the cap stops the push at `cap`; a source beyond
    the pointer's reach does not count."""
    tokens, _ = _near_song()
    S = tokens.shape[-1]
    log_pi = torch.zeros(1, 6, 7)  # every earlier bar reachable
    log_pi[..., 1:] = torch.where(torch.arange(6)[:, None] > torch.arange(6)[None],
                                  0.0, float("-inf"))
    changed = torch.zeros(1, 6, S, dtype=torch.bool)
    changed[0, 4, [3, 7]] = True
    eps = torch.linspace(0.05, 0.6, S).expand(1, 6, S)  # a different chance at each step
    total, count = edit_nll(eps.log(), log_pi, tokens, max_edits=2)
    kept = (tokens[0] != PAD) & ~changed[0]  # (6, S)
    keep_mean = [-(1 - eps[0, k][kept[k]]).log().mean() for k in (2, 4)]
    expected = keep_mean[0] + keep_mean[1] - eps[0, 4, [3, 7]].log().mean()
    assert int(count) == 2
    torch.testing.assert_close(total, expected)
    right = torch.where(changed, 1 - 1e-7, 1e-7).log()
    assert float(edit_nll(right, log_pi, tokens, max_edits=2)[0]) < 1e-4
    capped, _ = edit_nll(right, log_pi, tokens, max_edits=2, cap=0.9)
    assert float(capped) == pytest.approx(-3 * np.log(0.9), rel=1e-4)  # 3 step groups
    assert int(edit_nll(eps.log(), log_pi, tokens, max_edits=0)[1]) == 1  # exact repeats only
    far = log_pi.clone()
    far[0, 4, 1 + 1] = float("-inf")  # bar 4 cannot reach bar 1
    assert int(edit_nll(eps.log(), far, tokens, max_edits=2)[1]) == 1


def test_edit_weight_adds_the_edit_loss_and_raises_eps_at_the_changed_steps() -> None:
    """`edit_weight` adds weight x the mean edit loss to the total (without it the loss is not
    computed); its gradient raises the edit chance at a near-repeat's changed steps and lowers
    it at its kept ones."""
    model = tiny()
    tokens, meters = _near_song()
    out = model(tokens, meters, sample=False)
    assert out.log_eps is not None and out.log_pi is not None
    plain = vae_objective(out, tokens, beta=1.0, pointer_edits=2)
    weighted = vae_objective(out, tokens, beta=1.0, pointer_edits=2, edit_weight=0.5)
    assert plain.edit_loss is None  # not computed without a weight
    assert weighted.edit_loss is not None
    total, count = edit_nll(out.log_eps, out.log_pi, tokens, max_edits=2)
    torch.testing.assert_close(weighted.edit_loss, total / count)
    torch.testing.assert_close(weighted.loss, plain.loss + 0.5 * weighted.edit_loss)
    log_eps = out.log_eps.detach().requires_grad_()
    total, _ = edit_nll(log_eps, out.log_pi.detach(), tokens, max_edits=2)
    total.backward()
    grad = log_eps.grad[0, 4]  # descent moves log eps against the gradient
    assert (grad[[3, 7]] < 0).all()
    kept = (tokens[0, 4] != PAD) & ~torch.isin(torch.arange(grad.shape[0]), torch.tensor([3, 7]))
    assert (grad[kept] > 0).all()


def test_repeat_beta_weighs_the_kl_of_repeated_and_near_repeated_bars() -> None:
    """With `repeat_beta` w, the loss is the plain loss plus beta (w - 1) x the KL of the bars
    that repeat an earlier one (bar 2 exactly, bar 4 with 2 steps changed), per real bar; with
    pointer_edits 0 only the exact repeat counts; a source beyond the pointer's reach does not
    count."""
    model = tiny()
    tokens, meters = _near_song()
    out = model(tokens, meters, sample=False)
    plain = vae_objective(out, tokens, beta=0.5, pointer_edits=2)
    n_bars = 6
    for edits, bars in ((2, [2, 4]), (0, [2])):
        weighted = vae_objective(out, tokens, beta=0.5, pointer_edits=edits, repeat_beta=3.0)
        extra = 0.5 * 2.0 * out.kl_bars[0, bars].sum() / n_bars
        torch.testing.assert_close(weighted.loss, plain.loss + extra)
        torch.testing.assert_close(weighted.kl, plain.kl)  # the reported KL is unweighted
    log_pi = out.log_pi.clone()
    log_pi[0, 4, 1 + 1] = float("-inf")  # bar 4 cannot reach bar 1
    weights = repeat_weights(tokens, log_pi, 2, 3.0)
    assert weights[0].tolist() == [1.0, 1.0, 3.0, 1.0, 1.0, 1.0]


def test_source_weight_weighs_a_first_occurrence_by_its_copies() -> None:
    """With `source_weight` g, a bar that repeats nothing earlier weighs 1 + g x the later bars
    that repeat it: in A B A C A B', bar 0 is repeated by bars 2 and 4 (bar 4 also repeats bar
    2, which is itself a repeat and gains nothing), bar 1 by bar 5 (a near-repeat, with
    pointer_edits 2 only). The loss is the plain loss plus g x those bars' negative
    log-likelihoods per real bar; the reported reconstruction is unweighted; a copy beyond the
    pointer's reach does not count."""
    model = tiny()
    tokens, meters = random_bars(1, 6, seed=22, meters=torch.zeros(1, 6, dtype=torch.long))
    tokens[0, 2] = tokens[0, 4] = tokens[0, 0]
    tokens[0, 5] = tokens[0, 1]
    tokens[0, 5, 6] = tokens[0, 1, 6] % 20 + 3  # bar 5: bar 1 with one step changed
    assert source_weights(tokens, None, 2, 0.5)[0].tolist() == [2.0, 1.5, 1, 1, 1, 1]
    assert source_weights(tokens, None, 0, 0.5)[0].tolist() == [2.0, 1, 1, 1, 1, 1]
    out = model(tokens, meters, sample=False)
    plain = vae_objective(out, tokens, beta=0.5, pointer_edits=2)
    weighted = vae_objective(out, tokens, beta=0.5, pointer_edits=2, source_weight=0.5)
    nll = -out.log_lik[0]
    extra = 0.5 * (2 * nll[0] + nll[1]) / 6
    torch.testing.assert_close(weighted.loss, plain.loss + extra)
    torch.testing.assert_close(weighted.recon, plain.recon)
    log_pi = out.log_pi.clone()
    log_pi[0, 4, 1 + 0] = float("-inf")  # bar 4 cannot reach bar 0
    assert source_weights(tokens, log_pi, 2, 0.5)[0].tolist() == [1.5, 1.5, 1, 1, 1, 1]
