"""Do samples sound like songs? Statistics of a set of melodies, compared with data.

Per melody (its first L bars):

- pitch_range (muspy): highest minus lowest pitch, in semitones;
- distinct_pitches (muspy's n_pitches_used);
- pitch_class_entropy and scale_consistency (muspy, as in tvae.eval.music);
- repeat_share: the share of bars 2..L identical to an earlier bar of the melody;
- phrase_repeat: 1 if at least 2 of bars 5-8 repeat bars 1-4 in place (bar k + 4 identical to
  bar k), else 0: the opening phrase comes back; undefined below 8 bars.

`form_table` prints samples against data, metric by metric, with their ratio. `reference_stats`
builds the data column from a data set's songs: the songs of one meter with at least L bars,
cut to L bars.

Shape legend: N bars, S steps per bar.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from tvae.config import GridConfig
from tvae.melody import Melody, melody_to_bars

FORM_METRICS = ("pitch_range", "distinct_pitches", "pitch_class_entropy", "scale_consistency",
                "repeat_share", "phrase_repeat")
PHRASE = 4  # bars per phrase of `phrase_repeat`: bars 5-8 against bars 1-4


def repeat_share(tokens: np.ndarray) -> float:
    """Share of bars 2..N (tokens (N, S)) identical to an earlier bar; NaN for one bar."""
    bars = [t.tobytes() for t in np.asarray(tokens)]
    if len(bars) < 2:
        return math.nan
    seen, repeats = {bars[0]}, 0
    for bar in bars[1:]:
        repeats += bar in seen
        seen.add(bar)
    return repeats / (len(bars) - 1)


def phrase_repeat(tokens: np.ndarray) -> float:
    """1.0 if at least 2 of bars 5-8 repeat bars 1-4 in place (bar k + 4 = bar k; tokens
    (N, S)), else 0.0; NaN below 8 bars."""
    tokens = np.asarray(tokens)
    if len(tokens) < 2 * PHRASE:
        return math.nan
    same = (tokens[PHRASE : 2 * PHRASE] == tokens[:PHRASE]).all(-1)  # (PHRASE,) bar k+4 = bar k
    return float(same.sum() >= 2)


def form_metrics(melody: Melody, grid: GridConfig, bars: int = 0) -> dict[str, float]:
    """The FORM_METRICS of a melody's first `bars` bars (0: all); NaN where undefined."""
    import muspy

    from tvae.convert import melody_to_muspy
    from tvae.melody import bars_to_melody

    grid_bars = melody_to_bars(melody, grid)
    if bars and len(grid_bars.tokens) > bars:
        grid_bars.tokens = grid_bars.tokens[:bars]
        melody = bars_to_melody(grid_bars, grid)
    tokens = grid_bars.tokens  # (N, S)
    out = dict.fromkeys(FORM_METRICS, math.nan)
    out["repeat_share"], out["phrase_repeat"] = repeat_share(tokens), phrase_repeat(tokens)
    if not melody.notes:
        return out
    music = melody_to_muspy(melody, align_downbeats=True)
    out.update(pitch_range=float(muspy.pitch_range(music)),
               distinct_pitches=float(muspy.n_pitches_used(music)),
               pitch_class_entropy=float(muspy.pitch_class_entropy(music)),
               scale_consistency=float(muspy.scale_consistency(music)))
    return out


def mean_metrics(rows: Sequence[dict[str, float]]) -> dict[str, Any]:
    """Each metric's mean over the rows where it is defined (None where it never is), and
    `songs`, the number of rows."""
    out: dict[str, Any] = {"songs": len(rows)}
    for key in FORM_METRICS:
        values = [r[key] for r in rows if not math.isnan(r[key])]
        out[key] = round(float(np.mean(values)), 6) if values else None
    return out


def reference_stats(songs: Any, grid: GridConfig, bars: int, meter_id: int,
                    split: str | None = "test", max_songs: int = 400, seed: int = 0
                    ) -> dict[str, Any] | None:
    """`mean_metrics` of up to `max_songs` songs (`SongArrays`) of one meter with at least
    `bars` bars, cut to `bars`, from `split` (all songs when the split has fewer than 20 of
    them); None when the data has fewer than 20 such songs."""
    from tvae.melody import bars_to_melody

    long = (songs.lengths >= bars) & (songs.meters == meter_id)
    chosen = np.flatnonzero(long & (songs.splits == split)) if split else np.flatnonzero(long)
    if len(chosen) < 20:
        chosen = np.flatnonzero(long)
    if len(chosen) < 20:
        return None
    rng = np.random.default_rng(seed)
    if len(chosen) > max_songs:
        chosen = np.sort(rng.choice(chosen, max_songs, replace=False))
    rows = []
    for i in chosen:
        song = songs.song(int(i))
        song.tokens = song.tokens[:bars]
        rows.append(form_metrics(bars_to_melody(song, grid), grid))
    return mean_metrics(rows)


def form_table(samples: dict[str, Any], data: dict[str, Any] | None, data_name: str) -> str:
    """A text table: one row per metric, the samples' mean, the data's and their ratio."""
    head = f"{'metric':22}{'samples':>10}{data_name:>{max(12, len(data_name) + 2)}}{'ratio':>8}"
    lines = [head, f"{'songs':22}{samples['songs']:>10}"
             + (f"{data.get('songs', ''):>{max(12, len(data_name) + 2)}}" if data else "")]
    for key in FORM_METRICS:
        s = samples.get(key)
        d = data.get(key) if data else None
        ratio = f"{s / d:8.2f}" if s is not None and d else ""
        cell = "-" if d is None else f"{d:.3f}"
        lines.append(f"{key:22}{'-' if s is None else f'{s:.3f}':>10}"
                     f"{cell:>{max(12, len(data_name) + 2)}}{ratio}")
    return "\n".join(lines)

