"""Click options generated from the config dataclasses: every field `foo_bar` becomes
`--foo-bar`, with the field's comment as its help text, so the CLI never drifts from the configs."""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Callable
from typing import Any, TypeVar

import click

from tvae.config import CHOICES

T = TypeVar("T")
_COMMENT = re.compile(r"^\s+(\w+):[^#]*#\s*(.+)$")


def field_help(cls: type) -> dict[str, str]:
    """Each field's trailing comment in the dataclass source."""
    helps = {}
    for line in inspect.getsource(cls).splitlines():
        match = _COMMENT.match(line)
        if match:
            helps[match.group(1)] = match.group(2).strip()
    return helps


def config_options(*classes: type, skip: tuple[str, ...] = ()) -> Callable[[Any], Any]:
    """Decorator adding one option per field of each dataclass in `classes`."""

    def decorate(func: Any) -> Any:
        for cls in reversed(classes):
            helps = field_help(cls)
            for f in reversed(dataclasses.fields(cls)):
                if f.name in skip:
                    continue
                flag = "--" + f.name.replace("_", "-")
                default = f.default
                text = f"{helps.get(f.name, '')} [default: {default}]"
                if isinstance(default, bool):
                    decl = f"{flag}/--no-{flag[2:]}"
                    func = click.option(decl, f.name, default=None, help=text)(func)
                elif f.name in CHOICES:
                    kind = click.Choice(CHOICES[f.name])
                    func = click.option(flag, f.name, type=kind, default=None, help=text)(func)
                else:
                    kind = type(default) if default is not None else str
                    func = click.option(flag, f.name, type=kind, default=None, help=text)(func)
        return func

    return decorate


def build_config(cls: type[T], options: dict[str, Any], base: T | None = None) -> T:
    """`cls` from `base` (or its defaults) with every option the user gave."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    given = {k: v for k, v in options.items() if k in names and v is not None}
    start = base if base is not None else cls()
    return dataclasses.replace(start, **given)  # type: ignore[type-var]
