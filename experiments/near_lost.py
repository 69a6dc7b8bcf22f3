"""Where does a near-repeat lose its change? For the near-repeats of a split's windows (a bar
with no identical earlier bar but one that differs from it in 1 or 2 steps, as `tvae evaluate`
counts them; z = posterior mean, decoded free-running as `evaluate` decodes), each is sorted by
what became of its changed steps (those that differ from its nearest earlier bar):

- kept: every changed step decoded right (`near_changes_kept` of `tvae evaluate`);
- generated: the decoder generates the bar instead of copying;
- copied from another bar: the decoder copies a bar other than the nearest source;
- not marked: the right source, but some changed step's edit chance is below 0.5, so the
  source's note is kept there;
- the source's note: the right source, every changed step marked, but the generator's own
  choice there is the note the source has;
- another note: the right source, every changed step marked, and the generator chose a note
  that is neither the source's nor the true one.

    python -m experiments.near_lost MODEL... [--data corpus] [--split test] [--json OUT]
"""

from __future__ import annotations

import json
import math
from typing import Any

import torch
from torch import Tensor

from experiments.common import model_parser, split_windows
from tvae.config import PAD
from tvae.eval.structure import NEAR_EDITS, near_repeats
from tvae.inference import load_model
from tvae.model.pointer import choose, nearest_source

KINDS = ("kept", "generated", "copied from another bar", "not marked", "the source's note",
         "another note")
BATCH = 128  # windows decoded at a time


def lost_changes(model: torch.nn.Module, tokens: Tensor, meters: Tensor) -> dict[str, Any]:
    """How many near-repeats of the windows tokens (W, N, S), meters (W, N) fall in each of
    `KINDS` (the module's docstring), decoded free-running from the posterior means."""
    window = int(model.config.trained_bars)
    counts = dict.fromkeys(KINDS, 0)
    for lo in range(0, len(tokens), BATCH):
        t, m = tokens[lo:lo + BATCH], meters[lo:lo + BATCH]  # (B, N, S), (B, N)
        with torch.no_grad():
            mu, _ = model.encode_windowed(t, m, window)
            log_pi, log_eps = model.pointer_weights(mu, (t != PAD).any(-1))
            decoded = model.free_run(mu, m, window=window)  # (B, N, S)
        offset, same = nearest_source(t, t.shape[1] - 1, NEAR_EDITS)  # (B, N), (B, N, S)
        choice = None if log_pi is None else choose(log_pi)  # (B, N): 0 generate, 1 + j copy j
        for b, k in torch.nonzero(near_repeats(t)).tolist():
            changed = torch.nonzero((t[b, k] != PAD) & ~same[b, k]).flatten()  # steps
            source = k - int(offset[b, k])
            if bool((decoded[b, k, changed] == t[b, k, changed]).all()):
                kind = "kept"
            elif choice is None or int(choice[b, k]) == 0:
                kind = "generated"
            elif int(choice[b, k]) - 1 != source:
                kind = "copied from another bar"
            elif log_eps is not None and bool(
                    (log_eps[b, k].expand(t.shape[-1])[changed] <= math.log(0.5)).any()):
                kind = "not marked"
            elif bool((decoded[b, k, changed] == t[b, source, changed]).any()):
                kind = "the source's note"
            else:
                kind = "another note"
            counts[kind] += 1
    n = sum(counts.values())
    return {"near_bars": n, "counts": counts,
            "shares": {k: v / n if n else None for k, v in counts.items()}}


def main() -> None:
    args = model_parser(__doc__).parse_args()
    torch.set_num_threads(1)
    results = {}
    for path in args.models:
        trained = load_model(path)
        tokens, meters, _ = split_windows(trained, args.data, args.split)
        r = results[path] = lost_changes(trained.model.eval(), tokens, meters)
        print(f"{path}: {r['near_bars']} near-repeats")
        for kind in KINDS:
            share = r["shares"][kind]
            print(f"  {kind:25s} {r['counts'][kind]:5d}"
                  + ("" if share is None else f" ({share:.3f})"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
