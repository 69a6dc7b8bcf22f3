"""The validation loss: the training objective itself (`objective.vae_objective`, every term:
free bits, recon weight, pointer and class terms) on the validation windows, at beta after its
warm-up (the top of a cycle), the pointer weight's final value and --repeat-beta (where
--repeat-beta-from starts it late as well), so that epochs compare; the
latent is sampled from a fixed seed, so the same weights always get the same number. `best`
and early stopping use it: they pick what the run optimises.

Shape legend: B windows, N bars, S steps per bar.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from tvae.config import TrainConfig
from tvae.data.windows import Windows
from tvae.model.forward import Noise
from tvae.training.objective import vae_objective
from tvae.training.schedules import pointer_at

BATCH = 64


@torch.no_grad()
def validation_loss(model: torch.nn.Module, windows: Windows, cfg: TrainConfig,
                    total_steps: int, labels_of: Callable[[np.ndarray], np.ndarray] | None = None,
                    device: torch.device | str = "cpu") -> dict[str, float]:
    """Means per real bar over the first `cfg.eval_windows` windows (all with 0): 'loss' (the
    objective at beta after warm-up and the final pointer weight, teacher-forced), 'recon' and
    'kl' (nats), 'pointer' (the pointer loss per bar with a target; NaN without a copy
    path) and 'edit' (the edit loss per copied bar it teaches; NaN without an edit weight).
    Non-finite weights give an infinite loss, never a best of 0."""
    was_training = model.training
    model.eval()
    n = len(windows) if cfg.eval_windows <= 0 else min(cfg.eval_windows, len(windows))
    beta, pointer_weight = cfg.beta, pointer_at(total_steps, cfg)  # beta after warm-up
    generator = torch.Generator().manual_seed(cfg.seed)
    sums = {"loss": 0.0, "recon": 0.0, "kl": 0.0, "pointer": 0.0, "edit": 0.0}
    bars = 0
    units = {"pointer": 0, "edit": 0}  # the auxiliary losses' bars (each one's divisor)
    for start in range(0, n, BATCH):
        idx = np.arange(start, min(start + BATCH, n))
        tokens, meters = (torch.as_tensor(a) for a in windows.batch(idx, None, trim=True))
        noise = Noise.draw(tuple(tokens.shape), model.config.d_latent, generator)
        labels = None
        if labels_of is not None and model.classifier is not None:
            labels = torch.as_tensor(labels_of(idx), device=device)
        tokens, meters = tokens.to(device), meters.to(device)
        out = model(tokens, meters, noise=noise.map(lambda t: t.to(device)))
        parts = vae_objective(out, tokens, beta=beta, free_bits=cfg.free_bits,
                              recon_weight=cfg.recon_weight, labels=labels,
                              class_weight=cfg.class_weight, pointer_weight=pointer_weight,
                              pointer_edits=cfg.pointer_edits, pointer_cap=cfg.pointer_cap,
                              edit_weight=cfg.edit_weight,
                              repeat_beta=cfg.repeat_beta,
                              source_weight=cfg.source_weight)
        count = int((tokens != 0).any(-1).sum())
        bars += count
        for key, value in (("loss", parts.loss), ("recon", parts.recon), ("kl", parts.kl)):
            sums[key] += float(value) * count
        for part, mean, has in (("pointer", parts.pointer_loss, parts.pointer_count),
                                ("edit", parts.edit_loss, parts.edit_count)):
            if mean is not None and has is not None:
                sums[part] += float(mean) * int(has)
                units[part] += int(has)
    model.train(was_training)
    result = {k: sums[k] / max(bars, 1) for k in ("loss", "recon", "kl")}
    for part, has in units.items():
        result[part] = sums[part] / has if has else math.nan
    if not math.isfinite(result["loss"]):
        result["loss"] = math.inf
    return result
