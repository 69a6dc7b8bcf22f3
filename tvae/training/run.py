"""`train`: a training run from a data folder to a run folder (configs, lock, resume,
fine-tuning), around the Trainer of tvae.training.trainer.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

import tvae.training.distributed as ddp
from tvae.config import (
    Configs,
    DataConfig,
    GridConfig,
    ModelConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    flag_of,
)
from tvae.data.dataset import format_skipped, load_songs
from tvae.data.songs import write_skipped
from tvae.devices import pick_device
from tvae.errors import TvaeError
from tvae.model.checkpoint import finish_interrupted_save, load_checkpoint
from tvae.model.legacy import legacy_fields, legacy_model_fields
from tvae.training.budget import check_budget
from tvae.training.runfolder import read_run_config, run_lock, save_run_config
from tvae.training.trainer import Trainer

# The TrainConfig fields `--resume` may change: they extend (or shorten) a run's limits, or
# say how many CPU threads this machine gives it (what is trained stays as configured).
RESUME_LIMITS = ("epochs", "max_steps", "max_minutes", "patience", "num_threads")


# model options that --init-from may add to a checkpoint's model, and the weights they add
ADDABLE = {"encoder_repeats": ("repeats_in.",), "latent_repeats": ("repeats_mu.",),
           "encoder_edits": ("bar_encoder.same_step",), "edit_source": ("edit_table",),
           "lead_in": ("lead.",)}
# ...and the ones it may leave out: the lead-in head reads the latents without shaping them, so
# a fine-tune without it starts from everything else (fit the head again afterwards)
DROPPABLE = ("lead_in",)


def init_weights(trainer: Trainer, path: str | Path) -> None:
    """Start `trainer`'s model from checkpoint `path`'s weights (`--init-from`)."""
    source, _, _ = load_checkpoint(path, trainer.device)
    target = trainer.model.config
    added = [name for name in ADDABLE
             if getattr(target, name) and not getattr(source.config, name)]
    left_out = [name for name in DROPPABLE
                if getattr(source.config, name) and not getattr(target, name)]
    dropped = [name for name in ADDABLE if getattr(source.config, name)
               and not getattr(target, name) and name not in left_out]
    same_parts = {name: getattr(target, name) for name in ADDABLE}
    # dropout shapes no weight: a fine-tune may change it
    if (replace(source.config, trained_bars=0, dropout=target.dropout, **same_parts)
            != replace(target, trained_bars=0)
            or source.grid != trainer.grid or dropped):
        raise TvaeError("--init-from needs a checkpoint of the same model and grid config "
                        f"(it has {source.config})", path)
    # The window length may change, and the repeat features may be added: they start at zero,
    # so the fine-tune begins exactly where the checkpoint was (reading repeats as edits,
    # --encoder-edits, changes what the encoder sees from the first step).
    # A learned prior fitted to the source's latents would not fit the fine-tuned model's.
    skip = ("prior.", *(p for name in left_out for p in ADDABLE[name]))
    weights = {k: v for k, v in source.state_dict().items() if not k.startswith(skip)}
    missing, _ = trainer.model.load_state_dict(weights, strict=not added)
    assert all(key.startswith(tuple(p for name in added for p in ADDABLE[name]))
               for key in missing), missing


def train(data_dir: str | Path | Sequence[str | Path], run_dir: str | Path, *,
          grid_config: GridConfig = GridConfig(), model_config: ModelConfig = ModelConfig(),
          data_config: DataConfig = DataConfig(), train_config: TrainConfig = TrainConfig(),
          label_column: str | None = None, resume: bool = False,
          init_from: str | Path | None = None, command: list[str] | None = None,
          progress: bool = True, compile_model: bool = False,
          limits: dict[str, Any] | None = None) -> Trainer:
    """Train on a MIDI folder (or exported corpus, or prepared shard folders); returns the
    finished Trainer. Started by torchrun, this process is one rank of a multi-process run.

    `init_from` starts from another checkpoint's weights (same architecture) with fresh
    optimizer and schedules: fine-tuning, e.g. with a larger KL weight. With `resume`, the
    configs come from the run folder's config.json, and `limits` changes its RESUME_LIMITS
    fields (e.g. more epochs), saved back into it. A file that cannot be written (a full disk)
    stops the run with a TvaeError; the last checkpoint stays as it was."""
    run_dir = Path(run_dir)
    try:
        has_config = (run_dir / "config.json").is_file()
    except OSError as exc:  # a name too long, a loop of links
        raise TvaeError(f"cannot read the run folder ({exc.strerror or exc})", run_dir) from None
    if resume and not has_config:
        raise TvaeError("cannot resume: this is not a run folder (no config.json)", run_dir)
    configs = Configs(grid_config, model_config, data_config, train_config)
    args = (data_dir, run_dir, configs, label_column, resume, init_from, command, progress,
            compile_model, limits)
    try:
        if os.environ.get("RANK", "0") != "0":  # torchrun's other ranks: rank 0 holds the lock
            return _train(*args)
        with run_lock(run_dir):
            return _train(*args)
    except TvaeError:
        raise
    except OSError as exc:  # e.g. a full disk while writing metrics, plots or a checkpoint
        kept = ("the last checkpoint is intact, continue" if _has_checkpoint(run_dir) else
                "no checkpoint was saved yet; --resume starts the run again")
        raise TvaeError(f"training stopped: cannot write ({exc.strerror or exc}); {kept} with "
                        "--resume once this is fixed", exc.filename or run_dir) from None


def _has_checkpoint(run_dir: Path) -> bool:
    """Whether the run saved a checkpoint (its first save may lack its JSON rename)."""
    return (run_dir / "last.safetensors").is_file()


def _resumed(run_dir: Path, limits: dict[str, Any] | None) -> tuple[Configs, dict[str, Any]]:
    """The configs of the run in `run_dir` (with `limits` applied) and its config.json (to be
    saved once the checkpoint has loaded); a damaged config.json is a TvaeError naming it."""
    saved = read_run_config(run_dir)
    try:
        configs = Configs(config_from_dict(GridConfig, saved["grid"]),
                          config_from_dict(ModelConfig, legacy_model_fields(saved["model"])),
                          config_from_dict(DataConfig, legacy_fields("data", saved["data"])),
                          config_from_dict(TrainConfig, legacy_fields("train", saved["train"])))
    except TvaeError as exc:
        raise TvaeError(f"cannot resume: {exc.reason}", run_dir / "config.json") from None
    if limits:
        unknown = sorted(set(limits) - set(RESUME_LIMITS))
        if unknown:
            raise TvaeError(f"--resume continues a run as configured; only --epochs, "
                            f"--max-steps, --max-minutes, --patience and --num-threads may "
                            f"change "
                            f"(got {', '.join(flag_of(u) for u in unknown)})")
        configs = replace(configs, train=replace(configs.train, **limits))
        saved["train"] = config_to_dict(configs.train)
    return configs, saved


def _train(data_dir: Any, run_dir: Path, configs: Configs, label_column: str | None,
           resume: bool, init_from: str | Path | None, command: list[str] | None,
           progress: bool, compile_model: bool, limits: dict[str, Any] | None) -> Trainer:
    """The body of `train`, run while holding the run folder's lock."""
    saved: dict[str, Any] = {}
    if resume:
        for name in ("last", "best"):  # this run holds the lock: it may complete its saves
            if (run_dir / f"{name}.safetensors").is_file():
                finish_interrupted_save(run_dir / name)
        configs, saved = _resumed(run_dir, limits)
        data_dir, label_column = saved["data_dir"], saved.get("label_column")
        init_from = None  # the run's own checkpoint has the weights
    elif (run_dir / "last.json").exists():
        raise TvaeError("this run folder already holds a run; use --resume to continue it or "
                        "choose another --out", run_dir)
    grid, model, data, train = configs.grid, configs.model, configs.data, configs.train
    dist = ddp.setup(train.device)  # None unless started by torchrun
    check_budget(model, grid, data, train, dist.device if dist else pick_device(train.device),
                 1 if dist is None else dist.world)  # before any data is read
    threads = torch.get_num_threads()  # --num-threads applies to this run only
    finished = False
    try:
        main = dist is None or dist.main
        with ddp.rank0_first(dist):  # rank 0 fills the cache of a MIDI folder
            songs, skipped = load_songs(data_dir, grid, data, label_column, progress and main)
        if skipped and main:
            print(format_skipped(skipped), file=sys.stderr)
        paths = str(data_dir) if isinstance(data_dir, (str, Path)) else list(map(str, data_dir))
        saved_configs = {"grid": config_to_dict(grid), "model": config_to_dict(model),
                         "data": config_to_dict(data), "train": config_to_dict(train),
                         "data_dir": paths, "label_column": label_column,
                         "init_from": str(init_from) if init_from else None}
        if not resume and main:
            save_run_config(run_dir, saved_configs, command)
        trainer = Trainer(songs, run_dir, configs, progress, dist=dist,
                          compile_model=compile_model)
        restart = resume and not _has_checkpoint(run_dir)  # killed before its first save
        if resume and not restart:
            trainer.resume()  # checks the checkpoint and metrics before anything is written
        elif restart:
            trainer.log.truncate(0, 0)  # rows logged before the kill: logged again
            if saved.get("init_from"):
                init_weights(trainer, saved["init_from"])
            if main:
                print("no checkpoint yet: the run starts again from step 0, as configured",
                      file=sys.stderr)
        elif init_from:
            init_weights(trainer, init_from)
        if resume and limits and main:
            save_run_config(run_dir, saved, None)
        if main:
            songs.save_split(run_dir / "split.csv")
            write_skipped(run_dir / "skipped.csv", skipped)  # each skipped file and why
        trainer.fit()
        finished = True
        return trainer
    finally:
        ddp.teardown(dist, finished)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
