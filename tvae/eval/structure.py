"""Does the latent know the song's structure? Metrics of repeats and of context transfer.

- Repeats: a bar identical to an earlier bar of its window should cost little KL, both on
  average (`kl_bits_repeated` vs `kl_bits_new`) and against its own first occurrence
  (`kl_paired_ratio`, the median of KL(repeat) / KL(first occurrence)).
- Context transfer: song B's first-bar latent is replaced by song A's and B is decoded. Where B
  repeats its bar 1 later, the output should repeat its own (new) bar 1 there (`follow`); B's
  other bars should not become copies of it (`spurious`) and should keep their rhythm (`kept`).

Shape legend: B batch, N bars, S steps per bar, W windows.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from tvae.config import N_SPECIAL, PAD
from tvae.model.pointer import nearest_source, same_bars, step_differences

# How far back a repeat's nearest identical earlier bar lies, in bars: the buckets that
# `tvae evaluate` reports copy accuracy, exactness, KL and transfer by.
DISTANCE_BUCKETS = ((1, 4), (5, 8), (9, 16), (17, 32))
NEAR_EDITS = 2  # a near-repeat differs from an earlier bar in 1..NEAR_EDITS steps


def bucket_name(lo: int, hi: int) -> str:
    return f"{lo}-{hi}"


def nearest_offset(tokens: Tensor) -> Tensor:
    """(B, N) how many bars back the nearest identical earlier bar of the window lies; 0 where
    there is none (a new bar, a first occurrence, padding). tokens (B, N, S)."""
    N = tokens.shape[1]
    idx = torch.arange(N, device=tokens.device)
    off = idx[:, None] - idx[None, :]  # (N, N)
    earlier = same_bars(tokens) & (off >= 1)[None]  # (B, N, N)
    real = (tokens != PAD).any(-1)  # (B, N)
    big = N + 1
    nearest = torch.where(earlier, off[None].expand_as(earlier), big).min(-1).values  # (B, N)
    return torch.where((nearest < big) & real, nearest, torch.zeros_like(nearest))


def near_repeats(tokens: Tensor, max_edits: int = NEAR_EDITS) -> Tensor:
    """(B, N) bool: real bars with no identical earlier bar in the window but one that differs
    from them in 1..max_edits steps (with PAD in the same places): edited repeats."""
    N = tokens.shape[1]
    earlier = torch.ones(N, N, dtype=torch.bool, device=tokens.device).tril(-1)  # j < k
    diff = step_differences(tokens)  # (B, N, N)
    close = ((diff >= 1) & (diff <= max_edits) & earlier[None]).any(-1)  # (B, N)
    return close & (nearest_offset(tokens) == 0) & (tokens != PAD).any(-1)


def edit_marks(log_eps: Tensor, tokens: Tensor, near: Tensor) -> dict[str, Tensor]:
    """How the per-step edit chances (B, N, S), read from z alone, mark the near-repeats
    `near` (B, N): their steps that differ from their nearest source (`changed`) and those
    that do not (`kept`, real steps only), and how many of each have an edit chance above 0.5,
    which is what decoding a copy needs to reproduce a change (and to keep the rest)."""
    _, same = nearest_source(tokens, tokens.shape[1] - 1, NEAR_EDITS)  # (B, N, S)
    steps = near[..., None] & (tokens != PAD)  # (B, N, S)
    marked = log_eps > float(np.log(0.5))
    changed, kept = steps & ~same, steps & same
    return {"near_changed": changed.sum(), "near_changed_marked": (marked & changed).sum(),
            "near_kept": kept.sum(), "near_kept_marked": (marked & kept).sum()}


def first_occurrence(tokens: Tensor) -> Tensor:
    """(B, N) index of the earliest bar of the window identical to each bar (itself if none).
    tokens (B, N, S)."""
    N = tokens.shape[1]
    same = same_bars(tokens)  # (B, N, N)
    earlier_or_self = torch.ones(N, N, dtype=torch.bool, device=tokens.device).tril()
    return (same & earlier_or_self).float().argmax(-1)  # first True along j


def repeated_bars(tokens: Tensor) -> Tensor:
    """(B, N) bool: real bars identical to an earlier bar of the same window."""
    N = tokens.shape[1]
    return (first_occurrence(tokens) < torch.arange(N, device=tokens.device)) & (
        tokens != PAD).any(-1)


def paired_ratios(kl_bits: Tensor, tokens: Tensor, floor: float = 0.1) -> np.ndarray:
    """KL(repeat) / KL(its first occurrence) for every repeated bar: (R,) numpy. First
    occurrences below `floor` bits are left out (the ratio means nothing there)."""
    first = first_occurrence(tokens)  # (B, N)
    rep = repeated_bars(tokens)
    kl_first = kl_bits.gather(1, first)  # (B, N)
    ok = rep & (kl_first > floor)
    return (kl_bits[ok] / kl_first[ok]).cpu().numpy()


def rhythm(tokens: Tensor) -> Tensor:
    """The rhythm of each step: PAD, REST and HOLD stay, any onset becomes 3."""
    return torch.where(tokens >= N_SPECIAL, torch.full_like(tokens, 3), tokens)


def transfer_pairs(tokens: np.ndarray, meters: np.ndarray, song: np.ndarray,
                   limit: int = 512) -> list[tuple[int, int]]:
    """Deterministic (A, B) window pairs for context transfer: B repeats its bar 1 later in the
    window; A is the next window (cyclically) of the same meter from another song whose bar 1
    differs from B's. tokens (W, N, S), meters (W, N), song (W,)."""
    W = len(tokens)
    firsts = tokens[:, :1]  # (W, 1, S)
    repeats_first = (tokens[:, 1:] == firsts).all(-1).any(-1)  # (W,)
    pairs = []
    for b in np.flatnonzero(repeats_first):
        for step in range(1, W):
            a = (b + step) % W
            if (meters[a, 0] == meters[b, 0] and song[a] != song[b]
                    and not (tokens[a, 0] == tokens[b, 0]).all()
                    and (tokens[a, 0] != PAD).any()):
                pairs.append((int(a), int(b)))
                break
        if len(pairs) >= limit:
            break
    return pairs


@torch.no_grad()
def transfer_outputs(model, tokens_a: Tensor, tokens_b: Tensor, meters: Tensor,  # noqa: ANN001
                     located: bool = True) -> dict[str, Tensor]:
    """One batch of transfers decoded as `TrainedModel.transfer` decodes them: B's latents with
    bar 1 taken from A, no lead-in read from A's latent, B's bar layout decoded freely, and
    (`located`) each copy's edits located from B's own decoding; located=False leaves them to
    the edit chances read from the latents. tokens_a, tokens_b (B, N, S) of one meter each row;
    meters (B, N) of B. Returns {"z": (B, N, Z), "own": B decoded (B, N, S), "out": (B, N, S)}."""
    window = model.config.trained_bars  # longer windows are read as the model was trained
    mu_a, _ = model.encode_windowed(tokens_a, meters, window)
    mu_b, _ = model.encode_windowed(tokens_b, meters, window)
    z = mu_b.clone()
    z[:, 0] = mu_a[:, 0]
    none_outside = torch.zeros_like(tokens_b, dtype=torch.bool)  # B's layout, decoded freely
    own = model.free_run(mu_b, meters, window=window, outside=none_outside)  # (B, N, S)
    if located:
        out = model.transfer_run(z, own, meters, window=window, outside=none_outside,
                                 mine=(z == mu_b).all(-1))
    else:
        out = model.free_run(z, meters, window=window, outside=none_outside)
    return {"z": z, "own": own, "out": out}


def transfer_counts(model, tokens_a: Tensor, tokens_b: Tensor, meters: Tensor  # noqa: ANN001
                    ) -> dict[str, float]:
    """Counts for one batch of transfers (`transfer_outputs`, as tvae decodes them).
    tokens_a, tokens_b (B, N, S) of one meter each row; meters (B, N) of B."""
    return outcome_counts(tokens_b, transfer_outputs(model, tokens_a, tokens_b, meters)["out"])


def outcome_counts(tokens_b: Tensor, out: Tensor) -> dict[str, float]:
    """What a batch of transfers made of B (B, N, S): its repeats of bar 1 that follow the new
    bar 1 (overall and by distance), its other bars that became copies of it (spurious) or kept
    their rhythm, and its edited repeats of bar 1 that became the new bar 1 with B's change.
    out (B, N, S) the transfers' outputs."""
    real = (tokens_b != PAD).any(-1)[:, 1:]  # (B, N-1)
    rep = (tokens_b[:, 1:] == tokens_b[:, :1]).all(-1) & real  # B's repeats of its bar 1
    other = ~rep & real
    changed = ~(out[:, 0] == tokens_b[:, 0]).all(-1)  # (B,) the transfer changed bar 1
    copies = (out[:, 1:] == out[:, :1]).all(-1)  # (B, N-1) output bar equals output bar 1
    kept = (rhythm(out[:, 1:]) == rhythm(tokens_b[:, 1:])).all(-1)
    counted = rep & changed[:, None]
    counts = {
        "follow": float((copies & counted).sum()), "follow_n": float(counted.sum()),
        "spurious": float((copies & other).sum()), "other_n": float(other.sum()),
        "kept": float((kept & other).sum()), "changed": float(changed.sum()),
        "cases": float(len(tokens_b)),
    }
    later = torch.arange(1, tokens_b.shape[1], device=tokens_b.device)  # bars after bar 1
    for lo, hi in DISTANCE_BUCKETS:  # B's repeats of bar 1 by how many bars later they come
        at = counted & (later >= lo) & (later <= hi)
        name = bucket_name(lo, hi)
        counts[f"follow_{name}"] = float((copies & at).sum())
        counts[f"follow_n_{name}"] = float(at.sum())
    counts.update(edit_follow_counts(tokens_b, out, changed))
    return counts


def edited_repeats_of(tokens_b: Tensor, out: Tensor, first: int = 0
                      ) -> tuple[Tensor, Tensor, Tensor]:
    """B's edited repeats of its bar `first` and what a transfer of that bar made of them.
    Returns (B, N) bool: bar j comes later, differs from bar `first` in 1..NEAR_EDITS steps (PAD
    in the same places) and has no identical earlier bar; (B, N) bool: the output's bar j is
    the output's bar `first` with B's change, that is equal to it where B's bar j equals B's
    bar `first`, and equal to B's bar j at the changed steps; (B, N) how many steps changed.
    tokens_b, out (B, N, S)."""
    src_b, src_out = tokens_b[:, first : first + 1], out[:, first : first + 1]  # (B, 1, S)
    same = (tokens_b == src_b) | (tokens_b == PAD)  # (B, N, S) unedited steps
    edits = (~same).sum(-1)  # (B, N)
    layout = ((tokens_b == PAD) == (src_b == PAD)).all(-1)
    later = torch.arange(tokens_b.shape[1], device=tokens_b.device) > first  # (N,)
    edited = (edits >= 1) & (edits <= NEAR_EDITS) & layout & near_repeats(tokens_b) & later
    follows = torch.where(same, out == src_out, out == tokens_b).all(-1)  # (B, N)
    return edited, follows, edits


def edit_follow_counts(tokens_b: Tensor, out: Tensor, changed: Tensor) -> dict[str, float]:
    """B's edited repeats of its bar 1 (`edited_repeats_of`) after a transfer that changed bar 1
    (changed (B,)): how many, and how many of them are the output's bar 1 with B's edit.
    tokens_b, out (B, N, S)."""
    edited, follows, _ = edited_repeats_of(tokens_b, out)
    edited &= changed[:, None]
    return {"edit_follow": float((follows & edited).sum()), "edit_follow_n": float(edited.sum())}
