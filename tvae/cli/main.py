"""The `tvae` command line: thin click commands over the Python API.

Every command turns a `TvaeError` into one line on stderr and exit code 2. Heavy imports (torch)
happen inside the commands that need them, so `tvae --help` and `tvae inspect` start fast.
"""

from __future__ import annotations

import json

import click

from tvae.cli import infer as cli_infer
from tvae.cli import prior as cli_prior
from tvae.cli import sample as cli_sample
from tvae.cli import train as cli_train
from tvae.cli.common import handle_errors


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tvae")
def main() -> None:
    """tvae: a bar-level Transformer VAE for melodies (Jiang et al., ICASSP 2020)."""


@main.command()
@click.argument("midi_file", type=click.Path())
@click.option("--track", type=int, default=None, help="Index of the track to read (default: "
              "the monophonic non-drum track with the most notes).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@handle_errors
def inspect(midi_file: str, track: int | None, as_json: bool) -> None:
    """Show what tvae reads from MIDI_FILE: track, meter, tempo, pickup, changes, bar grid."""
    from tvae.midi_report import describe, describe_text

    info = describe(midi_file, track)
    click.echo(json.dumps(info, indent=2) if as_json else describe_text(info))


@main.command()
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Export only the first N tunes (a fixed order spread over the collections).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes (default: all cores).")
@handle_errors
def corpus(out_dir: str, limit: int | None, workers: int | None) -> None:
    """Export music21's bundled ABC folk tunes to OUT_DIR as one MIDI file per usable tune.

    Writes OUT_DIR/<collection>/<id>.mid, manifest.csv (with the train/valid/test split) and
    summary.json. A rerun resumes where the last one stopped.
    """
    from tvae.data.corpus import export_corpus, format_summary

    click.echo(format_summary(export_corpus(out_dir, limit=limit, workers=workers)))


for command in (*cli_infer.COMMANDS, *cli_train.COMMANDS, *cli_prior.COMMANDS,
                *cli_sample.COMMANDS):  # each imports torch lazily
    main.add_command(command)
