"""Repeats by distance on song forms the folk corpus rarely has: 3-, 5- and 7-bar phrases, 8-bar
sections in AABA and 16-bar sections in ABA, as a user's own melodies would bring them.

    python -m bench.bench_forms [--model M ...] [--corpus corpus] [--songs 24]

The songs are built, not found: each phrase is a run of consecutive 4/4 bars from a different
song of the folk corpus' test split (so every bar is a real tune's bar, and no model has trained
on it), and the phrases are arranged in the forms of `FORMS`, whose repeats lie 3, 6, 10, 14,
24, 25 and 32 bars after their first occurrence.

Each song is written as a MIDI file and the folder is scored by `tvae evaluate` (the same code as
`tvae evaluate FOLDER --json`): per distance bucket, copy accuracy (the decoder copies an
identical bar), exact reconstruction of repeats, their KL, and transfer follow.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from bench.machine import describe_machine
from tvae.config import GridConfig
from tvae.data.dataset import load_songs
from tvae.eval.folder import evaluate_folder
from tvae.melody import Bars, bars_to_melody, meter_id
from tvae.midi import write_melody

FORMS = {  # name: (phrase length in bars, form letters); the nearest earlier copy of a repeat
    "3-bar AABA": (3, "AABA"),  # 3 and 6 bars back
    "5-bar ABAB": (5, "ABAB"),  # 10
    "7-bar ABA": (7, "ABA"),  # 14
    "6-bar ABCDA": (6, "ABCDA"),  # 24
    "8-bar ABCA": (8, "ABCA"),  # 24
    "5-bar ABCDEA": (5, "ABCDEA"),  # 25
    "16-bar ABA": (16, "ABA"),  # 32
}


def phrases(corpus: str, seed: int) -> tuple[list[np.ndarray], np.random.Generator]:
    """The 4/4 songs without a pickup of the test split, each (L, S) tokens, and the
    generator that picks among them."""
    songs, _ = load_songs(corpus, progress=False)
    four = meter_id((4, 4))
    pool = []
    for i in np.flatnonzero((songs.splits == "test") & (songs.meters == four)
                            & (songs.pickups == 0)):
        start = songs.offsets[i] if songs.song_starts is None else songs.song_starts[i]
        pool.append(np.asarray(songs.tokens[start : start + songs.lengths[i]], dtype=np.int64))
    return pool, np.random.default_rng(seed)


def build(pool: list[np.ndarray], rng: np.random.Generator, length: int, form: str
          ) -> np.ndarray | None:
    """One song (N, S): each letter of `form` a phrase of `length` bars from its own song."""
    material = {}
    for letter in dict.fromkeys(form):
        for _ in range(100):
            song = pool[rng.integers(len(pool))]
            if len(song) < length:
                continue
            start = rng.integers(len(song) - length + 1)
            run = song[start : start + length]
            if length > 8 or len({r.tobytes() for r in run}) == length:  # (short: no repeat
                # inside the phrase, so its repeats lie at the form's distances)
                material[letter] = run
                break
        else:
            return None
    return np.concatenate([material[letter] for letter in form])


def write_set(folder: Path, corpus: str, per_form: int, seed: int) -> dict[str, int]:
    pool, rng = phrases(corpus, seed)
    made = {}
    for name, (length, form) in FORMS.items():
        made[name] = 0
        for k in range(per_form):
            tokens = build(pool, rng, length, form)
            if tokens is None:
                continue
            melody = bars_to_melody(Bars(tokens, title=f"{name} {k}"), GridConfig())
            write_melody(melody, folder / f"{name.replace(' ', '_')}_{k:03d}.mid")
            made[name] += 1
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", nargs="+", default=[None])
    parser.add_argument("--corpus", default="corpus")
    parser.add_argument("--songs", type=int, default=24, help="songs per form")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="", help="also write the results here")
    args = parser.parse_args()
    print(f"machine: {describe_machine()}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        made = write_set(Path(tmp), args.corpus, args.songs, args.seed)
        print("songs:", ", ".join(f"{k} {v}" for k, v in made.items()))
        for model in args.model:
            got = evaluate_folder(tmp, model, progress=False)
            name = model or "bundled"
            results[name] = got
            print(f"\n{name}: free-running {got['free_accuracy']:.3f}, KL "
                  f"{got['kl_bits_per_bar']:.1f} bits/bar, transfer follow "
                  f"{got['transfer_follow_rate']:.2f}")
            print("| bucket | repeats | copy acc | exact | KL bits | transfer cases | follow |")
            print("|---|---:|---:|---:|---:|---:|---:|")
            for bucket, row in got["by_distance"].items():
                follow = row.get("transfer_follow")
                print(f"| {bucket} | {row['repeats']} | {row['copy_accuracy']:.2f} | "
                      f"{row['exact']:.2f} | {row['kl_bits']:.1f} | {row['transfer_cases']} | "
                      f"{'-' if follow is None else f'{follow:.2f}'} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"made": made, "results": results}, indent=1))


if __name__ == "__main__":
    main()
