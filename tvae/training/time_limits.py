"""The run's step and time limits, as the Trainer takes them (a mixin): the wall clock that
--max-minutes measures across resumes, when to stop, and the time plan (tvae.training.time_plan)
applied to the step total, the schedules and the progress bar."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tvae.training.distributed as ddp
from tvae.config import NO_EPOCH_LIMIT, TrainConfig
from tvae.training.run_state import RunState
from tvae.training.time_plan import TimePlanner


class TimeLimits:
    """Over the Trainer's `cfg`, `state`, `clock`, `planner`, `dist`, `total_steps`, `_say` and
    the `_wall_base` / `_wall_start` / `_reserve` / `_bar` it keeps."""

    cfg: TrainConfig
    state: RunState
    clock: Callable[[], float]
    planner: TimePlanner
    dist: ddp.Dist | None
    main: bool
    total_steps: int
    _wall_base: float
    _wall_start: float
    _reserve: float
    _bar: Any
    _say: Callable[[Any, str], None]  # prints a line above the progress bar

    def _clock(self) -> None:
        """Bring state.seconds up to date: the wall time of earlier processes plus this one's."""
        self.state.seconds = self._wall_base + self.clock() - self._wall_start

    def _out_of_time(self) -> bool:
        """--max-minutes is wall time: stop early enough that the last validation and
        checkpoint (timed when they last ran) still end within the limit."""
        limit = self.cfg.max_minutes * 60
        self._clock()
        return bool(limit) and self.state.seconds + self._reserve >= limit

    def _should_stop(self) -> bool:
        """The step or time limit is reached (ranks decide on time together, at log steps)."""
        if self.state.step >= self.total_steps:
            return True
        if self.dist is None or not self.cfg.max_minutes:
            return self._out_of_time()
        at_log = self.state.step % self.cfg.log_every == 0
        return at_log and self.dist.any(self._out_of_time())

    def _plan(self) -> None:
        """Plan the steps that fit in --max-minutes and end the lr decay there (all ranks take
        rank 0's plan); tvae.training.time_plan."""
        self._clock()
        plan = self.planner.plan(self.state.step, self.state.seconds, self._reserve)
        if plan is None:
            return
        if self.dist is not None:
            plan = self.dist.broadcast(plan if self.main else None)
        first = not self.state.planned_steps
        self._apply_plan(plan)
        if first and self.main and plan < self.planner.configured_steps:
            self._say(self._bar, self.planner.line(plan, self.cfg))

    def bar_total(self) -> int | None:
        """The progress bar's total: the run's steps, or None (a count without a bar) while a
        time-limited run given no other limit has not yet planned them."""
        unplanned = self.planner.active and not self.state.planned_steps
        return None if unplanned and self.total_steps >= NO_EPOCH_LIMIT else self.total_steps

    def _apply_plan(self, plan: int) -> None:
        self.state.planned_steps = plan
        self.total_steps, self.cfg = self.planner.fitted(plan)
        if self._bar is not None:
            self._bar.total = self.total_steps
            self._bar.refresh()
