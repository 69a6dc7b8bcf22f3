"""bench/bench_paper.py without the paper's code: the token conversion, the meter filter and the
refusal of a missing --paper-code."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.paths import ROOT

if str(ROOT) not in sys.path:  # `bench` is a folder of the checkout, not an installed package
    sys.path.insert(0, str(ROOT))

from bench.bench_paper import (  # noqa: E402
    FEATURES,
    PAPER_CLASSES,
    main,
    meter_rows,
    meter_songs,
    paper_input,
    parse_meter,
    shift_classes,
    to_paper_classes,
)
from tvae.config import HOLD, PAD, REST, GridConfig  # noqa: E402
from tvae.data.arrays import SongArrays  # noqa: E402

GRID = GridConfig()


def on(pitch: int) -> int:
    return GRID.pitch_to_class(pitch)


# A 4/4 bar with a pickup: 4 PAD steps, C4 for a quarter, a rest, D4, E4, a rest, C3.
BAR = [PAD, PAD, PAD, PAD, on(60), HOLD, HOLD, HOLD, REST, REST, on(62), HOLD, on(64), HOLD,
       REST, on(48)]


def test_conversion_of_a_bar_in_range() -> None:
    classes = to_paper_classes(np.array([[BAR]]))  # (1, 1, 16)
    # silence 0 (REST and PAD), sustain 1, onset of p: 2 + p - 40
    assert classes.tolist() == [[[0, 0, 0, 0, 22, 1, 1, 1, 0, 0, 24, 1, 26, 1, 0, 10]]]


def test_conversion_moves_a_high_window_down_an_octave() -> None:
    bar = [on(88), HOLD, on(60)] + [REST] * 13  # 88 is above their top pitch 84
    assert to_paper_classes(np.array([[bar]]))[0, 0, :4].tolist() == [38, 1, 10, 0]


def test_conversion_folds_a_window_wider_than_their_range() -> None:
    bar = [on(48), on(96)] + [HOLD] * 14  # 48 semitones: moved down an octave, 36 folded up
    assert to_paper_classes(np.array([[bar]]))[0, 0, :3].tolist() == [10, 46, 1]


def test_windows_are_converted_independently() -> None:
    high = [on(88)] + [HOLD] * 15
    classes = to_paper_classes(np.array([[BAR], [high]]))  # (2, 1, 16)
    assert classes[0, 0, 4] == 22 and classes[1, 0, 0] == 2 + 76 - 40


def test_paper_input_rows() -> None:
    classes = to_paper_classes(np.array([[BAR, [REST] * 16]]))  # (1, 2, 16)
    x = paper_input(classes).numpy()  # (1, 32, F)
    assert x.shape == (1, 32, FEATURES)
    assert x[0, :, 0].tolist() == classes.reshape(-1).tolist()
    assert (x[0, :, 1 : 1 + PAPER_CLASSES].argmax(-1) == classes.reshape(-1)).all()
    assert x[0, :, 1 : 1 + PAPER_CLASSES].sum() == 32
    beat, sixteenth = x[0, :, -8:-4].argmax(-1), x[0, :, -4:].argmax(-1)
    assert beat[:16].tolist() == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4
    assert sixteenth[16:20].tolist() == [0, 1, 2, 3]
    assert not x[0, :, 1 + PAPER_CLASSES : -8].any()  # the chord columns stay empty


def test_shifts_stay_in_their_range() -> None:
    bar = [2, 1, 46, 0] + [1] * 12  # their lowest and highest onsets: no room to move
    classes = np.array([[bar]] * 50)
    shifted = shift_classes(classes, np.random.default_rng(0))
    assert (shifted == classes).all()
    free = np.array([[[20, 1] + [0] * 14]] * 200)
    moved = shift_classes(free, np.random.default_rng(0))[:, 0, 0] - 20
    assert set(moved.tolist()) == set(range(-4, 5))


def test_meter_rows_keep_only_that_meter() -> None:
    rows = [{"id": "a", "meter": "4/4", "split": "train"},
            {"id": "b", "meter": "2/4", "split": "test"},
            {"id": "c", "meter": "4/4", "split": "test"},
            {"id": "d", "meter": "6/8", "split": "valid"}]
    assert [r["id"] for r in meter_rows(rows, "4/4")] == ["a", "c"]
    assert meter_rows(rows, "3/4") == []


def test_meter_songs_keep_only_that_meter() -> None:
    songs = SongArrays(tokens=np.full((6, 16), REST, np.uint8),
                       offsets=np.array([0, 2, 3, 6]), meters=np.array([0, 1, 0], np.int8),
                       pickups=np.zeros(3, np.int8), paths=["a.mid", "b.mid", "c.mid"],
                       splits=np.array(["train", "test", "test"]))
    kept = meter_songs(songs, parse_meter("4/4"))
    assert kept.paths == ["a.mid", "c.mid"] and kept.lengths.tolist() == [2, 3]
    assert kept.splits.tolist() == ["train", "test"]


@pytest.mark.parametrize("extra", [[], ["--paper-code", "/nonexistent/TransformerVAE"],
                                   ["--paper-code", "."]])
def test_missing_paper_code_is_one_line_exit_2(extra: list[str], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path), *extra])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--paper-code" in err and "TransformerVAE" in err


def test_bad_meter_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_meter("5/4")
    assert exc.value.code == 2 and "--meter" in capsys.readouterr().err


def test_a_control_run_trains_tvae_alone_without_the_papers_code(
        folk_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--skip-paper: no --paper-code needed; tvae trains for its epochs (here 1, well inside
    the minutes) and is scored on the 8-bar test windows; only its row is printed and saved."""
    out = tmp_path / "run"
    main([str(folk_corpus), "--skip-paper", "--epochs", "1", "--minutes", "5", "--out",
          str(out)])
    table = capsys.readouterr().out
    assert "tvae" in table and "paper " not in table
    saved = json.loads(out.with_name("run.json").read_text())
    assert set(saved) >= {"tvae", "songs"} and "paper" not in saved
    assert json.loads((out / "config.json").read_text())["train"]["epochs"] == 1
    assert 0.0 <= saved["tvae"]["free_accuracy"] <= 1.0


def test_a_recipe_sets_tvaes_configs_and_the_bench_its_limits(
        folk_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--config: tvae trains with the recipe's model, data and training settings, while the
    bench's --minutes, --epochs and seed replace the recipe's own limits."""
    from tests.tiny import TINY_FIELDS

    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"model": TINY_FIELDS, "data": {"bars": 9},
                                  "train": {"batch_size": 8, "beta": 0.15, "repeat_beta": 2.0,
                                            "max_minutes": 12.0, "max_steps": 7, "seed": 5}}))
    out = tmp_path / "run"
    main([str(folk_corpus), "--skip-paper", "--epochs", "1", "--minutes", "5", "--config",
          str(recipe), "--out", str(out)])
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["d_model"] == TINY_FIELDS["d_model"] and config["data"]["bars"] == 9
    train = config["train"]
    assert (train["batch_size"], train["beta"], train["repeat_beta"]) == (8, 0.15, 2.0)
    assert (train["max_minutes"], train["max_steps"], train["epochs"], train["seed"]) == \
        (5.0, 0, 1, 0)
    assert json.loads(out.with_name("run.json").read_text())["config"] == str(recipe)


def test_a_bad_recipe_is_one_line_exit_2_before_training(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"train": {"batch_size": -1}}))
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path), "--skip-paper", "--config", str(recipe)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and "recipe.json" in err
    assert "batch_size" in err
