"""Hostile and broken MIDI input (tests/make_broken.py): every command either works, maybe with
warnings, or exits with code 2 and ONE line `error: PATH: reason` naming the file. Never a
traceback, never a hang (each subprocess has a timeout), never a half-written output.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from make_broken import EXPECTED_CHANGES, make_broken

from tvae.cli.main import main
from tvae.midi import read_midi

ROOT = Path(__file__).resolve().parent.parent
MARY = ROOT / "data" / "mary.mid"
TIMEOUT_S = 60  # a subprocess still running after this has hung: the test fails
MAX_RSS_MB = 512  # peak memory of `tvae inspect` on a 20 MB file (about 300 MB; 900 before a fix)
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


@dataclass
class Outcome:
    """What one command did: exit code, stdout, stderr, and the exception if it was not exit."""

    code: int
    out: str
    err: str
    crash: BaseException | None = None


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The broken corpus, written once: (folder, {file name: "ok" or "error"})."""
    folder = tmp_path_factory.mktemp("broken")
    return folder, make_broken(folder)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny models gain nothing from threads, and on a busy machine two threads spin-wait for
    each other (50x slower here while a training job runs)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny untrained checkpoint (seeded), enough to run every inference command."""
    import torch

    from tvae.config import ModelConfig
    from tvae.model.checkpoint import save_checkpoint
    from tvae.model.vae import TransformerVAE

    torch.manual_seed(0)
    model = TransformerVAE(ModelConfig(d_model=32, d_latent=8, n_heads=2, d_ff=64, bar_hidden=32,
                                       enc_layers=1, dec_layers=1))
    return save_checkpoint(tmp_path_factory.mktemp("model") / "tiny", model)


def invoke(args: list[str], env: dict[str, str] | None = None) -> Outcome:
    """Run `tvae ARGS` in-process with click's runner."""
    result = CliRunner().invoke(main, [str(a) for a in args], env=env)
    crash = None if isinstance(result.exception, SystemExit | None) else result.exception
    return Outcome(result.exit_code, result.stdout, result.stderr, crash)


# Runs a command and writes its peak memory (KB) to a file: measured from this small process,
# because a child forked from the (large) test process would count the test's own memory.
MEASURE = ("import resource, subprocess, sys; code = subprocess.call(sys.argv[2:]); "
           "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN)"
           ".ru_maxrss)); sys.exit(code)")


def run_process(args: list[str], cwd: Path = ROOT) -> tuple[Outcome, float]:
    """Run `python -m tvae ARGS` in a real process, killed after TIMEOUT_S.
    Returns the outcome and the process's peak resident memory in MB."""
    with tempfile.TemporaryDirectory() as tmp:
        rss_file = Path(tmp) / "maxrss"
        command = [sys.executable, "-c", MEASURE, rss_file, sys.executable, "-m", "tvae", *args]
        proc = subprocess.Popen([str(a) for a in command], cwd=cwd, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            out, err = proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            pytest.fail(f"tvae {args} ran over {TIMEOUT_S} s and was killed (a hang?)")
        rss_mb = int(rss_file.read_text()) / 1024
    return Outcome(proc.returncode, out.decode(errors="replace"),
                   err.decode(errors="replace")), rss_mb


def contract_problem(got: Outcome, expected: str, *paths: Path) -> str | None:
    """Why `got` breaks the contract for an input expected to be "ok" or an "error", or None.

    "error": exit 2 and exactly one stderr line `error: ...` naming one of `paths`.
    "ok": exit 0 and only `warning: ...` lines on stderr.
    """
    if got.crash is not None:
        return f"crashed: {type(got.crash).__name__}: {got.crash}"
    if "Traceback" in got.out + got.err:
        return f"printed a traceback: {got.err[-300:]!r}"
    lines = got.err.splitlines()
    if expected == "error":
        if got.code != 2 or len(lines) != 1 or not lines[0].startswith("error: "):
            return f"expected exit 2 and one error line, got exit {got.code}: {got.err[:300]!r}"
        if not any(str(p) in lines[0] for p in paths):
            return f"the error line names none of {[str(p) for p in paths]}: {lines[0]!r}"
        return None
    if got.code != 0:
        return f"expected success, got exit {got.code}: {got.err[:300]!r}"
    if any(not line.startswith("warning: ") for line in lines):
        return f"stderr has lines other than warnings: {got.err[:300]!r}"
    return None


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


def test_model_commands_on_every_file(corpus: tuple[Path, dict[str, str]], tiny_model: Path,
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
            got = invoke([*args, "--model", tiny_model])
            problem = contract_problem(got, outcome, folder / name, MARY) or output_problem(
                out, before, got.code != 0)
            if problem:
                problems.append(f"{command} {name}: {problem}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("command", ["transfer", "interpolate"])
def test_meter_mismatch_names_the_files(corpus: tuple[Path, dict[str, str]], tiny_model: Path,
                                        tmp_path: Path, command: str) -> None:
    folder, _ = corpus
    path = folder / "meter_1_4_pickup_then_3_4.mid"
    args, names = model_runs(path.name, path, tmp_path / "out")[command]
    before = prepare_out(tmp_path / "out", names)
    got = invoke([*args, "--model", tiny_model])
    assert output_problem(tmp_path / "out", before, got.code != 0) is None
    assert contract_problem(got, "error", path, MARY) is None, got.err


def test_file_name_with_a_newline_gives_one_line(tmp_path: Path) -> None:
    path = tmp_path / "two\nlines.mid"
    path.write_bytes(b"not MIDI")
    got = invoke(["inspect", path])
    assert got.code == 2 and len(got.err.splitlines()) == 1, got.err


def test_transfer_in_a_real_process(corpus: tuple[Path, dict[str, str]], tiny_model: Path,
                                    tmp_path: Path) -> None:
    folder, _ = corpus
    path = folder / "truncated_0100.mid"
    before = prepare_out(tmp_path / "out", ["truncated_0100_x_mary.mid"])
    got, _ = run_process(["transfer", path, MARY, "-o", tmp_path / "out", "--model", tiny_model])
    assert contract_problem(got, "error", path) is None, got
    assert snapshot(tmp_path / "out") == before


class _Marker:
    """Unpickling this creates the file `path`: proof that something unpickled it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.path,))


def pickled_models(folder: Path, tiny_model: Path) -> tuple[list[Path], Path]:
    """Model files that are pickles in disguise, and the marker file unpickling would create."""
    import torch

    from tvae.model.checkpoint import load_checkpoint

    marker = folder / "UNPICKLED"
    evil = pickle.dumps({"weights": _Marker(marker)})
    paths = {"model.pt": None, "model.pkl": evil, "model.json": evil,
             "model_p0.pkl": pickle.dumps([_Marker(marker)], protocol=0)}
    for name, data in paths.items():
        if data is None:
            torch.save(load_checkpoint(tiny_model)[0].state_dict(), folder / name)
        else:
            (folder / name).write_bytes(data)
    weights = folder / "weights_pickled"  # a real config beside pickled weights
    shutil.copy(tiny_model, weights.with_suffix(".json"))
    weights.with_suffix(".safetensors").write_bytes(evil)
    return [folder / n for n in paths] + [weights.with_suffix(".json")], marker


def test_pickle_or_torch_save_as_model(tiny_model: Path, tmp_path: Path) -> None:
    models, marker = pickled_models(tmp_path, tiny_model)
    for model in models:
        got = invoke(["encode", MARY, "-o", tmp_path / "z.npy", "--model", model])
        assert contract_problem(got, "error", model, model.with_suffix(".safetensors")) is None, (
            model.name, got)
    got, _ = run_process(["encode", MARY, "-o", tmp_path / "z.npy", "--model", models[1]])
    assert contract_problem(got, "error", models[1]) is None, got
    assert not marker.exists() and not (tmp_path / "z.npy").exists()


def test_evaluate_skips_broken_files(corpus: tuple[Path, dict[str, str]], tiny_model: Path,
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
    got = invoke(["evaluate", mixed, "--model", tiny_model, "--bars", "4", "--json"], env)
    assert contract_problem(got, "ok", mixed) is None, got
    assert json.loads(got.out)["skipped_files"] == len(broken)
    summary = [line for line in got.err.splitlines() if "skipped" in line]
    assert len(summary) == 1 and str(mixed) in summary[0], got.err
    for reason in ("not a MIDI file", "empty", "only drum tracks", "unsupported meter 7/8",
                   "bars long", "cannot parse MIDI"):
        assert reason in summary[0], (reason, summary[0])


def test_evaluate_folder_of_only_broken_files(corpus: tuple[Path, dict[str, str]],
                                              tiny_model: Path, tmp_path: Path) -> None:
    folder, _ = corpus
    only = tmp_path / "only_broken"
    only.mkdir()
    for name in ("not_midi_png.mid", "header_only.mid", "smpte_division.mid"):
        shutil.copy(folder / name, only / name)
    env = {"TVAE_CACHE_DIR": str(tmp_path / "cache")}
    got = invoke(["evaluate", only, "--model", tiny_model, "--json"], env)
    *warned, last = got.err.splitlines()
    assert got.code == 2 and last.startswith(f"error: {only}: "), got.err
    assert all(line.startswith("warning: ") for line in warned), got.err



def test_a_folder_given_as_a_midi_file_gives_one_line(tmp_path: Path) -> None:
    got = invoke(["inspect", tmp_path])
    assert got.code == 2 and len(got.err.splitlines()) == 1, got.err
    assert got.err.startswith("error: ") and str(tmp_path) in got.err


# -- hostile checkpoints and grid options (issue #13, F5-F7) -----------------------------------
def hostile_models(folder: Path, tiny_model: Path) -> dict[str, Path]:
    """Checkpoint pairs that once ate the machine's memory or hung: their JSON paths."""
    models = {}
    for name in ("dev_zero", "fifo", "layers_1e9", "d_model_4096", "nested", "json_folder"):
        stem = folder / name
        shutil.copy(tiny_model.with_suffix(".safetensors"), stem.with_suffix(".safetensors"))
        meta = json.loads(tiny_model.read_text())
        if name == "layers_1e9":
            meta["model"]["enc_layers"] = 10**9
        if name == "d_model_4096":
            meta["model"]["d_model"] = 4096
        stem.with_suffix(".json").write_text(json.dumps(meta))
        models[name] = stem.with_suffix(".json")
    models["dev_zero"].with_suffix(".safetensors").unlink()
    models["dev_zero"].with_suffix(".safetensors").symlink_to("/dev/zero")
    models["fifo"].with_suffix(".safetensors").unlink()
    os.mkfifo(models["fifo"].with_suffix(".safetensors"))
    models["nested"].write_text('{"format": "tvae-checkpoint", "x": ' + "[" * 100_000)
    models["json_folder"].unlink()
    models["json_folder"].mkdir()
    models["json_folder"] = models["json_folder"].with_suffix("")  # named by its stem
    return models


@pytest.mark.parametrize("name", ["dev_zero", "fifo", "layers_1e9", "d_model_4096"])
def test_hostile_checkpoints_are_refused_quickly_in_little_memory(tiny_model: Path,
                                                                  tmp_path: Path,
                                                                  name: str) -> None:
    """A real process: one error line naming the file, in well under TIMEOUT_S and MAX_RSS_MB
    (they used to take 23 GB, hang, or allocate 1.3-1.9 GB before refusal)."""
    if name == "dev_zero" and not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero here")
    model = hostile_models(tmp_path, tiny_model)[name]
    got, rss_mb = run_process(["sample", "-n", "1", "-o", tmp_path / "out", "--model", model])
    assert contract_problem(got, "error", model, model.with_suffix(".safetensors")) is None, got
    assert rss_mb < MAX_RSS_MB, f"{name}: {rss_mb:.0f} MB"
    assert not (tmp_path / "out").exists()


def test_hostile_checkpoint_json_gives_one_line(tiny_model: Path, tmp_path: Path) -> None:
    models = hostile_models(tmp_path, tiny_model)
    for name in ("nested", "json_folder", "layers_1e9", "d_model_4096"):
        model = models[name]
        got = invoke(["sample", "-n", "1", "-o", tmp_path / "out", "--model", model])
        assert contract_problem(got, "error", model, model.with_suffix(".json"),
                                model.with_suffix(".safetensors")) is None, (name, got)
    assert not (tmp_path / "out").exists()


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


# --- issue #13 F2: outputs that cannot be written -------------------------------------------

LATENTS = np.zeros((3, 8), np.float32)  # for `decode` with the tiny model (latent size 8)


def writing_runs(out: Path, model: Path, latents: Path) -> dict[str, list]:
    """Every command that writes, writing into (or as) `out`."""
    m = ["--model", model]
    return {
        "transfer": ["transfer", MARY, MARY, "-o", out, *m],
        "reconstruct": ["reconstruct", MARY, "-o", out, "--html", *m],
        "encode": ["encode", MARY, "-o", out / "mary.npy", *m],
        "decode": ["decode", latents, "-o", out / "z.mid", "--html", *m],
        "sample": ["sample", "-o", out, "-n", "1", "--bars", "2", "--html", *m],
        "interpolate": ["interpolate", MARY, MARY, "-o", out, "--steps", "2", "--html", *m],
        "demo": ["demo", out, *m],
        "export": ["export", model, out / "small.json"],
        "plot-schedule": ["plot-schedule", "-o", out / "schedule.png", "--steps", "50"],
    }


def _fail_writes(monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """Make the write layer fail as a read-only folder would (no temporary file can be made),
    or a full disk (no file can be committed; with "full_disk_in_assets", the disk fills up
    after a page's first asset file). Root ignores chmod, so this is how to test it."""
    import errno

    import tvae.files

    if how == "read_only":
        def no_permission(*args: object, **kwargs: object) -> None:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

        monkeypatch.setattr(tvae.files.tempfile, "mkstemp", no_permission)
        return
    replace, assets_done = os.replace, []

    def full(src: str, dst: str) -> None:
        in_assets = Path(dst).parent.name == "assets"
        if how == "full_disk" or (in_assets and assets_done):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        assets_done.extend([dst] if in_assets else [])
        replace(src, dst)

    monkeypatch.setattr(tvae.files.os, "replace", full)


def written_problem(out: Path) -> str | None:
    """What a failed command left in `out` that looks valid but is not: a temporary file, or
    a page without its player scripts."""
    from tvae.render.page import SCRIPTS

    if not out.exists():
        return None
    files = [p for p in out.rglob("*") if p.is_file()]
    if any(p.name.endswith(".tmp") for p in files):
        return f"temporary files left: {files}"
    for page in (p for p in files if p.suffix == ".html"):
        if "<midi-player" in page.read_text() and not all(
                (page.parent / "assets" / name).is_file() for name in SCRIPTS):
            return f"{page.name} was written without its player scripts"
    return None


PAGE_COMMANDS = ("transfer", "reconstruct", "decode", "sample", "interpolate", "demo")
FAILURES = [(command, how) for command in writing_runs(Path(), Path(), Path())
            for how in ("under_a_file", "read_only", "full_disk", "full_disk_in_assets")
            if how != "full_disk_in_assets" or command in PAGE_COMMANDS]


@pytest.mark.parametrize(("command", "how"), FAILURES)
def test_unwritable_outputs_are_one_line(command: str, how: str, tiny_model: Path,
                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every writing command, into a folder under a file (real), a read-only folder or a full
    disk (simulated in the write layer), also one that fills up halfway through a page's
    assets: exit 2, one line naming the output path and the reason, and nothing left that
    looks valid but is not (no temporary file, no page without its player scripts)."""
    latents = tmp_path / "z.npy"
    np.save(latents, LATENTS)
    blocker = tmp_path / "afile"
    blocker.write_bytes(b"the user's file")
    out = blocker / "out" if how == "under_a_file" else tmp_path / "out"
    args = writing_runs(out, tiny_model, latents)[command]
    if how != "under_a_file":
        _fail_writes(monkeypatch, how)
    got = invoke(args)
    assert contract_problem(got, "error", out) is None, got
    reason = {"under_a_file": f"{blocker} is a file, not a folder",
              "read_only": "Permission denied"}.get(how, "No space left on device")
    assert reason in got.err, got.err
    assert written_problem(out) is None
    assert blocker.read_bytes() == b"the user's file"


def test_a_254_byte_file_name_is_one_line(tiny_model: Path, tmp_path: Path) -> None:
    """An input name of 254 bytes is legal, but the outputs named after it are too long."""
    long_name = tmp_path / ("a" * 250 + ".mid")
    long_name.write_bytes(MARY.read_bytes())
    out = tmp_path / "out"
    for args in (["transfer", long_name, MARY, "-o", out], ["reconstruct", long_name, "-o", out],
                 ["encode", long_name, "-o", out], ["interpolate", long_name, MARY, "-o", out]):
        got = invoke([*args, "--model", tiny_model])
        assert contract_problem(got, "error", out) is None, got
        assert "File name too long" in got.err, got.err
        assert written_problem(out) is None


@pytest.mark.parametrize("command", list(writing_runs(Path(), Path(), Path())))
def test_an_output_name_too_long_is_one_line(command: str, tiny_model: Path,
                                             tmp_path: Path) -> None:
    """A 300-byte folder name (over the file system's 255): asking whether it exists raises,
    which gave tracebacks everywhere an output path was checked."""
    latents = tmp_path / "z.npy"
    np.save(latents, LATENTS)
    for out in (tmp_path / ("d" * 300), tmp_path / ("d" * 300) / "deeper"):
        got = invoke(writing_runs(out, tiny_model, latents)[command])
        assert contract_problem(got, "error", out) is None, got
        assert "File name too long" in got.err, got.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["z.npy"]


def test_a_model_name_too_long_is_one_line(tmp_path: Path) -> None:
    model = tmp_path / ("m" * 300)
    for args in (["reconstruct", MARY, "-o", tmp_path / "out", "--model", model],
                 ["export", model, tmp_path / "small.json"]):
        got = invoke(args)
        assert contract_problem(got, "error", model) is None, got
        assert "File name too long" in got.err, got.err
    assert not list(tmp_path.iterdir())
