"""Experiment `tf`: can the model reconstruct without teacher forcing?

The same model is trained under each teacher-forcing schedule (constant 1, linear, exponential,
inverse sigmoid, Drossos et al.'s logistic with three settings, constant 0) and evaluated on the
test split teacher-forced (each bar decoded from the true previous bars) and free-running (from
its own previous bars, as at inference). The decaying schedules are scaled to the run's length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from experiments.common import (
    Context,
    batches_per_epoch,
    eval_windows,
    finish,
    fmt,
    load_songs,
    plt,
    save_figure,
    settings,
    table,
    train_run,
    valid_curve,
)
from tvae.config import TrainConfig
from tvae.eval.windows import evaluate_windows
from tvae.training.schedules import tf_at

TITLE = "Teacher forcing: reconstruction without it"
QUESTION = ("Does a model trained with teacher forcing (p_tf = 1) still reconstruct when it "
            "decodes from its own previous bars, and do scheduled-sampling schedules that lower "
            "p_tf during training close the gap between teacher-forced and free-running "
            "accuracy?")
FULL_STEPS = 1200  # per run: 70 ms a step at p_tf = 1, 95-120 ms below (one core); 8 runs
FULL_MINUTES = 0.0  # no time cap: runs stop at FULL_STEPS, so they compare step for step


@dataclass(frozen=True)
class Schedule:
    key: str  # run folder name
    label: str  # legend and table label
    config: TrainConfig


def inverse_sigmoid_k(midpoint: float) -> float:
    """k of p = k / (k + exp(step / k)) such that p = 0.5 at step `midpoint` (k ln k = midpoint),
    by bisection; at least 1."""
    lo, hi = 1.0, max(2.0, midpoint + 2.0)
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mid * math.log(mid) < midpoint else (lo, mid)
    return (lo + hi) / 2


def schedules(base: TrainConfig, steps: int, batches: int) -> list[Schedule]:
    """The compared schedules, scaled so that the decaying ones span `steps`."""
    epochs = steps / batches
    gamma = 4.0 / epochs  # logistic: tanh(gamma * epochs / 2) = 0.96 at the end
    k_exp = 0.05 ** (1.0 / steps)  # exponential: p = 0.05 at the end
    k_sig = inverse_sigmoid_k(steps / 2)  # inverse sigmoid: p = 0.5 halfway

    def cfg(**kw: Any) -> TrainConfig:
        return replace(base, **kw)

    def logistic(g: float, p_min: float, p_max: float) -> Schedule:
        return Schedule(f"logistic_g{g * epochs:g}_{p_min:g}_{p_max:g}",
                        f"logistic γ={g:.3g}, p∈[{p_min:g}, {p_max:g}]",
                        cfg(tf_schedule="logistic", tf_gamma=g, tf_min=p_min, tf_max=p_max))

    return [
        Schedule("constant_1", "constant 1", cfg(tf_schedule="constant", tf_p=1.0)),
        Schedule("linear", "linear 1 → 0", cfg(tf_schedule="linear", tf_max=1.0, tf_min=0.0,
                                               tf_steps=steps)),
        Schedule("exponential", f"exponential k={k_exp:.5f}",
                 cfg(tf_schedule="exponential", tf_k=k_exp, tf_min=0.0)),
        Schedule("inverse_sigmoid", f"inverse sigmoid k={k_sig:.1f}",
                 cfg(tf_schedule="inverse_sigmoid", tf_k=k_sig, tf_min=0.0)),
        logistic(gamma, 0.0, 1.0),
        logistic(gamma, 0.5, 1.0),
        logistic(3 * gamma, 0.25, 0.9),
        Schedule("constant_0", "constant 0", cfg(tf_schedule="constant", tf_p=0.0)),
    ]


def run(ctx: Context) -> dict[str, Any]:
    from tvae.training.plots import plot_schedule

    songs = load_songs(ctx)
    base = ctx.train_config(FULL_STEPS, FULL_MINUTES)
    steps = base.max_steps
    batches = batches_per_epoch(songs, ctx.scale.data, base.batch_size)
    windows = eval_windows(ctx, songs)
    runs = []
    for sched in schedules(base, steps, batches):
        trained, info = train_run(ctx, songs, sched.key, ctx.scale.model, sched.config)
        metrics = evaluate_windows(trained.model, windows, max_windows=ctx.scale.eval_windows)
        runs.append({
            "key": sched.key, "label": sched.label, **info,
            "p_tf": [round(tf_at(s, sched.config, batches), 4)
                     for s in (0, steps // 4, steps // 2, 3 * steps // 4, steps)],
            "tf_accuracy": metrics["tf_accuracy"], "free_accuracy": metrics["free_accuracy"],
            "gap": _gap(metrics), "kl_bits_per_bar": metrics["kl_bits_per_bar"],
            "curve": dict(zip(("steps", "free_accuracy"),
                              valid_curve(info["run"], "free_accuracy"), strict=True)),
        })
    configs = {s.label: s.config for s in schedules(base, steps, batches)}
    figures = [plot_schedule(configs, steps, batches, ctx.figure("schedules")).name,
               _plot_curves(ctx, runs)]
    result = {"settings": settings(ctx, base, steps=steps, batches_per_epoch=batches,
                                   windows=metrics["windows"]),
              "runs": runs, "figures": figures}
    return finish(ctx, result, TITLE, QUESTION, render)


def _gap(metrics: dict[str, Any]) -> float | None:
    if metrics["tf_accuracy"] is None or metrics["free_accuracy"] is None:
        return None
    return round(metrics["tf_accuracy"] - metrics["free_accuracy"], 6)


def _plot_curves(ctx: Context, runs: list[dict[str, Any]]) -> str:
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in runs:
        ax.plot(r["curve"]["steps"], r["curve"]["free_accuracy"], marker="o", markersize=3,
                label=r["label"])
    ax.set_xlabel("training step")
    ax.set_ylabel("free-running accuracy (validation)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, ctx.figure("free_accuracy"))


def render(result: dict[str, Any], figures: str) -> list[str]:
    runs = result["runs"]
    rows = [[r["label"], " → ".join(f"{p:.2f}" for p in r["p_tf"][::2]), str(r["steps"]),
             fmt(r["tf_accuracy"]), fmt(r["free_accuracy"]), fmt(r["gap"]),
             fmt(r["kl_bits_per_bar"], 2)] for r in runs]
    s = result["settings"]
    lines = [f"Each run: {s['steps']} steps at most ({s['batches_per_epoch']} per epoch); "
             f"evaluated on {s['windows']} non-overlapping {s['eval_bars']}-bar windows of the "
             f"'{s['split']}' split with z = posterior mean. Accuracy counts non-PAD steps.", ""]
    lines += table(["schedule", "p_tf start → mid → end", "steps", "teacher-forced acc",
                    "free-running acc", "gap", "KL bits/bar"], rows)
    lines += _findings(runs)
    lines += ["", f"![teacher-forcing schedules]({figures}{result['figures'][0]})", "",
              f"![free-running accuracy during training]({figures}{result['figures'][1]})", ""]
    return lines


def _findings(runs: list[dict[str, Any]]) -> list[str]:
    scored = [r for r in runs if r["free_accuracy"] is not None]
    if not scored:
        return ["No run produced a free-running accuracy."]
    best = max(scored, key=lambda r: r["free_accuracy"])
    by_key = {r["key"]: r for r in runs}
    lines = [f"Best free-running accuracy: {best['label']} ({fmt(best['free_accuracy'])})."]
    forced = by_key.get("constant_1")
    if forced and forced["gap"] is not None:
        lines.append(f"With p_tf = 1 the model scores {fmt(forced['tf_accuracy'])} "
                     f"teacher-forced and {fmt(forced['free_accuracy'])} free-running "
                     f"(gap {fmt(forced['gap'])}); the smallest gap is "
                     f"{fmt(min(r['gap'] for r in scored if r['gap'] is not None))}.")
        beaten = [r["label"] for r in scored if r["free_accuracy"] > forced["free_accuracy"]]
        lines.append("Schedules with a higher free-running accuracy than p_tf = 1: "
                     + (", ".join(beaten) if beaten else "none") + ".")
    return lines
