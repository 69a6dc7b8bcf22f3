"""Choosing the torch device a command runs on."""

from __future__ import annotations

import re

import torch

from tvae.errors import TvaeError

# What tvae runs on: the CPU, CUDA GPUs and Apple's MPS; "auto" picks CUDA when present.
DEVICE_FORM = re.compile(r"(cpu|mps|cuda)(:\d{1,4})?")


def pick_device(name: str) -> torch.device:
    """`auto` is CUDA where available, else CPU. Anything else must be "cpu", "mps", "cuda" or
    "cuda:N" for a device that is there; the rest (tpu, meta, empty...) is one TvaeError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(name, str) or not DEVICE_FORM.fullmatch(name):
        raise TvaeError(f"--device {name!r}: not a device tvae runs on (cpu, cuda, cuda:N, mps "
                        "or auto)")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TvaeError(f"--device {name}: CUDA is not available on this machine")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise TvaeError(f"--device {name}: this machine has {torch.cuda.device_count()} "
                            "CUDA device(s)")
    if name.startswith("mps") and not torch.backends.mps.is_available():
        raise TvaeError(f"--device {name}: MPS is not available on this machine")
    return torch.device(name)
