"""A run keeps its checkpoint where its last stage starts, and scripts/branch_run.py trains
another last stage from it: the same as the run up to there, step for step."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest

from tests.paths import ROOT
from tests.tiny import TINY_MODEL
from tvae.config import DataConfig, TrainConfig
from tvae.errors import TvaeError
from tvae.training.run import train

STEPS, FROM = 12, 0.5  # the last stage starts at step 6


def _branch_module():
    spec = importlib.util.spec_from_file_location("branch_run", ROOT / "scripts" / "branch_run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _losses(run: Path) -> dict[int, str]:
    with open(run / "metrics.csv", newline="") as handle:
        return {int(r["step"]): r["loss"] for r in csv.DictReader(handle) if r["split"] == "train"}


@pytest.fixture(scope="module")
def late_run(folk_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("late") / "run"
    cfg = TrainConfig(batch_size=8, max_steps=STEPS, warmup_steps=2, beta_steps=4, log_every=1,
                      checkpoint_every=5, eval_windows=8, num_threads=1, repeat_beta=2.0,
                      repeat_beta_from=FROM)
    train(folk_corpus, run, model_config=TINY_MODEL, data_config=DataConfig(bars=4, stride=2),
          train_config=cfg, progress=False)
    return run


def _resume(corpus: Path, run: Path) -> None:
    train(corpus, run, resume=True, progress=False)


def test_the_run_keeps_its_last_stages_first_step(late_run: Path) -> None:
    point = json.loads((late_run / "before_late.json").read_text())
    assert point["state"]["step"] == round(FROM * STEPS)
    assert json.loads((late_run / "last.json").read_text())["state"]["step"] == STEPS


def test_a_branch_with_the_same_options_is_the_run(late_run: Path, folk_corpus: Path,
                                                   tmp_path: Path) -> None:
    new = tmp_path / "same"
    _branch_module().branch(late_run, new, {"repeat_beta": 2.0})
    assert json.loads((new / "last.json").read_text())["state"]["step"] == round(FROM * STEPS)
    _resume(folk_corpus, new)
    assert json.loads((new / "last.json").read_text())["state"]["step"] == STEPS
    assert _losses(new) == _losses(late_run)


def test_a_branch_changes_the_last_stage_only(late_run: Path, folk_corpus: Path,
                                              tmp_path: Path) -> None:
    new = tmp_path / "stronger"
    command = _branch_module().branch(late_run, new, {"repeat_beta": 4.0})
    assert command.endswith(f"--out {new} --resume")
    assert json.loads((new / "config.json").read_text())["train"]["repeat_beta"] == 4.0
    _resume(folk_corpus, new)
    old, got = _losses(late_run), _losses(new)
    start = round(FROM * STEPS)
    assert set(got) == set(old)
    assert all(got[s] == old[s] for s in old if s <= start)  # the rows up to the branch
    assert any(got[s] != old[s] for s in old if s > start)  # the stronger weight's rows


def test_a_branch_refuses_what_would_change_the_steps_before(late_run: Path,
                                                             tmp_path: Path) -> None:
    branch = _branch_module().branch
    with pytest.raises(TvaeError, match="cannot change"):
        branch(late_run, tmp_path / "a", {"lr": 0.1})
    with pytest.raises(TvaeError, match="before the branch point"):
        branch(late_run, tmp_path / "b", {"repeat_beta_from": 0.25})
    with pytest.raises(TvaeError, match="exists"):
        branch(late_run, late_run, {"repeat_beta": 3.0})
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
