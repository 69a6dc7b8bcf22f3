"""Fitting a run's learning-rate decay to its time budget.

A run limited by `--max-minutes` alone does not know how many steps it will take: its cosine
decay is planned over its epochs, so on a slow machine it stops with the learning rate still at
its peak (a 12-minute run of the defaults on this 2-core CPU takes about 570 of the 2,860 steps
its 20 epochs plan). With `fit_schedules`, the trainer measures the seconds a step and an
epoch's end (validation, checkpoint, plots) take, plans the steps that fit (`steps_that_fit`),
and ends the decay at that step. The plan is made after `CALIBRATION_STEPS` steps and remade
after each epoch (it is saved in the checkpoint, so a resumed run goes on with it); the time
limit stays the hard stop. Such a run is not cut short by the 20 epochs of a run given no
limit (`TrainConfig.epoch_limit`): on a faster machine, or a small corpus, they ended it
minutes early (the paper setting's 20 minutes planned 860 steps, and its beta warm-up was
halved to fit them).

The warm-ups are not stretched: they stay in steps as set (a learning-rate warm-up longer than
the plan is halved to fit). Shortened with the run, they collapsed the latents of 12-minute
runs (docs/experiments.md, "Short runs"): with the lr warming up over 60 steps and beta over
400 (or 277), 5.3 (3.5) KL bits per bar were left and free-running accuracy fell to 0.65
(0.62), against 18.4 bits and 0.79 with the warm-ups as set (300 and 2,000 steps).

`steps_that_fit` is a pure function; `TimePlanner` times the steps of one process and says
when to plan.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from tvae.config import TrainConfig

CALIBRATION_STEPS = 20  # steps timed before the first plan (the very first is not timed)
MARGIN = 0.03  # share of the time left that the plan leaves unused, for steps that run slower


def steps_that_fit(step: int, seconds: float, limit: float, step_seconds: float,
                   epoch_seconds: float, batches: int, margin: float = MARGIN) -> int:
    """The total steps a run can take: `step` done after `seconds` of a `limit`-second
    budget, a step costing `step_seconds` and each epoch's end (validation, checkpoint, plots)
    `epoch_seconds` every `batches` steps, one of them at the very end, with a `margin` share
    of the time left kept free (the schedules should end before the time does). Never fewer
    than `step` + 1."""
    per_step = step_seconds + epoch_seconds / max(batches, 1)
    left = (limit - seconds) * (1 - margin) - epoch_seconds  # the last validation must fit
    more = int(left / per_step) if per_step > 0 and left > 0 else 0
    return step + max(more, 1)


def plan_line(plan: int, step_seconds: float, given: TrainConfig, fitted: TrainConfig) -> str:
    """One line for the user: how many steps fit, and what that means for the schedules."""
    said = [f"the learning rate decays to its floor at step {plan}"]
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
    epoch, `clock` seconds (the trainer's, which tests replace)."""

    def __init__(self, cfg: TrainConfig, configured_steps: int, batches: int,
                 clock: Callable[[], float]) -> None:
        self.given, self.configured_steps, self.batches = cfg, configured_steps, batches
        self.clock = clock
        self.active = bool(cfg.max_minutes) and cfg.fit_schedules
        # this process' steps, the clock after its first one, epoch-end seconds since then
        self.steps, self.since, self.ends = 0, 0.0, 0.0

    def stepped(self) -> bool:
        """Count a step; True when it is time for the first plan."""
        self.steps += 1
        if self.steps == 1:
            self.since, self.ends = self.clock(), 0.0
        return self.active and self.steps == CALIBRATION_STEPS + 1

    def epoch_ended(self, seconds: float) -> bool:
        """Count an epoch's end that took `seconds`; True when the plan should be remade."""
        self.ends += seconds
        return self.active and self.steps > CALIBRATION_STEPS

    def step_seconds(self) -> float:
        return (self.clock() - self.since - self.ends) / max(self.steps - 1, 1)

    def plan(self, step: int, seconds: float, epoch_seconds: float) -> int | None:
        """The steps that fit (None when the run is not fitted to its time)."""
        if not self.active:
            return None
        return steps_that_fit(step, seconds, self.given.max_minutes * 60, self.step_seconds(),
                              epoch_seconds, self.batches)

    def fitted(self, plan: int) -> tuple[int, TrainConfig]:
        """The run's total steps under `plan` (where its lr decay ends), and its config: the
        given one, with an lr warm-up longer than the run halved to fit."""
        total = min(self.configured_steps, plan)
        cfg = self.given
        if cfg.warmup_steps > total:
            cfg = replace(cfg, warmup_steps=max(1, total // 2))
        return total, cfg

    def line(self, plan: int, fitted: TrainConfig) -> str:
        return plan_line(plan, self.step_seconds(), self.given, fitted)
