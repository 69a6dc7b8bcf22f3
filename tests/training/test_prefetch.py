"""Prefetching (tvae.training.prefetch): the batch made on the background thread is the one the
loop would have made, so a run with it logs exactly the rows of a run without."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from tests.training.test_ddp import _trainer, songs  # noqa: F401 (the fixture)
from tvae.training.prefetch import Prefetcher

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def test_a_prefetched_run_logs_the_rows_and_weights_of_one_without(
        songs: object, tmp_path: Path) -> None:  # noqa: F811
    runs = {}
    for prefetch in (False, True):
        trainer = _trainer(songs, tmp_path / str(prefetch), max_steps=12, epochs=3, log_every=2)
        trainer.prefetch = prefetch
        trainer.fit()
        runs[prefetch] = trainer
    assert _rows(tmp_path / "True") == _rows(tmp_path / "False")
    weights = [t.model.state_dict() for t in runs.values()]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_the_prefetcher_makes_each_batch_once_and_in_order() -> None:
    made: list[tuple[int, int]] = []

    def make(b: int, step: int) -> tuple[int, int]:
        made.append((b, step))
        return b, step

    with Prefetcher(make, 4, enabled=True) as ahead:
        assert [ahead.get(b, 10 + b) for b in range(4)] == [(b, 10 + b) for b in range(4)]
    assert sorted(made) == [(b, 10 + b) for b in range(4)]
    with Prefetcher(make, 4, enabled=True) as ahead:  # a jump (a resumed epoch) is made in line
        assert ahead.get(2, 7) == (2, 7) and ahead.get(3, 8) == (3, 8)
    with Prefetcher(make, 4, enabled=False) as ahead:
        assert ahead.get(1, 1) == (1, 1)

    def broken(b: int, step: int) -> None:
        if b == 1:
            raise ValueError("bad batch")

    with Prefetcher(broken, 3, enabled=True) as ahead:
        ahead.get(0, 0)
        with pytest.raises(ValueError, match="bad batch"):
            ahead.get(1, 1)
