"""The run folder: its config.json and command.txt, and one training process at a time (a lock
file holding the owner's process id).

A lock left by a process that no longer exists (killed, crashed) is taken over, so `--resume`
after a SIGKILL works; a live owner makes a second run refuse with a one-line error instead of
interleaving metrics and checkpoints.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tvae.errors import TvaeError

LOCK_NAME = ".lock"


def _owner(path: Path) -> int | None:
    try:
        return int(path.read_text().strip() or "0") or None
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def make_run_folder(run_dir: Path) -> None:
    """Create the run folder, or say in one line why it cannot be one."""
    if run_dir.exists() and not run_dir.is_dir():
        raise TvaeError("--out must be a folder, and this is a file", run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TvaeError(f"cannot create the run folder ({exc.strerror or exc})", run_dir) from None


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run folder's lock for the duration of the block."""
    make_run_folder(run_dir)
    path = run_dir / LOCK_NAME
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pid = _owner(path)
            if pid is not None and pid != os.getpid() and _alive(pid):
                raise TvaeError(f"another training run (process {pid}) is using this run "
                                "folder; wait for it or choose another --out", run_dir) from None
            path.unlink(missing_ok=True)  # left by a process that is gone
            continue
        except OSError as exc:
            raise TvaeError(f"cannot write in the run folder ({exc.strerror or exc})",
                            run_dir) from None
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{os.getpid()}\n")
        try:
            yield
        finally:
            path.unlink(missing_ok=True)
        return
    raise TvaeError("cannot take the run folder's lock", run_dir)


def save_run_config(run_dir: Path, configs: dict[str, Any], command: list[str] | None) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(configs, indent=2) + "\n")
    if command is not None:
        (run_dir / "command.txt").write_text(shlex.join(command) + "\n")


def read_run_config(run_dir: Path) -> dict[str, Any]:
    try:
        saved = json.loads((run_dir / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise TvaeError(f"cannot resume: no readable config.json ({exc})", run_dir) from None
    return saved
