"""Inference commands: transfer, encode, decode, reconstruct, interpolate, demo (`tvae sample`
is in tvae.cli.sample)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from tvae.cli.card_help import encode_help, transfer_help
from tvae.cli.common import handle_errors
from tvae.errors import TvaeError, TvaeWriteError
from tvae.files import check_folder, is_folder

MODEL_HELP = "Checkpoint (NAME.json or a run folder). Default: the model bundled with tvae."


def _bars(text: str) -> list[int]:
    """'1,2' (1-based, as the paper counts) -> [0, 1]."""
    try:
        bars = [int(x) - 1 for x in text.split(",") if x.strip()]
    except ValueError:
        raise TvaeError(f"--bars must be comma-separated bar numbers such as 1,2, got {text!r}"
                        ) from None
    if not bars or min(bars) < 0:
        raise TvaeError(f"--bars counts from 1, got {text!r}")
    return bars


def _meter(text: str) -> tuple[int, int]:
    try:
        num, den = (int(x) for x in text.split("/"))
    except ValueError:
        raise TvaeError(f"--meter must look like 4/4, got {text!r}") from None
    return num, den


@contextmanager
def _naming(a: str, b: str) -> Iterator[None]:
    """Name both input files in an error about the pair (e.g. different meters)."""
    try:
        yield
    except TvaeError as exc:
        if exc.path is None:
            raise TvaeError(exc.reason, f"{a}, {b}") from None
        raise


def _finite(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """Refuse NaN (which passes click's range checks) and infinities."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter("must be a finite number")
    return value


MAX_SAMPLES = 1000  # melodies one `tvae sample` draws at most


def _remember_device(ctx: click.Context, param: click.Parameter, value: str) -> str:
    ctx.meta["tvae_device"] = value
    return value


DEVICE_OPTION = click.option(
    "--device", default="cpu", show_default=True, expose_value=False, callback=_remember_device,
    help='Where the model runs: "cpu", "cuda", "cuda:1" or "auto" (CUDA when present).')


def _load(model_path: str | None):  # noqa: ANN202
    from tvae.devices import pick_device
    from tvae.inference import load_model

    device = pick_device(click.get_current_context().meta.get("tvae_device", "cpu"))
    return load_model(model_path, device=str(device))


def _open(path: Path) -> None:
    import webbrowser

    webbrowser.open(path.resolve().as_uri())


def _report(paths: list[Path]) -> None:
    for path in paths:
        click.echo(f"wrote {path}")


@click.command(help=transfer_help())
@click.argument("a", type=click.Path())
@click.argument("b", type=click.Path())
@click.option("-o", "--out", "out", default="tvae-output", show_default=True,
              help="Folder for the output MIDI files and the HTML page.")
@click.option("--bars", default="1", show_default=True,
              help="Bars of A to put into B, counted from 1 (the paper swaps bar 1).")
@click.option("--model", "model_path", default=None, help=MODEL_HELP)
@DEVICE_OPTION
@click.option("--open", "open_page", is_flag=True, help="Open the page in your browser.")
@handle_errors
def transfer(a: str, b: str, out: str, bars: str, model_path: str | None,
             open_page: bool) -> None:
    """Context transfer (help: `card_help.transfer_help`, quoting the bundled model's card)."""
    from tvae.midi import read_melody
    from tvae.outputs import transfer_items, write_results

    which = _bars(bars)
    check_folder(out)
    model = _load(model_path)  # first: its pitch range is the one notes are folded into
    mel_a, mel_b = read_melody(a, grid=model.grid), read_melody(b, grid=model.grid)
    a_stem, b_stem = Path(a).stem, Path(b).stem
    with _naming(a, b):
        items = transfer_items(model, mel_a, mel_b, a_stem, b_stem, which)
    page = f"{a_stem}_x_{b_stem}.html"
    paths = write_results(model, out, items, f"{a_stem} x {b_stem}: context transfer", page,
                          inputs=(a, b))
    _report(paths)
    if open_page:
        _open(paths[-1])


def _save_npy(array, path: Path) -> None:  # noqa: ANN001
    import io

    import numpy as np

    from tvae.files import write_bytes_atomic

    buffer = io.BytesIO()
    np.save(buffer, array.astype(np.float32))
    write_bytes_atomic(buffer.getvalue(), path)


def _sigma_path(path: Path) -> Path:
    return path.with_name(f"{path.stem}_sigma.npy")


def _check_distinct(midi_files: tuple[str, ...], paths: list[Path], sigma: bool) -> None:
    """Refuse, before any work, inputs whose outputs would land on one file (two songs of one
    name from two folders, or x.mid's standard deviations and x_sigma.mid's means), an output
    path where something other than a regular file stands, and one that is an input."""
    from tvae.files import check_not_an_input, check_replaceable

    written: dict[str, str] = {}
    for midi_file, path in zip(midi_files, paths, strict=True):
        for target in (path, _sigma_path(path)) if sigma else (path,):
            key = os.path.normpath(os.path.abspath(target))
            if key in written:
                raise TvaeWriteError(f"{written[key]} and {midi_file} would both be written "
                                     "here: give them different names, or encode them one at "
                                     "a time with -o", target)
            written[key] = midi_file
            check_replaceable(target)
            check_not_an_input(target, midi_files)


def _names_folder(out: str | None) -> bool:
    """`-o NAME/`: a trailing slash means a folder, made if missing, never a file NAME."""
    return bool(out) and out.endswith(("/", os.sep))


@click.command(help=encode_help())
@click.argument("midi_files", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--out", "out", default=None, help="Latents file (.npy) for one melody, a "
              "folder for several; default: each MIDI file's name with .npy, in the current "
              "folder.")
@click.option("--sigma", is_flag=True, help="Also write each posterior's standard deviations "
              "(NAME_sigma.npy, bars x Z) beside its means.")
@click.option("--model", "model_path", default=None, help=MODEL_HELP)
@DEVICE_OPTION
@handle_errors
def encode(midi_files: tuple[str, ...], out: str | None, sigma: bool,
           model_path: str | None) -> None:
    """Encode melodies (help: `card_help.encode_help`, quoting the bundled model's card)."""
    from tvae.midi import read_melody

    folder = Path(out) if out and (len(midi_files) > 1 or is_folder(out)
                                   or _names_folder(out)) else None
    # A file where the folder should be is refused before any work.
    check_folder(folder if folder is not None else Path(out or "x.npy").parent)
    paths = [(folder / f"{Path(f).stem}.npy") if folder else Path(out or f"{Path(f).stem}.npy")
             for f in midi_files]
    _check_distinct(midi_files, paths, sigma)  # no output overwrites another
    model = _load(model_path)  # first: its pitch range is the one notes are folded into
    # every file is read before anything is written
    melodies = [read_melody(path, grid=model.grid) for path in midi_files]
    for melody, path in zip(melodies, paths, strict=True):
        mu, std = model.posterior(melody)
        _save_npy(mu, path)  # makes the folder, or says in one line why it cannot
        click.echo(f"wrote {path}: {mu.shape[0]} bars x {mu.shape[1]} latent dims")
        if sigma:
            _save_npy(std, _sigma_path(path))
            click.echo(f"wrote {_sigma_path(path)}")
        kl = " ".join(f"{v:.2f}" for v in model.kl_bits_of(mu, std))
        click.echo(f"KL bits per bar: {kl}")
        copies = [f"{k + 1}={j + 1} ({w:.2f})" for k, (j, w) in enumerate(model.copy_choices(mu))
                  if j is not None]
        click.echo("decoded as copies (bar=source (pointer weight)): "
                   + (" ".join(copies) or "none"))


@click.command()
@click.argument("latents", type=click.Path())
@click.option("-o", "--out", "out", default=None, help="MIDI file to write (default: "
              "LATENTS's name with .mid, in the current folder; an existing file there is "
              "replaced only when -o names it).")
@click.option("--meter", default="4/4", show_default=True, help="Meter of the decoded melody.")
@click.option("--qpm", type=click.FloatRange(1.0, 1000.0), default=120.0, show_default=True,
              callback=_finite, help="Tempo, 1-1000 quarter notes per minute.")
@click.option("--model", "model_path", default=None, help=MODEL_HELP)
@DEVICE_OPTION
@click.option("--html", is_flag=True, help="Also write a playable page beside the MIDI.")
@handle_errors
def decode(latents: str, out: str | None, meter: str, qpm: float, model_path: str | None,
           html: bool) -> None:
    """Decode per-bar latents (.npy from `tvae encode`) to a melody, without teacher forcing."""
    from tvae.latents import load_latents
    from tvae.outputs import Item, write_results

    model = _load(model_path)
    z = load_latents(latents, model.model.config.d_latent)  # shape checked before reading
    path = Path(out or Path(latents).with_suffix(".mid").name)
    if is_folder(path) or _names_folder(out):  # -o FOLDER (or DIR/): the MIDI goes inside it
        path = path / Path(latents).with_suffix(".mid").name
    check_folder(path.parent)
    if out is None and path.exists():  # e.g. the song that `tvae encode` read these from
        raise TvaeWriteError("already exists, and the default output never replaces a file: "
                             "give -o to replace it or to write elsewhere", path)
    melody = model.decode(z, _meter(meter), qpm, title=path.stem)
    item = Item("Decoded", path.stem, melody, f"Decoded from {Path(latents).name}.")
    _report(write_results(model, path.parent, [item], f"{path.stem}: decoded",
                          f"{path.stem}.html" if html else None, inputs=(latents,)))


@click.command()
@click.argument("midi_file", type=click.Path())
@click.option("-o", "--out", "out", default="tvae-output", show_default=True, help="Folder.")
@click.option("--model", "model_path", default=None, help=MODEL_HELP)
@DEVICE_OPTION
@click.option("--html", is_flag=True, help="Also write a page with the input and its "
              "reconstruction.")
@handle_errors
def reconstruct(midi_file: str, out: str, model_path: str | None, html: bool) -> None:
    """Encode a melody and decode it again without teacher forcing."""
    from tvae.midi import read_melody
    from tvae.outputs import Item, write_results

    check_folder(out)
    model = _load(model_path)  # first: its pitch range is the one notes are folded into
    melody = read_melody(midi_file, grid=model.grid)
    stem = Path(midi_file).stem
    items = [Item("Input", stem, melody, write_midi=False),
             Item("Reconstruction", f"{stem}_reconstruction", model.reconstruct(melody),
                  "Decoded without teacher forcing from the input's latents.")]
    _report(write_results(model, out, items, f"{stem}: reconstruction",
                          f"{stem}_reconstruction.html" if html else None, inputs=(midi_file,)))


@click.command()
@click.argument("a", type=click.Path())
@click.argument("b", type=click.Path())
@click.option("-o", "--out", "out", default="tvae-output", show_default=True, help="Folder.")
@click.option("--steps", type=click.IntRange(2, 1000), default=5, show_default=True,
              help="Melodies from A to B, both ends included (2-1000).")
@click.option("--temperature", type=click.FloatRange(0.0, 100.0), default=0.0,
              show_default=True, callback=_finite,
              help="Step sampling temperature of the decoding (0: greedy).")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True,
              help="Seed of the sampling when --temperature > 0.")
@click.option("--model", "model_path", default=None, help=MODEL_HELP)
@DEVICE_OPTION
@click.option("--html", is_flag=True, help="Also write a page with the interpolation.")
@handle_errors
def interpolate(a: str, b: str, out: str, steps: int, temperature: float, seed: int,
                model_path: str | None, html: bool) -> None:
    """Interpolate from A to B, per bar on the sphere, decoding each step free-running."""
    from tvae.midi import read_melody
    from tvae.outputs import Item, write_results

    check_folder(out)
    model = _load(model_path)  # first: its pitch range is the one notes are folded into
    mel_a, mel_b = read_melody(a, grid=model.grid), read_melody(b, grid=model.grid)
    a_stem, b_stem = Path(a).stem, Path(b).stem
    with _naming(a, b):
        melodies = model.interpolate(mel_a, mel_b, steps, temperature=temperature, seed=seed)
    items = [Item(f"Step {i + 1} of {steps}", f"{a_stem}_to_{b_stem}_{i + 1}", m)
             for i, m in enumerate(melodies)]
    _report(write_results(model, out, items, f"{a_stem} to {b_stem}: interpolation",
                          f"{a_stem}_to_{b_stem}.html" if html else None, inputs=(a, b)))


@click.command()
@click.argument("out_dir", type=click.Path(), required=False)
@click.option("-o", "--out", "out", default=None, help="Folder of the demo site, as every other "
              "command takes it (default: tvae-demo; OUT_DIR as an argument works too).")
@click.option("--examples", default=None,
              help="Folder with mary.mid, jingle.mid, twinkle.mid and ode.mid (default: the "
              "copies shipped in the package, so the demo works from any folder).")
@click.option("--model", "model_path", default=None, help=MODEL_HELP)
@DEVICE_OPTION
@handle_errors
def demo(out_dir: str | None, out: str | None, examples: str | None, model_path: str | None
         ) -> None:
    """Build the demo site: context transfers, reconstructions, samples, an interpolation."""
    from tvae.demo import build_demo

    if out_dir and out and out_dir != out:
        raise TvaeError(f"two output folders given ({out_dir} and -o {out}): give one")
    page = build_demo(out or out_dir or "tvae-demo", examples, _load(model_path), say=click.echo)
    click.echo(f"wrote the demo site: {page}")


# added to `tvae.cli.main`
COMMANDS = (transfer, encode, decode, reconstruct, interpolate, demo)
