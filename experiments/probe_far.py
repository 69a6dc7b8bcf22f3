"""Where a checkpoint's pointer puts its weight for repeats by distance, and how fast the
pointer loss alone can move it for far repeats.

    python -m experiments.probe_far CKPT [--corpus corpus] [--steps 80]

Prints, per bucket of how far back a repeat's nearest identical bar lies, the mean pointer
weight on its identical sources: on the test split's 33-bar windows and on training batches of
the reach augmentation (every batch a whole-window one). Then, on one such batch, it optimises
the pointer loss alone (Adam, z = posterior mean) at lr 3e-4 and 3e-3 and prints the weight on
sources 17-32 bars back every 20 steps: whether far repeats are learnable, and how fast.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from tvae.config import DataConfig
from tvae.data.dataset import load_songs
from tvae.data.windows import Windows
from tvae.eval.structure import DISTANCE_BUCKETS, bucket_name, nearest_offset, repeated_bars
from tvae.inference import load_model
from tvae.model.pointer import copy_target
from tvae.training.objective import pointer_nll


def source_weight(model: torch.nn.Module, tokens: torch.Tensor, meters: torch.Tensor
                  ) -> torch.Tensor:
    """(B, N) the pointer's total weight on the bars identical to each bar."""
    mu, _ = model.encode(tokens, meters)
    log_pi = model.log_pointer(mu, (tokens != 0).any(-1))
    return (log_pi[..., 1:].exp() * copy_target(tokens, model.config.copy_offsets)).sum(-1)


def by_bucket(weight: torch.Tensor, tokens: torch.Tensor) -> dict[str, tuple[int, float]]:
    offset, rep = nearest_offset(tokens), repeated_bars(tokens)
    out = {}
    for lo, hi in DISTANCE_BUCKETS:
        at = rep & (offset >= lo) & (offset <= hi)
        out[bucket_name(lo, hi)] = (int(at.sum()), float(weight[at].mean()) if at.any() else 0.0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoint")
    parser.add_argument("--corpus", default="corpus")
    parser.add_argument("--steps", type=int, default=80)
    args = parser.parse_args()
    torch.manual_seed(0)
    songs = load_songs(args.corpus)[0]
    model = load_model(args.checkpoint).model
    test = Windows(songs, "test", DataConfig(bars=33, stride=33, transpose=0))
    tokens, meters = (torch.as_tensor(a) for a in test.batch(np.arange(len(test))))
    with torch.no_grad():
        print("test split:", by_bucket(source_weight(model, tokens, meters), tokens))
    train = Windows(songs, "train", DataConfig(repeat_reach=1.0))
    rng = np.random.default_rng(0)
    order = train.epoch_order(64, rng)
    batches = [tuple(torch.as_tensor(a) for a in train.batch(order[i * 64:(i + 1) * 64], rng,
                                                             trim=True)) for i in range(6)]
    with torch.no_grad():
        weights = [by_bucket(source_weight(model, t, m), t) for t, m in batches]
    pooled = {k: (sum(w[k][0] for w in weights),
                  sum(w[k][0] * w[k][1] for w in weights) / max(sum(w[k][0] for w in weights), 1))
              for k in weights[0]}
    print("reach training batches:", pooled)
    tokens, meters = batches[0]
    far = repeated_bars(tokens) & (nearest_offset(tokens) >= 17)
    for lr in (3e-4, 3e-3):
        probe = load_model(args.checkpoint).model.train()
        opt = torch.optim.Adam(probe.parameters(), lr=lr)
        for step in range(args.steps + 1):
            mu, _ = probe.encode(tokens, meters)
            log_pi = probe.log_pointer(mu, (tokens != 0).any(-1))
            if step % 20 == 0:
                with torch.no_grad():
                    w = (log_pi[..., 1:].exp() * copy_target(tokens, 32)).sum(-1)
                print(f"lr {lr:g} step {step}: weight on 17-32-back sources "
                      f"{float(w[far].mean()):.3f}")
            loss, n = pointer_nll(log_pi, tokens, 2, 0.9)
            opt.zero_grad()
            (loss / n).backward()
            opt.step()


if __name__ == "__main__":
    main()
