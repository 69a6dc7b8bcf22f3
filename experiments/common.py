"""What every experiment shares: its sizes (quick or full), training runs that a rerun reuses,
evaluation windows, and the result files (NAME.json, NAME.md, NAME_*.png).

An experiment module has `run(ctx) -> result` (which trains, evaluates and returns a JSON-able
dict) and `render(result, figures) -> markdown lines`. `finish` adds what every result records
(title, question, command, machine, date, wall time) and writes the files; the report renders
each result again from its JSON.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

from bench.machine import describe_machine
from tvae.config import Configs, DataConfig, GridConfig, ModelConfig, TrainConfig, config_to_dict
from tvae.data import dataset
from tvae.data.dataset import SongArrays, load_folder
from tvae.data.windows import Windows
from tvae.errors import TvaeError
from tvae.inference import TrainedModel, load_model

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# The quick setting checks the pipeline in seconds (tests); its numbers mean nothing.
# The paper's stock model (no copy path): the tf, masking, aux and sampling experiments study
# it as published; `structure` turns the copy path on.
QUICK_MODEL = ModelConfig(d_model=32, d_latent=8, n_heads=2, enc_layers=1, dec_layers=1,
                          d_ff=64, bar_hidden=32, copy="none")
# The full setting is sized for a 2-core CPU: one run of ~1,000 steps takes a few minutes.
FULL_MODEL = ModelConfig(d_model=128, d_latent=32, bar_hidden=256, d_ff=256, copy="none")


@dataclass(frozen=True)
class Scale:
    """How big an experiment's runs are."""

    model: ModelConfig  # the network every run starts from
    data: DataConfig  # training windows
    train: TrainConfig  # shared optimisation settings; experiments set steps and schedules
    eval_bars: int  # bars of the non-overlapping evaluation windows
    eval_windows: int  # evaluation windows at most (0: all)


QUICK = Scale(
    model=QUICK_MODEL,
    data=DataConfig(bars=4, stride=2),
    train=TrainConfig(batch_size=8, epochs=100, max_steps=6, warmup_steps=2, beta_steps=4,
                      log_every=2, checkpoint_every=100, eval_windows=16, patience=100),
    eval_bars=4,
    eval_windows=32,
)
FULL = Scale(
    model=FULL_MODEL,
    # Non-overlapping windows keep an epoch short (~220 steps), so validation rows come often.
    data=DataConfig(bars=8, stride=8),
    train=TrainConfig(batch_size=64, epochs=1000, warmup_steps=100, beta=0.1, log_every=20,
                      checkpoint_every=200, eval_windows=500, patience=1000),
    eval_bars=8,
    eval_windows=0,
)


@dataclass
class Context:
    """One experiment invocation: where data comes from and where results go."""

    name: str  # the experiment, e.g. "tf"
    quick: bool  # the tiny setting used by the tests
    corpus: Path  # exported corpus folder (manifest.csv with split and collection)
    out: Path  # results folder: NAME.json, NAME.md, NAME_*.png
    runs: Path  # run folders of this experiment (checkpoints, metrics.csv)
    split: str = "test"  # split the trained models are evaluated on
    model: Path | None = None  # a checkpoint to use instead of training (sampling)
    threads: int = 1  # torch CPU threads (one is fastest when other work shares the cores)
    command: list[str] = field(default_factory=list)  # the command line, for the record
    started: float = field(default_factory=time.monotonic)
    shard: tuple[int, int] = (0, 1)  # (i, n): train only runs i, i + n, i + 2n, ...

    @property
    def sharded(self) -> bool:
        return self.shard[1] > 1

    def mine(self, run_index: int) -> bool:
        """Whether this invocation trains run number `run_index` (see --shard)."""
        return run_index % self.shard[1] == self.shard[0]

    @property
    def scale(self) -> Scale:
        return QUICK if self.quick else FULL

    def train_config(self, full_steps: int, full_minutes: float, **changes: Any) -> TrainConfig:
        """The shared TrainConfig with this experiment's length (quick: the tiny one) and
        `changes`. The β warm-up takes the first half of the run."""
        base = self.scale.train
        steps = base.max_steps if self.quick else full_steps
        minutes = 0.0 if self.quick else full_minutes
        return replace(base, max_steps=steps, max_minutes=minutes,
                       beta_steps=max(1, steps // 2), num_threads=self.threads, **changes)

    def figure(self, suffix: str) -> Path:
        """Path of figure NAME_suffix.png (its folder is made)."""
        self.out.mkdir(parents=True, exist_ok=True)
        return self.out / f"{self.name}_{suffix}.png"

    def log(self, message: str) -> None:
        print(f"[{self.name} {time.monotonic() - self.started:6.0f}s] {message}",
              file=sys.stderr, flush=True)


# --- data -------------------------------------------------------------------------------------


def load_songs(ctx: Context, label_column: str | None = None) -> SongArrays:
    """The corpus' songs (cached after the first load)."""
    songs, _ = load_folder(ctx.corpus, GridConfig(), ctx.scale.data, label_column=label_column,
                           progress=False)
    return songs


def eval_windows(ctx: Context, songs: SongArrays) -> Windows:
    """Non-overlapping, untransposed windows of the evaluation split."""
    bars = ctx.scale.eval_bars
    windows = Windows(songs, ctx.split, DataConfig(bars=bars, stride=bars, transpose=0))
    if len(windows) == 0:
        raise TvaeError(f"the corpus has no '{ctx.split}' windows to evaluate on (--split)",
                        ctx.corpus)
    return windows


def model_parser(doc: str, split: bool = True) -> Any:
    """The command line of a diagnostic that scores models: MODEL... [--data DIR] [--split
    SPLIT] [--json OUT], described by the first paragraph of `doc`."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--data", default="corpus")
    if split:
        parser.add_argument("--split", default="test")
    parser.add_argument("--json", default=None, help="also write the results here")
    return parser


def split_windows(trained: TrainedModel, data_dir: str | Path, split: str
                  ) -> tuple[Any, Any, Windows]:
    """tokens (W, N, S), meters (W, N) torch tensors of every non-overlapping window of the
    model's length in a folder's split (as `tvae evaluate` reads them), and the windows."""
    import torch

    data = DataConfig(bars=trained.window, stride=trained.window, transpose=0)
    songs, _ = dataset.load_songs(data_dir, trained.grid, data, progress=False)
    windows = Windows(songs, split, data, trained.grid)
    tokens, meters = windows.batch(np.arange(len(windows)), None, trim=True)
    return torch.as_tensor(tokens), torch.as_tensor(meters), windows


def batches_per_epoch(songs: SongArrays, data: DataConfig, batch_size: int) -> int:
    """Optimizer steps in one epoch, as the Trainer counts them."""
    return max(1, -(-len(Windows(songs, "train", data)) // batch_size))


# --- training runs ----------------------------------------------------------------------------


def _spec(ctx: Context, model: ModelConfig, data: DataConfig, train: TrainConfig,
          extra: dict[str, Any] | None) -> dict[str, Any]:
    spec = {"corpus": str(ctx.corpus.resolve()), "model": config_to_dict(model),
            "data": config_to_dict(data), "train": config_to_dict(train), **(extra or {})}
    return json.loads(json.dumps(spec))


def train_run(ctx: Context, songs: SongArrays, name: str, model: ModelConfig, train: TrainConfig,
              data: DataConfig | None = None, extra: dict[str, Any] | None = None,
              init_from: Path | None = None) -> tuple[TrainedModel, dict[str, Any]]:
    """Train run `name` (or reuse it: a finished run with the same settings is loaded, an
    interrupted one resumed) and return its last checkpoint and {steps, seconds, run}.
    `init_from`: a checkpoint whose weights a new run starts from (fine-tuning).

    `extra` holds settings outside the configs (such as the labelled share) that make the run
    what it is; a folder holding a run with other settings is refused, never overwritten.
    """
    from tvae.training.run import init_weights
    from tvae.training.trainer import Trainer

    data = data or ctx.scale.data
    run_dir = ctx.runs / name
    spec = _spec(ctx, model, data, train,
                 {**(extra or {}), **({"init_from": str(init_from)} if init_from else {})})
    spec_path = run_dir / "experiment.json"
    if spec_path.exists() and json.loads(spec_path.read_text()) != spec:
        raise TvaeError("this run folder holds a run with other settings; delete it or choose "
                        "another --runs folder", run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    spec_path.write_text(json.dumps(spec, indent=2) + "\n")
    trainer = Trainer(songs, run_dir, Configs(GridConfig(), model, data, train), progress=False)
    if (run_dir / "last.json").exists():
        trainer.resume()
    else:
        (run_dir / "metrics.csv").unlink(missing_ok=True)  # from a run killed before saving
        if init_from is not None:
            init_weights(trainer, init_from)
    if not trainer.state.finished:
        ctx.log(f"training {name} ({train.max_steps} steps at most)")
        trainer.fit()
    info = {"run": str(run_dir), "steps": trainer.state.step,
            "seconds": round(trainer.state.seconds, 1)}
    return load_model(run_dir / "last.json"), info


def valid_curve(run: str | Path, key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of a run's validation rows for metric `key` (metrics.csv)."""
    from tvae.training.plots import read_metrics

    steps, values = [], []
    for row in read_metrics(Path(run) / "metrics.csv"):
        if row["split"] == "valid" and row.get(key) not in (None, ""):
            steps.append(int(row["step"]))
            values.append(float(row[key]))
    return steps, values


# --- results ----------------------------------------------------------------------------------


def settings(ctx: Context, train: TrainConfig | None, **more: Any) -> dict[str, Any]:
    """What a result was made with, for its JSON: sizes, the (base) TrainConfig and `more`."""
    scale = ctx.scale
    return {"quick": ctx.quick, "corpus": str(ctx.corpus), "split": ctx.split,
            "model": config_to_dict(scale.model), "data": config_to_dict(scale.data),
            "train": None if train is None else config_to_dict(train),
            "eval_bars": scale.eval_bars, "eval_windows": scale.eval_windows, **more}


Render = Callable[[dict[str, Any], str], list[str]]


def finish(ctx: Context, result: dict[str, Any], title: str, question: str, render: Render
           ) -> dict[str, Any]:
    """Add the record (command, machine, date, wall time) and write NAME.json and NAME.md."""
    result = {
        "name": ctx.name, "title": title, "question": question,
        "command": shlex.join(ctx.command), "machine": describe_machine(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": round(time.monotonic() - ctx.started, 1), **result,
    }
    ctx.out.mkdir(parents=True, exist_ok=True)
    (ctx.out / f"{ctx.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = section(result, render, figures="", level=1)
    (ctx.out / f"{ctx.name}.md").write_text("\n".join(lines) + "\n")
    ctx.log(f"wrote {ctx.out / ctx.name}.json and .md")
    return result


def section(result: dict[str, Any], render: Render, figures: str, level: int) -> list[str]:
    """A result as markdown: title, question, the record, then the experiment's own lines.
    `figures` prefixes figure paths (relative to the markdown file)."""
    lines = [f"{'#' * level} {result['title']}", "", result["question"], "",
             f"- Command: `{result['command']}`", f"- Machine: {result['machine']}",
             f"- Date: {result['date']}; wall time {result['seconds'] / 60:.1f} min", ""]
    if result["settings"]["quick"]:
        lines += ["> Quick setting: a tiny model trained for a few steps. These numbers check "
                  "the pipeline; they say nothing about the question.", ""]
    return lines + render(result, figures)


def fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows] + [""]


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (0 for one value); None for no values."""
    if not values:
        return None, None
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def save_figure(fig: Any, path: Path) -> str:
    """Write a matplotlib figure; returns its file name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name
