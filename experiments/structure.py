"""Experiment `structure`: does the copy path make the latent structure-aware?

The paper's stock model against the copy-path model (tvae.model.pointer: a per-bar choice between
generating and copying, with the pointer's auxiliary loss on the exact repeats the data labels)
over a sweep of the KL weight beta; then, at one beta, ablations that change one thing each: no
pointer loss, a pointer loss that fades out by half-way, no repeat augmentation, an edit chance
learned from z, the per-step mixture instead of the per-bar choice, and an autoregressive GRU
bar decoder. Each model is scored on the test split's
non-overlapping 8-bar windows: KL bits per bar, repeated/new KL, the paired ratio
KL(repeat)/KL(first occurrence), context transfer (follow, spurious, rhythm kept),
teacher-forced and free-running accuracy, and ELBO bits per bar. The rate-distortion plot puts
free-running accuracy against KL bits per bar for both models.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from experiments.common import (
    Context,
    eval_windows,
    finish,
    fmt,
    load_songs,
    plt,
    save_figure,
    settings,
    table,
    train_run,
)
from tvae.eval.windows import evaluate_windows

TITLE = "Structure: the copy path against the stock model"
QUESTION = ("With a copy path whose pointer reads only the bar's own latent, do repeated bars "
            "become cheap (a reference to an earlier bar rather than its content), and does "
            "context transfer then develop A's opening in B's flow (B's repeats of bar 1 "
            "follow the new bar 1)? At what cost in accuracy and ELBO, across beta?")
BETAS = {True: [0.3], False: [0.1, 0.2, 0.3, 0.5]}
FULL_STEPS = 2000  # per run, p_tf = 1: ~3 min a run on one core at width 128
FULL_MINUTES = 0.0  # no time cap: runs compare step for step
KEYS = ("kl_bits_per_bar", "kl_bits_new", "kl_bits_repeated", "kl_repeated_new_ratio",
        "kl_paired_ratio", "transfer_follow_rate", "transfer_spurious_rate",
        "transfer_other_kept", "transfer_cases", "tf_accuracy", "free_accuracy",
        "elbo_bits_per_bar", "copy_share_repeated", "copy_share_new")
STOCK, DESIGN = "stock", "copy per bar (the design)"
# The design: per-bar copy (edit chance 0.02), pointer loss weight 1 held through the run, and
# a quarter of the windows given one extra repeat.
DESIGN_MODEL = {"copy": "bar", "copy_edit": 0.02}
DESIGN_TRAIN = {"pointer_weight": 1.0, "pointer_steps": "all"}
DESIGN_DATA = {"repeat_augment": 0.25}
# Ablations of the design at one beta, one change each: (key, label, model, train, data).
ABLATIONS = [
    ("bar_noaux", "design, no pointer loss", {}, {"pointer_weight": 0.0}, {}),
    ("bar_fading", "design, pointer loss fading", {}, {"pointer_steps": "quarter"}, {}),
    ("bar_noaug", "design, no repeat augmentation", {}, {}, {"repeat_augment": 0.0}),
    ("bar_learned_edit", "design, edit chance learned from z", {"copy_edit": 0.0}, {}, {}),
    ("step", "design, copy per step (mixture)", {"copy": "step"}, {}, {}),
    ("gru", "design, autoregressive GRU bar decoder", {"bar_decoder": "gru"}, {}, {}),
]


def variants(quick: bool) -> list[tuple[str, str, float, dict, dict, dict]]:
    """(run key, label, beta, ModelConfig, TrainConfig and DataConfig changes) of every run."""
    out = []
    for beta in BETAS[quick]:
        out.append((f"stock_b{beta}", STOCK, beta, {"copy": "none"}, {"pointer_weight": 0.0},
                    {}))
        out.append((f"bar_b{beta}", DESIGN, beta, DESIGN_MODEL, DESIGN_TRAIN, DESIGN_DATA))
    beta = BETAS[quick][-1] if quick else 0.3
    for key, label, model, train, data in ABLATIONS:
        out.append((f"{key}_b{beta}", label, beta, {**DESIGN_MODEL, **model},
                    {**DESIGN_TRAIN, **train}, {**DESIGN_DATA, **data}))
    return out


def _steps(value: Any, total: int) -> Any:
    """'quarter' and 'all' as step counts of a `total`-step run."""
    return {"quarter": max(1, total // 4), "all": total}.get(value, value)


def run(ctx: Context) -> dict[str, Any]:
    songs = load_songs(ctx)
    windows = eval_windows(ctx, songs)
    data = replace(ctx.scale.data, stride=2)
    base = ctx.train_config(FULL_STEPS, FULL_MINUTES, tf_schedule="constant", tf_p=1.0)
    base = replace(base, beta_steps=max(1, base.max_steps // 4))
    rows = []
    for key, label, beta, model_changes, train_changes, data_changes in variants(ctx.quick):
        train_changes = {k: _steps(v, base.max_steps) for k, v in train_changes.items()}
        train = replace(base, beta=beta, **train_changes)
        model = replace(ctx.scale.model, **model_changes)
        run_data = replace(data, **data_changes)
        trained, info = train_run(ctx, songs, key, model, train, run_data)
        metrics = evaluate_windows(trained.model, windows, max_windows=ctx.scale.eval_windows)
        ctx.log(f"{key}: " + ", ".join(f"{k} {metrics[k]}" for k in KEYS[:7]))
        rows.append({"key": key, "label": label, "beta": beta, **info,
                     **{k: metrics[k] for k in KEYS}})
    result = {"settings": settings(ctx, base, stride=data.stride), "variants": rows,
              "figures": [_plot(ctx, rows)]}
    return finish(ctx, result, TITLE, QUESTION, render)


def _plot(ctx: Context, rows: list[dict[str, Any]]) -> str:
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for label, marker in ((STOCK, "o"), (DESIGN, "s")):
        pts = sorted((r["kl_bits_per_bar"], r["free_accuracy"], r["beta"], r["kl_paired_ratio"],
                      r["transfer_follow_rate"]) for r in rows if r["label"] == label
                     and r["kl_bits_per_bar"] is not None and r["free_accuracy"] is not None)
        if not pts:
            continue
        left.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, label=label)
        for kl, acc, beta, *_ in pts:
            left.annotate(f"β {beta}", (kl, acc), fontsize=7, xytext=(3, 3),
                          textcoords="offset points")
        right.plot([p[2] for p in pts], [p[4] or 0.0 for p in pts], marker=marker, label=label)
    left.set_xlabel("KL (bits per bar)")
    left.set_ylabel("free-running accuracy")
    left.set_title("rate–distortion")
    right.set_xlabel("β")
    right.set_ylabel("transfer follow rate")
    right.set_ylim(-0.05, 1.05)
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, ctx.figure("rate_distortion"))


def render(result: dict[str, Any], figures: str) -> list[str]:
    s = result["settings"]
    lines = [f"Each model: width {s['model']['d_model']}, latent {s['model']['d_latent']}, "
             f"{s['train']['max_steps']} steps, batch {s['train']['batch_size']}, p_tf 1, β "
             "rising linearly over the first quarter of the run, 8-bar windows with stride "
             f"{s['stride']}. Scored on the '{s['split']}' split's non-overlapping "
             f"{s['eval_bars']}-bar windows with z = posterior mean. *rep/new*: mean KL of bars "
             "2–8 that repeat an earlier bar of the window over that of the other bars 2–8; "
             "*paired*: median KL(repeat)/KL(first occurrence); *follow*: share of B's repeats "
             "of its bar 1 that repeat the output's (new) bar 1 after A's first latent is put "
             "into B; *spurious*: share of B's other bars that become copies of it; *kept*: "
             "share of B's other bars that keep their rhythm; ELBO: reconstruction + KL bits "
             "per bar (lower is better). The design: a per-bar choice between generating and "
             "copying (edit chance 0.02 per step), the pointer loss (weight 1) through the "
             "whole run, and a quarter of the training windows given one extra exact repeat at "
             "a random offset. Each ablation changes one of these at β 0.3 (*fading*: the "
             "pointer loss for the first quarter of the run, gone by the half); the stock "
             "model has no copy path and no augmentation.", ""]
    rows = [[v["label"], fmt(v["beta"], 2), fmt(v["kl_bits_per_bar"], 1),
             fmt(v["kl_repeated_new_ratio"], 2), fmt(v["kl_paired_ratio"], 2),
             fmt(v["transfer_follow_rate"], 2), fmt(v["transfer_spurious_rate"], 3),
             fmt(v["transfer_other_kept"], 2), fmt(v["tf_accuracy"]), fmt(v["free_accuracy"]),
             fmt(v["elbo_bits_per_bar"], 1), fmt(v["copy_share_repeated"], 2)]
            for v in result["variants"]]
    lines += table(["model", "β", "KL bits/bar", "rep/new", "paired", "follow", "spurious",
                    "kept", "TF acc", "free acc", "ELBO bits/bar", "copy weight on repeats"],
                   rows)
    cases = result["variants"][0]["transfer_cases"] if result["variants"] else 0
    lines += [f"Transfer cases (B repeats its bar 1, A another song in B's meter): {cases}.", ""]
    lines += _findings(result["variants"])
    return lines + ["", f"![Rate–distortion and transfer]({figures}{result['figures'][0]})", ""]


def _findings(rows: list[dict[str, Any]]) -> list[str]:
    """One line per beta: the design against the stock model on the structure numbers."""
    lines = []
    by = {(r["label"], r["beta"]): r for r in rows}
    for (label, beta), design in by.items():
        stock = by.get((STOCK, beta))
        if label != DESIGN or stock is None:
            continue
        lines.append(
            f"- β {beta}: repeated bars cost {fmt(design['kl_repeated_new_ratio'], 2)}× new "
            f"bars with the copy path against {fmt(stock['kl_repeated_new_ratio'], 2)}× without "
            f"(paired {fmt(design['kl_paired_ratio'], 2)} vs {fmt(stock['kl_paired_ratio'], 2)});"
            f" transfer follows in {fmt(design['transfer_follow_rate'], 2)} vs "
            f"{fmt(stock['transfer_follow_rate'], 2)}; free-running accuracy "
            f"{fmt(design['free_accuracy'])} vs {fmt(stock['free_accuracy'])} at "
            f"{fmt(design['kl_bits_per_bar'], 1)} vs {fmt(stock['kl_bits_per_bar'], 1)} KL bits "
            f"per bar; ELBO {fmt(design['elbo_bits_per_bar'], 1)} vs "
            f"{fmt(stock['elbo_bits_per_bar'], 1)} bits per bar.")
    return lines
