"""Give a trained model a lead-in head fitted on its frozen posterior means (every other weight,
its learned prior included, unchanged): how the bundled model got its head.

    python scripts/fit_lead_in.py tvae/weights/default.json corpus -o runs/lead_fit
    tvae export runs/lead_fit.json tvae/weights/default

Prints the fit (rows, NLL, accuracy on its rows) and writes an inference-only checkpoint with
the same JSON less its model card (evaluate it again with `tvae evaluate --record`).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict

import torch

from tvae.config import config_to_dict
from tvae.data.dataset import load_songs
from tvae.model.checkpoint import (
    check_new_pair,
    data_config_of,
    load_checkpoint,
    write_inference_pair,
)
from tvae.training.lead_fit import fit_lead_in, lead_in_counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="checkpoint JSON")
    parser.add_argument("data", help="the folder the model was trained on (its train split)")
    parser.add_argument("-o", "--out", required=True, help="where to write the checkpoint")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.num_threads)
    check_new_pair(args.model, args.out)
    model, meta, _ = load_checkpoint(args.model)
    songs, _ = load_songs(args.data, model.grid, data_config_of(meta), progress=False)
    counts = lead_in_counts(songs)
    print(f"{args.data}: {counts.songs_with_lead_in} of {counts.songs} songs open with a lead-in; "
          f"{counts.later_bars_with_lead_in} of {counts.later_bars} later bars have one")
    model, fit = fit_lead_in(model, songs, args.steps, seed=args.seed)
    print(f"lead-in head: {fit.first_bars} first bars and {fit.inside_bars} bars inside songs, "
          f"NLL {fit.nll:.3f} nats, {fit.accuracy:.3f} read right")
    meta = {k: v for k, v in meta.items() if k != "evaluation"}
    meta["model"] = config_to_dict(model.config)
    half = meta.get("weights_dtype") == "float16"
    print(write_inference_pair(model, meta, args.out, half, lead_in_fit=asdict(fit)))


if __name__ == "__main__":
    main()
