"""The experiments' quick settings end to end: the files they write and the sanity of their
numbers (never the research outcomes), plus the helpers the experiments rely on.

The tiny folk export has a single test song, so the experiments are evaluated on its train split.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from experiments import EXPERIMENTS
from experiments.__main__ import main
from experiments.auxiliary import label_ids, partial_labels
from experiments.common import QUICK, Context, load_songs, train_run
from experiments.masking import bar_rows, other_pairs, repeat_pairs
from experiments.report import write_report
from experiments.tf import inverse_sigmoid_k
from tvae.config import DataConfig, GridConfig
from tvae.data.dataset import load_folder
from tvae.data.windows import Windows
from tvae.errors import TvaeError
from tvae.eval.windows import classify_windows, predict_classes
from tvae.inference import load_model
from tvae.melody import bars_to_melody
from tvae.training.schedules import tf_inverse_sigmoid


def _args(name: str, corpus: Path, out: Path, runs: Path) -> list[str]:
    return [name, "--quick", "--corpus", str(corpus), "--split", "train", "--out", str(out),
            "--runs", str(runs)]


@pytest.fixture(scope="module")
def results(folk_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every experiment run once with --quick; the results folder."""
    root = tmp_path_factory.mktemp("experiments")
    threads = torch.get_num_threads()
    try:
        for name in EXPERIMENTS:
            assert main(_args(name, folk_corpus, root / "out", root / "runs")) == 0
    finally:
        torch.set_num_threads(threads)
    return root / "out"


def _result(out: Path, name: str) -> dict:
    return json.loads((out / f"{name}.json").read_text())


def _unit(value: float | None) -> bool:
    return value is None or 0.0 <= value <= 1.0


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXPERIMENTS))
@pytest.mark.slow
def test_each_experiment_writes_its_files(results: Path, name: str) -> None:
    result = _result(results, name)
    assert result["name"] == name and result["settings"]["quick"] is True
    assert result["command"].startswith(f"python -m experiments {name} --quick")
    assert "cores" in result["machine"] and result["date"].endswith("UTC")
    md = (results / f"{name}.md").read_text()
    assert md.startswith(f"# {result['title']}") and "|---|" in md and "Quick setting" in md
    assert result["figures"]
    for figure in result["figures"]:
        assert figure.startswith(f"{name}_") and figure.endswith(".png")
        assert (results / figure).stat().st_size > 1000
        assert f"]({figure})" in md


@pytest.mark.slow
def test_tf_values(results: Path) -> None:
    runs = {r["key"]: r for r in _result(results, "tf")["runs"]}
    assert len(runs) == 8
    assert runs["constant_1"]["p_tf"] == [1.0] * 5 and runs["constant_0"]["p_tf"] == [0.0] * 5
    assert runs["linear"]["p_tf"][0] == 1.0 and runs["linear"]["p_tf"][-1] == 0.0
    for r in runs.values():
        assert r["steps"] == QUICK.train.max_steps
        assert _unit(r["tf_accuracy"]) and _unit(r["free_accuracy"])
        assert r["gap"] == pytest.approx(r["tf_accuracy"] - r["free_accuracy"], abs=1e-5)
        assert all(0.0 <= p <= 1.0 for p in r["p_tf"]) and r["kl_bits_per_bar"] >= 0
        assert r["curve"]["steps"] and all(_unit(a) for a in r["curve"]["free_accuracy"])


@pytest.mark.slow
def test_masking_values(results: Path) -> None:
    result = _result(results, "masking")
    variants = {v["key"]: v for v in result["variants"]}
    assert set(variants) == {"full", "no_encoder_mask", "no_cross_mask"}
    for v in variants.values():
        assert v["kl_bits_new"] >= 0 and (v["kl_bits_repeated"] or 0) >= 0
        t = v["transfer"]
        assert 0 < t["pairs"] <= 3 and t["repeats"] > 0
        assert t["transfer_kept"] <= t["repeats"] and t["reconstruction_kept"] <= t["repeats"]
        for name in ("transfer", "reconstruction"):
            assert all(_unit(share) for share in t[name].values())


@pytest.mark.slow
def test_structure_values(results: Path) -> None:
    from experiments.structure import ABLATIONS, DESIGN, STOCK

    rows = _result(results, "structure")["variants"]
    assert [r["label"] for r in rows] == [STOCK, DESIGN] + [a[1] for a in ABLATIONS]
    for r in rows:
        assert r["steps"] == QUICK.train.max_steps and r["beta"] == 0.3
        for key in ("tf_accuracy", "free_accuracy", "transfer_follow_rate",
                    "transfer_spurious_rate", "transfer_other_kept"):
            assert _unit(r[key])
        assert r["kl_bits_per_bar"] >= 0 and r["elbo_bits_per_bar"] >= r["kl_bits_per_bar"]
        assert (r["copy_share_repeated"] is None) == (r["label"] == STOCK)


@pytest.mark.slow
def test_aux_values(results: Path) -> None:
    result = _result(results, "aux")
    runs, summary = result["runs"], result["summary"]
    assert sorted({(r["lambda"], r["seed"]) for r in runs}) == [
        (lam, seed) for lam in (0.0, 2.0, 10.0) for seed in (0, 1)]
    for r in runs:
        assert _unit(r["accuracy"]) and _unit(r["balanced_accuracy"]) and _unit(r["chance"])
        assert 0 < r["chance_balanced"] <= 1 and r["windows"] > 0
        assert r["labelled_songs"] > 0 and r["classes"] == sorted(r["classes"])
    for row in summary:
        accs = [r["accuracy"] for r in runs if r["lambda"] == row["lambda"]]
        assert min(accs) - 1e-9 <= row["accuracy_mean"] <= max(accs) + 1e-9
        assert row["accuracy_std"] >= 0 and row["seeds"] == 2


@pytest.mark.slow
def test_sampling_values(results: Path) -> None:
    sources = _result(results, "sampling")["sources"]
    assert list(sources)[0] == "test" and len(sources) == 3
    for name, metrics in sources.items():
        assert metrics["pitch_range"]["mean"] >= 0
        assert 0 <= metrics["pitch_class_entropy"]["mean"] <= math.log2(12) + 1e-9
        assert _unit(metrics["scale_consistency"]["mean"])
        assert _unit(metrics["empty_beat_rate"]["mean"])
        if name != "test":
            assert all(metrics[m]["w1"] is None or metrics[m]["w1"] >= 0
                       for m in ("pitch_range", "groove_consistency"))
            assert 0 <= metrics["empty"] <= 4


@pytest.mark.slow
def test_report_gathers_every_result(results: Path) -> None:
    report = write_report(results)
    text = report.read_text()
    assert report == results.parent / "out.md" and "Not run yet" not in text
    for name in EXPERIMENTS:
        assert f"## {_result(results, name)['title']}" in text
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(links) == 8 and all((report.parent / link).is_file() for link in links)


@pytest.mark.slow
def test_report_lists_missing_experiments(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "experiments"
    out.mkdir()
    (out / "tf.json").write_text((results / "tf.json").read_text())
    text = write_report(out).read_text()
    assert "## Teacher forcing" in text and "`python -m experiments masking`" in text
    with pytest.raises(TvaeError, match="no results folder"):
        write_report(tmp_path / "missing")


@pytest.mark.slow
def test_classifier_helpers_agree_with_aux(results: Path, folk_corpus: Path) -> None:
    runs = results.parent / "runs" / "quick"
    first = _result(results, "aux")["runs"][0]
    trained = load_model(runs / "aux" / "lambda0_seed0" / "last.json")
    songs, _ = load_folder(folk_corpus, label_column="collection", progress=False)
    windows = Windows(songs, "train", DataConfig(bars=4, stride=4, transpose=0))
    accuracy = classify_windows(trained.model, windows, label_ids(songs, trained.meta["labels"]))
    assert accuracy == pytest.approx(first["accuracy"])
    assert len(predict_classes(trained.model, windows)) == len(windows)
    assert classify_windows(trained.model, windows, np.full(songs.n_songs, -1)) is None
    with pytest.raises(TvaeError, match="no classifier"):
        predict_classes(load_model(runs / "masking" / "full" / "last.json").model, windows)


@pytest.mark.slow
def test_rerun_reuses_runs_and_refuses_other_settings(results: Path, folk_corpus: Path) -> None:
    runs = results.parent / "runs"
    metrics = runs / "quick" / "sampling" / "tiny" / "metrics.csv"
    before = metrics.read_text()
    assert main(_args("sampling", folk_corpus, results, runs)) == 0
    assert metrics.read_text() == before
    ctx = Context("sampling", True, folk_corpus, results, runs / "quick" / "sampling")
    cfg = ctx.train_config(0, 0.0, seed=7)
    with pytest.raises(TvaeError, match="other settings"):
        train_run(ctx, load_songs(ctx), "tiny", ctx.scale.model, cfg)


def test_cli_reports_a_missing_corpus(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    threads = torch.get_num_threads()
    code = main(_args("tf", tmp_path / "missing", tmp_path / "out", tmp_path / "runs"))
    torch.set_num_threads(threads)
    assert code == 2 and "error:" in capsys.readouterr().err


def test_repeat_pairs_and_bar_rows_round_trip(folk_corpus: Path) -> None:
    songs, _ = load_folder(folk_corpus, progress=False)
    for i in range(songs.n_songs):
        bars = songs.song(i)
        assert np.array_equal(bar_rows(bars_to_melody(bars), bars.n_bars, GridConfig()),
                              bars.tokens)
        rep, oth = repeat_pairs(bars.tokens), other_pairs(bars.tokens)
        n_real = int((bars.tokens != 0).any(-1).sum())
        assert len(rep) + len(oth) == n_real * (n_real - 1) // 2
        assert all(np.array_equal(bars.tokens[a], bars.tokens[b]) and a < b for a, b in rep)
    tokens = np.array([[3, 2], [4, 2], [3, 2], [3, 2]])  # bars 0, 2 and 3 are equal
    assert repeat_pairs(tokens).tolist() == [[0, 2], [0, 3], [2, 3]]
    assert other_pairs(tokens).tolist() == [[0, 1], [1, 2], [1, 3]]


def test_partial_labels_keep_a_share_of_train_songs(folk_corpus: Path) -> None:
    songs, _ = load_folder(folk_corpus, label_column="collection", progress=False)
    subset = partial_labels(songs, 0.25, seed=3)
    train = songs.splits == "train"
    kept = [bool(label) for label, t in zip(subset.labels, train, strict=True) if t]
    assert sum(kept) == round(0.25 * train.sum())
    assert all(a == b for a, b, t in zip(subset.labels, songs.labels, train, strict=True)
               if not t)
    assert partial_labels(songs, 0.25, seed=3).labels == subset.labels


def test_inverse_sigmoid_k_puts_the_midpoint_where_asked() -> None:
    for midpoint in (3.0, 750.0):
        k = inverse_sigmoid_k(midpoint)
        assert k >= 1 and tf_inverse_sigmoid(int(midpoint), k, 0.0) == pytest.approx(0.5, 1e-6)


def test_copy_misses_names_the_offset_copied_instead_and_each_offsets_gain() -> None:
    """A model whose pointer always copies the bar 1 back: in a hand-built window, the repeat
    2 back is a miss "copy 1 back" and the repeat 1 back is not; the repeat-vector gain is
    w_o . r_o for each offset."""
    from experiments.copy_misses import copy_misses, repeat_vector_gain
    from tests.model.test_model import random_bars, tiny

    model = tiny(copy_offsets=4, latent_repeats=True)
    with torch.no_grad():
        model.pointer.weight.zero_()
        model.pointer.bias.fill_(-30.0)
        model.pointer.bias[1] = 30.0  # copy 1 back wherever a bar can
    tokens, meters = random_bars(1, 6, seed=2, meters=torch.zeros(1, 6, dtype=torch.long))
    tokens[0, 3] = tokens[0, 1]  # 2 back: a miss
    tokens[0, 5] = tokens[0, 4]  # 1 back: copied right
    out = copy_misses(model, tokens, meters, np.array([7]))
    assert out["1-4"]["repeats"] == 2 and out["1-4"]["misses"] == 1
    (group,) = out["1-4"]["groups"]
    assert group["what"].startswith("nearest identical 2 back -> copy 1 back")
    assert group["songs"] == {7: 1} and group["mean_weight_on_nearest_identical"] < 1e-6
    with torch.no_grad():
        model.repeats_mu.weight.normal_()
        gain = repeat_vector_gain(model)
        expect = [float(model.pointer.weight[o] @ model.repeats_mu.weight[:, o - 1])
                  for o in range(1, 5)]
    assert gain == pytest.approx(expect)


def test_copy_fidelity_a_kept_copy_is_exact_exactly_when_its_source_was() -> None:
    """A model that copies the bar 1 back with no edits wherever it can: the repeat 1 back is
    copied from an identical bar and decoded as its decoded source, so it is exact exactly when
    that source is; with every step an edit, the copy is the generator's and need not keep it."""
    from experiments.copy_misses import copy_fidelity
    from tests.model.test_model import random_bars, tiny

    model = tiny(copy_offsets=4).eval()
    with torch.no_grad():
        model.pointer.weight.zero_()
        model.pointer.bias.fill_(-30.0)
        model.pointer.bias[1] = 30.0  # copy 1 back wherever a bar can
        model.edit.weight.zero_()
        model.edit.bias.fill_(-30.0)  # never an edit
    tokens, meters = random_bars(1, 6, seed=3, meters=torch.zeros(1, 6, dtype=torch.long))
    tokens[0, 5] = tokens[0, 4]
    out = copy_fidelity(model, tokens, meters)
    row = out["1-4"]
    assert row["copied_right"] == 1 and row["keeps_decoded_source"] == 1
    assert row["exact"] == row["source_exact"]
    assert out["first_bars"]["bars"] == 1 and out["new_bars"]["bars"] == 4
    torch.manual_seed(0)
    with torch.no_grad():
        model.edit.bias.fill_(30.0)  # every step of a copy is drawn from the generator
        model.bar_decoder.apply(lambda m: torch.nn.init.normal_(m.weight, std=3.0)
                                if isinstance(m, torch.nn.Linear) else None)
    decoded = model.free_run(model.encode(tokens, meters)[0], meters)
    edited = copy_fidelity(model, tokens, meters)["1-4"]
    assert not bool((decoded[0, 5] == decoded[0, 4]).all())  # (a random generator's bar)
    assert edited["copied_right"] == 1 and edited["keeps_decoded_source"] == 0


@pytest.mark.parametrize("copy", ["bar", "none"])
def test_free_gap_rows_are_the_teacher_forced_and_free_running_accuracies(copy: str) -> None:
    """free_gap's "tf" row is teacher-forced accuracy and its "free" row free-running accuracy,
    as the model decodes them; without a copy path, decoded copies change nothing; the wrong
    steps of copied and generated bars add up to the free-running errors; with the steps
    outside the melody known, they are decoded as PAD."""
    from experiments.free_gap import gap_counts
    from tests.model.test_model import random_bars, tiny
    from tvae.config import PAD

    torch.manual_seed(4)
    model = tiny(copy=copy).eval()
    tokens, meters = random_bars(3, 6, seed=5)
    tokens[:, 4] = tokens[:, 1]  # a repeat 3 back
    tokens[:, 2, :5] = PAD  # a pickup: its first 5 steps lie outside the melody
    counts = gap_counts(model, tokens, meters)
    target = tokens != PAD
    with torch.no_grad():
        mu = model.encode(tokens, meters)[0]
        tf = model.decode_teacher_forced(mu, tokens, meters)[0].argmax(-1)
        free = model.free_run(mu, meters)
    assert counts["steps"] == int(target.sum())
    assert counts["tf"] == int(((tf == tokens) & target).sum())
    assert counts["free"] == int(((free == tokens) & target).sum())
    with torch.no_grad():
        known = model.free_run(mu, meters, outside=~target)
        windowed = model.free_run(mu, meters, window=3, outside=~target)
    assert bool((windowed[~target] == PAD).all())  # bar 2 (in the first window) and later ones
    assert bool((known[~target] == PAD).all()) and not bool((free[~target] == PAD).all())
    assert counts["free, pickups known"] == int(((known == tokens) & target).sum())
    wrong = counts["wrong_copied"] + counts["wrong_generated"]
    assert wrong == counts["steps"] - counts["free"]
    assert counts["steps_copied"] + counts["steps_generated"] == counts["steps"]
    if copy == "none":
        assert counts["copies decoded"] == counts["tf"]
        assert counts["input decoded"] == counts["free"]
        assert counts["steps_copied"] == 0


def test_marginal_decoding_is_the_choice_where_the_pointer_is_sure() -> None:
    """The per-step marginal equals the generator where the pointer generates, and the source
    where it copies with no edit chance; the patch is undone on leaving, and a model without a
    copy path decodes as before inside it."""
    from experiments.marginal_decode import marginal_decoding, marginal_mix
    from tests.model.test_model import random_bars, tiny
    from tvae.config import GridConfig
    from tvae.model.decoding import FreeRunning
    from tvae.model.modules import mask_logits

    tokens, meters = random_bars(2, 3, seed=1, meters=torch.zeros(2, 3, dtype=torch.long))
    logits = torch.randn(2, 1, 16, GridConfig().vocab_size)
    gen_only = torch.log(torch.tensor([[[1.0, 1e-30, 1e-30]]])).expand(2, 1, 3)
    copy_1 = torch.log(torch.tensor([[[1e-30, 1e-30, 1.0]]])).expand(2, 1, 3)
    no_edit = torch.full((2, 1, 16), -60.0)
    m = meters[:, :1]
    expect = mask_logits(logits, m).log_softmax(-1)
    got = marginal_mix(gen_only, tokens[:, :2], no_edit, m)(logits)
    assert torch.allclose(got.exp(), expect.exp(), atol=1e-5)
    copied = marginal_mix(copy_1, tokens[:, :2], no_edit, m)(logits).argmax(-1)
    assert torch.equal(copied[:, 0], tokens[:, 1])
    original = FreeRunning._mixer
    model = tiny(copy="none").eval()
    with torch.no_grad():
        mu = model.encode(tokens, meters)[0]
        before = model.free_run(mu, meters)
        with marginal_decoding():
            assert FreeRunning._mixer is not original
            inside = model.free_run(mu, meters)
    assert FreeRunning._mixer is original and torch.equal(before, inside)


def test_edit_follow_says_what_became_of_each_edited_repeat() -> None:
    """B = X Y X' X'' X''' (X' X'' X''' each bar 1 with one step changed): the transfer makes bar
    1 A; bar 3 becomes A with B's change (follows), bar 4 copies bar 1 but keeps B's old notes
    (regenerated) and bar 5 is generated."""
    from experiments.edit_follow import why

    S = 16
    x, y, a = torch.full((S,), 5), torch.full((S,), 9), torch.full((S,), 7)
    x1, x2, x3 = x.clone(), x.clone(), x.clone()
    x1[3], x2[5], x3[8] = 6, 6, 6
    tokens_b = torch.stack([x, y, x1, x2, x3])[None]  # (1, 5, S)
    a1 = a.clone()
    a1[3] = 6
    out = torch.stack([a, y, a1, x2, x3])[None]
    choice = torch.tensor([[0, 0, 1, 1, 0]])  # 1 + j: bars 3 and 4 copy bar 1 (index 0)
    assert why(tokens_b, out, choice) == ["follows", "copies bar 1, regenerated", "generated"]
    same_bar_1 = out.clone()
    same_bar_1[0, 0] = x  # a transfer that left bar 1 as it was has nothing to follow
    assert why(tokens_b, same_bar_1, choice) == []
