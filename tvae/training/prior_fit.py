"""Fitting the learned prior (tvae.model.prior) after the VAE, on its posterior samples.

Each step encodes a batch of training windows with the frozen VAE (transposed at random, no
repeat augmentation: the prior should learn the data's form), draws z ~ q(z | x), labels each
bar with the copy choice the VAE's pointer makes for that z, and maximises log p(c, z) under the
prior. Validation estimates, on fixed windows and fixed noise, the KL of the posterior against
the learned prior (E_q[log q(z | x) - log p(z)], in bits per bar, the choice summed out) beside
the KL against N(0, I); the step with the lowest is kept.

Shape legend: B windows, N bars, Z latent size.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tvae.config import PAD, DataConfig, PriorConfig, PriorFitConfig, config_to_dict
from tvae.data.arrays import SongArrays
from tvae.data.windows import Windows
from tvae.errors import TvaeError
from tvae.eval.form import reference_stats
from tvae.melody import METERS
from tvae.model.forward import LN2, kl_per_bar
from tvae.model.prior import LatentPrior, kl_bits_against
from tvae.model.vae import TransformerVAE
from tvae.training.schedules import learning_rate

REFERENCE_BARS = (8, 16, 32)  # sample lengths the data's form statistics are kept for


def choice_labels(model: TransformerVAE, z: Tensor, bar_mask: Tensor) -> Tensor:
    """(B, N) the copy choice the VAE's pointer makes for each bar of z (B, N, Z): 0 generate,
    o copy the bar o back (always 0 without a copy path)."""
    log_pi = model.log_pointer(z, bar_mask)
    if log_pi is None:
        return torch.zeros(z.shape[:2], dtype=torch.long, device=z.device)
    best = log_pi.argmax(-1)  # (B, N): 0 generate, 1 + j copy bar j
    k = torch.arange(z.shape[1], device=z.device)
    return torch.where(best > 0, k - (best - 1), 0)


def fit_windows(model: TransformerVAE, data: DataConfig, fit: PriorFitConfig) -> DataConfig:
    """The windows the prior learns from: the model's training window, the fit's transposition,
    no repeat augmentation."""
    bars = model.config.trained_bars or data.bars
    return replace(data, bars=bars, transpose=fit.transpose, repeat_augment=0.0,
                   repeat_reach=0.0)


@torch.no_grad()
def evaluate_prior(model: TransformerVAE, windows: Windows, n: int, seed: int = 0,
                   batch_size: int = 64, samples: int = 2) -> dict[str, float]:
    """KL of the posterior against the learned prior and against N(0, I), bits per bar, over the
    first `n` windows: all bars, and split by the pointer's choice (generated / copied bars);
    also how often the prior's likeliest choice is the pointer's."""
    prior = model.prior
    assert prior is not None
    was = prior.training
    prior.eval()
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    window = model.config.trained_bars
    sums = dict.fromkeys(("bars", "learned", "normal", "copied", "learned_copied",
                          "normal_copied", "choice_hits"), 0.0)
    for start in range(0, min(n, len(windows)), batch_size):
        idx = np.arange(start, min(start + batch_size, n, len(windows)))
        tokens, meters = (torch.as_tensor(a, device=device) for a in windows.batch(idx, None,
                                                                                 trim=True))
        real = (tokens != PAD).any(-1)  # (B, N)
        mu, logvar = model.encode_windowed(tokens, meters, window)
        normal = kl_per_bar(mu, logvar) / LN2  # (B, N)
        learned = kl_bits_against(prior, mu, logvar, meters, real, window, gen, samples)
        labels = choice_labels(model, mu, real)
        if window <= 0 or tokens.shape[1] <= window:  # one window: the choices are comparable
            h = prior.hidden(mu, meters, real)
            hits = prior.choice_log_probs(h, real).argmax(-1) == labels
            sums["choice_hits"] += float((hits & real).sum())
        copied = real & (labels > 0)
        sums["bars"] += float(real.sum())
        sums["learned"] += float((learned * real).sum())
        sums["normal"] += float((normal * real).sum())
        sums["copied"] += float(copied.sum())
        sums["learned_copied"] += float((learned * copied).sum())
        sums["normal_copied"] += float((normal * copied).sum())
    prior.train(was)
    bars, copied = max(sums["bars"], 1.0), sums["copied"]
    new = max(bars - copied, 1.0)
    return {
        "kl_bits_learned": sums["learned"] / bars,
        "kl_bits_normal": sums["normal"] / bars,
        "kl_bits_learned_new": (sums["learned"] - sums["learned_copied"]) / new,
        "kl_bits_normal_new": (sums["normal"] - sums["normal_copied"]) / new,
        "kl_bits_learned_copied": sums["learned_copied"] / copied if copied else math.nan,
        "kl_bits_normal_copied": sums["normal_copied"] / copied if copied else math.nan,
        "choice_accuracy": sums["choice_hits"] / bars,
        "bars": int(sums["bars"]),
    }


def data_reference(songs: SongArrays, model: TransformerVAE) -> dict[str, Any]:
    """The data's form statistics (tvae.eval.form) per meter and sample length, for
    `tvae sample --metrics`: {"4/4": {"16": {...}}, ...}."""
    out: dict[str, Any] = {}
    for meter_id, (num, den) in enumerate(METERS):
        per_length = {str(b): stats for b in REFERENCE_BARS
                      if (stats := reference_stats(songs, model.grid, b, meter_id)) is not None}
        if per_length:
            out[f"{num}/{den}"] = per_length
    return out


def _fit_data(model: TransformerVAE, songs: SongArrays, data: DataConfig, fit: PriorFitConfig,
              say: Callable[[str], None]) -> tuple[DataConfig, Windows, Windows]:
    """The fit's window config, its training windows and its validation windows."""
    wdata = fit_windows(model, data, fit)
    train = Windows(songs, "train", wdata, model.grid)
    valid = Windows(songs, "valid", replace(wdata, transpose=0), model.grid)
    if len(train) == 0:
        raise TvaeError("the data has no training songs to fit a prior on")
    if len(valid) == 0:
        say("no validation songs: the prior is validated on training windows")
        valid = Windows(songs, "train", replace(wdata, transpose=0), model.grid)
    return wdata, train, valid


def prior_step(model: TransformerVAE, optimizer: torch.optim.Optimizer, tokens: Tensor,
               meters: Tensor, noise: torch.Generator) -> float:
    """One optimizer step of the prior on windows tokens (B, N, S): encode with the frozen VAE,
    draw z ~ q, label each bar with the pointer's choice for that z, maximise log p(c, z).
    Returns the loss in nats per real bar."""
    prior = model.prior
    assert prior is not None
    real = (tokens != PAD).any(-1)  # (B, N)
    with torch.no_grad():
        mu, logvar = model.encode(tokens, meters)
        z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=noise,
                                                       device=mu.device)
        labels = choice_labels(model, z, real)
    prior.train()
    log_p = prior.joint_log_prob(z, meters, real, labels)  # (B, N)
    loss = -(log_p * real).sum() / real.sum().clamp(min=1)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(prior.parameters(), 1.0)
    optimizer.step()
    return float(loss.detach())


def attach_prior(model: TransformerVAE, config: PriorConfig) -> LatentPrior:
    """Freeze the VAE and give it a new prior (`model.prior`) on its device."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    offsets = model.config.copy_offsets if model.config.copy != "none" else 0
    prior = LatentPrior(config, model.config.d_latent, offsets).to(
        next(model.parameters()).device)
    model.prior, model.prior_config = prior, config
    return prior


def fit_prior(model: TransformerVAE, songs: SongArrays, data: DataConfig, prior_config: PriorConfig,
              fit: PriorFitConfig, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Give `model` a learned prior fitted to its posteriors on `songs`' training split (the
    model is changed in place: `model.prior`); returns the record kept in the checkpoint (the
    configs, the best validation numbers, the data's form statistics)."""
    device = next(model.parameters()).device
    wdata, train, valid = _fit_data(model, songs, data, fit, say)
    torch.manual_seed(fit.seed)
    prior = attach_prior(model, prior_config)
    optimizer = torch.optim.AdamW(prior.parameters(), lr=fit.lr, weight_decay=0.01)
    rng = np.random.default_rng(fit.seed)
    noise = torch.Generator(device=device).manual_seed(fit.seed)
    n_valid = min(fit.eval_windows, len(valid))
    best: dict[str, Any] = {"kl_bits_learned": math.inf}
    best_state = copy.deepcopy(prior.state_dict())
    started, step, losses = time.monotonic(), 0, []
    while step < fit.steps:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, fit.lr, min(100, fit.steps // 10), fit.steps, 0.1)
        batch = train.batch(rng.integers(0, len(train), fit.batch_size), rng, trim=True)
        tokens, meters = (torch.as_tensor(a, device=device) for a in batch)
        losses.append(prior_step(model, optimizer, tokens, meters, noise))
        step += 1
        out_of_time = fit.max_minutes > 0 and time.monotonic() - started > 60 * fit.max_minutes
        if step % fit.eval_every == 0 or step == fit.steps or out_of_time:
            scores = evaluate_prior(model, valid, n_valid, seed=fit.seed)
            kept = scores["kl_bits_learned"] < best["kl_bits_learned"]
            if kept:
                best, best_state = {**scores, "step": step}, copy.deepcopy(prior.state_dict())
            say(f"prior step {step}: loss {np.mean(losses[-fit.eval_every:]):.2f} nats/bar, "
                f"valid KL {scores['kl_bits_learned']:.2f} bits/bar against the learned prior, "
                f"{scores['kl_bits_normal']:.2f} against N(0, I); choice accuracy "
                f"{scores['choice_accuracy']:.3f}{' (best)' if kept else ''}")
        if out_of_time:
            say(f"prior: stopped at the time limit ({fit.max_minutes:g} min)")
            break
    prior.load_state_dict(best_state)
    prior.eval()
    say("prior: reading the data's form statistics for `tvae sample --metrics`")
    return {"fit": config_to_dict(fit), "data": config_to_dict(wdata), "steps": step,
            "seconds": round(time.monotonic() - started, 1), "train_windows": len(train),
            "valid_windows": n_valid, "best": {k: (round(v, 4) if isinstance(v, float) else v)
                                               for k, v in best.items()},
            "reference": data_reference(songs, model)}
