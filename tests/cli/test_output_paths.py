"""Outputs that cannot be written: every writing command, into a folder under a
file, a read-only folder, a full disk or an over-long name, gives one error line naming the path
and leaves nothing that looks valid but is not."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from cli_contract import MARY, contract_problem, invoke

pytestmark = pytest.mark.usefixtures("torch_one_thread")


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
def test_unwritable_outputs_are_one_line(command: str, how: str, tiny_ckpt: Path,
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
    args = writing_runs(out, tiny_ckpt, latents)[command]
    if how != "under_a_file":
        _fail_writes(monkeypatch, how)
    got = invoke(args)
    assert contract_problem(got, "error", out) is None, got
    reason = {"under_a_file": f"{blocker} is a file, not a folder",
              "read_only": "Permission denied"}.get(how, "No space left on device")
    assert reason in got.err, got.err
    assert written_problem(out) is None
    assert blocker.read_bytes() == b"the user's file"


def test_a_254_byte_file_name_is_one_line(tiny_ckpt: Path, tmp_path: Path) -> None:
    """An input name of 254 bytes is legal, but the outputs named after it and a suffix are
    too long; an output of a legal length (254 bytes: encode's .npy) is written, though its
    temporary file's name would be 14 bytes longer (issue 20)."""
    long_name = tmp_path / ("a" * 250 + ".mid")
    long_name.write_bytes(MARY.read_bytes())
    out = tmp_path / "out"
    for args in (["transfer", long_name, MARY, "-o", out], ["reconstruct", long_name, "-o", out],
                 ["interpolate", long_name, MARY, "-o", out]):
        got = invoke([*args, "--model", tiny_ckpt])
        assert contract_problem(got, "error", out) is None, got
        assert "File name too long" in got.err, got.err
        assert written_problem(out) is None
    got = invoke(["encode", long_name, "-o", out, "--model", tiny_ckpt])
    assert contract_problem(got, "ok") is None, got
    assert [p.name for p in out.iterdir()] == ["a" * 250 + ".npy"]


@pytest.mark.parametrize("command", list(writing_runs(Path(), Path(), Path())))
def test_an_output_name_too_long_is_one_line(command: str, tiny_ckpt: Path,
                                             tmp_path: Path) -> None:
    """A 300-byte folder name (over the file system's 255): asking whether it exists raises,
    which gave tracebacks everywhere an output path was checked."""
    latents = tmp_path / "z.npy"
    np.save(latents, LATENTS)
    for out in (tmp_path / ("d" * 300), tmp_path / ("d" * 300) / "deeper"):
        got = invoke(writing_runs(out, tiny_ckpt, latents)[command])
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


def test_a_trailing_slash_means_a_folder(tiny_ckpt: Path, tmp_path: Path) -> None:
    """`-o newdir/` makes the folder and writes inside it, never a file named `newdir`."""
    got = invoke(["encode", MARY, "-o", f"{tmp_path / 'latents'}/", "--model", tiny_ckpt])
    assert got.code == 0 and (tmp_path / "latents" / "mary.npy").is_file()
    got = invoke(["decode", tmp_path / "latents" / "mary.npy", "-o", f"{tmp_path / 'midi'}/",
                  "--model", tiny_ckpt])
    assert got.code == 0 and (tmp_path / "midi" / "mary.mid").is_file()


def test_encode_never_writes_two_outputs_to_one_file(tiny_ckpt: Path, tmp_path: Path) -> None:
    """Two songs of one name from two folders, and x.mid's --sigma beside x_sigma.mid's means,
    are refused before anything is written."""
    import shutil

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        shutil.copy(MARY, tmp_path / name / "song.mid")
    out = tmp_path / "out"
    got = invoke(["encode", tmp_path / "a" / "song.mid", tmp_path / "b" / "song.mid", "-o", out,
                  "--model", tiny_ckpt])
    assert contract_problem(got, "error", out / "song.npy") is None, got
    assert "would both be written" in got.err and not out.exists()
    shutil.copy(MARY, tmp_path / "x.mid")
    shutil.copy(MARY, tmp_path / "x_sigma.mid")
    got = invoke(["encode", tmp_path / "x.mid", tmp_path / "x_sigma.mid", "-o", out, "--sigma",
                  "--model", tiny_ckpt])
    assert contract_problem(got, "error", out / "x_sigma.npy") is None, got
    assert not out.exists()
    got = invoke(["encode", tmp_path / "x.mid", tmp_path / "a" / "song.mid", "-o", out,
                  "--sigma", "--model", tiny_ckpt])  # distinct names: all four written
    assert got.code == 0 and sorted(p.name for p in out.iterdir()) == [
        "song.npy", "song_sigma.npy", "x.npy", "x_sigma.npy"]


@pytest.mark.parametrize("command", ["encode", "decode"])
def test_a_fifo_at_the_output_is_never_replaced(command: str, tiny_ckpt: Path,
                                                tmp_path: Path) -> None:
    """A FIFO (or a device node) where the output would go stays as it is: one line, exit 2,
    and no hang (nothing opens it)."""
    fifo = tmp_path / ("out.npy" if command == "encode" else "out.mid")
    os.mkfifo(fifo)
    latents = tmp_path / "z.npy"
    np.save(latents, LATENTS)
    args = [MARY] if command == "encode" else [latents]
    got = invoke([command, *args, "-o", fifo, "--model", tiny_ckpt])
    assert contract_problem(got, "error", fifo) is None, got
    assert "never replaced" in got.err and fifo.is_fifo()


def test_file_names_that_are_not_utf8_write_pages_and_midi(tiny_ckpt: Path,
                                                           tmp_path: Path) -> None:
    """A name with bytes that are not UTF-8 (legal on Linux) used to crash page and MIDI
    writing; the files keep their names, the pages and tracks show U+FFFD."""
    import shutil

    song = tmp_path / os.fsdecode(b"\xff\xfe.mid")
    shutil.copy(MARY, song)
    latents = tmp_path / os.fsdecode(b"\xff.npy")
    np.save(latents, LATENTS)
    m = ["--model", tiny_ckpt]
    for args in (["transfer", song, song, "-o", tmp_path / "t", *m],
                 ["reconstruct", song, "-o", tmp_path / "r", "--html", *m],
                 ["interpolate", song, song, "-o", tmp_path / "i", "--steps", "2", "--html", *m],
                 ["decode", latents, "-o", f"{tmp_path / 'd'}/", "--html", *m]):
        got = invoke(args)
        assert contract_problem(got, "ok") is None, (args[0], got)
    for folder in ("t", "r", "i", "d"):
        html = next((tmp_path / folder).glob("*.html")).read_text(encoding="utf-8")
        assert "\ufffd" in html
    assert (tmp_path / "d" / os.fsdecode(b"\xff.mid")).is_file()  # the name kept on disk


def test_demo_takes_o_like_every_other_command(tiny_ckpt: Path, tmp_path: Path) -> None:
    got = invoke(["demo", "-o", tmp_path / "site", "--model", tiny_ckpt])
    assert contract_problem(got, "ok") is None, got
    assert (tmp_path / "site" / "index.html").is_file()
    got = invoke(["demo", tmp_path / "a", "-o", tmp_path / "b", "--model", tiny_ckpt])
    assert got.code == 2 and "two output folders" in got.err


def test_no_output_is_written_over_an_input(tiny_ckpt: Path, tmp_path: Path) -> None:
    """An output whose name is one of the command's inputs (`encode x.mid -o x.mid`, B named
    A_reconstruction.mid, a prompt named like a sample, a link to the input) used to replace
    the input with the output; it is refused before anything is written, the input kept."""
    import shutil

    for name in ("a.mid", "a_reconstruction.mid", "sample_0.mid"):
        shutil.copy(MARY, tmp_path / name)
    (tmp_path / "link.npy").symlink_to(tmp_path / "a.mid")
    m = ["--model", tiny_ckpt]
    for args, target in (
            (["encode", tmp_path / "a.mid", "-o", tmp_path / "a.mid", *m], "a.mid"),
            (["encode", tmp_path / "a.mid", "-o", tmp_path / "link.npy", *m], "link.npy"),
            (["transfer", tmp_path / "a.mid", tmp_path / "a_reconstruction.mid", "-o",
              tmp_path, *m], "a_reconstruction.mid"),
            (["sample", "--prompt", tmp_path / "sample_0.mid", "--bars", "9", "-n", "1", "-o",
              tmp_path, *m], "sample_0.mid")):
        got = invoke(args)
        assert contract_problem(got, "error", tmp_path / target) is None, (args[0], got)
        assert "is an input" in got.err
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.mid", "a_reconstruction.mid", "link.npy", "sample_0.mid"]
    assert all((tmp_path / name).read_bytes() == MARY.read_bytes()
               for name in ("a.mid", "a_reconstruction.mid", "sample_0.mid"))


def test_decode_by_default_never_replaces_the_song_it_was_encoded_from(
        tiny_ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`tvae encode song.mid` then `tvae decode song.npy` used to write the decoded melody
    over song.mid; the default output never replaces a file, -o names one to replace."""
    import shutil

    monkeypatch.chdir(tmp_path)
    shutil.copy(MARY, "song.mid")
    assert invoke(["encode", "song.mid", "--model", tiny_ckpt]).code == 0
    got = invoke(["decode", "song.npy", "--model", tiny_ckpt])
    assert contract_problem(got, "error", Path("song.mid")) is None, got
    assert Path("song.mid").read_bytes() == MARY.read_bytes()
    got = invoke(["decode", "song.npy", "-o", "song.mid", "--model", tiny_ckpt])
    assert contract_problem(got, "ok") is None, got


def test_export_and_prior_never_write_over_their_checkpoint(tiny_ckpt: Path,
                                                           tmp_path: Path) -> None:
    """`tvae export X X` (or `X.json X.safetensors`, or a run folder and its best) used to
    replace a checkpoint with its inference-only copy, losing its optimizer state; `tvae prior`
    refuses to write over a training checkpoint (with optimizer state) too."""
    import torch

    from tvae.model.checkpoint import load_checkpoint, save_checkpoint

    run = tmp_path / "run"
    run.mkdir()
    model = load_checkpoint(tiny_ckpt)[0]
    save_checkpoint(run / "best", model,
                    optimizer=torch.optim.AdamW(model.parameters()))  # (no steps yet)
    assert json.loads((run / "best.json").read_text())["optimizer_groups"]
    before = (run / "best.json").read_bytes()
    for args in (["export", run / "best.json", run / "best.json"],
                 ["export", run / "best", run / "best.safetensors"],
                 ["export", run, run / "best"],
                 ["prior", tmp_path, "--model", run, "-o", run / "best"]):
        got = invoke(args)
        assert contract_problem(got, "error", run / "best.json") is None, (args, got)
        assert "is an input" in got.err
    assert (run / "best.json").read_bytes() == before
    assert sorted(p.name for p in run.iterdir()) == ["best.json", "best.safetensors"]
