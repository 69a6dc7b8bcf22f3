"""Drawing new melodies from a trained model: each bar's latent from the learned prior (with its
copy choice) or from N(0, I), then decoded free-running (`TrainedModel.draw` and `sample`).

Shape legend: N bars, Z latent size, P prompt bars, S steps per bar.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from tvae.config import MAX_BARS, PRIOR_TEMPERATURE
from tvae.errors import TvaeError
from tvae.melody import Melody, Meter, meter_id, normalize_meter

if TYPE_CHECKING:
    from tvae.inference import TrainedModel


@torch.no_grad()
def draw_melody(tm: TrainedModel, n_bars: int = 8, temperature: float | None = None,
                seed: int = 0, meter: Meter = (4, 4), qpm: float = 120.0, top_k: int = 0,
                top_p: float = 1.0, prior: str = "auto",
                prior_temperature: float = PRIOR_TEMPERATURE, prompt: Melody | None = None
                ) -> tuple[Melody, list[int | None]]:
    """`TrainedModel.draw` (its docstring says what each argument does)."""
    if not 1 <= n_bars <= MAX_BARS:
        raise TvaeError(f"n_bars must be between 1 and {MAX_BARS}")
    if not (math.isfinite(prior_temperature) and 0.0 <= prior_temperature <= 100.0):
        raise TvaeError(f"prior temperature must be between 0 and 100, got "
                        f"{prior_temperature}")
    kind, Z = tm.prior_kind(prior), tm.model.config.d_latent
    if temperature is None:
        temperature = 0.0 if kind == "learned" else 1.0
    prefix, pickup, title = None, 0, f"seed {seed}, temperature {temperature:g}"
    z_prompt = np.zeros((0, Z), np.float32)
    if prompt is not None:
        prefix = tm.bars(prompt).tokens  # (P, S)
        if len(prefix) >= n_bars:
            raise TvaeError(f"the prompt has {len(prefix)} bars: ask for more bars than "
                            "that to continue it")
        z_prompt, meter, qpm, pickup = tm.encode(prompt), prompt.meter, prompt.qpm, \
            prompt.pickup
        title = f"{prompt.title} continued, seed {seed}"
    meter = normalize_meter(meter)
    if kind == "normal":
        z = np.random.default_rng(seed).standard_normal((n_bars, Z))
        z[: len(z_prompt)] = z_prompt
        choices = None
    else:
        gen = torch.Generator(device=tm.device).manual_seed(seed)
        meters = torch.full((1, n_bars), meter_id(meter), device=tm.device)
        zt, ct = tm.model.prior.sample(
            n_bars, meters, tm.window, prior_temperature, gen,
            torch.as_tensor(z_prompt, device=tm.device)[None] if len(z_prompt) else None)
        z, choices = zt[0].cpu().numpy(), ct[0].cpu().numpy()
    melody = tm.decode(z, meter, qpm, title, pickup, temperature, top_k, top_p, seed,
                         choices, prefix)
    if choices is None:
        sources = tm.copy_sources_of(np.asarray(z, np.float32))
        sources[: len(z_prompt)] = [None] * len(z_prompt)
    else:
        sources = [k - int(o) if o > 0 else None for k, o in enumerate(choices)]
    return melody, sources
