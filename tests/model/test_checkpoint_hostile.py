"""Hostile checkpoints: files that are not regular, oversized files, deep
JSON, hostile config fields, lying safetensors headers, other dtypes - each refused with one
TvaeError before anything is read whole or a model is built."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from checkpoint_helpers import refuses, tiny
from cli_contract import MAX_RSS_MB, contract_problem, invoke, run_process
from safetensors.torch import save_file

from tvae.errors import TvaeError
from tvae.model.checkpoint import load_checkpoint, save_checkpoint
from tvae.model.vae import TransformerVAE

pytestmark = pytest.mark.usefixtures("torch_one_thread")


# -- hostile files -----------------------------------------------------------
@pytest.fixture
def no_real_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building a model for real fails the test; building it on the meta device (shapes only,
    nothing allocated) is allowed."""
    import tvae.model.checkpoint as ckpt

    real = ckpt.TransformerVAE

    def guarded(*args: Any, **kwargs: Any) -> TransformerVAE:
        assert torch.empty(0).device.type == "meta", "a model was built before refusal"
        return real(*args, **kwargs)

    monkeypatch.setattr(ckpt, "TransformerVAE", guarded)


def refuses_within(path: Path, seconds: float, *words: str) -> TvaeError:
    """`refuses`, run in a thread that must finish in time (a blocking read would hang)."""
    import threading

    outcome: dict[str, Any] = {}

    def attempt() -> None:
        try:
            load_checkpoint(path)
        except BaseException as exc:  # noqa: BLE001 - reported below
            outcome["error"] = exc

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"loading {path} still runs after {seconds} s"
    err = outcome.get("error")
    assert isinstance(err, TvaeError), repr(err)
    assert err.path is not None and "\n" not in str(err)
    for word in words:
        assert word in err.reason, err.reason
    return err


@pytest.mark.parametrize("target", ["/dev/zero", "/dev/urandom", "fifo", "folder"])
@pytest.mark.parametrize("which", ["json", "safetensors"])
def test_refuses_files_that_are_not_regular_before_reading(saved: Path, no_real_model: None,
                                                           target: str, which: str) -> None:
    """A symlink to /dev/zero used to read until MemoryError, /dev/urandom forever, a FIFO
    blocked and a folder gave a traceback: each is refused from os.stat, nothing read."""

    victim = saved.with_suffix(f".{which}")
    victim.unlink()
    if target == "fifo":
        os.mkfifo(victim)
    elif target == "folder":
        victim.mkdir()
    else:
        if not Path(target).exists():
            pytest.skip(f"no {target} here")
        victim.symlink_to(target)
    kind = {"fifo": "FIFO", "folder": "folder"}.get(target, "device")
    err = refuses_within(saved.with_suffix(""), 10.0, kind)  # NAME: NAME.json may be a folder
    assert err.path == str(victim)


def test_refuses_oversized_files_from_their_size(saved: Path, no_real_model: None) -> None:
    """Sparse files (no disk or memory used) over the caps are refused before reading."""

    from tvae.files import MAX_JSON_BYTES
    from tvae.model.weights_file import MAX_WEIGHTS_BYTES

    weights = saved.with_suffix(".safetensors")
    original = weights.read_bytes()
    os.truncate(weights, MAX_WEIGHTS_BYTES + 1)
    refuses_within(saved, 10.0, "too large")
    weights.write_bytes(original)
    os.truncate(saved, MAX_JSON_BYTES + 1)
    refuses_within(saved, 10.0, "too large")


@pytest.mark.parametrize("depth", [40, 100_000])
def test_refuses_deeply_nested_json(saved: Path, depth: int) -> None:
    meta = json.loads(saved.read_text())
    saved.write_text(json.dumps({**meta, "state": None})[:-1] + ', "x": '
                     + "[" * depth + "]" * depth + "}")
    refuses(saved, "nested too deeply")


HOSTILE_FIELDS: dict[str, tuple[Callable[[dict], None], str]] = {
    "a billion encoder layers": (lambda m: m["model"].update(enc_layers=10**9), "enc_layers"),
    "d_model 1e400": (lambda m: m["model"].update(d_model=float("inf")), "whole number"),
    "float d_model": (lambda m: m["model"].update(d_model=32.0), "d_model"),
    "width 4096": (lambda m: m["model"].update(d_model=4096),
                   "do not fit"),
    "over the parameter cap": (lambda m: m["model"].update(
        d_model=8192, d_ff=16384, bar_hidden=8192, enc_layers=32, dec_layers=32), "parameters"),
    "NaN dropout": (lambda m: m["model"].update(dropout=float("nan")), "dropout"),
    "data a string": (lambda m: m.update(data="abc"), "'data'"),
    "data a list": (lambda m: m.update(data=[1, 2]), "'data'"),
    "data.bars a string": (lambda m: m["data"].update(bars="abc"), "bars"),
    "data.bars NaN": (lambda m: m["data"].update(bars=float("nan")), "bars"),
    "data.bars zero": (lambda m: m["data"].update(bars=0), "bars"),
    "train NaN beta": (lambda m: m["train"].update(beta=float("nan")), "beta"),
    "grid pitch 300": (lambda m: (m["grid"].update(max_pitch=300),
                                  m["vocabulary"].update(max_pitch=300, size=256)), "max_pitch"),
    "grid 100000 steps": (lambda m: m["grid"].update(steps_per_bar=100_000), "steps_per_bar"),
    "grid inverted": (lambda m: m["grid"].update(min_pitch=90, max_pitch=60), "above"),
    "trained_bars negative": (lambda m: m["model"].update(trained_bars=-1), "trained_bars"),
    "labels not strings": (lambda m: m.update(labels=[1, 2]), "labels"),
    "state a list": (lambda m: m.update(state=[1]), "'state'"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_FIELDS))
def test_refuses_hostile_config_fields_before_building(saved: Path, no_real_model: None,
                                                       name: str) -> None:
    tamper, words = HOSTILE_FIELDS[name]
    meta = json.loads(saved.read_text())
    tamper(meta)
    saved.write_text(json.dumps(meta))  # NaN and Infinity as Python's json writes them
    refuses_within(saved, 30.0, words)


def _header_file(path: Path, header: dict[str, Any], data: bytes = b"") -> None:
    import struct

    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


def test_refuses_hostile_safetensors_headers(saved: Path, no_real_model: None) -> None:
    """Declared shapes and byte ranges are checked against the file before anything is read."""
    weights = saved.with_suffix(".safetensors")
    huge = {"w": {"dtype": "F32", "shape": [2**20, 2**20], "data_offsets": [0, 4 * 2**40]}}
    _header_file(weights, huge, b"\0" * 16)
    refuses_within(saved, 10.0, "damaged", "describes")
    lying = {"w": {"dtype": "F32", "shape": [2**20, 2**20], "data_offsets": [0, 16]}}
    _header_file(weights, lying, b"\0" * 16)
    refuses_within(saved, 10.0, "damaged", "does not match its shape")
    weights.write_bytes((2**60).to_bytes(8, "little") + b"{}")
    refuses_within(saved, 10.0, "damaged", "header length")
    _header_file(weights, {"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}})
    refuses_within(saved, 10.0, "damaged", "invalid shape")
    overlap = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
               "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}
    _header_file(weights, overlap, b"\0" * 12)
    refuses_within(saved, 10.0, "damaged", "overlap")


@pytest.mark.parametrize("dtype", ["float8_e4m3fn", "int64", "float64"])
def test_refuses_weights_of_other_dtypes(tmp_path: Path, no_real_model: None,
                                         dtype: str) -> None:
    if not hasattr(torch, dtype):
        pytest.skip(f"this torch has no {dtype}")
    json_path = save_checkpoint(tmp_path / "ck", tiny())
    tensors = {k: v.to(getattr(torch, dtype)).contiguous() for k, v in tiny().state_dict().items()}
    save_file(tensors, str(json_path.with_suffix(".safetensors")))
    refuses_within(json_path, 10.0, "float32, float16 and bfloat16 only")


def test_refuses_oversized_optimizer_state(tmp_path: Path, no_real_model: None) -> None:
    json_path = save_checkpoint(tmp_path / "ck", tiny())
    tensors = {k: v.contiguous() for k, v in tiny().state_dict().items()}
    tensors["optim/0/exp_avg"] = torch.zeros(1000, 1000)  # larger than any parameter
    save_file(tensors, str(json_path.with_suffix(".safetensors")))
    refuses_within(json_path, 10.0, "optimizer state")


def test_float16_and_bfloat16_weights_load_as_float32(tmp_path: Path) -> None:
    model = tiny()
    for dtype in (torch.float16, torch.bfloat16):
        json_path = save_checkpoint(tmp_path / "ck", model)
        tensors = {k: v.to(dtype).contiguous() for k, v in model.state_dict().items()}
        save_file(tensors, str(json_path.with_suffix(".safetensors")))
        meta = json.loads(json_path.read_text())
        meta.pop("weights_sha256")  # as checkpoints written before weights were hashed
        json_path.write_text(json.dumps(meta))
        loaded, _, _ = load_checkpoint(json_path)
        for key, value in loaded.state_dict().items():
            assert value.dtype == torch.float32
            assert torch.equal(value, tensors[key].float())


@pytest.mark.parametrize("kind", ["fifo", "deep", "folder", "not an object"])
def test_train_config_file_is_read_with_the_same_caps(tmp_path: Path, kind: str) -> None:
    """`tvae train --config FILE` reads FILE like a checkpoint's JSON: a FIFO is not opened in a
    blocking way, deep nesting and non-objects are one error line, exit 2."""
    from click.testing import CliRunner

    from tvae.cli.main import main

    path = tmp_path / "config.json"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "deep":
        path.write_text("[" * 100_000 + "]" * 100_000)
    elif kind == "folder":
        path.mkdir()
    else:
        path.write_text("[1, 2]")
    (tmp_path / "songs").mkdir()
    result = CliRunner().invoke(main, ["train", str(tmp_path / "songs"), "--config", str(path),
                                       "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    # one error line (click's own "Error: Invalid value" for a folder, refused by its Path type)
    assert result.output.lower().count("error:") == 1 and "Traceback" not in result.output
    assert str(path) in result.output
    assert not (tmp_path / "run").exists()


# -- hostile checkpoints and grid options -----------------------------------
def hostile_models(folder: Path, tiny_ckpt: Path) -> dict[str, Path]:
    """Checkpoint pairs that once ate the machine's memory or hung: their JSON paths."""
    models = {}
    for name in ("dev_zero", "fifo", "layers_1e9", "d_model_4096", "nested", "json_folder"):
        stem = folder / name
        shutil.copy(tiny_ckpt.with_suffix(".safetensors"), stem.with_suffix(".safetensors"))
        meta = json.loads(tiny_ckpt.read_text())
        if name == "layers_1e9":
            meta["model"]["enc_layers"] = 10**9
        if name == "d_model_4096":
            meta["model"]["d_model"] = 4096
        stem.with_suffix(".json").write_text(json.dumps(meta))
        models[name] = stem.with_suffix(".json")
    models["dev_zero"].with_suffix(".safetensors").unlink()
    models["dev_zero"].with_suffix(".safetensors").symlink_to("/dev/zero")
    models["fifo"].with_suffix(".safetensors").unlink()
    os.mkfifo(models["fifo"].with_suffix(".safetensors"))
    models["nested"].write_text('{"format": "tvae-checkpoint", "x": ' + "[" * 100_000)
    models["json_folder"].unlink()
    models["json_folder"].mkdir()
    models["json_folder"] = models["json_folder"].with_suffix("")  # named by its stem
    return models


@pytest.mark.parametrize("name", ["dev_zero", "fifo", "layers_1e9", "d_model_4096"])
def test_hostile_checkpoints_are_refused_quickly_in_little_memory(tiny_ckpt: Path,
                                                                  tmp_path: Path,
                                                                  name: str) -> None:
    """A real process: one error line naming the file, in well under TIMEOUT_S and MAX_RSS_MB
    (they used to take 23 GB, hang, or allocate 1.3-1.9 GB before refusal)."""
    if name == "dev_zero" and not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero here")
    model = hostile_models(tmp_path, tiny_ckpt)[name]
    got, rss_mb = run_process(["sample", "-n", "1", "-o", tmp_path / "out", "--model", model])
    assert contract_problem(got, "error", model, model.with_suffix(".safetensors")) is None, got
    assert rss_mb < MAX_RSS_MB, f"{name}: {rss_mb:.0f} MB"
    assert not (tmp_path / "out").exists()


def test_hostile_checkpoint_json_gives_one_line(tiny_ckpt: Path, tmp_path: Path) -> None:
    models = hostile_models(tmp_path, tiny_ckpt)
    for name in ("nested", "json_folder", "layers_1e9", "d_model_4096"):
        model = models[name]
        got = invoke(["sample", "-n", "1", "-o", tmp_path / "out", "--model", model])
        assert contract_problem(got, "error", model, model.with_suffix(".json"),
                                model.with_suffix(".safetensors")) is None, (name, got)
    assert not (tmp_path / "out").exists()
