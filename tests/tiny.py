"""The tiny model every test trains or loads: one config, and the same as command-line flags."""

from __future__ import annotations

from tvae.config import ModelConfig, flag_of

TINY_FIELDS = dict(d_model=32, d_latent=8, n_heads=2, enc_layers=1, dec_layers=1, d_ff=64,
                   bar_hidden=32)
TINY_MODEL = ModelConfig(**TINY_FIELDS)  # type: ignore[arg-type]
TINY_ARGS = [part for name, value in TINY_FIELDS.items() for part in (flag_of(name), str(value))]
