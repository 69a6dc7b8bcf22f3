"""Fitting the lead-in head (`ModelConfig.lead_in`, `tvae.model.lead_in`) of a trained model on
its frozen posterior means, every other weight unchanged: how the bundled model got its head
(`scripts/fit_lead_in.py`). A bar's posterior at position 0 reads that bar alone (attention is
causal and nothing comes before it), so the rows are single bars: every training song's first
bar, with its lead-in, and as many bars from inside the songs at the even offsets where
training windows open (stride 2), whose lead-in is 0.

Shape legend: R rows, S steps per bar, Z latent size.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from tvae.data.arrays import SongArrays
from tvae.errors import TvaeError
from tvae.model.lead_in import lead_steps, mask_lead_logits
from tvae.model.vae import TransformerVAE


@dataclass(frozen=True)
class LeadFit:
    """How a fit went: rows (first bars, inside bars), mean NLL in nats and the share of rows
    whose lead-in the fitted head reads right (greedy), on the rows it was fitted on."""

    first_bars: int
    inside_bars: int
    nll: float
    accuracy: float


@dataclass(frozen=True)
class LeadInCounts:
    """How many songs of a data set open with a lead-in, and how many of their later bars have
    leading PAD steps (a lead-in anywhere else)."""

    songs: int
    songs_with_lead_in: int
    later_bars: int
    later_bars_with_lead_in: int


def lead_in_counts(songs: SongArrays) -> LeadInCounts:
    """`LeadInCounts` of every song of `songs` (all splits)."""
    tokens = np.asarray(songs.tokens)  # (T, S)
    rows = np.concatenate([s + np.arange(n) for s, n in zip(songs.starts, songs.lengths,
                                                              strict=True)]).astype(np.int64)
    leads = lead_steps(torch.as_tensor(tokens[rows].astype(np.int64))[:, None]).numpy()  # (R,)
    first = np.zeros(len(rows), dtype=bool)
    first[np.cumsum(np.concatenate([[0], songs.lengths[:-1]])).astype(np.int64)] = True
    return LeadInCounts(int(songs.n_songs), int((leads[first] > 0).sum()),
                        int((~first).sum()), int((leads[~first] > 0).sum()))


def lead_rows(songs: SongArrays, split: str = "train", seed: int = 0
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Single-bar rows: tokens (R, 1, S) and meters (R, 1), the `split`'s first bars and as many
    bars drawn from inside its songs (offsets 2, 4, ...)."""
    chosen = np.flatnonzero(songs.splits == split)
    if len(chosen) == 0:
        raise TvaeError(f"the data has no {split} songs to fit the lead-in head on")
    starts, lengths = songs.starts[chosen], songs.lengths[chosen]
    inside = [(s + np.arange(2, n, 2), np.full(len(range(2, n, 2)), k))
              for k, (s, n) in enumerate(zip(starts, lengths, strict=True))]
    rows = np.concatenate([r for r, _ in inside]).astype(np.int64)
    owner = np.concatenate([o for _, o in inside]).astype(np.int64)
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(rows))[: len(chosen)]
    bars = np.concatenate([starts, rows[pick]])
    meters = np.concatenate([songs.meters[chosen], songs.meters[chosen][owner[pick]]])
    tokens = torch.as_tensor(np.asarray(songs.tokens[bars], dtype=np.int64))[:, None]
    return tokens, torch.as_tensor(meters.astype(np.int64))[:, None]


def with_lead_head(model: TransformerVAE) -> TransformerVAE:
    """`model` itself if it has a lead-in head, else a copy with one (at zero: it decodes as
    `model` does), sharing nothing with it."""
    if model.lead is not None:
        return model
    out = TransformerVAE(replace(model.config, lead_in=True), model.grid, model.prior_config)
    out.load_state_dict(model.state_dict(), strict=False)
    return out.to(next(model.parameters()).device)


def fit_lead_in(model: TransformerVAE, songs: SongArrays, steps: int = 2000, lr: float = 1e-2,
                seed: int = 0, batch: int = 4096) -> tuple[TransformerVAE, LeadFit]:
    """Fit the lead-in head of `model` (added if it has none) on its posterior means of
    `lead_rows`, full-batch Adam for `steps` steps; the VAE's other weights are not touched.
    Returns the model (in eval mode) and how the fit went."""
    model = with_lead_head(model).eval()
    tokens, meters = lead_rows(songs, seed=seed)
    device = next(model.parameters()).device
    with torch.no_grad():
        mu = torch.cat([model.encode(tokens[i : i + batch].to(device),
                                     meters[i : i + batch].to(device))[0][:, 0].float()
                        for i in range(0, len(tokens), batch)])  # (R, Z)
    target = lead_steps(tokens).to(device)  # (R,)
    meters = meters.to(device)
    torch.manual_seed(seed)
    head = model.lead
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    for _ in range(steps):
        loss = F.cross_entropy(mask_lead_logits(head(mu), meters), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        logits = mask_lead_logits(head(mu), meters)
        nll = float(F.cross_entropy(logits, target))
        accuracy = float((logits.argmax(-1) == target).float().mean())
    n_first = int((songs.splits == "train").sum())
    return model, LeadFit(n_first, len(tokens) - n_first, nll, accuracy)
