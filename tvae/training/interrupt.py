"""Ctrl-C while training: stop where the run is whole.

A KeyboardInterrupt raised wherever Python happens to be can land inside the optimizer's
update (some parameters stepped, others not) or between the update and the step count; a
checkpoint saved then resumes into another run. Here the first SIGINT is only noted, and the
trainer stops at the next step boundary, where weights, optimizer, state and data stream agree,
and saves there. A second SIGINT stops at once and keeps the last checkpoint as it is.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class StopNow(KeyboardInterrupt):
    """A second Ctrl-C: stop immediately, saving nothing (the state may be half-updated)."""


class StopRequest:
    """Whether the user asked the run to stop (SIGINT), while `installed`."""

    def __init__(self) -> None:
        self.requested = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise StopNow
        self.requested = True
        sys.stderr.write("\nstopping after this step (Ctrl-C again to stop at once, keeping "
                         "the last checkpoint)\n")

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Catch SIGINT for the block (only the main thread can: elsewhere, nothing changes; a
        process started with SIGINT ignored, as `cmd &` is, keeps ignoring it)."""
        if (threading.current_thread() is not threading.main_thread()
                or signal.getsignal(signal.SIGINT) is signal.SIG_IGN):
            yield
            return
        previous = signal.signal(signal.SIGINT, self._handle)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)
