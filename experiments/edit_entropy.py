"""How many bits does a near-repeat's change hold, whatever the model? A reference for the
target "a near-repeat costs <= 0.5x a new bar": the code length of each near-repeat of a split
(a bar with no identical earlier bar but one differing from it in 1 or 2 steps, as `tvae
evaluate` counts them) under a simple context-free code fitted on the training split's
near-repeats, with Laplace smoothing:

- its source: how many bars back its nearest near-match lies (a categorical over offsets);
- how many steps changed (1 or 2);
- which steps: each changed step's position in the bar (a categorical over steps; two changed
  steps are an unordered pair, so their code is 1 bit shorter than the two positions');
- what each changed step becomes: for a pitch changed to a pitch, the interval (a categorical
  over -48..48 semitones); otherwise the new step class given the old one's kind (onset, rest,
  hold).

The code knows nothing of the song beyond the source bar, so it is no lower bound on what a
model that reads the context can reach; it says how much of a near-repeat's cost is the change
itself when nothing predicts it. Compared with the model's own KL (z = posterior mean) of the
same bars, of the same bars as exact copies, and of new bars.

    python -m experiments.edit_entropy [MODEL] [--data corpus] [--split test] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from experiments.common import split_windows
from experiments.near_cost import near_cost
from tvae.config import HOLD, N_SPECIAL, PAD, REST
from tvae.eval.structure import near_repeats
from tvae.inference import load_model
from tvae.model.pointer import nearest_source

MAX_INTERVAL = 48  # semitones either way a changed pitch may move
KINDS = ("onset", "rest", "hold")


def kind_of(token: int) -> str:
    return "rest" if token == REST else "hold" if token == HOLD else "onset"


def edits_of(tokens: Tensor) -> list[dict[str, Any]]:
    """Every near-repeat of windows (W, N, S) as {"offset", "steps": [(position, old, new)]},
    in window order."""
    W, N, S = tokens.shape
    near = near_repeats(tokens)  # (W, N)
    offset, same = nearest_source(tokens, N - 1)  # (W, N), (W, N, S)
    out = []
    for w, k in near.nonzero().tolist():
        o = int(offset[w, k])
        source, bar = tokens[w, k - o], tokens[w, k]
        steps = [(s, int(source[s]), int(bar[s])) for s in range(S)
                 if not bool(same[w, k, s]) and int(bar[s]) != PAD]
        out.append({"offset": o, "steps": steps})
    return out


class Counts:
    """A Laplace-smoothed categorical over a fixed set of outcomes."""

    def __init__(self, outcomes: list[Any]) -> None:
        self.n = {x: 1.0 for x in outcomes}
        self.total = float(len(outcomes))

    def add(self, x: Any) -> None:
        if x in self.n:
            self.n[x] += 1.0
            self.total += 1.0

    def bits(self, x: Any) -> float:
        return -math.log2(self.n.get(x, 1.0) / self.total)


class EditCode:
    """The context-free code of a near-repeat given its source (module doc)."""

    def __init__(self, max_offset: int, steps: int, vocab: int) -> None:
        self.offset = Counts(list(range(1, max_offset + 1)))
        self.count = Counts([1, 2])
        self.position = Counts(list(range(steps)))
        self.interval = Counts(list(range(-MAX_INTERVAL, MAX_INTERVAL + 1)))
        self.new_given_kind = {kind: Counts(list(range(1, vocab))) for kind in KINDS}

    @staticmethod
    def _pitch_pair(old: int, new: int) -> bool:
        return old >= N_SPECIAL and new >= N_SPECIAL

    def fit(self, edits: list[dict[str, Any]]) -> EditCode:
        for e in edits:
            self.offset.add(e["offset"])
            self.count.add(len(e["steps"]))
            for s, old, new in e["steps"]:
                self.position.add(s)
                if self._pitch_pair(old, new):
                    self.interval.add(new - old)
                else:
                    self.new_given_kind[kind_of(old)].add(new)
        return self

    def bits(self, e: dict[str, Any]) -> dict[str, float]:
        """The code length of one near-repeat, in bits, by part."""
        steps = e["steps"]
        position = sum(self.position.bits(s) for s, _, _ in steps) - math.log2(
            math.factorial(len(steps)))
        change = sum(self.interval.bits(new - old) if self._pitch_pair(old, new)
                     else self.new_given_kind[kind_of(old)].bits(new) for _, old, new in steps)
        parts = {"source": self.offset.bits(e["offset"]), "count": self.count.bits(len(steps)),
                 "positions": position, "changes": change}
        parts["total"] = sum(parts.values())
        return parts


def model_kl(model: torch.nn.Module, tokens: Tensor, meters: Tensor) -> dict[str, float]:
    """The model's mean KL bits of the near-repeats, of the same bars as exact copies of their
    sources, of exact repeats and of new bars (`experiments.near_cost`'s groups)."""
    r = near_cost(model, tokens, meters)
    return {"near": r["kl_near"], "near_as_copies": r["kl_near_as_exact_copies"],
            "repeated": r["kl_repeated"], "new": r["kl_new"]}


def edit_entropy(model_path: str | None, data: str, split: str) -> dict[str, Any]:
    trained = load_model(model_path)
    train_tokens, _, _ = split_windows(trained, data, "train")
    tokens, meters, _ = split_windows(trained, data, split)
    N, S = tokens.shape[1:]
    code = EditCode(N - 1, S, trained.grid.vocab_size).fit(edits_of(train_tokens))
    edits = edits_of(tokens)
    rows = [code.bits(e) for e in edits]
    mean = {part: float(np.mean([r[part] for r in rows])) for part in rows[0]}
    by_count = {str(c): float(np.mean([r["total"] for r, e in zip(rows, edits, strict=True)
                                       if len(e["steps"]) == c])) for c in (1, 2)}
    return {"model": str(trained.path), "split": split, "near_repeats": len(rows),
            "code_bits": mean, "code_bits_by_steps_changed": by_count,
            "model_kl_bits": model_kl(trained.model.eval(), tokens, meters)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", default=None, help="default: the bundled model")
    parser.add_argument("--data", default="corpus")
    parser.add_argument("--split", default="test")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    r = edit_entropy(args.model, args.data, args.split)
    c, m = r["code_bits"], r["model_kl_bits"]
    print(f"{r['near_repeats']} near-repeats ({args.split}); a context-free code of each given "
          f"its source: {c['total']:.1f} bits (source {c['source']:.1f}, how many steps "
          f"{c['count']:.1f}, which steps {c['positions']:.1f}, what they become "
          f"{c['changes']:.1f}); 1 step changed {r['code_bits_by_steps_changed']['1']:.1f}, "
          f"2 steps {r['code_bits_by_steps_changed']['2']:.1f}")
    print(f"the model's KL: near-repeats {m['near']:.1f} bits, the same bars as exact copies "
          f"{m['near_as_copies']:.1f}, repeats {m['repeated']:.1f}, new bars {m['new']:.1f} "
          f"(0.5x a new bar: {m['new'] / 2:.1f}); the code's change alone "
          f"{c['total'] - c['source']:.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=1)


if __name__ == "__main__":
    main()
