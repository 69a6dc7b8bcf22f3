"""Reading a checkpoint's safetensors file without trusting it.

A safetensors file is an 8-byte little-endian header length, a JSON header naming each tensor's
dtype, shape and byte range, then the tensors' bytes. `read_header` reads and checks the header
alone (dtypes, shapes, byte ranges against the file's size); `check_fit` compares it with the
parameter shapes a config implies; only then does `read_weights` read the tensors. So a hostile
file (huge declared shapes, a header length of terabytes, an exotic dtype) is refused before
anything of its size is allocated.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors

from tvae.errors import TvaeError
from tvae.files import open_regular_file, parse_json

PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")  # pickle protocol 2+ and torch.save's zip archive
ITEM_BYTES = {"F32": 4, "F16": 2, "BF16": 2}  # the dtypes tvae reads (cast to float32)
MAX_HEADER_BYTES = 16 * 2**20
MAX_WEIGHTS_BYTES = 4 * 2**30  # a model at the parameter cap, in float32, with AdamW's moments
MAX_DIMS = 8
WHAT = "checkpoint weights"


@dataclass(frozen=True)
class Entry:
    """One tensor of the header: dtype name, shape and byte range within the data."""

    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


@dataclass(frozen=True)
class Header:
    """A checked safetensors header: its tensors, and the file's size when it was read."""

    entries: dict[str, Entry]
    size: int


def _damaged(reason: str, path: Path) -> TvaeError:
    return TvaeError(f"{WHAT} are damaged ({reason})", path)


def _entry(name: str, info: Any, path: Path) -> Entry:
    """One header entry, checked: a known dtype, a shape of whole numbers, a byte range that
    matches the shape."""
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise _damaged(f"header entry {name[:60]!r} is malformed", path)
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in ITEM_BYTES:
        raise TvaeError(f"{WHAT} hold tensors of type {str(dtype)[:20]} ({name[:60]}); tvae "
                        "reads float32, float16 and bfloat16 only", path)
    whole = (isinstance(shape, list) and len(shape) <= MAX_DIMS
             and all(type(n) is int and n >= 0 for n in shape))
    if not whole or not (isinstance(offsets, list) and len(offsets) == 2
                         and all(type(n) is int and n >= 0 for n in offsets)):
        raise _damaged(f"header entry {name[:60]!r} has an invalid shape or byte range", path)
    start, end = offsets
    if end - start != math.prod(shape) * ITEM_BYTES[dtype]:
        raise _damaged(f"{name[:60]!r}: its byte range does not match its shape", path)
    return Entry(dtype, tuple(shape), start, end)


def read_header(path: Path) -> Header:
    """The header of a safetensors file, checked against the file's size; no tensor is read.
    Refuses a pickle, anything not a regular file, and files over MAX_WEIGHTS_BYTES."""
    with open_regular_file(path, MAX_WEIGHTS_BYTES, WHAT) as file:
        size = os.fstat(file.fileno()).st_size
        head = file.read(9)  # the header length, and the header's "{"
        # The length's first byte may be 0x80 (the pickle magic): the "{" after it tells.
        if head.startswith(PICKLE_MAGIC) and head[8:9] != b"{":
            raise TvaeError("this is a pickle/torch.save file; tvae only loads safetensors "
                            "weights and never unpickles", path)
        if len(head) < 9:
            raise _damaged("shorter than a safetensors header", path)
        length = int.from_bytes(head[:8], "little")
        if not 2 <= length <= min(MAX_HEADER_BYTES, size - 8):  # "{}" at least
            raise _damaged(f"header length {length} does not fit the file of {size} bytes", path)
        raw = head[8:] + file.read(length - 1)
    try:
        header = parse_json(raw, f"{WHAT} header", path)
    except TvaeError as exc:
        raise _damaged(exc.reason, path) from None
    if not isinstance(header, dict):
        raise _damaged("the header is not a JSON object", path)
    header.pop("__metadata__", None)
    entries = {name: _entry(name, info, path) for name, info in header.items()}
    at = 0
    for entry in sorted(entries.values(), key=lambda e: (e.start, e.end)):
        if entry.start != at:
            raise _damaged("tensor byte ranges overlap or leave gaps", path)
        at = entry.end
    if 8 + length + at != size:
        raise _damaged(f"the header describes {8 + length + at} bytes, the file has {size}", path)
    return Header(entries, size)


def check_fit(header: Header, expected: dict[str, tuple[int, ...]], path: Path) -> None:
    """Refuse a header whose model tensors are not exactly `expected` (name -> shape), or whose
    optimizer tensors (`optim/ID/SLOT`) are more or larger than AdamW's for these parameters."""
    shapes = {k: e.shape for k, e in header.entries.items() if not k.startswith("optim/")}
    missing = sorted(set(expected) - set(shapes))
    extra = sorted(set(shapes) - set(expected))
    wrong = [k for k in expected if k in shapes and shapes[k] != tuple(expected[k])]
    if missing or extra or wrong:
        raise TvaeError(f"{WHAT} do not fit its config (missing {missing[:3]}, unexpected "
                        f"{extra[:3]}, wrong shape {wrong[:3]})", path)
    optim = [e for k, e in header.entries.items() if k.startswith("optim/")]
    largest = max((math.prod(s) for s in expected.values()), default=0)
    if len(optim) > 4 * len(expected) or any(math.prod(e.shape) > largest for e in optim):
        raise TvaeError(f"{WHAT} hold optimizer state that does not fit the model", path)


def read_weights(path: Path, header: Header) -> tuple[dict[str, torch.Tensor], str]:
    """The tensors of a file whose header was checked, and the file's sha256."""
    with open_regular_file(path, header.size, WHAT) as file:
        raw = file.read(header.size + 1)
    if len(raw) != header.size:
        raise _damaged("the file changed while it was read", path)
    try:
        return load_safetensors(raw), hashlib.sha256(raw).hexdigest()
    except (SafetensorError, ValueError, RuntimeError, OSError) as exc:
        reason = " ".join(str(exc).split())[:160]
        raise _damaged(reason, path) from None


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file (header checked first), without a config to fit."""
    return read_weights(path, read_header(path))[0]
