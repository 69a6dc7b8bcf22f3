"""Configs saved before a field existed are read with what they meant then: an old run resumes
(and an old recipe reruns) with the pointer loss off, no phrase augmentation, one edit chance."""

from __future__ import annotations

from dataclasses import asdict

from tvae.config import DataConfig, ModelConfig, TrainConfig, config_from_dict
from tvae.model.legacy import legacy_fields, legacy_model_fields


def test_missing_fields_take_their_old_meaning_not_the_new_defaults() -> None:
    data = asdict(DataConfig())
    train = asdict(TrainConfig())
    model = asdict(ModelConfig())
    for key in ("repeat_augment", "repeat_edits"):
        data.pop(key)
    for key in ("pointer_weight", "pointer_cap", "pointer_edits", "repeat_beta",
                "repeat_beta_from"):
        train.pop(key)
    model.pop("copy_edit_steps")
    old_data = config_from_dict(DataConfig, legacy_fields("data", data))
    old_train = config_from_dict(TrainConfig, legacy_fields("train", train))
    old_model = config_from_dict(ModelConfig, legacy_model_fields(model))
    assert (old_data.repeat_augment, old_data.repeat_edits) == (0.0, 0.0)
    assert (old_train.pointer_weight, old_train.pointer_cap, old_train.pointer_edits) == (
        0.0, 1.0, 0)
    assert (old_train.repeat_beta, old_train.repeat_beta_from) == (1.0, 0.0)
    assert old_model.copy_edit_steps is False
    # a config with --repeat-beta but saved before --repeat-beta-from meant it from step 0
    assert legacy_fields("train", {"repeat_beta": 2.0})["repeat_beta_from"] == 0.0
    # fields that are present are never overridden
    assert legacy_fields("train", {"pointer_cap": 0.5})["pointer_cap"] == 0.5
    assert legacy_fields("grid", {"x": 1}) == {"x": 1}
