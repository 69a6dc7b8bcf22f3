"""Experiment `finetune`: what a further fine-tune of a trained model does to repeats at each
distance.

Three fine-tunes of the starting model (by default the bundled one; `--model` another), one
change at a time, each the same length with the same optimiser: more training with the
whole-window batches off (the control), the reach augmentation (short songs played on past their
end in a share of whole-window batches, `repeat_reach`), and that plus the encoder's input
repeat features (`encoder_repeats`). The posterior's repeat vectors (`latent_repeats`) stay as
the starting model has them: the one-variable comparison that found them (a model without them,
fine-tuned with and without) is in docs/experiments/far_objective/. Scored as `reach` scores, on
the test split's non-overlapping 33-bar windows.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from experiments.common import Context, finish, load_songs, settings, train_run
from experiments.reach import _plot, render, score
from tvae.config import DataConfig, ModelConfig, TrainConfig
from tvae.data.windows import Windows
from tvae.errors import TvaeError
from tvae.inference import bundled_model_path, load_model

TITLE = "Fine-tuning the bundled model for repeats at every distance"
QUESTION = ("Which change teaches a trained model to copy repeats 9-32 bars back: more "
            "training, windows that hold such repeats (reach augmentation), or an encoder that "
            "is told where repeats are?")
EPOCHS = 8  # of the folk corpus' ~9,100 training windows: ~1,140 steps
EVAL_BARS = 33
# (key, label, ModelConfig and DataConfig changes from the starting model's and the defaults)
VARIANTS = [
    ("control", "more training as before", {"encoder_repeats": False}, {"repeat_reach": 0.0}),
    ("reach", "+ reach augmentation (half the batches)", {"encoder_repeats": False},
     {"repeat_reach": 0.5}),
    ("features", "+ reach augmentation + encoder repeat features", {"encoder_repeats": True},
     {"repeat_reach": 0.5}),
]


def run(ctx: Context) -> dict[str, Any]:
    songs = load_songs(ctx)
    start = ctx.model or bundled_model_path()
    model0: ModelConfig = load_model(start).model.config
    bars = ctx.scale.eval_bars if ctx.quick else EVAL_BARS
    windows = Windows(songs, ctx.split, DataConfig(bars=bars, stride=bars, transpose=0))
    if len(windows) == 0:
        raise TvaeError(f"the corpus has no '{ctx.split}' windows", ctx.corpus)
    base = TrainConfig(lr=3e-4, warmup_steps=100, beta_schedule="constant", beta=0.3,
                       epochs=1 if ctx.quick else EPOCHS, max_steps=ctx.scale.train.max_steps
                       if ctx.quick else 0, eval_windows=200, num_threads=ctx.threads, seed=1)
    data0 = replace(DataConfig(), bars=model0.trained_bars or 33)
    rows = []
    for i, (key, label, model_changes, data_changes) in enumerate(VARIANTS):
        if not ctx.mine(i):
            continue
        model = replace(model0, **model_changes)
        trained, info = train_run(ctx, songs, key, model, base, replace(data0, **data_changes),
                                  init_from=Path(start))
        rows.append(score(ctx, trained.model, windows, key, label, info))
    if ctx.sharded:
        ctx.log("trained this shard's runs; run again without --shard for the report")
        return {}
    rows.insert(0, score(ctx, load_model(start).model, windows, "start", "the starting model",
                         {"steps": 0, "seconds": 0}))
    result = {"settings": {**settings(ctx, base, eval_bars=bars, stride=data0.stride),
                           "start": str(start), "model": _config(model0)},
              "variants": rows, "figures": [_plot(ctx, rows)]}
    return finish(ctx, result, TITLE, QUESTION, render_finetune)


def _config(model: ModelConfig) -> dict[str, Any]:
    from tvae.config import config_to_dict

    return config_to_dict(model)


def render_finetune(result: dict[str, Any], figures: str) -> list[str]:
    s = result["settings"]
    intro = [f"Each run starts from `{s['start']}` and trains {s['train']['epochs']} epochs "
             f"(the same number of steps each) at lr {s['train']['lr']} (cosine decay), β "
             f"{s['train']['beta']} constant, with the defaults' data settings unless the row "
             "says otherwise. The table's columns are `reach`'s (below).", ""]
    lines = render(result, figures)
    return intro + lines[1:]
