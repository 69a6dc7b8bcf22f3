"""Should an edited step never decode its source's note? The edit loss teaches a copy's edit
chance eps as "this step differs from the source", but decoding mixes eps x generator with
(1 - eps) x the source's token, so a step marked as an edit (eps > 0.5) still decodes the
source's note wherever the generator's own choice there is that note (25 of the bundled model's
98 lost changes, `experiments.near_lost`). This scores the model with decoding as it is and
with an edit that means another token: p(source's token) = 1 - eps, and eps spread over the
other tokens by the generator's renormalised probabilities (`differing_step_log_probs`).

    python -m experiments.edit_differs [MODEL] [--data corpus] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

import tvae.model.pointer as pointer

KEYS = ("tf_accuracy", "free_accuracy", "near_repeats_exact", "near_changes_kept",
        "transfer_follow_rate", "transfer_spurious_rate", "transfer_edit_follow_rate")


def differing_step_log_probs(gen_log_probs: Tensor, sources: Tensor, log_eps: Tensor,
                             edit_table: Tensor | None = None) -> Tensor:
    """`pointer.copy_step_log_probs` with an edit that is another token: (B, N, S, V), the
    source's token at log(1 - eps), every other token at log eps + its generator log-probability
    renormalised without the source's token."""
    bias = None if edit_table is None else edit_table[sources]  # (B, N, S, V)
    log_e = pointer.per_step(log_eps)[..., None]  # (B, N, S or 1, 1)
    gen = pointer.edit_log_probs(gen_log_probs, bias)  # (B, N, S, V)
    onehot = F.one_hot(sources, gen.shape[-1]).bool()
    other = gen.masked_fill(onehot, float("-inf"))
    other = other - torch.logsumexp(other, -1, keepdim=True)
    return torch.where(onehot, pointer.keep_log(log_e).expand_as(gen), log_e + other)


def score(model: str | None, data: str, differing: bool) -> dict[str, Any]:
    """`tvae evaluate`'s numbers (`KEYS`) with decoding as it is or with edits that differ."""
    from tvae.eval.folder import evaluate_folder

    kept = pointer.copy_step_log_probs
    if differing:
        pointer.copy_step_log_probs = differing_step_log_probs
    try:
        result = evaluate_folder(data, model, progress=False)
    finally:
        pointer.copy_step_log_probs = kept
    return {key: result[key] for key in KEYS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?")
    parser.add_argument("--data", default="corpus")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    results = {name: score(args.model, args.data, differing)
               for name, differing in (("as decoded", False), ("edits differ", True))}
    for name, row in results.items():
        print(f"{name:12s} " + ", ".join(f"{k} {v:.4f}" for k, v in row.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model or "bundled", **results}, f, indent=1)


if __name__ == "__main__":
    main()
