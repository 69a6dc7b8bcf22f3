"""Reading songs longer than the training window: each bar from the window ending at it.

A model trained on W-bar windows meets positions 0..W-1 only; these methods let it encode and
score songs of any length, bar i >= W from the W bars ending at i, in memory that stays bounded.
`TransformerVAE` takes them as a mixin (it provides `encode` and `decode_teacher_forced`).

Shape legend: B batch, N bars, S steps per bar, V vocabulary, Z latent size, W window.
"""

from __future__ import annotations

import torch
from torch import Tensor


class WindowedReading:
    """`encode_windowed`, `encode_chunked` and `decode_teacher_forced_windowed`, over the
    class's own `encode(tokens, meters)` and `decode_teacher_forced(z, tokens, meters)`."""

    @torch.no_grad()
    def encode_windowed(self, tokens: Tensor, meters: Tensor, window: int
                        ) -> tuple[Tensor, Tensor]:
        """Like `encode`, but bar i's posterior sees at most the `window` bars ending at i, with
        positions 0..window-1: a model trained on `window`-bar windows then reads songs of any
        length without meeting positions it never saw. tokens (B, N, S) -> (B, N, Z) twice."""
        B, N, S = tokens.shape
        if window <= 0 or window >= N:
            return self.encode(tokens, meters)
        mu, logvar = self.encode(tokens[:, :window], meters[:, :window])  # (B, W, Z)
        idx = torch.arange(1, N - window + 1, device=tokens.device)[:, None] + torch.arange(
            window, device=tokens.device)  # (N-W, W): the window ending at each later bar
        wins = tokens[:, idx].reshape(-1, window, S)  # (B*(N-W), W, S)
        mu2, logvar2 = self.encode(wins, meters[:, idx].reshape(-1, window))
        last = (mu2[:, -1].view(B, N - window, -1), logvar2[:, -1].view(B, N - window, -1))
        return torch.cat([mu, last[0]], dim=1), torch.cat([logvar, last[1]], dim=1)

    @torch.no_grad()
    def encode_chunked(self, tokens: Tensor, meters: Tensor, window: int, chunk: int
                       ) -> tuple[Tensor, Tensor]:
        """`encode_windowed`, `chunk` windows at a time: the same posteriors (B, N, Z) twice,
        with memory bounded however long the song (one batch of N windows took 1.4 GB at 4,096
        bars). Bar i >= W reads the W bars ending at i, so a chunk of bars [lo, hi) needs the
        bars from lo - W + 1 and keeps its outputs from index W - 1 on."""
        n, w = tokens.shape[1], window
        if w <= 0 or n <= w + chunk:
            return self.encode_windowed(tokens, meters, w)
        parts = [self.encode_windowed(tokens[:, :w + chunk], meters[:, :w + chunk], w)]
        for lo in range(w + chunk, n, chunk):
            hi = min(lo + chunk, n)
            mu, logvar = self.encode_windowed(tokens[:, lo - w + 1:hi], meters[:, lo - w + 1:hi],
                                              w)
            parts.append((mu[:, w - 1:], logvar[:, w - 1:]))  # (B, hi - lo, Z) each
        return torch.cat([p[0] for p in parts], 1), torch.cat([p[1] for p in parts], 1)

    @torch.no_grad()
    def decode_teacher_forced_windowed(self, z: Tensor, tokens: Tensor, meters: Tensor,
                                       window: int) -> tuple[Tensor, Tensor]:
        """Like `decode_teacher_forced`, but bar i's decoder sees at most the `window` bars
        ending at i (as `encode_windowed` reads them): (B, N, S, V) and (B, N)."""
        B, N, S = tokens.shape
        if window <= 0 or window >= N:
            return self.decode_teacher_forced(z, tokens, meters)
        log_probs, log_lik = self.decode_teacher_forced(z[:, :window], tokens[:, :window],
                                                        meters[:, :window])
        idx = torch.arange(1, N - window + 1, device=tokens.device)[:, None] + torch.arange(
            window, device=tokens.device)  # (N-W, W): the window ending at each later bar
        lp, ll = self.decode_teacher_forced(z[:, idx].reshape(-1, window, z.shape[-1]),
                                            tokens[:, idx].reshape(-1, window, S),
                                            meters[:, idx].reshape(-1, window))
        lp = lp[:, -1].view(B, N - window, S, -1)  # (B, N-W, S, V)
        return (torch.cat([log_probs, lp], dim=1),
                torch.cat([log_lik, ll[:, -1].view(B, N - window)], dim=1))

