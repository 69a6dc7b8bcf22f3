"""The training objective, in one place: reconstruction, KL weighted by beta (with free bits),
the supervised head's loss and the copy pointer's auxiliary loss, from what the model returns.

Shape legend: B batch, N bars, S steps per bar, V vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from tvae.config import PAD
from tvae.model.forward import LN2, VAEOutput
from tvae.model.pointer import copy_target, keep_log, nearest_source


@dataclass
class Loss:
    """The total loss and its named parts (all scalars)."""

    loss: Tensor  # recon_weight * recon + beta * kl_penalty (+ class and pointer terms)
    recon: Tensor  # negative log-likelihood in nats per real bar (PAD steps ignored)
    kl: Tensor  # KL in nats per real bar
    correct: Tensor  # correctly predicted non-PAD steps (argmax, as decoded)
    n_steps: Tensor  # non-PAD steps
    class_loss: Tensor | None = None  # cross-entropy of the supervised head (labelled windows)
    class_logits: Tensor | None = None  # (B, C), for accuracy statistics
    pointer_loss: Tensor | None = None  # -log pointer weight on the true repeat, per repeat
    pointer_term: Tensor | float = 0.0  # pointer_weight * pointer_loss: its part of `loss`
    class_term: Tensor | float = 0.0  # class_weight * class_loss: its part of `loss`
    base: Tensor | float = 0.0  # recon_weight * recon + beta * KL penalty: the rest of `loss`
    pointer_count: Tensor | None = None  # bars with a pointer target (pointer_loss's divisor)
    edit_loss: Tensor | None = None  # per copied bar: the edit chances' cross-entropy (nats);
    # computed only with an edit weight
    edit_term: Tensor | float = 0.0  # edit_weight * edit_loss: its part of `loss`
    edit_count: Tensor | None = None  # copied bars taught their edits (edit_loss's divisor)


def pointer_nll(log_pi: Tensor, tokens: Tensor, max_edits: int = 0, cap: float = 1.0
                ) -> tuple[Tensor, Tensor]:
    """Summed -log(pointer weight on the bars that a bar repeats) over the bars that repeat
    one within the pointer's reach (exactly, or where none does, with at most `max_edits`
    steps changed: `copy_target`), and how many such bars there are. Weights above `cap` are
    not pushed further (the term is -log min(weight, cap)): the loss teaches the pointer where
    the sources are without making repeated bars spend bits on a certainty that the likelihood
    does not ask for."""
    N = tokens.shape[1]
    target = copy_target(tokens, N, max_edits)  # (B, N, N): bar j is an earlier copy of bar k
    reach = torch.isfinite(log_pi[..., 1:])  # offsets the pointer can express
    target = target & reach
    has = target.any(-1)  # (B, N)
    # a finite fill keeps the gradient of rows with no target at 0 rather than NaN
    on_target = log_pi[..., 1:].masked_fill(~target, -1e4).logsumexp(-1)  # (B, N)
    if cap < 1.0:
        on_target = on_target.clamp(max=math.log(cap))
    return torch.where(has, -on_target, torch.zeros_like(on_target)).sum(), has.sum()


def edit_nll(log_eps: Tensor, log_pi: Tensor, tokens: Tensor, max_edits: int = 0,
             cap: float = 1.0) -> tuple[Tensor, Tensor]:
    """Summed cross-entropy of the per-step edit chances (B, N, S) against the data's edits,
    over the bars that repeat an earlier one within the pointer's reach (exactly, or with at
    most `max_edits` steps changed: `nearest_source`), and how many such bars there are. A
    bar's steps that differ from its source are taught "edit" (-log min(eps, cap)), its other
    real steps "keep" (-log min(1 - eps, cap)); each group is averaged over the bar's steps in
    it, so a near-repeat's one or two changed steps weigh as much as its kept ones. Decoding
    (argmax) then reproduces the changed steps and keeps the others, without the latent paying
    for a certainty beyond `cap`. log_pi (B, N, 1 + N) gives the reach."""
    B, N, S = tokens.shape
    offset, same = nearest_source(tokens, N - 1, max_edits)  # (B, N), (B, N, S)
    source = (torch.arange(N, device=tokens.device) - offset).clamp(min=0)  # (B, N)
    reach = torch.isfinite(log_pi[..., 1:].gather(-1, source[..., None]).squeeze(-1))
    has = reach & (offset > 0)  # (B, N)
    real = tokens != PAD  # (B, N, S)
    edit = log_eps.float().expand(B, N, S)
    keep = keep_log(edit)
    if cap < 1.0:
        edit, keep = edit.clamp(max=math.log(cap)), keep.clamp(max=math.log(cap))
    per_bar = torch.zeros_like(edit[..., 0])  # (B, N)
    for steps, log_p in ((real & ~same, edit), (real & same, keep)):
        per_bar = per_bar - (log_p * steps).sum(-1) / steps.sum(-1).clamp(min=1)
    return torch.where(has, per_bar, torch.zeros_like(per_bar)).sum(), has.sum()


def repeat_weights(tokens: Tensor, log_pi: Tensor | None, max_edits: int, weight: float
                   ) -> Tensor:
    """(B, N) `weight` for the bars that repeat an earlier bar (exactly, or where none does with
    at most `max_edits` steps changed: `copy_target`) within the pointer's reach (log_pi (B, N,
    1 + N); any earlier bar of the window without a copy path), 1 for the others."""
    target = repeats_in_reach(tokens, log_pi, max_edits)  # (B, N, N)
    ones = torch.ones(tokens.shape[:2], device=tokens.device)
    return torch.where(target.any(-1), ones * weight, ones)


def repeats_in_reach(tokens: Tensor, log_pi: Tensor | None, max_edits: int) -> Tensor:
    """(B, N, N) bool: bar k repeats bar j (`copy_target`, with at most `max_edits` steps
    changed where k repeats no bar exactly) and the pointer can reach j from k (log_pi (B, N,
    1 + N); any earlier bar of the window without a copy path)."""
    target = copy_target(tokens, tokens.shape[1], max_edits)
    return target if log_pi is None else target & torch.isfinite(log_pi[..., 1:])


def source_weights(tokens: Tensor, log_pi: Tensor | None, max_edits: int, weight: float
                   ) -> Tensor:
    """(B, N) 1 + `weight` x the number of later bars that repeat bar j (exactly, or with at most
    `max_edits` steps changed: `copy_target`) within the pointer's reach, for the bars j that
    repeat no earlier bar (a phrase's first occurrence); 1 for the others. Decoded without
    teacher forcing, a first occurrence's errors recur in every copy of it: this weighs its
    reconstruction as often as it is heard."""
    target = repeats_in_reach(tokens, log_pi, max_edits)  # (B, N, N): k repeats j
    first = ~target.any(-1)  # (B, N) bars that repeat nothing earlier
    copies = (target & first[:, None, :]).sum(1)  # (B, N) later bars that repeat bar j
    return 1.0 + weight * copies.to(torch.float32)


def vae_objective(out: VAEOutput, tokens: Tensor, *, beta: float, free_bits: float = 0.0,
                  recon_weight: float = 1.0, labels: Tensor | None = None,
                  class_weight: float = 1.0, pointer_weight: float = 0.0,
                  pointer_edits: int = 0, pointer_cap: float = 1.0,
                  edit_weight: float = 0.0, repeat_beta: float = 1.0,
                  source_weight: float = 0.0) -> Loss:
    """The loss of one batch. tokens (B, N, S); labels (B,) with -1 for unlabelled windows.
    `repeat_beta` multiplies beta on the KL of repeated bars (`repeat_weights`); with
    `source_weight` > 0, a first occurrence's reconstruction term weighs 1 + source_weight x
    its later repeats (`source_weights`; `recon`, as reported, stays unweighted).
    Means are per real bar (per labelled window, per repeated bar) with no host sync."""
    bar_mask = (tokens != PAD).any(-1)  # (B, N)
    n_bars = bar_mask.sum().clamp(min=1)
    recon = -(out.log_lik * bar_mask).sum() / n_bars
    kl_bars = out.kl_bars  # (B, N) nats
    kl = kl_bars.sum() / n_bars
    penalty = kl_bars.clamp(min=free_bits * LN2) * bar_mask if free_bits > 0 else kl_bars
    if repeat_beta != 1.0:  # a repeat's KL weighs repeat_beta times more
        penalty = penalty * repeat_weights(tokens, out.log_pi, pointer_edits, repeat_beta)
    fit = recon
    if source_weight > 0:  # a phrase's first occurrence weighs as often as it is copied
        weights = source_weights(tokens, out.log_pi, pointer_edits, source_weight)
        fit = -(out.log_lik * bar_mask * weights).sum() / n_bars
    loss = recon_weight * fit + beta * penalty.sum() / n_bars
    target = tokens != PAD
    correct = ((out.log_probs.detach().argmax(-1) == tokens) & target).sum()
    result = Loss(loss, recon, kl, correct, target.sum(), class_logits=out.class_logits,
                  base=loss)
    if out.log_pi is not None:
        total, count = pointer_nll(out.log_pi, tokens, pointer_edits, pointer_cap)
        result.pointer_loss = total / count.clamp(min=1)
        result.pointer_count = count
        if pointer_weight > 0:
            result.pointer_term = pointer_weight * result.pointer_loss
            result.loss = result.loss + result.pointer_term
    if edit_weight > 0 and out.log_eps is not None and out.log_pi is not None:
        # only when weighted: finding every bar's source is not worth a step's time otherwise
        total, count = edit_nll(out.log_eps, out.log_pi, tokens, pointer_edits, pointer_cap)
        result.edit_loss = total / count.clamp(min=1)
        result.edit_count = count
        result.edit_term = edit_weight * result.edit_loss
        result.loss = result.loss + result.edit_term
    if out.class_logits is not None and labels is not None:
        ce = F.cross_entropy(out.class_logits.float(), labels, ignore_index=-1, reduction="sum")
        result.class_loss = ce / (labels >= 0).sum().clamp(min=1)
        result.class_term = class_weight * result.class_loss
        result.loss = result.loss + result.class_term
    return result
