"""Free-running accuracy of a checkpoint at several beam widths over each bar's steps (the
autoregressive GRU bar decoder; the MLP decoder's steps are independent, so its greedy bar is
already its likeliest): does a search within the bar close the gap to teacher forcing?

    python -m experiments.beam_probe CKPT [--windows N] [--beams 1 4 8] [--threads 1]

Scored as `tvae evaluate` reads windows (the folk test split's 33-bar windows, z = posterior
mean, the model's training window): teacher-forced accuracy, then per width the free-running
step accuracy, the share of bars decoded exactly and the seconds it took.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from tvae.config import PAD, DataConfig
from tvae.data.dataset import load_songs
from tvae.data.windows import Windows
from tvae.inference import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("--data", default="corpus")
    parser.add_argument("--windows", type=int, default=440)
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    trained = load_model(args.model)
    model, window = trained.model.eval(), trained.model.config.trained_bars
    data = DataConfig(bars=33, stride=33, transpose=0)
    songs, _ = load_songs(args.data, trained.grid, data, progress=False)
    windows = Windows(songs, "test", data, trained.grid)
    tokens, meters = windows.batch(np.arange(min(args.windows, len(windows))), None, trim=True)
    tokens, meters = torch.as_tensor(tokens), torch.as_tensor(meters)  # (W, N, S), (W, N)
    target = tokens != PAD
    real = target.any(-1)  # (W, N)
    with torch.no_grad():
        mu, _ = model.encode_windowed(tokens, meters, window)
        log_probs, _ = model.decode_teacher_forced_windowed(mu, tokens, meters, window)
        tf = ((log_probs.argmax(-1) == tokens) & target).sum() / target.sum()
        print(f"{args.model}: teacher-forced accuracy {tf:.4f}")
        for beam in args.beams:
            start = time.time()
            decoded = torch.cat([model.free_run(mu[i : i + 64], meters[i : i + 64],
                                                window=window, beam=beam)
                                 for i in range(0, len(mu), 64)])
            acc = ((decoded == tokens) & target).sum() / target.sum()
            exact = (((decoded == tokens) | ~target).all(-1) & real).sum() / real.sum()
            print(f"beam {beam}: free-running accuracy {acc:.4f}, bars decoded exactly "
                  f"{exact:.4f} ({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
