"""Ctrl-C while training: stop where the run is whole.

A KeyboardInterrupt raised wherever Python happens to be can land inside the optimizer's
update (some parameters stepped, others not) or between the update and the step count; a
checkpoint saved then resumes into another run. Here the first SIGINT is only noted, and the
trainer stops at the next step boundary, where weights, optimizer, state and data stream agree,
and saves there. A second SIGINT stops at once and keeps the last checkpoint as it is.
SIGTERM (what `kill`, `timeout` and batch schedulers send) is treated the same way.
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
    """Whether the user asked the run to stop (SIGINT or SIGTERM), while `installed`;
    `signum` is the first such signal (the exit code is 128 + signum)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self.signum = int(signal.SIGINT)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise StopNow
        self.requested, self.signum = True, int(signum)
        how = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        sys.stderr.write(f"\n{how}: stopping after this step (a second one stops at once, "
                         "keeping the last checkpoint)\n")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Catch SIGINT and SIGTERM for the block (only the main thread can: elsewhere, nothing
        changes; a signal the process was started with ignored, as `cmd &` ignores SIGINT,
        stays ignored)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS
                    if signal.getsignal(sig) is not signal.SIG_IGN}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
