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
    DataConfig,
    GridConfig,
    ModelConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
)
from tvae.data.dataset import format_skipped, load_songs
from tvae.data.songs import write_skipped
from tvae.errors import TvaeError
from tvae.model.checkpoint import legacy_model_fields, load_checkpoint
from tvae.training.runfolder import read_run_config, run_lock, save_run_config
from tvae.training.trainer import RunState, Trainer  # noqa: F401 (importable from here too)

# The TrainConfig fields `--resume` may change: they extend (or shorten) a run's limits.
RESUME_LIMITS = ("epochs", "max_steps", "max_minutes", "patience")


def _init_weights(trainer: Trainer, path: str | Path) -> None:
    source, _, _ = load_checkpoint(path, trainer.device)
    if source.config != trainer.model.config or source.grid != trainer.grid:
        raise TvaeError("--init-from needs a checkpoint of the same model and grid config "
                        f"(it has {source.config})", path)
    trainer.model.load_state_dict(source.state_dict())


def train(data_dir: str | Path | Sequence[str | Path], run_dir: str | Path, *,
          grid: GridConfig = GridConfig(), model: ModelConfig = ModelConfig(),
          data: DataConfig = DataConfig(), train: TrainConfig = TrainConfig(),
          label_column: str | None = None, resume: bool = False,
          init_from: str | Path | None = None, command: list[str] | None = None,
          progress: bool = True, compile_model: bool = False,
          limits: dict[str, Any] | None = None) -> Trainer:
    """Train on a MIDI folder (or exported corpus, or prepared shard folders); returns the
    finished Trainer. Started by torchrun, this process is one rank of a multi-process run.

    `init_from` starts from another checkpoint's weights (same architecture) with fresh
    optimizer and schedules: fine-tuning, e.g. with a larger KL weight. With `resume`, `limits`
    changes the run's RESUME_LIMITS fields (e.g. more epochs), saved into its config.json."""
    run_dir = Path(run_dir)
    args = (data_dir, run_dir, grid, model, data, train, label_column, resume, init_from,
            command, progress, compile_model, limits)
    if os.environ.get("RANK", "0") != "0":  # torchrun's other ranks: rank 0 holds the lock
        return _train(*args)
    with run_lock(run_dir):
        return _train(*args)


def _train(data_dir: Any, run_dir: Path, grid: GridConfig, model: ModelConfig, data: DataConfig,
           train: TrainConfig, label_column: str | None, resume: bool,
           init_from: str | Path | None, command: list[str] | None, progress: bool,
           compile_model: bool, limits: dict[str, Any] | None) -> Trainer:
    """The body of `train`, run while holding the run folder's lock."""
    if resume:
        saved = read_run_config(run_dir)
        grid = config_from_dict(GridConfig, saved["grid"])
        model = config_from_dict(ModelConfig, legacy_model_fields(saved["model"]))
        data = config_from_dict(DataConfig, saved["data"])
        train = config_from_dict(TrainConfig, saved["train"])
        if limits:
            unknown = sorted(set(limits) - set(RESUME_LIMITS))
            if unknown:
                raise TvaeError(f"--resume continues a run as configured; only --epochs, "
                                f"--max-steps, --max-minutes and --patience may change "
                                f"(got {', '.join('--' + u.replace('_', '-') for u in unknown)})")
            train = replace(train, **limits)
            saved["train"] = config_to_dict(train)
            save_run_config(run_dir, saved, None)
        data_dir, label_column = saved["data_dir"], saved["label_column"]
        init_from = None  # the run's own checkpoint has the weights
    elif (run_dir / "last.json").exists():
        raise TvaeError("this run folder already holds a run; use --resume to continue it or "
                        "choose another --out", run_dir)
    dist = ddp.setup(train.device)  # None unless started by torchrun
    threads = torch.get_num_threads()  # --num-threads applies to this run only
    try:
        main = dist is None or dist.main
        with ddp.rank0_first(dist):  # rank 0 fills the cache of a MIDI folder
            songs, skipped = load_songs(data_dir, grid, data, label_column, progress and main)
        if skipped and main:
            print(format_skipped(skipped), file=sys.stderr)
        paths = str(data_dir) if isinstance(data_dir, (str, Path)) else list(map(str, data_dir))
        configs = {"grid": config_to_dict(grid), "model": config_to_dict(model),
                   "data": config_to_dict(data), "train": config_to_dict(train),
                   "data_dir": paths, "label_column": label_column,
                   "init_from": str(init_from) if init_from else None}
        if not resume and main:
            save_run_config(run_dir, configs, command)
        trainer = Trainer(songs, run_dir, grid, model, data, train, progress, dist=dist,
                          compile_model=compile_model)
        if main:
            songs.save_split(run_dir / "split.csv")
            write_skipped(run_dir / "skipped.csv", skipped)  # each skipped file and why
        if resume:
            trainer.resume()
        elif init_from:
            _init_weights(trainer, init_from)
        trainer.fit()
        return trainer
    finally:
        ddp.teardown(dist)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
