"""What the Transformer VAE returns (`VAEOutput`), the random numbers a training step gives it
(`Noise`), and the KL of a bar's posterior against N(0, I).

Shape legend: B batch, N bars, S steps per bar, V vocabulary, Z latent size, C classes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class VAEOutput:
    """What `TransformerVAE.forward` returns: the model's distributions, no loss. The objective
    lives in `tvae.training.objective`."""

    log_probs: Tensor  # (B, N, S, V) step log-probabilities as decoded; -inf where impossible
    log_lik: Tensor  # (B, N) log-likelihood of each true bar in nats (0 for padding bars)
    kl_bars: Tensor  # (B, N) KL(q(z|x) || N(0, I)) of each bar in nats (0 for padding bars)
    mu: Tensor  # (B, N, Z)
    logvar: Tensor  # (B, N, Z)
    log_pi: Tensor | None = None  # (B, N, 1 + N) pointer log weights: generate, copy bar j
    log_eps: Tensor | None = None  # (B, N, S) or (B, N, 1) log edit chance of a copy's steps
    class_logits: Tensor | None = None  # (B, C) the supervised head on the mean latent


@dataclass(frozen=True)
class Noise:
    """The random numbers of one training forward pass, drawn by the caller: training draws
    them for the whole global batch from a generator seeded by (seed, step) and gives each
    process its rows, so a sample's noise depends on its row of the global batch, not on how
    the batch is split across processes. Without it, `forward` draws from torch's generator."""

    latent: Tensor  # (B, N, Z) standard normal: z = mu + sigma * latent
    bars: Tensor  # (B, N) uniform in [0, 1): scheduled sampling keeps true bar j where < p_tf
    steps: Tensor  # (B, N, S) uniform: the GRU bar decoder keeps a true step where < p_tf

    @classmethod
    def draw(cls, shape: tuple[int, int, int], d_latent: int,
             generator: torch.Generator | None = None) -> Noise:
        """Noise for tokens of `shape` (B, N, S) and a Z = `d_latent` latent, on the CPU."""
        B, N, S = shape
        latent = torch.randn((B, N, d_latent), generator=generator)
        return cls(latent, torch.rand((B, N), generator=generator),
                   torch.rand((B, N, S), generator=generator))

    def map(self, fn: Callable[[Tensor], Tensor]) -> Noise:
        """`fn` applied to each tensor: e.g. `noise.map(lambda t: t[rows])` for some rows."""
        return Noise(fn(self.latent), fn(self.bars), fn(self.steps))


LN2 = math.log(2.0)  # nats per bit: divide a KL in nats by LN2 for bits


def kl_per_bar(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) in nats, summed over the latent: (..., Z) -> (...), in
    float32."""
    mu, logvar = mu.float(), logvar.float()  # in float32 under bf16 autocast too
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(-1)
