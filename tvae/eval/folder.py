"""`tvae evaluate`: a checkpoint scored on a MIDI folder or prepared folder (the windows'
metrics from tvae.eval.windows, transfer pairs, muspy's musical metrics), as one JSON-ready dict.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tvae.errors import TvaeError, TvaeWarning
from tvae.inference import UNKNOWN_WINDOW, TrainedModel, load_model
from tvae.melody import Bars, bars_to_melody


def evaluate_folder(midi_dir: str | Path, model_path: str | Path | None = None, bars: int = 0,
                    split: str | None = None, max_windows: int = 0, progress: bool = True,
                    metrics: int = 0, skipped_csv: str | Path | None = None,
                    device: str = "cpu") -> dict[str, Any]:
    """`tvae evaluate`: metrics of a checkpoint (default: the bundled model) on the non-overlapping
    `bars`-bar windows (0: the model's training window) of a MIDI folder or prepared folder;
    its 'test' split when it has one.
    `skipped_csv`: write there the files skipped and why (path, reason). `device`: where the
    model runs.

    With `metrics` > 0, also `music_metrics`: muspy's metrics of the first `bars` bars of up to
    that many songs (a seeded choice), of their free-running reconstructions and of as many
    greedy samples from the prior (same meter and length), each with its W1 to the data."""
    from tvae.config import DataConfig
    from tvae.data.dataset import format_skipped, load_songs
    from tvae.data.prepare import is_prepared
    from tvae.data.songs import write_skipped
    from tvae.data.windows import Windows
    from tvae.eval.windows import evaluate_windows

    if bars < 0:
        raise TvaeError("--bars must be at least 0 (0: the model's training window)")
    trained = load_model(model_path, device)
    bars = bars or trained.window or UNKNOWN_WINDOW
    data = DataConfig(bars=bars, stride=bars, transpose=0)
    songs, skipped = load_songs(midi_dir, trained.grid, data, progress=progress)
    if skipped_csv is not None:
        write_skipped(skipped_csv, skipped)
    if skipped:  # the CLI prints it as `warning: DIR: skipped N files: ...` (counts by reason)
        warnings.warn(f"{midi_dir}: {format_skipped(skipped)}", TvaeWarning, stacklevel=2)
    if split is None:
        has_split = is_prepared(midi_dir) or (Path(midi_dir) / "manifest.csv").exists()
        split = "test" if has_split else None
    windows = Windows(songs, split, data, trained.grid)
    if len(windows) == 0:
        raise TvaeError(f"no {split or ''} windows to evaluate", midi_dir)
    result = evaluate_windows(trained.model, windows, max_windows=max_windows, progress=progress)
    out = {"model": str(trained.path), "weights_sha256": trained.meta.get("weights_sha256"),
           "split": split or "all", **result,
           "skipped_files": sum(skipped.values())}
    if metrics > 0:
        chosen = np.unique(windows.song)
        chosen = np.random.default_rng(0).permutation(chosen)[:metrics]
        out["music_metrics"] = music_metrics_of(trained, [songs.song(int(i)) for i in chosen],
                                                bars)
    return out


def music_metrics_of(trained: TrainedModel, songs: Sequence[Bars], bars: int
                     ) -> dict[str, dict[str, dict[str, Any]]]:
    """muspy's metrics (`tvae.eval.music`) of each song's first `bars` bars ("data"), of
    their free-running reconstructions and of greedy prior samples of the same meter and
    length ("samples"), the last two with their W1 distance to the data."""
    from tvae.eval.music import collect, summarize

    excerpts = [bars_to_melody(Bars(s.tokens[:bars], s.meter, s.qpm, s.pickup, s.title),
                               trained.grid) for s in songs]
    excerpts = [m for m in excerpts if m.notes]
    data = collect(excerpts)
    recon = collect([trained.reconstruct(m) for m in excerpts])
    samples = collect([trained.sample(m.n_bars, 0.0, k, m.meter) for k, m in enumerate(excerpts)])
    return {"data": summarize(data), "reconstruction": summarize(recon, data),
            "samples": summarize(samples, data)}
