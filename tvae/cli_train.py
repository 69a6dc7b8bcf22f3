"""`tvae train`, `tvae evaluate` and `tvae plot-schedule`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from tvae.cli import handle_errors, main
from tvae.cli_options import build_config, config_options
from tvae.config import DataConfig, GridConfig, ModelConfig, TrainConfig


@main.command()
@click.argument("midi_dir", type=click.Path(file_okay=False))
@click.option("--out", "-o", "out", default="runs/tvae", show_default=True,
              help="Run folder: config, metrics, plots and checkpoints.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@click.option("--label-column", default=None,
              help="Train a classifier head on this manifest column ('folder': sub-folder names).")
@click.option("--init-from", default=None, help="Start from this checkpoint's weights (same "
              "model config) with a fresh optimizer and schedules: fine-tuning.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@config_options(ModelConfig, DataConfig, TrainConfig, GridConfig)
@handle_errors
def train(midi_dir: str, out: str, resume: bool, label_column: str | None,
          init_from: str | None, quiet: bool, **options: object) -> None:
    """Train a Transformer VAE on a folder of MIDI files (or an exported corpus)."""
    from tvae.train import train as run_training

    trainer = run_training(
        midi_dir, out, grid=build_config(GridConfig, options),
        model=build_config(ModelConfig, options), data=build_config(DataConfig, options),
        train=build_config(TrainConfig, options), label_column=label_column, resume=resume,
        init_from=init_from,
        command=["tvae", *sys.argv[1:]], progress=not quiet)
    click.echo(f"done: {trainer.state.step} steps; checkpoints in {Path(out)}/best.json and "
               f"{Path(out)}/last.json")


@main.command()
@click.argument("midi_dir", type=click.Path(file_okay=False))
@click.option("--model", "model_path", default=None,
              help="Checkpoint (NAME.json, or a run folder). Default: the bundled model.")
@click.option("--bars", type=int, default=8, show_default=True, help="Bars per window.")
@click.option("--split", default=None, help="Manifest split to use (default: 'test' when the "
              "folder has a manifest, else every file).")
@click.option("--max-windows", type=int, default=0, help="Evaluate at most this many windows.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@handle_errors
def evaluate(midi_dir: str, model_path: str | None, bars: int, split: str | None,
             max_windows: int, as_json: bool) -> None:
    """Teacher-forced and free-running accuracy, and KL of repeated vs new bars."""
    from tvae.evaluate import evaluate_folder

    result = evaluate_folder(midi_dir, model_path, bars, split, max_windows,
                             progress=not as_json)
    if as_json:
        click.echo(json.dumps(result))
        return
    for key, value in result.items():
        click.echo(f"{key:20s} {value}")


@main.command("plot-schedule")
@click.option("--out", "-o", "out", default="schedule.png", show_default=True,
              help="PNG file to write.")
@click.option("--steps", type=int, default=10000, show_default=True, help="Training steps drawn.")
@click.option("--batches-per-epoch", type=int, default=1000, show_default=True,
              help="N_b of the logistic schedule.")
@config_options(TrainConfig)
@handle_errors
def plot_schedule_cmd(out: str, steps: int, batches_per_epoch: int, **options: object) -> None:
    """Draw the teacher-forcing (p_tf) and KL-weight (beta) schedules over training."""
    from tvae.plots import plot_schedule

    cfg = build_config(TrainConfig, options)
    path = plot_schedule({cfg.tf_schedule: cfg}, steps, batches_per_epoch, out)
    click.echo(f"wrote {path}")


@main.command()
@click.argument("checkpoint", type=click.Path())
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--float32", "full", is_flag=True, help="Keep float32 weights (default: float16, "
              "half the size).")
@handle_errors
def export(checkpoint: str, out: str, full: bool) -> None:
    """Write an inference-only copy of CHECKPOINT to OUT (.json + .safetensors)."""
    from tvae.checkpoint import export_checkpoint

    path = export_checkpoint(checkpoint, out, half=not full)
    size = path.with_suffix(".safetensors").stat().st_size
    click.echo(f"wrote {path} and {path.with_suffix('.safetensors')} ({size / 1e6:.1f} MB)")
