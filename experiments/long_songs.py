"""Songs longer than the training window, through the public API as a user reads them: does a
bar past the window come back as well as the bars inside it, and is a repeat there copied from
an identical bar?

For every song of the chosen splits with more bars than the model's window, `reconstruct`
(encode, then decode free-running: each bar past the window read from the window ending at it)
is compared with the song, per block of bar positions (1..W, W+1..2W, ...): the share of steps
decoded right and of bars decoded exactly; and, for the repeats (a bar identical to one of the
`copy_offsets` bars before it), the share whose decoder choice (`copy_sources`) is an identical
bar, inside the window and past it.

    python -m experiments.long_songs MODEL... [--data corpus] [--splits valid test] [--json OUT]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tvae.config import PAD
from tvae.inference import TrainedModel, load_model
from tvae.melody import Melody
from tvae.midi import read_melody


def long_song_scores(model: TrainedModel, melodies: list[Melody]) -> dict[str, Any]:
    """Per block of `model.window` bar positions: steps right, bars exact and repeats copied
    from an identical bar, over the melodies (each longer than the window)."""
    W, reach = model.window, int(model.model.config.copy_offsets)
    blocks: dict[int, dict[str, int]] = {}
    for melody in melodies:
        truth = model.bars(melody).tokens  # (N, S)
        out = model.bars(model.reconstruct(melody)).tokens
        sources = model.copy_sources(melody)
        n = min(len(truth), len(out), len(sources))
        for k in range(n):
            row = blocks.setdefault(k // W, {"bars": 0, "steps": 0, "steps_right": 0,
                                             "exact": 0, "repeats": 0, "copied_right": 0})
            real = truth[k] != PAD
            right = (out[k] == truth[k]) & real
            row["bars"] += 1
            row["steps"] += int(real.sum())
            row["steps_right"] += int(right.sum())
            row["exact"] += int(right.sum() == real.sum())
            same = [j for j in range(max(k - reach, 0), k) if np.array_equal(truth[j], truth[k])]
            if same:
                row["repeats"] += 1
                row["copied_right"] += int(sources[k] in same)
    out_blocks = []
    for b in sorted(blocks):
        row = blocks[b]
        out_blocks.append({"positions": f"{b * W + 1}-{(b + 1) * W}", **row,
                           "step_accuracy": row["steps_right"] / max(row["steps"], 1),
                           "exact_share": row["exact"] / max(row["bars"], 1),
                           "copy_accuracy": (row["copied_right"] / row["repeats"]
                                             if row["repeats"] else None)})
    return {"songs": len(melodies), "window": W, "blocks": out_blocks}


def long_melodies(data: str | Path, splits: tuple[str, ...], longer_than: int) -> list[Melody]:
    """The songs of a corpus folder's manifest in `splits` with more than `longer_than` bars."""
    root = Path(data)
    with open(root / "manifest.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f)
                if r["split"] in splits and int(r["bars"]) > longer_than]
    return [read_melody(root / r["path"]) for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--data", default="corpus")
    parser.add_argument("--splits", nargs="+", default=["valid", "test"])
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {}
    for path in args.models:
        model = load_model(path)
        melodies = long_melodies(args.data, tuple(args.splits), model.window)
        result = results[path] = long_song_scores(model, melodies)
        print(f"{path}: {result['songs']} songs longer than {model.window} bars "
              f"({', '.join(args.splits)})")
        for row in result["blocks"]:
            copy = ("-" if row["copy_accuracy"] is None
                    else f"{row['copy_accuracy']:.2f} of {row['repeats']}")
            print(f"  bars {row['positions']:>7} ({row['bars']:4d}): steps right "
                  f"{row['step_accuracy']:.3f}, exact {row['exact_share']:.2f}, repeats copied "
                  f"from an identical bar {copy}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
