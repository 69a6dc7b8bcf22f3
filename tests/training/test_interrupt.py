"""Ctrl-C while training (issue 20 D1, D7): the first SIGINT stops the run at a step boundary,
so the saved checkpoint is whole (every Adam counter equal) and a resumed run logs the very
rows and weights of an uninterrupted one; a second SIGINT stops at once and saves nothing."""

from __future__ import annotations

import csv
import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from test_train import TINY, _train_cfg

import tvae.training.trainer as trainer_module
from tvae.config import Configs, DataConfig, GridConfig
from tvae.model.checkpoint import load_checkpoint
from tvae.training.run import train

pytestmark = pytest.mark.usefixtures("torch_one_thread")
DATA = DataConfig(bars=4, stride=2)


def _config(**kw: object):  # noqa: ANN202
    return _train_cfg(**{"epochs": 1, "max_steps": 14, "log_every": 4, "checkpoint_every": 100,
                         **kw})


def _signals_during_step(monkeypatch: pytest.MonkeyPatch, at_step: int, times: int,
                         sig: int = signal.SIGINT) -> None:
    """Signal `sig` `times` times from inside optimizer step `at_step`, before its update."""
    real, seen = trainer_module.train_step, {"n": 0}

    def step(*args: object, **kwargs: object) -> dict:
        seen["n"] += 1
        if seen["n"] == at_step:
            for _ in range(times):
                signal.raise_signal(sig)
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "train_step", step)


def _rows(run: Path) -> list[tuple[str, str, str]]:
    with open(run / "metrics.csv") as f:
        return [(r["step"], r["split"], r["loss"]) for r in csv.DictReader(f)]


class _TerminatedError(Exception):
    """A SIGTERM that reached the test's own handler, not the trainer's."""


def _terminated(signum: int, frame: object) -> None:
    raise _TerminatedError


@pytest.fixture(autouse=True)
def sigint_handled() -> Iterator[None]:
    """These tests send SIGINT and SIGTERM: make sure SIGINT reaches Python (a test process
    started in the background inherits it ignored) and that a SIGTERM the trainer misses fails
    the test instead of killing it; put back whatever was there."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    before_term = signal.signal(signal.SIGTERM, _terminated)
    yield
    signal.signal(signal.SIGINT, before)
    signal.signal(signal.SIGTERM, before_term)


def test_ctrl_c_mid_step_saves_a_whole_step_and_resumes_exactly(
        folk_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    whole = tmp_path / "whole"
    train(folk_corpus, whole, model_config=TINY, data_config=DATA, train_config=_config(),
          progress=False)
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        _signals_during_step(patch, at_step=6, times=1)  # off the log boundary (every 4)
        with pytest.raises(SystemExit) as stopped:
            train(folk_corpus, run, model_config=TINY, data_config=DATA,
                  train_config=_config(), progress=False)
    assert stopped.value.code == 130
    meta = json.loads((run / "last.json").read_text())
    assert meta["state"]["step"] == 6 and meta["state"]["pending"]["count"] == 2
    _, _, optim = load_checkpoint(run / "last")
    counters = {float(v) for k, v in optim.items() if k.endswith("/step")}
    assert counters == {6.0}  # every parameter stepped exactly 6 times
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    train(folk_corpus, run, resume=True, progress=False)
    assert _rows(run) == _rows(whole)  # the row at step 8 sums steps 5-8, as it would have
    a = load_checkpoint(run / "last")[0].state_dict()
    b = load_checkpoint(whole / "last")[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sigterm_stops_at_a_step_boundary_like_ctrl_c(
        folk_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    """SIGTERM (`kill`, `timeout`, a batch scheduler) saves the whole step and exits with
    128 + 15; the test's own SIGTERM handler is back afterwards."""
    run = tmp_path / "run"
    _signals_during_step(monkeypatch, at_step=6, times=1, sig=signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped:
        train(folk_corpus, run, model_config=TINY, data_config=DATA, train_config=_config(),
              progress=False)
    assert stopped.value.code == 143
    assert "SIGTERM: stopping after this step" in capsys.readouterr().err
    assert json.loads((run / "last.json").read_text())["state"]["step"] == 6
    assert signal.getsignal(signal.SIGTERM) is _terminated


def test_a_second_ctrl_c_stops_at_once_and_keeps_the_last_checkpoint(
        folk_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    _signals_during_step(monkeypatch, at_step=6, times=2)
    with pytest.raises(SystemExit) as stopped:
        train(folk_corpus, run, model_config=TINY, data_config=DATA,
              train_config=_config(checkpoint_every=4), progress=False)
    assert stopped.value.code == 130 and "kept as it was" in capsys.readouterr().err
    assert json.loads((run / "last.json").read_text())["state"]["step"] == 4
    monkeypatch.undo()
    _signals_during_step(monkeypatch, at_step=6, times=2, sig=signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped:  # two SIGTERMs: the same, with 128 + 15
        train(folk_corpus, tmp_path / "term", model_config=TINY, data_config=DATA,
              train_config=_config(checkpoint_every=4), progress=False)
    assert stopped.value.code == 143 and "kept as it was" in capsys.readouterr().err
    assert json.loads((tmp_path / "term" / "last.json").read_text())["state"]["step"] == 4


def test_a_run_killed_before_its_first_checkpoint_restarts_cleanly(
        folk_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Only config.json and some metrics rows survive (killed before the first save):
    --resume starts the run again from step 0 and ends as the uninterrupted run did."""
    whole = tmp_path / "whole"
    train(folk_corpus, whole, model_config=TINY, data_config=DATA, train_config=_config(),
          progress=False)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_bytes((whole / "config.json").read_bytes())
    rows = (whole / "metrics.csv").read_text().splitlines(keepends=True)
    (run / "metrics.csv").write_text("".join(rows[:3]))  # rows of the killed start
    capsys.readouterr()
    train(folk_corpus, run, resume=True, progress=False)
    assert "starts again from step 0" in capsys.readouterr().err
    assert _rows(run) == _rows(whole)
    a = load_checkpoint(run / "last")[0].state_dict()
    b = load_checkpoint(whole / "last")[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_an_ignored_sigint_stays_ignored() -> None:
    """A run started with SIGINT ignored (`tvae train ... &` in a script) is not made to stop
    on it: the trainer leaves the handler alone."""
    from tvae.training.interrupt import StopRequest

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop = StopRequest()
    with stop.installed():
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        signal.raise_signal(signal.SIGINT)
    assert not stop.requested
    with_handler = StopRequest()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with with_handler.installed():
        signal.raise_signal(signal.SIGINT)
    assert with_handler.requested and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_weights_gone_non_finite_validate_as_not_finite_never_best(folk_corpus: Path,
                                                                   tmp_path: Path) -> None:
    """Validation of non-finite weights (a huge --lr) is an infinite loss, never a "best" of 0,
    and the epoch line says "not finite" instead of failing to format None."""
    import math

    from tvae.data.dataset import load_folder
    from tvae.training.trainer import Trainer

    songs, _ = load_folder(folk_corpus, progress=False)
    trainer = Trainer(songs, tmp_path, Configs(GridConfig(), TINY, DATA, _config()), progress=False)
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.fill_(float("nan"))
    row = trainer.validate()
    assert math.isinf(row["loss"])
    lines: list[str] = []

    class Bar:
        def write(self, message: str) -> None:
            lines.append(message)

    trainer._end_epoch(Bar())
    assert "valid loss not finite" in lines[0] and "(best)" not in lines[0]
