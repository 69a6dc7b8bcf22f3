"""Musical metrics of melodies, computed by muspy, and how far two sets of melodies are apart.

Each metric is muspy's, on the melody converted by `tvae.convert.melody_to_muspy` with its
downbeats aligned to the bars (so muspy's beat and measure grid is tvae's):

- pitch_range: highest minus lowest pitch, in semitones.
- pitch_class_entropy: Shannon entropy (bits) of the histogram of the 12 pitch classes.
- scale_consistency: the largest share of notes inside one major or minor scale.
- groove_consistency: 1 minus the mean share of steps whose onset/no-onset differs between
  consecutive measures. muspy counts end // measure + 1 measures, so a melody that ends on a
  barline gets one more, empty, measure (a 2-bar scale of quarter notes scores 0.875, not 1).
- empty_beat_rate: the share of beats in which no note sounds; muspy counts end // beat + 1
  beats and lets a note take every beat from its start to its end, both included.

These quirks are muspy's and apply to every melody alike, so data, reconstructions and samples
stay comparable; they are kept so that the numbers match muspy's published definitions.
A metric that is undefined for a melody (no notes; groove consistency of one bar) is NaN and left
out of summaries. `wasserstein_1d` compares two sets metric by metric: the area between their
empirical CDFs, in the metric's own unit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from tvae.convert import melody_to_muspy
from tvae.melody import Melody, meter_steps

METRICS = ("pitch_range", "pitch_class_entropy", "scale_consistency", "groove_consistency",
           "empty_beat_rate")


def melody_metrics(melody: Melody) -> dict[str, float]:
    """The five metrics of one melody; NaN where undefined."""
    import muspy

    if not melody.notes:
        return dict.fromkeys(METRICS, math.nan)
    music = melody_to_muspy(melody, align_downbeats=True)
    groove = (muspy.groove_consistency(music, meter_steps(melody.meter))
              if melody.n_bars > 1 else math.nan)
    return {
        "pitch_range": float(muspy.pitch_range(music)),
        "pitch_class_entropy": float(muspy.pitch_class_entropy(music)),
        "scale_consistency": float(muspy.scale_consistency(music)),
        "groove_consistency": float(groove),
        "empty_beat_rate": float(muspy.empty_beat_rate(music)),
    }


def wasserstein_1d(a: Sequence[float], b: Sequence[float]) -> float:
    """W1 between the empirical distributions of samples a and b: the integral over x of
    |F_a(x) - F_b(x)|, the F being their step CDFs. NaN if either is empty."""
    a, b = np.sort(np.asarray(a, float)), np.sort(np.asarray(b, float))
    if not len(a) or not len(b):
        return math.nan
    xs = np.sort(np.concatenate([a, b]))  # every step of either CDF
    fa = np.searchsorted(a, xs[:-1], side="right") / len(a)  # F_a on each interval
    fb = np.searchsorted(b, xs[:-1], side="right") / len(b)
    return float(np.sum(np.abs(fa - fb) * np.diff(xs)))


def collect(melodies: Sequence[Melody]) -> dict[str, list[float]]:
    """Each metric's defined values over the melodies."""
    values: dict[str, list[float]] = {m: [] for m in METRICS}
    for melody in melodies:
        for key, value in melody_metrics(melody).items():
            if not math.isnan(value):
                values[key].append(value)
    return values


def _finite_or_none(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 6)


def summarize(values: dict[str, list[float]], reference: dict[str, list[float]] | None = None
              ) -> dict[str, dict[str, Any]]:
    """Per metric: mean, std and count of `values`; with `reference`, also W1 to it and W1
    divided by the reference's std (`w1_scaled`). Undefined numbers are None."""
    out: dict[str, dict[str, Any]] = {}
    for key in METRICS:
        v = np.asarray(values.get(key, []), float)
        row: dict[str, Any] = {"mean": _finite_or_none(float(v.mean()) if len(v) else math.nan),
                               "std": _finite_or_none(float(v.std()) if len(v) else math.nan),
                               "n": len(v)}
        if reference is not None:
            ref = np.asarray(reference.get(key, []), float)
            w1 = wasserstein_1d(v, ref)
            scale = float(ref.std()) if len(ref) else math.nan
            row["w1"] = _finite_or_none(w1)
            row["w1_scaled"] = _finite_or_none(w1 / scale if scale > 0 else math.nan)
        out[key] = row
    return out


def format_table(columns: dict[str, dict[str, dict[str, Any]]]) -> str:
    """A text table: one row per metric, one column per summarized set (mean ± std), plus the
    W1 to the reference where a set has one."""
    def cell(row: dict[str, Any]) -> str:
        if row["mean"] is None:
            return "-"
        text = f"{row['mean']:.3f} ± {row['std']:.3f}"
        return text + (f" (W1 {row['w1']:.3f})" if row.get("w1") is not None else "")

    names = list(columns)
    cells = [[cell(columns[n][m]) for n in names] for m in METRICS]
    widths = [max(len(n), *(len(r[i]) for r in cells)) for i, n in enumerate(names)]
    head = " ".join(["metric".ljust(20)] + [n.ljust(w) for n, w in zip(names, widths, strict=True)])
    lines = [head]
    for m, row in zip(METRICS, cells, strict=True):
        lines.append(" ".join([m.ljust(20)] + [c.ljust(w) for c, w in zip(row, widths,
                                                                            strict=True)]))
    return "\n".join(line.rstrip() for line in lines)
