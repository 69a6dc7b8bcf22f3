"""Experiment `masking`: the fully-masked model against two ablations.

Three models differ only in their masks: the paper's (causal encoder, causal decoder, decoder bar
i attending to z_1..z_i), one with a bidirectional encoder (mask_encoder=False) and one whose
decoder sees every latent (mask_cross=False). Each is scored on the KL of bars that repeat an
earlier bar of their window against new bars, and on context transfer: A's first bar put into
B's latents (`TrainedModel.transfer`), counting how many of B's bar-repeat pairs survive.

Shape legend: N bars, S steps per bar, P pairs.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

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
from tvae.config import PAD, REST, GridConfig
from tvae.data.dataset import SongArrays
from tvae.eval.windows import evaluate_windows
from tvae.inference import TrainedModel
from tvae.melody import Melody, bars_to_melody, melody_to_bars, meter_steps

TITLE = "Masking: repeated bars and context transfer"
QUESTION = ("The paper masks the encoder (bar i's latent sees bars 1..i only) and the decoder's "
            "cross-attention (bar i reads z_1..z_i). Do these masks make a bar that repeats an "
            "earlier bar cheaper in KL than a new bar, and does context transfer keep the bar "
            "repeats of song B, compared with models trained without either mask?")
VARIANTS = [  # run key, label, ModelConfig changes
    ("full", "fully masked", {}),
    ("no_encoder_mask", "mask_encoder=False", {"mask_encoder": False}),
    ("no_cross_mask", "mask_cross=False", {"mask_cross": False}),
]
FULL_STEPS = 3000  # per run: 95-120 ms a step (p_tf < 1, one core), ~5.5 min a run, 3 runs
FULL_MINUTES = 0.0  # no time cap: runs stop at FULL_STEPS, so they compare step for step
PAIRS = {True: 3, False: 150}  # transfer pairs: quick, full


def repeat_pairs(tokens: np.ndarray) -> np.ndarray:
    """(P, 2) pairs (i, j), i < j, of real bars where bar j equals bar i. tokens (N, S)."""
    same = (tokens[:, None] == tokens[None, :]).all(-1)  # (N, N)
    real = (tokens != PAD).any(-1)  # (N,)
    i, j = np.nonzero(np.triu(same, 1) & real[:, None])
    return np.stack([i, j], axis=1)


def other_pairs(tokens: np.ndarray) -> np.ndarray:
    """(P, 2) pairs (i, j), i < j, of real bars that differ. tokens (N, S)."""
    real = (tokens != PAD).any(-1)  # (N,)
    differ = ~(tokens[:, None] == tokens[None, :]).all(-1)  # (N, N)
    i, j = np.nonzero(np.triu(differ, 1) & real[:, None] & real[None, :])
    return np.stack([i, j], axis=1)


def bar_rows(melody: Melody, n_bars: int, grid: GridConfig) -> np.ndarray:
    """(n_bars, S) tokens of `melody`; melody_to_bars drops trailing silence, so silent bars
    fill up to `n_bars`."""
    tokens = melody_to_bars(melody, grid).tokens[:n_bars]
    if len(tokens) < n_bars:
        silent = np.full((n_bars - len(tokens), grid.steps_per_bar), PAD, dtype=np.int64)
        silent[:, : meter_steps(melody.meter)] = REST
        tokens = np.concatenate([tokens, silent])
    return tokens


def song_pairs(songs: SongArrays, split: str, n: int, seed: int = 0) -> list[tuple[int, int]]:
    """Up to `n` (A, B) song pairs of `split` in one meter, B having at least one repeat."""
    chosen = np.flatnonzero(songs.splits == split)
    with_repeats = [int(i) for i in chosen if len(repeat_pairs(songs.song(int(i)).tokens))]
    rng = np.random.default_rng(seed)
    pairs = []
    for b in rng.permutation(with_repeats):
        partners = [int(a) for a in chosen if a != b and songs.meters[a] == songs.meters[b]]
        if partners:
            pairs.append((int(rng.choice(partners)), int(b)))
        if len(pairs) == n:
            break
    return pairs


def _share(a: int, b: int) -> float | None:
    return round(a / b, 6) if b else None


def transfer_repeats(trained: TrainedModel, songs: SongArrays, pairs: list[tuple[int, int]]
                     ) -> dict[str, Any]:
    """For transfer (A's bar 1 into B) and plain reconstruction of B: the share of B's repeat
    pairs that are still repeats (`kept`; `kept_bar1` for pairs with bar 1), and of B's
    differing pairs that became identical (`spurious`)."""
    grid = trained.grid
    counts = {k: 0 for k in ("repeats", "repeats_bar1", "others")}
    for name in ("transfer", "reconstruction"):
        counts.update({f"{name}_kept": 0, f"{name}_kept_bar1": 0, f"{name}_spurious": 0})
    for a, b in pairs:
        bars_b = songs.song(b)
        melody_a, melody_b = bars_to_melody(songs.song(a), grid), bars_to_melody(bars_b, grid)
        rep, oth = repeat_pairs(bars_b.tokens), other_pairs(bars_b.tokens)
        bar1 = rep[:, 0] == 0  # (P,)
        counts["repeats"] += len(rep)
        counts["repeats_bar1"] += int(bar1.sum())
        counts["others"] += len(oth)
        outputs = {"transfer": trained.transfer(melody_a, melody_b, bars=(0,)),
                   "reconstruction": trained.reconstruct(melody_b)}
        for name, melody in outputs.items():
            tokens = bar_rows(melody, bars_b.n_bars, grid)  # (N, S)
            kept = (tokens[rep[:, 0]] == tokens[rep[:, 1]]).all(-1)  # (P,)
            counts[f"{name}_kept"] += int(kept.sum())
            counts[f"{name}_kept_bar1"] += int(kept[bar1].sum())
            spurious = (tokens[oth[:, 0]] == tokens[oth[:, 1]]).all(-1)  # (P',)
            counts[f"{name}_spurious"] += int(spurious.sum())
    result: dict[str, Any] = {"pairs": len(pairs), **counts}
    for name in ("transfer", "reconstruction"):
        result[name] = {"kept": _share(counts[f"{name}_kept"], counts["repeats"]),
                        "kept_bar1": _share(counts[f"{name}_kept_bar1"], counts["repeats_bar1"]),
                        "spurious": _share(counts[f"{name}_spurious"], counts["others"])}
    return result


def run(ctx: Context) -> dict[str, Any]:
    songs = load_songs(ctx)
    base = ctx.train_config(FULL_STEPS, FULL_MINUTES)
    base = replace(base, tf_schedule="linear", tf_max=1.0, tf_min=0.5, tf_steps=base.max_steps)
    windows = eval_windows(ctx, songs)
    pairs = song_pairs(songs, ctx.split, PAIRS[ctx.quick])
    variants = []
    for key, label, changes in VARIANTS:
        model = replace(ctx.scale.model, **changes)
        trained, info = train_run(ctx, songs, key, model, base)
        metrics = evaluate_windows(trained.model, windows, max_windows=ctx.scale.eval_windows)
        ctx.log(f"transfer on {len(pairs)} pairs with {key}")
        variants.append({
            "key": key, "label": label, **info, **{k: metrics[k] for k in (
                "tf_accuracy", "free_accuracy", "kl_bits_per_bar", "kl_bits_repeated",
                "kl_bits_new", "repeated_bars", "windows")},
            "transfer": transfer_repeats(trained, songs, pairs),
        })
    result = {"settings": settings(ctx, base, tf="linear 1 → 0.5", pairs=len(pairs)),
              "variants": variants, "figures": [_plot(ctx, variants)]}
    return finish(ctx, result, TITLE, QUESTION, render)


def _plot(ctx: Context, variants: list[dict[str, Any]]) -> str:
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    x = np.arange(len(variants))
    for k, (key, label) in enumerate([("kl_bits_repeated", "repeated bars"),
                                      ("kl_bits_new", "new bars")]):
        left.bar(x + (k - 0.5) * 0.4, [v[key] or 0.0 for v in variants], 0.4, label=label)
    left.set_ylabel("KL (bits per bar)")
    bars = [("transfer", "kept", "transfer: repeats kept"),
            ("reconstruction", "kept", "reconstruction: repeats kept"),
            ("transfer", "spurious", "transfer: new repeats")]
    for k, (name, key, label) in enumerate(bars):
        right.bar(x + (k - 1) * 0.27, [v["transfer"][name][key] or 0.0 for v in variants], 0.27,
                  label=label)
    right.set_ylabel("share of bar pairs")
    right.set_ylim(0, 1)
    for ax in (left, right):
        ax.set_xticks(x, [v["label"] for v in variants], fontsize=8)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, ctx.figure("results"))


def render(result: dict[str, Any], figures: str) -> list[str]:
    variants, s = result["variants"], result["settings"]
    lines = [f"Each model: {s['train']['max_steps']} steps at most, p_tf {s['tf']}. KL on "
             f"non-overlapping {s['eval_bars']}-bar windows of the '{s['split']}' split (a bar "
             "is *repeated* when it equals an earlier bar of its window). Transfer: "
             f"{s['pairs']} pairs (A, B) of '{s['split']}' songs in one meter, A's bar 1 put "
             "into B; *kept* is the share of B's repeat pairs (i < j, bar j = bar i) that are "
             "still identical in the output, *spurious* the share of B's differing pairs that "
             "became identical. Reconstruction of B is the reference.", ""]
    rows = [[v["label"], str(v["steps"]), fmt(v["kl_bits_repeated"], 2), fmt(v["kl_bits_new"], 2),
             fmt(v["tf_accuracy"]), fmt(v["free_accuracy"]), fmt(v["transfer"]["transfer"]["kept"]),
             fmt(v["transfer"]["transfer"]["kept_bar1"]),
             fmt(v["transfer"]["transfer"]["spurious"]),
             fmt(v["transfer"]["reconstruction"]["kept"])] for v in variants]
    lines += table(["model", "steps", "KL repeated", "KL new", "teacher-forced acc",
                    "free-running acc", "transfer: kept", "kept (pairs with bar 1)",
                    "transfer: spurious", "reconstruction: kept"], rows)
    t = variants[0]["transfer"] if variants else {}
    lines += [f"Repeat pairs in the B songs: {t.get('repeats', 0)} ({t.get('repeats_bar1', 0)} "
              f"with bar 1); differing pairs: {t.get('others', 0)}.", ""]
    lines += _findings(variants)
    return lines + ["", f"![KL and transfer by model]({figures}{result['figures'][0]})", ""]


def _findings(variants: list[dict[str, Any]]) -> list[str]:
    lines = []
    for v in variants:
        rep, new = v["kl_bits_repeated"], v["kl_bits_new"]
        if rep is not None and new is not None:
            verdict = "cheaper" if rep < new else "not cheaper"
            lines.append(f"- {v['label']}: repeated bars cost {fmt(rep, 2)} bits against "
                         f"{fmt(new, 2)} for new bars ({verdict}).")
    full, others = variants[0], variants[1:]
    kept = full["transfer"]["transfer"]["kept"]
    if kept is not None and others:
        rivals = [o for o in others if o["transfer"]["transfer"]["kept"] is not None]
        beaten = sum(kept > o["transfer"]["transfer"]["kept"] for o in rivals)
        lines.append(f"- In transfer the fully masked model keeps {fmt(kept)} of B's repeats, "
                     f"more than {beaten} of the {len(rivals)} ablations ("
                     + ", ".join(f"{o['label']} {fmt(o['transfer']['transfer']['kept'])}"
                                 for o in rivals) + ").")
    return lines
