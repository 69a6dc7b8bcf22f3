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
from tvae.model.pointer import same_bars


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
def transfer_counts(model, tokens_a: Tensor, tokens_b: Tensor, meters: Tensor  # noqa: ANN001
                    ) -> dict[str, float]:
    """Counts for one batch of transfers: B's latents with bar 1 taken from A, decoded freely.
    tokens_a, tokens_b (B, N, S) of one meter each row; meters (B, N) of B."""
    mu_a, _ = model.encode(tokens_a, meters)
    mu_b, _ = model.encode(tokens_b, meters)
    z = mu_b.clone()
    z[:, 0] = mu_a[:, 0]
    out = model.free_run(z, meters)  # (B, N, S)
    real = (tokens_b != PAD).any(-1)[:, 1:]  # (B, N-1)
    rep = (tokens_b[:, 1:] == tokens_b[:, :1]).all(-1) & real  # B's repeats of its bar 1
    other = ~rep & real
    changed = ~(out[:, 0] == tokens_b[:, 0]).all(-1)  # (B,) the transfer changed bar 1
    copies = (out[:, 1:] == out[:, :1]).all(-1)  # (B, N-1) output bar equals output bar 1
    kept = (rhythm(out[:, 1:]) == rhythm(tokens_b[:, 1:])).all(-1)
    counted = rep & changed[:, None]
    return {
        "follow": float((copies & counted).sum()), "follow_n": float(counted.sum()),
        "spurious": float((copies & other).sum()), "other_n": float(other.sum()),
        "kept": float((kept & other).sum()), "changed": float(changed.sum()),
        "cases": float(len(tokens_b)),
    }
