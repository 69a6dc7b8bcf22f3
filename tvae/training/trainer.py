"""The Trainer: one run's model, optimizer, data windows and run folder; one step, the epoch
loop, validation, checkpoints and metrics. Knows nothing of the model's internals beyond
`forward` returning a `VAEOutput`, from which tvae.training.objective builds the loss.

Every step's batch and noise are drawn from (seed, step) and every epoch's order from (seed,
epoch), so a run resumed from a checkpoint continues exactly as if it had never stopped (on CPU).

Every run, on one CPU, one GPU or several processes (tvae.training.distributed), takes the one
step of tvae.training.step: the update of a non-finite step is skipped on the device and the
host counts skipped steps every `log_every` steps (every step on the CPU) instead of inspecting
each loss.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

import tvae.training.distributed as ddp
from tvae.config import Configs
from tvae.data.dataset import SongArrays
from tvae.data.windows import Windows
from tvae.devices import pick_device
from tvae.errors import TvaeError, TvaeWarning
from tvae.eval.windows import evaluate_windows
from tvae.model.checkpoint import save_checkpoint
from tvae.model.forward import LN2, Noise
from tvae.model.vae import TransformerVAE
from tvae.training.guard import Safeguard
from tvae.training.interrupt import StopNow, StopRequest
from tvae.training.metrics_log import MetricsLog
from tvae.training.plots import plot_metrics
from tvae.training.prefetch import Prefetcher
from tvae.training.resume import load_resume_point
from tvae.training.run_state import RunState
from tvae.training.schedules import fit_warmups, late_start
from tvae.training.step import Batch, Scheduled, UpdateUndo, train_step
from tvae.training.time_limits import TimeLimits
from tvae.training.time_plan import TimePlanner
from tvae.training.validation import validation_loss

BEFORE_LATE = "before_late"  # the checkpoint kept where the last stage starts
# per-step stats summed between log rows
SUMMED = ("loss", "recon", "kl", "correct", "n", "class_correct", "class_n", "pointer", "edit")


def _shown(value: float | None, digits: int) -> str:
    """A metric for the epoch line: "not finite" where weights gave no number."""
    return f"{value:.{digits}f}" if value is not None and math.isfinite(value) else "not finite"


def _warn_if_tiny(train_windows: int, valid_windows: int) -> None:
    if train_windows < 100 or valid_windows < 10:
        warnings.warn(f"tiny data: {train_windows} training and {valid_windows} validation "
                      "windows; the model will overfit and validation numbers mean little"
                      + ("" if valid_windows else ": with none, best.json is each epoch's last "
                         "weights and there is no early stopping"), TvaeWarning, stacklevel=3)


def _label_ids(songs: SongArrays) -> tuple[list[str] | None, np.ndarray | None]:
    if songs.labels is None:
        return None, None
    names = sorted({x for x in songs.labels if x})
    lookup = {name: i for i, name in enumerate(names)}
    return names, np.array([lookup.get(x, -1) if x else -1 for x in songs.labels], np.int64)


class Trainer(TimeLimits):
    """Owns the model, optimizer, data windows and run directory of one training run.

    `dist` makes it one rank of a multi-process run; `compile_model` runs the step through
    torch.compile."""

    def __init__(self, songs: SongArrays, run_dir: Path, configs: Configs, progress: bool = True,
                 *, dist: ddp.Dist | None = None, compile_model: bool = False) -> None:
        grid, model_cfg, data_cfg, cfg = configs.grid, configs.model, configs.data, configs.train
        self.run_dir, self.grid, self.data_cfg, self.cfg = run_dir, grid, data_cfg, cfg
        self.progress, self.dist = progress, dist
        self.main = dist is None or dist.main  # the process that writes files
        self.device = dist.device if dist is not None else pick_device(cfg.device)
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        self.labels, self.song_labels = _label_ids(songs)
        n_classes = len(self.labels) if self.labels else model_cfg.n_classes
        model_cfg = replace(model_cfg, n_classes=n_classes, trained_bars=data_cfg.bars)
        self.train_windows = Windows(songs, "train", data_cfg, grid)
        self.valid_windows = Windows(songs, "valid", data_cfg, grid)
        if len(self.train_windows) == 0:
            raise TvaeError("no training windows: the folder has no usable songs in its "
                            "train split")
        self.batches = math.ceil(len(self.train_windows) / cfg.batch_size)
        self.total_steps = cfg.epoch_limit * self.batches
        if cfg.max_steps:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        self.cfg = cfg = fit_warmups(cfg, self.total_steps, self.main)
        self.planner = TimePlanner(cfg, self.total_steps, self.batches, lambda: self.clock())
        if self.main:
            _warn_if_tiny(len(self.train_windows), len(self.valid_windows))
        torch.manual_seed(cfg.seed)
        self.model = TransformerVAE(model_cfg, grid).to(self.device)
        self.net = ddp.wrap_model(self.model, dist, compile_model)  # what the step calls
        fused = self.device.type == "cuda"
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr,
                                           weight_decay=cfg.weight_decay, fused=fused)
        self.undo = UpdateUndo()  # takes back the update of a non-finite step
        self.state = RunState()
        self.safeguard = Safeguard(self.device, cfg)  # skipped steps, spikes, going back
        self.prefetch = self.device.type == "cuda"  # make the next batch during the step
        self.check_every = 1 if self.device.type == "cpu" else cfg.log_every  # guard reads
        self.log = MetricsLog(run_dir / "metrics.csv", enabled=self.main)
        self.clock = time.monotonic  # seconds; what --max-minutes measures (tests replace it)
        self._wall_base, self._wall_start = 0.0, self.clock()  # reset by fit()
        self.stop = StopRequest()  # Ctrl-C, noted and acted on at a step boundary
        self._acc: dict[str, Any] = {"count": 0}  # sums of the train row being gathered
        self._reserve = 0.0  # seconds the slowest end of epoch (validation, plots) took
        self._bar: Any = None  # the progress bar, while fit() runs

    # -- checkpoints ---------------------------------------------------------------------
    def save(self, name: str) -> None:
        if not self.main:
            return
        if self.dist is None:  # (ranks' sums differ; a DDP run resumes with a fresh row)
            self.state.pending = {k: float(v) for k, v in self._acc.items()
                                  if k in ("count", *SUMMED)} if self._acc["count"] else {}
        if self.safeguard.spikes is not None:
            self.state.loss_history = self.safeguard.spikes.values()
        save_checkpoint(self.run_dir / name, self.model, data=self.data_cfg, train=self.cfg,
                        state=asdict(self.state), optimizer=self.optimizer, labels=self.labels)

    def _at_late_start(self) -> bool:
        """The next step is the first of the last stage (--repeat-beta from
        --repeat-beta-from on): the run keeps its checkpoint here as `before_late`, from which
        a copy of the run can try another last stage (scripts/branch_run.py)."""
        cfg = self.cfg
        return (cfg.repeat_beta != 1.0 and cfg.repeat_beta_from > 0
                and self.state.step == late_start(cfg, self.total_steps))

    def resume(self) -> None:
        """Continue from the run folder's last checkpoint; a damaged one is a TvaeError."""
        state = load_resume_point(self.run_dir / "last", self.model, self.optimizer, RunState,
                                  self.device)
        self.state = state
        if self.safeguard.spikes is not None:
            self.safeguard.spikes.load(state.loss_history)
        self.log.truncate(state.step, state.epoch)
        if state.planned_steps:
            self._apply_plan(state.planned_steps)
        st, cfg = self.state, self.cfg
        if st.finished and st.step < self.total_steps and st.epoch < cfg.epoch_limit and (
                st.bad_epochs < cfg.patience) and not (
                cfg.max_minutes and st.seconds >= cfg.max_minutes * 60):
            st.finished = False  # limits extended on --resume: the run goes on

    # -- one step ------------------------------------------------------------------------
    def _batch(self, order: np.ndarray, b: int, step: int | None = None) -> Batch:
        """Batch `b` of the epoch's `order` for `step` (the current one by default): this
        process's rows of the global batch, and of the step's noise, both drawn from (seed,
        step). Called on the prefetch thread too: it reads no state that a step changes."""
        cfg = self.cfg
        step = self.state.step if step is None else step
        idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
        tokens, meters = self.train_windows.batch(idx, np.random.default_rng([cfg.seed, step]),
                                                  trim=True)
        labels = None  # (B,) the global batch's class ids
        if self.song_labels is not None:
            labels = self.song_labels[self.train_windows.song_of(idx)]
        noise = Noise.draw(tokens.shape, self.model.config.d_latent,
                           torch.Generator().manual_seed(ddp.mix_seed(cfg.seed, step)))
        rank, world = (0, 1) if self.dist is None else (self.dist.rank, self.dist.world)
        share = ddp.share_of(tokens, labels, rank, world, self.model.config.copy_offsets
                             if world > 1 and self.model.pointer is not None else 0,
                             cfg.pointer_edits)
        rows, device = share.rows, self.device
        return Batch(ddp.to_device(tokens[rows], device), ddp.to_device(meters[rows], device),
                     None if labels is None else ddp.to_device(labels[rows], device), share,
                     noise.map(lambda t: ddp.to_device(t[rows], device)))

    def step(self, batch: Batch) -> dict[str, Any]:
        """One optimizer step (tvae.training.step) at the schedules' values for this step:
        the stats, with an 'ok' tensor (False: the loss was not finite, the update skipped)."""
        cfg, s = self.cfg, self.state.step
        rank = 0 if self.dist is None else self.dist.rank
        torch.manual_seed(ddp.mix_seed(cfg.seed, s, rank))  # dropout masks
        at = Scheduled.at(s, cfg, self.total_steps, self.batches, self.state.lr_scale)
        world = 1 if self.dist is None else self.dist.world
        stats = train_step(self.net, self.optimizer, self.undo, batch, at, cfg, world,
                           self.safeguard.spikes)
        self.safeguard.guard.record(stats["ok"], stats["spike"])
        return {**stats, "beta": at.beta, "p_tf": at.p_tf, "lr": at.lr}

    def _read_guard(self, bar: Any) -> None:
        """What the step guard counted since the last read (tvae.training.guard)."""
        self.safeguard.read(self.state, self.model, self.optimizer, lambda m: self._say(bar, m),
                            self.save)

    # -- logging -------------------------------------------------------------------------
    def _say(self, bar: Any, message: str) -> None:
        if self.main:
            bar.write(message)

    def _log_row(self, acc: dict[str, Any], last: dict[str, Any]) -> dict[str, Any]:
        n = max(acc["count"], 1)
        row = {
            "step": self.state.step, "epoch": self.state.epoch, "split": "train",
            "loss": float(acc["loss"]) / n, "recon": float(acc["recon"]) / n,
            "kl_bits": float(acc["kl"]) / n / LN2,
            "accuracy": float(acc["correct"]) / max(float(acc["n"]), 1.0),
            "beta": last["beta"], "p_tf": last["p_tf"], "lr": last["lr"],
            "lr_rel": last["lr"] / self.cfg.lr, "skipped": self.state.skipped,
            "seconds": round(self.state.seconds, 1),
        }
        for part in ("pointer", "edit"):  # the auxiliary losses, where the model has them
            if part in acc:
                row[f"{part}_loss"] = float(acc[part]) / n
        if acc.get("class_n"):
            row["class_accuracy"] = float(acc["class_correct"]) / float(acc["class_n"])
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in row.items()}

    def validate(self) -> dict[str, Any]:
        """Validation metrics, written to metrics.csv; computed on rank 0 and shared."""
        if not self.main:
            return self.dist.broadcast(None)
        metrics = evaluate_windows(self.model, self.valid_windows,
                                   max_windows=self.cfg.eval_windows, transfer=False)
        labels = self.song_labels
        objective = validation_loss(  # the training objective: what picks `best`
            self.model, self.valid_windows, self.cfg, self.total_steps,
            None if labels is None else lambda idx: labels[self.valid_windows.song_of(idx)],
            self.device)
        row = {"step": self.state.step, "epoch": self.state.epoch, "split": "valid",
               "loss": round(objective["loss"], 6), "recon": round(objective["recon"], 6),
               "kl_bits": round(objective["kl"] / LN2, 6), "tf_accuracy": metrics["tf_accuracy"],
               "free_accuracy": metrics["free_accuracy"],
               "kl_bits_repeated": metrics["kl_bits_repeated"],
               "kl_bits_new": metrics["kl_bits_new"], "kl_paired_ratio": metrics["kl_paired_ratio"],
               "copy_share_repeated": metrics["copy_share_repeated"],
               "elbo_bits": metrics["elbo_bits_per_bar"], "seconds": round(self.state.seconds, 1)}
        for part in ("pointer", "edit"):
            if math.isfinite(objective[part]):
                row[f"{part}_loss"] = round(objective[part], 6)
        self.log.append([row])
        return row if self.dist is None else self.dist.broadcast(row)

    # -- the loop ------------------------------------------------------------------------
    def run_epoch(self, bar: Any) -> bool:
        """Train to the end of the current epoch; False if a step or time limit stopped it."""
        cfg, st = self.cfg, self.state
        order = self.train_windows.epoch_order(
            cfg.batch_size, np.random.default_rng([cfg.seed, 1_000_000 + st.epoch]))
        acc = self._acc = self._pending()
        make = lambda b, step: self._batch(order, b, step)  # noqa: E731
        with Prefetcher(make, self.batches, self.prefetch) as ahead:
            while st.batch < self.batches:
                if self._stop_requested():
                    raise KeyboardInterrupt  # at a step boundary: the state is whole
                if self._should_stop():
                    self._clock()
                    return False
                stats = self.step(ahead.get(st.batch, st.step))
                st.batch += 1
                st.step += 1
                bar.update(1)
                if self._at_late_start():
                    self.save(BEFORE_LATE)  # a branch point for other last stages
                if self.planner.stepped():
                    self._plan()
                if st.step % self.check_every == 0 or st.step % cfg.checkpoint_every == 0:
                    self._read_guard(bar)
                for key in SUMMED:
                    if key in stats:
                        acc[key] = acc.get(key, 0) + stats[key]
                acc["count"] += stats["ok"].long()  # steps applied
                if st.step % cfg.log_every == 0:
                    self._clock()
                    row = self._log_row(ddp.reduce_sums(acc, self.dist), stats)
                    self.log.append([row])
                    bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['accuracy']:.3f}",
                                    kl=f"{row['kl_bits']:.2f}b", beta=f"{row['beta']:.3g}",
                                    p_tf=f"{row['p_tf']:.2f}")
                    acc = self._acc = {"count": 0}
                if st.step % cfg.checkpoint_every == 0:
                    self._clock()
                    self.save("last")
                    self.safeguard.keep_good(self.state.step, self.model, self.optimizer)
        self._clock()
        self._acc = {"count": 0}  # a row left unfinished at an epoch's end is not logged
        return True

    def _pending(self) -> dict[str, Any]:
        """The sums of the train row being gathered: those a resumed checkpoint saved, once."""
        pending, self.state.pending = self.state.pending, {}
        acc: dict[str, Any] = {k: v for k, v in pending.items() if k in SUMMED}
        acc["count"] = int(pending.get("count", 0))
        return acc

    def _stop_requested(self) -> bool:
        """Ctrl-C was pressed (all ranks decide together, at log steps)."""
        if self.dist is None:
            return self.stop.requested
        at_log = self.state.step % self.cfg.log_every == 0
        return at_log and self.dist.any(self.stop.requested)

    def end_epoch(self, bar: Any, replan: bool = True) -> None:
        """Validate, checkpoint and plot; then remake the time plan (not after the last)."""
        began = self.clock()
        self._end_epoch(bar)
        took = self.clock() - began
        self._reserve = max(self._reserve, took)  # for --max-minutes
        self._clock()
        if self.planner.epoch_ended(took) and replan and not self.state.finished:
            self._plan()

    def _end_epoch(self, bar: Any) -> None:
        self._acc = {"count": 0}
        self._read_guard(bar)
        row = self.validate()
        st = self.state
        # no validation windows give a loss of 0 every epoch: each epoch is then the best
        improved = row["loss"] < st.best_loss or not len(self.valid_windows)
        st.best_loss = min(st.best_loss, row["loss"])
        st.bad_epochs = 0 if improved else st.bad_epochs + 1
        st.epoch, st.batch = st.epoch + 1, 0
        if improved:
            self.save("best")
        self._say(bar, f"epoch {st.epoch}: valid loss {_shown(row['loss'], 4)}, teacher-forced "
                  f"acc {_shown(row['tf_accuracy'], 4)}, free-running acc "
                  f"{_shown(row['free_accuracy'], 4)}, KL {_shown(row['kl_bits'], 2)} bits/bar"
                  + ("  (best)" if improved else ""))
        if st.bad_epochs >= self.cfg.patience:
            self._say(bar, f"early stopping: no better validation loss for {st.bad_epochs} epochs")
            st.finished = True
        self.save("last")
        if self.main:
            plot_metrics(self.run_dir / "metrics.csv", self.run_dir / "plots")
        self.safeguard.keep_good(self.state.step, self.model, self.optimizer)

    def fit(self) -> None:
        from tqdm import tqdm

        st = self.state
        self._wall_base, self._wall_start = st.seconds, self.clock()
        self.safeguard.keep_good(self.state.step, self.model, self.optimizer)
        bar = tqdm(total=self.bar_total(), initial=st.step, desc="train", unit="step",
                   disable=not (self.progress and self.main), dynamic_ncols=True)
        self._bar = bar
        try:
            with self.stop.installed():
                while not st.finished and st.epoch < self.cfg.epoch_limit:
                    if not self.run_epoch(bar):
                        break
                    self.end_epoch(bar)
                else:
                    st.finished = True
        except StopNow:
            bar.close()
            if self.main:
                print(f"\nstopped: the last checkpoint ({self.run_dir / 'last.json'}) is kept "
                      "as it was; continue with --resume", file=sys.stderr)
            raise SystemExit(self.stop.exit_code) from None
        except KeyboardInterrupt:
            self.save("last")
            bar.close()
            if self.main:
                print(f"\ninterrupted: checkpoint saved to {self.run_dir / 'last.json'}; "
                      "continue with --resume", file=sys.stderr)
            raise SystemExit(self.stop.exit_code) from None
        if not st.finished and st.batch:  # stopped by a step or time limit mid-epoch
            self.end_epoch(bar, replan=False)
            st.finished = st.finished or st.step >= self.total_steps
        self.save("last")
        bar.close()
