"""Choosing the torch device a command runs on."""

from __future__ import annotations

import torch

from tvae.errors import TvaeError


def pick_device(name: str) -> torch.device:
    """`auto` is CUDA where available, else CPU; a CUDA device that is not there is refused."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TvaeError(f"--device {name}: CUDA is not available on this machine")
    return torch.device(name)
