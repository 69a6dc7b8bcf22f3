"""Click options generated from the config dataclasses: every field `foo_bar` declared with
`setting(default, help, ...)` becomes `--foo-bar` with that help text, so the CLI never drifts
from the configs. Fields declared with `cli=False` (e.g. `trained_bars`, set by training) get no
option. Values are checked by the configs themselves when `build_config` builds them, so a bad
value is one line naming its option (exit code 2) before any data is read."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

import click

from tvae.config import CHOICES, flag_of

T = TypeVar("T")


def field_help(cls: type) -> dict[str, str]:
    """Each field's help text, as declared in its `setting`."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}


def config_options(*classes: type, skip: tuple[str, ...] = ()) -> Callable[[Any], Any]:
    """Decorator adding one option per field of each dataclass in `classes`."""

    def decorate(func: Any) -> Any:
        for cls in reversed(classes):
            helps = field_help(cls)
            for f in reversed(dataclasses.fields(cls)):
                if f.name in skip or not f.metadata.get("cli", True):
                    continue
                flag = flag_of(f.name)
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
    """`cls` from `base` (or its defaults) with every option the user gave; the config checks
    each value (a TvaeError naming the option when one is out of range)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    given = {k: v for k, v in options.items() if k in names and v is not None}
    start = base if base is not None else cls()
    return dataclasses.replace(start, **given)  # type: ignore[type-var]
