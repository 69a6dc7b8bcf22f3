"""How a decoded step's class is chosen from its logits: greedy, or drawn with a temperature,
top-k and nucleus (top-p) filtering.

Shape legend: V vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

Sampler = Callable[[Tensor], Tensor]  # masked logits (..., V) -> classes (...)


def argmax_sampler(logits: Tensor) -> Tensor:
    return logits.argmax(-1)


def make_sampler(temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                 generator: torch.Generator | None = None) -> Sampler:
    """Greedy when temperature is 0; else temperature, top-k and nucleus (top-p) sampling."""
    if temperature <= 0:
        return argmax_sampler

    def sample(logits: Tensor) -> Tensor:
        logits = logits / temperature
        if top_k > 0:
            kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if top_p < 1.0:
            sorted_logits, order = logits.sort(dim=-1, descending=True)
            cum = sorted_logits.softmax(-1).cumsum(-1)
            drop = cum - sorted_logits.softmax(-1) > top_p  # keep the smallest set reaching top_p
            logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
        probs = logits.softmax(-1).reshape(-1, logits.shape[-1])
        return torch.multinomial(probs, 1, generator=generator).view(logits.shape[:-1])

    sample.generator = generator  # type: ignore[attr-defined]  # the copy path draws with it
    return sample
