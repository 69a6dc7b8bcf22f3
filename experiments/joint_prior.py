"""Post hoc or joint? Fine-tune a model and its learned prior together, the KL of every bar taken
against the prior (`TransformerVAE.forward` does so when the model holds a prior), or, with
`--control`, the same fine-tune with the prior removed (KL against N(0, I)).

    python -m experiments.joint_prior CKPT_WITH_PRIOR --minutes 25 -o runs/joint/model
    python -m experiments.joint_prior CKPT_WITH_PRIOR --control --max-steps 275 -o runs/ctl

The fine-tune is the previous bundled model's second stage
(`recipes/previous_bundled_stage2.json`): beta 0.3, pointer loss (weight 1, cap 0.9,
near-repeats with up to 2 edits), the training data's augmentation (transposition, repeats,
reach batches), AdamW at `--lr` with 50 warm-up steps,
batch 64, seeded. It writes an inference checkpoint (float16, the source's JSON and card kept
for reference: score it again with `tvae evaluate`), and prints the loss parts every 25 steps.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from tvae.data.dataset import load_songs
from tvae.data.windows import Windows
from tvae.model.checkpoint import data_config_of, load_checkpoint, write_inference_pair
from tvae.training.objective import vae_objective


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("-o", "--out", required=True)
    parser.add_argument("--corpus", default="corpus")
    parser.add_argument("--minutes", type=float, default=25.0)
    parser.add_argument("--max-steps", type=int, default=0, help="Stop here too (0: no cap).")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--beta", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--control", action="store_true",
                        help="Drop the prior: the same fine-tune against N(0, I).")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model, meta, _ = load_checkpoint(args.checkpoint)
    if args.control:
        model.prior, model.prior_config = None, None
    elif model.prior is None:
        parser.error("the checkpoint has no learned prior: fit one with `tvae prior`")
    data = data_config_of(meta)
    songs, _ = load_songs(args.corpus, model.grid, data, progress=False)
    windows = Windows(songs, "train", data, model.grid)
    rng = np.random.default_rng(args.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    model.train()
    started, step, logged = time.monotonic(), 0, []
    while time.monotonic() - started < 60 * args.minutes and (
            not args.max_steps or step < args.max_steps):
        for group in optimizer.param_groups:
            group["lr"] = args.lr * min(1.0, (step + 1) / 50)
        idx = rng.integers(0, len(windows), 64)
        tokens, meters = (torch.as_tensor(a) for a in windows.batch(idx, rng, trim=True))
        out = model(tokens, meters)
        loss = vae_objective(out, tokens, beta=args.beta, pointer_weight=1.0, pointer_edits=2,
                             pointer_cap=0.9)
        optimizer.zero_grad(set_to_none=True)
        loss.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        logged.append((float(loss.recon.detach()), float(loss.kl.detach())))
        if step % 25 == 0:
            recon, kl = np.mean(logged[-25:], axis=0)
            print(f"step {step}: recon {recon / np.log(2):.2f} bits/bar, KL {kl / np.log(2):.2f} "
                  f"bits/bar ({'N(0, I)' if args.control else 'learned prior'}), "
                  f"{(time.monotonic() - started) / step:.2f} s/step", flush=True)
    model.eval()
    record = {**(meta.get("prior_fit") or {}),
              "joint" if not args.control else "control": {
                  "steps": step, "minutes": args.minutes, "lr": args.lr, "beta": args.beta,
                  "seed": args.seed, "from": str(args.checkpoint)}}
    meta = {**meta, "evaluation": None, "state": {**meta.get("state", {}), "step": step}}
    path = write_inference_pair(model, meta, args.out, True,
                                prior_fit=record if model.prior is not None else None)
    print(f"wrote {path} after {step} steps")


if __name__ == "__main__":
    main()
