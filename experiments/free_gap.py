"""Where does free-running accuracy go? Decoding without teacher forcing, bar i sees the bars
decoded before it in two ways: as the decoder's input (their encodings, through self-attention)
and as what the copy path copies. Each is swapped for the true bars on its own, in one parallel
pass over a split's windows (as `tvae evaluate` reads them: z = posterior mean), so the gap
between teacher-forced and free-running accuracy splits into the part the decoder's input costs
and the part the copies cost. It also counts the decoded steps that are wrong in the bars the
decoder copies (choice > 0) and in those it generates, and the free-running accuracy when the
steps outside the melody (before a pickup, PAD in the data) are known and decoded as PAD
(`free_run(outside=...)`), as teacher forcing shows them: otherwise the decoder fills them
with notes that later bars read and copy.

    python -m experiments.free_gap [MODEL] [--data corpus] [--split test] [--json OUT]

Rows: "tf" (input and copies true: teacher-forced accuracy), "input decoded" (copies true),
"copies decoded" (input true), "free" (both decoded: free-running accuracy, as `tvae evaluate`
reports it), "free, pickups known" (free-running with the steps outside the melody given).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tvae.config import PAD, DataConfig
from tvae.data.dataset import load_songs
from tvae.data.windows import Windows
from tvae.inference import UNKNOWN_WINDOW, load_model
from tvae.model.modules import on_real_bars
from tvae.model.pointer import choose
from tvae.model.vae import TransformerVAE

ROWS = {"tf": (False, False), "input decoded": (True, False), "copies decoded": (False, True),
        "free": (True, True)}
PICKUPS_KNOWN = "free, pickups known"


@torch.no_grad()
def gap_counts(model: TransformerVAE, tokens: Tensor, meters: Tensor) -> dict[str, int]:
    """Counts for one batch, tokens (B, N, S) and meters (B, N) of windows no longer than the
    model's training window: right steps of each row of `ROWS`, real steps, and the wrong and
    all steps of the bars copied and generated when decoding free-running."""
    target = tokens != PAD
    real = target.any(-1)  # (B, N)
    mu, _ = model.encode(tokens, meters)
    decoded = model.free_run(mu, meters)  # (B, N, S), steps outside the melody filled in
    known = model.free_run(mu, meters, outside=~target)
    memory = model._memory(mu)
    log_pi, log_eps = model.pointer_weights(mu, real)
    counts = {"steps": int(target.sum())}
    for name, (dec_input, dec_copies) in ROWS.items():
        seen = decoded if dec_input else tokens
        prev = on_real_bars(model.bar_encoder, real, seen, meters)  # (B, N, D)
        h = model._decode_hidden(prev, memory, real)
        logits = on_real_bars(model.bar_decoder, real, h, meters, tokens)
        sources = decoded if dec_copies else tokens
        pred = model._predict(logits, meters, log_pi, log_eps, sources).argmax(-1)
        counts[name] = int(((pred == tokens) & target).sum())
    counts[PICKUPS_KNOWN] = int(((known == tokens) & target).sum())
    wrong = (decoded != tokens) & target
    copied = torch.zeros_like(real) if log_pi is None else choose(log_pi) > 0  # (B, N)
    for name, bars in (("copied", copied), ("generated", real & ~copied)):
        steps = bars[..., None] & target
        counts[f"steps_{name}"] = int(steps.sum())
        counts[f"wrong_{name}"] = int((wrong & steps).sum())
    return counts


def free_gap(model: TransformerVAE, windows: Windows, batch_size: int = 128) -> dict[str, Any]:
    """Accuracies of the four rows and the error rates of copied and generated bars."""
    model.eval()
    totals: dict[str, int] = {}
    for start in range(0, len(windows), batch_size):
        rows = np.arange(start, min(start + batch_size, len(windows)))
        tokens, meters = windows.batch(rows, None, trim=True)
        for key, value in gap_counts(model, torch.as_tensor(tokens),
                                     torch.as_tensor(meters)).items():
            totals[key] = totals.get(key, 0) + value
    steps = max(totals["steps"], 1)
    result: dict[str, Any] = {name: round(totals[name] / steps, 4)
                              for name in (*ROWS, PICKUPS_KNOWN)}
    for name in ("copied", "generated"):
        n = totals[f"steps_{name}"]
        result[f"error_rate_{name}"] = round(totals[f"wrong_{name}"] / n, 4) if n else None
        result[f"steps_{name}"] = n
    result["windows"] = len(windows)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", help="checkpoint (default: the bundled model)")
    parser.add_argument("--data", default="corpus")
    parser.add_argument("--split", default="test")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the result here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    trained = load_model(args.model)
    bars = trained.window or UNKNOWN_WINDOW
    data = DataConfig(bars=bars, stride=bars, transpose=0)
    songs, _ = load_songs(args.data, trained.grid, data, progress=False)
    result = {"model": str(trained.path),
              **free_gap(trained.model, Windows(songs, args.split, data, trained.grid))}
    for name in (*ROWS, PICKUPS_KNOWN):
        print(f"{name:>19}: {result[name]:.4f}")
    print(f"wrong steps, free-running: {result['error_rate_copied']} of the copied bars' steps, "
          f"{result['error_rate_generated']} of the generated bars'")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
