"""The learned prior over bar latents: p(c_k, z_k | z_<k), a small causal Transformer over bars.

N(0, I) draws every bar's latent alone, and puts mass where the encoder never puts songs. This
prior reads the latents of the bars before k (and the meter) and gives

- p(c_k | z_<k): bar k's copy choice, "generate" (c = 0) or "copy the bar o back" (c = o,
  1..O), the choices the VAE's pointer makes (tvae.model.pointer): a sample's form is drawn
  first, bar by bar;
- p(z_k | c_k, z_<k): a mixture of K diagonal Gaussians, given the choice.

Marginally p(z_k | z_<k) = sum_c p(c | z_<k) p(z_k | c, z_<k), a density: the KL of a posterior
against it (an ELBO under the learned prior) is estimated by sampling the posterior.

Bar k's outputs depend on z_0..z_{k-1} only (tested through gradients). Songs longer than the
window W the prior was fitted on are read and drawn W bars at a time, each bar from the W - 1
before it, so scoring and drawing stay linear in bars.

Shape legend: B batch, N bars, Z latent size, D width, O offsets, C = 1 + O choices,
K mixture components.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tvae.config import PriorConfig
from tvae.melody import METERS
from tvae.model.modules import Block, attention_mask, positions

LOG_2PI = math.log(2.0 * math.pi)
LOG_STD_RANGE = (-7.0, 2.0)  # a component's log standard deviation is clamped to this


class LatentPrior(nn.Module):
    """p(c_k, z_k | z_<k, meter). Build with `LatentPrior(PriorConfig(...), Z, O)`, O the
    VAE's `copy_offsets` (0 for a model without a copy path: every bar is generated)."""

    def __init__(self, config: PriorConfig, d_latent: int, offsets: int) -> None:
        super().__init__()
        self.config, self.d_latent, self.offsets = config, d_latent, offsets
        D, Z, K = config.d_model, d_latent, config.components
        self.z_in = nn.Linear(Z, D)
        self.start = nn.Parameter(torch.zeros(D))  # input of bar 0
        self.meter = nn.Embedding(len(METERS), D)
        self.blocks = nn.ModuleList(Block(D, config.n_heads, config.d_ff, config.dropout,
                                          cross=False) for _ in range(config.layers))
        self.norm = nn.LayerNorm(D)
        self.choice = nn.Linear(D, 1 + offsets)  # generate, copy 1..O bars back
        self.choice_in = nn.Embedding(1 + offsets, D)
        self.mixture = nn.Sequential(nn.Linear(D, D), nn.GELU(), nn.Linear(D, K * (1 + 2 * Z)))

    # -- the network -----------------------------------------------------------------------
    def hidden(self, z: Tensor, meters: Tensor, bar_mask: Tensor) -> Tensor:
        """z (B, N, Z), meters (B, N), bar_mask (B, N) -> h (B, N, D); h_k reads z_<k only."""
        B, N, _ = z.shape
        D = self.config.d_model
        x = torch.cat([self.start.expand(B, 1, D), self.z_in(z[:, :-1])], dim=1)  # (B, N, D)
        x = x + positions(N, D, z.device) + self.meter(meters)
        mask = attention_mask(bar_mask, True)
        for block in self.blocks:
            x = block(x, mask, True)
        return self.norm(x)

    def choice_log_probs(self, h: Tensor, bar_mask: Tensor) -> Tensor:
        """log p(c_k | z_<k) (B, N, C): copying o bars back is possible where bar k - o is a
        real bar of the window; generating always is."""
        N = h.shape[1]
        k = torch.arange(N, device=h.device)[:, None]  # (N, 1)
        o = torch.arange(1 + self.offsets, device=h.device)[None]  # (1, C)
        back = (k - o).clamp(min=0)  # (N, C) the bar copied
        allowed = (o <= k)[None] & bar_mask.gather(1, back.flatten()[None].expand(
            bar_mask.shape[0], -1)).view(-1, N, 1 + self.offsets)  # (B, N, C)
        allowed[..., 0] = True
        logits = self.choice(h).float().masked_fill(~allowed, float("-inf"))
        return logits.log_softmax(-1)

    def components(self, h: Tensor, choice: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The mixture of z_k given choice (B, N) long: log weights (B, N, K), means and log
        standard deviations (B, N, K, Z)."""
        B, N, _ = h.shape
        K, Z = self.config.components, self.d_latent
        out = self.mixture(h + self.choice_in(choice)).float()  # (B, N, K (1 + 2 Z))
        log_w = out[..., :K].log_softmax(-1)
        mean, log_std = out[..., K:].view(B, N, K, 2 * Z).chunk(2, dim=-1)
        return log_w, mean, log_std.clamp(*LOG_STD_RANGE)

    @staticmethod
    def mixture_log_density(z: Tensor, log_w: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
        """log of the mixture's density at z (B, N, Z): (B, N)."""
        d = (z.float()[..., None, :] - mean) * torch.exp(-log_std)  # (B, N, K, Z)
        comp = -0.5 * (d.square() + LOG_2PI).sum(-1) - log_std.sum(-1)  # (B, N, K)
        return (log_w + comp).logsumexp(-1)

    # -- scoring ---------------------------------------------------------------------------
    def joint_log_prob(self, z: Tensor, meters: Tensor, bar_mask: Tensor, choice: Tensor
                       ) -> Tensor:
        """log p(c_k, z_k | z_<k) (B, N) of the observed choices (B, N) long: what fitting
        maximises. A lower bound of `log_marginal`."""
        h = self.hidden(z, meters, bar_mask)
        log_c = self.choice_log_probs(h, bar_mask).gather(-1, choice[..., None])[..., 0]
        return log_c + self.mixture_log_density(z, *self.components(h, choice))

    def log_marginal(self, z: Tensor, meters: Tensor, bar_mask: Tensor) -> Tensor:
        """log p(z_k | z_<k) (B, N), the choice summed out, all in one window."""
        h = self.hidden(z, meters, bar_mask)
        log_c = self.choice_log_probs(h, bar_mask)  # (B, N, C)
        terms = []
        for c in range(1 + self.offsets):
            choice = torch.full(z.shape[:2], c, dtype=torch.long, device=z.device)
            terms.append(log_c[..., c] + self.mixture_log_density(z, *self.components(h, choice)))
        return torch.stack(terms, -1).logsumexp(-1)

    def log_marginal_windowed(self, z: Tensor, meters: Tensor, bar_mask: Tensor, window: int
                              ) -> Tensor:
        """`log_marginal` (B, N) of songs of any length: the first `window` bars in one window,
        each later bar from the window ending at it (0: one window)."""
        N = z.shape[1]
        if window <= 0 or window >= N:
            return self.log_marginal(z, meters, bar_mask)
        first = self.log_marginal(z[:, :window], meters[:, :window], bar_mask[:, :window])
        B, Z = z.shape[0], z.shape[2]
        zw = z.unfold(1, window, 1)[:, 1:].permute(0, 1, 3, 2)  # (B, N - W, W, Z)
        mw = meters.unfold(1, window, 1)[:, 1:]  # (B, N - W, W)
        bw = bar_mask.unfold(1, window, 1)[:, 1:]
        later = self.log_marginal(zw.reshape(-1, window, Z), mw.reshape(-1, window),
                                  bw.reshape(-1, window))[:, -1]
        return torch.cat([first, later.view(B, N - window)], dim=1)

    # -- drawing ---------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n_bars: int, meters: Tensor, window: int, temperature: float = 1.0,
               generator: torch.Generator | None = None, prompt: Tensor | None = None
               ) -> tuple[Tensor, Tensor]:
        """Draw latents bar by bar: meters (B, n_bars); `prompt` (B, P, Z) fixes the first P
        latents (a melody to continue). Each bar's choice, then its mixture component, then
        z = mean + temperature * std * noise; temperature 0 takes the likeliest choice and
        component and their mean. Returns z (B, n_bars, Z) and the choices (B, n_bars): 0
        generate, o copy the bar o back, -1 a prompt bar."""
        B, Z = meters.shape[0], self.d_latent
        device = meters.device
        z = torch.zeros(B, n_bars, Z, device=device)
        choices = torch.full((B, n_bars), -1, dtype=torch.long, device=device)
        P = 0 if prompt is None else min(prompt.shape[1], n_bars)
        if P:
            z[:, :P] = prompt[:, :P]
        for k in range(P, n_bars):
            lo = max(0, k - window + 1) if window > 0 else 0
            zw, mw = z[:, lo : k + 1], meters[:, lo : k + 1]
            real = torch.ones(zw.shape[:2], dtype=torch.bool, device=device)
            hw = self.hidden(zw, mw, real)  # (B, k + 1 - lo, D)
            h, log_c = hw[:, -1:], self.choice_log_probs(hw, real)[:, -1:]  # (B, 1, D), (B, 1, C)
            c = _draw(log_c, temperature, generator)  # (B, 1)
            log_w, mean, log_std = self.components(h, c)  # (B, 1, K), (B, 1, K, Z)
            m = _draw(log_w, temperature, generator)  # (B, 1)
            idx = m[..., None, None].expand(B, 1, 1, Z)
            mean, std = mean.gather(2, idx)[:, :, 0], log_std.gather(2, idx)[:, :, 0].exp()
            noise = torch.randn(mean.shape, generator=generator, device=device)
            z[:, k : k + 1] = mean + temperature * std * noise
            choices[:, k] = c[:, 0]
        return z, choices


def log_normal(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; mu, exp(logvar)) (B, N) of diagonal Gaussians over the last axis."""
    return -0.5 * (((z - mu).square() * torch.exp(-logvar)) + logvar + LOG_2PI).sum(-1)


def kl_bits_against(prior: LatentPrior, mu: Tensor, logvar: Tensor, meters: Tensor,
                    bar_mask: Tensor, window: int, generator: torch.Generator | None = None,
                    samples: int = 2) -> Tensor:
    """KL(q(z | x) || p(z | z_<k)) in bits per bar (B, N), a Monte Carlo estimate over
    `samples` draws of z ~ q: E_q[log q(z | x) - log p(z_k | z_<k)], the choice summed out."""
    total = torch.zeros(mu.shape[:2], device=mu.device)
    for _ in range(samples):
        z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=generator,
                                                       device=mu.device)
        log_p = prior.log_marginal_windowed(z, meters, bar_mask, window)
        total += (log_normal(z, mu, logvar) - log_p) / math.log(2.0)
    return total / samples


def _draw(log_p: Tensor, temperature: float, generator: torch.Generator | None) -> Tensor:
    """(B, 1) index drawn from log-probabilities (B, 1, M) sharpened by 1 / temperature;
    the likeliest at temperature 0."""
    if temperature <= 0:
        return log_p.argmax(-1)
    probs = F.softmax(log_p / temperature, dim=-1).reshape(-1, log_p.shape[-1])
    return torch.multinomial(probs, 1, generator=generator).view(log_p.shape[:-1])
