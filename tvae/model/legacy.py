"""What older checkpoints and run folders meant by the fields they lack: a saved config written
before a field existed is read with the value that reproduces what it did then, so an old model
loads as it was trained and an old run resumes as it began."""

from __future__ import annotations

from typing import Any

from tvae.config import DataConfig


def legacy_model_fields(model: Any, data: DataConfig | None = None) -> Any:
    """Fill in model fields that older checkpoints lack: written before the copy path existed,
    a model is a stock one (`copy` "none"); written before per-step edits, its copies have one
    edit chance (`copy_edit_steps` false); written before repeat features, its encoder finds
    repeats alone (`encoder_repeats` and `latent_repeats` false); written before the lead-in
    head, it decodes a pickup's lead-in steps as notes (`lead_in` false); without `trained_bars` (or
    with 0, not recorded), the window length is its data config's `bars`."""
    if not isinstance(model, dict):
        return model
    if "copy" not in model:
        model = {**model, "copy": "none"}
    if "copy_edit_steps" not in model:  # before per-step edits: one chance for every step
        model = {**model, "copy_edit_steps": False}
    if "encoder_repeats" not in model:  # before the encoder was told where repeats are
        model = {**model, "encoder_repeats": False}
    if "latent_repeats" not in model:  # before the posterior was told where repeats are
        model = {**model, "latent_repeats": False}
    if "encoder_edits" not in model:  # before the encoder read repeats as their edits
        model = {**model, "encoder_edits": False}
    if "edit_source" not in model:  # before edits read the source's token
        model = {**model, "edit_source": False}
    if "lead_in" not in model:  # before the first bar's latent said where a pickup starts
        model = {**model, "lead_in": False}
    if data is not None and model.get("trained_bars", 0) == 0:
        model = {**model, "trained_bars": data.bars}
    return model


# What fields added since a section was first written meant before they existed: a saved
# config without them is read with these values, so an old run resumes as it began.
LEGACY = {
    "data": {"repeat_augment": 0.0, "repeat_edits": 0.0, "repeat_reach": 0.0},
    "train": {"pointer_weight": 0.0, "pointer_cap": 1.0, "pointer_edits": 0, "spike_ratio": 0.0,
              "edit_weight": 0.0, "repeat_beta": 1.0, "repeat_beta_from": 0.0},
}


def legacy_fields(section: str, values: Any) -> Any:
    """`values` (a saved data or train section) with the fields it lacks at their LEGACY
    meaning; anything else (another section, not a dict) unchanged."""
    if not isinstance(values, dict) or section not in LEGACY:
        return values
    return {**{k: v for k, v in LEGACY[section].items() if k not in values}, **values}
