"""`--device` is checked before any work: anything tvae does not run on is one line, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from cli_contract import MARY, invoke

from tvae.devices import pick_device
from tvae.errors import TvaeError


@pytest.mark.parametrize("name", ["tpu", "", "meta", "cuda:x", "cpu:", " cpu", "xla", "cuda:99999"])
def test_devices_tvae_does_not_run_on_are_refused(name: str) -> None:
    with pytest.raises(TvaeError, match="--device"):
        pick_device(name)


def test_cpu_and_auto_are_taken() -> None:
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type in ("cpu", "cuda")


@pytest.mark.parametrize("command", ["sample", "encode", "evaluate", "train"])
def test_every_command_refuses_a_bad_device_in_one_line(command: str, tmp_path: Path,
                                                        folk_corpus: Path) -> None:
    args = {"sample": ["sample", "-o", tmp_path / "s", "-n", "1", "--bars", "2"],
            "encode": ["encode", MARY, "-o", tmp_path / "z.npy"],
            "evaluate": ["evaluate", folk_corpus],
            "train": ["train", folk_corpus, "--out", tmp_path / "run", "--max-steps", "1"]}
    got = invoke([*args[command], "--device", "meta"])
    assert got.code == 2 and got.crash is None, got
    assert got.err.splitlines() == [got.err.splitlines()[0]] and "--device" in got.err
    assert list(tmp_path.iterdir()) == []  # nothing written before the refusal
