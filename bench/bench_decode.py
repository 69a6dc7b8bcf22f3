"""Free-running decoding time for 8..128 bars: with the KV cache, without it, and windowed.

    python -m bench.bench_decode [--model CKPT] [--batch 1] [--repeats 3]

With the cache each new bar attends to cached keys, so the time grows linearly with bars;
without it every bar recomputes its whole prefix (quadratic).
"""

from __future__ import annotations

import argparse
import time

import torch

from bench.machine import describe_machine
from tvae.inference import load_model

BARS = (8, 16, 32, 64, 128)


def time_decode(model, n_bars: int, batch: int, cache: bool, repeats: int,  # noqa: ANN001
                window: int = 0) -> float:
    z = torch.randn(batch, n_bars, model.config.d_latent)
    meters = torch.zeros(batch, n_bars, dtype=torch.long)
    model.free_run(z, meters, use_cache=cache, window=window)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        model.free_run(z, meters, use_cache=cache, window=window)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None, help="checkpoint (default: bundled model)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    trained = load_model(args.model)
    model = trained.model
    print(f"machine: {describe_machine()}")
    print(f"batch {args.batch}, best of {args.repeats}")
    print(f"windowed: bars after the first {trained.window} are decoded from the "
          f"{trained.window}-bar window ending at them (what the inference API does)")
    print(f"{'bars':>6} {'cached s':>10} {'ms/bar':>8} {'uncached s':>11} {'ms/bar':>8} "
          f"{'windowed s':>11} {'ms/bar':>8}")
    for n in BARS:
        cached = time_decode(model, n, args.batch, True, args.repeats)
        plain = time_decode(model, n, args.batch, False, args.repeats)
        windowed = time_decode(model, n, args.batch, True, args.repeats, trained.window)
        print(f"{n:6d} {cached:10.3f} {cached / n * 1000:8.2f} {plain:11.3f} "
              f"{plain / n * 1000:8.2f} {windowed:11.3f} {windowed / n * 1000:8.2f}")


if __name__ == "__main__":
    main()
