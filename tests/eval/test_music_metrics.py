"""muspy's musical metrics (tvae.eval.music): exact values on fixture melodies, the W1 distance,
summaries, and the `sample --metrics` / `evaluate --metrics` commands on a tiny model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tvae.cli.main import main
from tvae.eval.music import (
    METRICS,
    collect,
    format_table,
    melody_metrics,
    summarize,
    wasserstein_1d,
)
from tvae.melody import Melody, Note
from tvae.midi import write_melody

# Two bars of 4/4 in quarter notes: C D E F | G A B C'
SCALE = Melody(tuple(Note(4 * i, p, 4) for i, p in enumerate([60, 62, 64, 65, 67, 69, 71, 72])))


def test_exact_values_of_a_scale() -> None:
    m = melody_metrics(SCALE)
    assert m["pitch_range"] == 12
    # C twice, six other classes once: -(1/4 log2 1/4 + 6/8 log2 1/8) = 0.5 + 2.25
    assert m["pitch_class_entropy"] == pytest.approx(2.75)
    assert m["scale_consistency"] == 1.0
    # muspy counts end // bar + 1 measures: a melody ending on a barline gets one more, empty,
    # measure, whose 4 missing onsets differ from bar 2's: 1 - 4 / (16 * 2)
    assert m["groove_consistency"] == 0.875
    assert m["empty_beat_rate"] == 0.0


def test_rests_and_chromatic_notes_move_the_metrics() -> None:
    # bar 1: C on beat 1 only; bar 2: C C# on beats 1 and 2 (the melody ends on beat 6)
    melody = Melody((Note(0, 60, 4), Note(16, 60, 4), Note(20, 61, 4)))
    m = melody_metrics(melody)
    assert m["pitch_range"] == 1
    # muspy: 6 // 1 + 1 = 7 beats; a note sounds in the beats from its start to its end,
    # both included, so beats 0, 1, 4, 5, 6 are taken and 2 of 7 are empty
    assert m["empty_beat_rate"] == pytest.approx(2 / 7)
    assert m["scale_consistency"] == 1.0  # C and C# both lie in C# major (C as B#)
    assert m["groove_consistency"] == pytest.approx(1 - 1 / 16)  # one onset differs in 16 steps


def test_undefined_metrics_are_nan_and_left_out() -> None:
    assert all(math.isnan(v) for v in melody_metrics(Melody(())).values())
    one_bar = melody_metrics(Melody((Note(0, 60, 16),)))
    assert math.isnan(one_bar["groove_consistency"]) and one_bar["pitch_range"] == 0
    values = collect([Melody(()), SCALE])
    assert all(len(values[k]) == 1 for k in METRICS)


def test_wasserstein_1d() -> None:
    assert wasserstein_1d([0, 1], [1, 2]) == pytest.approx(1.0)  # a shift by 1
    assert wasserstein_1d([0, 0, 1, 1], [0, 1]) == 0.0  # same distribution
    assert wasserstein_1d([0.0], [3.0]) == pytest.approx(3.0)
    assert math.isnan(wasserstein_1d([], [1.0]))


def test_summaries_and_table() -> None:
    ref = {"pitch_range": [10.0, 12.0]}
    got = summarize({"pitch_range": [11.0, 13.0]}, ref)
    row = got["pitch_range"]
    assert (row["mean"], row["std"], row["n"]) == (12.0, 1.0, 2)
    assert row["w1"] == pytest.approx(1.0) and row["w1_scaled"] == pytest.approx(1.0)
    assert got["scale_consistency"]["mean"] is None and got["scale_consistency"]["n"] == 0
    text = format_table({"data": summarize(ref), "model": got})
    assert "12.000 ± 1.000 (W1 1.000)" in text and text.splitlines()[0].split()[1:] == [
        "data", "model"]


def test_sample_metrics_are_printed_and_written(tiny_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["sample", "-n", "2", "--bars", "2", "-o", str(out),
                                       "--model", str(tiny_ckpt), "--metrics"])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "metrics.json").read_text())
    assert set(saved["samples"]) == {"sample_0", "sample_1"}
    assert set(saved["summary"]) == set(METRICS)
    assert "pitch_class_entropy" in result.output


def test_evaluate_metrics_compare_data_reconstructions_and_samples(tiny_ckpt: Path,
                                                                  tmp_path: Path) -> None:
    folder = tmp_path / "songs"
    folder.mkdir()
    for k in range(3):
        write_melody(SCALE.transpose(k), folder / f"s{k}.mid")
    result = CliRunner().invoke(main, ["evaluate", str(folder), "--model", str(tiny_ckpt),
                                       "--bars", "2", "--metrics", "2", "--json"])
    assert result.exit_code == 0, result.output
    music = json.loads(result.output.strip().splitlines()[-1])["music_metrics"]
    assert set(music) == {"data", "reconstruction", "samples"}
    assert music["data"]["pitch_range"] == {"mean": 12.0, "std": 0.0, "n": 2}
    assert "w1" in music["samples"]["pitch_range"] and "w1" not in music["data"]["pitch_range"]


def test_wasserstein_1d_on_arrays() -> None:
    assert wasserstein_1d(np.array([0.0]), np.array([1.0])) == pytest.approx(1.0)
    assert wasserstein_1d(np.array([0.0, 1.0]), np.array([0.0])) == pytest.approx(0.5)
    assert wasserstein_1d(np.array([3.0, 1.0, 2.0]), np.array([2.0, 1.0, 3.0])) == 0.0
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=37), rng.exponential(size=23)
    assert wasserstein_1d(a, b) == pytest.approx(stats.wasserstein_distance(a, b))


def test_melody_metrics_on_a_scale() -> None:
    scale = Melody(tuple(Note(4 * k, p, 4) for k, p in enumerate([60, 62, 64, 65, 67, 69, 71,
                                                                   72])))
    metrics = melody_metrics(scale)
    assert metrics["pitch_range"] == 12 and metrics["scale_consistency"] == 1.0
    # Two equal 4/4 bars of quarter notes; muspy counts the empty measure where the last note
    # ends as a third, so one of the two neighbour pairs differs in its 4 onsets out of 16.
    assert metrics["empty_beat_rate"] == 0.0 and metrics["groove_consistency"] == 1 - 4 / 32
    assert all(math.isnan(v) for v in melody_metrics(Melody(())).values())
