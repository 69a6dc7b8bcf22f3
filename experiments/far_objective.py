"""Which objective teaches far repeats? A short fine-tune of a checkpoint on the reach
augmentation's batches (every batch a whole 33-bar window, short songs played on, phrases
repeated from far back), one objective per run, scored on held-out batches of the same kind.

    python -m experiments.far_objective CKPT --objective recipe|observed|pointer [--steps 200]

Objectives:
- recipe: the training default: the copy choice marginalised in the likelihood, plus the capped
  pointer loss on exact and near repeats (`vae_objective`, pointer weight 1).
- observed: the copy choice taken as observed: a bar that repeats earlier bars (exactly, or with
  at most 2 steps changed) is scored as a copy of them only, any other bar as generated
  (`TransformerVAE.forward(choices=...)`); no pointer loss.
- pointer: the pointer loss alone (what `probe_far` runs on one batch), on fresh batches, from
  the posterior mean; pointer-sampled: the same from a sample of the posterior.

With `--diagnose` it trains nothing and prints, per bucket (and for new bars), where the
checkpoint's decoder puts a repeat: the generator's log-likelihood of the bar, the pointer's
weight on generating, on identical sources and on other (wrong) sources, and the KL.

Every 50 steps it prints, per distance bucket of the nearest identical earlier bar, the
pointer's mean weight on identical sources and its copy accuracy (likeliest choice is an
identical bar), z = posterior mean, on 4 held-out batches of the validation split.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import numpy as np
import torch

from tvae.config import DataConfig
from tvae.data.dataset import load_songs
from tvae.data.windows import Windows
from tvae.eval.structure import DISTANCE_BUCKETS, bucket_name, nearest_offset, repeated_bars
from tvae.inference import load_model
from tvae.model.pointer import copy_target
from tvae.model.vae import TransformerVAE
from tvae.training.objective import pointer_nll, vae_objective


def score(model: torch.nn.Module, batches: list) -> dict[str, list[float]]:
    """bucket -> [repeats, mean weight on identical sources, copy accuracy]."""
    sums: dict[str, list[float]] = {bucket_name(lo, hi): [0, 0.0, 0.0] for lo, hi in
                                    DISTANCE_BUCKETS}
    model.eval()
    with torch.no_grad():
        for tokens, meters in batches:
            mu, _ = model.encode(tokens, meters)
            log_pi = model.log_pointer(mu, (tokens != 0).any(-1))  # (B, N, 1 + N)
            same = copy_target(tokens, model.config.copy_offsets)  # (B, N, N)
            weight = (log_pi[..., 1:].exp() * same).sum(-1)
            pick = log_pi.argmax(-1)  # (B, N)
            right = same.gather(-1, (pick - 1).clamp(min=0)[..., None])[..., 0] & (pick > 0)
            offset, rep = nearest_offset(tokens), repeated_bars(tokens)
            for lo, hi in DISTANCE_BUCKETS:
                at = rep & (offset >= lo) & (offset <= hi)
                row = sums[bucket_name(lo, hi)]
                row[0] += int(at.sum())
                row[1] += float(weight[at].sum())
                row[2] += float(right[at].sum())
    model.train()
    return {k: [v[0], v[1] / max(v[0], 1), v[2] / max(v[0], 1)] for k, v in sums.items()}


@torch.no_grad()
def diagnose(model: torch.nn.Module, batches: list) -> dict[str, dict[str, float]]:
    """Per bucket: mean log g(bar) (nats), mean pointer weight on generating, on identical
    sources and on other sources, mean KL (bits); z = posterior mean, teacher-forced."""
    from tvae.config import PAD
    from tvae.model.forward import LN2, kl_per_bar
    from tvae.model.modules import mask_logits, on_real_bars

    model.eval()
    rows: dict[str, list[torch.Tensor]] = {}
    for tokens, meters in batches:
        real = (tokens != PAD).any(-1)
        mu, logvar = model.encode(tokens, meters)
        prev = on_real_bars(model.bar_encoder, real, tokens, meters)
        hidden = model._decode_hidden(prev, model._memory(mu), real)
        logits = on_real_bars(model.bar_decoder, real, hidden, meters, tokens)
        gen = mask_logits(logits.float(), meters).log_softmax(-1)
        log_g = gen.gather(-1, tokens[..., None])[..., 0].masked_fill(tokens == PAD, 0).sum(-1)
        pi = model.log_pointer(mu, real).exp()  # (B, N, 1 + N)
        same = copy_target(tokens, model.config.copy_offsets)
        right = (pi[..., 1:] * same).sum(-1)
        stats = torch.stack([log_g, pi[..., 0], right, 1 - pi[..., 0] - right,
                             kl_per_bar(mu, logvar) / LN2], -1)  # (B, N, 5)
        offset, rep = nearest_offset(tokens), repeated_bars(tokens)
        for lo, hi in DISTANCE_BUCKETS:
            at = rep & (offset >= lo) & (offset <= hi)
            rows.setdefault(bucket_name(lo, hi), []).append(stats[at])
        rows.setdefault("new", []).append(stats[real & ~rep])
    names = ("log_g_nats", "generate", "identical", "other", "kl_bits")
    return {k: dict(zip(names, [round(float(x), 3) for x in torch.cat(v).mean(0)], strict=True))
            for k, v in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoint")
    parser.add_argument("--objective", choices=("recipe", "observed", "pointer", "pointer-sampled"),
                        default="recipe")
    parser.add_argument("--diagnose", action="store_true",
                        help="print where the checkpoint puts repeats, by bucket; no training")
    parser.add_argument("--corpus", default="corpus")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--beta", type=float, default=0.3)
    parser.add_argument("--reach", type=float, default=1.0, help="share of reach batches")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--encoder-repeats", action="store_true",
                        help="add the encoder's repeat features (zero-initialised)")
    parser.add_argument("--latent-repeats", action="store_true",
                        help="add the posterior's repeat vectors (zero-initialised)")
    parser.add_argument("--new-lr", type=float, default=0.0,
                        help="learning rate of the added repeat modules (0: --lr)")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    songs = load_songs(args.corpus)[0]
    model = load_model(args.checkpoint).model.train()
    if args.encoder_repeats or args.latent_repeats:
        grown = TransformerVAE(replace(model.config, encoder_repeats=args.encoder_repeats,
                                       latent_repeats=args.latent_repeats), model.grid)
        missing, _ = grown.load_state_dict(model.state_dict(), strict=False)
        assert all(key.startswith(("repeats_in.", "repeats_mu.")) for key in missing), missing
        model = grown.train()
    held = Windows(songs, "valid", DataConfig(repeat_reach=1.0))
    rng = np.random.default_rng(1)
    order = held.epoch_order(64, rng)
    batches = [tuple(torch.as_tensor(a) for a in held.batch(order[i * 64:(i + 1) * 64], rng,
                                                            trim=True)) for i in range(4)]
    if args.diagnose:
        for name, row in diagnose(model, batches[:3]).items():
            print(name, json.dumps(row))
        return
    train = Windows(songs, "train", DataConfig(repeat_reach=args.reach))
    rng = np.random.default_rng(0)
    order = train.epoch_order(64, rng)
    new = [p for n, p in model.named_parameters() if n.startswith(("repeats_in.", "repeats_mu."))]
    old = [p for n, p in model.named_parameters() if not n.startswith(("repeats_in.",
                                                                         "repeats_mu."))]
    opt = torch.optim.AdamW([{"params": old}, {"params": new, "lr": args.new_lr or args.lr}],
                            lr=args.lr, weight_decay=0.01)
    log = []
    started = time.time()
    for step in range(args.steps + 1):
        if step % 50 == 0:
            row = {"step": step, "seconds": round(time.time() - started, 1),
                   "buckets": score(model, batches)}
            log.append(row)
            print(json.dumps(row), flush=True)
        if step == args.steps:
            break
        idx = order[(step * 64) % (len(order) - 64):][:64]
        tokens, meters = (torch.as_tensor(a) for a in train.batch(idx, rng, trim=True))
        if args.objective.startswith("pointer"):
            mu, logvar = model.encode(tokens, meters)
            if args.objective == "pointer-sampled":  # z as training draws it
                mu = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
            log_pi = model.log_pointer(mu, (tokens != 0).any(-1))
            total, count = pointer_nll(log_pi, tokens, 2, 0.9)
            loss = total / count.clamp(min=1)
        elif args.objective == "recipe":
            out = model(tokens, meters)
            loss = vae_objective(out, tokens, beta=args.beta, pointer_weight=1.0,
                                 pointer_edits=2, pointer_cap=0.9).loss
        else:
            choices = copy_target(tokens, model.config.copy_offsets, 2)
            out = model(tokens, meters, choices=choices)
            loss = vae_objective(out, tokens, beta=args.beta).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "log": log}, f, indent=1)


if __name__ == "__main__":
    main()
