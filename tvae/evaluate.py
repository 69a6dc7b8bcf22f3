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
from tvae.model.pointer import copy_share
from tvae.model.vae import LN2, TransformerVAE, kl_per_bar
from tvae.structure import paired_ratios, repeated_bars, transfer_counts, transfer_pairs


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
    mu, logvar = model.encode(tokens, meters)
    log_probs, log_lik = model.decode_teacher_forced(mu, tokens, meters)  # (B, N, S, V), (B, N)
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
    log_pi = model.log_pointer(mu, real)
    if log_pi is not None:
        share = copy_share(log_pi)  # (B, N)
        counts.update(copy_rep=(share * rep).sum(), copy_new=(share * new).sum())
    if free:
        decoded = model.free_run(mu, meters)
        counts["free_correct"] = ((decoded == tokens) & target).sum()
    return counts, paired_ratios(kl_bits, tokens)


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
    }


def evaluate_windows(model: TransformerVAE, windows: Windows, batch_size: int = 256,
                     max_windows: int = 0, free: bool = True, progress: bool = False,
                     transfer: bool = True, max_transfers: int = 512) -> dict[str, Any]:
    """Metrics over (the first `max_windows` of) `windows`, with z = mu (no sampling).
    With `transfer` (and `free`), also the context-transfer metrics of tvae.structure."""
    model.eval()
    device = next(model.parameters()).device
    n = len(windows) if max_windows <= 0 else min(max_windows, len(windows))
    totals = _Totals()
    for start in _batches(n, batch_size, progress, "evaluate"):
        tokens, meters = windows.batch(np.arange(start, min(start + batch_size, n)), None)
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
        "kl_bits_per_bar": kl,
        "kl_bits_repeated": totals.ratio("kl_rep", "n_rep"),
        "kl_bits_new": totals.ratio("kl_new", "n_new"),
        "kl_repeated_new_ratio": totals.ratio("kl_rep", "n_rep") / totals.ratio("kl_new", "n_new")
        if totals.v.get("kl_new") else float("nan"),
        "kl_paired_ratio": float(np.median(ratios)) if len(ratios) else float("nan"),
        "recon_nats_per_bar": recon,
        "recon_bits_per_bar": recon / LN2,
        "elbo_bits_per_bar": recon / LN2 + kl,
        "copy_share_repeated": totals.ratio("copy_rep", "n_rep") if "copy_rep" in totals.v
        else None,
        "copy_share_new": totals.ratio("copy_new", "n_new") if "copy_new" in totals.v else None,
        "repeated_bars": int(totals.v.get("n_rep", 0)),
        "windows": n,
        "bars": int(totals.v.get("bars", 0)),
        "steps": int(totals.v.get("steps", 0)),
    }
    if free and transfer:
        result.update(_transfer_metrics(model, windows, n, batch_size, max_transfers, progress))
    return {k: (None if math.isnan(v) else round(v, 6)) if isinstance(v, float) else v
            for k, v in result.items()}


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
