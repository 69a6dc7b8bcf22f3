"""Making the next batch while the current step runs.

A batch depends only on its place in the epoch and the step's (seed, step) streams, so the
batch for step s + 1 can be made on a background thread while step s runs on the device, and
it is the batch the loop would have made itself: a run with prefetching logs the same numbers
as one without. On a GPU this hides the host's batching (tens of milliseconds at large
batches) behind the step; on a CPU both compete for the same cores, so it is off there.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


class Prefetcher:
    """`get(b, step)` returns make(b, step), having started make(b + 1, step + 1) (while
    b + 1 < `count`) on a background thread. Disabled, it calls `make` in line."""

    def __init__(self, make: Callable[[int, int], Any], count: int, enabled: bool) -> None:
        self.make, self.count = make, count
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="tvae-batch") if enabled else None
        self.pending: tuple[tuple[int, int], Future] | None = None

    def get(self, b: int, step: int) -> Any:
        if self.pool is None:
            return self.make(b, step)
        if self.pending is not None and self.pending[0] == (b, step):
            batch = self.pending[1].result()  # raises what making it raised
        else:
            self._drop()
            batch = self.make(b, step)
        self.pending = None
        if b + 1 < self.count:
            self.pending = ((b + 1, step + 1), self.pool.submit(self.make, b + 1, step + 1))
        return batch

    def _drop(self) -> None:
        if self.pending is not None:
            self.pending[1].cancel()
            self.pending = None

    def close(self) -> None:
        """Stop: a batch being made is finished and dropped."""
        self._drop()
        if self.pool is not None:
            self.pool.shutdown(wait=True)

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
