"""--max-minutes fits the schedules to the steps that fit in the time (tvae.training.time_plan)."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import pytest

from tests.tiny import TINY_MODEL
from tests.training.fake_clock import run_on_fake_clock
from tvae.config import Configs, DataConfig, GridConfig, TrainConfig
from tvae.training.time_plan import steps_that_fit


def test_steps_that_fit_count_steps_and_validations() -> None:
    # 100 s left, 1 s a step, a 10 s validation every 10 steps and one at the very end
    assert steps_that_fit(0, 0.0, 100.0, 1.0, 10.0, 10, margin=0) == 45
    assert steps_that_fit(0, 0.0, 100.0, 1.0, 0.0, 10, margin=0) == 100
    assert steps_that_fit(0, 0.0, 100.0, 1.0, 0.0, 10, margin=0.1) == 90
    assert steps_that_fit(30, 50.0, 100.0, 1.0, 0.0, 10, margin=0) == 80
    assert steps_that_fit(30, 120.0, 100.0, 1.0, 0.0, 10) == 31  # out of time: one more step


def _rows(run: Path, split: str) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as handle:
        return [r for r in csv.DictReader(handle) if r["split"] == split]


def _timed_run(folk_corpus: Path, run: Path, fit: bool):  # noqa: ANN202
    """A run whose clock moves 1 s a step and 5 s a validation, limited to 2 minutes, whose
    epochs plan far more steps than fit, with warm-ups longer than the time allows."""
    from tvae.data.dataset import load_folder
    from tvae.training.trainer import Trainer

    songs, _ = load_folder(folk_corpus, progress=False)
    cfg = TrainConfig(batch_size=8, epochs=1000, max_minutes=2.0, warmup_steps=300,
                      beta_steps=200, log_every=1, checkpoint_every=1000, eval_windows=8,
                      num_threads=1, fit_schedules=fit)
    trainer = Trainer(songs, run, Configs(GridConfig(), TINY_MODEL, DataConfig(bars=4), cfg),
                      progress=False)
    run.mkdir()
    return run_on_fake_clock(trainer)


@pytest.mark.parametrize("fit", [True, False])
def test_max_minutes_fits_the_schedules_to_the_time(folk_corpus: Path, tmp_path: Path,
                                                    fit: bool, capsys) -> None:  # noqa: ANN001
    trainer = _timed_run(folk_corpus, tmp_path / "run", fit)
    st = trainer.state
    rows = _rows(tmp_path / "run", "train")
    last = rows[-1]
    assert 120.0 * 0.9 <= st.seconds <= 120.0  # the time is used, and the limit kept
    if fit:
        # the lr decay ends where the time does; the warm-ups stay as set (the lr's, longer
        # than the run, halved), so beta ends at its share of 200 steps
        assert st.finished and st.planned_steps == st.step
        assert trainer.cfg.warmup_steps == st.step // 2 and trainer.cfg.beta_steps == 200
        assert float(last["lr_rel"]) == pytest.approx(0.1, abs=0.02)
        assert float(last["beta"]) == pytest.approx(0.3 * st.step / 200, abs=0.01)
        said = capsys.readouterr()
        assert "--max-minutes 2: about" in said.out + said.err
        assert "beta rises over 200 steps as set" in said.out + said.err
    else:
        assert st.planned_steps == 0
        # planned for the epochs: still in its 300-step warm-up when the time ends
        assert float(last["lr_rel"]) == pytest.approx(st.step / 300, abs=0.02)


@pytest.mark.parametrize("fit", [True, False])
def test_the_progress_bar_has_no_total_until_the_time_plan(folk_corpus: Path, tmp_path: Path,
                                                           fit: bool) -> None:
    """Before its plan, a fitted time-limited run has no step limit to show (its epochs set
    none): the bar counts steps without a total, then shows the planned steps."""
    from tvae.data.dataset import load_folder
    from tvae.training.trainer import Trainer

    songs, _ = load_folder(folk_corpus, progress=False)
    cfg = TrainConfig(batch_size=8, max_minutes=2.0, fit_schedules=fit, num_threads=1)
    fresh = Trainer(songs, tmp_path / "fresh", Configs(GridConfig(), TINY_MODEL,
                                                       DataConfig(bars=4), cfg), progress=False)
    if fit:
        assert fresh.bar_total() is None
        capped = Trainer(songs, tmp_path / "capped", Configs(
            GridConfig(), TINY_MODEL, DataConfig(bars=4), replace(cfg, max_steps=7)),
            progress=False)
        assert capped.bar_total() == capped.total_steps == 7  # a step limit is known at once
    else:  # --no-fit-schedules: planned over the 20 epochs from the start
        assert fresh.bar_total() == fresh.total_steps == 20 * fresh.batches
    trainer = _timed_run(folk_corpus, tmp_path / "run", fit)
    assert trainer.bar_total() == trainer.total_steps
    if fit:
        assert trainer.total_steps == trainer.state.planned_steps


def test_a_resumed_run_keeps_its_plan(folk_corpus: Path, tmp_path: Path) -> None:
    from tvae.data.dataset import load_folder
    from tvae.training.trainer import Trainer

    trainer = _timed_run(folk_corpus, tmp_path / "run", True)
    songs, _ = load_folder(folk_corpus, progress=False)
    again = Trainer(songs, tmp_path / "run", Configs(GridConfig(), TINY_MODEL, DataConfig(bars=4),
                                                     trainer.planner.given), progress=False)
    again.resume()
    assert again.state.planned_steps == trainer.state.planned_steps
    assert again.total_steps == trainer.total_steps and again.cfg == trainer.cfg


@pytest.mark.parametrize("epochs", [0, 20])
def test_a_time_limit_is_not_cut_short_by_the_default_epochs(folk_corpus: Path, tmp_path: Path,
                                                             epochs: int) -> None:
    """`--max-minutes` alone: the run goes on for its minutes, past the 20 epochs of a run
    given no limit; `--epochs 20` given too still ends it at 20."""
    from tvae.data.dataset import load_folder
    from tvae.training.trainer import Trainer

    songs, _ = load_folder(folk_corpus, progress=False)
    cfg = TrainConfig(batch_size=8, epochs=epochs, max_minutes=2.0, warmup_steps=5,
                      beta_steps=5, log_every=1, checkpoint_every=1000, eval_windows=8,
                      num_threads=1, patience=1000)
    trainer = Trainer(songs, tmp_path / "run", Configs(GridConfig(), TINY_MODEL,
                                                       DataConfig(bars=4), cfg), progress=False)
    (tmp_path / "run").mkdir()
    run_on_fake_clock(trainer, step_seconds=0.1, validate_seconds=1.0)
    st = trainer.state
    if epochs:
        assert st.epoch == 20 and st.seconds < 120.0 * 0.9  # ended by its epochs, not the time
    else:
        assert st.epoch > 20 and 120.0 * 0.9 <= st.seconds <= 120.0
