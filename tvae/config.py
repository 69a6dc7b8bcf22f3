"""Configuration dataclasses, one per concern, each saved as JSON inside every checkpoint.

`GridConfig` fixes the melody grid and vocabulary; `ModelConfig`, `DataConfig` and `TrainConfig`
describe the network, the training windows and the optimisation. Loading validates field names
and types, so a checkpoint made for another version fails with a clear message.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tvae.errors import TvaeError

T = TypeVar("T")

# Class ids shared by every vocabulary; pitch onsets follow them.
PAD = 0  # outside the melody (padding of short bars, before a pickup); ignored by the loss
REST = 1  # silence
HOLD = 2  # the previous note sounds on
N_SPECIAL = 3


@dataclass(frozen=True)
class GridConfig:
    """The melody grid: sixteenth-note steps, one class per step."""

    min_pitch: int = 48  # lowest onset pitch in the vocabulary (MIDI number, C3)
    max_pitch: int = 96  # highest onset pitch in the vocabulary (MIDI number, C7)
    steps_per_bar: int = 16  # model bar size in sixteenths; shorter meters are PAD-padded

    @property
    def n_pitches(self) -> int:
        return self.max_pitch - self.min_pitch + 1

    @property
    def vocab_size(self) -> int:
        return N_SPECIAL + self.n_pitches

    def pitch_to_class(self, pitch: int) -> int:
        return N_SPECIAL + pitch - self.min_pitch

    def class_to_pitch(self, cls: int) -> int:
        return cls - N_SPECIAL + self.min_pitch


def _check_type(name: str, value: Any, annotation: Any) -> None:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(annotation):
            try:
                _check_type(name, value, arm)
                return
            except TvaeError:
                pass
        raise TvaeError(f"config field '{name}' has an invalid value {value!r}")
    if annotation is type(None):
        ok = value is None
    elif annotation is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif annotation is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif origin in (list, tuple):
        ok = isinstance(value, (list, tuple))
    elif isinstance(annotation, type):
        ok = isinstance(value, annotation)
    else:
        ok = True
    if not ok:
        raise TvaeError(f"config field '{name}' should be {annotation}, got {value!r}")


def config_from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build dataclass `cls` from a JSON dict, refusing unknown fields and wrong types."""
    if not isinstance(data, dict):
        raise TvaeError(f"{cls.__name__} must be a JSON object")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise TvaeError(f"{cls.__name__} has unknown fields {unknown}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        _check_type(name, value, hints[name])
        if isinstance(value, list):
            value = tuple(value) if typing.get_origin(hints[name]) is tuple else value
        kwargs[name] = value
    return cls(**kwargs)


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def save_config_json(config: Any, path: str | Path) -> None:
    Path(path).write_text(json.dumps(config_to_dict(config), indent=2) + "\n")


def load_config_json(cls: type[T], path: str | Path) -> T:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise TvaeError(f"cannot read config: {exc}", path) from None
    return config_from_dict(cls, data)
