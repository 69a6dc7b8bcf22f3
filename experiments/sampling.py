"""Experiment `sampling`: melodies sampled from the prior against the test set, with muspy.

For each test song (its first bars), one sample with the same meter and bar count is drawn
from the prior (z ~ N(0, I) per bar) under each sampling setting: temperatures, top-k, top-p.
Every melody becomes a `muspy.Music` and gets five muspy metrics; per metric the samples'
distribution is compared with the test set's by the 1-D Wasserstein distance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from experiments.common import (
    Context,
    finish,
    fmt,
    load_songs,
    mean_std,
    plt,
    save_figure,
    settings,
    table,
    train_run,
)
from tvae.config import GridConfig
from tvae.data.dataset import SongArrays
from tvae.errors import TvaeError
from tvae.eval.music import METRICS, collect, wasserstein_1d
from tvae.inference import TrainedModel, load_model
from tvae.melody import Bars, Melody, bars_to_melody

TITLE = "Sampling: the prior's melodies against the test set"
QUESTION = ("How close are melodies sampled from the prior (z ~ N(0, I) for every bar, decoded "
            "free-running with a temperature, top-k or top-p) to the test set's melodies, "
            "measured by muspy's pitch range, pitch-class entropy, scale consistency, groove "
            "consistency and empty-beat rate?")
SONGS = {True: 4, False: 400}  # test songs (and samples per setting): quick, full
BARS = {True: 4, False: 8}  # bars of each excerpt and sample


@dataclass(frozen=True)
class Setting:
    label: str
    temperature: float  # 0: greedy
    top_k: int = 0
    top_p: float = 1.0


SETTINGS = {
    True: [Setting("T=0.5", 0.5), Setting("T=1, top-p 0.9", 1.0, 0, 0.9)],
    False: [Setting("greedy", 0.0), Setting("T=0.5", 0.5), Setting("T=0.8", 0.8),
            Setting("T=1", 1.0), Setting("T=1, top-p 0.9", 1.0, 0, 0.9),
            Setting("T=1, top-k 8", 1.0, 8), Setting("T=1.2", 1.2)],
}


def excerpts_of(songs: SongArrays, split: str, n: int, bars: int) -> list[Melody]:
    """The first `bars` bars of up to `n` songs of `split` (a seeded random choice)."""
    chosen = np.flatnonzero(songs.splits == split)
    chosen = np.random.default_rng(0).permutation(chosen)[:n]
    excerpts = []
    for i in chosen:
        song = songs.song(int(i))
        part = Bars(song.tokens[:bars], song.meter, song.qpm, song.pickup, song.title)
        excerpts.append(bars_to_melody(part, GridConfig()))
    return excerpts


def _model(ctx: Context, songs: SongArrays) -> tuple[TrainedModel, str]:
    if ctx.model is not None or not ctx.quick:
        trained = load_model(ctx.model)
        path = trained.path.resolve()
        root = Path.cwd().resolve()
        return trained, str(path.relative_to(root) if path.is_relative_to(root) else path)
    trained, info = train_run(ctx, songs, "tiny", ctx.scale.model, ctx.train_config(0, 0.0))
    return trained, info["run"]


def _stats(values: list[float], reference: list[float] | None) -> dict[str, Any]:
    mean, std = mean_std(values)
    row: dict[str, Any] = {"mean": mean, "std": std, "n": len(values)}
    if reference is not None:
        w1 = wasserstein_1d(np.array(values), np.array(reference))
        ref_std = mean_std(reference)[1]
        row["w1"] = None if math.isnan(w1) else w1
        row["w1_scaled"] = w1 / ref_std if ref_std and not math.isnan(w1) else None
    return row


def run(ctx: Context) -> dict[str, Any]:
    songs = load_songs(ctx)
    trained, model_name = _model(ctx, songs)
    excerpts = excerpts_of(songs, ctx.split, SONGS[ctx.quick], BARS[ctx.quick])
    if not excerpts:
        raise TvaeError(f"the corpus has no '{ctx.split}' songs (--split)", ctx.corpus)
    test = collect(excerpts)
    sources: dict[str, Any] = {"test": {k: _stats(v, None) for k, v in test.items()}}
    sample_values = {}
    for s in SETTINGS[ctx.quick]:
        ctx.log(f"sampling {len(excerpts)} melodies with {s.label}")
        samples = [trained.sample(n_bars=excerpt.n_bars, temperature=s.temperature, seed=k,
                                  meter=excerpt.meter, top_k=s.top_k, top_p=s.top_p)
                   for k, excerpt in enumerate(excerpts)]
        sample_values[s.label] = collect(samples)
        sources[s.label] = {k: _stats(v, test[k]) for k, v in sample_values[s.label].items()}
        sources[s.label]["empty"] = sum(not m.notes for m in samples)
    result = {"settings": settings(ctx, None, model=model_name, songs=len(excerpts),
                                   bars=BARS[ctx.quick],
                                   sampling=[vars(s) for s in SETTINGS[ctx.quick]]),
              "sources": sources, "figures": [_plot(ctx, test, sample_values)]}
    return finish(ctx, result, TITLE, QUESTION, render)


def _plot(ctx: Context, test: dict[str, list[float]],
          samples: dict[str, dict[str, list[float]]]) -> str:
    fig, axes = plt.subplots(1, len(METRICS), figsize=(3.2 * len(METRICS), 4))
    labels = ["test", *samples]
    for ax, metric in zip(axes, METRICS, strict=True):
        data = [test[metric]] + [samples[label][metric] for label in samples]
        ax.boxplot([d if d else [math.nan] for d in data], showfliers=False)
        ax.set_xticks(range(1, len(labels) + 1), labels, rotation=60, fontsize=7)
        ax.set_title(metric.replace("_", " "), fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, ctx.figure("metrics"))


def render(result: dict[str, Any], figures: str) -> list[str]:
    s, sources = result["settings"], result["sources"]
    names = list(sources)
    lines = [f"Model: `{s['model']}`. {s['songs']} songs of the '{s['split']}' split, first "
             f"{s['bars']} bars each; one sample per song and setting, with the song's meter and "
             "bar count. Metrics undefined for a melody (no notes; groove consistency of one "
             "bar) are left out. W1: 1-D Wasserstein distance to the test distribution; "
             "scaled: divided by the test set's std.", ""]
    rows = [[m] + [f"{fmt(sources[n][m]['mean'])} ± {fmt(sources[n][m]['std'])}" for n in names]
            for m in METRICS]
    lines += table(["metric (mean ± std)", *names], rows)
    rows = [[m] + [f"{fmt(sources[n][m]['w1'])} ({fmt(sources[n][m]['w1_scaled'], 2)})"
                   for n in names[1:]] for m in METRICS]
    scaled = {n: [sources[n][m]["w1_scaled"] for m in METRICS
                  if sources[n][m]["w1_scaled"] is not None] for n in names[1:]}
    mean_scaled = {n: float(np.mean(v)) if v else None for n, v in scaled.items()}
    rows.append(["mean scaled W1"] + [fmt(mean_scaled[n], 2) for n in names[1:]])
    rows.append(["samples with no notes"] + [str(sources[n]["empty"]) for n in names[1:]])
    lines += table(["W1 to test (scaled)", *names[1:]], rows)
    ranked = sorted((v, n) for n, v in mean_scaled.items() if v is not None)
    if ranked:
        lines.append(f"Closest to the test set on average: {ranked[0][1]} (mean scaled W1 "
                     f"{ranked[0][0]:.2f}); farthest: {ranked[-1][1]} ({ranked[-1][0]:.2f}).")
    return lines + ["", f"![metric distributions]({figures}{result['figures'][0]})", ""]
