"""Runs that survive damage: `--resume` on a damaged run folder is one line naming the file,
a kill at any point never duplicates a metrics row, and a bad `--out` or a full disk is one line
(exit 2) that leaves the last good checkpoint as it was."""

from __future__ import annotations

import builtins
import csv
import errno
import io
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from tests.tiny import TINY_MODEL
from tvae.cli.main import main
from tvae.config import DataConfig, TrainConfig
from tvae.training.metrics_log import MetricsLog
from tvae.training.run import train
from tvae.training.trainer import Trainer

TINY = TINY_MODEL
DATA = DataConfig(bars=4, stride=2)


def _cfg(**kw: object) -> TrainConfig:
    base = dict(batch_size=8, epochs=1, warmup_steps=2, log_every=1, checkpoint_every=1,
                eval_windows=8, beta_steps=4, tf_schedule="linear", tf_min=0.5, tf_steps=4,
                num_threads=1)
    return TrainConfig(**{**base, **kw})


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _resume(run: Path, *extra: str) -> Result:
    return CliRunner().invoke(main, ["train", "--out", str(run), "--resume", "--quiet", *extra])


def _one_line_error(result: Result, *needles: str) -> None:
    """Exit 2 and exactly one line on stderr, `error: ...`, holding each of `needles`."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    lines = [line for line in result.stderr.strip().splitlines()
             if not line.startswith("warning: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def finished(folk_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-epoch run (its limits can be extended with --resume --epochs 2)."""
    run = tmp_path_factory.mktemp("finished") / "run"
    train(folk_corpus, run, model_config=TINY, data_config=DATA, train_config=_cfg(),
          progress=False)
    return run


def _edit_json(path: Path, change: Callable[[Any], Any]) -> None:
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def _set_state(key: str, value: Any) -> Callable[[Any], Any]:
    def change(meta: dict) -> dict:
        meta["state"][key] = value
        return meta
    return change


def _set_group(key: str, value: Any) -> Callable[[Any], Any]:
    def change(meta: dict) -> dict:
        meta["optimizer_groups"][0][key] = value
        return meta
    return change


DAMAGES: dict[str, tuple[str, Callable[[Path], None], str]] = {
    # name: (the file named, how it is damaged, what the message says)
    "config {}": ("config.json", lambda p: p.write_text("{}"), "'grid' section"),
    "config []": ("config.json", lambda p: p.write_text("[]"), "JSON object"),
    "config junk": ("config.json", lambda p: p.write_text("{not json"), "config.json"),
    "no config": ("config.json", lambda p: p.unlink(), "not a run folder"),
    "config no data_dir": ("config.json", lambda p: _edit_json(p, lambda c: {**c, "data_dir": 3}),
                           "data_dir"),
    "config bad field": ("config.json", lambda p: _edit_json(
        p, lambda c: {**c, "model": {**c["model"], "d_model": "wide"}}), "d_model"),
    "metrics junk row": ("metrics.csv", lambda p: p.write_text(
        p.read_text() + "junk,,here\n"), "is not a metrics row"),
    "metrics no header": ("metrics.csv", lambda p: p.write_text("a,b\n1,2\n"),
                          "not a metrics log"),
    "optimizer groups junk": ("last.json", lambda p: _edit_json(
        p, lambda m: {**m, "optimizer_groups": [{"params": "x"}]}), "optimizer groups"),
    "optimizer groups not a list": ("last.json", lambda p: _edit_json(
        p, lambda m: {**m, "optimizer_groups": {"a": 1}}), "optimizer groups"),
    "optimizer setting junk": ("last.json", lambda p: _edit_json(p, _set_group("betas", "x")),
                               "optimizer setting 'betas'"),
    "unknown state field": ("last.json", lambda p: _edit_json(p, _set_state("colour", 1)),
                            "unknown fields ['colour']"),
    "state wrong type": ("last.json", lambda p: _edit_json(p, _set_state("step", "ten")),
                         "'step'"),
    "state negative": ("last.json", lambda p: _edit_json(p, _set_state("epoch", -1)),
                       "epoch is negative"),
    "no state": ("last.json", lambda p: _edit_json(p, lambda m: {**m, "state": None}),
                 "no training state"),
    "config 200,000 deep": ("config.json", lambda p: p.write_text("[" * 200_000 + "]" * 200_000),
                            "nested too deeply"),
    "metrics a FIFO": ("metrics.csv", lambda p: (p.unlink(), os.mkfifo(p)), "FIFO"),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_resume_on_a_damaged_run_folder_is_one_line(finished: Path, tmp_path: Path,
                                                    damage: str) -> None:
    name, harm, reason = DAMAGES[damage]
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    harm(run / name)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and not p.is_fifo()}
    _one_line_error(_resume(run, "--epochs", "2"), name, reason)  # no hang on a FIFO either
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and not p.is_fifo()}
    assert after == before  # nothing was rewritten


def test_old_checkpoints_and_a_torn_last_row_still_resume(finished: Path,
                                                          tmp_path: Path) -> None:
    """A state without the newer fields (old versions) loads with their defaults; a last
    metrics line cut short by a kill is dropped, not an error."""
    run = tmp_path / "run"
    shutil.copytree(finished, run)

    def old(meta: dict) -> dict:
        for key in ("seconds", "skipped"):
            del meta["state"][key]
        return meta

    _edit_json(run / "last.json", old)
    rows = len(_rows(run))
    with open(run / "metrics.csv", "a") as handle:
        handle.write("99,0,tra")  # no newline: a write the kill cut short
    result = _resume(run, "--epochs", "2")
    assert result.exit_code == 0, result.output
    steps = [(r["step"], r["split"]) for r in _rows(run)]
    assert len(steps) == 2 * rows and len(set(steps)) == len(steps)
    assert "99" not in {s for s, _ in steps}


class Killed(BaseException):
    """A simulated SIGKILL: nothing after it runs (not even the Ctrl-C handler)."""


@pytest.mark.parametrize("kill_at", ["step 3", "best after validation",
                                     "last after validation"])
def test_a_kill_at_any_point_never_duplicates_metrics_rows(folk_corpus: Path, tmp_path: Path,
                                                           kill_at: str) -> None:
    """Killed after a row was written and before the checkpoint that covers it (the end of
    epoch's checkpoint comes after its validation row), the resumed run logs exactly the rows
    of an uninterrupted run."""
    cfg = _cfg(epochs=2)
    train(folk_corpus, tmp_path / "whole", model_config=TINY, data_config=DATA,
          train_config=cfg, progress=False)
    run, armed = tmp_path / "killed", {"on": kill_at == "step 3"}
    validate, save = Trainer.validate, Trainer.save

    def validate_then_arm(self: Trainer) -> dict:
        row = validate(self)
        armed["on"] = True
        return row

    def save_unless_killed(self: Trainer, name: str) -> None:
        if armed["on"] and (f"{name} after validation" == kill_at or
                            kill_at == "step 3" and self.state.step == 3):
            raise Killed
        save(self, name)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Trainer, "save", save_unless_killed)
        if kill_at != "step 3":
            patch.setattr(Trainer, "validate", validate_then_arm)
        with pytest.raises(Killed):
            train(folk_corpus, run, model_config=TINY, data_config=DATA, train_config=cfg,
                  progress=False)
    assert _rows(run)[-1]["split"] == ("train" if kill_at == "step 3" else "valid")
    result = _resume(run)
    assert result.exit_code == 0, result.output
    got = [(r["step"], r["split"], r["loss"]) for r in _rows(run)]
    assert got == [(r["step"], r["split"], r["loss"]) for r in _rows(tmp_path / "whole")]


# --- where a run may be written --------------------------------------------------------------


def test_out_that_is_a_file_or_under_a_file_or_not_a_run_is_refused_up_front(folk_corpus: Path,
                                                               tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    for out, reason in ((afile, "must be a folder"), (afile / "run", "cannot create")):
        result = CliRunner().invoke(main, ["train", str(folk_corpus), "--out", str(out),
                                           "--quiet"])
        _one_line_error(result, str(out), reason)
    assert afile.read_text() == "keep me"
    _one_line_error(_resume(tmp_path / "nothing"), "not a run folder")
    assert not (tmp_path / "nothing").exists()  # --resume creates no folder


class FullDisk:
    """A file whose writes fail with ENOSPC after writing part of the data, like a full disk."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    def write(self, data: Any) -> int:
        self.handle.write(data[: len(data) // 2])
        self.handle.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __enter__(self) -> FullDisk:
        return self

    def __exit__(self, *args: object) -> None:
        self.handle.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.handle, name)


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """While `disk["full"]`, every write to a file under `disk["folder"]` fails with ENOSPC
    (through open, Path.write_text and os.fdopen alike)."""
    disk: dict[str, Any] = {"full": False, "folder": None}
    real_open = io.open

    def where(file: Any) -> str:
        if isinstance(file, int):
            return os.readlink(f"/proc/self/fd/{file}")
        return os.path.abspath(file)

    def fake_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        handle = real_open(file, mode, *args, **kwargs)
        if disk["full"] and set(mode) & set("wax+") and where(file).startswith(
                str(disk["folder"])):
            return FullDisk(handle)
        return handle

    monkeypatch.setattr(io, "open", fake_open)
    monkeypatch.setattr(builtins, "open", fake_open)
    yield disk


def _cli_train(corpus: Path, run: Path, *extra: str) -> Result:
    return CliRunner().invoke(main, [
        "train", str(corpus), "--out", str(run), "--d-model", "32", "--d-latent", "8",
        "--n-heads", "2", "--enc-layers", "1", "--dec-layers", "1", "--d-ff", "64",
        "--bar-hidden", "32", "--bars", "4", "--batch-size", "8", "--epochs", "1",
        "--warmup-steps", "2", "--beta-steps", "4", "--log-every", "1", "--checkpoint-every", "2",
        "--eval-windows", "8", "--num-threads", "1", "--quiet", *extra])


def test_a_full_disk_at_start_leaves_no_empty_config(folk_corpus: Path, tmp_path: Path,
                                                     full_disk: dict[str, Any]) -> None:
    run = tmp_path / "run"
    full_disk.update(full=True, folder=run)
    _one_line_error(_cli_train(folk_corpus, run), "config.json", "No space left on device")
    assert not (run / "config.json").exists()
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("after", ["a checkpoint", "a metrics row"])
def test_a_full_disk_during_training_keeps_the_last_checkpoint(
        folk_corpus: Path, tmp_path: Path, full_disk: dict[str, Any],
        monkeypatch: pytest.MonkeyPatch, after: str) -> None:
    """The disk fills up after the checkpoint at step 4 (or after the metrics row of step 3):
    one line, exit 2; the checkpoint is the last good one, metrics.csv holds whole rows only,
    and --resume then finishes the run."""
    run = tmp_path / "run"
    full_disk["folder"] = run
    save, append = Trainer.save, MetricsLog.append

    def save_then_fill(self: Trainer, name: str) -> None:
        save(self, name)
        if after == "a checkpoint" and name == "last" and self.state.step == 4:
            full_disk["full"] = True

    def append_then_fill(self: MetricsLog, rows: Any) -> None:
        rows = list(rows)
        append(self, rows)
        if after == "a metrics row" and rows[-1]["step"] == 3:
            full_disk["full"] = True

    monkeypatch.setattr(Trainer, "save", save_then_fill)
    monkeypatch.setattr(MetricsLog, "append", append_then_fill)
    _one_line_error(_cli_train(folk_corpus, run), "No space left on device")
    monkeypatch.undo()  # the disk has room again
    meta = json.loads((run / "last.json").read_text())
    assert meta["state"]["step"] in ((4,) if after == "a checkpoint" else (2,))
    assert (run / "metrics.csv").read_text().endswith("\n")
    assert [int(r["step"]) for r in MetricsLog(run / "metrics.csv").read()] == [1, 2, 3, 4][
        : 4 if after == "a checkpoint" else 3]
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    result = _resume(run)
    assert result.exit_code == 0, result.output
    steps = [(r["step"], r["split"]) for r in _rows(run)]
    assert len(set(steps)) == len(steps) and steps[-1][1] == "valid"


def test_a_state_saved_before_any_validation_resumes(tmp_path: Path) -> None:
    """best_loss is infinite until the first validation: a checkpoint saved then (a kill in the
    first epoch) resumes; NaN or a string there is still refused."""
    from tvae.errors import TvaeError
    from tvae.training.resume import run_state
    from tvae.training.trainer import RunState

    path = tmp_path / "last.json"
    state = run_state(json.loads(json.dumps({"step": 3, "best_loss": float("inf")})), RunState,
                      path)
    assert state.step == 3 and state.best_loss == float("inf")
    for bad in (float("nan"), "low"):
        with pytest.raises(TvaeError, match="best_loss"):
            run_state({"best_loss": bad}, RunState, path)


def test_a_300_character_out_is_one_line_with_or_without_resume(folk_corpus: Path,
                                                                 tmp_path: Path) -> None:
    from click.testing import CliRunner

    from tvae.cli.main import main

    out = tmp_path / ("d" * 300)
    for args in (["train", "--out", str(out), "--resume"],
                 ["train", str(folk_corpus), "--out", str(out), "--max-steps", "1"]):
        got = CliRunner().invoke(main, args)
        assert got.exit_code == 2 and "File name too long" in got.stderr, got.output
        assert len(got.stderr.splitlines()) == 1 and isinstance(got.exception, SystemExit)
