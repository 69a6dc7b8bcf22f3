"""What every command shares: one-line errors (exit 2), warnings as `warning:` lines, and
Ctrl-C as exit 130. The command modules import this, never `tvae.cli` (which imports them)."""

from __future__ import annotations

import contextlib
import functools
import sys
import warnings
from collections.abc import Callable
from typing import Any

import click

from tvae.errors import TvaeError, TvaeWarning


def handle_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Report TvaeError as `error: PATH: reason` (exit 2), TvaeWarning as `warning: ...`, and
    Ctrl-C as exit code 130."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
            if issubclass(category, TvaeWarning):
                click.echo(f"warning: {message}", err=True)

        _name_safe_streams()
        with warnings.catch_warnings():
            warnings.simplefilter("always", TvaeWarning)
            warnings.showwarning = show
            try:
                return func(*args, **kwargs)
            except TvaeError as exc:
                click.echo(f"error: {exc}", err=True)
                sys.exit(2)
            except KeyboardInterrupt:  # Ctrl-C anywhere (training saves its own checkpoint)
                click.echo("\ninterrupted", err=True)
                sys.exit(130)

    return wrapper


def _name_safe_streams() -> None:
    """Let stdout and stderr print file names whose bytes are not UTF-8 (Python holds them as
    lone surrogates): they are written back as the same bytes, as `ls` shows them, instead of
    failing on a strict UTF-8 stream."""
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            with contextlib.suppress(ValueError, OSError, AttributeError):
                stream.reconfigure(errors="surrogateescape")
