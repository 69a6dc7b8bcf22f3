"""Where do a near-repeat's bits go? For the near-repeats of a split's windows (a bar with no
identical earlier bar but one that differs from it in 1 or 2 steps, as `tvae evaluate` counts
them; z = posterior mean), it reports:

- their KL against that of new bars with the same number of onsets (a near-repeat of a sparse
  bar changes much of its content, so the card's ratio against all new bars mixes bar kinds);
- their KL by how many steps changed and whether only pitches changed (the rhythm kept);
- the KL the same bars get when each is replaced by its source (the window otherwise as it
  is): what being a repeat costs there, so that the rest is what the edit costs;
- for repeats, near-repeats and new bars, the KL's two parts: the posterior mean's distance from
  0 (sum of mu^2 / 2) and its variances' (sum of (sigma^2 - 1 - log sigma^2) / 2), in bits.

    python -m experiments.near_cost MODEL... [--data corpus] [--split test] [--json OUT]
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from experiments.common import model_parser, split_windows
from tvae.config import N_SPECIAL, PAD
from tvae.eval.structure import near_repeats, repeated_bars
from tvae.inference import load_model
from tvae.model.pointer import nearest_source

MIN_GROUP = 5  # an onset count is compared only where both kinds have this many bars


def kl_parts(model: torch.nn.Module, tokens: Tensor, meters: Tensor) -> tuple[Tensor, Tensor]:
    """(W, N) twice: the mean's and the variances' part of every bar's KL(q(z_k | bars 1..k) ||
    N(0, I)), in bits."""
    with torch.no_grad():
        mu, logvar = model.encode(tokens, meters)  # (W, N, Z) each
    mean = 0.5 * mu.square().sum(-1) / math.log(2.0)
    return mean, 0.5 * (logvar.exp() - 1.0 - logvar).sum(-1) / math.log(2.0)


def kl_bits(model: torch.nn.Module, tokens: Tensor, meters: Tensor) -> Tensor:
    """(W, N) every bar's KL in bits: the sum of its two parts."""
    mean, var = kl_parts(model, tokens, meters)
    return mean + var


def near_cost(model: torch.nn.Module, tokens: Tensor, meters: Tensor) -> dict[str, Any]:
    """tokens (W, N, S), meters (W, N) -> the near-repeats' KL, by group (module doc)."""
    W, N, S = tokens.shape
    kl_mean, kl_var = kl_parts(model, tokens, meters)  # (W, N) each, one encoding
    kl = kl_mean + kl_var
    near, rep = near_repeats(tokens), repeated_bars(tokens)  # (W, N)
    real = (tokens != PAD).any(-1)
    new = real & ~rep & ~near
    new[:, 0] = False
    offset, same = nearest_source(tokens, N - 1)  # (W, N), (W, N, S)
    source = (torch.arange(N)[None] - offset).clamp(min=0)  # (W, N) the source's index
    source_tokens = tokens.gather(1, source[..., None].expand(W, N, S))  # (W, N, S)
    changed = ~same & (tokens != PAD)  # (W, N, S)
    pitch_only = (~changed | ((tokens >= N_SPECIAL) & (source_tokens >= N_SPECIAL))).all(-1)
    onsets = (tokens >= N_SPECIAL).sum(-1)  # (W, N)

    def mean(mask: Tensor) -> float | None:
        return float(kl[mask].mean()) if bool(mask.any()) else None

    by_onsets, weights, ratios = [], [], []
    for count in range(S + 1):
        a, b = near & (onsets == count), new & (onsets == count)
        if int(a.sum()) >= MIN_GROUP and int(b.sum()) >= MIN_GROUP:
            row = {"onsets": count, "near": int(a.sum()), "kl_near": mean(a),
                   "new": int(b.sum()), "kl_new": mean(b)}
            row["ratio"] = row["kl_near"] / row["kl_new"]
            by_onsets.append(row)
            weights.append(row["near"])
            ratios.append(row["ratio"])
    by_change = []
    for steps in (1, 2):
        for kept_rhythm in (True, False):
            at = near & (changed.sum(-1) == steps) & (pitch_only == kept_rhythm)
            by_change.append({"steps_changed": steps, "pitches_only": kept_rhythm,
                              "bars": int(at.sum()), "kl": mean(at)})
    as_copies = torch.where(near[..., None], source_tokens, tokens)  # each near-repeat exact
    kl_as_copies = kl_bits(model, as_copies, meters)
    as_copy = float(kl_as_copies[near].mean()) if bool(near.any()) else None
    out = {"near_bars": int(near.sum()), "new_bars": int(new.sum()),
           "repeated_bars": int(rep.sum()), "kl_near": mean(near), "kl_new": mean(new),
           "kl_repeated": mean(rep), "by_onsets": by_onsets,
           "onset_matched_ratio": float(np.average(ratios, weights=weights)) if ratios else None,
           "by_change": by_change, "kl_near_as_exact_copies": as_copy}
    out["kl_of_the_edits"] = (out["kl_near"] - as_copy) if as_copy is not None else None
    out["kl_parts"] = {kind: {"mean": float(kl_mean[mask].mean()),
                              "variance": float(kl_var[mask].mean())}
                       for kind, mask in (("repeated", rep), ("near", near), ("new", new))
                       if bool(mask.any())}
    return out


def main() -> None:
    args = model_parser(__doc__).parse_args()
    torch.set_num_threads(1)
    results = {}
    for path in args.models:
        trained = load_model(path)
        tokens, meters, _ = split_windows(trained, args.data, args.split)
        r = results[path] = near_cost(trained.model.eval(), tokens, meters)
        print(f"{path}: {r['near_bars']} near-repeats at {r['kl_near']:.1f} KL bits, new bars "
              f"{r['kl_new']:.1f}, repeats {r['kl_repeated']:.1f}; against new bars with as many "
              f"onsets {r['onset_matched_ratio']:.2f}x")
        for row in r["by_onsets"]:
            print(f"  {row['onsets']:2d} onsets: {row['near']:4d} near {row['kl_near']:5.1f}, "
                  f"{row['new']:4d} new {row['kl_new']:5.1f} ({row['ratio']:.2f}x)")
        for row in r["by_change"]:
            kind = "pitches only" if row["pitches_only"] else "rhythm too"
            kl = "-" if row["kl"] is None else f"{row['kl']:.1f}"
            print(f"  {row['steps_changed']} step(s) changed, {kind}: {row['bars']} bars, {kl}")
        print("  the same bars as exact copies of their sources: "
              f"{r['kl_near_as_exact_copies']:.1f} bits (the edits: {r['kl_of_the_edits']:.1f})")
        print("  the KL's parts, mean / variances: " + ", ".join(
            f"{kind} {p['mean']:.1f} / {p['variance']:.1f}" for kind, p in r["kl_parts"].items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
