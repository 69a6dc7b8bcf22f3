"""Where a training run stands: the state saved in every checkpoint, so that a resumed run goes
on exactly where it stopped."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tvae.config import validate_fields


@dataclass
class RunState:
    """Where a run stands; saved in every checkpoint."""

    step: int = 0  # optimizer steps taken
    epoch: int = 0  # current epoch (0-based)
    batch: int = 0  # batches done in the current epoch
    # best validation loss so far; infinite before the first validation
    best_loss: float = field(default=math.inf, metadata={"infinite_ok": True})
    bad_epochs: int = 0  # epochs since the best validation loss
    skipped: int = 0  # steps skipped for a non-finite loss or a loss spike
    lr_scale: float = 1.0  # halved each time repeated spikes restore the last good weights
    recoveries: int = 0  # how many times that happened
    # the spike filter's recent applied losses (per bar), so that a resumed run judges its next
    # steps as an uninterrupted one would
    loss_history: list[float] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the run so far: steps, validation and checkpoints
    finished: bool = False
    # with --max-minutes and fit_schedules: the steps planned to fit in the time, where the lr
    # decay ends (0: none yet; tvae.training.time_plan)
    planned_steps: int = 0
    # sums of the train row being gathered (count and SUMMED) when the checkpoint was saved
    # between two log rows: a resumed run logs the row an uninterrupted one would have
    pending: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_fields(self)  # a saved state is checked like a config
