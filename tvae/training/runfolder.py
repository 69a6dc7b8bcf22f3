"""The run folder: its config.json and command.txt, and one training process at a time.

The lock is an OS file lock on RUN/.lock (which holds the owner's process id for the message):
it is released when its process ends however it ends, so `--resume` after a SIGKILL works, and
a second run in the same folder is refused with a one-line error instead of interleaving
metrics and checkpoints. Where the OS has no file locks (Windows), runs are not locked.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tvae.errors import TvaeError
from tvae.files import read_json, write_bytes_atomic

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"


def make_run_folder(run_dir: Path) -> None:
    """Create the run folder, or say in one line why it cannot be one."""
    try:
        is_file = run_dir.exists() and not run_dir.is_dir()
    except OSError as exc:  # a name too long, a loop of links
        raise TvaeError(f"cannot use this run folder ({exc.strerror or exc})", run_dir) from None
    if is_file:
        raise TvaeError("--out must be a folder, and this is a file", run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TvaeError(f"cannot create the run folder ({exc.strerror or exc})", run_dir) from None


@contextmanager
def run_lock(run_dir: Path, hint: str = "wait for it or choose another --out"
             ) -> Iterator[None]:
    """Hold the run folder's lock (an OS file lock, so it dies with its process and a copied
    folder is not locked) for the duration of the block; `hint` ends the message when another
    process holds it."""
    make_run_folder(run_dir)
    path = run_dir / LOCK_NAME
    try:
        handle = open(path, "a+")  # noqa: SIM115 (held open for the whole block)
    except OSError as exc:
        raise TvaeError(f"cannot write in the run folder ({exc.strerror or exc})",
                        run_dir) from None
    acquired = False
    try:
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.seek(0)
                owner = handle.read().strip() or "another process"
                raise TvaeError(f"another training run (process {owner}) is using this run "
                                f"folder; {hint}", run_dir) from None
        acquired = True
        with contextlib.suppress(OSError):  # the owner's id is for messages only (full disk)
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
        yield
    finally:
        if acquired:
            path.unlink(missing_ok=True)  # a finished run leaves no lock file behind
        handle.close()  # releases the lock


def save_run_config(run_dir: Path, configs: dict[str, Any], command: list[str] | None) -> None:
    """Write config.json (and command.txt) atomically: a full disk leaves no empty config."""
    write_bytes_atomic((json.dumps(configs, indent=2) + "\n").encode(), run_dir / "config.json")
    if command is not None:
        write_bytes_atomic((shlex.join(command) + "\n").encode(), run_dir / "command.txt")


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """The run's config.json, checked: a JSON object with the grid, model, data and train
    sections (objects) and the data folder(s). A damaged one is a TvaeError naming it."""
    path = run_dir / "config.json"
    try:
        saved = read_json(path, "the run's config.json")
    except TvaeError as exc:
        raise TvaeError(f"cannot resume: {exc.reason}", path) from None
    if not isinstance(saved, dict):
        raise TvaeError("cannot resume: the run's config must be a JSON object", path)
    for key in ("grid", "model", "data", "train"):
        if not isinstance(saved.get(key), dict):
            raise TvaeError(f"cannot resume: the '{key}' section is missing or not an object",
                            path)
    folders = saved.get("data_dir")
    if not (isinstance(folders, str) and folders or isinstance(folders, list) and folders
            and all(isinstance(f, str) and f for f in folders)):
        raise TvaeError("cannot resume: 'data_dir' must name the data folder(s)", path)
    label = saved.get("label_column")
    if label is not None and not isinstance(label, str):
        raise TvaeError("cannot resume: 'label_column' must be a string or null", path)
    return saved
