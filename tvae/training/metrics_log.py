"""A run's `metrics.csv`: one row per logged training step or validation, appended as training
goes, and cut back to what a checkpoint covers when a run resumes, so that no row is ever
written twice whatever moment a run was killed at.

A failed append (a full disk) puts the file back as it was and is one TvaeError naming it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tvae.errors import TvaeError
from tvae.files import check_replaceable, read_regular_file, write_bytes_atomic

METRIC_FIELDS = ["step", "epoch", "split", "loss", "recon", "kl_bits", "accuracy", "tf_accuracy",
                 "free_accuracy", "kl_bits_repeated", "kl_bits_new", "class_accuracy", "beta",
                 "p_tf", "lr", "lr_rel", "skipped", "pointer_loss", "edit_loss", "kl_paired_ratio",
                 "copy_share_repeated", "elbo_bits", "seconds"]


def _csv_text(rows: Iterable[dict[str, Any]], header: bool,
              fields: list[str] | None = None) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fields or METRIC_FIELDS, extrasaction="ignore")
    if header:
        writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _whole_number(text: str | None) -> int | None:
    try:
        return int(text or "")
    except ValueError:
        return None


MAX_METRICS_BYTES = 2**30  # metrics.csv (about 300 bytes a row)


class MetricsLog:
    """Appends rows to `path` (a CSV with METRIC_FIELDS); `enabled=False` writes nothing (the
    non-zero ranks of a distributed run)."""

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path, self.enabled = path, enabled

    def append(self, rows: Iterable[dict[str, Any]]) -> None:
        """Append `rows` in one write; on failure the file is cut back to its old length."""
        if not self.enabled:
            return
        check_replaceable(self.path)  # appended to: a regular file, never a FIFO or device
        size = self.path.stat().st_size if self.path.exists() else 0
        # a log begun by an older version keeps its own columns
        data = _csv_text(rows, header=size == 0, fields=self._header() if size else None).encode()
        try:
            with open(self.path, "ab") as handle:
                handle.write(data)
                handle.flush()
        except OSError as exc:
            with contextlib.suppress(OSError):  # needs no space: the old rows stay as they were
                os.truncate(self.path, size)
            raise TvaeError(f"cannot write the metrics ({exc.strerror or exc})",
                            self.path) from None

    def _header(self) -> list[str] | None:
        """The columns of the existing log's header line (None if it has none)."""
        with open(self.path, encoding="utf-8", errors="replace") as handle:
            fields = next(csv.reader([handle.readline()]), None)
        return fields if fields and "step" in fields else None

    def read(self) -> list[dict[str, str]]:
        """The rows, checked: a TvaeError names the file and the first bad line. A last line
        without its newline (a write cut short by a kill) is not a row yet and is ignored."""
        raw = read_regular_file(self.path, MAX_METRICS_BYTES, "the metrics log")  # not a FIFO
        text = raw.decode("utf-8", "replace")
        if text and not text.endswith("\n"):
            text = text[: text.rfind("\n") + 1]
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if reader.fieldnames is None:
            return []
        if not {"step", "epoch", "split"} <= set(reader.fieldnames):
            raise TvaeError("not a metrics log: its header lacks step, epoch and split", self.path)
        rows = []
        for row in reader:
            if (_whole_number(row.get("step")) is None or _whole_number(row.get("epoch")) is None
                    or row.get("split") not in ("train", "valid") or None in row):
                raise TvaeError(f"line {reader.line_num} is not a metrics row", self.path)
            rows.append(row)
        return rows

    def truncate(self, step: int, epoch: int) -> None:
        """Keep the rows a checkpoint at (`step`, `epoch`) covers: those logged up to `step`,
        except a validation at `step` of an epoch the checkpoint had not finished (the run
        was killed between the validation and the checkpoint; it validates again)."""
        if not self.enabled or not self.path.exists():
            return
        kept = [r for r in self.read() if int(r["step"]) < step or int(r["step"]) == step and (
            r["split"] == "train" or int(r["epoch"]) < epoch)]
        write_bytes_atomic(_csv_text(kept, header=True).encode(), self.path)
