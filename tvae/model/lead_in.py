"""A song's lead-in: the steps of its first bar before a pickup.

In the data those steps are PAD, outside the melody, and no step's loss covers them. Decoded
free-running without knowing them, the decoder fills them with notes, which later bars then read
and copy (the bundled model of commit dea496b decodes 0.935 of the folk test split's steps right
free-running, 0.945 when the lead-in is given: `python -m experiments.free_gap`). With `lead_in`,
the model reads the lead-in's length from the first bar's latent, as part of that bar's likelihood:

    log p(bar 0 | z_0, ...) = log p(L = lead steps | z_0) + sum over its steps of log p(x_s | ...)

and free-running decoding puts PAD on the L steps it reads, as the data has them. 71% of the
folk corpus's songs open with a pickup; no other bar of any of its songs has a lead-in, so only
the first bar of a sequence has one (a window that starts mid-song has L = 0).

The first bar's tokens show its lead-in, so its latent carries it without being trained to: a
head fitted afterwards on a trained model's frozen posterior means (`tvae.training.lead_fit`)
reads 96-99% right, while one trained with the VAE (`--lead-in`, off by default) made repeats
cost more in 12-minute runs (docs/experiments/lead_in/README.md).

Shape legend: B batch, N bars, S steps per bar.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tvae.config import PAD
from tvae.model.modules import valid_steps
from tvae.model.sampling import Sampler


def lead_steps(tokens: Tensor) -> Tensor:
    """(B,) how many steps of bar 0 lie before its first step inside the melody (tokens (B, N,
    S)): the leading PAD steps of a real bar; 0 for an all-PAD bar."""
    pads = (tokens[:, 0] == PAD).long().cumprod(-1).sum(-1)  # (B,)
    return torch.where(pads >= tokens.shape[-1], torch.zeros_like(pads), pads)


def mask_lead_logits(logits: Tensor, meters: Tensor) -> Tensor:
    """logits (B, S) over lead lengths 0..S-1 -> the same with -inf on lengths that leave bar 0
    (its meter meters (B, N)) no step: a lead-in is shorter than the bar."""
    valid = valid_steps(meters[:, :1], logits.shape[-1])[:, 0]  # (B, S) steps the meter uses
    return logits.float().masked_fill(~valid, float("-inf"))


def lead_log_lik(logits: Tensor, tokens: Tensor, meters: Tensor) -> Tensor:
    """(B, N) log p(lead-in length | z_0) on bar 0 of each sequence that has a real bar 0, 0
    elsewhere: what `lead_in` adds to the bars' log-likelihoods. logits (B, S) from z_0."""
    log_p = mask_lead_logits(logits, meters).log_softmax(-1)  # (B, S)
    picked = log_p.gather(-1, lead_steps(tokens)[:, None])[:, 0]  # (B,)
    real = (tokens[:, 0] != PAD).any(-1)  # (B,)
    out = torch.zeros(tokens.shape[:2], dtype=log_p.dtype, device=tokens.device)
    out[:, 0] = torch.where(real, picked, torch.zeros_like(picked))
    return out


def lead_outside(logits: Tensor, meters: Tensor, n_bars: int, sampler: Sampler) -> Tensor:
    """(B, N, S) bool: the steps a free-running decode puts PAD on, bar 0's first L steps with L
    chosen by `sampler` (the most likely length when greedy) from logits (B, S)."""
    B, S = logits.shape
    lead = sampler(mask_lead_logits(logits, meters))  # (B,)
    outside = torch.zeros((B, n_bars, S), dtype=torch.bool, device=logits.device)
    outside[:, 0] = torch.arange(S, device=logits.device) < lead[:, None]
    return outside


def lead_accuracy_counts(logits: Tensor, tokens: Tensor, meters: Tensor) -> tuple[Tensor, Tensor]:
    """(right, sequences): how many sequences with a real bar 0 have their lead-in length
    predicted exactly (the most likely length), and how many have a real bar 0."""
    real = (tokens[:, 0] != PAD).any(-1)  # (B,)
    right = mask_lead_logits(logits, meters).argmax(-1) == lead_steps(tokens)
    return (right & real).sum(), real.sum()
