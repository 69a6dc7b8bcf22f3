"""Experiment `reach`: repeats at every distance, near-repeats as edits, learned by default.

The design that `tvae train` now uses by default, at small scale, against one-change ablations:
the training window (8, 16 or 33 bars, the pointer reaching window - 1 bars back), per-step edit
chances read from z (against one fixed chance), the pointer loss capped at weight 0.9 (against
pushing for certainty), near-repeats as pointer targets (against exact repeats only), the phrase
augmentation at uniform offsets (against none), and the defaults `tvae train` had before (8-bar
windows, β 0.1, no pointer loss, no augmentation). Every model is scored on the test split's
non-overlapping 33-bar windows (a model trained on shorter windows reads them window by window,
as inference does), per bucket of how far back a repeat's nearest identical bar lies.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from experiments.common import (
    Context,
    finish,
    fmt,
    load_songs,
    plt,
    save_figure,
    settings,
    table,
    train_run,
)
from tvae.config import DataConfig
from tvae.data.windows import Windows
from tvae.errors import TvaeError
from tvae.eval.structure import DISTANCE_BUCKETS, bucket_name
from tvae.eval.windows import evaluate_windows

TITLE = "Reach: repeats at every distance, near-repeats as edits"
QUESTION = ("Does a copy path trained on long windows copy the right bar at every distance "
            "(1-4, 5-8, 9-16, 17-32 bars back), do near-repeats become copies with edits, and "
            "which part of the design does each thing?")
FULL_STEPS = 1200  # per run: ~6 minutes on one core at width 128
EVAL_BARS = 33
KEYS = ("kl_bits_per_bar", "kl_bits_new", "kl_bits_repeated", "kl_repeated_new_ratio",
        "kl_bits_near_repeated", "kl_near_new_ratio", "near_repeats_exact",
        "near_repeats_copied", "transfer_follow_rate", "transfer_spurious_rate",
        "transfer_edit_follow_rate", "transfer_edit_cases", "tf_accuracy", "free_accuracy",
        "elbo_bits_per_bar", "by_distance", "repeated_bars", "near_repeated_bars")
# (key, label, ModelConfig, TrainConfig and DataConfig changes from the defaults)
VARIANTS = [
    ("design", "the design (33-bar windows)", {}, {}, {}),
    ("window8", "8-bar windows", {"copy_offsets": 7}, {}, {"bars": 8}),
    ("window16", "16-bar windows", {"copy_offsets": 15}, {}, {"bars": 16}),
    ("fixed_edit", "one fixed edit chance (0.02)", {"copy_edit_steps": False}, {}, {}),
    ("uncapped", "pointer loss not capped", {}, {"pointer_cap": 1.0}, {}),
    ("exact_targets", "pointer loss on exact repeats only", {}, {"pointer_edits": 0}, {}),
    ("no_augment", "no phrase augmentation", {}, {}, {"repeat_augment": 0.0}),
    ("old_defaults", "the previous defaults", {"copy_offsets": 7, "copy_edit_steps": False},
     {"pointer_weight": 0.0, "pointer_cap": 1.0, "pointer_edits": 0, "beta": 0.1},
     {"bars": 8, "repeat_augment": 0.0, "repeat_edits": 0.0}),
]


def run(ctx: Context) -> dict[str, Any]:
    songs = load_songs(ctx)
    bars = ctx.scale.eval_bars if ctx.quick else EVAL_BARS
    windows = Windows(songs, ctx.split, DataConfig(bars=bars, stride=bars, transpose=0))
    if len(windows) == 0:
        raise TvaeError(f"the corpus has no '{ctx.split}' windows", ctx.corpus)
    base = ctx.train_config(FULL_STEPS, 0.0, tf_schedule="constant", tf_p=1.0, beta=0.3)
    base = replace(base, beta_steps=max(1, base.max_steps // 4), eval_windows=200)
    model0 = replace(ctx.scale.model, copy="bar")
    data0 = DataConfig(bars=4 if ctx.quick else 33, stride=2)
    rows = []
    for i, (key, label, model_changes, train_changes, data_changes) in enumerate(VARIANTS):
        if not ctx.mine(i):
            continue
        data = replace(data0, **data_changes)
        if ctx.quick:
            data = replace(data, bars=min(data.bars, 4))
            model_changes = {**model_changes, "copy_offsets": 3}
        trained, info = train_run(ctx, songs, key, replace(model0, **model_changes),
                                  replace(base, **train_changes), data)
        rows.append(score(ctx, trained.model, windows, key, label, info))
    if ctx.sharded:
        ctx.log("trained this shard's runs; run again without --shard for the report")
        return {}
    result = {"settings": settings(ctx, base, eval_bars=bars, stride=data0.stride),
              "variants": rows, "figures": [_plot(ctx, rows)]}
    return finish(ctx, result, TITLE, QUESTION, render)


def score(ctx: Context, model: Any, windows: Windows, key: str, label: str,
          info: dict[str, Any]) -> dict[str, Any]:
    """One table row: the run's `info` and the KEYS of its evaluation on `windows` (logged)."""
    metrics = evaluate_windows(model, windows, max_windows=ctx.scale.eval_windows)
    ctx.log(f"{key}: " + ", ".join(f"{k} {metrics[k]}" for k in KEYS[:9]))
    return {"key": key, "label": label, **info, **{k: metrics.get(k) for k in KEYS}}


def _plot(ctx: Context, rows: list[dict[str, Any]]) -> str:
    """Copy accuracy and transfer follow rate per distance bucket, one line per variant."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    names = [bucket_name(lo, hi) for lo, hi in DISTANCE_BUCKETS]
    for ax, key, title in ((axes[0], "copy_accuracy", "copy accuracy"),
                           (axes[1], "transfer_follow", "transfer follow rate")):
        for row in rows:
            values = [((row["by_distance"] or {}).get(n) or {}).get(key) for n in names]
            ax.plot(names, [float("nan") if v is None else v for v in values], marker="o",
                    label=row["label"])
        ax.set_xlabel("bars back")
        ax.set_title(title)
        ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    return save_figure(fig, ctx.figure("by_distance"))


def render(result: dict[str, Any], figures: str) -> list[str]:
    s = result["settings"]
    lines = [f"Each model: width {s['model']['d_model']}, latent {s['model']['d_latent']}, "
             f"{s['train']['max_steps']} steps of 64 windows, β 0.3 (warm-up over the first "
             "quarter), p_tf 1, the copy path per bar; the other settings are `tvae train`'s "
             "defaults unless the row says otherwise. Scored on the "
             f"'{s['split']}' split's non-overlapping {s['eval_bars']}-bar windows, z = "
             "posterior mean. *copy acc*: share of repeats whose decoder choice (the pointer's "
             "likeliest) is an identical bar; *exact*: share decoded exactly, free-running; "
             "*follow*: share of B's repeats of bar 1 that many bars later that repeat the new "
             "bar 1 after a transfer. *near*: bars with no identical earlier bar but one that "
             "differs in 1 or 2 steps.", ""]
    rows = []
    for v in result["variants"]:
        rows.append([v["label"], fmt(v["free_accuracy"]), fmt(v["kl_bits_per_bar"], 1),
                     fmt(v["elbo_bits_per_bar"], 1), fmt(v["kl_repeated_new_ratio"], 2),
                     fmt(v["kl_near_new_ratio"], 2), fmt(v["near_repeats_exact"], 2),
                     fmt(v["transfer_follow_rate"], 2), fmt(v["transfer_spurious_rate"], 3),
                     fmt(v["transfer_edit_follow_rate"], 2)])
    lines += table(["model", "free acc", "KL bits/bar", "ELBO bits/bar", "repeated/new",
                    "near/new", "near exact", "follow", "spurious", "edit follow"], rows)
    header = ["model"] + [f"{bucket_name(lo, hi)}: copy acc · exact · KL · follow"
                          for lo, hi in DISTANCE_BUCKETS]
    rows = []
    for v in result["variants"]:
        cells = [v["label"]]
        for lo, hi in DISTANCE_BUCKETS:
            b = (v["by_distance"] or {}).get(bucket_name(lo, hi), {})
            cells.append(f"{fmt(b.get('copy_accuracy'), 2)} · {fmt(b.get('exact'), 2)} · "
                         f"{fmt(b.get('kl_bits'), 1)} · {fmt(b.get('transfer_follow'), 2)}")
        rows.append(cells)
    lines += ["Per distance (nearest identical earlier bar; transfer: bars after bar 1):", ""]
    lines += table(header, rows)
    if result["variants"]:
        first = result["variants"][0]
        counts = ", ".join(f"{name} {b['repeats']} ({b['transfer_cases']} transfer cases)"
                           for name, b in first["by_distance"].items())
        lines += [f"Repeats per bucket: {counts}; near-repeats: {first['near_repeated_bars']}; "
                  f"B's edited repeats of bar 1 in transfers: {first['transfer_edit_cases']}.",
                  ""]
    return lines + [f"![Copy accuracy and transfer by distance]({figures}{result['figures'][0]})",
                    ""]
