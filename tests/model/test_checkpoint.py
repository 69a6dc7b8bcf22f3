"""Checkpoints: exact save/load round trips, config JSON equality, atomic writes, and refusal of
anything that is not a tvae checkpoint - always a TvaeError, never unpickling."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from checkpoint_helpers import SMALL, batch, refuses, tiny
from safetensors.torch import save_file

import tvae.files
from tvae.config import (
    DataConfig,
    GridConfig,
    ModelConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
)
from tvae.errors import TvaeError
from tvae.model.checkpoint import (
    checkpoint_paths,
    load_checkpoint,
    restore_optimizer,
    save_checkpoint,
)
from tvae.model.vae import TransformerVAE
from tvae.training.objective import vae_objective

pytestmark = pytest.mark.usefixtures("torch_one_thread")


# -- round trips --------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides", [{}, {"bar_encoder": "gru", "bar_decoder": "gru",
                                            "n_classes": 3, "mask_cross": False}])
def test_save_load_gives_identical_weights_and_outputs(tmp_path: Path, no_unpickling: None,
                                                       overrides: dict[str, Any]) -> None:
    model = tiny(**overrides)
    grid = model.grid
    json_path = save_checkpoint(tmp_path / "run" / "best", model, state={"step": 3})
    assert json_path == tmp_path / "run" / "best.json"
    for name in (json_path, json_path.with_suffix(".safetensors"), json_path.with_suffix(""),
                 tmp_path / "run"):
        loaded, meta, optim = load_checkpoint(name)
        assert loaded.config == model.config and loaded.grid == grid and not loaded.training
        assert meta["state"] == {"step": 3} and optim == {}
        theirs = loaded.state_dict()
        assert set(theirs) == set(model.state_dict())
        assert all(torch.equal(v, theirs[k]) for k, v in model.state_dict().items())
    tokens, meters = batch()
    with torch.no_grad():
        a, b = model(tokens, meters, sample=False), loaded(tokens, meters, sample=False)
        z = torch.randn(2, 3, 8)
        assert torch.equal(model.free_run(z, meters), loaded.free_run(z, meters))
    assert torch.equal(a.log_probs, b.log_probs) and torch.equal(a.mu, b.mu)


def test_meta_carries_configs_vocabulary_and_state(saved: Path) -> None:
    meta = json.loads(saved.read_text())
    assert meta["format"] == "tvae-checkpoint" and meta["format_version"] == 1
    assert config_from_dict(ModelConfig, meta["model"]) == ModelConfig(**SMALL)
    assert config_from_dict(DataConfig, meta["data"]) == DataConfig(bars=4)
    assert config_from_dict(TrainConfig, meta["train"]) == TrainConfig(lr=3e-4)
    assert config_from_dict(GridConfig, meta["grid"]) == GridConfig()
    assert meta["vocabulary"] == {"pad": 0, "rest": 1, "hold": 2, "min_pitch": 48,
                                  "max_pitch": 96, "size": 52}
    assert meta["state"] == {"step": 7, "epoch": 1} and meta["labels"] == ["a", "b"]


@pytest.mark.parametrize("config", [
    GridConfig(), GridConfig(min_pitch=40, max_pitch=90, steps_per_bar=12),
    ModelConfig(), ModelConfig(**SMALL, bar_encoder="gru", mask_cross=False, dropout=0.25,
                               n_classes=5),
    DataConfig(), DataConfig(bars=16, stride=1, transpose=0, valid_fraction=0.1),
    TrainConfig(), TrainConfig(tf_schedule="logistic", tf_gamma=2.0, max_minutes=1.5, seed=9,
                               device="cuda:1", beta_schedule="cyclical"),
])
def test_configs_round_trip_through_json(config: Any) -> None:
    data = json.loads(json.dumps(config_to_dict(config)))
    assert config_from_dict(type(config), data) == config


def test_config_json_refuses_unknown_fields_and_wrong_types() -> None:
    with pytest.raises(TvaeError, match="unknown fields"):
        config_from_dict(ModelConfig, {**config_to_dict(ModelConfig()), "width": 3})
    with pytest.raises(TvaeError, match="d_model"):
        config_from_dict(ModelConfig, {"d_model": "256"})
    with pytest.raises(TvaeError, match="mask_cross"):
        config_from_dict(ModelConfig, {"mask_cross": 1})
    with pytest.raises(TvaeError, match="lr"):
        config_from_dict(TrainConfig, {"lr": True})
    assert config_from_dict(TrainConfig, {"lr": 1}).lr == 1  # an int is a valid float


def test_writes_are_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    json_path = save_checkpoint(tmp_path / "ck", tiny())
    save_checkpoint(tmp_path / "ck", tiny(seed=1))  # overwriting leaves no temporary files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.json", "ck.safetensors"]
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def crash(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(tvae.files.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(json_path, tiny(seed=2))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # old files intact


def test_optimizer_state_round_trips(tmp_path: Path, no_unpickling: None) -> None:
    model = tiny().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    tokens, meters = batch()

    def step(m: TransformerVAE, opt: torch.optim.Optimizer) -> None:
        torch.manual_seed(11)
        loss = vae_objective(m(tokens, meters), tokens, beta=1.0).loss
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(3):
        step(model, optimizer)
    save_checkpoint(tmp_path / "last", model, optimizer=optimizer)
    loaded, meta, tensors = load_checkpoint(tmp_path / "last")
    loaded.train()
    resumed = torch.optim.AdamW(loaded.parameters(), lr=0.5)  # groups come from the checkpoint
    restore_optimizer(resumed, meta, tensors)
    a, b = optimizer.state_dict(), resumed.state_dict()
    assert json.loads(json.dumps(a["param_groups"])) == b["param_groups"]  # tuples read as lists
    assert b["param_groups"][0]["lr"] == 1e-3
    assert a["state"].keys() == b["state"].keys()
    for pid, slots in a["state"].items():
        assert all(torch.equal(v, b["state"][pid][k]) for k, v in slots.items())
    step(model, optimizer)
    step(loaded, resumed)
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    with pytest.raises(TvaeError, match="no optimizer state"):
        restore_optimizer(resumed, {"optimizer_groups": None}, {})


# -- refusals -----------------------------------------------------------------------------------
@pytest.mark.parametrize("legacy", [False, True])
def test_refuses_a_pickle_passed_as_model(tmp_path: Path, no_unpickling: None,
                                          legacy: bool) -> None:
    buffer = io.BytesIO()
    torch.save(tiny().state_dict(), buffer, _use_new_zipfile_serialization=not legacy)
    pt = tmp_path / "model.pt"
    pt.write_bytes(buffer.getvalue())
    assert refuses(pt, "pickle", "never unpickles").path == str(pt)
    renamed = tmp_path / "renamed.safetensors"
    renamed.write_bytes(buffer.getvalue())
    refuses(renamed, "not found")  # no JSON beside it
    json_path = save_checkpoint(tmp_path / "real", tiny())
    json_path.with_suffix(".safetensors").write_bytes(buffer.getvalue())
    err = refuses(json_path, "pickle", "never unpickles")
    assert err.path == str(json_path.with_suffix(".safetensors"))
    json_path.write_bytes(buffer.getvalue())  # a pickle as the JSON
    assert refuses(json_path, "pickle").path == str(json_path)


def test_refuses_truncated_or_missing_weights(saved: Path, no_unpickling: None) -> None:
    weights = saved.with_suffix(".safetensors")
    raw = weights.read_bytes()
    for cut in (len(raw) // 2, 40, 7, 0):
        weights.write_bytes(raw[:cut])
        refuses(saved, "damaged")
    weights.unlink()
    refuses(saved, "weights not found")


def test_refuses_non_finite_weights(tmp_path: Path, no_unpickling: None) -> None:
    model = tiny()
    with torch.no_grad():
        model.mu.weight[0, 0] = float("nan")
    refuses(save_checkpoint(tmp_path / "nan", model), "NaN")


TAMPERINGS: dict[str, tuple[Callable[[dict], None], str]] = {
    "unknown field": (lambda m: m["model"].update(width=3), "unknown fields"),
    "wrong type": (lambda m: m["model"].update(d_model="32"), "d_model"),
    "bool for int": (lambda m: m["model"].update(enc_layers=True), "enc_layers"),
    "vocabulary size": (lambda m: m["vocabulary"].update(size=60), "vocabulary"),
    "vocabulary and grid": (lambda m: (m["grid"].update(max_pitch=100),
                                       m["vocabulary"].update(max_pitch=100, size=56)),
                            "wrong shape"),
    "format marker": (lambda m: m.pop("format"), "format marker"),
    "format version": (lambda m: m.update(format_version=99), "version 99"),
    "model missing": (lambda m: m.pop("model"), "lacks 'model'"),
    "model not an object": (lambda m: m.update(model=[1, 2]), "JSON object"),
    "heads do not divide": (lambda m: m["model"].update(n_heads=3), "multiple of n_heads"),
    "zero heads": (lambda m: m["model"].update(n_heads=0), "invalid value"),
    "negative width": (lambda m: m["model"].update(bar_hidden=-1), "cannot build"),
    "dropout above 1": (lambda m: m["model"].update(dropout=5.0), "cannot build"),
    "more layers": (lambda m: m["model"].update(enc_layers=2), "missing"),
}


@pytest.mark.parametrize("name", sorted(TAMPERINGS))
def test_refuses_tampered_json(saved: Path, no_unpickling: None, name: str) -> None:
    tamper, words = TAMPERINGS[name]
    meta = json.loads(saved.read_text())
    tamper(meta)
    saved.write_text(json.dumps(meta))
    refuses(saved, words)


def test_refuses_broken_json(saved: Path) -> None:
    saved.write_text('{"format": "tvae-checkpoint", ')
    refuses(saved, "not valid JSON")
    saved.write_bytes(b"\xff\xfe\x00garbage")
    refuses(saved, "not valid JSON")
    saved.write_text("[]")
    refuses(saved, "format marker")


def test_refuses_weights_of_another_shape(tmp_path: Path, no_unpickling: None) -> None:
    json_path = save_checkpoint(tmp_path / "ck", tiny())
    other = tiny(d_model=48, d_ff=96)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()},
              str(json_path.with_suffix(".safetensors")))
    err = refuses(json_path, "do not fit", "wrong shape")
    assert err.path == str(json_path.with_suffix(".safetensors"))
    bigger = tiny(d_latent=12)
    save_file({k: v.contiguous() for k, v in bigger.state_dict().items()},
              str(json_path.with_suffix(".safetensors")))
    refuses(json_path, "mu.weight")


def test_checkpoint_paths(tmp_path: Path) -> None:
    stem = tmp_path / "a" / "m"
    expected = (stem.with_suffix(".json"), stem.with_suffix(".safetensors"))
    assert checkpoint_paths(stem) == checkpoint_paths(f"{stem}.json") == expected
    assert checkpoint_paths(f"{stem}.safetensors") == expected
    with pytest.raises(TvaeError, match="no checkpoint"):
        checkpoint_paths(tmp_path)
    save_checkpoint(tmp_path / "last", tiny())
    assert checkpoint_paths(tmp_path)[0] == tmp_path / "last.json"
    save_checkpoint(tmp_path / "best", tiny())
    assert checkpoint_paths(tmp_path)[0] == tmp_path / "best.json"  # best before last


def test_safetensors_whose_header_length_starts_with_0x80_loads(tmp_path: Path) -> None:
    """A safetensors file's first byte is the low byte of its header length; 0x80 there is not
    the pickle magic (a GRU-decoder checkpoint was once refused as a pickle for it)."""
    import struct

    from safetensors.torch import save

    tensors = {"w": torch.zeros(3)}
    for pad in range(300):  # grow the metadata until the header length's low byte is 0x80
        data = save(tensors, metadata={"pad": "x" * pad})
        if data[0] == 0x80:
            break
    assert data[0] == 0x80 and struct.unpack("<Q", data[:8])[0] % 256 == 0x80
    path = tmp_path / "w.safetensors"
    path.write_bytes(data)
    from tvae.model.weights_file import read_tensors

    assert torch.equal(read_tensors(path)["w"], torch.zeros(3))


def test_saving_cleans_up_temporary_files_of_killed_saves(tmp_path: Path) -> None:
    (tmp_path / ".m.safetensors.abc123.tmp").write_bytes(b"half a file")
    save_checkpoint(tmp_path / "m", tiny())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.safetensors"]


# -- the trained window -------------------------------------------------------------
def test_trained_window_belongs_to_the_model_config(tmp_path: Path) -> None:
    """The window comes from the model config; checkpoints without one take their data
    config's (legacy), and one that records neither is read in one window."""
    from tvae.inference import load_model

    path = save_checkpoint(tmp_path / "own", tiny(trained_bars=4))  # no data config at all
    assert load_checkpoint(path)[0].config.trained_bars == 4 and load_model(path).window == 4
    meta = json.loads(path.read_text())
    del meta["model"]["trained_bars"]  # written before trained_bars existed
    meta["data"] = {"bars": 6, "stride": 2, "transpose": 5, "valid_fraction": 0.05,
                    "test_fraction": 0.05, "min_bars": 2}  # and before repeat_augment
    path.write_text(json.dumps(meta))
    assert load_checkpoint(path)[0].config.trained_bars == 6 and load_model(path).window == 6
    none = save_checkpoint(tmp_path / "none", tiny())
    assert load_model(none).window == 0


def test_old_checkpoint_format_still_loads(tmp_path: Path, no_unpickling: None) -> None:
    """The first format: no copy path, no trained_bars, no weights hash, older data and train
    sections (as tvae/models/default.json was at 974d5a4)."""
    model = tiny(copy="none")
    path = save_checkpoint(tmp_path / "old", model, data=DataConfig(bars=8),
                           train=TrainConfig(lr=3e-4))
    meta = json.loads(path.read_text())
    for key in ("copy", "copy_offsets", "copy_edit", "trained_bars"):
        meta["model"].pop(key)
    meta["data"].pop("repeat_augment")
    for key in ("pointer_weight", "pointer_steps"):
        meta["train"].pop(key)
    meta.pop("weights_sha256")
    path.write_text(json.dumps(meta))
    loaded, _, _ = load_checkpoint(path)
    assert loaded.config.copy == "none" and loaded.config.trained_bars == 8
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())


def test_decoding_past_an_unrecorded_window_warns(tmp_path: Path) -> None:
    import warnings

    import numpy as np

    from tvae.errors import TvaeWarning
    from tvae.inference import UNKNOWN_WINDOW, load_model

    z = np.zeros((UNKNOWN_WINDOW + 4, 8), dtype=np.float32)
    unknown = load_model(save_checkpoint(tmp_path / "unknown", tiny()))
    with pytest.warns(TvaeWarning, match="trained_bars"):
        unknown.decode(z)
    known = load_model(save_checkpoint(tmp_path / "known", tiny(trained_bars=4)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", TvaeWarning)
        known.decode(z)  # read window by window: no position past the trained ones
        unknown_short = load_model(tmp_path / "unknown.json")
        unknown_short.decode(z[:UNKNOWN_WINDOW])


# -- configs -----------------------------------------------------------
@pytest.mark.parametrize(("cls", "values", "words"), [
    (GridConfig, {"min_pitch": 0, "max_pitch": 300}, "--max-pitch"),
    (GridConfig, {"steps_per_bar": 100_000}, "--steps-per-bar"),
    (GridConfig, {"min_pitch": -1}, "--min-pitch"),
    (GridConfig, {"min_pitch": 90, "max_pitch": 60}, "empty"),
    (ModelConfig, {"dropout": float("nan")}, "--dropout"),
    (ModelConfig, {"d_model": 2.5}, "whole number"),
    (ModelConfig, {"enc_layers": 10**9}, "--enc-layers"),
    (ModelConfig, {"copy_edit": float("nan")}, "copy_edit"),
    (TrainConfig, {"beta": float("nan")}, "--beta"),
    (TrainConfig, {"free_bits": float("inf")}, "--free-bits"),
    (TrainConfig, {"lr": float("nan")}, "--lr"),
    (TrainConfig, {"seed": -1}, "--seed"),
    (DataConfig, {"bars": 10**9}, "--bars"),
    (DataConfig, {"valid_fraction": float("nan")}, "--valid-fraction"),
])
def test_configs_refuse_values_out_of_range(cls: type, values: dict[str, Any],
                                            words: str) -> None:
    with pytest.raises(TvaeError, match=words):
        cls(**values)
    with pytest.raises(TvaeError, match=words.lstrip("-").replace("-", "_")[:6]):
        config_from_dict(cls, values)


def test_every_config_field_has_help_and_a_range_where_it_counts() -> None:
    """Help comes from each field's declaration (no source parsing); sizes have upper bounds."""
    import dataclasses

    from tvae.cli.options import field_help

    for cls in (GridConfig, ModelConfig, DataConfig, TrainConfig):
        helps = field_help(cls)
        assert all(len(helps[f.name]) > 8 for f in dataclasses.fields(cls)), cls
    sizes = ("d_model", "d_latent", "n_heads", "enc_layers", "dec_layers", "d_ff", "bar_hidden",
             "copy_offsets", "n_classes", "trained_bars")
    model_fields = {f.name: f for f in dataclasses.fields(ModelConfig)}
    assert all(model_fields[name].metadata["hi"] is not None for name in sizes)
    help_text = field_help(DataConfig)["repeat_augment"]  # a comment over two lines, whole
    assert help_text.endswith("not just common ones")


def test_train_help_lists_every_option_and_no_trained_bars() -> None:
    from click.testing import CliRunner

    from tvae.cli.main import main

    result = CliRunner().invoke(main, ["train", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "--d-model INTEGER width of bar vectors and of the attention layers [default: 256]" \
        in text
    assert "meets every offset, not just common ones [default: 0.5]" in text
    assert "--steps-per-bar" in text and "--trained-bars" not in text
