"""Hostile and broken MIDI input (tests/make_broken.py): every command either works, maybe with
warnings, or exits with code 2 and ONE line `error: PATH: reason` naming the file. Never a
traceback, never a hang (each subprocess has a timeout), never a half-written output.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from cli_contract import MARY, MAX_RSS_MB, ROOT, contract_problem, invoke, run_process
from make_broken import EXPECTED_CHANGES, make_broken

from tvae.midi import read_midi

# Tiny models gain nothing from threads, and on a busy machine two threads spin-wait for each other.
pytestmark = pytest.mark.usefixtures("torch_one_thread")

# Files run through real `python -m tvae` processes (the rest run in-process, faster).
SUBPROCESS_SAMPLE = (
    "not_midi_png.mid", "empty.mid", "truncated_0023.mid", "running_status_garbage.mid",
    "smpte_division.mid", "meter_7_8.mid", "many_notes_20mb.mid", "zero_length_notes_20mb.mid",
    "huge_sysex_20mb.mid", "name_script.mid", "name_not_utf8.mid", "tracks_1000.mid",
)
# Files also run through reconstruct, encode and interpolate (transfer runs every file).
MODEL_SAMPLE = (
    "not_midi_text.mid", "header_only.mid", "truncated_0100.mid", "drums_only.mid",
    "meter_5_4.mid", "many_notes_20mb.mid", "chords.mid", "tpq_1.mid", "lone_note_at_max_tick.mid",
    "name_script.mid", "name_not_utf8.mid", "tempo_zero_mspq.mid", "huge_text_20mb.mid",
)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The broken corpus, written once: (folder, {file name: "ok" or "error"})."""
    folder = tmp_path_factory.mktemp("broken")
    return folder, make_broken(folder)


def test_corpus_has_every_kind(corpus: tuple[Path, dict[str, str]]) -> None:
    folder, expected = corpus
    assert sorted(p.name for p in folder.iterdir()) == sorted(expected)
    assert sum(name.startswith("truncated_") for name in expected) >= 60
    assert set(expected.values()) == {"ok", "error"}
    assert all(expected[name] == "ok" for name in EXPECTED_CHANGES)
    assert max(p.stat().st_size for p in folder.iterdir()) >= 20 * 2**20


def test_inspect_every_file(corpus: tuple[Path, dict[str, str]]) -> None:
    """`tvae inspect FILE` and `--json`: refused in one line, or read with only warnings."""
    folder, expected = corpus
    problems = []
    for name, outcome in expected.items():
        path = folder / name
        text, as_json = invoke(["inspect", path]), invoke(["inspect", path, "--json"])
        for label, got in (("text", text), ("json", as_json)):
            problem = contract_problem(got, outcome, path)
            if problem:
                problems.append(f"{name} ({label}): {problem}")
        if outcome == "ok" and as_json.code == 0:
            info = json.loads(as_json.out)
            assert len(info["grid"]) == info["bars"] >= 1, name
            assert all(ch.isprintable() for ch in info["track_name"]), name
            assert len(info["track_name"]) <= 200, name
            assert all(warning in text.out for warning in info["warnings"]), name
            if name in EXPECTED_CHANGES:
                assert EXPECTED_CHANGES[name] in info["changes"], (name, info["changes"])
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", SUBPROCESS_SAMPLE)
def test_inspect_in_a_real_process(corpus: tuple[Path, dict[str, str]], name: str) -> None:
    """The real entry point, with a timeout and a memory bound (20 MB files included)."""
    folder, expected = corpus
    got, rss_mb = run_process(["inspect", folder / name, "--json"])
    assert contract_problem(got, expected[name], folder / name) is None, got
    if expected[name] == "ok":
        assert json.loads(got.out)["notes"] >= 1
    assert rss_mb < MAX_RSS_MB, f"{name}: peak memory {rss_mb:.0f} MB"


def snapshot(folder: Path) -> dict[str, bytes]:
    """Each entry of `folder` and its bytes (b"<dir>" for a folder)."""
    return {p.name: p.read_bytes() if p.is_file() else b"<dir>" for p in sorted(folder.iterdir())}


def prepare_out(folder: Path, names: list[str]) -> dict[str, bytes]:
    """An output folder already holding a file of the user's and files named like the outputs."""
    folder.mkdir(parents=True)
    (folder / "keep.txt").write_bytes(b"the user's own file\n")
    for name in names:
        (folder / name).write_bytes(b"an older output\n")
    return snapshot(folder)


def output_problem(folder: Path, before: dict[str, bytes], failed: bool) -> str | None:
    """On failure nothing in `folder` changed; on success every changed file is complete."""
    after = snapshot(folder)
    if failed:
        return None if after == before else f"output folder changed: {sorted(after)}"
    if after.get("keep.txt") != before["keep.txt"]:
        return "the user's file was changed"
    if any(name.endswith(".tmp") for name in after):
        return f"temporary files left: {sorted(after)}"
    for name, data in after.items():
        if data == before.get(name):
            continue
        path = folder / name
        if name.endswith(".mid"):
            read_midi(path)
        elif name.endswith(".npy"):
            np.load(path, allow_pickle=False)
        elif name.endswith(".html") and ("</html>" not in data.decode()
                                          or "<script>alert(1)" in data.decode()):
            return f"{name} is incomplete or does not escape the track name"
    return None


def model_runs(name: str, path: Path, out: Path) -> dict[str, tuple[list[str], list[str]]]:
    """{command: (arguments, names of the files it would write)} for the file `path`."""
    stem = path.stem
    return {
        "transfer": (["transfer", path, MARY, "-o", out],
                     [f"{stem}_x_mary.mid", f"{stem}_x_mary.html", f"{stem}_reconstruction.mid"]),
        "reconstruct": (["reconstruct", path, "-o", out, "--html"],
                        [f"{stem}_reconstruction.mid", f"{stem}_reconstruction.html"]),
        "encode": (["encode", path, "-o", out / f"{stem}.npy"], [f"{stem}.npy"]),
        "interpolate": (["interpolate", path, MARY, "-o", out, "--steps", "3"],
                        [f"{stem}_to_mary_1.mid", f"{stem}_to_mary_3.mid"]),
    }


# Commands that refuse a pair of readable files without naming them (tvae/cli/infer.py passes the
# model's TvaeError on as is): these pairs are known gaps, checked in their own test below.
UNNAMED_PAIR_ERRORS = {("meter_1_4_pickup_then_3_4.mid", "transfer"),
                       ("meter_1_4_pickup_then_3_4.mid", "interpolate")}


def test_model_commands_on_every_file(corpus: tuple[Path, dict[str, str]], tiny_ckpt: Path,
                                      tmp_path: Path) -> None:
    """Each broken file as A (with data/mary.mid as B): refused in one line naming it, or
    processed; on refusal the output folder is untouched, on success its files are complete."""
    folder, expected = corpus
    problems = []
    for name, outcome in expected.items():
        commands = ("transfer", "reconstruct", "encode", "interpolate")
        for command in commands if name in MODEL_SAMPLE else commands[:1]:
            if (name, command) in UNNAMED_PAIR_ERRORS:
                continue
            out = tmp_path / f"{command}-{name}"
            args, names = model_runs(name, folder / name, out)[command]
            before = prepare_out(out, names)
            got = invoke([*args, "--model", tiny_ckpt])
            problem = contract_problem(got, outcome, folder / name, MARY) or output_problem(
                out, before, got.code != 0)
            if problem:
                problems.append(f"{command} {name}: {problem}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("command", ["transfer", "interpolate"])
def test_meter_mismatch_names_the_files(corpus: tuple[Path, dict[str, str]], tiny_ckpt: Path,
                                        tmp_path: Path, command: str) -> None:
    folder, _ = corpus
    path = folder / "meter_1_4_pickup_then_3_4.mid"
    args, names = model_runs(path.name, path, tmp_path / "out")[command]
    before = prepare_out(tmp_path / "out", names)
    got = invoke([*args, "--model", tiny_ckpt])
    assert output_problem(tmp_path / "out", before, got.code != 0) is None
    assert contract_problem(got, "error", path, MARY) is None, got.err


def test_file_name_with_a_newline_gives_one_line(tmp_path: Path) -> None:
    path = tmp_path / "two\nlines.mid"
    path.write_bytes(b"not MIDI")
    got = invoke(["inspect", path])
    assert got.code == 2 and len(got.err.splitlines()) == 1, got.err


def test_transfer_in_a_real_process(corpus: tuple[Path, dict[str, str]], tiny_ckpt: Path,
                                    tmp_path: Path) -> None:
    folder, _ = corpus
    path = folder / "truncated_0100.mid"
    before = prepare_out(tmp_path / "out", ["truncated_0100_x_mary.mid"])
    got, _ = run_process(["transfer", path, MARY, "-o", tmp_path / "out", "--model", tiny_ckpt])
    assert contract_problem(got, "error", path) is None, got
    assert snapshot(tmp_path / "out") == before


class _Marker:
    """Unpickling this creates the file `path`: proof that something unpickled it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.path,))


def pickled_models(folder: Path, tiny_ckpt: Path) -> tuple[list[Path], Path]:
    """Model files that are pickles in disguise, and the marker file unpickling would create."""
    import torch

    from tvae.model.checkpoint import load_checkpoint

    marker = folder / "UNPICKLED"
    evil = pickle.dumps({"weights": _Marker(marker)})
    paths = {"model.pt": None, "model.pkl": evil, "model.json": evil,
             "model_p0.pkl": pickle.dumps([_Marker(marker)], protocol=0)}
    for name, data in paths.items():
        if data is None:
            torch.save(load_checkpoint(tiny_ckpt)[0].state_dict(), folder / name)
        else:
            (folder / name).write_bytes(data)
    weights = folder / "weights_pickled"  # a real config beside pickled weights
    shutil.copy(tiny_ckpt, weights.with_suffix(".json"))
    weights.with_suffix(".safetensors").write_bytes(evil)
    return [folder / n for n in paths] + [weights.with_suffix(".json")], marker


def test_pickle_or_torch_save_as_model(tiny_ckpt: Path, tmp_path: Path) -> None:
    models, marker = pickled_models(tmp_path, tiny_ckpt)
    for model in models:
        got = invoke(["encode", MARY, "-o", tmp_path / "z.npy", "--model", model])
        assert contract_problem(got, "error", model, model.with_suffix(".safetensors")) is None, (
            model.name, got)
    got, _ = run_process(["encode", MARY, "-o", tmp_path / "z.npy", "--model", models[1]])
    assert contract_problem(got, "error", models[1]) is None, got
    assert not marker.exists() and not (tmp_path / "z.npy").exists()


def test_evaluate_skips_broken_files(corpus: tuple[Path, dict[str, str]], tiny_ckpt: Path,
                                     tmp_path: Path) -> None:
    """A folder of good and broken files: the broken ones are skipped, with a summary."""
    folder, expected = corpus
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for good in sorted((ROOT / "data").glob("*.mid")):
        shutil.copy(good, mixed / good.name)
    broken = ["not_midi_text.mid", "empty.mid", "truncated_0030.mid", "drums_only.mid",
              "meter_7_8.mid", "many_notes_20mb.mid", "running_status_garbage.mid"]
    for name in broken + ["chords.mid", "name_not_utf8.mid"]:
        shutil.copy(folder / name, mixed / name)
    env = {"TVAE_CACHE_DIR": str(tmp_path / "cache")}
    got = invoke(["evaluate", mixed, "--model", tiny_ckpt, "--bars", "4", "--json"], env)
    assert contract_problem(got, "ok", mixed) is None, got
    assert json.loads(got.out)["skipped_files"] == len(broken)
    summary = [line for line in got.err.splitlines() if "skipped" in line]
    assert len(summary) == 1 and str(mixed) in summary[0], got.err
    for reason in ("not a MIDI file", "empty", "only drum tracks", "unsupported meter 7/8",
                   "bars long", "cannot parse MIDI"):
        assert reason in summary[0], (reason, summary[0])


def test_evaluate_folder_of_only_broken_files(corpus: tuple[Path, dict[str, str]],
                                              tiny_ckpt: Path, tmp_path: Path) -> None:
    folder, _ = corpus
    only = tmp_path / "only_broken"
    only.mkdir()
    for name in ("not_midi_png.mid", "header_only.mid", "smpte_division.mid"):
        shutil.copy(folder / name, only / name)
    env = {"TVAE_CACHE_DIR": str(tmp_path / "cache")}
    got = invoke(["evaluate", only, "--model", tiny_ckpt, "--json"], env)
    *warned, last = got.err.splitlines()
    assert got.code == 2 and last.startswith(f"error: {only}: "), got.err
    assert all(line.startswith("warning: ") for line in warned), got.err



def test_a_folder_given_as_a_midi_file_gives_one_line(tmp_path: Path) -> None:
    got = invoke(["inspect", tmp_path])
    assert got.code == 2 and len(got.err.splitlines()) == 1, got.err
    assert got.err.startswith("error: ") and str(tmp_path) in got.err


# -- grid and size options ----------------------------------------------------
@pytest.mark.parametrize(("options", "flag"), [
    (["--min-pitch", "0", "--max-pitch", "300"], "--max-pitch"),
    (["--steps-per-bar", "100000"], "--steps-per-bar"),
    (["--min-pitch", "90", "--max-pitch", "60"], "--min-pitch"),
    (["--d-model", "100000"], "--d-model"),
    (["--enc-layers", "1000000000"], "--enc-layers"),
    (["--bars", "1000000"], "--bars"),
    (["--beta", "nan"], "--beta"),
])
@pytest.mark.parametrize("command", ["train", "prepare"])
def test_bad_grid_and_size_options_exit_2_before_data_is_read(tmp_path: Path, command: str,
                                                              options: list[str],
                                                              flag: str) -> None:
    """The configs check their ranges, so the CLI names the option, before it reads MIDI_DIR
    (missing here: reading it first would give another error) or writes anything."""
    if command == "prepare" and flag in ("--d-model", "--enc-layers", "--bars", "--beta"):
        pytest.skip("not an option of prepare")
    missing = tmp_path / "no_such_folder"
    got = invoke([command, missing, *(["-o"] if command == "train" else []), tmp_path / "out",
                  *options])
    assert got.crash is None and got.code == 2, got
    lines = got.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and flag in lines[0], got.err
    assert str(missing) not in lines[0] and not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", [1e20, 3e38, 1e25, -2e3])
def test_latents_far_outside_any_posterior_are_refused(tiny_ckpt: Path, tmp_path: Path,
                                                       value: float) -> None:
    """Huge finite latents used to decode to a melody of 0 or 3 bars with exit 0; now one line
    naming the file, and latents up to the bound decode to every bar asked for."""
    z = np.zeros((6, 8), np.float32)
    z[4, 2] = value
    path = tmp_path / "huge.npy"
    np.save(path, z)
    got = invoke(["decode", path, "-o", tmp_path / "out.mid", "--model", tiny_ckpt])
    assert contract_problem(got, "error", path) is None, got
    assert "bar 5, value 3" in got.err and not (tmp_path / "out.mid").exists()
    z[4, 2] = 1e3 if value > 0 else -1e3
    np.save(path, z)
    got = invoke(["decode", path, "-o", tmp_path / "out.mid", "--model", tiny_ckpt])
    assert got.code == 0, got
    from tvae.midi import read_melody

    assert read_melody(tmp_path / "out.mid").n_bars == 6


def test_decoding_a_fifo_is_one_line_not_a_hang(tiny_ckpt: Path, tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "z.npy"
    os.mkfifo(fifo)
    got = invoke(["decode", fifo, "--model", tiny_ckpt])
    assert contract_problem(got, "error", fifo) is None, got
    assert "FIFO" in got.err
