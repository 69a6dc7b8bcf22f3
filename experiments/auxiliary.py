"""Experiment `aux`: a collection classifier on the mean latent, trained from few labels.

Only a small share of the training songs keep their collection label (the rest are unlabelled,
label id -1, which the loss ignores). The loss is λ · reconstruction + β · KL + classification;
λ = 0 trains the classifier alone, λ > 0 adds the unsupervised reconstruction of every window.
Each λ is trained with several seeds (the seed also picks the labelled songs) and scored on the
test split's non-overlapping windows: accuracy, balanced accuracy (mean recall over classes),
and the majority-class baseline.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

import numpy as np

from experiments.common import (
    Context,
    eval_windows,
    finish,
    fmt,
    load_songs,
    mean_std,
    plt,
    save_figure,
    settings,
    table,
    train_run,
)
from tvae.config import TrainConfig
from tvae.data.dataset import SongArrays
from tvae.eval.windows import evaluate_windows, predict_classes

TITLE = "Auxiliary classifier: does reconstruction help with few labels?"
QUESTION = ("With a collection classifier on the mean latent and only a small share of the "
            "training songs labelled, does adding the reconstruction loss (λ > 0) predict a "
            "tune's collection from its bars better than the classifier alone (λ = 0), and "
            "better than always guessing the majority class?")
LAMBDAS = (0.0, 2.0, 10.0)
SEEDS = {True: (0, 1), False: (0, 1, 2)}  # quick, full
LABELLED = {True: 0.5, False: 0.1}  # share of train songs that keep their label
FULL_STEPS = 1600  # per run: ~72 ms a step (p_tf = 1, one core), ~2 min a run, 9 runs
FULL_MINUTES = 0.0  # no time cap: runs stop at FULL_STEPS, so they compare step for step


def partial_labels(songs: SongArrays, fraction: float, seed: int) -> SongArrays:
    """A copy of `songs` where only `fraction` of the train songs (chosen by `seed`) keep their
    label; valid and test songs keep theirs (training never reads them)."""
    if songs.labels is None:
        raise ValueError("songs have no labels")
    train = np.flatnonzero(songs.splits == "train")
    n = min(len(train), max(1, round(fraction * len(train))))
    keep = set(np.random.default_rng(seed).choice(train, size=n, replace=False).tolist())
    labels = [label if split != "train" or i in keep else ""
              for i, (label, split) in enumerate(zip(songs.labels, songs.splits, strict=True))]
    return replace(songs, labels=labels)


def label_ids(songs: SongArrays, names: list[str]) -> np.ndarray:
    """(n_songs,) class id of each song's label in `names` order; -1 for none or unknown."""
    lookup = {name: i for i, name in enumerate(names)}
    return np.array([lookup.get(label, -1) for label in songs.labels or []], dtype=np.int64)


def scores(predicted: np.ndarray, truth: np.ndarray, majority: int) -> dict[str, float | None]:
    """Accuracy, balanced accuracy (mean recall over the classes present) and the accuracy of
    always answering `majority`, over the entries with truth >= 0."""
    known = truth >= 0
    if not known.any():
        return dict.fromkeys(("accuracy", "balanced_accuracy", "chance", "chance_balanced"))
    p, t = predicted[known], truth[known]
    recalls = [float((p[t == c] == c).mean()) for c in np.unique(t)]
    return {"accuracy": float((p == t).mean()), "balanced_accuracy": float(np.mean(recalls)),
            "chance": float((t == majority).mean()), "chance_balanced": 1.0 / len(recalls)}


def _base(ctx: Context) -> TrainConfig:
    """The runs' TrainConfig before λ and the seed: teacher forcing throughout."""
    return ctx.train_config(FULL_STEPS, FULL_MINUTES, tf_schedule="constant", tf_p=1.0)


def _one_run(ctx: Context, songs: SongArrays, lam: float, seed: int) -> dict[str, Any]:
    fraction = LABELLED[ctx.quick]
    subset = partial_labels(songs, fraction, seed)
    cfg = replace(_base(ctx), recon_weight=lam, class_weight=1.0, seed=seed)
    trained, info = train_run(ctx, subset, f"lambda{lam:g}_seed{seed}", ctx.scale.model, cfg,
                              extra={"label_column": "collection", "labelled": fraction})
    names = trained.meta["labels"]
    ids = label_ids(subset, names)
    counts = Counter(ids[(subset.splits == "train") & (ids >= 0)].tolist())
    windows = eval_windows(ctx, songs)
    truth = label_ids(songs, names)[windows.song]  # (W,)
    majority = counts.most_common(1)[0][0] if counts else -1
    result = scores(predict_classes(trained.model, windows), truth, majority)
    metrics = evaluate_windows(trained.model, windows, max_windows=ctx.scale.eval_windows,
                               free=False)
    return {"lambda": lam, "seed": seed, **info, "labelled_songs": sum(counts.values()),
            "classes": names, "windows": len(windows), **result,
            "tf_accuracy": metrics["tf_accuracy"]}


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample standard deviation over seeds, per λ."""
    out = []
    for lam in sorted({r["lambda"] for r in runs}):
        group = [r for r in runs if r["lambda"] == lam]
        row: dict[str, Any] = {"lambda": lam, "seeds": len(group)}
        for key in ("accuracy", "balanced_accuracy", "chance", "chance_balanced", "tf_accuracy"):
            values = [r[key] for r in group if r[key] is not None]
            row[f"{key}_mean"], row[f"{key}_std"] = mean_std(values)
        out.append(row)
    return out


def run(ctx: Context) -> dict[str, Any]:
    songs = load_songs(ctx, label_column="collection")
    runs = [_one_run(ctx, songs, lam, seed) for lam in LAMBDAS for seed in SEEDS[ctx.quick]]
    summary = summarize(runs)
    result = {"settings": settings(ctx, _base(ctx), labelled=LABELLED[ctx.quick],
                                   lambdas=list(LAMBDAS), seeds=list(SEEDS[ctx.quick])),
              "runs": runs, "summary": summary, "figures": [_plot(ctx, summary)]}
    return finish(ctx, result, TITLE, QUESTION, render)


def _plot(ctx: Context, summary: list[dict[str, Any]]) -> str:
    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(len(summary))
    for k, key in enumerate(("accuracy", "balanced_accuracy")):
        ax.bar(x + (k - 0.5) * 0.4, [s[f"{key}_mean"] or 0.0 for s in summary], 0.4,
               yerr=[s[f"{key}_std"] or 0.0 for s in summary], capsize=4,
               label=key.replace("_", " "))
    chance = [s["chance_mean"] for s in summary if s["chance_mean"] is not None]
    if chance:
        ax.axhline(float(np.mean(chance)), color="gray", linestyle="--",
                   label="majority class (accuracy)")
    ax.set_xticks(x, [f"λ = {s['lambda']:g}" for s in summary])
    ax.set_ylim(0, 1)
    ax.set_ylabel("test windows")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return save_figure(fig, ctx.figure("accuracy"))


def render(result: dict[str, Any], figures: str) -> list[str]:
    s, summary, runs = result["settings"], result["summary"], result["runs"]
    first = runs[0] if runs else {"classes": [], "labelled_songs": 0, "windows": 0}
    lines = [f"Labels: the manifest's `collection` ({', '.join(first['classes'])}); "
             f"{s['labelled']:.0%} of the train songs keep theirs ({first['labelled_songs']} "
             f"songs with seed 0). Each run: {s['train']['max_steps']} steps at most, p_tf = 1, "
             f"class weight 1; seeds {s['seeds']}. Scored on {first['windows']} non-overlapping "
             f"{s['eval_bars']}-bar windows of the '{s['split']}' split. Chance: always the "
             "majority class of the labelled songs (its balanced accuracy is 1 / classes "
             "present). Mean ± sample std over seeds.", ""]

    def pm(row: dict[str, Any], key: str) -> str:
        return f"{fmt(row[f'{key}_mean'])} ± {fmt(row[f'{key}_std'])}"

    rows = [[f"{row['lambda']:g}", str(row["seeds"]), pm(row, "accuracy"), fmt(row["chance_mean"]),
             pm(row, "balanced_accuracy"), fmt(row["chance_balanced_mean"]),
             pm(row, "tf_accuracy")] for row in summary]
    lines += table(["λ (recon weight)", "seeds", "accuracy", "chance (majority)",
                    "balanced accuracy", "chance (balanced)", "teacher-forced recon acc"], rows)
    lines += verdict(summary)
    return lines + ["", f"![classification accuracy by λ]({figures}{result['figures'][0]})", ""]


def verdict(summary: list[dict[str, Any]]) -> list[str]:
    """Whether λ > 0 beats λ = 0 by more than the seed spread, and each λ beats chance."""
    base = next((r for r in summary if r["lambda"] == 0), None)
    others = [r for r in summary if r["lambda"] > 0 and r["accuracy_mean"] is not None]
    if base is None or base["accuracy_mean"] is None or not others:
        return ["Not enough runs for a verdict."]
    margin = [r["accuracy_mean"] - base["accuracy_mean"] for r in others]
    spread = [max(r["accuracy_std"], base["accuracy_std"]) for r in others]
    if all(m > s for m, s in zip(margin, spread, strict=True)):
        word = "holds: every λ > 0 beats λ = 0 by more than the seed spread"
    elif all(m <= 0 for m in margin):
        word = "does not hold: no λ > 0 beats λ = 0 on average"
    else:
        word = "is not supported: some λ > 0 beat λ = 0, but within the seed spread"
    lines = [f"Hypothesis (reconstruction helps the classifier) {word}; accuracy minus "
             "λ = 0's (larger std of the two): "
             + ", ".join(f"λ = {r['lambda']:g}: {m:+.3f} ({s:.3f})" for r, m, s in
                         zip(others, margin, spread, strict=True)) + "."]
    for r in summary:
        if r["accuracy_mean"] is None or r["chance_mean"] is None:
            continue
        plain = r["accuracy_mean"] - r["chance_mean"] > (r["accuracy_std"] or 0.0)
        balanced = r["balanced_accuracy_mean"] - r["chance_balanced_mean"] > (
            r["balanced_accuracy_std"] or 0.0)
        lines.append(f"λ = {r['lambda']:g}: accuracy {fmt(r['accuracy_mean'])} is "
                     f"{'above' if plain else 'not clearly above'} the majority class "
                     f"({fmt(r['chance_mean'])}); balanced accuracy "
                     f"{fmt(r['balanced_accuracy_mean'])} is "
                     f"{'above' if balanced else 'not clearly above'} 1 / classes "
                     f"({fmt(r['chance_balanced_mean'])}).")
    return lines
