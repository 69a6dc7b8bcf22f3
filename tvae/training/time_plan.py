"""Fitting a run's learning-rate decay to its time budget.

A run limited by `--max-minutes` alone does not know how many steps it will take: its cosine
decay is planned over its epochs, so on a slow machine it stops with the learning rate still at
its peak (a 12-minute run of the defaults on this 2-core CPU takes about 570 of the 2,860 steps
its 20 epochs plan). With `fit_schedules`, the trainer measures the seconds a step and an
epoch's end (validation, checkpoint, plots) take, plans the steps that fit (`steps_that_fit`),
and ends the decay at that step. The plan is made after `CALIBRATION_STEPS` steps and remade
after each epoch (it is saved in the checkpoint, so a resumed run goes on with it); the time
limit stays the hard stop.

The warm-ups are not stretched: they stay in steps as set (a learning-rate warm-up longer than
the plan is halved to fit). Shortened with the run, they collapsed the latents of 12-minute
runs (docs/experiments.md, "Short runs"): with the lr warming up over 60 steps and beta over
400 (or 277), 5.3 (3.5) KL bits per bar were left and free-running accuracy fell to 0.65
(0.62), against 18.4 bits and 0.79 with the warm-ups as set (300 and 2,000 steps).

A run that starts on crops of its windows (`crop_steps`) has two kinds of step: a crop step
costs a fraction of a whole window's. Each kind is timed on its own; until whole-window steps
have been timed, theirs is guessed as the crop step's times the bars' ratio, and the plan is
remade once `CALIBRATION_STEPS` of them have been. The crop phase ends by `CROP_SHARE` of the
planned steps at the latest (`crop_end`), so that every run ends on whole windows.

`steps_that_fit` and `crop_end` are pure functions; `TimePlanner` times the steps of one
process and says when to plan.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from tvae.config import TrainConfig
from tvae.training.schedules import crop_end

CALIBRATION_STEPS = 20  # steps timed before the first plan (the very first is not timed)
MARGIN = 0.03  # share of the time left that the plan leaves unused, for steps that run slower

def steps_that_fit(step: int, seconds: float, limit: float, step_seconds: float,
                   epoch_seconds: float, batches: int, margin: float = MARGIN,
                   crop_steps: int = 0, crop_seconds: float = 0.0) -> int:
    """The total steps a run can take: `step` done after `seconds` of a `limit`-second
    budget, a step costing `step_seconds` and each epoch's end (validation, checkpoint, plots)
    `epoch_seconds` every `batches` steps, one of them at the very end, with a `margin` share
    of the time left kept free (the schedules should end before the time does). The steps
    before `crop_end(crop_steps, total)` cost `crop_seconds` instead. Never fewer than
    `step` + 1."""
    per_epoch = epoch_seconds / max(batches, 1)
    left = (limit - seconds) * (1 - margin) - epoch_seconds  # the last validation must fit

    def cost(total: int) -> float:  # seconds of the steps from `step` to `total`
        crops = max(min(crop_end(crop_steps, total), total) - step, 0)
        return crops * (crop_seconds + per_epoch) + (total - step - crops) * (
            step_seconds + per_epoch)

    if left <= 0 or step_seconds + per_epoch <= 0 or cost(step + 1) > left:
        return step + 1
    lo, hi = step + 1, step + 2
    while cost(hi) <= left:  # the cost grows with the total: double, then bisect
        lo, hi = hi, step + 2 * (hi - step)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if cost(mid) <= left else (lo, mid)
    return lo


def plan_line(plan: int, step_seconds: float, given: TrainConfig, fitted: TrainConfig,
              crop_seconds: float = 0.0) -> str:
    """One line for the user: how many steps fit, and what that means for the schedules."""
    said = [f"the learning rate decays to its floor at step {plan}"]
    if fitted.crop_steps:
        said.append(f"the first {fitted.crop_steps} steps train on crops of the windows "
                    f"({crop_seconds:.2f} s a step)")
    if fitted.warmup_steps != given.warmup_steps:
        said.append(f"its warm-up is cut to {fitted.warmup_steps} steps")
    if given.beta_schedule == "linear" and given.beta_steps > plan:
        said.append(f"beta rises over {given.beta_steps} steps as set, so it ends at "
                    f"{given.beta * plan / given.beta_steps:.2g} of {given.beta:g}")
    return (f"--max-minutes {given.max_minutes:g}: about {plan} steps fit "
            f"({step_seconds:.2f} s a step); " + "; ".join(said))


class TimePlanner:
    """The time plan of one training process. `cfg` is the run's config as given,
    `configured_steps` the steps its epochs (or --max-steps) allow, `batches` the steps of an
    epoch, `clock` seconds (the trainer's, which tests replace), `crop_ratio` the crops' bars
    over a whole window's (the guess of how much cheaper a crop step is)."""

    def __init__(self, cfg: TrainConfig, configured_steps: int, batches: int,
                 clock: Callable[[], float], crop_ratio: float = 1.0) -> None:
        self.given, self.configured_steps, self.batches = cfg, configured_steps, batches
        self.clock, self.crop_ratio = clock, crop_ratio
        self.active = bool(cfg.max_minutes) and cfg.fit_schedules
        self.steps = 0  # steps this process took
        self.last: float | None = None  # the clock at the last step's end
        self.pause = 0.0  # epoch-end seconds since then, not a step's
        self.timed = {True: [0, 0.0], False: [0, 0.0]}  # crop step?: [steps, seconds]

    def stepped(self, cropped: bool = False) -> bool:
        """Count a step (on crops or not); True when it is time to plan:
        after `CALIBRATION_STEPS` timed steps, and again after as many whole-window steps
        when the run began on crops."""
        self.steps += 1
        now = self.clock()
        if self.last is not None:  # the very first step (start-up, compilation) is not timed
            kind = self.timed[cropped]
            kind[0] += 1
            kind[1] += now - self.last - self.pause
        self.last, self.pause = now, 0.0
        if not self.active:
            return False
        crops, wholes = self.timed[True][0], self.timed[False][0]
        return crops + wholes == CALIBRATION_STEPS or (
            crops >= CALIBRATION_STEPS and wholes == CALIBRATION_STEPS and not cropped)

    def epoch_ended(self, seconds: float) -> bool:
        """Count an epoch's end that took `seconds`; True when the plan should be remade."""
        self.pause += seconds
        return self.active and self.steps > CALIBRATION_STEPS

    def _mean(self, cropped: bool) -> float | None:
        n, total = self.timed[cropped]
        return total / n if n else None

    def step_seconds(self) -> float:
        """Seconds a whole-window step takes (guessed from a crop step's until timed)."""
        whole, crop = self._mean(False), self._mean(True)
        if whole is not None and (crop is None or self.timed[False][0] >= CALIBRATION_STEPS):
            return whole
        return (crop or 0.0) / self.crop_ratio

    def crop_seconds(self) -> float:
        crop = self._mean(True)
        return crop if crop is not None else self.step_seconds() * self.crop_ratio

    def plan(self, step: int, seconds: float, epoch_seconds: float) -> int | None:
        """The steps that fit (None when the run is not fitted to its time)."""
        if not self.active:
            return None
        return steps_that_fit(step, seconds, self.given.max_minutes * 60, self.step_seconds(),
                              epoch_seconds, self.batches, crop_steps=self.given.crop_steps,
                              crop_seconds=self.crop_seconds())

    def fitted(self, plan: int) -> tuple[int, TrainConfig]:
        """The run's total steps under `plan` (where its lr decay ends), and its config: the
        given one, with an lr warm-up longer than the run halved to fit and the crop phase
        ending by `crop_end`."""
        total = min(self.configured_steps, plan)
        cfg = self.given
        if cfg.warmup_steps > total:
            cfg = replace(cfg, warmup_steps=max(1, total // 2))
        if cfg.crop_steps > crop_end(cfg.crop_steps, total):
            cfg = replace(cfg, crop_steps=crop_end(cfg.crop_steps, total))
        return total, cfg

    def line(self, plan: int, fitted: TrainConfig) -> str:
        return plan_line(plan, self.step_seconds(), self.given, fitted, self.crop_seconds())
