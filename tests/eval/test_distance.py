"""Repeats at every distance: the per-bucket metrics on hand-built songs whose answers are known
(a repeat 5, 12 and 24 bars back, a one-note edit), the per-step edit mechanism, and a transfer
whose edited repeat takes A's bar with B's edit.

The metric tests use oracle models (tvae.eval.windows only calls encode_windowed,
decode_teacher_forced_windowed, log_pointer and free_run), so that the expected numbers are
exact: one that copies every repeat from its nearest identical bar, and one that copies from the
bar just after it (the old failure at odd distances: 5 back copied from 4 back)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from tests.model.test_model import tiny
from tvae.config import HOLD, N_SPECIAL, PAD
from tvae.eval.structure import edit_follow_counts, near_repeats, nearest_offset
from tvae.eval.windows import _Totals, by_distance, evaluate_batch
from tvae.model.pointer import chosen_log_probs, copy_target, step_differences

pytestmark = pytest.mark.usefixtures("torch_one_thread")
S = 16


def bar(*pitches: int) -> torch.Tensor:
    """A 4/4 bar of quarter notes with these onset classes."""
    out = torch.full((S,), HOLD)
    out[::4] = torch.tensor(pitches)
    return out


def song_with_far_repeats() -> torch.Tensor:
    """(1, 30, S): new bars everywhere, except bar 6 = bar 1 (5 back), bar 14 = bar 2 (12
    back) and bar 28 = bar 4 (24 back); bar 10 is bar 3 with one note moved (a near-repeat)."""
    bars = [bar(N_SPECIAL + k % 40, N_SPECIAL + (3 * k) % 40, N_SPECIAL + (7 * k + 1) % 40,
                N_SPECIAL + (11 * k + 2) % 40) for k in range(30)]
    bars[5], bars[13], bars[27] = bars[0], bars[1], bars[3]
    bars[9] = bars[2].clone()
    bars[9][4] = bars[2][4] + 1
    return torch.stack(bars)[None]


class Oracle:
    """Copies each repeat from the bar `shift` bars before its nearest identical bar (shift 0:
    the right one; -1: one bar nearer) and decodes exactly what it was given."""

    def __init__(self, shift: int = 0) -> None:
        self.shift = shift
        self.config = SimpleNamespace(trained_bars=0)
        self.prior = None  # no learned prior: KL against N(0, I) only
        self.tokens: torch.Tensor | None = None

    def encode_windowed(self, tokens, meters, window):  # noqa: ANN001, ANN201
        self.tokens = tokens
        B, N, _ = tokens.shape
        mu = torch.zeros(B, N, 4)
        mu[..., 0] = torch.where(nearest_offset(tokens) > 0, 0.5, 2.0)  # repeats are cheap
        return mu, torch.zeros(B, N, 4)

    def decode_teacher_forced_windowed(self, z, tokens, meters, window):  # noqa: ANN001, ANN201
        V = N_SPECIAL + 48
        log_probs = torch.full((*tokens.shape, V), -1e9)
        log_probs.scatter_(-1, tokens[..., None], 0.0)
        return log_probs, torch.zeros(tokens.shape[:2])

    def log_pointer(self, z, real):  # noqa: ANN001, ANN201
        B, N = real.shape
        off = nearest_offset(self.tokens)
        log_pi = torch.full((B, N, 1 + N), -30.0)
        log_pi[..., 0] = 0.0
        for b in range(B):
            for k in range(N):
                if off[b, k] > 0:
                    j = max(k - int(off[b, k]) - self.shift, 0)
                    log_pi[b, k, 1 + j], log_pi[b, k, 0] = 0.0, -30.0
        return log_pi.log_softmax(-1)

    def pointer_weights(self, z, real):  # noqa: ANN001, ANN201
        return self.log_pointer(z, real), None  # one edit chance for all: none per step

    def free_run(self, z, meters, window=0):  # noqa: ANN001, ANN201
        return self.tokens


def distances_of(model: Oracle) -> dict:
    tokens = song_with_far_repeats()
    totals = _Totals()
    counts, _ = evaluate_batch(model, tokens, torch.zeros(1, 30, dtype=torch.long))
    totals.add(**counts)
    return by_distance(totals, free=True)


def test_nearest_offsets_and_near_repeats_of_a_hand_built_song() -> None:
    tokens = song_with_far_repeats()
    off = nearest_offset(tokens)[0]
    assert {k: int(off[k]) for k in range(30) if off[k]} == {5: 5, 13: 12, 27: 24}
    assert torch.nonzero(near_repeats(tokens)[0]).flatten().tolist() == [9]
    assert int(step_differences(tokens)[0, 9, 2]) == 1


def test_each_distance_bucket_counts_its_repeat_and_the_right_source() -> None:
    got = distances_of(Oracle(shift=0))
    assert {k: v["repeats"] for k, v in got.items()} == {"1-4": 0, "5-8": 1, "9-16": 1,
                                                         "17-32": 1}
    for name in ("5-8", "9-16", "17-32"):
        assert got[name]["copy_accuracy"] == 1.0 and got[name]["exact"] == 1.0
        assert got[name]["kl_bits"] == pytest.approx(0.5 * 0.25 / math.log(2))
    assert math.isnan(got["1-4"]["copy_accuracy"])


class Decodes(Oracle):
    """The oracle, but free-running decodes `out` (1, 30, S) instead of the song."""

    def __init__(self, out: torch.Tensor) -> None:
        super().__init__()
        self.out = out

    def free_run(self, z, meters, window=0):  # noqa: ANN001, ANN201
        return self.out


@pytest.mark.parametrize("wrong_step, exact, kept", [(None, 1.0, 1.0), (4, 0.0, 0.0),
                                                     (8, 0.0, 1.0)])
def test_a_near_repeat_keeps_its_change_when_its_changed_steps_come_back(
        wrong_step: int | None, exact: float, kept: float) -> None:
    """Bar 10 is bar 3 with its step 4 changed. Decoded with step 4 as in bar 3 (the edit
    lost), it is neither exact nor keeps its change; with step 8 wrong instead (an error
    carried from its source, say), it is not exact but keeps its change."""
    from tvae.eval.windows import _near_metrics

    tokens = song_with_far_repeats()
    out = tokens.clone()
    if wrong_step == 4:
        out[0, 9, 4] = tokens[0, 2, 4]
    elif wrong_step is not None:
        out[0, 9, wrong_step] = tokens[0, 9, wrong_step] + 1
    totals = _Totals()
    totals.add(**evaluate_batch(Decodes(out), tokens, torch.zeros(1, 30, dtype=torch.long))[0])
    near = _near_metrics(totals, free=True)
    assert near["near_repeated_bars"] == 1
    assert near["near_repeats_exact"] == exact and near["near_changes_kept"] == kept


def test_copying_from_one_bar_too_near_scores_zero() -> None:
    """The old failure: a 5-back repeat copied from the bar 4 back, a 12-back from 11 back."""
    got = distances_of(Oracle(shift=-1))
    for name in ("5-8", "9-16", "17-32"):
        assert got[name]["copy_accuracy"] == 0.0


def test_pointer_targets_reach_far_sources_and_near_repeats() -> None:
    tokens = song_with_far_repeats()
    target = copy_target(tokens, 32, max_edits=2)[0]  # (N, N)
    assert target[27, 3] and target[13, 1] and target[5, 0]
    assert target[9].nonzero().flatten().tolist() == [2]  # the edited bar: its one-note source
    assert not copy_target(tokens, 16, max_edits=2)[0, 27].any()  # beyond a 16-bar reach
    assert not copy_target(tokens, 32)[0, 9].any()  # exact targets only: no source


def test_a_copy_keeps_its_source_except_where_its_latent_marks_an_edit() -> None:
    """The per-step edit chance decides, step by step, between the source and the generator."""
    source = bar(10, 12, 14, 15)[None, None]  # (1, 1, S)
    gen = torch.full((1, 1, S, N_SPECIAL + 48), -10.0)
    gen[..., 20] = 0.0  # the generator wants class 20 everywhere
    gen = gen.log_softmax(-1)
    log_eps = torch.full((1, 1, S), math.log(1e-3))
    log_eps[0, 0, 4] = math.log(1 - 1e-3)  # an edit at step 4 only
    out = chosen_log_probs(gen, source, log_eps, torch.tensor([[1]])).argmax(-1)[0, 0]
    expected = source[0, 0].clone()
    expected[4] = 20
    assert torch.equal(out, expected)


def test_a_model_with_per_step_edits_reads_them_from_z_alone() -> None:
    model = tiny(copy="bar", copy_offsets=32)
    assert model.edit is not None
    z = torch.randn(2, 5, 8)
    _, log_eps = model.pointer_weights(z, torch.ones(2, 5, dtype=torch.bool))
    assert log_eps.shape == (2, 5, S)
    z2 = z.clone()
    z2[:, :3] = torch.randn(2, 3, 8)  # other bars' latents change nothing of bar 4's edits
    _, again = model.pointer_weights(z2, torch.ones(2, 5, dtype=torch.bool))
    torch.testing.assert_close(log_eps[:, 3:], again[:, 3:])


def test_an_edited_repeat_follows_a_transfer_with_bs_edit() -> None:
    """B = [x, y, x with one moved note]; after the transfer the output's bar 3 must be the
    output's bar 1 with B's edit: A's opening, developed as B develops its own."""
    x, y, a = bar(10, 12, 14, 15), bar(20, 21, 22, 23), bar(30, 31, 32, 33)
    x_edit = x.clone()
    x_edit[8] = 18
    tokens_b = torch.stack([x, y, x_edit])[None]
    a_edit = a.clone()
    a_edit[8] = 18
    right = torch.stack([a, y, a_edit])[None]
    wrong = torch.stack([a, y, a])[None]  # copied A's bar, lost B's edit
    changed = torch.tensor([True])
    assert edit_follow_counts(tokens_b, right, changed) == {"edit_follow": 1.0,
                                                            "edit_follow_n": 1.0}
    assert edit_follow_counts(tokens_b, wrong, changed)["edit_follow"] == 0.0
    assert edit_follow_counts(tokens_b, torch.stack([a, y, x_edit])[None], changed)[
        "edit_follow"] == 0.0  # kept B's bar: did not follow A
    assert PAD not in right
