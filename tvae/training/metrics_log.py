"""A run's `metrics.csv`: one row per logged training step or validation, appended as training
goes, and cut back to a checkpoint's step when a run resumes (so rows are never duplicated)."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path
from typing import Any

METRIC_FIELDS = ["step", "epoch", "split", "loss", "recon", "kl_bits", "accuracy", "tf_accuracy",
                 "free_accuracy", "kl_bits_repeated", "kl_bits_new", "class_accuracy", "beta",
                 "p_tf", "lr", "lr_rel", "skipped", "pointer_loss", "kl_paired_ratio",
                 "copy_share_repeated", "elbo_bits", "seconds"]


class MetricsLog:
    """Appends rows to `path` (a CSV with METRIC_FIELDS); `enabled=False` writes nothing (the
    non-zero ranks of a distributed run)."""

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path, self.enabled = path, enabled

    def append(self, rows: Iterable[dict[str, Any]], mode: str = "a") -> None:
        if not self.enabled:
            return
        new = mode == "w" or not self.path.exists()
        with open(self.path, mode, newline="") as handle:
            writer = csv.DictWriter(handle, METRIC_FIELDS, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerows(rows)

    def truncate(self, step: int) -> None:
        """Drop the rows logged after `step` (written after the checkpoint a run resumes from)."""
        if self.enabled and self.path.exists():
            with open(self.path, newline="") as handle:
                rows = [r for r in csv.DictReader(handle) if int(r["step"]) <= step]
            self.append(rows, mode="w")
