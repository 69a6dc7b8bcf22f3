"""Training throughput over a batch-size sweep, on a GPU (or, to check the script, a CPU).

    python -m bench.bench_gpu CORPUS_DIR [--device cuda] [--batches 64 1024 4096 16384]
        [--steps 20] [--compile] [--quality MINUTES]

For each batch size, at the bundled model's size on the corpus' training windows:
- step only: the optimizer step (forward, backward, clipping, AdamW, bf16 autocast on CUDA) on
  batches made beforehand;
- loop: making the batch on the host (`Trainer._batch`) plus the step, as `tvae train` runs
  them, with the next batch prefetched on a background thread (the default on CUDA) and
  without;
- the loop's share of step-only throughput, and peak device memory.
Bars per second count the songs' bars, not padding. `--compile` adds the torch.compile'd step.

`--quality MINUTES` then trains with `tvae train`'s defaults at the largest batch for that many
minutes on the device and prints the folk test split's free-running accuracy and KL bits per
bar next to the bundled model's card (time to quality).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.machine import describe_machine
from tvae.config import Configs, DataConfig, GridConfig, TrainConfig
from tvae.data.dataset import load_songs
from tvae.inference import bundled_model_path
from tvae.model.checkpoint import load_checkpoint
from tvae.training.prefetch import Prefetcher
from tvae.training.trainer import Trainer

WARMUP = 3


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _bars(batch: object) -> int:
    return int((batch.tokens != 0).any(-1).sum())  # type: ignore[attr-defined]


def measure(songs: object, batch_size: int, steps: int, device: str, compiled: bool
            ) -> dict[str, float]:
    """bars/s of the step alone and of the loop (with and without prefetching), peak GiB."""
    config = load_checkpoint(bundled_model_path())[0].config
    cfg = TrainConfig(batch_size=batch_size, device=device, log_every=10**6,
                      checkpoint_every=10**6)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(songs, Path(tmp), Configs(GridConfig(), config, DataConfig(), cfg), False,
                          compile_model=compiled)
        dev = trainer.device
        order = trainer.train_windows.epoch_order(batch_size, np.random.default_rng(0))
        count = min(trainer.batches, WARMUP + steps)
        made = [trainer._batch(order, b, b) for b in range(count)]
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        for b in range(WARMUP):
            trainer.step(made[b])
        _sync(dev)
        start = time.perf_counter()
        for b in range(WARMUP, count):
            trainer.step(made[b])
        _sync(dev)
        step_rate = sum(_bars(m) for m in made[WARMUP:]) / (time.perf_counter() - start)
        loop = {}
        for prefetch in (False, True):
            make = lambda b, s: trainer._batch(order, b, s)  # noqa: E731
            with Prefetcher(make, count, prefetch) as ahead:
                bars = 0
                start = time.perf_counter()
                for b in range(WARMUP, count):
                    batch = ahead.get(b, b)
                    bars += _bars(batch)
                    trainer.step(batch)
                _sync(dev)
                loop[prefetch] = bars / (time.perf_counter() - start)
        peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else 0.0
    return {"step": step_rate, "loop": loop[False], "prefetch": loop[True], "peak_gib": peak,
            "steps": count - WARMUP}


def quality(corpus: str, minutes: float, batch_size: int, device: str) -> None:
    """Train with the defaults for `minutes`, then score the test split like the card."""
    from tvae.eval.folder import evaluate_folder
    from tvae.training.run import train

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        train(corpus, Path(tmp) / "run", train_config=TrainConfig(
            batch_size=batch_size, max_minutes=minutes, epochs=10**6, patience=10**6,
            device=device), progress=False)
        took = (time.perf_counter() - start) / 60
        got = evaluate_folder(corpus, Path(tmp) / "run" / "best.json", progress=False,
                              device=device)
    card = load_checkpoint(bundled_model_path())[1].get("evaluation", {})
    for key in ("free_accuracy", "kl_bits_per_bar", "elbo_bits_per_bar"):
        print(f"{key}: {got.get(key, float('nan')):.3f} after {took:.1f} min "
              f"(bundled model: {card.get(key, float('nan')):.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("corpus")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 1024, 4096, 16384])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--quality", type=float, default=0.0, metavar="MINUTES")
    args = parser.parse_args()
    songs, _ = load_songs(args.corpus, GridConfig(), DataConfig(), progress=False)
    print(f"machine: {describe_machine()}; device {args.device}")
    print("| batch | mode | step only, bars/s | loop, bars/s | loop + prefetch, bars/s "
          "| prefetch / step | peak GiB |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for batch_size in args.batches:
        for compiled in ((False, True) if args.compile else (False,)):
            r = measure(songs, batch_size, args.steps, args.device, compiled)
            print(f"| {batch_size:,} | {'compiled' if compiled else 'eager'} | "
                  f"{r['step']:,.0f} | {r['loop']:,.0f} | {r['prefetch']:,.0f} | "
                  f"{r['prefetch'] / r['step']:.2f} | {r['peak_gib']:.2f} |", flush=True)
    if args.quality:
        quality(args.corpus, args.quality, max(args.batches), args.device)


if __name__ == "__main__":
    main()
