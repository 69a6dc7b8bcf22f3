"""Edits that read the source (`edit_source`): a copy's edited step is drawn from the generator
biased by a learned table's row for the source's token there. The likelihood stays a
distribution, a zero table changes nothing, and a table that says "a becomes b" is what a copy
decodes with, in training's likelihood and in free-running decoding alike."""

from __future__ import annotations

import itertools

import pytest
import torch

from tests.model.test_model import random_bars, tiny
from tvae.config import PAD
from tvae.model.pointer import bar_log_lik, expected_edit_bias, pointer_log_weights

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_the_likelihood_with_an_edit_bias_is_a_distribution_over_bars() -> None:
    """Summed over every bar of a small vocabulary, p(bar k) is 1 at each position, with edits
    biased by any (finite) table row per step."""
    torch.manual_seed(0)
    B, N, S, V = 1, 3, 3, 4
    gen = torch.randn(B, N, S, V)
    gen[..., PAD] = float("-inf")
    gen = gen.log_softmax(-1)
    bias = torch.randn(B, N, S, V) * 3
    sources = torch.tensor([[[1, 2, 3], [3, 3, 1], [2, 1, 1]]])
    log_pi = pointer_log_weights(torch.randn(B, N, 1 + 2), torch.ones(B, N, dtype=torch.bool))
    log_eps = torch.log(torch.tensor([[[0.1, 0.5, 0.3], [0.3, 0.9, 0.02], [0.02, 0.4, 0.7]]]))
    total = torch.zeros(N)
    for bar in itertools.product([1, 2, 3], repeat=S):
        tokens = sources.clone()
        tokens[0, :] = torch.tensor(bar)
        total += bar_log_lik(gen, tokens, sources, log_pi, log_eps, bias)[0].exp()
    torch.testing.assert_close(total, torch.ones(N))


def test_the_expected_bias_is_the_sure_sources_row_and_zero_with_nothing_to_copy() -> None:
    table = torch.randn(6, 6)
    sources = torch.tensor([[[1, 2], [3, 4], [5, 1]]])  # (B, N', S)
    log_pi = torch.log(torch.tensor([[[1.0, 0.0, 0.0, 0.0],  # bar 0: nothing to copy
                                      [0.5, 0.5, 0.0, 0.0],  # bar 1 copies bar 0 if it copies
                                      [0.2, 0.0, 0.8, 0.0]]]))  # bar 2 copies bar 1
    bias = expected_edit_bias(table, log_pi, sources)  # (1, 3, 2, 6)
    assert torch.equal(bias[0, 0], torch.zeros(2, 6))
    torch.testing.assert_close(bias[0, 1], table[sources[0, 0]])
    torch.testing.assert_close(bias[0, 2], table[sources[0, 1]])


def _twins(**overrides: object) -> tuple[torch.nn.Module, torch.nn.Module]:
    plain, reading = tiny(seed=4, **overrides), tiny(seed=4, edit_source=True, **overrides)
    missing, unexpected = reading.load_state_dict(plain.state_dict(), strict=False)
    assert missing == ["edit_table"] and not unexpected
    return plain, reading


def test_a_zero_table_is_the_model_without_one() -> None:
    plain, reading = _twins()
    assert reading.edit_table is not None and not reading.edit_table.any()
    tokens, meters = random_bars(2, 6, seed=1)
    tokens[:, 3] = tokens[:, 1]
    torch.manual_seed(2)
    z = torch.randn(2, 6, 8)
    for a, b in zip(plain.decode_teacher_forced(z, tokens, meters),
                    reading.decode_teacher_forced(z, tokens, meters), strict=True):
        torch.testing.assert_close(a, b)
    assert torch.equal(plain.free_run(z, meters), reading.free_run(z, meters))


def _copy_one_back_editing_step(model: torch.nn.Module, step: int) -> None:
    """Every bar copies the bar 1 back with certainty, with an edit at `step` only."""
    with torch.no_grad():
        model.pointer.weight.zero_()
        model.pointer.bias.fill_(-30.0)
        model.pointer.bias[1] = 30.0
        model.edit.weight.zero_()
        model.edit.bias.fill_(-30.0)
        model.edit.bias[step] = 30.0


def test_a_copy_decodes_its_edit_from_the_sources_token() -> None:
    """The table says "token t becomes t + 1" (a cycle over the note classes): bar k decodes as
    bar k - 1 with step 0 moved on by one, whatever the generator says, and a bar that makes that
    move has a far higher likelihood with the table than without."""
    plain, model = _twins()
    _copy_one_back_editing_step(model, 0)
    _copy_one_back_editing_step(plain, 0)
    V = model.grid.vocab_size
    first = PAD + 1
    nxt = torch.arange(V)
    nxt[first:] = first + (torch.arange(first, V) - first + 1) % (V - first)
    with torch.no_grad():
        model.edit_table.fill_(-30.0)
        model.edit_table[torch.arange(V), nxt] = 30.0
    meters = torch.zeros(2, 4, dtype=torch.long)
    torch.manual_seed(5)
    out = model.free_run(torch.randn(2, 4, 8), meters)
    for k in range(1, 4):
        assert torch.equal(out[:, k, 1:], out[:, k - 1, 1:])
        assert torch.equal(out[:, k, 0], nxt[out[:, k - 1, 0]])
    _, lik = model.decode_teacher_forced(torch.randn(2, 4, 8), out, meters)
    _, lik_plain = plain.decode_teacher_forced(torch.randn(2, 4, 8), out, meters)
    assert bool((lik[:, 1:] > -0.01).all()) and bool((lik_plain[:, 1:] < -1.0).all())
