"""tvae's `tvae train` defaults against the paper's own released code, side by side.

    python -m bench.bench_paper CORPUS_DIR --paper-code DIR [--minutes 20] [--threads 1]
                                [--meter 4/4] [--seed 0] [--out RUN] [--epochs N]
    python -m bench.bench_paper CORPUS_DIR --skip-paper [--epochs N] ...  (tvae alone)

DIR is a local clone of PAPER_URL (Jiang et al., ICASSP 2020): its model is imported from there,
nothing of it is copied here. For the same wall-clock minutes and CPU threads, on one meter's
songs of the exported corpus (manifest split): their TransformerSequentialVAE (8-bar windows,
their loss, Adam at their first learning rate, batch 16, shifts of up to 4 semitones), then
tvae with all defaults (its minutes include its validation). Both are scored on the test songs'
non-overlapping 8-bar windows, z = posterior mean, counting the steps and bars that are not
tvae's PAD: ELBO bits/bar (recon NLL + KL), teacher-forced and free-running accuracy (their
`inference_decode`); for their model also the ELBO with one sampled z, as their loss draws it.

Shape legend: B windows, N bars (8), S steps per bar (16), T = N * S steps, C their classes
(47), F their input features (1 + C + 44), Z latent size per bar (64).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import numpy as np
import torch
import torch.nn.functional as F

from bench.machine import describe_machine
from tvae.config import HOLD, N_SPECIAL, PAD, DataConfig, GridConfig, TrainConfig
from tvae.data.arrays import SongArrays
from tvae.data.windows import Windows
from tvae.errors import TvaeError
from tvae.melody import meter_id

PAPER_URL = "https://github.com/music-x-lab/TransformerVAE"
PAPER_MODULE = "transformer_sequential_vae"  # their model file, at the clone's top level
PAPER_BARS = 8  # their TRAIN_BAR_COUNT: the model reads exactly 8 bars of 16 steps
PAPER_MIN_PITCH, PAPER_PITCHES = 40, 45  # their music_base.MIDI_BASE, VALID_MIDI_COUNT
PAPER_MAX_PITCH = PAPER_MIN_PITCH + PAPER_PITCHES - 1  # 84
SILENCE, SUSTAIN = 0, 1  # their classes 0 and 1; an onset of pitch p is 2 + p - 40
PAPER_CLASSES = 2 + PAPER_PITCHES  # their WHOLE_X_DIM
CHORDS = 36  # chord columns of their input, zero: they train with erase_chord
FEATURES = 1 + PAPER_CLASSES + CHORDS + 4 + 4  # target, one-hot, chords, beat, sixteenth
# Their __main__: TransformerSequentialVAE(256, 64, kld=1.0, masks (1, 1, 1), pretrain=True),
# batch 16, Adam at 1e-4 (then 1e-5, 1e-6). pretrain=True loads their FC bar VAE's weights
# from cache_data/, which are not published: both bar coders start untrained here.
PAPER_ARGS = {"local_dim": 256, "z_dim": 64, "kl_coef": 1.0, "mask_type_enc": 1,
              "mask_type_inter": 1, "mask_type_dec": 1, "pretrain": False}
PAPER_BATCH, PAPER_LR, PAPER_SHIFT = 16, 1e-4, 4  # SHIFT_LOW..SHIFT_HIGH = -4..4
LN2 = float(np.log(2.0))
METRICS = ("elbo_bits_per_bar", "kl_bits_per_bar", "tf_accuracy", "free_accuracy")


def fail(message: str) -> NoReturn:
    print(f"bench_paper: error: {message}", file=sys.stderr)
    raise SystemExit(2)


# -- their code ---------------------------------------------------------------------------------
def load_paper_code(path: str | None) -> ModuleType:
    """Their model module, imported from the clone at `path` (never edited). `mir` is a bare
    package over their mir/ (its __init__ imports audio libraries the model never uses); h5py
    (imported by their data storage) is stood in for while importing if absent."""
    if not path:
        fail(f"--paper-code DIR is required: a local clone of {PAPER_URL}")
    root = Path(path)
    if not (root / f"{PAPER_MODULE}.py").is_file() or not (root / "mir").is_dir():
        fail(f"--paper-code {path}: no {PAPER_MODULE}.py and mir/ there (a clone of "
             f"{PAPER_URL} is expected)")
    bare = ModuleType("mir")
    bare.__path__ = [str(root / "mir")]
    sys.modules["mir"] = bare
    stand_in = importlib.util.find_spec("h5py") is None
    if stand_in:
        sys.modules["h5py"] = ModuleType("h5py")
    sys.path.insert(0, str(root))
    try:
        module = importlib.import_module(PAPER_MODULE)
    except Exception as exc:  # their code, any failure: one line naming it
        fail(f"--paper-code {path}: cannot import {PAPER_MODULE} ({type(exc).__name__}: {exc})")
    finally:
        sys.path.remove(str(root))
        if stand_in:
            sys.modules.pop("h5py", None)
    expected = {"TRAIN_BAR_COUNT": PAPER_BARS, "MIDI_BASE": PAPER_MIN_PITCH,
                "VALID_MIDI_COUNT": PAPER_PITCHES, "WHOLE_X_DIM": PAPER_CLASSES}
    if (found := {k: getattr(module, k, None) for k in expected}) != expected:
        fail(f"--paper-code {path}: {PAPER_MODULE} has {found}, this script expects {expected}")
    _bool_masks(sys.modules["transformer_vae"])
    return module


def _bool_masks(vae: ModuleType) -> None:
    """Their attention masks are uint8, which torch 2's masked_fill_ refuses: made bool."""
    original = vae.create_mask
    if getattr(original, "bool_masks", False):
        return

    def create_mask(*args: Any) -> torch.Tensor | None:
        mask = original(*args)
        return None if mask is None else mask.bool()

    create_mask.bool_masks = True  # type: ignore[attr-defined]
    vae.create_mask = create_mask


# -- tvae tokens -> their input -----------------------------------------------------------------
def octave_shifts(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(B,) semitones moving each window, lowest onset `lo` and highest `hi` (B,), into their
    pitch range by whole octaves: the least move that fits, else the one centring it."""
    ks = np.arange(-4, 5)  # (K,) octaves
    fits = (lo[:, None] + 12 * ks >= PAPER_MIN_PITCH) & (hi[:, None] + 12 * ks <= PAPER_MAX_PITCH)
    least = ks[np.where(fits, np.abs(ks), 99).argmin(1)]  # (B,); fits: (B, K)
    middle = (PAPER_MIN_PITCH + PAPER_MAX_PITCH) / 2
    centre = np.round((middle - (lo + hi) / 2) / 12).astype(np.int64)
    return 12 * np.where(fits.any(1), least, centre)


def to_paper_classes(tokens: np.ndarray, grid: GridConfig = GridConfig()) -> np.ndarray:
    """(B, N, S) tvae classes -> (B, N, S) their classes: REST and PAD -> silence 0, HOLD ->
    sustain 1, onset of pitch p -> 2 + p + shift - 40, `shift` moving each window by whole
    octaves into their range 40..84 (`octave_shifts`); a note still outside (a window spanning
    more than 44 semitones) is folded into it by octaves."""
    tokens = np.asarray(tokens, dtype=np.int64)
    onset = tokens >= N_SPECIAL  # (B, N, S)
    pitch = tokens - N_SPECIAL + grid.min_pitch  # (B, N, S) where onset
    lo = np.where(onset, pitch, 10**6).min(axis=(1, 2))  # (B,)
    hi = np.where(onset, pitch, -1).max(axis=(1, 2))  # (B,)
    pitch = pitch + octave_shifts(lo, hi)[:, None, None]
    pitch = np.where(pitch < PAPER_MIN_PITCH, pitch - 12 * ((pitch - PAPER_MIN_PITCH) // 12),
                     pitch)  # up by ceil((40 - p) / 12) octaves
    pitch = np.where(pitch > PAPER_MAX_PITCH, pitch + 12 * ((PAPER_MAX_PITCH - pitch) // 12),
                     pitch)  # down by ceil((p - 84) / 12) octaves
    classes = np.where(tokens == HOLD, SUSTAIN, SILENCE)
    return np.where(onset, 2 + pitch - PAPER_MIN_PITCH, classes)


def shift_classes(classes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Their training augmentation: each window (B, N, S) of their classes shifted by a random
    amount in [-4, 4] semitones, narrowed so that every onset stays in their range."""
    onset = classes >= 2
    lo = np.where(onset, classes, PAPER_CLASSES).min(axis=(1, 2))  # (B,)
    hi = np.where(onset, classes, 0).max(axis=(1, 2))  # (B,)
    low = np.minimum(np.maximum(-PAPER_SHIFT, 2 - lo), 0)
    high = np.maximum(np.minimum(PAPER_SHIFT, PAPER_CLASSES - 1 - hi), 0)
    shift = rng.integers(low, high + 1)  # (B,)
    return np.where(onset, classes + shift[:, None, None], classes)


def paper_input(classes: np.ndarray) -> torch.Tensor:
    """(B, N, S) their classes -> (B, T, F) rows as their pitch_shifter builds them: column 0
    the target class, then its one-hot (C), the chord columns (zero), the beat in the bar and
    the sixteenth in the beat (4 + 4 one-hots). Their model reads only the one-hot."""
    B, N, S = classes.shape
    flat = classes.reshape(B, N * S)  # (B, T)
    x = np.zeros((B, N * S, FEATURES), dtype=np.float32)
    x[..., 0] = flat
    np.put_along_axis(x, 1 + flat[..., None], 1.0, axis=2)
    step = np.arange(N * S) % S  # (T,)
    position = 1 + PAPER_CLASSES + CHORDS
    x[:, np.arange(N * S), position + (step // 4) % 4] = 1.0
    x[:, np.arange(N * S), position + 4 + step % 4] = 1.0
    return torch.from_numpy(x)


# -- data ---------------------------------------------------------------------------------------
def meter_rows(rows: list[dict[str, str]], meter: str) -> list[dict[str, str]]:
    """The manifest rows of songs in `meter` (its 'meter' column, e.g. "4/4"), in order."""
    return [row for row in rows if row.get("meter", "").strip() == meter]


def write_subset(corpus: Path, meter: str, dest: Path) -> int:
    """Copy the MIDI files of `corpus`'s `meter` songs, and their manifest rows (split kept),
    into `dest`; returns how many."""
    if not (corpus / "manifest.csv").is_file():
        fail(f"{corpus}: no manifest.csv (CORPUS_DIR is a `tvae corpus` export)")
    with open(corpus / "manifest.csv", newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows, fields = list(reader), list(reader.fieldnames or [])
    if not {"meter", "split", "path"} <= set(fields):
        fail(f"{corpus / 'manifest.csv'}: needs the columns meter, split and path")
    chosen = meter_rows(rows, meter)
    if not chosen:
        fail(f"{corpus}: no songs in {meter} (--meter)")
    for row in chosen:
        (dest / row["path"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(corpus / row["path"], dest / row["path"])
    with open(dest / "manifest.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(chosen)
    return len(chosen)


def parse_meter(text: str) -> int:
    """tvae's meter id of a manifest meter such as "4/4"; a bad one is a one-line error."""
    try:
        top, bottom = (int(part) for part in text.split("/"))
        return meter_id((top, bottom))
    except (ValueError, TvaeError):
        fail(f"--meter {text}: not one of tvae's meters (4/4, 2/4, 3/4, 6/8)")


def meter_songs(songs: SongArrays, meter: int) -> SongArrays:
    """The songs that tvae's loader read in meter id `meter` (their MIDI files' meter)."""
    return songs.subset(songs.meters == meter)


# -- their model: training and scoring ----------------------------------------------------------
def train_paper(paper: ModuleType, windows: Windows, minutes: float, seed: int
                ) -> tuple[torch.nn.Module, int, float]:
    """Their model trained for `minutes` with their loss (`model.loss`: cross-entropy per step
    + KL per latent dimension, z sampled) on random training windows; (model, steps, seconds)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = paper.TransformerSequentialVAE(**PAPER_ARGS)
    model.use_gpu = False  # their loss picks torch.cuda.LongTensor when this is set
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=PAPER_LR)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < minutes * 60:
        tokens, _ = windows.batch(rng.integers(len(windows), size=PAPER_BATCH))  # (B, N, S)
        loss = model.loss(paper_input(shift_classes(to_paper_classes(tokens), rng)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        steps += 1
    return model, steps, time.perf_counter() - start


def paper_forward(model: torch.nn.Module, x: torch.Tensor, sample: bool
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Their `forward` through their own modules, with z = mu unless `sample`: logits (B, T, C),
    mu and logvar (B, N, Z)."""
    B = x.shape[0]
    z, h = model.encoder(x[:, :, 1:])  # (B, N * D) each
    z = z.view(B, PAPER_BARS, -1)  # (B, N, D)
    stats = [model.reparameterizers[i].collect_statistics(z[:, i]) for i in range(PAPER_BARS)]
    mu = torch.stack([s[0] for s in stats], 1)  # (B, N, Z)
    logvar = torch.stack([s[1] for s in stats], 1)  # (B, N, Z)
    latent = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if sample else mu
    d = torch.stack([model.decoder_init_linears[i](latent[:, i]) for i in range(PAPER_BARS)], 1)
    return model.decoder(d.view(B, -1), x[:, :, 1:], h), mu, logvar  # (B, T, C)


@torch.no_grad()
def evaluate_paper(model: torch.nn.Module, windows: Windows, batch_size: int = 64
                   ) -> dict[str, float]:
    """ELBO and KL bits per bar, teacher-forced and free-running accuracy over `windows`
    (counting the steps and bars tvae counts: not PAD), z = mu; also the ELBO with z sampled."""
    model.eval()
    sums = dict.fromkeys(("nll", "nll_sampled", "kl", "tf", "free", "steps", "bars"), 0.0)
    for start in range(0, len(windows), batch_size):
        tokens, _ = windows.batch(np.arange(start, min(start + batch_size, len(windows))))
        classes = to_paper_classes(tokens)  # (B, N, S)
        x = paper_input(classes)  # (B, T, F)
        target = torch.from_numpy(classes).flatten(1)  # (B, T)
        keep = torch.from_numpy(tokens != PAD).flatten(1)  # (B, T)
        real = keep.view(len(tokens), PAPER_BARS, -1).any(-1)  # (B, N)
        for key, sample in (("nll_sampled", True), ("nll", False)):  # z = mu last: kept below
            logits, mu, logvar = paper_forward(model, x, sample)
            log_p = F.log_softmax(logits, -1).gather(-1, target[..., None])[..., 0]  # (B, T)
            sums[key] += float(-(log_p * keep).sum())
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(-1)  # (B, N) nats
        sums["kl"] += float((kl * real).sum())
        sums["tf"] += float(((logits.argmax(-1) == target) & keep).sum())
        free = np.stack([model.inference_decode(mu[b : b + 1], x[b : b + 1])  # (T, C) each:
                         for b in range(len(tokens))])  # their code decodes one window a call
        sums["free"] += float(((torch.from_numpy(free.argmax(-1)) == target) & keep).sum())
        sums["steps"] += float(keep.sum())
        sums["bars"] += float(real.sum())
    kl_bits = sums["kl"] / sums["bars"] / LN2
    return {"elbo_bits_per_bar": sums["nll"] / sums["bars"] / LN2 + kl_bits,
            "elbo_sampled_bits_per_bar": sums["nll_sampled"] / sums["bars"] / LN2 + kl_bits,
            "kl_bits_per_bar": kl_bits, "tf_accuracy": sums["tf"] / sums["steps"],
            "free_accuracy": sums["free"] / sums["steps"], "windows": len(windows),
            "bars": int(sums["bars"])}


# -- tvae ---------------------------------------------------------------------------------------
def run_tvae(folder: Path, run: Path, minutes: float, threads: int, seed: int,
             epochs: int = 0, bases: dict[type, Any] | None = None) -> dict[str, Any]:
    """tvae trained with its defaults, or a recipe's configs (`bases`, by class, as `tvae
    train --config` reads them), on the CPU for `minutes` (and `epochs`, 0: its default), then
    `evaluate_folder` on the test songs' 8-bar windows."""
    from dataclasses import replace

    from tvae.config import ModelConfig
    from tvae.eval.folder import evaluate_folder
    from tvae.training.run import train

    bases = bases or {}
    config = replace(bases.get(TrainConfig, TrainConfig()), max_minutes=minutes, max_steps=0,
                     num_threads=threads, seed=seed, device="cpu", epochs=epochs)
    trainer = train(folder, run, grid_config=bases.get(GridConfig, GridConfig()),
                    model_config=bases.get(ModelConfig, ModelConfig()),
                    data_config=bases.get(DataConfig, DataConfig()), train_config=config,
                    progress=False)
    scores = evaluate_folder(folder, run / "best.json", bars=PAPER_BARS, split="test",
                             progress=False)
    return {"steps": trainer.state.step, "seconds": trainer.state.seconds,
            "params": sum(p.numel() for p in trainer.model.parameters()),
            **{key: scores[key] for key in (*METRICS, "windows", "bars")}}


# -- main ---------------------------------------------------------------------------------------
def print_table(results: dict[str, dict[str, Any]]) -> None:
    print(f"{'model':<6} {'minutes':>7} {'steps':>6} {'params':>10} {'ELBO b/bar':>10} "
          f"{'KL b/bar':>8} {'tf acc':>6} {'free acc':>8}")
    for name, r in results.items():
        print(f"{name:<6} {r['seconds'] / 60:>7.2f} {r['steps']:>6} {r['params']:>10,} "
              f"{r['elbo_bits_per_bar']:>10.2f} {r['kl_bits_per_bar']:>8.2f} "
              f"{r['tf_accuracy']:>6.3f} {r['free_accuracy']:>8.3f}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus", type=Path, help="exported corpus folder (manifest.csv)")
    parser.add_argument("--paper-code", help=f"local clone of {PAPER_URL}")
    parser.add_argument("--minutes", type=float, default=20.0, help="training minutes per model")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--meter", default="4/4", help="the manifest's meter to keep")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=0, help="tvae's --epochs (0: its default)")
    parser.add_argument("--config", help="train tvae from this run config or recipe (as `tvae "
                        "train --config`; --minutes, --threads, --seed and --epochs override it)")
    parser.add_argument("--skip-paper", action="store_true", help="train tvae alone (a control "
                        "run; the paper's code is then neither needed nor scored)")
    parser.add_argument("--out", type=Path, help="keep tvae's run folder here; the results go "
                        "next to it, in OUT.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    paper = None if args.skip_paper else load_paper_code(args.paper_code)  # refused first
    meter = parse_meter(args.meter)
    from tvae.cli.train import _config_file

    try:
        bases, _ = _config_file(args.config)  # a bad recipe is refused before any training
    except TvaeError as exc:
        fail(str(exc))
    if args.out is not None and args.out.exists():
        fail(f"--out {args.out} exists already")
    torch.set_num_threads(args.threads)
    from tvae.data.dataset import load_folder

    with tempfile.TemporaryDirectory(prefix="bench-paper-") as tmp:
        os.environ["TVAE_CACHE_DIR"] = str(Path(tmp) / "cache")  # no cache left behind
        folder = Path(tmp) / "songs"
        write_subset(args.corpus, args.meter, folder)
        songs = meter_songs(load_folder(folder, workers=1, progress=False)[0], meter)
        counts = {split: int((songs.splits == split).sum()) for split in ("train", "test")}
        train_windows = Windows(songs, "train", DataConfig(bars=PAPER_BARS, stride=1))
        test_windows = Windows(songs, "test", DataConfig(bars=PAPER_BARS, stride=PAPER_BARS))
        results: dict[str, dict[str, Any]] = {}
        if paper is not None:
            model, steps, seconds = train_paper(paper, train_windows, args.minutes, args.seed)
            results["paper"] = {"steps": steps, "seconds": seconds,
                                "params": sum(p.numel() for p in model.parameters()),
                                **evaluate_paper(model, test_windows)}
        run = args.out or Path(tmp) / "tvae-run"
        results["tvae"] = run_tvae(folder, run, args.minutes, args.threads, args.seed,
                                   args.epochs, bases)
    print(f"machine: {describe_machine()}")
    print(f"{args.meter} songs: {counts['train']} train, {counts['test']} test; scored on "
          f"{len(test_windows)} non-overlapping 8-bar test windows, z = mu")
    print_table(results)
    if args.out is not None:
        summary = {"machine": describe_machine(), "meter": args.meter, "seed": args.seed,
                   "minutes": args.minutes, "threads": args.threads, "config": args.config,
                   "songs": counts, **results}
        args.out.with_name(args.out.name + ".json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
