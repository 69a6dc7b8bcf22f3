"""How a config field is declared and checked: `setting` (default, help text, range),
`validate_fields` (the one validator of types and ranges, for the command line, Python and
saved JSON alike) and the JSON round trip. The configs themselves are in `tvae.config`."""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import field
from typing import Any, TypeVar

from tvae.errors import TvaeError

T = TypeVar("T")


def setting(default: Any, help: str, lo: float | None = None, hi: float | None = None, *,
            above: bool = False, cli: bool = True) -> Any:
    """A config field: its default, its meaning (the CLI's help text) and its range: `lo` to
    `hi` inclusive (`above`: strictly above `lo`). `cli` False: no command-line option."""
    return field(default=default, metadata={"help": help, "lo": lo, "hi": hi, "above": above,
                                            "cli": cli})


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


def _type_problem(value: Any, annotation: Any, infinite_ok: bool = False) -> str | None:
    """Why `value` is not of the field type `annotation` (int, float, bool, str), or None.
    Floats must be finite unless `infinite_ok` (NaN never is)."""
    if annotation in ("int", int):
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        return None if ok else "a whole number"
    if annotation in ("float", float):
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            return "a number"
        if math.isfinite(value) or (infinite_ok and not math.isnan(value)):
            return None
        return "a finite number"
    if annotation in ("bool", bool):
        return None if isinstance(value, bool) else "true or false"
    if annotation in ("str", str):
        return None if isinstance(value, str) else "a string"
    if annotation in ("dict[str, float]", dict[str, float]):
        ok = isinstance(value, dict) and len(value) <= 64 and all(
            isinstance(k, str) and _type_problem(v, float) is None for k, v in value.items())
        return None if ok else "an object of at most 64 finite numbers"
    if annotation in ("list[float]", list[float]):
        ok = isinstance(value, list) and len(value) <= 1024 and all(
            _type_problem(v, float) is None for v in value)
        return None if ok else "a list of at most 1,024 finite numbers"
    return None


def validate_fields(config: Any) -> None:
    """Check each field of a dataclass (a config, a run's state) against its type and, for a
    `setting`, its range: the one validator, whether the values come from the command line,
    Python or a saved JSON."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        is_option = "help" in f.metadata and f.metadata.get("cli", True)
        label = f"{f.name} ({flag_of(f.name)})" if is_option else f"field '{f.name}'"
        problem = _type_problem(value, f.type, bool(f.metadata.get("infinite_ok")))
        if problem:
            raise TvaeError(f"{label} must be {problem}, got {repr(value)[:40]}")
        lo, hi, above = f.metadata.get("lo"), f.metadata.get("hi"), f.metadata.get("above")
        low_ok = lo is None or (value > lo if above else value >= lo)
        if low_ok and (hi is None or value <= hi):
            continue
        if hi is None:
            bound = "positive" if above and lo == 0 else f"{'>' if above else '>='} {lo}"
        elif above:
            bound = f"above {lo} and at most {hi}"
        else:
            bound = f"between {lo} and {hi}"
        raise TvaeError(f"{label} must be {bound}, got {value!r}")


def config_from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build dataclass `cls` from a JSON dict, refusing unknown fields, wrong types and values
    out of range (each field as its `setting` declares)."""
    if not isinstance(data, dict):
        raise TvaeError(f"{cls.__name__} must be a JSON object")
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise TvaeError(f"{cls.__name__} has unknown fields {unknown}"[:300])
    return cls(**data)  # its __post_init__ runs `validate_fields`


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)
