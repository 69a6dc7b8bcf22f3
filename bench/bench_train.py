"""Training throughput in bars per second, at the bundled model's size, on this machine.

    python -m bench.bench_train CORPUS_DIR [--steps 30] [--batch-size 64] [--p-tf 1.0 0.7]
                                [--profile] [--no-encoder-edits] [--edit-weight W]

Times full optimizer steps of the real `Trainer` (forward, backward, clipping, AdamW) on
training windows of the corpus, in the trainer's own epoch order (batches of similar length,
trimmed to their songs), after a few warm-up steps; p_tf < 1 adds scheduled sampling's first
pass. Bars per second count the songs' bars, not the windows' padding. `--profile` also prints
where a step's time goes: the median time to make a batch on the host, and the share of the
step that torch's profiler gives to matrix products (mm, addmm, bmm), over 5 more steps, and
the operators that take the most of it. The model and loss are `tvae train`'s defaults (the
encoder reading repeats as their edits, the edit loss at weight 1);
`--no-encoder-edits --edit-weight 0` times the model without them (the defaults before the
fourteenth session).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.machine import describe_machine
from tvae.config import Configs, DataConfig, GridConfig, ModelConfig, TrainConfig
from tvae.data.dataset import load_folder
from tvae.inference import bundled_model_path
from tvae.training.trainer import Trainer

WARMUP = 5


MATMUL = ("aten::mm", "aten::addmm", "aten::bmm")
TOP = 8  # operators listed by --profile


def matmul_share(trainer: Trainer, order: np.ndarray, first: int, steps: int = 5
                 ) -> tuple[float, list[tuple[str, float]]]:
    """Share of `steps` more training steps' self CPU time that torch's profiler gives to
    matrix products."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for b in range(first, first + steps):
            trainer.step(trainer._batch(order, b))
            trainer.state.step += 1
    events = prof.key_averages()
    total = max(sum(e.self_cpu_time_total for e in events), 1)
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:TOP]
    return (sum(e.self_cpu_time_total for e in events if e.key in MATMUL) / total,
            [(e.key, e.self_cpu_time_total / total) for e in top])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("corpus")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--p-tf", type=float, nargs="+", default=[1.0, 0.7])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--encoder-edits", action=argparse.BooleanOptionalAction,
                        default=ModelConfig().encoder_edits)
    parser.add_argument("--edit-weight", type=float, default=TrainConfig().edit_weight)
    args = parser.parse_args()
    from tvae.model.checkpoint import load_checkpoint

    config = load_checkpoint(bundled_model_path())[0].config
    config = dataclasses.replace(config, encoder_edits=args.encoder_edits)
    songs, _ = load_folder(args.corpus, GridConfig(), DataConfig(), progress=False)
    print(f"machine: {describe_machine()}")
    params = None
    for p_tf in args.p_tf:
        cfg = TrainConfig(batch_size=args.batch_size, tf_schedule="constant", tf_p=p_tf,
                          device=args.device, edit_weight=args.edit_weight)
        with tempfile.TemporaryDirectory() as tmp:
            trainer = Trainer(songs, Path(tmp), Configs(GridConfig(), config, DataConfig(), cfg),
                              False)
            params = sum(p.numel() for p in trainer.model.parameters())
            order = trainer.train_windows.epoch_order(args.batch_size,
                                                      np.random.default_rng(0))
            times, real, making = [], [], []
            for b in range(WARMUP + args.steps):
                began = time.perf_counter()
                batch = trainer._batch(order, b)
                making.append(time.perf_counter() - began)
                real.append(int((batch.tokens != 0).any(-1).sum()))
                start = time.perf_counter()
                trainer.step(batch)
                if trainer.device.type == "cuda":
                    import torch

                    torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
                trainer.state.step += 1
            share, top = (matmul_share(trainer, order, WARMUP + args.steps) if args.profile
                          else (None, []))
        step = float(np.median(times[WARMUP:]))
        rate = sum(real[WARMUP:]) / sum(times[WARMUP:])
        print(f"p_tf={p_tf:.1f}: {step * 1000:.0f} ms/step (median of {args.steps}; "
              f"{np.mean(real[WARMUP:]):.0f} song bars a step in "
              f"{DataConfig().bars}-bar windows), {rate:,.0f} bars/s")
        if share is not None:
            print(f"  making a batch: {np.median(making) * 1000:.0f} ms (median); matrix "
                  f"products: {share:.0%} of the profiled steps' CPU time; most of it:")
            print("    " + ", ".join(f"{key} {part:.0%}" for key, part in top))
    print(f"model: {params:,} parameters ({dataclasses.asdict(config)['d_model']} wide"
          + (", encoder reading repeats as edits" if args.encoder_edits else ", no edit view")
          + (f", edit loss weight {args.edit_weight:g}" if args.edit_weight else "") + ")")


if __name__ == "__main__":
    main()
