"""Training plots (PNG, matplotlib's Agg canvas): losses, accuracies, KL and schedules.

Figures are made directly on an Agg canvas, never through pyplot, so importing this module
changes no global matplotlib state (the backend of a user's notebook stays theirs).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tvae.config import TrainConfig
from tvae.files import read_regular_file, write_bytes_atomic
from tvae.training.metrics_log import MAX_METRICS_BYTES
from tvae.training.schedules import beta_at, tf_at

PANELS = {
    "losses.png": ("Loss (nats per bar)", [("train", "loss"), ("train", "recon"),
                                           ("valid", "loss"), ("valid", "recon")]),
    "accuracy.png": ("Accuracy (non-PAD steps)", [("train", "accuracy"),
                                                  ("valid", "tf_accuracy"),
                                                  ("valid", "free_accuracy")]),
    "kl.png": ("KL (bits per bar)", [("train", "kl_bits"), ("valid", "kl_bits"),
                                     ("valid", "kl_bits_repeated"), ("valid", "kl_bits_new")]),
    "schedules.png": ("Schedules", [("train", "beta"), ("train", "p_tf"), ("train", "lr_rel")]),
}


def read_metrics(path: str | Path) -> list[dict[str, str]]:
    raw = read_regular_file(path, MAX_METRICS_BYTES, "the metrics log")
    return list(csv.DictReader(io.StringIO(raw.decode("utf-8", "replace"), newline="")))


def _series(rows: list[dict[str, str]], split: str, key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for row in rows:
        if row.get("split") == split and row.get(key) not in (None, ""):
            xs.append(int(row["step"]))
            ys.append(float(row[key]))
    return xs, ys


def _figure() -> tuple[Figure, object]:
    """A 7 x 4 inch figure on its own Agg canvas, and its axes."""
    fig = Figure(figsize=(7, 4))
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def plot_metrics(metrics_csv: str | Path, out_dir: str | Path) -> list[Path]:
    """One PNG per panel from a run's metrics.csv; returns the files written."""
    rows = read_metrics(metrics_csv)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (title, series) in PANELS.items():
        fig, ax = _figure()
        for split, key in series:
            xs, ys = _series(rows, split, key)
            if xs:
                ax.plot(xs, ys, marker="o" if split == "valid" else None, markersize=3,
                        label=f"{split} {key}")
        ax.set_title(title)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=100)
        written.append(out_dir / name)
    return written


def plot_schedule(configs: dict[str, TrainConfig], total_steps: int, batches_per_epoch: int,
                  out: str | Path) -> Path:
    """Draw p_tf (solid) and beta (dashed) over training, one curve per named config."""
    fig, ax = _figure()
    steps = list(range(0, total_steps + 1, max(1, total_steps // 400)))
    for label, cfg in configs.items():
        line = ax.plot(steps, [tf_at(s, cfg, batches_per_epoch) for s in steps],
                       label=f"p_tf {label}")[0]
        if len(configs) == 1:
            ax.plot(steps, [beta_at(s, cfg) for s in steps], "--", color=line.get_color(),
                    label=f"beta {label}")
    ax.set_xlabel("training step")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    write_bytes_atomic(buffer.getvalue(), out)  # one-line errors, never a half-written file
    return Path(out)
