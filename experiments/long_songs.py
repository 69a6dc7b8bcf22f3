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
    python -m experiments.long_songs MODEL... --detail [--block 8] [--window W] [--given G]
    python -m experiments.long_songs MODEL... --joined 40 [--detail ...]
    python -m experiments.long_songs MODEL... --errors [--longer-than 0 --splits test]

`--errors` says where a reconstruction's wrong steps come from, inside the window and past it:
bars the decoder generates, and bars it copies, split by whether their source was itself
decoded right and by how the true bar relates to the true source (identical, at most
`NEAR_STEPS` steps changed, more). A copy of a bar decoded wrong repeats its errors: those are
carried errors, the rest are made where they show.

`--joined N` scores N songs built instead of found: 4/4 songs of the test split without a pickup
(their full bars), joined end to end until twice the window long, so that every bar past the
window is a real tune's bar, most of them new material, none seen in training.

`--detail` says where the bars go wrong, per block of `--block` positions: free-running step
accuracy (bars past `--window`, default the model's, read and decoded from the windows that long
ending at them; the first `--given` bars given as they are, not decoded), teacher-forced step
accuracy (the true bars as context, the same windows) and the KL of the bars that repeat no
earlier bar of the song.
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
from tvae.eval.structure import repeated_bars
from tvae.inference import TrainedModel, load_model
from tvae.melody import Bars, Melody, bars_to_melody, meter_id
from tvae.midi import read_melody
from tvae.model.pointer import NEAR_STEPS

GENERATED = "generated"


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


def copy_kind(truth: np.ndarray, out: np.ndarray, k: int, source: int | None) -> str:
    """The `--errors` class of bar k, given the song's true and decoded bars (N, S) and the
    decoder's source for it (None: generated)."""
    if source is None or source >= k:
        return GENERATED
    decoded = "right" if np.array_equal(out[source], truth[source]) else "wrong"
    changed = int((truth[source] != truth[k]).sum())
    relation = ("identical" if changed == 0 else
                f"near (1-{NEAR_STEPS} steps)" if changed <= NEAR_STEPS else "other")
    return f"copy of a bar decoded {decoded}, true bar {relation}"


def error_sources(model: TrainedModel, melodies: list[Melody]) -> dict[str, Any]:
    """Per range of positions (inside the model's window, past it): for each `copy_kind`, the
    bars, their real steps and the steps decoded wrong, and its share of the range's wrong
    steps (`--errors`)."""
    W = model.window
    ranges: dict[str, dict[str, dict[str, int]]] = {f"1-{W}": {}, f"{W + 1}-": {}}
    for melody in melodies:
        truth = model.bars(melody).tokens  # (N, S)
        out = model.bars(model.reconstruct(melody)).tokens
        sources = model.copy_sources(melody)
        for k in range(min(len(truth), len(out), len(sources))):
            real = truth[k] != PAD
            row = ranges[f"1-{W}" if k < W else f"{W + 1}-"].setdefault(
                copy_kind(truth, out, k, sources[k]), {"bars": 0, "steps": 0, "wrong": 0})
            row["bars"] += 1
            row["steps"] += int(real.sum())
            row["wrong"] += int(((out[k] != truth[k]) & real).sum())
    result: dict[str, Any] = {"songs": len(melodies), "window": W, "ranges": {}}
    for name, kinds in ranges.items():
        steps = sum(r["steps"] for r in kinds.values())
        wrong = sum(r["wrong"] for r in kinds.values())
        result["ranges"][name] = {
            "bars": sum(r["bars"] for r in kinds.values()), "steps": steps,
            "step_accuracy": 1 - wrong / max(steps, 1),
            "carried_share": sum(r["wrong"] for kind, r in kinds.items()
                                 if "decoded wrong" in kind) / max(wrong, 1),
            "kinds": {kind: {**r, "error_rate": r["wrong"] / max(r["steps"], 1),
                             "share_of_errors": r["wrong"] / max(wrong, 1)}
                      for kind, r in sorted(kinds.items())}}
    return result


def detail_scores(model: TrainedModel, melodies: list[Melody], block: int, window: int,
                  given: int = 0) -> list[dict[str, Any]]:
    """Per block of `block` positions: free-running and teacher-forced step accuracy with
    `window`-bar windows (the first `given` bars given to free-running), and the mean KL of
    the bars that repeat no earlier bar (`--detail`)."""
    net = model.model
    rows: dict[int, dict[str, list[float]]] = {}
    for melody in melodies:
        bars = model.bars(melody)
        tokens = torch.as_tensor(bars.tokens, device=model.device)[None]  # (1, N, S)
        meters = torch.full(tokens.shape[:2], meter_id(bars.meter), device=model.device)
        first = torch.arange(tokens.shape[1], device=model.device) == 0
        outside = (tokens == PAD) & first[None, :, None]  # the steps before a pickup
        with torch.no_grad():
            mu, logvar = net.encode_windowed(tokens, meters, window)
            free = net.free_run(mu, meters, window=window, outside=outside,
                                prefix=tokens[:, :given] if given else None)[0]
            forced = net.decode_teacher_forced_windowed(mu, tokens, meters, window)[0]
        kl = (0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum(-1) / np.log(2.0))[0]
        new = ~repeated_bars(tokens)[0]
        truth, real = tokens[0], tokens[0] != PAD
        for name, out in (("free", free), ("teacher_forced", forced[0].argmax(-1))):
            right = ((out == truth) & real).sum(-1) / real.sum(-1).clamp(min=1)  # (N,)
            for k, value in enumerate(right.tolist()):
                rows.setdefault(k // block, {}).setdefault(name, []).append(value)
        for k in torch.nonzero(new).flatten().tolist():
            rows[k // block].setdefault("kl_new", []).append(float(kl[k]))
    return [{"positions": f"{b * block + 1}-{(b + 1) * block}", "bars": len(row["free"]),
             **{name: float(np.mean(values)) for name, values in row.items()}}
            for b, row in sorted(rows.items())]


def long_melodies(data: str | Path, splits: tuple[str, ...], longer_than: int) -> list[Melody]:
    """The songs of a corpus folder's manifest in `splits` with more than `longer_than` bars."""
    root = Path(data)
    with open(root / "manifest.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f)
                if r["split"] in splits and int(r["bars"]) > longer_than]
    return [read_melody(root / r["path"]) for r in rows]


def joined_songs(data: str | Path, n: int, bars: int, seed: int = 0) -> list[Melody]:
    """`n` songs of at least `bars` bars: the full bars of random 4/4 test songs without a
    pickup (`bench.bench_forms.phrases`), joined end to end."""
    from bench.bench_forms import phrases

    pool, rng = phrases(str(data), seed)
    pool = [song[(song != PAD).all(-1)] for song in pool]  # full bars only
    out = []
    for i in range(n):
        parts, length = [], 0
        while length < bars:
            song = pool[int(rng.integers(len(pool)))]
            parts.append(song)
            length += len(song)
        out.append(bars_to_melody(Bars(np.concatenate(parts), (4, 4), 120.0, 0, f"joined {i}")))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--data", default="corpus")
    parser.add_argument("--splits", nargs="+", default=["valid", "test"])
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--joined", type=int, default=0,
                        help="score this many songs joined from test songs instead")
    parser.add_argument("--detail", action="store_true",
                        help="free-running, teacher-forced and KL per block of --block bars")
    parser.add_argument("--block", type=int, default=8)
    parser.add_argument("--window", type=int, default=0, help="(--detail) default: the model's")
    parser.add_argument("--given", type=int, default=0,
                        help="(--detail) bars given to free-running as they are")
    parser.add_argument("--longer-than", type=int, default=-1,
                        help="score the songs with more bars than this (default: the model's "
                        "window; 0: every song of the splits)")
    parser.add_argument("--errors", action="store_true",
                        help="where the wrong steps come from: generated bars, copies")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {}
    for path in args.models:
        model = load_model(path)
        longer = model.window if args.longer_than < 0 else args.longer_than
        melodies = (joined_songs(args.data, args.joined, 2 * model.window) if args.joined
                    else long_melodies(args.data, tuple(args.splits), longer))
        if args.errors:
            result = results[path] = error_sources(model, melodies)
            print(f"{path}: {len(melodies)} songs; wrong steps by the bars they fall in")
            for name, r in result["ranges"].items():
                print(f"  bars {name} ({r['bars']} bars): steps right {r['step_accuracy']:.3f}, "
                      f"{r['carried_share']:.0%} of the wrong steps carried by copies")
                for kind, k in r["kinds"].items():
                    print(f"    {kind:52s} {k['bars']:4d} bars, {k['wrong']:4d} of "
                          f"{k['steps']:5d} steps wrong ({k['error_rate']:.3f}), "
                          f"{k['share_of_errors']:.0%} of the errors")
            continue
        if args.detail:
            rows = results[path] = detail_scores(model, melodies, args.block,
                                                 args.window or model.window, args.given)
            print(f"{path}: {len(melodies)} songs; free-running / teacher-forced step accuracy, "
                  "KL of bars that repeat nothing before them")
            for row in rows:
                print(f"  bars {row['positions']:>7} ({row['bars']:4d}): {row['free']:.3f} / "
                      f"{row['teacher_forced']:.3f}, {row.get('kl_new', float('nan')):.1f} bits")
            continue
        result = results[path] = long_song_scores(model, melodies)
        print(f"{path}: {result['songs']} songs longer than {longer} bars "
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
