"""tvae: structure-aware, interpretable melody representations with a bar-level Transformer VAE.

The public API is re-exported here and imported lazily, so `import tvae` (and the CLI's start-up)
does not pay for torch until a model is needed.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "TvaeError": "tvae.errors",
    "TvaeWarning": "tvae.errors",
    "GridConfig": "tvae.config",
    "Melody": "tvae.melody",
    "Note": "tvae.melody",
    "Bars": "tvae.melody",
    "melody_to_bars": "tvae.melody",
    "bars_to_melody": "tvae.melody",
    "read_melody": "tvae.midi",
    "read_midi": "tvae.midi",
    "write_melody": "tvae.midi",
    "melody_to_score": "tvae.convert",
    "score_to_melody": "tvae.convert",
    "melody_to_muspy": "tvae.convert",
    "muspy_to_melody": "tvae.convert",
    "ModelConfig": "tvae.config",
    "DataConfig": "tvae.config",
    "TrainConfig": "tvae.config",
    "TransformerVAE": "tvae.model.vae",
    "save_checkpoint": "tvae.model.checkpoint",
    "load_checkpoint": "tvae.model.checkpoint",
    "load_model": "tvae.inference",
    "TrainedModel": "tvae.inference",
    "train": "tvae.training.run",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tvae' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
