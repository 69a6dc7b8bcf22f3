"""Where `--resume` starts: the run's last checkpoint, checked before anything is trusted.

A damaged checkpoint (weights that do not fit the model, optimizer groups or state tensors
that are not this optimizer's, a training state with unknown fields or wrong types) is one
TvaeError naming the file and what is wrong, never a traceback halfway into training.
Checkpoints of older versions, whose training state lacks newer fields, still load (the
fields take their defaults).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor

from tvae.config import config_from_dict
from tvae.errors import TvaeError
from tvae.model.checkpoint import load_checkpoint, restore_optimizer

State = TypeVar("State")

ADAM_SLOTS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")  # shaped like their parameter
# Group settings that describe how this process runs the optimizer, not the run's state:
# taken from the fresh optimizer (a run saved on CUDA with fused AdamW resumes on the CPU).
IMPLEMENTATION = ("fused", "foreach", "capturable", "differentiable")
# RunState fields that are >= 0
COUNTS = ("step", "epoch", "batch", "bad_epochs", "skipped", "planned_steps")


def load_resume_point(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                      state_cls: type[State], device: torch.device) -> State:
    """Load checkpoint `path` (NAME, without suffix) into `model` and `optimizer`; returns its
    training state as a `state_cls`. Anything damaged is a TvaeError naming the JSON."""
    json_path = path.with_suffix(".json")
    loaded, meta, optim = load_checkpoint(path, device)
    try:
        model.load_state_dict(loaded.state_dict())
    except RuntimeError:
        raise TvaeError("cannot resume: the checkpoint's weights do not fit the model of the "
                        "run's config.json", json_path) from None
    state = run_state(meta.get("state"), state_cls, json_path)
    load_optimizer(optimizer, meta, optim, json_path)
    return state


def run_state(raw: Any, state_cls: type[State], json_path: Path) -> State:
    """The training state saved in a checkpoint, checked field by field."""
    if not isinstance(raw, dict):
        raise TvaeError("cannot resume: the checkpoint has no training state (an exported "
                        "or bundled model cannot be resumed)", json_path)
    try:
        state = config_from_dict(state_cls, raw)
    except TvaeError as exc:
        raise TvaeError(f"cannot resume: bad training state ({exc.reason})", json_path) from None
    for name in COUNTS:
        if getattr(state, name, 0) < 0:
            raise TvaeError(f"cannot resume: bad training state ({name} is negative)", json_path)
    return state


def _same_kind(value: Any, default: Any) -> bool:
    """Whether a saved optimizer setting has the kind of value the fresh optimizer has."""
    if isinstance(default, bool) or default is None:
        return value is None or isinstance(value, bool)
    if isinstance(default, (int, float, Tensor)):
        return (isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value))
    if isinstance(default, (tuple, list)):
        return (isinstance(value, (tuple, list)) and len(value) == len(default)
                and all(_same_kind(v, d) for v, d in zip(value, default, strict=True)))
    if isinstance(default, str):
        return isinstance(value, str)
    return True


def _check_groups(groups: Any, fresh: list[dict[str, Any]], json_path: Path) -> list[dict]:
    """The saved parameter groups, checked against the fresh optimizer's."""
    if not groups:
        raise TvaeError("cannot resume: the checkpoint has no optimizer state", json_path)
    if not (isinstance(groups, list) and len(groups) == len(fresh)
            and all(isinstance(g, dict) for g in groups)):
        raise TvaeError("cannot resume: the optimizer groups are not this optimizer's",
                        json_path)
    checked = []
    for group, new in zip(groups, fresh, strict=True):
        if group.get("params") != new["params"]:
            raise TvaeError("cannot resume: the optimizer groups do not list this model's "
                            "parameters", json_path)
        for key, value in group.items():
            if key in new and key != "params" and not _same_kind(value, new[key]):
                raise TvaeError(f"cannot resume: optimizer setting '{key}' has an invalid "
                                f"value {value!r}", json_path)
        checked.append({**group, **{k: new[k] for k in IMPLEMENTATION if k in new}})
    return checked


def _check_tensors(tensors: dict[str, Tensor], params: list[Tensor], json_path: Path) -> None:
    """Every saved optimizer tensor names one of the parameters and has the right shape."""
    for key, value in tensors.items():
        pid, _, slot = key.partition("/")
        if not pid.isdigit() or int(pid) >= len(params) or slot not in ("step", *ADAM_SLOTS):
            raise TvaeError(f"cannot resume: unknown optimizer state '{key}'", json_path)
        shape = () if slot == "step" else tuple(params[int(pid)].shape)
        if value.numel() != math.prod(shape) or (slot != "step" and value.shape != shape):
            raise TvaeError(f"cannot resume: optimizer state '{key}' has shape "
                            f"{tuple(value.shape)}, not {shape}", json_path)


def load_optimizer(optimizer: torch.optim.Optimizer, meta: dict[str, Any],
                   tensors: dict[str, Tensor], json_path: Path) -> None:
    """Restore the optimizer state saved in a checkpoint, after checking it."""
    groups = _check_groups(meta.get("optimizer_groups"),
                           optimizer.state_dict()["param_groups"], json_path)
    _check_tensors(tensors, [p for g in optimizer.param_groups for p in g["params"]], json_path)
    try:
        restore_optimizer(optimizer, {**meta, "optimizer_groups": groups}, tensors)
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise TvaeError(f"cannot resume: the optimizer state does not load ({exc})",
                        json_path) from None
