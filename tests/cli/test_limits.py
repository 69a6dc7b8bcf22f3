"""The inference side's limits: bounded costs on long inputs, output paths that cannot be
used, and the README's limits table; on the tiny seeded model of test_inference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from cli_contract import MARY, invoke
from click.testing import CliRunner

from tests.paths import DATA
from tvae.cli.main import main
from tvae.errors import TvaeError
from tvae.inference import TrainedModel, load_model
from tvae.melody import Melody, Note
from tvae.midi import read_melody


@pytest.fixture(scope="module")
def tiny(tiny_ckpt: Path) -> TrainedModel:
    return load_model(tiny_ckpt)


def _melody(n_bars: int) -> Melody:
    """A seeded 4/4 melody of `n_bars` bars of eighths and quarters."""
    rng = np.random.default_rng(n_bars)
    notes, t = [], 0
    while t < 16 * n_bars:
        d = min(int(rng.choice([2, 4])), 16 * n_bars - t)
        notes.append(Note(t, int(rng.integers(60, 72)), d))
        t += d
    return Melody(tuple(notes), (4, 4), 100.0, 0, f"m{n_bars}")



def _windowed(tiny: TrainedModel, bars: int = 4) -> TrainedModel:
    """The tiny model as if trained on `bars`-bar windows (it then reads songs window by window)."""
    model = TrainedModel(tiny.model, {}, tiny.path)
    model.window = bars
    return model


def test_long_songs_are_encoded_in_bounded_batches(tiny: TrainedModel,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A 100-bar song through a 4-bar window, 16 windows at a time: the posteriors of the
    one-batch encoding, but no batch over 16 windows (one batch of all 96 before)."""
    import tvae.inference as inference

    model, melody = _windowed(tiny), _melody(100)
    tokens, meters = model._tensors(melody)
    mu_all, logvar_all = model.model.encode_windowed(tokens, meters, 4)
    batches: list[int] = []
    encode = model.model.encode

    def recorded(tokens: torch.Tensor, meters: torch.Tensor):  # noqa: ANN202
        batches.append(tokens.shape[0])
        return encode(tokens, meters)

    monkeypatch.setattr(inference, "ENCODE_CHUNK", 16)
    monkeypatch.setattr(model.model, "encode", recorded)
    mu, sigma = model.posterior(melody)
    assert mu.shape == (100, 8) and max(batches) <= 16, batches
    torch.testing.assert_close(torch.as_tensor(mu), mu_all[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.as_tensor(sigma), (0.5 * logvar_all[0]).exp(), rtol=1e-5,
                               atol=1e-5)


def test_copy_sources_of_long_songs_are_found_in_chunks(tiny: TrainedModel,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Copy sources of 300 bars, 32 at a time: the sources found all at once, and no pointer
    matrix over more than 32 + copy_offsets bars (300 x 301 before)."""
    import tvae.inference as inference

    z = np.random.default_rng(1).standard_normal((300, 8)).astype(np.float32)
    z[150:160] = z[145:155]
    expected = tiny.copy_sources_of(z)
    sizes: list[int] = []
    log_pointer = tiny.model.log_pointer

    def recorded(zt: torch.Tensor, mask: torch.Tensor):  # noqa: ANN202
        sizes.append(zt.shape[1])
        return log_pointer(zt, mask)

    monkeypatch.setattr(inference, "COPY_CHUNK", 32)
    monkeypatch.setattr(tiny.model, "log_pointer", recorded)
    assert tiny.copy_sources_of(z) == expected
    assert max(sizes) <= 32 + tiny.model.config.copy_offsets, sizes


def _npy_header_only(path: Path, shape: tuple[int, ...], dtype: str = "<f4") -> Path:
    """A .npy file whose header claims `shape` but that holds no data: reading it would fail
    (or, were the data there, allocate it)."""
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(
            handle, {"descr": dtype, "fortran_order": False, "shape": shape})
    return path


def test_decode_checks_the_npy_header_before_reading(tiny_ckpt: Path, tmp_path: Path) -> None:
    """A 5,000-bar .npy is refused from its header, naming the file, like any shape or
    type decode cannot use; nothing is written."""
    cases = [(_npy_header_only(tmp_path / "long.npy", (5000, 8)), "5000 bars of latents"),
             (_npy_header_only(tmp_path / "wide.npy", (4, 10**9)), "shape (bars, 8)"),
             (_npy_header_only(tmp_path / "cube.npy", (4, 8, 2)), "2-D array"),
             (_npy_header_only(tmp_path / "objects.npy", (4, 8), "|O"), "2-D array of numbers")]
    for path, words in cases:
        out = tmp_path / "out.mid"
        r = CliRunner().invoke(main, ["decode", str(path), "-o", str(out), "--model",
                                      str(tiny_ckpt)])
        assert r.exit_code == 2 and r.stderr.startswith(f"error: {path}: "), r.stderr
        assert words in r.stderr and r.stderr.count("\n") == 1 and not out.exists(), r.stderr


def test_encode_into_a_folder_blocked_by_a_file_is_one_line(tiny_ckpt: Path,
                                                            tmp_path: Path) -> None:
    """`encode A B -o FILE` (or a folder under a file) gave a traceback."""
    blocker = tmp_path / "afile"
    blocker.write_bytes(b"the user's file")
    for out in (blocker, blocker / "deeper"):
        r = CliRunner().invoke(main, ["encode", str(DATA / "mary.mid"), str(DATA / "ode.mid"),
                                      "-o", str(out), "--model", str(tiny_ckpt)])
        assert r.exit_code == 2 and r.stderr.count("\n") == 1, r.stderr
        assert r.stderr.startswith(f"error: {out}: cannot write here: {blocker} is a file")
        assert blocker.read_bytes() == b"the user's file"


def test_decode_into_a_folder_writes_inside_it(tiny_ckpt: Path, tmp_path: Path) -> None:
    npy = tmp_path / "z.npy"
    np.save(npy, np.zeros((3, 8), np.float32))
    (tmp_path / "out").mkdir()
    r = CliRunner().invoke(main, ["decode", str(npy), "-o", str(tmp_path / "out"), "--html",
                                  "--model", str(tiny_ckpt)])
    assert r.exit_code == 0, r.output
    assert read_melody(tmp_path / "out" / "z.mid").n_bars <= 3
    assert (tmp_path / "out" / "z.html").is_file() and not (tmp_path / "out.mid").exists()


def test_demo_into_a_file_is_one_line(tiny_ckpt: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "site"
    blocker.write_bytes(b"x")
    r = CliRunner().invoke(main, ["demo", str(blocker), "--model", str(tiny_ckpt)])
    assert r.exit_code == 2 and r.stderr == f"error: {blocker}: cannot write here: {blocker} " \
        "is a file, not a folder\n", r.stderr


def test_readme_guarantees_state_the_limits_in_the_code() -> None:
    """The README's limits table quotes the values the code enforces."""
    from tvae.cli.infer import MAX_SAMPLES
    from tvae.config import MAX_BARS
    from tvae.inference import COPY_CHUNK, ENCODE_CHUNK, MAX_STEPS
    from tvae.latents import MAX_LATENT
    from tvae.midi import MAX_FILE_BYTES, MAX_LISTED_TRACKS, MAX_MERGED_PARTS

    text = (DATA.parent / "README.md").read_text()
    section = text[text.index("## Guarantees"):text.index("## The Python API")]
    from tvae.config import (
        MAX_COPY_OFFSETS,
        MAX_LAYERS,
        MAX_STEPS_PER_BAR,
        MAX_WIDTH,
    )
    from tvae.files import MAX_JSON_BYTES, MAX_JSON_DEPTH
    from tvae.model.checkpoint import MAX_PARAMETERS
    from tvae.model.weights_file import MAX_WEIGHTS_BYTES

    for value in (f"{MAX_BARS:,}", f"{MAX_FILE_BYTES // 2**20} MB", f"at most {MAX_MERGED_PARTS}",
                  f"| {MAX_LISTED_TRACKS} |", f"{MAX_SAMPLES:,}", f"{ENCODE_CHUNK} windows",
                  f"{COPY_CHUNK} bars", "2^31 - 1", f"steps per bar ≤ {MAX_STEPS_PER_BAR}",
                  f"≤ {MAX_LAYERS} layers", f"widths ≤ {MAX_WIDTH:,}",
                  f"copy offsets ≤ {MAX_COPY_OFFSETS}", f"JSON ≤ {MAX_JSON_BYTES // 2**20} MB",
                  f"{MAX_JSON_DEPTH} levels", f"weights ≤ {MAX_WEIGHTS_BYTES // 2**30} GB",
                  f"≤ {MAX_PARAMETERS:,} parameters", f"2 to {MAX_STEPS:,}",
                  f"within ±{MAX_LATENT:,.0f}", "`tvae.training.budget`"):
        assert value in section, value


def test_demo_examples_name_too_long_is_one_line(tiny_ckpt: Path, tmp_path: Path) -> None:
    examples = tmp_path / ("e" * 300)
    r = CliRunner().invoke(main, ["demo", str(tmp_path / "site"), "--examples", str(examples),
                                  "--model", str(tiny_ckpt)])
    assert r.exit_code == 2 and r.stderr.startswith(f"error: {examples}: missing example"), (
        r.stderr)
    assert r.stderr.count("\n") == 1 and not (tmp_path / "site").exists()


def test_export_into_an_existing_folder_is_one_line(tiny_ckpt: Path, tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["export", str(tiny_ckpt), str(tmp_path)])
    assert r.exit_code == 2 and r.stderr.startswith(f"error: {tmp_path}: is a folder"), r.stderr
    assert r.stderr.count("\n") == 1 and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [
    ["--d-model", "16384", "--enc-layers", "64", "--dec-layers", "64"],  # 3 TB of parameters
    ["--bars", "4096"],  # attention maps of 4096 x 4096 bars at batch 64
    ["--batch-size", "1048576"],
])
def test_a_run_that_cannot_fit_memory_is_refused_before_any_work(args: list[str],
                                                                  folk_corpus: Path,
                                                                  tmp_path: Path) -> None:
    """Each option within its range, the product beyond this machine: one line, exit 2,
    decided on the meta device (nothing allocated) before the data is read."""
    got = invoke(["train", folk_corpus, "--out", tmp_path / "run", *args])
    assert got.code == 2 and got.crash is None and "GiB for one step" in got.err, got
    assert not (tmp_path / "run" / "config.json").exists()


def test_counts_past_memory_are_refused_by_their_options(tiny_ckpt: Path, tmp_path: Path
                                                         ) -> None:
    for args in (["interpolate", MARY, MARY, "--steps", "100000000000"],
                 ["sample", "--seed", str(2**64), "-n", "1"],
                 ["train", tmp_path, "--num-threads", "4096"]):
        got = invoke([*args, "--model", tiny_ckpt] if args[0] != "train" else args)
        assert got.code == 2 and got.crash is None and "Traceback" not in got.err, (args, got)
    with pytest.raises(TvaeError, match="2 to 1000 steps"):
        load_model(tiny_ckpt).interpolate(_melody(2), _melody(2), steps=1001)
