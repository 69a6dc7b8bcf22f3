"""Which repeats does the decoder copy from the wrong bar? For each exact repeat of a split's
windows (as `tvae evaluate` reads them: z = posterior mean), the decoder's choice (the pointer's
likeliest) is compared with the bars identical to it; the misses are counted by the distance of
the nearest identical bar and by what was chosen instead (generate, or a bar how many back and
how many steps away), with the songs they come from and the pointer's weights there. It also
prints, per offset o, how much the posterior's repeat vector for "an identical bar o back"
(`--latent-repeats`) raises the pointer's logit for copying o back: an offset the training
data seldom held has a small gain, and its repeats are copied from a commoner offset. And,
decoding free-running, whether the repeats copied from an identical bar come out as their
decoded source does (so that a repeat is exact exactly when its source was decoded exactly).

    python -m experiments.copy_misses MODEL [--data corpus] [--split test] [--json OUT]
    python -m experiments.copy_misses --training-batches 60 [--data corpus]

The second form reads no model: it draws training batches as `tvae train`'s defaults do
(augmentation included, seed 0) and counts, per offset, the repeats whose only identical earlier
bar lies that far back (the cases that teach the pointer that offset and no other) and those
with an identical bar there at all.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from typing import Any

import numpy as np
import torch

from experiments.common import split_windows
from tvae.config import PAD, DataConfig
from tvae.data.dataset import load_songs
from tvae.data.windows import Windows
from tvae.eval.structure import DISTANCE_BUCKETS, bucket_name, nearest_offset, repeated_bars
from tvae.inference import load_model
from tvae.model.pointer import choose, copy_target, offsets, same_bars, step_differences


def copy_misses(model: torch.nn.Module, tokens: torch.Tensor, meters: torch.Tensor,
                songs: np.ndarray) -> dict[str, Any]:
    """tokens (W, N, S), meters (W, N) of W windows, songs (W,) their song ids -> per bucket the
    repeats, the misses, and the misses grouped by (nearest identical offset, what was chosen)."""
    with torch.no_grad():
        mu, _ = model.encode(tokens, meters)
        real = (tokens != PAD).any(-1)  # (W, N)
        log_pi, _ = model.pointer_weights(mu, real)  # (W, N, 1 + N)
    choice = choose(log_pi)  # (W, N): 0 generate, 1 + j copy bar j
    rep, offset = repeated_bars(tokens), nearest_offset(tokens)  # (W, N)
    same, diff = same_bars(tokens), step_differences(tokens)  # (W, N, N)
    out: dict[str, Any] = {}
    for lo, hi in DISTANCE_BUCKETS:
        at = rep & (offset >= lo) & (offset <= hi)
        groups: Counter = Counter()
        seen: dict[str, Counter] = defaultdict(Counter)
        weights: dict[str, list[float]] = defaultdict(list)
        for w, k in torch.nonzero(at).tolist():
            c = int(choice[w, k])
            if c > 0 and bool(same[w, k, c - 1]):
                continue
            true = int(offset[w, k])
            what = ("generate" if c == 0 else
                    f"copy {k - (c - 1)} back ({int(diff[w, k, c - 1])} steps differ)")
            key = f"nearest identical {true} back -> {what}"
            groups[key] += 1
            seen[key][int(songs[w])] += 1
            weights[key].append(float(log_pi[w, k, 1 + k - true].exp()))
        n = int(at.sum())
        out[bucket_name(lo, hi)] = {
            "repeats": n, "misses": sum(groups.values()),
            "groups": [{"what": key, "count": count, "songs": dict(seen[key].most_common()),
                        "mean_weight_on_nearest_identical": float(np.mean(weights[key]))}
                       for key, count in groups.most_common()]}
    out["offsets_of_repeats"] = dict(sorted(Counter(offset[rep].tolist()).items()))
    return out


def copy_fidelity(model: torch.nn.Module, tokens: torch.Tensor, meters: torch.Tensor
                  ) -> dict[str, Any]:
    """Free-running (as `tvae evaluate` decodes), per bucket of the repeats that the decoder
    copies from an identical bar: how many are decoded exactly, how many of their sources were,
    and how many come out as their decoded source does (a copy that keeps every step of
    it); and how many new bars (2..N) and first bars are decoded exactly. A repeat whose copy
    keeps its source is exact exactly when its source was decoded exactly."""
    with torch.no_grad():
        mu, _ = model.encode(tokens, meters)
        real = (tokens != PAD).any(-1)  # (W, N)
        log_pi, _ = model.pointer_weights(mu, real)  # (W, N, 1 + N)
        decoded = model.free_run(mu, meters)  # (W, N, S)
    target = tokens != PAD
    exact = ((decoded == tokens) | ~target).all(-1)  # (W, N)
    choice = choose(log_pi)
    source = (choice - 1).clamp(min=0)  # (W, N) the copied bar (0 where generated)
    right = (choice > 0) & same_bars(tokens).gather(2, source[..., None])[..., 0]
    W, N, S = tokens.shape
    copied = decoded.gather(1, source[..., None].expand(W, N, S))  # (W, N, S) decoded source
    keeps = ((decoded == copied) | ~target).all(-1)  # (W, N)
    source_exact = exact.gather(1, source)  # (W, N)
    rep, offset = repeated_bars(tokens), nearest_offset(tokens)
    out: dict[str, Any] = {}
    for lo, hi in DISTANCE_BUCKETS:
        at = rep & right & (offset >= lo) & (offset <= hi)
        out[bucket_name(lo, hi)] = {"copied_right": int(at.sum()),
                                    "exact": int((exact & at).sum()),
                                    "source_exact": int((source_exact & at).sum()),
                                    "keeps_decoded_source": int((keeps & at).sum())}
    new = real & ~rep
    new[:, 0] = False
    out["new_bars"] = {"bars": int(new.sum()), "exact": int((exact & new).sum())}
    out["first_bars"] = {"bars": int(real[:, 0].sum()), "exact": int((exact & real)[:, 0].sum())}
    return out


def repeat_vector_gain(model: torch.nn.Module) -> list[float] | None:
    """Per offset o (1..O): the pointer's logit gain for copying o back, in nats, from the
    posterior's repeat vector for an identical bar o back: w_o . r_o. None without them."""
    if getattr(model, "repeats_mu", None) is None or model.pointer is None:
        return None
    first = 1 + int(model.learn_edit)  # pointer rows: [edit chance,] generate, offsets 1..O
    rows = model.pointer.weight.detach()  # (1 [+ 1] + O, Z)
    vectors = model.repeats_mu.weight.detach()  # (Z, 2 O)
    O = model.config.copy_offsets  # noqa: E741 (the shape legend's name)
    return [float(rows[first + o - 1] @ vectors[:, o - 1]) for o in range(1, O + 1)]


def training_offsets(data_dir: str, batches: int, seed: int = 0) -> dict[str, list[int]]:
    """Per offset 1..O of the default config: the repeats of `batches` training batches (drawn
    with augmentation, as training draws them) whose only identical earlier bar in reach is that
    far back ("sole"), and those with one there ("any")."""
    from tvae.config import GridConfig, ModelConfig, TrainConfig

    grid, data, reach = GridConfig(), DataConfig(), ModelConfig().copy_offsets
    songs, _ = load_songs(data_dir, grid, data, progress=False)
    windows = Windows(songs, "train", data, grid)
    rng = np.random.default_rng(seed)
    sole, any_ = np.zeros(reach + 1, dtype=np.int64), np.zeros(reach + 1, dtype=np.int64)
    for _ in range(batches):
        rows = rng.choice(len(windows), TrainConfig().batch_size, replace=False)
        tokens = torch.as_tensor(windows.batch(rows, rng, trim=True)[0])  # (B, N, S)
        off = offsets(tokens.shape[1], tokens.device)  # (N, N)
        ok = copy_target(tokens, reach)  # (B, N, N): bar j is identical to bar k, in reach
        pairs = off[None].expand_as(ok)[ok]  # the offset of every (repeat, identical source)
        any_ += np.bincount(pairs.numpy(), minlength=reach + 1)
        only = ok & (ok.sum(-1, keepdim=True) == 1)
        sole += np.bincount(off[None].expand_as(only)[only].numpy(), minlength=reach + 1)
    return {"sole": sole[1:].tolist(), "any": any_[1:].tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?")
    parser.add_argument("--training-batches", type=int, default=0,
                        help="count the offsets of repeats in this many training batches instead")
    parser.add_argument("--data", default="corpus")
    parser.add_argument("--split", default="test")
    parser.add_argument("--json", default=None, help="also write the result here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.training_batches:
        counts = training_offsets(args.data, args.training_batches)
        print(f"repeats in {args.training_batches} training batches, by offset: only source "
              "there / a source there")
        print(" ".join(f"{o}:{a}/{b}" for o, (a, b) in
                       enumerate(zip(counts["sole"], counts["any"], strict=True), 1)))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(counts, f, indent=1)
        return
    if args.model is None:
        parser.error("give a MODEL, or --training-batches N")
    trained = load_model(args.model)
    tokens, meters, windows = split_windows(trained, args.data, args.split)
    result = copy_misses(trained.model.eval(), tokens, meters, windows.song)
    for name in (bucket_name(lo, hi) for lo, hi in DISTANCE_BUCKETS):
        row = result[name]
        print(f"{name} bars back: {row['misses']} of {row['repeats']} repeats copied from a bar "
              "that is not identical")
        for group in row["groups"]:
            weight = group["mean_weight_on_nearest_identical"]
            print(f"  {group['count']:3d}  {group['what']}; songs {group['songs']}; pointer "
                  f"weight on the nearest identical bar {weight:.3f}")
    print("offsets of the repeats' nearest identical bars:", result["offsets_of_repeats"])
    fidelity = result["fidelity"] = copy_fidelity(trained.model.eval(), tokens, meters)
    print("free-running, repeats copied from an identical bar: exact / source decoded exactly "
          "/ decoded as their decoded source")
    for name in (bucket_name(lo, hi) for lo, hi in DISTANCE_BUCKETS):
        row = fidelity[name]
        print(f"  {name} bars back: {row['exact']} / {row['source_exact']} / "
              f"{row['keeps_decoded_source']} of {row['copied_right']}")
    for kind in ("new_bars", "first_bars"):
        row = fidelity[kind]
        print(f"{kind.replace('_', ' ')} decoded exactly: {row['exact']} of {row['bars']}")
    gain = repeat_vector_gain(trained.model)
    if gain is not None:
        result["repeat_vector_gain"] = gain
        print("pointer logit gain of each offset's repeat vector (1 back first):",
              " ".join(f"{g:.1f}" for g in gain))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
