"""A trainer on a fake clock: each training step and each validation moves it a fixed time."""

from __future__ import annotations

from typing import Any


def run_on_fake_clock(trainer: Any, step_seconds: float = 1.0,
                      validate_seconds: float = 5.0) -> Any:
    """Run `trainer.fit()` on a clock that moves `step_seconds` per step and `validate_seconds`
    per validation; returns the trainer."""
    now = [0.0]
    trainer.clock = lambda: now[0]
    step, validate = trainer.step, trainer.validate

    def timed_step(*args: object) -> object:
        now[0] += step_seconds
        return step(*args)

    def timed_validate() -> dict:
        now[0] += validate_seconds
        return validate()

    trainer.step, trainer.validate = timed_step, timed_validate
    trainer.fit()
    return trainer
