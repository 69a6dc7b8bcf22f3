"""`tvae prepare`, `tvae train`, `tvae evaluate` and `tvae plot-schedule`."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from tvae.cli.common import handle_errors
from tvae.cli.infer import DEVICE_OPTION
from tvae.cli.options import build_config, config_options
from tvae.config import MAX_BARS, DataConfig, GridConfig, ModelConfig, TrainConfig
from tvae.errors import TvaeError


def _without_option(args: list[str], flag: str) -> list[str]:
    """`args` without `flag VALUE` / `flag=VALUE`."""
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == flag:
            skip = True
        elif not arg.startswith(flag + "="):
            kept.append(arg)
    return kept


@click.command()
@click.argument("midi_dir", type=click.Path())
@click.argument("out_dir", type=click.Path())  # a file in the way: one `error:` line
@click.option("--shard", default="0/1", show_default=True,
              help="I/N: prepare only the files whose path hashes to shard I of N (run the N "
              "shards on different machines, then train on their folders).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Reader processes (default: all cores).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@config_options(GridConfig, DataConfig, skip=("bars", "stride", "transpose", "min_bars"))
@handle_errors
def prepare(midi_dir: str, out_dir: str, shard: str, workers: int | None, quiet: bool,
            **options: object) -> None:
    """Encode a MIDI folder (or manifest .csv) once into memory-mapped arrays for training.

    Writes OUT_DIR/shard-I-of-N/ (tokens.npy, offsets.npy, meters.npy, pickups.npy, qpms.npy,
    manifest.csv, skipped.csv, prepared.json); `tvae train OUT_DIR` trains on every shard in it.
    """
    from tvae.data.dataset import format_skipped
    from tvae.data.prepare import parse_shard, prepare_folder

    info = prepare_folder(midi_dir, out_dir, grid=build_config(GridConfig, options),
                          data=build_config(DataConfig, options), shard=parse_shard(shard),
                          workers=workers, progress=not quiet)
    click.echo(f"{info['folder']}: {info['songs']} songs, {info['bars']} bars from "
               f"{info['files']} files; {format_skipped(info['skipped'])}")


def _checkpoint_bases(init_from: str, bases: dict[type, object]) -> dict[type, object]:
    """With --init-from, the grid and model options not given (nor in --config) are the
    checkpoint's, not today's defaults (which may add parts it lacks), except the lead-in
    head, which a fine-tune leaves out unless --lead-in asks for it (fit it again afterwards)."""
    from dataclasses import replace

    from tvae.model.checkpoint import checkpoint_configs

    grid, model = checkpoint_configs(init_from)
    defaults = ModelConfig()
    return {GridConfig: grid,
            ModelConfig: replace(model, trained_bars=defaults.trained_bars,
                                 lead_in=defaults.lead_in), **bases}


def _config_file(path: str | None) -> tuple[dict[type, object], tuple[str, ...]]:
    """The configs of a run's config.json (or any JSON with grid/model/data/train sections) and
    its data folders; nothing when `path` is None."""
    if path is None:
        return {}, ()
    from tvae.config import config_from_dict
    from tvae.files import read_json
    from tvae.model.legacy import legacy_fields, legacy_model_fields

    saved = read_json(path, "config")
    if not isinstance(saved, dict):
        raise TvaeError("the config must be a JSON object", path)
    sections = {"grid": GridConfig, "model": ModelConfig, "data": DataConfig, "train": TrainConfig}
    bases: dict[type, object] = {}
    for key, cls in sections.items():
        if key in saved:
            try:
                value = (legacy_model_fields(saved[key]) if key == "model"
                         else legacy_fields(key, saved[key]))
                bases[cls] = config_from_dict(cls, value)
            except TvaeError as exc:
                raise TvaeError(f"config section '{key}': {exc.reason}", path) from None
    folders = saved.get("data_dir")
    if isinstance(folders, str):
        return bases, (folders,)
    if isinstance(folders, list):
        return bases, tuple(f for f in folders if isinstance(f, str))
    return bases, ()


@click.command()
@click.argument("midi_dir", nargs=-1, type=click.Path(file_okay=False))
@click.option("--config", "config_path", default=None, type=click.Path(dir_okay=False),
              help="Start from the configs in this JSON (a run's config.json); options given "
              "here override it, and MIDI_DIR defaults to its data folder.")
@click.option("--out", "-o", "out", default="runs/tvae", show_default=True,
              help="Run folder: config, metrics, plots and checkpoints.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint "
              "(its data folder and configs come from its config.json; only --epochs, --max-steps, "
              "--max-minutes, --patience and --num-threads may be given again).")
@click.option("--label-column", default=None,
              help="Train a classifier head on this manifest column ('folder': sub-folder names).")
@click.option("--init-from", default=None, help="Start from this checkpoint's weights with a "
              "fresh optimizer and schedules: fine-tuning. Model options not given are the "
              "checkpoint's (--dropout may differ; the repeat and edit options may be added).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--nproc", type=click.IntRange(min=1), default=None,
              help="Train with this many processes (DistributedDataParallel; one GPU each on "
              "CUDA): starts torch.distributed.run. The global batch stays --batch-size.")
@click.option("--compile", "compile_model", is_flag=True,
              help="Run the training step through torch.compile.")
@config_options(ModelConfig, DataConfig, TrainConfig, GridConfig)
@handle_errors
def train(midi_dir: tuple[str, ...], config_path: str | None, out: str, resume: bool,
          label_column: str | None, init_from: str | None, quiet: bool, nproc: int | None,
          compile_model: bool, **options: object) -> None:
    """Train a Transformer VAE on a folder of MIDI files (or an exported corpus), or on the
    folders `tvae prepare` wrote (shard folders, or the folder holding them)."""
    if nproc is not None:
        from tvae.training.distributed import launch

        sys.exit(launch(nproc, _without_option(sys.argv[1:], "--nproc")))
    from tvae.devices import pick_device
    from tvae.training.run import train as run_training

    if resume:  # the run's own config.json says what it trains on: nothing may say otherwise
        given = [flag for flag, value in (("--config", config_path), ("--label-column",
                 label_column), ("--init-from", init_from)) if value]
        if given:
            raise TvaeError(f"--resume continues a run from its own config.json; drop "
                            f"{', '.join(given)}")
        if midi_dir:
            _check_same_data(Path(out), midi_dir)
    bases, data_dirs = _config_file(config_path)
    if init_from is not None:
        bases = _checkpoint_bases(init_from, bases)
    midi_dir = midi_dir or data_dirs
    if not midi_dir and not resume:  # --resume reads it from the run's config.json
        raise TvaeError("give MIDI_DIR (a folder of MIDI files), or --config with a data folder")
    configs = {cls: build_config(cls, options, bases.get(cls))
               for cls in (GridConfig, ModelConfig, DataConfig, TrainConfig)}
    pick_device(configs[TrainConfig].device)  # refused before anything is read
    limits = None
    if resume:  # only the run's limits may change; anything else is refused in train()
        limits = {k: v for k, v in options.items() if v is not None}
    trainer = run_training(
        midi_dir[0] if len(midi_dir) == 1 else list(midi_dir), out,  # (ignored with --resume)
        grid_config=configs[GridConfig], model_config=configs[ModelConfig],
        data_config=configs[DataConfig], train_config=configs[TrainConfig],
        label_column=label_column, resume=resume,
        init_from=init_from,
        command=["tvae", *sys.argv[1:]], progress=not quiet, compile_model=compile_model,
        limits=limits)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one line for all the ranks
        click.echo(f"done: {trainer.state.step} steps; checkpoints in {Path(out)}/best.json "
                   f"and {Path(out)}/last.json. For samples with form, fit a learned prior: "
                   f"tvae prior {' '.join(midi_dir) or 'MIDI_DIR'} --model {Path(out)} "
                   f"-o {Path(out) / 'with_prior'}")
    if "WORLD_SIZE" in os.environ:
        # A torchrun rank whose run finished: every file is written and closed and the process
        # group is gone. Leave without the interpreter's finalization, where gloo's C++ threads
        # are destroyed in no fixed order and now and then abort the process (SIGABRT).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


@click.command()
@click.argument("midi_dir", type=click.Path(file_okay=False))
@click.option("--model", "model_path", default=None,
              help="Checkpoint (NAME.json, or a run folder). Default: the bundled model.")
@click.option("--bars", type=click.IntRange(0, MAX_BARS), default=0, show_default=True,
              help="Bars per window (0: the window the model was trained on, so repeats as far "
              "back as its copy path reaches are counted).")
@click.option("--split", default=None, help="Manifest split to use (default: 'test' when the "
              "folder has a manifest, else every file).")
@click.option("--max-windows", type=int, default=0, help="Evaluate at most this many windows.")
@click.option("--metrics", type=click.IntRange(min=0), default=0, show_default=True,
              help="Also compare muspy's musical metrics (pitch range, pitch-class entropy, "
              "scale and groove consistency, empty-beat rate) of this many songs' first --bars "
              "bars, their reconstructions and as many prior samples (0: off).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--skipped", "skipped_csv", default=None, type=click.Path(dir_okay=False),
              help="Write the files skipped and why to this CSV (columns path, reason).")
@click.option("--record", is_flag=True, help="Also store the main numbers in the checkpoint's "
              "JSON as its model card (pages then quote them).")
@DEVICE_OPTION
@handle_errors
def evaluate(midi_dir: str, model_path: str | None, bars: int, split: str | None,
             max_windows: int, metrics: int, as_json: bool, skipped_csv: str | None,
             record: bool) -> None:
    """Accuracy (teacher-forced and free-running), KL bits of repeated vs new bars and the
    paired ratio, context transfer (does B follow a new bar 1?), and ELBO bits per bar."""
    from tvae.devices import pick_device
    from tvae.eval.folder import evaluate_folder

    device = str(pick_device(click.get_current_context().meta.get("tvae_device", "cpu")))
    result = evaluate_folder(midi_dir, model_path, bars, split, max_windows,
                             progress=not as_json, metrics=metrics, skipped_csv=skipped_csv,
                             device=device)
    if record:
        _record(result, f"{Path(midi_dir).name} ({result['split']})")
    if as_json:
        click.echo(json.dumps(result))
        return
    music = result.pop("music_metrics", None)
    distances = result.pop("by_distance", {})
    for key, value in result.items():
        click.echo(f"{key:20s} {value}")
    for name, row in distances.items():
        click.echo(f"repeats {name:5s} bars back: " + ", ".join(f"{k} {v}" for k, v in row.items()))
    if music is not None:
        from tvae.eval.music import format_table

        click.echo("\nmusic metrics (mean ± std; W1: distance to the data's distribution)")
        click.echo(format_table(music))


@click.command("plot-schedule")
@click.option("--out", "-o", "out", default="schedule.png", show_default=True,
              help="PNG file to write.")
@click.option("--steps", type=click.IntRange(1, 10_000_000), default=10000, show_default=True,
              help="Training steps drawn.")
@click.option("--batches-per-epoch", type=click.IntRange(1, 10_000_000), default=1000,
              show_default=True, help="N_b of the logistic schedule.")
@config_options(TrainConfig)
@handle_errors
def plot_schedule_cmd(out: str, steps: int, batches_per_epoch: int, **options: object) -> None:
    """Draw the teacher-forcing (p_tf) and KL-weight (beta) schedules over training."""
    from tvae.training.plots import plot_schedule

    cfg = build_config(TrainConfig, options)
    path = plot_schedule({cfg.tf_schedule: cfg}, steps, batches_per_epoch, out)
    click.echo(f"wrote {path}")


@click.command()
@click.argument("checkpoint", type=click.Path())
@click.argument("out", type=click.Path())
@click.option("--float32", "full", is_flag=True, help="Keep float32 weights (default: float16, "
              "half the size).")
@handle_errors
def export(checkpoint: str, out: str, full: bool) -> None:
    """Write an inference-only copy of CHECKPOINT to OUT (.json + .safetensors)."""
    from tvae.files import is_folder
    from tvae.model.checkpoint import check_new_pair, export_checkpoint

    if is_folder(out):
        raise TvaeError("is a folder; give the new checkpoint's name, e.g. "
                        f"{Path(out) / 'model'} (writes model.json and model.safetensors)", out)
    check_new_pair(checkpoint, out)

    path = export_checkpoint(checkpoint, out, half=not full)
    size = path.with_suffix(".safetensors").stat().st_size
    click.echo(f"wrote {path} and {path.with_suffix('.safetensors')} ({size / 1e6:.1f} MB)")


# added to `tvae.cli.main`
COMMANDS = (prepare, train, evaluate, plot_schedule_cmd, export)


def _record(result: dict, data: str) -> None:
    """`evaluate --record`: the card goes into the JSON of the very weights evaluated, under the
    run folder's lock when a training run may be saving there (its .lock file exists)."""
    from contextlib import nullcontext

    from tvae.model.checkpoint import checkpoint_paths, record_evaluation
    from tvae.training.runfolder import LOCK_NAME, run_lock

    json_path, _ = checkpoint_paths(result["model"])
    folder = json_path.parent
    hint = "--record its checkpoints when it has stopped, or export one and record that"
    with run_lock(folder, hint) if (folder / LOCK_NAME).exists() else nullcontext():
        record_evaluation(json_path, result, data, result.get("weights_sha256"))


def _check_same_data(run_dir: Path, midi_dir: tuple[str, ...]) -> None:
    """`--resume` with MIDI_DIR: it must be the run's own data folder(s) (MIDI_DIR may be left
    out); another folder is refused rather than silently ignored."""
    from tvae.training.runfolder import read_run_config

    try:
        saved = read_run_config(run_dir)["data_dir"]
    except TvaeError:
        return  # resuming reports a missing or damaged config.json itself, in one line
    saved = [saved] if isinstance(saved, str) else saved
    if sorted(map(_same_path, saved)) != sorted(map(_same_path, midi_dir)):
        raise TvaeError(f"--resume trains on the run's own data ({', '.join(saved)}); leave "
                        "MIDI_DIR out, or give that folder", midi_dir[0])


def _same_path(path: str) -> str:
    return os.path.normpath(os.path.abspath(path))
