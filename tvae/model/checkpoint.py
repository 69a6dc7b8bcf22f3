"""Checkpoints that describe themselves: `NAME.safetensors` (weights, and optimizer state when
training) beside `NAME.json` (configs, vocabulary, version, training state).

Loading never unpickles: weights come from safetensors, configs from JSON validated against their
dataclasses, and the model is rebuilt from them. Both files are written atomically.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as save_safetensors

from tvae import __version__
from tvae.config import (
    HOLD,
    PAD,
    REST,
    DataConfig,
    GridConfig,
    ModelConfig,
    PriorConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
)
from tvae.errors import TvaeError
from tvae.files import (
    MAX_JSON_BYTES,
    check_not_an_input,
    ensure_folder,
    is_folder,
    parse_json,
    read_regular_file,
    temporary_prefix,
    write_bytes_atomic,
)
from tvae.model.legacy import legacy_fields, legacy_model_fields
from tvae.model.vae import TransformerVAE
from tvae.model.weights_file import (
    MAX_WEIGHTS_BYTES,
    PICKLE_MAGIC,
    WHAT,
    check_fit,
    read_header,
    read_weights,
)

FORMAT = "tvae-checkpoint"
FORMAT_VERSION = 1
MAX_PARAMETERS = 300_000_000  # largest model a checkpoint may describe (1.2 GB in float32)
READ_TRIES = 5  # reads of a pair that a save replaced meanwhile, before it is called mismatched


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


def data_config_of(meta: dict[str, Any]) -> DataConfig:
    """The data config a loaded checkpoint's JSON (`meta`) records, fields it lacks at their old
    meaning (`legacy_fields`); the default DataConfig where it records none (an export of a
    model trained elsewhere). Its split fractions say which songs the model trained on."""
    saved = meta.get("data")
    return DataConfig() if saved is None else config_from_dict(DataConfig,
                                                               legacy_fields("data", saved))


def save_checkpoint(path: str | Path, model: TransformerVAE, *, data: DataConfig | None = None,
                    train: TrainConfig | None = None, state: dict[str, Any] | None = None,
                    optimizer: torch.optim.Optimizer | None = None,
                    labels: list[str] | None = None, prior_fit: dict[str, Any] | None = None
                    ) -> Path:
    """Write `path`.safetensors and `path`.json atomically; returns the JSON path. A model
    with a learned prior saves it too (`prior_fit`: how it was fitted, kept in the JSON)."""
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
        "prior": None if model.prior_config is None else config_to_dict(model.prior_config),
        "prior_fit": prior_fit if model.prior_config is not None else None,
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
    for name in (json_path.name, weights_path.name, _staged(json_path).name):
        for stale in json_path.parent.glob(f"{glob.escape(temporary_prefix(name))}*.tmp"):
            stale.unlink(missing_ok=True)  # from earlier kills
    staged = _staged(json_path)
    write_bytes_atomic((json.dumps(meta, indent=2) + "\n").encode(), staged)
    try:
        write_bytes_atomic(weights, weights_path)
    except BaseException:  # the old weights are in place: the staged JSON is for nothing
        staged.unlink(missing_ok=True)
        raise
    os.replace(staged, json_path)


def _read_meta(json_path: Path) -> dict[str, Any]:
    try:
        missing = not json_path.exists() and not json_path.is_symlink()
    except OSError:  # a name too long: read_regular_file names the reason
        missing = False
    if missing:
        raise TvaeError("checkpoint config not found (expected NAME.json beside NAME.safetensors)",
                        json_path)
    raw = read_regular_file(json_path, MAX_JSON_BYTES, "checkpoint config")
    if raw.startswith(PICKLE_MAGIC):
        raise TvaeError("this is a pickle/torch.save file; tvae only loads safetensors + JSON "
                        "checkpoints and never unpickles", json_path)
    meta = parse_json(raw, "checkpoint config", json_path)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise TvaeError("not a tvae checkpoint (missing format marker)", json_path)
    if meta.get("format_version") != FORMAT_VERSION:
        raise TvaeError(f"checkpoint format version {str(meta.get('format_version'))[:20]} is "
                        f"not supported (this tvae reads {FORMAT_VERSION})", json_path)
    return meta


def _configs(meta: dict[str, Any], json_path: Path
             ) -> tuple[GridConfig, ModelConfig, PriorConfig | None]:
    """The grid, model and prior configs of a checkpoint's JSON, every field type- and
    range-checked, the data and training configs and the other sections checked too."""
    for key, kind, what in (("labels", list, "class labels must be a list"),
                            ("state", dict, "the training state must be an object"),
                            ("optimizer_groups", list, "optimizer groups must be a list"),
                            ("prior_fit", dict, "the prior's fitting record must be an object")):
        if meta.get(key) is not None and not isinstance(meta[key], kind):
            raise TvaeError(f"checkpoint config has an invalid '{key}' section ({what})",
                            json_path)
    labels = meta.get("labels") or []
    if not all(isinstance(label, str) for label in labels):
        raise TvaeError("checkpoint config has labels that are not strings", json_path)
    section = "grid"
    try:
        grid = config_from_dict(GridConfig, meta["grid"])
        section = "data"
        data = None if meta.get("data") is None else config_from_dict(
            DataConfig, legacy_fields("data", meta["data"]))
        section = "train"
        if meta.get("train") is not None:
            config_from_dict(TrainConfig, legacy_fields("train", meta["train"]))
        section = "model"
        config = config_from_dict(ModelConfig, legacy_model_fields(meta["model"], data))
        section = "prior"
        prior = None if meta.get("prior") is None else config_from_dict(PriorConfig,
                                                                        meta["prior"])
    except KeyError as exc:
        raise TvaeError(f"checkpoint config lacks {exc}", json_path) from None
    except TvaeError as exc:
        what = "cannot build a model" if section in ("grid", "model", "prior") else "is refused"
        raise TvaeError(f"checkpoint config has an invalid value in '{section}', so it {what} "
                        f"({exc.reason})", json_path) from None
    if meta.get("vocabulary") != vocabulary(grid):
        raise TvaeError("checkpoint vocabulary does not match its grid (made for another "
                        "vocabulary or edited)", json_path)
    return grid, config, prior


def checkpoint_configs(path: str | Path) -> tuple[GridConfig, ModelConfig]:
    """The grid and model configs a checkpoint was written with, read from its JSON alone
    (checked as `load_checkpoint` checks them; no weights are read)."""
    json_path, _ = checkpoint_paths(path)
    grid, config, _ = _configs(_read_meta(json_path), json_path)
    return grid, config


def expected_shapes(config: ModelConfig, grid: GridConfig, path: Path | None = None,
                    prior: PriorConfig | None = None) -> dict[str, tuple[int, ...]]:
    """Each parameter's shape for these configs, from the model built on the meta device
    (nothing allocated: the configs' ranges bound its layers and widths), refusing models of
    more than MAX_PARAMETERS parameters."""
    with torch.device("meta"):
        shapes = {k: tuple(v.shape)
                  for k, v in TransformerVAE(config, grid, prior).state_dict().items()}
    count = sum(math.prod(shape) for shape in shapes.values())
    if count > MAX_PARAMETERS:
        raise TvaeError(f"checkpoint config describes a model of {count:,} parameters; tvae "
                        f"loads at most {MAX_PARAMETERS:,}", path)
    return shapes


def _matching_meta(meta: dict[str, Any], digest: str, json_path: Path
                   ) -> tuple[dict[str, Any], bool]:
    """The JSON that belongs to these weights, and whether it does: `meta`, or the staged one
    when a save is between its two renames (killed there, or still writing). A reader only
    reads: the writer, or `finish_interrupted_save`, completes the pair on disk. Checkpoints
    from before the weights were hashed carry no hash and are taken as they are."""
    expected = meta.get("weights_sha256")
    if expected is None or expected == digest:
        return meta, True
    staged = _staged(json_path)
    try:
        candidate = _read_meta(staged) if staged.is_file() else None
    except TvaeError:  # replaced or removed by the writer while it was read
        candidate = None
    if candidate is not None and candidate.get("weights_sha256") == digest:
        return candidate, True
    return meta, False


def _meta_of_pair(json_path: Path) -> dict[str, Any]:
    """The pair's JSON; the staged one when a first save was killed before its JSON was put in
    place (weights and the staged JSON only)."""
    staged = _staged(json_path)
    try:
        first_save = not json_path.exists() and not json_path.is_symlink() and staged.is_file()
    except OSError:
        first_save = False
    return _read_meta(staged if first_save else json_path)


def finish_interrupted_save(path: str | Path) -> None:
    """Complete, on disk, a save that was killed between its two renames: the staged JSON
    replaces the pair's when it is the one that matches the weights. Only the pair's writer may
    call this (a training run holding its run folder's lock): a reader that renamed would pull
    the staged file from under a save in progress."""
    json_path, weights_path = checkpoint_paths(path)
    staged = _staged(json_path)
    if not staged.is_file():
        return
    digest = hashlib.sha256(read_regular_file(weights_path, MAX_WEIGHTS_BYTES, WHAT)).hexdigest()
    if _read_meta(staged).get("weights_sha256") == digest:
        os.replace(staged, json_path)
    else:
        staged.unlink(missing_ok=True)  # staged for weights that never came: stale


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu"
                    ) -> tuple[TransformerVAE, dict[str, Any], dict[str, torch.Tensor]]:
    """Rebuild the model from a checkpoint. Returns (model, meta, optimizer tensors).

    Nothing of a hostile pair's size is allocated before it is refused: both files must be
    regular files within size caps, the JSON's configs are type- and range-checked, the
    parameter count they imply is capped, and the weights' header (dtypes, shapes, byte ranges)
    must fit those shapes before any tensor is read or the model is built."""
    json_path, weights_path = checkpoint_paths(path)
    if Path(path).suffix not in ("", ".json", ".safetensors") and Path(path).is_file():
        _read_meta(Path(path))  # e.g. a .pt file: refused with a clear message
    for attempt in range(READ_TRIES):  # a save may replace the pair while it is read
        meta = _meta_of_pair(json_path)
        header = read_header(weights_path)
        grid, config, prior = _configs(meta, json_path)
        check_fit(header, expected_shapes(config, grid, json_path, prior), weights_path)
        tensors, digest = read_weights(weights_path, header)
        taken, paired = _matching_meta(meta, digest, json_path)
        if not paired:  # saved over while read: the JSON written for these weights, read now
            with contextlib.suppress(TvaeError):
                taken, paired = _matching_meta(_meta_of_pair(json_path), digest, json_path)
        if paired:
            break
        time.sleep(0.05 * (attempt + 1))
    if not paired:  # the right shapes, but not the weights this JSON was written with
        raise TvaeError(f"checkpoint pair does not match: the weights are not the ones "
                        f"{json_path.name} was written with (written by another save, or "
                        "edited)", weights_path)
    if taken is not meta:  # the staged JSON of an interrupted save: its configs, checked
        meta = taken
        grid, config, prior = _configs(meta, json_path)
        check_fit(header, expected_shapes(config, grid, json_path, prior), weights_path)
    weights = {k: v for k, v in tensors.items() if not k.startswith("optim/")}
    if any(not torch.isfinite(v).all() for v in weights.values()):
        raise TvaeError("checkpoint weights contain NaN or infinite values", weights_path)
    model = TransformerVAE(config, grid, prior)
    expected = model.state_dict()
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


def check_new_pair(src: str | Path, dst: str | Path) -> None:
    """Refuse, before any work, to write the checkpoint `dst` over `src`, the one it is made
    from: an inference-only copy would drop its optimizer state (and float32 weights)."""
    sources = checkpoint_paths(src)
    for path in checkpoint_paths(Path(dst).with_suffix("")):
        check_not_an_input(path, sources)


def export_checkpoint(src: str | Path, dst: str | Path, half: bool = True) -> Path:
    """Write an inference-only copy of a checkpoint: no optimizer state, weights in float16
    when `half` (loading casts them back to float32). Returns the new JSON path."""
    model, meta, _ = load_checkpoint(src)
    return write_inference_pair(model, meta, dst, half)


def write_inference_pair(model: TransformerVAE, meta: dict[str, Any], dst: str | Path,
                         half: bool, **sections: Any) -> Path:
    """Write `model` as an inference-only checkpoint at `dst` with the JSON of the checkpoint it
    was loaded from (`meta`), its prior's config, and any `sections` (e.g. "prior_fit")."""
    json_path, weights_path = checkpoint_paths(Path(dst).with_suffix(""))
    tensors = {k: (v.half() if half and v.is_floating_point() else v).contiguous()
               for k, v in model.state_dict().items()}
    weights = save_safetensors(tensors)
    meta = {**meta, "optimizer_groups": None, "weights_dtype": "float16" if half else "float32",
            "weights_sha256": hashlib.sha256(weights).hexdigest(),
            "prior": None if model.prior_config is None else config_to_dict(model.prior_config),
            **sections}
    _write_pair(weights, meta, json_path, weights_path)
    return json_path


CARD_KEYS = ("split", "windows", "tf_accuracy", "free_accuracy", "kl_bits_per_bar",
             "kl_bits_repeated", "kl_bits_new", "kl_paired_ratio", "transfer_follow_rate",
             "transfer_spurious_rate", "elbo_bits_per_bar", "kl_bits_near_repeated",
             "near_repeats_exact", "near_changes_kept", "transfer_edit_follow_rate",
             "transfer_edit_cases",
             "by_distance",
             "kl_bits_learned_prior", "elbo_bits_learned_prior")


def record_evaluation(path: str | Path, result: dict[str, Any], data: str,
                      evaluated: str | None = None) -> Path:
    """Store an evaluation's main numbers in a checkpoint's JSON as its model card
    ("evaluation": what it was evaluated on and how it scored); the weights are untouched.
    `evaluated`: the weights_sha256 of the model that was evaluated; if the pair on disk is no
    longer that one (a training run saved over it meanwhile), nothing is written. The caller
    holds the run folder's lock where a run may be writing (`tvae evaluate --record`)."""
    json_path, _ = checkpoint_paths(path)
    meta = _read_meta(json_path)
    if evaluated is not None and meta.get("weights_sha256") != evaluated:
        raise TvaeError("the checkpoint was replaced while it was evaluated (a training run "
                        "saved over it): evaluate it again to --record", json_path)
    meta["evaluation"] = {"data": data, **{k: result.get(k) for k in CARD_KEYS}}
    write_bytes_atomic((json.dumps(meta, indent=2) + "\n").encode(), json_path)
    return json_path
