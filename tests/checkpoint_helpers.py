"""Shared by the checkpoint tests: a tiny model, a batch and the one-line refusal check (their
fixtures, `saved` and `no_unpickling`, are in conftest.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tests.tiny import TINY_FIELDS
from tvae.config import GridConfig, ModelConfig
from tvae.errors import TvaeError
from tvae.model.checkpoint import load_checkpoint
from tvae.model.vae import TransformerVAE

SMALL = TINY_FIELDS


def tiny(seed: int = 0, **overrides: Any) -> TransformerVAE:
    torch.manual_seed(seed)
    return TransformerVAE(ModelConfig(**{**SMALL, **overrides}), GridConfig()).eval()


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, GridConfig().vocab_size, (2, 3, 16), generator=gen)
    return tokens, torch.zeros(2, 3, dtype=torch.long)


def refuses(path: Path, *words: str) -> TvaeError:
    with pytest.raises(TvaeError) as info:
        load_checkpoint(path)
    err = info.value
    assert err.path is not None and "\n" not in str(err)
    for word in words:
        assert word in err.reason, err.reason
    return err
