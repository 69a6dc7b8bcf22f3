"""Watching the steps: which were skipped (a non-finite loss, or a loss spike), and what to do
about many in a row. `StepGuard` and `SpikeFilter` work on the device without a host sync;
`Safeguard.read` runs on the host every few steps: it reports skips, stops a run whose loss
stays non-finite, and takes a run whose loss keeps spiking back to its last good weights at
half the learning rate (at most MAX_RECOVERIES times, then it stops with a message).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from tvae.config import TrainConfig
from tvae.errors import TvaeError

MAX_RECOVERIES = 3  # returns to the last good weights before repeated spikes stop a run


class SpikeFilter:
    """Finds loss spikes on the device, without a host sync: a step whose loss per bar is more
    than `ratio` times the median of the last `window` applied steps is a spike (checked once
    `least` steps are known). A spike is skipped and undone like a non-finite loss: one bad
    batch (or a bf16 overflow that stays finite) never reaches the weights."""

    def __init__(self, device: torch.device, ratio: float, window: int = 64, least: int = 16
                 ) -> None:
        self.ratio, self.least = ratio, least
        self.history = torch.full((window,), float("nan"), device=device)  # applied losses
        self.slot = torch.zeros((), dtype=torch.int64, device=device)  # where the next goes

    def is_spike(self, loss: Tensor) -> Tensor:
        """0-d bool: `loss` (0-d) is a spike against the recent history."""
        known = (~torch.isnan(self.history)).sum()
        median = torch.nanmedian(self.history)
        return (known >= self.least) & torch.isfinite(loss) & (loss > self.ratio * median)

    def record(self, loss: Tensor, ok: Tensor) -> None:
        """Add the loss of an applied step (`ok` true) to the history."""
        value = torch.where(ok, loss, self.history[self.slot])
        self.history[self.slot] = value
        self.slot = (self.slot + ok.long()) % self.history.numel()

    def values(self) -> list[float]:
        """The history, oldest first, as floats (a host sync: for checkpoints)."""
        order = torch.roll(self.history, -int(self.slot))
        return [float(v) for v in order.tolist() if v == v]

    def load(self, values: list[float]) -> None:
        """Start from a saved history (`values`)."""
        self.history.fill_(float("nan"))
        kept = values[-self.history.numel():]
        if kept:
            self.history[: len(kept)] = torch.tensor(kept, dtype=self.history.dtype)
        self.slot.fill_(len(kept) % self.history.numel())


@dataclass(frozen=True)
class GuardReport:
    """What `StepGuard.check` read: steps skipped since the last check, and the longest runs
    of consecutive non-finite and spike steps (a run still going counts from its start)."""

    skipped: int
    worst: int  # non-finite steps in a row
    spikes: int
    worst_spikes: int  # spike steps in a row


class StepGuard:
    """Skipped steps (non-finite losses, spikes) counted on the device; `check` reads them on
    the host."""

    def __init__(self, device: torch.device) -> None:
        self.counts = torch.zeros(2, dtype=torch.int64, device=device)  # skipped, spikes
        self.runs = torch.zeros(2, dtype=torch.int64, device=device)  # non-finite, spike runs
        self.worst = torch.zeros(2, dtype=torch.int64, device=device)  # longest runs

    def record(self, ok: Tensor, spike: Tensor | None = None) -> None:
        spike = torch.zeros_like(ok) if spike is None else spike & ~ok
        kinds = torch.stack([~ok & ~spike, spike]).long()  # (2,) non-finite, spike
        self.counts[0] += (~ok).long()
        self.counts[1] += kinds[1]
        self.runs = (self.runs + 1) * kinds
        self.worst = torch.maximum(self.worst, self.runs)

    def forget_runs(self) -> None:
        """Start counting runs afresh (after going back to a good state)."""
        self.runs.zero_()
        self.worst.zero_()

    def check(self) -> GuardReport:
        """What happened since the last check."""
        skipped, spikes, worst, worst_spikes = torch.cat([self.counts, self.worst]).tolist()
        self.counts.zero_()
        self.worst = self.runs.clone()
        return GuardReport(int(skipped), int(worst), int(spikes), int(worst_spikes))


class Safeguard:
    """The step guard, the spike filter and the last good state of one run."""

    def __init__(self, device: torch.device, cfg: TrainConfig) -> None:
        self.cfg = cfg
        self.guard = StepGuard(device)
        self.spikes = SpikeFilter(device, cfg.spike_ratio) if cfg.spike_ratio > 0 else None
        self.good: tuple[int, dict, dict] | None = None  # (step, weights, optimizer state)
        self.dirty = False  # a step was skipped since the last good state was kept

    def keep_good(self, step: int, model: torch.nn.Module,
                  optimizer: torch.optim.Optimizer) -> None:
        """Keep the weights and optimizer state in memory as the state to go back to, unless
        a step was skipped since the last time (they may be what causes the skips)."""
        if not self.dirty:
            self.good = (step, {k: v.detach().clone() for k, v in model.state_dict().items()},
                         copy.deepcopy(optimizer.state_dict()))
        self.dirty = False

    def read(self, state: Any, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             say: Callable[[str], None], save: Callable[[str], None]) -> None:
        """Count the skipped steps into `state` (a RunState); stop after max_bad_steps
        non-finite losses in a row; after max_bad_steps spikes in a row, go back to the last
        good state at half the learning rate (`state.lr_scale`), or stop."""
        cfg = self.cfg
        report = self.guard.check()
        state.skipped += report.skipped
        self.dirty = self.dirty or report.skipped > 0
        if report.skipped > report.spikes:
            say(f"step {state.step}: the loss was not finite; "
                f"{report.skipped - report.spikes} step(s) skipped since the last check")
        if report.spikes:
            say(f"step {state.step}: {report.spikes} loss spike(s) (over {cfg.spike_ratio:g}x "
                "the running median) skipped since the last check")
        if report.worst >= cfg.max_bad_steps:
            save("last")
            raise TvaeError(f"the loss was not finite for {report.worst} steps in a row; "
                            "training stopped (try a lower --lr)")
        if report.worst_spikes < cfg.max_bad_steps:
            return
        if state.recoveries >= MAX_RECOVERIES or self.good is None:
            save("last")
            raise TvaeError(f"the loss stayed above {cfg.spike_ratio:g}x its running median for "
                            f"{report.worst_spikes} steps in a row after {state.recoveries} "
                            "return(s) to the last good weights at lower learning rates; "
                            "training stopped (try a lower --lr, or --spike-ratio 0 to train "
                            "through spikes)")
        step, weights, saved = self.good
        model.load_state_dict(weights)
        optimizer.load_state_dict(copy.deepcopy(saved))
        state.recoveries += 1
        state.lr_scale *= 0.5
        self.guard.forget_runs()
        say(f"step {state.step}: {report.worst_spikes} loss spikes in a row: went back to the "
            f"weights of step {step} and halved the learning rate (now {state.lr_scale:g}x the "
            "schedule's)")
