"""Writing files safely: a temporary file and a rename, and one-line errors naming the path.
No dependencies beyond the standard library, so any module can write files through it.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

from tvae.errors import TvaeWriteError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def readable(text: str) -> str:
    """`text` as any encoder takes it: bytes of a file name that are not UTF-8 (which Python
    keeps as lone surrogates) become U+FFFD, so titles, pages and messages never fail on them."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def check_folder(folder: str | Path, path: str | Path | None = None) -> None:
    """Refuse, in one line naming `path` (default: `folder`), a folder that cannot exist
    because a file stands where it or a folder above it should be. Creates nothing, so
    commands call it before any work."""
    folder = Path(folder)
    path = folder if path is None else path
    for above in (folder, *folder.parents):
        try:
            exists, is_dir = above.exists(), above.is_dir()
        except OSError as exc:  # a name too long, a loop of links...
            raise TvaeWriteError(f"cannot write here ({exc.strerror or exc})", path) from None
        if exists:
            if not is_dir:
                raise TvaeWriteError(f"cannot write here: {above} is a file, not a folder", path)
            break


def is_folder(path: str | Path) -> bool:
    """Whether `path` is an existing folder; False (not an exception) for a name too long."""
    try:
        return Path(path).is_dir()
    except OSError:
        return False


def ensure_folder(path: str | Path) -> None:
    """Make the folder `path` goes into, or say in one line why it cannot be made."""
    folder = Path(path).parent
    check_folder(folder, path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TvaeWriteError(f"cannot make the folder {folder} ({exc.strerror or exc})",
                        path) from None


def check_replaceable(path: str | Path) -> None:
    """Refuse, in one line naming `path`, to write over anything but a regular file: a device
    node, a FIFO, a socket or a folder there is left as it is (even for root)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:  # a name too long, a loop of links, a file where a folder should be
        if exc.errno in (errno.ENOTDIR, errno.ENAMETOOLONG, errno.ELOOP):  # said when written
            return
        raise TvaeWriteError(f"cannot write here ({exc.strerror or exc})", path) from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file (a device, FIFO or " \
            "socket)"
        raise TvaeWriteError(f"cannot write here: it is {kind}, which is never replaced", path)


def write_bytes_atomic(data: bytes, path: str | Path) -> None:
    """Write `data` to `path` through a temporary file and a rename: never a half-written file.
    Any failure (a file where a folder should be, no permission, a full disk, a device or FIFO
    at `path`) is one TvaeError naming the path, and leaves no temporary file behind."""
    path = Path(path)
    ensure_folder(path)
    check_replaceable(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise TvaeWriteError(f"cannot write here ({exc.strerror or exc})", path) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise TvaeWriteError(f"cannot write ({exc.strerror or exc})", path) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
