"""`tvae evaluate` runs where it is told (`--device`), reads the model's own window by default
and reports the per-distance buckets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cli_contract import invoke

DATA = Path(__file__).resolve().parent.parent / "data"


def test_evaluate_takes_a_device_and_reports_distances(tiny_ckpt: Path) -> None:
    got = invoke(["evaluate", DATA, "--model", tiny_ckpt, "--device", "cpu", "--json"])
    assert got.code == 0, got.err
    result = json.loads(got.out)
    assert set(result["by_distance"]) == {"1-4", "5-8", "9-16", "17-32"}
    assert result["windows"] == 4  # the four example songs, one window each


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_evaluate_on_a_missing_device_is_one_line(tiny_ckpt: Path) -> None:
    got = invoke(["evaluate", DATA, "--model", tiny_ckpt, "--device", "cuda"])
    assert got.code == 2 and got.crash is None
    assert "CUDA is not available" in got.err and len(got.err.strip().splitlines()) == 1
