"""Do B's edited repeats of bar 1 follow a transfer, and why not?

For the transfer pairs `tvae evaluate` makes on a folder's split (B repeats its bar 1; A is
another song of the same meter), each transfer is decoded two ways: with each copy's edits
left to the edit chances read from the latents (as tvae decoded transfers before), and with
them located from B's own decoding (`TransformerVAE.transfer_run`, as tvae decodes them now).
For both it reports what the card reports (follow, spurious, other bars' rhythm kept, edited
repeats that follow) and how many of the output's bars differ between the two. Then, for each
of B's edited repeats of bar 1 (a later bar 1-2 steps from it, with no identical earlier bar),
it says what became of it under each decoding (and how many of B's other bars keep B's rhythm
only one way, and why):

- follows: the output's bar is the new bar 1 with B's change;
- generated: the pointer chooses to generate the bar (its latent holds the whole bar);
- copies another bar: the pointer copies a bar other than bar 1;
- copies bar 1, regenerated: it copies bar 1 but decodes kept steps from the generator
  (B's old notes) because the edit chances mark them;
- copies bar 1, change lost: the kept steps follow, the changed steps are not B's.

    python -m experiments.edit_follow [MODEL] [--data corpus] [--split test] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tvae.config import PAD, DataConfig
from tvae.data.dataset import load_songs
from tvae.data.windows import Windows
from tvae.eval.structure import (
    edited_repeats_of,
    outcome_counts,
    rhythm,
    transfer_outputs,
    transfer_pairs,
)
from tvae.inference import load_model
from tvae.model.decoding import MODEL_EDITS, choice_offsets, located_edits
from tvae.model.pointer import choose

WAYS = {"edit chances from the latents": False, "edits located from B's decoding": True}


def why(tokens_b: Tensor, out: Tensor, choice: Tensor) -> list[str]:
    """What became of each of B's edited repeats of bar 1 in a transfer that changed bar 1.
    tokens_b, out (B, N, S); choice (B, N) the pointer's (0 generate, 1 + j copy bar j)."""
    edited, follows, _ = edited_repeats_of(tokens_b, out)
    edited &= ~(out[:, 0] == tokens_b[:, 0]).all(-1)[:, None]  # bar 1 changed
    same = tokens_b == tokens_b[:, :1]  # (B, N, S) steps a repeat shares with bar 1
    reasons = []
    for i, j in zip(*torch.nonzero(edited, as_tuple=True), strict=True):
        c = int(choice[i, j])
        kept_follow = bool((out[i, j] == out[i, 0])[same[i, j]].all())
        if bool(follows[i, j]):
            reasons.append("follows")
        elif c == 0:
            reasons.append("generated")
        elif c != 1:
            reasons.append("copies another bar")
        elif not kept_follow:
            reasons.append("copies bar 1, regenerated")
        else:
            reasons.append("copies bar 1, change lost")
    return reasons


def run(model_path: str | None, data: str, split: str) -> dict[str, Any]:
    trained = load_model(model_path)
    model = trained.model.eval()
    cfg = DataConfig(bars=trained.window, stride=trained.window, transpose=0)
    songs, _ = load_songs(data, trained.grid, cfg, progress=False)
    windows = Windows(songs, split, cfg, trained.grid)
    tokens, meters = windows.batch(np.arange(len(windows)), None)
    pairs = transfer_pairs(tokens, meters, windows.song[: len(windows)], 512)
    a, b = (np.array(pairs).T if pairs else (np.zeros(0, int), np.zeros(0, int)))
    ta, tb, mb = (torch.as_tensor(x) for x in (tokens[a], tokens[b], meters[b]))
    result: dict[str, Any] = {"model": str(trained.path), "pairs": len(pairs)}
    outs = {}
    for name, located in WAYS.items():
        got = transfer_outputs(model, ta, tb, mb, located=located)
        outs[name] = got["out"]
        counts = outcome_counts(tb, got["out"])
        real = (tb != PAD).any(-1)
        log_pi, _ = model.pointer_weights(got["z"], torch.ones_like(real))
        result[name] = {
            "follow": counts["follow"] / max(counts["follow_n"], 1),
            "spurious": counts["spurious"] / max(counts["other_n"], 1),
            "other_kept": counts["kept"] / max(counts["other_n"], 1),
            "edit_follow": f"{int(counts['edit_follow'])} of {int(counts['edit_follow_n'])}",
            "edited_repeats": dict(Counter(why(tb, got["out"], choose(log_pi))).most_common()),
        }
    first, second = outs.values()
    real = (tb != PAD).any(-1)
    result["bars_that_differ"] = float((first != second).any(-1)[real].float().mean())
    result["rhythm"] = rhythm_changes(tb, first, second, got["own"], got["z"], model)
    return result


def rhythm_changes(tokens_b: Tensor, before: Tensor, after: Tensor, own: Tensor, z: Tensor,
                   model: Any) -> dict[str, int]:
    """B's bars other than its repeats of bar 1 (what `transfer_other_kept` counts) that keep
    B's rhythm with the edit chances deciding (`before`) and lose it with located edits
    (`after`), and the reverse; of those lost, the ones whose edits were located (B's own
    decoding `own` copies them with at most 2 steps changed) and the edited repeats of bar 1
    among them. tokens_b, before, after, own (B, N, S); z (B, N, Z) the transfers' latents."""
    log_pi, _ = model.pointer_weights(z, torch.ones(z.shape[:2], dtype=torch.bool))
    located = (located_edits(own, choice_offsets(log_pi)) != MODEL_EDITS).all(-1)  # (B, N)
    other = (tokens_b != PAD).any(-1) & ~(tokens_b == tokens_b[:, :1]).all(-1)
    other[:, 0] = False
    kept_before = (rhythm(before) == rhythm(tokens_b)).all(-1)
    kept_after = (rhythm(after) == rhythm(tokens_b)).all(-1)
    lost, gained = other & kept_before & ~kept_after, other & ~kept_before & kept_after
    edited, _, _ = edited_repeats_of(tokens_b, after)
    return {"other_bars": int(other.sum()), "lost": int(lost.sum()), "gained": int(gained.sum()),
            "lost_located_copies": int((lost & located).sum()),
            "lost_edited_repeats_of_bar_1": int((lost & edited).sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?")
    parser.add_argument("--data", default="corpus")
    parser.add_argument("--split", default="test")
    parser.add_argument("--json", default=None, help="also write the result here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with torch.no_grad():
        result = run(args.model, args.data, args.split)
    print(f"{result['model']}: {result['pairs']} transfer pairs; "
          f"{result['bars_that_differ']:.3f} of B's bars decode differently the two ways")
    for name in WAYS:
        row = result[name]
        print(f"{name}: follow {row['follow']:.3f}, spurious {row['spurious']:.4f}, other bars' "
              f"rhythm kept {row['other_kept']:.3f}, edited repeats that follow "
              f"{row['edit_follow']}")
        print("   ", ", ".join(f"{k} {v}" for k, v in row["edited_repeats"].items()))
    r = result["rhythm"]
    print(f"of B's {r['other_bars']} other bars, {r['lost']} lose B's rhythm with located edits "
          f"({r['lost_located_copies']} of them copies whose edits were located, "
          f"{r['lost_edited_repeats_of_bar_1']} edited repeats of bar 1) and {r['gained']} "
          "keep it only then")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
