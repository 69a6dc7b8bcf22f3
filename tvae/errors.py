"""tvae's own error and warning types.

Every problem a user can fix (a broken file, a bad option, a checkpoint for another model) is a
`TvaeError`; the CLI prints it as one line and exits with code 2. Anything else is a bug.
"""

from __future__ import annotations

from pathlib import Path


class TvaeError(Exception):
    """A problem with the user's input, reported as one line: ``PATH: reason``."""

    def __init__(self, reason: str, path: str | Path | None = None) -> None:
        super().__init__(reason)
        self.reason = " ".join(str(reason).split())  # always one line
        self.path = None if path is None else str(path)

    def __str__(self) -> str:
        if not self.path:
            return self.reason
        # A file name may hold newlines or control characters: show them escaped.
        path = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in self.path)
        return f"{path}: {self.reason}"


class TvaeWriteError(TvaeError, OSError):
    """A file could not be written (a full disk, no permission, a file where a folder should
    be): a TvaeError for the CLI's one line, and an OSError for callers that catch those."""


class TvaeWarning(UserWarning):
    """A change tvae made to the input (quantizing, dropping a voice, moving an octave...)."""
