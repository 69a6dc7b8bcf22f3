"""The inference API and its CLI commands on a tiny seeded model (untrained: properties only)."""

from __future__ import annotations

import html
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tests.paths import DATA
from tests.tiny import TINY_MODEL
from tvae.cli.main import main
from tvae.errors import TvaeError
from tvae.inference import TrainedModel, load_model
from tvae.latents import slerp
from tvae.melody import Melody, Note
from tvae.midi import read_melody, write_melody
from tvae.model.checkpoint import save_checkpoint
from tvae.model.vae import TransformerVAE


@pytest.fixture(scope="module")
def tiny(tiny_ckpt: Path) -> TrainedModel:
    return load_model(tiny_ckpt)


def _melody(n_bars: int, meter: tuple[int, int] = (4, 4), pickup: int = 0) -> Melody:
    rng = np.random.default_rng(n_bars)
    notes, t = [], 0
    bar = {(4, 4): 16, (3, 4): 12, (6, 8): 12, (2, 4): 8}[meter]
    total = pickup + (n_bars - (1 if pickup else 0)) * bar
    while t < total:
        d = int(rng.choice([2, 4]))
        d = min(d, total - t)
        notes.append(Note(t, int(rng.integers(60, 72)), d))
        t += d
    return Melody(tuple(notes), meter, 100.0, pickup, f"m{n_bars}")


@pytest.mark.parametrize("n_bars", [1, 5, 8, 13])
def test_encode_decode_any_length(tiny: TrainedModel, n_bars: int) -> None:
    melody = _melody(n_bars)
    z = tiny.encode(melody)
    assert z.shape == (n_bars, 8)
    out = tiny.decode(z, (4, 4), 100.0)
    assert out.n_bars <= n_bars and out.meter == (4, 4) and out.qpm == 100.0
    assert tiny.kl_bits(melody).shape == (n_bars,)
    assert (tiny.kl_bits(melody) >= 0).all()


def test_reconstruct_keeps_meter_tempo(tiny: TrainedModel) -> None:
    melody = _melody(6, (3, 4), pickup=4)
    out = tiny.reconstruct(melody)
    assert out.meter == (3, 4) and out.qpm == melody.qpm


def test_reconstruct_decodes_the_steps_before_a_pickup_as_outside_the_melody(
        tiny: TrainedModel) -> None:
    """A reconstruction knows its song's layout: the 8 steps before a 4-step pickup in 3/4 are
    decoded as PAD (so the pickup is kept), and the later bars are decoded from that, as the
    model's free run given `outside` does; a plain decode of the same latents fills them in
    (when the model decodes them as anything but rests, it drops the pickup)."""
    melody = _melody(6, (3, 4), pickup=4)
    z = tiny.encode(melody)
    out = tiny.reconstruct(melody)
    assert out.pickup == 4
    tokens = torch.as_tensor(tiny.bars(melody).tokens)[None]  # (1, N, S)
    meters = tiny._tensors(melody)[1]  # (1, N)
    outside = torch.zeros_like(tokens, dtype=torch.bool)
    outside[0, 0, :8] = True
    with torch.no_grad():
        expect = tiny.model.free_run(torch.as_tensor(z)[None], meters, outside=outside)[0]
    assert np.array_equal(tiny.bars(out).tokens, expect.numpy())


def test_transfer_replaces_exactly_the_listed_bars(tiny: TrainedModel,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = _melody(8), _melody(9)
    seen = {}
    original = tiny.decode

    def spy(z: np.ndarray, *args: object, **kw: object) -> Melody:
        seen["z"] = z.copy()
        return original(z, *args, **kw)

    monkeypatch.setattr(tiny, "decode", spy)
    tiny.transfer(a, b, bars=(0, 2))
    za, zb = tiny.encode(a), tiny.encode(b)
    np.testing.assert_array_equal(seen["z"][[0, 2]], za[[0, 2]])
    np.testing.assert_array_equal(seen["z"][[1, 3, 4, 5, 6, 7, 8]], zb[[1, 3, 4, 5, 6, 7, 8]])


def test_transfer_errors(tiny: TrainedModel) -> None:
    with pytest.raises(TvaeError, match="one meter"):
        tiny.transfer(_melody(4, (3, 4)), _melody(4))
    with pytest.raises(TvaeError, match="within both songs"):
        tiny.transfer(_melody(4), _melody(8), bars=(5,))


def test_interpolation_ends_are_the_reconstructions(tiny: TrainedModel) -> None:
    a, b = _melody(6), _melody(6)
    steps = tiny.interpolate(a, b, 4)
    assert len(steps) == 4
    assert steps[0].notes == tiny.decode(tiny.encode(a)).notes
    assert steps[-1].notes == tiny.decode(tiny.encode(b)).notes


def test_slerp_endpoints_and_norm() -> None:
    a, b = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    np.testing.assert_allclose(slerp(a, b, 0.0), a, atol=1e-12)
    np.testing.assert_allclose(slerp(a, b, 1.0), b, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(slerp(a, b, 0.5)), 1.0)


def test_sample_is_seeded(tiny: TrainedModel) -> None:
    one, two = tiny.sample(4, 1.0, seed=3), tiny.sample(4, 1.0, seed=3)
    assert one == two
    with pytest.raises(TvaeError):
        tiny.sample(0)


def test_cli_transfer_writes_midi_and_page(tiny_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["transfer", str(DATA / "mary.mid"),
                                       str(DATA / "jingle.mid"), "-o", str(out), "--model",
                                       str(tiny_ckpt)])
    assert result.exit_code == 0, result.output
    page = (out / "mary_x_jingle.html").read_text()
    assert page.count("<midi-player") == 5
    assert (out / "assets" / "midi-player.min.js").is_file()
    for name in ("mary_x_jingle.mid", "mary_reconstruction.mid", "jingle_reconstruction.mid"):
        assert read_melody(out / name).meter == (4, 4)
    assert "sound-font" not in page and not re.search(r"https?://", page)
    assert "Made by tvae tiny.json (width 32, latent 8 per bar, copy path per bar" in page


def test_cli_errors_are_one_line(tiny_ckpt: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["transfer", str(DATA / "mary.mid"), str(DATA / "ode.mid"),
                                  "--bars", "20", "--model", str(tiny_ckpt), "-o",
                                  str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    result = runner.invoke(main, ["transfer", str(DATA / "mary.mid"), str(DATA / "ode.mid"),
                                  "--bars", "x", "--model", str(tiny_ckpt)])
    assert result.exit_code == 2 and "--bars" in result.stderr


def test_cli_encode_decode_sample_interpolate(tiny_ckpt: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    npy = tmp_path / "mary.npy"
    r = runner.invoke(main, ["encode", str(DATA / "mary.mid"), "-o", str(npy), "--model",
                             str(tiny_ckpt)])
    assert r.exit_code == 0, r.output
    assert np.load(npy).shape == (8, 8)
    r = runner.invoke(main, ["decode", str(npy), "-o", str(tmp_path / "d.mid"), "--html",
                             "--model", str(tiny_ckpt)])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "d.mid").is_file() and (tmp_path / "d.html").is_file()
    r = runner.invoke(main, ["sample", "-n", "2", "--bars", "3", "-o", str(tmp_path / "s"),
                             "--html", "--model", str(tiny_ckpt)])
    assert r.exit_code == 0, r.output
    assert read_melody(tmp_path / "s" / "sample_0.mid").n_bars <= 3
    r = runner.invoke(main, ["interpolate", str(DATA / "mary.mid"), str(DATA / "ode.mid"),
                             "--steps", "3", "-o", str(tmp_path / "i"), "--html", "--model",
                             str(tiny_ckpt)])
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "i").glob("*.mid"))) == 3
    r = runner.invoke(main, ["reconstruct", str(DATA / "ode.mid"), "-o", str(tmp_path / "r"),
                             "--html", "--model", str(tiny_ckpt)])
    assert r.exit_code == 0, r.output


def test_demo_site(tiny_ckpt: Path, tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["demo", str(tmp_path / "site"), "--examples", str(DATA),
                                  "--model", str(tiny_ckpt)])
    assert r.exit_code == 0, r.output
    pages = {p.name for p in (tmp_path / "site").glob("*.html")}
    assert {"index.html", "mary_x_jingle.html", "jingle_x_mary.html", "twinkle_x_ode.html",
            "ode_x_twinkle.html", "edited_repeat.html", "reconstructions.html",
            "samples.html", "interpolation.html"} <= pages
    index = (tmp_path / "site" / "index.html").read_text()
    for page in pages - {"index.html"}:
        assert f'href="{page}"' in index
    edited = html.unescape((tmp_path / "site" / "edited_repeat.html").read_text())
    assert "with bar 5, a repeat of bar 1, varied" in edited
    assert ("bar 5 (1 step changed from bar 1) is the new bar 1" in edited
            or "bar 5 (1 step changed from bar 1) is not the new bar 1" in edited
            or "left no edited repeat of a changed bar 1" in edited)


def test_pickup_melody_written_and_read(tmp_path: Path) -> None:
    melody = _melody(4, (6, 8), pickup=2)
    write_melody(melody, tmp_path / "p.mid")
    assert read_melody(tmp_path / "p.mid") == melody


def test_pages_link_the_midi_and_show_the_pitch_span(tiny_ckpt: Path, tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["sample", "-n", "1", "--bars", "2", "-o", str(tmp_path),
                                  "--html", "--model", str(tiny_ckpt)])
    assert r.exit_code == 0, r.output
    page = (tmp_path / "samples.html").read_text()
    assert '<span class="name">seed 0, temperature 1</span>' in page  # not "sample 0" again
    assert 'download="sample_0.mid" href="data:audio/midi;base64,' in page
    notes = read_melody(tmp_path / "sample_0.mid").notes
    from tvae.midi_report import pitch_name

    low, high = min(n.pitch for n in notes), max(n.pitch for n in notes)
    assert f"{pitch_name(low)} at the bottom, {pitch_name(high)} at the top" in page


def test_copy_sources_follow_the_pointer(tiny_ckpt: Path, tmp_path: Path) -> None:
    """A pointer forced to copy the bar 2 back: every bar from 3 on is reported (and drawn on
    the page) as a copy of the bar 2 before it, and a transfer's bar 3 repeats its new bar 1."""
    model = load_model(tiny_ckpt)  # a fresh copy: the module's fixture stays untouched
    first = int(model.model.learn_edit)
    with torch.no_grad():
        model.model.pointer.weight.zero_()
        model.model.pointer.bias.fill_(-30.0)
        model.model.pointer.bias[first] = 0.0  # generate where nothing is 2 back...
        model.model.pointer.bias[first + 2] = 30.0  # ...else copy the bar 2 back
    melody = _melody(6)
    assert model.copy_sources(melody) == [None, None, 0, 1, 2, 3]
    out = model.transfer(_melody(5), melody)
    tokens = model.bars(out).tokens
    assert np.array_equal(tokens[2], tokens[0]) and np.array_equal(tokens[4], tokens[0])
    from tvae.outputs import transfer_items, write_results

    items = transfer_items(model, _melody(5), melody, "a", "b", [0])
    page = write_results(model, tmp_path, items, "t", "t.html")[-1].read_text()
    assert page.count('<i class="ref">= bar 1</i>') >= 5  # bar 3 of every 6-bar melody
    assert page.count(" moved") == 2  # bar 1 of input 1 and of the output


def test_a_checkpoint_from_before_the_copy_path_loads_as_the_stock_model(tmp_path: Path) -> None:
    import json

    torch.manual_seed(0)
    model = TransformerVAE(replace(TINY_MODEL, copy="none"))
    path = save_checkpoint(tmp_path / "old", model)
    meta = json.loads(path.read_text())
    for key in ("copy", "copy_offsets", "copy_edit"):
        del meta["model"][key]
    path.write_text(json.dumps(meta))
    loaded = load_model(path)
    assert loaded.model.config.copy == "none" and loaded.model.pointer is None
    assert loaded.copy_sources(_melody(4)) == [None] * 4


def test_the_package_ships_the_example_melodies() -> None:
    from tvae.demo import EXAMPLES, examples_folder

    for name in EXAMPLES:  # the same files as the repository's data/
        assert (examples_folder() / f"{name}.mid").read_bytes() == (DATA / f"{name}.mid"
                                                                    ).read_bytes()


def test_demo_works_from_any_folder(tiny_ckpt: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no data/ here: the package's examples are used
    r = CliRunner().invoke(main, ["demo", "site", "--model", str(tiny_ckpt)])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "site" / "mary_x_jingle.html").is_file()
    assert r.stdout.count("wrote site") == 8  # progress: one line per page as it is written


@pytest.mark.parametrize("args", [
    ["train", "data", "--tf-schedule", "foo"], ["train", "data", "--copy", "maybe"],
    ["sample", "--top-p", "2"], ["sample", "--temperature", "-1"], ["sample", "--seed", "-1"],
    ["sample", "--temperature", "nan"], ["sample", "--top-p", "nan"],
    ["sample", "--bars", "100000000"], ["sample", "-n", "100000000"],
    ["interpolate", "a.mid", "b.mid", "--temperature", "nan"],
])
def test_bad_option_values_exit_2_before_anything_is_written(args: list[str], tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    result = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_train_refuses_cuda_up_front_when_there_is_none(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = CliRunner().invoke(main, ["train", str(DATA), "--device", "cuda", "-o",
                                       str(tmp_path / "run")])
    assert result.exit_code == 2 and "CUDA is not available" in result.stderr
    assert not (tmp_path / "run").exists()


def test_interpolation_of_unequal_lengths_warns(tiny: TrainedModel) -> None:
    from tvae.errors import TvaeWarning

    with pytest.warns(TvaeWarning, match="first 5 bars only: A has 5 bars, B has 8"):
        steps = tiny.interpolate(_melody(5), _melody(8), 2)
    assert all(m.n_bars <= 5 for m in steps)


def test_inference_commands_take_a_device(tiny_ckpt: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(main, ["reconstruct", str(DATA / "mary.mid"), "-o", str(tmp_path / "r"),
                             "--model", str(tiny_ckpt), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    if not torch.cuda.is_available():
        r = runner.invoke(main, ["sample", "-o", str(tmp_path / "s"), "--model", str(tiny_ckpt),
                                 "--device", "cuda"])
        assert r.exit_code == 2 and "CUDA is not available" in r.stderr
        assert not (tmp_path / "s").exists()


def test_interpolation_can_sample(tiny: TrainedModel) -> None:
    a, b = _melody(4), _melody(4)
    greedy = tiny.interpolate(a, b, 3)
    drawn = tiny.interpolate(a, b, 3, temperature=1.5, seed=1)
    assert drawn == tiny.interpolate(a, b, 3, temperature=1.5, seed=1)  # seeded
    assert [m.notes for m in drawn] != [m.notes for m in greedy]


def test_encode_many_files_with_sigma(tiny_ckpt: Path, tmp_path: Path, tiny: TrainedModel) -> None:
    r = CliRunner().invoke(main, ["encode", str(DATA / "mary.mid"), str(DATA / "twinkle.mid"),
                                  "-o", str(tmp_path / "z"), "--sigma", "--model",
                                  str(tiny_ckpt)])
    assert r.exit_code == 0, r.output
    mu, sigma = np.load(tmp_path / "z" / "twinkle.npy"), np.load(tmp_path / "z" /
                                                                 "twinkle_sigma.npy")
    assert mu.shape == sigma.shape == (12, 8) and (sigma > 0).all()
    [(mu2, sigma2)] = tiny.encode_many([read_melody(DATA / "twinkle.mid")])
    np.testing.assert_allclose(mu, mu2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sigma, sigma2, rtol=1e-5, atol=1e-6)


def test_decode_refuses_odd_latents_and_tempi(tiny_ckpt: Path, tmp_path: Path) -> None:
    ok = tmp_path / "z.npy"
    np.save(ok, np.zeros((4, 8), np.float32))
    huge = tmp_path / "huge.npy"
    np.save(huge, np.zeros((5000, 8), np.float32))
    bad = tmp_path / "nan.npy"
    np.save(bad, np.full((4, 8), np.nan, np.float32))
    runner = CliRunner()
    for args, words in [([str(ok), "--qpm", "nan"], "finite"), ([str(ok), "--qpm", "-5"], "range"),
                        ([str(huge)], "at most 4096"), ([str(bad)], "NaN")]:
        out = tmp_path / "out.mid"
        r = runner.invoke(main, ["decode", *args, "-o", str(out), "--model", str(tiny_ckpt)])
        assert r.exit_code == 2 and words in r.stderr and not out.exists(), r.stderr


def test_ctrl_c_before_any_work_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    import tvae.midi

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(tvae.midi, "read_melody", interrupted)
    result = CliRunner().invoke(main, ["reconstruct", str(DATA / "mary.mid")])
    assert result.exit_code == 130 and "Traceback" not in result.output


@pytest.mark.parametrize("command", ["reconstruct", "encode", "transfer"])
def test_commands_fold_pitches_into_the_models_range_once(tmp_path: Path, command: str) -> None:
    """A model trained on MIDI 36-84 reads files with that range: a note at 40 stays (the
    default 48-96 would move it), a note at 30 moves into 36-84, and that is said once."""
    from tvae.config import GridConfig

    torch.manual_seed(0)
    grid = GridConfig(min_pitch=36, max_pitch=84)
    model = TransformerVAE(TINY_MODEL, grid)
    ckpt = save_checkpoint(tmp_path / "low", model)
    song = tmp_path / "low.mid"
    write_melody(Melody(tuple(Note(4 * k, p, 4) for k, p in enumerate([40, 43, 30, 47]))), song)
    args = {"reconstruct": [str(song)], "encode": [str(song), "-o", str(tmp_path / "z.npy")],
            "transfer": [str(song), str(song)]}[command]
    if command != "encode":
        args += ["-o", str(tmp_path / "out")]
    result = CliRunner().invoke(main, [command, *args, "--model", str(ckpt)])
    assert result.exit_code == 0, result.output
    moved = [line for line in result.stderr.splitlines() if "by octaves" in line]
    assert len(moved) == (2 if command == "transfer" else 1), result.stderr  # once per file read
    assert all("moved 1 notes" in line and "36-84" in line for line in moved), moved
    assert "48-96" not in result.stderr
