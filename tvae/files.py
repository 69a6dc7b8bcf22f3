"""Reading and writing files safely, with one-line errors naming the path.

Writing: a temporary file and a rename, never over a device or FIFO. Reading: only regular
files, within a size cap, opened so that a FIFO never hangs; JSON through one reader whose
nesting is capped. No dependencies beyond the standard library, so any module can use it.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
import typing
from pathlib import Path
from typing import Any

from tvae.errors import TvaeError, TvaeWriteError

MAX_JSON_BYTES = 16 * 2**20  # a checkpoint's or run's JSON (configs, state, optimizer groups)
MAX_JSON_DEPTH = 32  # nesting of JSON objects and arrays (tvae writes at most 4)


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


def check_not_an_input(path: str | Path, inputs: typing.Iterable[str | Path]) -> None:
    """Refuse, in one line naming `path`, to write over one of the command's own input files
    (the same file under any name: a link, `./x.mid`...), which would be lost."""
    for source in inputs:
        try:
            same = os.path.samefile(path, source)
        except (OSError, ValueError):  # either is missing, or a name no file can have
            continue
        if same:
            raise TvaeWriteError(f"is an input of this command ({source}), which is never "
                                 "written over: give another output name or folder", path)


def temporary_prefix(name: str) -> str:
    """How the temporary files of `name` begin (then 8 random characters and .tmp)."""
    return f".{_shortened(name, 200)}."


def _shortened(name: str, limit: int) -> str:
    """`name` cut to at most `limit` bytes of the file system's encoding (a character cut in two
    stays as its bytes: any bytes but / and NUL make a Linux file name)."""
    return os.fsdecode(os.fsencode(name)[:limit])


def write_bytes_atomic(data: bytes, path: str | Path) -> None:
    """Write `data` to `path` through a temporary file and a rename: never a half-written file.
    Any failure (a file where a folder should be, no permission, a full disk, a device or FIFO
    at `path`) is one TvaeError naming the path, and leaves no temporary file behind."""
    path = Path(path)
    ensure_folder(path)
    check_replaceable(path)
    try:  # the temporary name adds 14 bytes: a long name is shortened there (255 is the limit)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temporary_prefix(path.name),
                                   suffix=".tmp")
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


# -- reading ------------------------------------------------------------------------------
def read_regular_file(path: str | Path, limit: int, what: str) -> bytes:
    """The bytes of `path`, refusing before reading anything that is not a regular file once
    symlinks are resolved (a folder, /dev/zero, a FIFO: never opened in a blocking way) or that
    holds more than `limit` bytes."""
    with open_regular_file(path, limit, what) as file:
        try:
            data = file.read(limit + 1)
        except OSError as exc:
            raise TvaeError(f"cannot read {what} ({exc.strerror or exc})", path) from None
    if len(data) > limit:
        raise TvaeError(f"{what} larger than {limit} bytes", path)
    return data


def open_regular_file(path: str | Path, limit: int, what: str) -> typing.BinaryIO:
    """`path` opened for reading, after checking (os.stat, then fstat on the open file) that it
    is a regular file of at most `limit` bytes; opened non-blocking, so a FIFO never hangs."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise TvaeError(f"{what} not found", path) from None
    except (OSError, ValueError) as exc:
        raise TvaeError(f"cannot read {what} ({getattr(exc, 'strerror', None) or exc})",
                        path) from None
    _check_regular(info, limit, what, path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        file = os.fdopen(os.open(path, flags), "rb")
    except OSError as exc:
        raise TvaeError(f"cannot read {what} ({exc.strerror or exc})", path) from None
    try:
        _check_regular(os.fstat(file.fileno()), limit, what, path)  # replaced meanwhile?
    except TvaeError:
        file.close()
        raise
    return file


def _check_regular(info: os.stat_result, limit: int, what: str, path: str | Path) -> None:
    if stat.S_ISDIR(info.st_mode):
        raise TvaeError(f"{what}: a folder, not a file", path)
    if not stat.S_ISREG(info.st_mode):
        kind = ("a FIFO" if stat.S_ISFIFO(info.st_mode) else
                "a device" if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) else
                "not a file")
        raise TvaeError(f"{what}: not a regular file ({kind})", path)
    if info.st_size > limit:
        raise TvaeError(f"{what} too large ({info.st_size} bytes; at most {limit})", path)


def parse_json(raw: bytes, what: str, path: str | Path) -> Any:
    """JSON from bytes, refusing invalid text and nesting deeper than MAX_JSON_DEPTH (a
    100,000-deep file is a clear error, not a RecursionError)."""
    try:
        data = json.loads(raw)
    except RecursionError:
        raise TvaeError(f"{what} nested too deeply (at most {MAX_JSON_DEPTH} levels)",
                        path) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise TvaeError(f"{what} is not valid JSON ({exc})", path) from None
    if json_depth(data) > MAX_JSON_DEPTH:
        raise TvaeError(f"{what} nested too deeply (at most {MAX_JSON_DEPTH} levels)", path)
    return data


def json_depth(data: Any) -> int:
    """How deeply objects and arrays nest in parsed JSON (a scalar: 0), without recursion."""
    deepest, todo = 0, [(data, 1)]
    while todo:
        item, depth = todo.pop()
        children = item.values() if isinstance(item, dict) else item
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if depth > MAX_JSON_DEPTH:
                return depth
            todo.extend((child, depth + 1) for child in children)
    return deepest


def read_json(path: str | Path, what: str, limit: int = MAX_JSON_BYTES) -> Any:
    """The JSON in `path`: a regular file of at most `limit` bytes, nested at most
    MAX_JSON_DEPTH levels. Every JSON tvae reads goes through here."""
    return parse_json(read_regular_file(path, limit, what), what, path)
