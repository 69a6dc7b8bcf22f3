"""Evaluation on N-bar windows: teacher-forced and free-running accuracy, KL per bar, and the
paper's interpretability claim (bars that repeat an earlier bar should cost little KL).

Shape legend: B batch, N bars, S steps per bar.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tvae.config import PAD
from tvae.dataset import Windows
from tvae.model import TransformerVAE
from tvae.modules import mask_logits

LN2 = math.log(2.0)


def repeated_bars(tokens: Tensor) -> Tensor:
    """(B, N) bool: real bars identical to an earlier bar of the same window. tokens (B, N, S)."""
    N = tokens.shape[1]
    same = (tokens[:, :, None] == tokens[:, None, :]).all(-1)  # (B, N, N)
    earlier = torch.ones(N, N, dtype=torch.bool, device=tokens.device).tril(-1)
    return (same & earlier).any(-1) & (tokens != PAD).any(-1)


class _Totals:
    """Running sums of the evaluation counts (tensors; one host sync at the end)."""

    def __init__(self) -> None:
        self.v: dict[str, float] = {}

    def add(self, **values: Tensor | float) -> None:
        for key, value in values.items():
            self.v[key] = self.v.get(key, 0.0) + float(value)

    def ratio(self, a: str, b: str) -> float:
        return self.v.get(a, 0.0) / self.v[b] if self.v.get(b) else float("nan")


@torch.no_grad()
def evaluate_batch(model: TransformerVAE, tokens: Tensor, meters: Tensor, free: bool = True
                   ) -> dict[str, Tensor]:
    """Counts for one batch: tokens (B, N, S), meters (B, N), z = posterior mean."""
    mu, logvar = model.encode(tokens, meters)
    logits = model.decode_teacher_forced(mu, tokens, meters)  # (B, N, S, V)
    target = tokens != PAD
    real = target.any(-1)  # (B, N)
    ce = torch.nn.functional.cross_entropy(logits.flatten(0, 2).float(), tokens.flatten(),
                                           ignore_index=PAD, reduction="sum")
    kl_bars = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(-1) / LN2 * real  # (B, N) bits
    rep = repeated_bars(tokens)
    counts = {
        "steps": target.sum(), "bars": real.sum(), "recon": ce,
        "tf_correct": ((mask_logits(logits, meters).argmax(-1) == tokens) & target).sum(),
        "kl": kl_bars.sum(), "kl_rep": (kl_bars * rep).sum(), "n_rep": rep.sum(),
        "kl_new": (kl_bars * (real & ~rep)).sum(), "n_new": (real & ~rep).sum(),
    }
    if free:
        decoded = model.free_run(mu, meters)
        counts["free_correct"] = ((decoded == tokens) & target).sum()
    return counts


def evaluate_windows(model: TransformerVAE, windows: Windows, batch_size: int = 256,
                     max_windows: int = 0, free: bool = True, progress: bool = False
                     ) -> dict[str, Any]:
    """Metrics over (the first `max_windows` of) `windows`, with z = mu (no sampling)."""
    model.eval()
    device = next(model.parameters()).device
    n = len(windows) if max_windows <= 0 else min(max_windows, len(windows))
    totals = _Totals()
    starts = range(0, n, batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="evaluate", unit="batch", leave=False)
    for start in starts:
        tokens, meters = windows.batch(np.arange(start, min(start + batch_size, n)), None)
        counts = evaluate_batch(model, torch.as_tensor(tokens, device=device),
                                torch.as_tensor(meters, device=device), free)
        totals.add(**counts)
    result = {
        "tf_accuracy": totals.ratio("tf_correct", "steps"),
        "free_accuracy": totals.ratio("free_correct", "steps") if free else None,
        "kl_bits_per_bar": totals.ratio("kl", "bars"),
        "kl_bits_repeated": totals.ratio("kl_rep", "n_rep"),
        "kl_bits_new": totals.ratio("kl_new", "n_new"),
        "recon_nats_per_bar": totals.ratio("recon", "bars"),
        "repeated_bars": int(totals.v.get("n_rep", 0)),
        "windows": n,
        "bars": int(totals.v.get("bars", 0)),
        "steps": int(totals.v.get("steps", 0)),
    }
    return {k: (None if math.isnan(v) else round(v, 6)) if isinstance(v, float) else v
            for k, v in result.items()}


def evaluate_folder(midi_dir: str | Path, model_path: str | Path | None = None, bars: int = 8,
                    split: str | None = None, max_windows: int = 0, progress: bool = True
                    ) -> dict[str, Any]:
    """`tvae evaluate`: metrics of a checkpoint (default: the bundled model) on the non-overlapping
    `bars`-bar windows of a MIDI folder or prepared folder; its 'test' split when it has one."""
    from tvae.config import DataConfig
    from tvae.dataset import format_skipped
    from tvae.errors import TvaeError, TvaeWarning
    from tvae.inference import load_model
    from tvae.prepare import is_prepared, load_songs

    if bars < 1:
        raise TvaeError("--bars must be at least 1")
    trained = load_model(model_path)
    data = DataConfig(bars=bars, stride=bars, transpose=0)
    songs, skipped = load_songs(midi_dir, trained.grid, data, progress=progress)
    if skipped:  # the CLI prints it as `warning: DIR: skipped N files: ...` (counts by reason)
        warnings.warn(f"{midi_dir}: {format_skipped(skipped)}", TvaeWarning, stacklevel=2)
    if split is None:
        has_split = is_prepared(midi_dir) or (Path(midi_dir) / "manifest.csv").exists()
        split = "test" if has_split else None
    windows = Windows(songs, split, data, trained.grid)
    if len(windows) == 0:
        raise TvaeError(f"no {split or ''} windows to evaluate", midi_dir)
    result = evaluate_windows(trained.model, windows, max_windows=max_windows, progress=progress)
    return {"model": str(trained.path), "split": split or "all", **result,
            "skipped_files": sum(skipped.values())}


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
