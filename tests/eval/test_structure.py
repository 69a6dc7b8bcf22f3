"""The structure metrics (tvae.eval.structure) on hand-built windows whose answers are known:
repeats and first occurrences, the paired KL ratio, transfer pairs, and follow / spurious / kept
counts of a context transfer, decoded by oracle models (one that copies where the latent says,
one that never copies), and how edit chances mark a near-repeat's changed steps."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tvae.config import HOLD, N_SPECIAL, PAD, REST
from tvae.eval.structure import (
    edit_marks,
    first_occurrence,
    near_repeats,
    paired_ratios,
    repeated_bars,
    transfer_counts,
    transfer_pairs,
)

S = 16


def bar(*pitches: int) -> torch.Tensor:
    """A 4/4 bar of quarter notes with these onset classes (offsets above the specials)."""
    out = torch.full((S,), HOLD)
    out[::4] = torch.tensor([N_SPECIAL + p for p in pitches])
    return out


X, Y, Z, W = bar(0, 2, 4, 5), bar(7, 5, 4, 2), bar(0, 0, 7, 7), bar(9, 7, 5, 4)


def song(*bars: torch.Tensor) -> torch.Tensor:
    return torch.stack(bars)[None]  # (1, N, S)


def test_repeats_and_first_occurrences() -> None:
    tokens = song(X, Y, X, Z, Y, X)
    assert first_occurrence(tokens)[0].tolist() == [0, 1, 0, 3, 1, 0]
    assert repeated_bars(tokens)[0].tolist() == [False, False, True, False, True, True]
    padded = torch.cat([tokens, torch.full((1, 2, S), PAD)], dim=1)
    assert repeated_bars(padded)[0].tolist()[-2:] == [False, False]  # padding is no repeat


def test_paired_ratio_divides_a_repeats_kl_by_its_first_occurrences() -> None:
    tokens = song(X, Y, X, Y, Z)
    kl = torch.tensor([[10.0, 0.05, 2.0, 1.0, 7.0]])
    # bar 2 repeats bar 0 (2 / 10); bar 3 repeats bar 1, whose KL is below the floor: left out
    assert paired_ratios(kl, tokens).tolist() == pytest.approx([0.2])


def test_transfer_pairs_take_bs_that_repeat_bar_one_and_as_from_other_songs() -> None:
    tokens = torch.cat([song(X, Y, X), song(W, Y, Z), song(X, Z, Z), song(Z, X, Z)]).numpy()
    meters = np.zeros((4, 3), dtype=np.int64)
    songs = np.array([0, 1, 0, 2])
    # window 0 repeats its bar 1 (A: window 1, another song, another bar 1); window 3 too (A:
    # window 0, cyclically next of another song); window 2 repeats a bar, but not its bar 1
    assert transfer_pairs(tokens, meters, songs) == [(1, 0), (0, 3)]
    meters[1] = 1  # another meter is never an A
    assert transfer_pairs(tokens, meters, songs) == [(3, 0), (0, 3)]


class Oracle(SimpleNamespace):
    """A model whose latent of a bar is its steps plus the bar it copies (-1: none), and whose
    decoder copies the decoded source bar where `copies` is set, else writes the latent's
    steps: a perfect copy path, or (copies=False) none at all."""

    def __init__(self, copies: bool) -> None:
        super().__init__(config=SimpleNamespace(trained_bars=0), copies=copies)

    def encode_windowed(self, tokens: torch.Tensor, meters: torch.Tensor, window: int
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        first = first_occurrence(tokens)  # (B, N)
        source = torch.where(repeated_bars(tokens), first, -1)
        mu = torch.cat([tokens.float(), source[..., None].float()], dim=-1)
        return mu, torch.zeros_like(mu)

    def free_run(self, z: torch.Tensor, meters: torch.Tensor, window: int = 0,
                 outside: torch.Tensor | None = None) -> torch.Tensor:
        out = z[..., :S].long().clone()
        for k in range(z.shape[1]):
            source = z[:, k, S].long()
            for b in range(z.shape[0]):
                if self.copies and source[b] >= 0:
                    out[b, k] = out[b, source[b]]
        return out if outside is None else out.masked_fill(outside, PAD)

    def transfer_run(self, z: torch.Tensor, own: torch.Tensor, meters: torch.Tensor,
                     window: int = 0, outside: torch.Tensor | None = None,
                     mine: torch.Tensor | None = None) -> torch.Tensor:
        """Its copies are exact: there are no edits to locate from `own`."""
        return self.free_run(z, meters, window, outside)


def test_transfer_counts_follow_spurious_and_kept() -> None:
    a = song(W, Z, Z, Z, Z, Z)
    b = song(X, Y, X, Z, Y, X)  # B's bar 1 comes back 2 and 5 bars later
    meters = torch.zeros((1, 6), dtype=torch.long)
    got = transfer_counts(Oracle(copies=True), a, b, meters)
    assert (got["follow"], got["follow_n"]) == (2, 2)  # both repeats now repeat A's bar 1
    assert (got["spurious"], got["other_n"], got["kept"]) == (0, 3, 3)
    assert (got["changed"], got["cases"]) == (1, 1)
    assert (got["follow_1-4"], got["follow_n_1-4"]) == (1, 1)  # 2 bars later
    assert (got["follow_5-8"], got["follow_n_5-8"]) == (1, 1)  # 5 bars later
    never = transfer_counts(Oracle(copies=False), a, b, meters)
    assert (never["follow"], never["follow_n"], never["spurious"]) == (0, 2, 0)

    # a bar of B that is not a repeat but equals A's bar 1 follows it by accident: spurious
    b2 = song(X, W, X, Z, Y, X)
    spurious = transfer_counts(Oracle(copies=True), a, b2, meters)
    assert (spurious["spurious"], spurious["other_n"]) == (1, 3)
    # a transfer that leaves bar 1 as it was counts no case to follow
    same = transfer_counts(Oracle(copies=True), song(X, Z, Z, Z, Z, Z), b, meters)
    assert (same["changed"], same["follow_n"]) == (0, 0)


def test_kept_compares_rhythm_only() -> None:
    """'kept': a bar that is not a repeat of bar 1 keeps B's rhythm (its pitches may change)."""
    rest_bar = torch.full((S,), REST)
    a = song(W, Z, Z)
    b = song(X, rest_bar, Y)
    got = transfer_counts(Oracle(copies=True), a, b, torch.zeros((1, 3), dtype=torch.long))
    assert (got["kept"], got["other_n"]) == (2, 2)


def test_edit_marks_count_a_near_repeats_changed_and_kept_steps_above_one_half() -> None:
    """Bar 3 is bar 1 with its second note moved (step 4): of its one changed step, the one
    marked above 0.5 counts; of its 15 kept steps, one wrongly marked counts; the exact repeat
    (bar 2) and the new bars are not near-repeats and count nowhere."""
    moved = bar(7, 6, 4, 2)
    tokens = song(X, Y, X, moved, Z)
    near = near_repeats(tokens)
    assert near[0].tolist() == [False, False, False, True, False]
    log_eps = torch.full((1, 5, S), float(np.log(0.1)))
    log_eps[0, 3, 4] = float(np.log(0.8))  # the change, marked
    log_eps[0, 3, 9] = float(np.log(0.6))  # a kept step, marked wrongly
    log_eps[0, 2, 0] = float(np.log(0.9))  # not a near-repeat: not counted
    counts = {k: int(v) for k, v in edit_marks(log_eps, tokens, near).items()}
    assert counts == {"near_changed": 1, "near_changed_marked": 1, "near_kept": S - 1,
                      "near_kept_marked": 1}
    log_eps[0, 3, 4] = float(np.log(0.4))  # below one half: decoding would keep the source
    assert int(edit_marks(log_eps, tokens, near)["near_changed_marked"]) == 0
