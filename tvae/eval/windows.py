"""Evaluation on N-bar windows: teacher-forced and free-running accuracy, KL per bar, and the
paper's interpretability claim (bars that repeat an earlier bar should cost little KL).

Shape legend: B batch, N bars, S steps per bar.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tvae.config import PAD
from tvae.data.windows import Windows
from tvae.eval.structure import (
    DISTANCE_BUCKETS,
    NEAR_EDITS,
    bucket_name,
    edit_marks,
    near_repeats,
    nearest_offset,
    paired_ratios,
    repeated_bars,
    transfer_counts,
    transfer_pairs,
)
from tvae.model.forward import LN2, kl_per_bar
from tvae.model.lead_in import lead_accuracy_counts
from tvae.model.pointer import choose, copy_share, nearest_source, same_bars
from tvae.model.prior import kl_bits_against
from tvae.model.vae import TransformerVAE


class _Totals:
    """Running sums of the evaluation counts, and lists of per-bar ratios."""

    def __init__(self) -> None:
        self.v: dict[str, float] = {}
        self.ratios: list[np.ndarray] = []

    def add(self, **values: Tensor | float) -> None:
        for key, value in values.items():
            self.v[key] = self.v.get(key, 0.0) + float(value)

    def ratio(self, a: str, b: str) -> float:
        return self.v.get(a, 0.0) / self.v[b] if self.v.get(b) else float("nan")


@torch.no_grad()
def evaluate_batch(model: TransformerVAE, tokens: Tensor, meters: Tensor, free: bool = True
                   ) -> tuple[dict[str, Tensor], np.ndarray]:
    """Counts for one batch: tokens (B, N, S), meters (B, N), z = posterior mean. Also the
    paired KL ratios of its repeated bars."""
    window = model.config.trained_bars  # longer windows are read as the model was trained
    mu, logvar = model.encode_windowed(tokens, meters, window)
    log_probs, log_lik = model.decode_teacher_forced_windowed(mu, tokens, meters, window)
    target = tokens != PAD
    real = target.any(-1)  # (B, N)
    kl_bits = kl_per_bar(mu, logvar) / LN2 * real  # (B, N)
    rep = repeated_bars(tokens)
    later = torch.ones_like(real)
    later[:, 0] = False  # bars 2..N of the window
    new = real & ~rep & later
    counts = {
        "steps": target.sum(), "bars": real.sum(), "recon": -(log_lik * real).sum(),
        "tf_correct": ((log_probs.argmax(-1) == tokens) & target).sum(),
        "kl": kl_bits.sum(), "kl_rep": (kl_bits * rep).sum(), "n_rep": rep.sum(),
        "kl_new": (kl_bits * new).sum(), "n_new": new.sum(),
    }
    near = near_repeats(tokens)  # (B, N) edited repeats
    counts.update(kl_near=(kl_bits * near).sum(), n_near=near.sum())
    log_pi, log_eps = model.pointer_weights(mu, real)
    if log_eps is not None and log_eps.shape[-1] == tokens.shape[-1]:  # per-step edit chances
        counts.update(edit_marks(log_eps, tokens, near))
    correct_copy = torch.zeros_like(real)
    if log_pi is not None:
        share = copy_share(log_pi)  # (B, N)
        counts.update(copy_rep=(share * rep).sum(), copy_new=(share * new).sum())
        choice = choose(log_pi)  # (B, N) what the decoder does: 0 generate, 1 + j copy bar j
        source = same_bars(tokens).gather(2, (choice - 1).clamp(min=0)[..., None])[..., 0]
        correct_copy = (choice > 0) & source  # (B, N) copies an identical bar
        counts.update(near_copied=((choice > 0) & near).sum())
    if getattr(model, "lead", None) is not None:  # the lead-in head: bar 0's lead-in read right
        right, seqs = lead_accuracy_counts(model.lead(mu[:, 0]), tokens, meters)
        counts.update(lead_right=right, lead_n=seqs)
    exact = torch.zeros_like(real)
    if free:
        decoded = model.free_run(mu, meters, window=window)
        counts["free_correct"] = ((decoded == tokens) & target).sum()
        known = decoded  # decoded again with the steps outside the melody (pickups) given
        if bool(((decoded != PAD) & ~target).any()):
            known = model.free_run(mu, meters, window=window, outside=~target)
        counts["free_known_correct"] = ((known == tokens) & target).sum()
        exact = ((decoded == tokens) | ~target).all(-1)  # (B, N) bar decoded exactly
        _, same = nearest_source(tokens, tokens.shape[1] - 1, NEAR_EDITS)  # (B, N, S)
        change = target & ~same  # a near-repeat's steps that differ from its nearest source
        kept = ((decoded == tokens) | ~change).all(-1)  # (B, N) the change decoded as it is
        counts.update(near_exact=(exact & near).sum(), near_change_kept=(kept & near).sum())
    if model.prior is not None:  # the KL against the learned prior (a seeded estimate)
        gen = torch.Generator(device=tokens.device).manual_seed(0)
        learned = kl_bits_against(model.prior, mu, logvar, meters, real, window, gen) * real
        counts.update(kl_learned=learned.sum(), kl_learned_rep=(learned * rep).sum(),
                      kl_learned_new=(learned * new).sum(), kl_learned_near=(learned * near).sum())
    offset = nearest_offset(tokens)  # (B, N)
    for lo, hi in DISTANCE_BUCKETS:
        at = rep & (offset >= lo) & (offset <= hi)
        name = bucket_name(lo, hi)
        counts.update({f"n_{name}": at.sum(), f"copy_ok_{name}": (correct_copy & at).sum(),
                       f"exact_{name}": (exact & at).sum(), f"kl_{name}": (kl_bits * at).sum()})
    return counts, paired_ratios(kl_bits, tokens)


def by_distance(totals: _Totals, free: bool) -> dict[str, dict[str, Any]]:
    """Per bucket of how far back a repeat's nearest identical bar lies: how many repeats, the
    share the decoder copies from an identical bar, the share decoded exactly, their mean KL
    bits, and the share of B's repeats of bar 1 that many bars later that follow a transfer."""
    out = {}
    for lo, hi in DISTANCE_BUCKETS:
        name = bucket_name(lo, hi)
        out[name] = {
            "repeats": int(totals.v.get(f"n_{name}", 0)),
            "copy_accuracy": totals.ratio(f"copy_ok_{name}", f"n_{name}"),
            "exact": totals.ratio(f"exact_{name}", f"n_{name}") if free else None,
            "kl_bits": totals.ratio(f"kl_{name}", f"n_{name}"),
            "transfer_cases": int(totals.v.get(f"follow_n_{name}", 0)),
            "transfer_follow": totals.ratio(f"follow_{name}", f"follow_n_{name}"),
        }
    return out


def _batches(n: int, batch_size: int, progress: bool, desc: str) -> Any:
    starts = range(0, n, batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc=desc, unit="batch", leave=False)
    return starts


def _transfer_metrics(model: TransformerVAE, windows: Windows, n: int, batch_size: int,
                      max_transfers: int, progress: bool) -> dict[str, Any]:
    """Context transfer over deterministic same-meter pairs of the evaluated windows."""
    device = next(model.parameters()).device
    tokens, meters = windows.batch(np.arange(n), None)
    pairs = transfer_pairs(tokens, meters, windows.song[:n], max_transfers)
    totals = _Totals()
    for start in _batches(len(pairs), batch_size, progress, "transfer"):
        a, b = np.array(pairs[start : start + batch_size]).T
        counts = transfer_counts(model, torch.as_tensor(tokens[a], device=device),
                                 torch.as_tensor(tokens[b], device=device),
                                 torch.as_tensor(meters[b], device=device))
        totals.add(**counts)
    return {
        "transfer_cases": len(pairs),
        "transfer_follow_rate": totals.ratio("follow", "follow_n"),
        "transfer_spurious_rate": totals.ratio("spurious", "other_n"),
        "transfer_other_kept": totals.ratio("kept", "other_n"),
        "transfer_edit_cases": int(totals.v.get("edit_follow_n", 0)),
        "transfer_edit_follow_rate": totals.ratio("edit_follow", "edit_follow_n"),
        "_totals": totals,
    }


def evaluate_windows(model: TransformerVAE, windows: Windows, batch_size: int = 256,
                     max_windows: int = 0, free: bool = True, progress: bool = False,
                     transfer: bool = True, max_transfers: int = 512) -> dict[str, Any]:
    """Metrics over (the first `max_windows` of) `windows`, with z = mu (no sampling).
    With `transfer` (and `free`), also the context-transfer metrics of tvae.eval.structure."""
    model.eval()
    device = next(model.parameters()).device
    n = len(windows) if max_windows <= 0 else min(max_windows, len(windows))
    totals = _Totals()
    for start in _batches(n, batch_size, progress, "evaluate"):
        tokens, meters = windows.batch(np.arange(start, min(start + batch_size, n)), None,
                                       trim=True)
        counts, ratios = evaluate_batch(model, torch.as_tensor(tokens, device=device),
                                        torch.as_tensor(meters, device=device), free)
        totals.add(**counts)
        totals.ratios.append(ratios)
    ratios = np.concatenate(totals.ratios) if totals.ratios else np.zeros(0)
    recon = totals.ratio("recon", "bars")
    kl = totals.ratio("kl", "bars")
    result = {
        "tf_accuracy": totals.ratio("tf_correct", "steps"),
        "free_accuracy": totals.ratio("free_correct", "steps") if free else None,
        "free_accuracy_pickups_known": totals.ratio("free_known_correct", "steps") if free
        else None,
        "lead_in_accuracy": totals.ratio("lead_right", "lead_n") if "lead_n" in totals.v
        else None,
        "kl_bits_per_bar": kl,
        "kl_bits_repeated": totals.ratio("kl_rep", "n_rep"),
        "kl_bits_new": totals.ratio("kl_new", "n_new"),
        "kl_repeated_new_ratio": totals.ratio("kl_rep", "n_rep") / totals.ratio("kl_new", "n_new")
        if totals.v.get("kl_new") else float("nan"),
        "kl_paired_ratio": float(np.median(ratios)) if len(ratios) else float("nan"),
        "recon_nats_per_bar": recon,
        "recon_bits_per_bar": recon / LN2,
        "elbo_bits_per_bar": recon / LN2 + kl,
        **_learned_prior_metrics(totals, recon),
        "copy_share_repeated": totals.ratio("copy_rep", "n_rep") if "copy_rep" in totals.v
        else None,
        "copy_share_new": totals.ratio("copy_new", "n_new") if "copy_new" in totals.v else None,
        "repeated_bars": int(totals.v.get("n_rep", 0)),
        **_near_metrics(totals, free),
        "windows": n,
        "bars": int(totals.v.get("bars", 0)),
        "steps": int(totals.v.get("steps", 0)),
    }
    if free and transfer:
        result.update(_transfer_metrics(model, windows, n, batch_size, max_transfers, progress))
        totals.v.update(result.pop("_totals").v)
    result["by_distance"] = by_distance(totals, free)
    return _rounded(result)


def _learned_prior_metrics(totals: _Totals, recon: float) -> dict[str, Any]:
    """With a learned prior: the KL against it (all bars, repeated, new) and the ELBO with it."""
    if "kl_learned" not in totals.v:
        return {}
    kl = totals.ratio("kl_learned", "bars")
    return {"kl_bits_learned_prior": kl,
            "kl_bits_learned_prior_repeated": totals.ratio("kl_learned_rep", "n_rep"),
            "kl_bits_learned_prior_new": totals.ratio("kl_learned_new", "n_new"),
            "kl_bits_learned_prior_near": totals.ratio("kl_learned_near", "n_near"),
            "elbo_bits_learned_prior": recon / LN2 + kl}


def _near_metrics(totals: _Totals, free: bool) -> dict[str, Any]:
    """Near-repeats (1-2 steps changed from an earlier bar): count, KL against new bars, the
    share the decoder copies (with edits), the share decoded exactly, the share whose changed
    steps (those that differ from the nearest earlier bar) are decoded right, and (per-step edits)
    the shares of their changed and of their kept steps whose edit chance is above 0.5."""
    return {
        "near_repeated_bars": int(totals.v.get("n_near", 0)),
        "kl_bits_near_repeated": totals.ratio("kl_near", "n_near"),
        "kl_near_new_ratio": totals.ratio("kl_near", "n_near") / totals.ratio("kl_new", "n_new")
        if totals.v.get("kl_new") else float("nan"),
        "near_repeats_copied": totals.ratio("near_copied", "n_near") if "copy_rep" in totals.v
        else None,
        "near_repeats_exact": totals.ratio("near_exact", "n_near") if free else None,
        "near_changes_kept": totals.ratio("near_change_kept", "n_near") if free else None,
        "near_changed_steps_marked": totals.ratio("near_changed_marked", "near_changed")
        if "near_changed" in totals.v else None,
        "near_kept_steps_marked": totals.ratio("near_kept_marked", "near_kept")
        if "near_kept" in totals.v else None,
    }


def _rounded(value: Any) -> Any:
    """Floats rounded to 6 places and NaN as None, inside dicts too."""
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 6)
    return value


@torch.no_grad()
def predict_classes(model: TransformerVAE, windows: Windows, batch_size: int = 256) -> np.ndarray:
    """(W,) class the supervised head predicts for every window, from the posterior mean."""
    from tvae.errors import TvaeError

    if model.classifier is None:
        raise TvaeError("this model has no classifier head (it was trained without labels)")
    model.eval()
    device = next(model.parameters()).device
    predictions = [np.zeros(0, dtype=np.int64)]
    for start in range(0, len(windows), batch_size):
        tokens, meters = windows.batch(np.arange(start, min(start + batch_size, len(windows))))
        out = model(torch.as_tensor(tokens, device=device), torch.as_tensor(meters, device=device),
                    sample=False)
        predictions.append(out.class_logits.argmax(-1).cpu().numpy())  # (B,)
    return np.concatenate(predictions)


def classify_windows(model: TransformerVAE, windows: Windows, labels: np.ndarray
                     ) -> float | None:
    """Accuracy of the supervised head on the windows whose song has a label.

    `labels` (n_songs,) holds each song's class id in the model's label order, -1 for none;
    None if no window is labelled."""
    truth = np.asarray(labels)[windows.song]  # (W,)
    known = truth >= 0
    if not known.any():
        return None
    predicted = predict_classes(model, windows)
    return float((predicted[known] == truth[known]).mean())
