"""Whether a run's configs fit this machine's memory, checked before anything is built.

The configs' ranges bound each number alone (a width, a depth, a window), but not their
product: a 16384-wide model of 64 layers, or a 4096-bar window at batch 64, passes each range and
then fails deep inside torch with a traceback, or takes the machine's memory. Here the model is
built on the meta device (nothing allocated) to count its parameters, and the step's largest
tensors are estimated from the window; a run that cannot fit is one TvaeError up front.
"""

from __future__ import annotations

import math
import os

import torch

from tvae.config import DataConfig, GridConfig, ModelConfig, TrainConfig
from tvae.errors import TvaeError
from tvae.model.vae import TransformerVAE

FLOAT = 4  # bytes
PER_PARAMETER = 4 * FLOAT  # weight, gradient and AdamW's two moments


def physical_memory() -> int | None:
    """Bytes of RAM on this machine (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def parameter_count(model: ModelConfig, grid: GridConfig) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in TransformerVAE(model, grid).parameters())


def step_bytes(model: ModelConfig, grid: GridConfig, data: DataConfig, train: TrainConfig,
               world: int = 1) -> int:
    """A floor on the memory one training step needs: parameters with gradients and AdamW's
    moments, the attention maps (B, heads, N, N) of every layer and the per-step logits
    (B, N, S, V) kept for the backward pass. The real peak is higher; a run under this floor
    cannot start."""
    B, N = math.ceil(train.batch_size / world), data.bars
    S, V = grid.steps_per_bar, grid.vocab_size
    layers = model.enc_layers + 2 * model.dec_layers  # decoder: self- and cross-attention
    attention = 3 * B * model.n_heads * N * N * layers * FLOAT  # scores, softmax, dropout
    logits = 3 * B * N * S * V * FLOAT  # logits, log-softmax, the mixture
    width = 4 * B * N * (model.d_model + model.d_ff) * (layers + 2) * FLOAT
    return parameter_count(model, grid) * PER_PARAMETER + attention + logits + width


def check_budget(model: ModelConfig, grid: GridConfig, data: DataConfig, train: TrainConfig,
                 device: torch.device, world: int = 1) -> None:
    """Refuse, in one line, a run whose step cannot fit this machine's memory (CPU: its RAM;
    CUDA: the device's memory)."""
    if device.type == "cuda":
        available: int | None = torch.cuda.get_device_properties(device).total_memory
    elif device.type == "cpu":
        available = physical_memory()
    else:
        available = None
    if available is None:
        return
    need = step_bytes(model, grid, data, train, world)
    if need > available:
        raise TvaeError(f"this run needs at least {need / 2**30:,.1f} GiB for one step (model "
                        f"size, --batch-size {train.batch_size}, --bars {data.bars}); "
                        f"{device.type} memory here is {available / 2**30:,.1f} GiB: use a "
                        "smaller model, batch or window")
