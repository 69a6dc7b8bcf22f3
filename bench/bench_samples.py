"""Do samples sound like the songs the model learned? N(0, I) against the learned prior.

    python -m bench.bench_samples [--model M] [--corpus corpus] [-n 48] [--bars 16]
    python -m bench.bench_samples --timing     # seconds per sample of 32, 128, 512 bars

Prints, for each way of sampling, the statistics of `tvae.eval.form` (pitch range, distinct
pitches, pitch-class entropy, scale consistency, share of bars repeating an earlier bar, share of
songs whose bars 5-8 repeat bars 1-4) over `-n` samples of `--bars` bars in 4/4, beside the same
statistics of the folk test split's 4/4 songs cut to `--bars` bars; the KL (bits per bar) the
encoder gives the samples' bars when they are read back, beside the data's; and two checks of the
prior's use:

- continuations: the first 4 bars of each test song continued to `--bars` bars (`tvae sample
  --prompt`); their scale consistency against the data's (is the prompt's key kept?);
- interpolation: the middle of A -> B (3 steps) between pairs of test songs; the share whose
  repeat structure (which bars repeat which) is that of one end, with and without
  `keep_form`.

Ways of sampling (`--ways`, each prior:prior temperature:step temperature): N(0, I) with step
temperature 1 (`tvae sample`'s default before the learned prior) and greedy; the learned prior
at prior temperatures 1 and 0.8 with step temperature 1 and greedy (0.8 and greedy are `tvae
sample`'s defaults). Seeds 0..n-1. Continuations use the defaults.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from bench.machine import describe_machine
from tvae.data.dataset import load_songs
from tvae.eval.form import form_metrics, form_table, mean_metrics, reference_stats
from tvae.inference import TrainedModel, load_model
from tvae.melody import Bars, Melody, bars_to_melody, meter_id

FOUR = (4, 4)


def folk_test_songs(corpus: str, bars: int, model: TrainedModel) -> tuple[object, list[Bars]]:
    songs, _ = load_songs(corpus, model.grid, progress=False)
    chosen = np.flatnonzero((songs.splits == "test") & (songs.meters == meter_id(FOUR))
                            & (songs.lengths >= bars))
    return songs, [songs.song(int(i)) for i in chosen]


def cut(song: Bars, bars: int, model: TrainedModel) -> Melody:
    return bars_to_melody(Bars(song.tokens[:bars], song.meter, song.qpm, song.pickup,
                               song.title), model.grid)


def sample_stats(model: TrainedModel, n: int, bars: int, prior: str, prior_temperature: float,
                 temperature: float | None) -> dict:
    melodies = [model.sample(bars, temperature, seed, FOUR, prior=prior,
                             prior_temperature=prior_temperature) for seed in range(n)]
    stats = mean_metrics([form_metrics(m, model.grid, bars) for m in melodies])
    stats["kl_bits_read_back"] = round(float(np.mean(
        [model.kl_bits(m).mean() for m in melodies if m.notes])), 3)
    return stats


def form_signature(tokens: np.ndarray) -> tuple[int, ...]:
    """Per bar, the first earlier bar identical to it, or -1."""
    out = []
    for k in range(len(tokens)):
        same = [j for j in range(k) if np.array_equal(tokens[j], tokens[k])]
        out.append(same[0] if same else -1)
    return tuple(out)


def interpolation_form(model: TrainedModel, songs: list[Bars], pairs: int, keep: bool) -> float:
    """Share of pairs whose interpolation's middle has the repeat structure of one end."""
    rng = np.random.default_rng(0)
    kept = total = 0
    for _ in range(pairs):
        i, j = rng.choice(len(songs), 2, replace=False)
        a, b = cut(songs[i], 8, model), cut(songs[j], 8, model)
        steps = model.interpolate(a, b, 3, keep_form=keep)
        sig = [form_signature(model.bars(m).tokens[:8]) for m in steps]
        total += 1
        kept += sig[1] in (sig[0], sig[2])
    return kept / max(total, 1)


def timing(model: TrainedModel, lengths: tuple[int, ...] = (32, 128, 512)) -> dict[str, float]:
    """Seconds to draw one sample of each length (prior and decoding): linear in bars."""
    out = {}
    for n in lengths:
        started = time.perf_counter()
        model.sample(n, seed=0)
        out[str(n)] = round(time.perf_counter() - started, 3)
        print(f"one {n}-bar sample: {out[str(n)]:.2f} s ({1000 * out[str(n)] / n:.1f} ms a bar)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--corpus", default="corpus")
    parser.add_argument("-n", type=int, default=48)
    parser.add_argument("--bars", type=int, default=16)
    parser.add_argument("--ways", default="normal:1:1,normal:1:0,learned:1:1,learned:1:0,"
                        "learned:0.8:1,learned:0.8:0")
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--pairs", type=int, default=48)
    parser.add_argument("--json", default=None, help="Also write the results here.")
    parser.add_argument("--timing", action="store_true",
                        help="Only time one sample of 32, 128 and 512 bars (quiet machine).")
    args = parser.parse_args()
    print(describe_machine())
    model = load_model(args.model)
    if args.timing:
        timing(model)
        return
    songs_all, songs = folk_test_songs(args.corpus, args.bars, model)
    data = reference_stats(songs_all, model.grid, args.bars, meter_id(FOUR), max_songs=10**6)
    data["kl_bits_read_back"] = round(float(np.mean(
        [model.kl_bits(cut(s, args.bars, model)).mean() for s in songs])), 3)
    results: dict = {"data": data, "samples": {}}
    ways = [(p, float(t), float(s)) for p, t, s in (w.split(":") for w in args.ways.split(","))
            if p == "normal" or model.has_prior]
    for prior, tau, temperature in ways:
        name = ("N(0, I)" if prior == "normal" else f"learned, prior T {tau:g}") + \
            f", step T {temperature:g}"
        stats = sample_stats(model, args.n, args.bars, prior, tau, temperature)
        results["samples"][name] = stats
        print(f"\n{name}: {args.n} samples of {args.bars} bars")
        print(form_table(stats, data, "test 4/4"))
        print(f"{'kl_bits_read_back':22}{stats['kl_bits_read_back']:>10.3f}"
              f"{data['kl_bits_read_back']:>12.3f}")
    if model.has_prior:
        prompts = [cut(s, 4, model) for s in songs[: args.prompts]]
        cont = [model.sample(args.bars, seed=k, prompt=p) for k, p in enumerate(prompts)]
        scale = mean_metrics([form_metrics(m, model.grid, args.bars) for m in cont])
        results["continuations"] = scale
        print(f"\ncontinuations of {len(prompts)} 4-bar prompts to {args.bars} bars: scale "
              f"consistency {scale['scale_consistency']:.3f} (data {data['scale_consistency']:.3f}"
              f"), pitch range {scale['pitch_range']:.1f} (data {data['pitch_range']:.1f})")
    for keep in (False, True):
        share = interpolation_form(model, songs, args.pairs, keep)
        results[f"interpolation_keeps_form{'_kept' if keep else ''}"] = share
        print(f"interpolation middles with one end's repeat structure "
              f"({'keep_form' if keep else 'latents only'}): {share:.2f} of {args.pairs}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
