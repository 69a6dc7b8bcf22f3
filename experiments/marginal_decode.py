"""Would decoding each step from the copy path's marginal beat the per-bar choice?

`free_run` takes each bar's likeliest copy choice (generate, or copy bar j) and then each step's
likeliest class under it, so that what is reported as a bar's source is what the decoder used.
The per-step marginal over the choices,

    p(x_s) = (pi_gen + sum_j pi_j eps_s) g_s(x) + sum_j pi_j (1 - eps_s) [x = bar j's step s],

maximises each step's chance of being right instead. This scores a model's free-running
accuracy both ways on a folder's test split (as `tvae evaluate` reads it), with nothing else
changed.

    python -m experiments.marginal_decode [MODEL] [--data corpus] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from tvae.eval.folder import evaluate_folder
from tvae.model.decoding import FreeRunning
from tvae.model.modules import mask_logits
from tvae.model.pointer import per_step

KEYS = ("free_accuracy", "free_accuracy_pickups_known", "near_repeats_exact",
        "transfer_follow_rate", "transfer_spurious_rate")


def marginal_mix(row: Tensor, sources: Tensor, log_eps: Tensor, meters: Tensor
                 ) -> Callable[[Tensor], Tensor]:
    """For one bar: row (B, 1, 1 + i) pointer log weights, sources (B, i, S) decoded bars,
    log_eps (B, 1, S or 1) edit log-chances -> masked logits (B, 1, S, V) -> the per-step
    marginal's log-probabilities."""
    eps = per_step(log_eps).exp()[..., None]  # (B, 1, S or 1, 1)

    def mix(logits: Tensor) -> Tensor:
        gen = mask_logits(logits.float(), meters).softmax(-1)  # (B, 1, S, V)
        pi = row.exp()  # (B, 1, 1 + i)
        onehot = F.one_hot(sources, gen.shape[-1]).to(gen.dtype)  # (B, i, S, V)
        copied = torch.einsum("bkj,bjsv->bksv", pi[..., 1:], onehot)  # (B, 1, S, V)
        edits = pi[..., 1:].sum(-1)[..., None, None] * eps  # (B, 1, S or 1, 1)
        probs = (pi[..., :1, None] + edits) * gen + copied * (1 - eps)
        return mask_logits(probs.clamp(min=1e-12).log(), meters)

    return mix


@contextmanager
def marginal_decoding() -> Any:
    """Inside: `free_run` decodes every copy-path bar from the per-step marginal."""
    original = FreeRunning._mixer

    def mixer(self: Any, pointers: Any, i: int, sources: list[Tensor], meters: Tensor,
              sampler: Any, forced: Tensor | None = None, edits: Tensor | None = None) -> Any:
        log_pi, log_eps = pointers
        if (log_pi is None or not sources or log_eps is None or forced is not None
                or edits is not None):
            return original(self, pointers, i, sources, meters, sampler, forced, edits)
        return marginal_mix(log_pi[:, i : i + 1, : 1 + len(sources)],
                            torch.cat(sources, dim=1), log_eps[:, i : i + 1], meters)

    FreeRunning._mixer = mixer  # type: ignore[method-assign]
    try:
        yield
    finally:
        FreeRunning._mixer = original  # type: ignore[method-assign]


def run(model: str | None, data: str) -> dict[str, Any]:
    """Both decodings' numbers: {"per-bar choice": {...}, "per-step marginal": {...}}."""
    out = {"per-bar choice": evaluate_folder(data, model, progress=False)}
    with marginal_decoding():
        out["per-step marginal"] = evaluate_folder(data, model, progress=False)
    return {name: {k: r.get(k) for k in KEYS} for name, r in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", default=None, help="checkpoint (default: bundled)")
    parser.add_argument("--data", default="corpus")
    parser.add_argument("--json", default=None, help="write the numbers here")
    args = parser.parse_args()
    result = run(args.model, args.data)
    for name, numbers in result.items():
        print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in numbers.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
