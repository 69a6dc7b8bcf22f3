"""Checkpoint pairs read while they are written (issue 20 D2, D3, D6): readers never rename,
never fail on a save in progress, and an evaluation is recorded only on the weights evaluated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from checkpoint_helpers import refuses, tiny
from cli_contract import contract_problem, invoke

import tvae.model.checkpoint as checkpoint
from tvae.errors import TvaeError
from tvae.model.checkpoint import (
    finish_interrupted_save,
    load_checkpoint,
    record_evaluation,
    save_checkpoint,
)


def test_a_first_save_killed_before_its_json_rename_loads_and_resumes(tmp_path: Path) -> None:
    """Only the weights and the staged JSON of a run's first save exist: loading takes the
    staged JSON (nothing renamed), and the owner completes the pair."""
    path = tmp_path / "last"
    save_checkpoint(path, tiny(seed=2), state={"step": 4})
    (tmp_path / "last.json").rename(tmp_path / ".last.json.next")
    model, meta, _ = load_checkpoint(path)
    assert meta["state"]["step"] == 4 and not (tmp_path / "last.json").exists()
    for key, value in tiny(seed=2).state_dict().items():
        assert torch.equal(model.state_dict()[key], value)
    finish_interrupted_save(path)
    assert json.loads((tmp_path / "last.json").read_text())["state"]["step"] == 4
    assert not (tmp_path / ".last.json.next").exists()


def test_a_stale_staged_json_is_dropped_by_the_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "m"
    save_checkpoint(path, tiny(seed=0), state={"step": 1})
    staged = tmp_path / ".m.json.next"
    staged.write_text(json.dumps({**json.loads((tmp_path / "m.json").read_text()),
                                  "weights_sha256": "0" * 64}))  # weights that never came
    assert load_checkpoint(path)[1]["state"]["step"] == 1 and staged.exists()
    finish_interrupted_save(path)
    assert not staged.exists() and load_checkpoint(path)[1]["state"]["step"] == 1


def test_a_pair_replaced_while_it_is_read_is_read_again(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The JSON read belongs to the weights before a save, the weights read to the ones after
    it, and the save has already put its JSON in place: the reader reads the pair again."""
    path = tmp_path / "last"
    save_checkpoint(path, tiny(seed=0), state={"step": 3})
    old = json.loads((tmp_path / "last.json").read_text())
    save_checkpoint(path, tiny(seed=1), state={"step": 6})
    real, calls = checkpoint._meta_of_pair, []

    def racing(json_path: Path) -> dict:
        calls.append(json_path)
        return old if len(calls) == 1 else real(json_path)

    monkeypatch.setattr(checkpoint, "_meta_of_pair", racing)
    assert load_checkpoint(path)[1]["state"]["step"] == 6 and len(calls) == 2
    monkeypatch.setattr(checkpoint, "_meta_of_pair", lambda json_path: old)
    monkeypatch.setattr(checkpoint.time, "sleep", lambda seconds: None)
    with pytest.raises(TvaeError, match="pair does not match"):  # never settles: refused
        load_checkpoint(path)


def test_record_refuses_weights_replaced_since_they_were_evaluated(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "best", tiny(seed=0))
    evaluated = json.loads(path.read_text())["weights_sha256"]
    save_checkpoint(tmp_path / "best", tiny(seed=1))  # a training run saved over it
    before = path.read_bytes()
    with pytest.raises(TvaeError, match="replaced while it was evaluated"):
        record_evaluation(path, {"free_accuracy": 0.5}, "songs", evaluated)
    assert path.read_bytes() == before
    now = json.loads(path.read_text())["weights_sha256"]
    record_evaluation(path, {"free_accuracy": 0.5}, "songs", now)
    assert json.loads(path.read_text())["evaluation"]["free_accuracy"] == 0.5


def test_evaluate_record_waits_for_no_run_and_names_it(tmp_path: Path, folk_corpus: Path
                                                       ) -> None:
    """`evaluate --record` on a checkpoint in a folder whose run is training is refused in one
    line; the JSON is untouched."""
    from tvae.training.runfolder import run_lock

    run = tmp_path / "run"
    path = save_checkpoint(run / "best", tiny(seed=0))
    before = path.read_bytes()
    with run_lock(run):  # a training run holds the folder
        got = invoke(["evaluate", folk_corpus, "--model", path, "--max-windows", "2",
                      "--record", "--json"])
    assert contract_problem(got, "error", run) is None, got
    assert "training run" in got.err and path.read_bytes() == before
    got = invoke(["evaluate", folk_corpus, "--model", path, "--max-windows", "2", "--record",
                  "--json"])
    assert got.code == 0 and "evaluation" in json.loads(path.read_text())


@pytest.mark.slow
def test_readers_hammering_a_training_run_never_fail_it_nor_fail(folk_corpus: Path,
                                                                  tmp_path: Path) -> None:
    """A run saving a checkpoint every step, read over and over meanwhile (and `evaluate
    --record` tried on it): every read gets a whole pair, the run ends cleanly, and its last
    pair still matches."""
    import subprocess
    import sys
    import time

    from tests.tiny import TINY_ARGS

    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tvae", "train", str(folk_corpus), "--out", str(run), *TINY_ARGS,
         "--bars", "4", "--batch-size", "4", "--max-steps", "80", "--log-every", "1",
         "--checkpoint-every", "1", "--eval-windows", "8", "--num-threads", "1", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reads, recorded, refused = 0, 0, 0
    try:
        while proc.poll() is None:
            if not (run / "last.safetensors").exists():
                time.sleep(0.01)
                continue
            load_checkpoint(run / "last")  # never "pair does not match"
            reads += 1
            if reads % 10 == 0:
                got = invoke(["evaluate", folk_corpus, "--model", run / "last.json",
                              "--max-windows", "1", "--bars", "4", "--record", "--json"])
                if got.code == 0:
                    recorded += 1
                else:
                    refused += 1
                    assert "training run" in got.err, got.err
    finally:
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert reads >= 20 and refused >= 1  # the run was really read while it saved
    assert load_checkpoint(run / "last")[1]["state"]["step"] == 80
    assert not (run / ".last.json.next").exists()


def test_a_save_failing_on_its_weights_leaves_no_staged_json(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    from tvae.errors import TvaeWriteError

    path = tmp_path / "last"
    save_checkpoint(path, tiny(seed=0), state={"step": 1})
    real = checkpoint.write_bytes_atomic

    def full_disk(data: bytes, target: Path) -> None:
        if Path(target).suffix == ".safetensors":
            raise TvaeWriteError("cannot write (No space left on device)", target)
        real(data, target)

    monkeypatch.setattr(checkpoint, "write_bytes_atomic", full_disk)
    with pytest.raises(TvaeWriteError):
        save_checkpoint(path, tiny(seed=1), state={"step": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.json", "last.safetensors"]
    assert load_checkpoint(path)[1]["state"]["step"] == 1


def test_a_save_killed_between_its_two_renames_leaves_a_consistent_pair(tmp_path: Path) -> None:
    """The weights of step 6 are in place but NAME.json is still step 3's: loading notices (the
    JSON records its weights' hash) and takes the staged step-6 JSON. A reader never renames
    (it could pull the file from under a save in progress, issue 20 D3): the run that owns the
    pair completes it, with `finish_interrupted_save`."""

    path = tmp_path / "last"
    save_checkpoint(path, tiny(seed=0), state={"step": 3})
    old_json = (tmp_path / "last.json").read_bytes()
    save_checkpoint(path, tiny(seed=1), state={"step": 6})
    staged = tmp_path / ".last.json.next"
    staged.write_bytes((tmp_path / "last.json").read_bytes())  # as if killed before its rename
    (tmp_path / "last.json").write_bytes(old_json)
    model, meta, _ = load_checkpoint(path)
    assert meta["state"]["step"] == 6 and staged.exists()  # read, not renamed
    finish_interrupted_save(path)
    assert not staged.exists()
    assert json.loads((tmp_path / "last.json").read_text())["state"]["step"] == 6
    for key, value in tiny(seed=1).state_dict().items():
        assert torch.equal(model.state_dict()[key], value)
    (tmp_path / "last.json").write_bytes(old_json)  # no staged JSON to recover from: refused
    refuses(tmp_path / "last.json", "pair does not match")
