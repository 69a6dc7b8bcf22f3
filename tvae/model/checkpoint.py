"""Checkpoints that describe themselves: `NAME.safetensors` (weights, and optimizer state when
training) beside `NAME.json` (configs, vocabulary, version, training state).

Loading never unpickles: weights come from safetensors, configs from JSON validated against their
dataclasses, and the model is rebuilt from them. Both files are written atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from tvae import __version__
from tvae.config import (
    HOLD,
    PAD,
    REST,
    DataConfig,
    GridConfig,
    ModelConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
)
from tvae.errors import TvaeError
from tvae.files import ensure_folder, is_folder, write_bytes_atomic
from tvae.model.vae import TransformerVAE

FORMAT = "tvae-checkpoint"
FORMAT_VERSION = 1
PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")  # pickle protocol 2+ and torch.save's zip archive


def vocabulary(grid: GridConfig) -> dict[str, int]:
    return {"pad": PAD, "rest": REST, "hold": HOLD, "min_pitch": grid.min_pitch,
            "max_pitch": grid.max_pitch, "size": grid.vocab_size}


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """(json, safetensors) paths for a checkpoint named by its stem, either file, or a run dir."""
    path = Path(path)
    if is_folder(path):  # False, not an OSError, for a name too long
        for name in ("best", "last"):
            if (path / f"{name}.json").exists():
                return path / f"{name}.json", path / f"{name}.safetensors"
        raise TvaeError("no checkpoint (best.json or last.json) in this folder", path)
    if path.suffix in (".json", ".safetensors"):
        path = path.with_suffix("")
    return path.with_suffix(".json"), path.with_suffix(".safetensors")


def save_checkpoint(path: str | Path, model: TransformerVAE, *, data: DataConfig | None = None,
                    train: TrainConfig | None = None, state: dict[str, Any] | None = None,
                    optimizer: torch.optim.Optimizer | None = None,
                    labels: list[str] | None = None) -> Path:
    """Write `path`.safetensors and `path`.json atomically; returns the JSON path."""
    json_path, weights_path = checkpoint_paths(Path(path).with_suffix(""))
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    optim_groups = None
    if optimizer is not None:
        opt = optimizer.state_dict()
        for pid, slots in opt["state"].items():
            for key, value in slots.items():
                tensors[f"optim/{pid}/{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
        optim_groups = opt["param_groups"]
    weights = save_safetensors(tensors)
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "tvae_version": __version__,
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        "grid": config_to_dict(model.grid), "model": config_to_dict(model.config),
        "data": config_to_dict(data) if data else None,
        "train": config_to_dict(train) if train else None,
        "vocabulary": vocabulary(model.grid), "labels": labels,
        "state": state or {}, "optimizer_groups": optim_groups,
    }
    _write_pair(weights, meta, json_path, weights_path)
    return json_path


def _staged(json_path: Path) -> Path:
    """Where the next JSON of a pair waits while its weights are being put in place."""
    return json_path.with_name(f".{json_path.name}.next")


def _write_pair(weights: bytes, meta: dict[str, Any], json_path: Path, weights_path: Path) -> None:
    """Write a checkpoint pair so that a kill at any point leaves a loadable, consistent pair:
    the new JSON is staged first, then the weights replace the old, then the staged JSON does.
    Killed between the two renames, the old JSON no longer matches the weights' hash, and
    loading takes the staged one, which does."""
    ensure_folder(json_path)
    for stale in json_path.parent.glob(f".{json_path.stem}.*.tmp"):  # from earlier kills
        stale.unlink(missing_ok=True)
    staged = _staged(json_path)
    write_bytes_atomic((json.dumps(meta, indent=2) + "\n").encode(), staged)
    write_bytes_atomic(weights, weights_path)
    os.replace(staged, json_path)


def _read_meta(json_path: Path) -> dict[str, Any]:
    try:
        raw = json_path.read_bytes()
    except FileNotFoundError:
        raise TvaeError("checkpoint config not found (expected NAME.json beside NAME.safetensors)",
                        json_path) from None
    except OSError as exc:  # a name too long, a folder, no permission
        raise TvaeError(f"cannot read the checkpoint config ({exc.strerror or exc})",
                        json_path) from None
    if raw.startswith(PICKLE_MAGIC):
        raise TvaeError("this is a pickle/torch.save file; tvae only loads safetensors + JSON "
                        "checkpoints and never unpickles", json_path)
    try:
        meta = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise TvaeError(f"checkpoint config is not valid JSON ({exc})", json_path) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise TvaeError("not a tvae checkpoint (missing format marker)", json_path)
    if meta.get("format_version") != FORMAT_VERSION:
        raise TvaeError(f"checkpoint format version {meta.get('format_version')} is not "
                        f"supported (this tvae reads {FORMAT_VERSION})", json_path)
    return meta


def _read_tensors(weights_path: Path) -> dict[str, torch.Tensor]:
    return _read_weights(weights_path)[0]


def _read_weights(weights_path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """The tensors of a safetensors file and the file's sha256."""
    if not weights_path.exists():
        raise TvaeError("checkpoint weights not found", weights_path)
    raw = weights_path.read_bytes()
    # A safetensors file starts with its header's length (8 bytes, little-endian) and then the
    # header's "{": that length may well begin with the byte 0x80, so it is never taken for a
    # pickle (loading never unpickles in any case).
    if raw.startswith(PICKLE_MAGIC) and raw[8:9] != b"{":
        raise TvaeError("this is a pickle/torch.save file; tvae only loads safetensors weights "
                        "and never unpickles", weights_path)
    try:
        return load_safetensors(raw), hashlib.sha256(raw).hexdigest()
    except (SafetensorError, ValueError, RuntimeError, OSError) as exc:
        reason = " ".join(str(exc).split())[:160]
        raise TvaeError(f"checkpoint weights are damaged ({reason})", weights_path) from None


def legacy_model_fields(model: Any) -> Any:
    """Checkpoints written before the copy path existed are stock models: `copy` "none"."""
    if isinstance(model, dict) and "copy" not in model:
        return {**model, "copy": "none"}
    return model


def _matching_meta(meta: dict[str, Any], digest: str, json_path: Path
                   ) -> tuple[dict[str, Any], bool]:
    """The JSON that belongs to these weights, and whether it does: `meta`, or the staged one
    when a save was killed between its two renames (then the pair is completed). Checkpoints
    from before the weights were hashed carry no hash and are taken as they are."""
    expected = meta.get("weights_sha256")
    if expected is None or expected == digest:
        return meta, True
    staged = _staged(json_path)
    if staged.is_file():
        candidate = _read_meta(staged)
        if candidate.get("weights_sha256") == digest:
            with contextlib.suppress(OSError):  # a read-only folder: use it, fix nothing
                os.replace(staged, json_path)  # finish the interrupted save
            return candidate, True
    return meta, False


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu"
                    ) -> tuple[TransformerVAE, dict[str, Any], dict[str, torch.Tensor]]:
    """Rebuild the model from a checkpoint. Returns (model, meta, optimizer tensors)."""
    json_path, weights_path = checkpoint_paths(path)
    if Path(path).suffix not in ("", ".json", ".safetensors") and Path(path).is_file():
        _read_meta(Path(path))  # e.g. a .pt file: refused with a clear message
    meta = _read_meta(json_path)
    tensors, digest = _read_weights(weights_path) if json_path.exists() else ({}, "")
    meta, paired = _matching_meta(meta, digest, json_path)
    try:
        grid = config_from_dict(GridConfig, meta["grid"])
        config = config_from_dict(ModelConfig, legacy_model_fields(meta["model"]))
    except KeyError as exc:
        raise TvaeError(f"checkpoint config lacks {exc}", json_path) from None
    except TvaeError as exc:
        raise TvaeError(f"checkpoint config has an invalid value, so it cannot build a model "
                        f"({exc.reason})",
                        json_path) from None
    except (ValueError, ZeroDivisionError) as exc:  # e.g. n_heads 0
        raise TvaeError(f"checkpoint config has an invalid value ({exc})", json_path) from None
    if meta.get("vocabulary") != vocabulary(grid):
        raise TvaeError("checkpoint vocabulary does not match its grid (made for another "
                        "vocabulary or edited)", json_path)
    try:
        model = TransformerVAE(config, grid)
    except (ValueError, RuntimeError) as exc:  # negative sizes, dropout outside [0, 1]...
        reason = " ".join(str(exc).split())[:160]
        raise TvaeError(f"checkpoint config cannot build a model ({reason})", json_path) from None
    weights = {k: v for k, v in tensors.items() if not k.startswith("optim/")}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    wrong = [k for k in expected if k in weights and weights[k].shape != expected[k].shape]
    if missing or extra or wrong:
        raise TvaeError(f"checkpoint weights do not fit its config (missing {missing[:3]}, "
                        f"unexpected {extra[:3]}, wrong shape {wrong[:3]})", weights_path)
    if not paired:  # the right shapes, but not the weights this JSON was written with
        raise TvaeError(f"checkpoint pair does not match: the weights are not the ones "
                        f"{json_path.name} was written with (written by another save, or "
                        "edited)", weights_path)
    if any(not torch.isfinite(v).all() for v in weights.values() if v.is_floating_point()):
        raise TvaeError("checkpoint weights contain NaN or infinite values", weights_path)
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in weights.items()})
    optim = {k[len("optim/"):]: v for k, v in tensors.items() if k.startswith("optim/")}
    return model.to(device).eval(), meta, optim


def restore_optimizer(optimizer: torch.optim.Optimizer, meta: dict[str, Any],
                      tensors: dict[str, torch.Tensor]) -> None:
    """Load optimizer state saved by `save_checkpoint` (for --resume)."""
    groups = meta.get("optimizer_groups")
    if not groups:
        raise TvaeError("checkpoint has no optimizer state to resume from")
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        pid, slot = key.split("/", 1)
        state.setdefault(int(pid), {})[slot] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def export_checkpoint(src: str | Path, dst: str | Path, half: bool = True) -> Path:
    """Write an inference-only copy of a checkpoint: no optimizer state, weights in float16
    when `half` (loading casts them back to float32). Returns the new JSON path."""
    model, meta, _ = load_checkpoint(src)
    json_path, weights_path = checkpoint_paths(Path(dst).with_suffix(""))
    tensors = {k: (v.half() if half and v.is_floating_point() else v).contiguous()
               for k, v in model.state_dict().items()}
    weights = save_safetensors(tensors)
    meta = {**meta, "optimizer_groups": None, "weights_dtype": "float16" if half else "float32",
            "weights_sha256": hashlib.sha256(weights).hexdigest()}
    _write_pair(weights, meta, json_path, weights_path)
    return json_path


CARD_KEYS = ("split", "windows", "tf_accuracy", "free_accuracy", "kl_bits_per_bar",
             "kl_bits_repeated", "kl_bits_new", "kl_paired_ratio", "transfer_follow_rate",
             "transfer_spurious_rate", "elbo_bits_per_bar")


def record_evaluation(path: str | Path, result: dict[str, Any], data: str) -> Path:
    """Store an evaluation's main numbers in a checkpoint's JSON as its model card
    ("evaluation": what it was evaluated on and how it scored); the weights are untouched."""
    json_path, _ = checkpoint_paths(path)
    meta = _read_meta(json_path)
    meta["evaluation"] = {"data": data, **{k: result.get(k) for k in CARD_KEYS}}
    write_bytes_atomic((json.dumps(meta, indent=2) + "\n").encode(), json_path)
    return json_path
