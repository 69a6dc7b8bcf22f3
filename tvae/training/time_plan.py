"""Fitting a run's schedules to its time budget.

A run limited by `--max-minutes` alone does not know how many steps it will take: on a slow
machine it would stop with its learning rate still at the peak and its beta warm-up unfinished
(a 12-minute run of the defaults on a 2-core CPU takes about 570 steps of the 2,860 its 20
epochs plan; beta had reached 0.08 of its 0.3). With `fit_schedules`, the trainer measures the
seconds a step and an epoch's validation take, plans the steps that fit (`steps_that_fit`), and
stretches every step-counted schedule to that plan (`fit_to_plan`): the warm-ups keep their
share of the run and the cosine decay ends at the run's last step. The plan is made after
`CALIBRATION_STEPS` steps and remade after each epoch's validation (it is saved in the
checkpoint, so a resumed run goes on with it); the time limit stays the hard stop.

`steps_that_fit` and `fit_to_plan` are pure functions; `TimePlanner` times the steps of one
process and says when to plan.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

from tvae.config import TrainConfig
from tvae.training.schedules import fit_warmups

CALIBRATION_STEPS = 20  # steps timed before the first plan (the very first is not timed)
# schedule lengths counted in steps, stretched with the run
SCHEDULE_STEPS = ("warmup_steps", "beta_steps", "tf_steps", "pointer_steps")


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


def fit_to_plan(cfg: TrainConfig, planned_for: int, plan: int) -> TrainConfig:
    """`cfg` with every step-counted schedule length scaled by plan / planned_for, when the
    plan is shorter than the run the config describes (`planned_for` steps: its epochs or
    --max-steps); otherwise `cfg` as it is. A schedule that was 0 (off) stays 0; one that was
    on stays at least 1 step long."""
    if plan >= planned_for or planned_for <= 0:
        return cfg
    ratio = plan / planned_for
    changes = {name: max(1, math.ceil(getattr(cfg, name) * ratio)) for name in SCHEDULE_STEPS
               if getattr(cfg, name) > 0}
    return replace(cfg, **changes)


def plan_line(plan: int, step_seconds: float, given: TrainConfig, fitted: TrainConfig) -> str:
    """One line for the user: how many steps fit and how the schedules were fitted to them."""
    changed = [f"--{n.replace('_', '-')} {getattr(given, n)} -> {getattr(fitted, n)}"
               for n in SCHEDULE_STEPS if getattr(given, n) != getattr(fitted, n)]
    said = f" ({', '.join(changed)})" if changed else ""
    return (f"--max-minutes {given.max_minutes:g}: about {plan} steps fit "
            f"({step_seconds:.2f} s a step); the schedules end there{said}")


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
        """The run's total steps under `plan`, and its config with the schedules fitted."""
        total = min(self.configured_steps, plan)
        cfg = fit_to_plan(self.given, self.configured_steps, total)
        return total, fit_warmups(cfg, total, say=False)

    def line(self, plan: int, fitted: TrainConfig) -> str:
        return plan_line(plan, self.step_seconds(), self.given, fitted)
