"""Schedules as pure functions of the training step: learning rate, KL weight beta, and the
teacher-forcing probability p_tf of scheduled sampling. Each is a few lines with its formula.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import replace

from tvae.config import BETA_SCHEDULES, TF_SCHEDULES, TrainConfig, flag_of
from tvae.errors import TvaeError, TvaeWarning


def learning_rate(step: int, base: float, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up to `base`, then cosine decay to `base * min_ratio` at `total` steps."""
    # 1) warm-up: from base/warmup up to base
    if step < warmup:
        return base * (step + 1) / warmup
    # 2) after the end: hold the floor
    if step >= total:
        return base * min_ratio
    # 3) in between: cosine from 1 down to min_ratio
    progress = (step - warmup) / max(1, total - warmup)
    return base * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def beta_constant(step: int, beta: float) -> float:
    return beta


def beta_linear(step: int, beta: float, steps: int) -> float:
    """KL warm-up: 0 at step 0, rising linearly to `beta` at `steps`, then constant."""
    return beta * min(1.0, step / max(1, steps))


def beta_cyclical(step: int, beta: float, steps: int, ratio: float = 0.5) -> float:
    """Cyclical annealing (Fu et al. 2019): each cycle of `steps` rises linearly over its
    first `ratio` share to `beta`, then stays there."""
    tau = (step % max(1, steps)) / max(1, steps)
    return beta * min(1.0, tau / ratio)


def tf_constant(step: int, p: float) -> float:
    return p


def tf_linear(step: int, p_max: float, p_min: float, steps: int) -> float:
    """Linear decay (Bengio et al. 2015): p = max(p_min, p_max - (p_max - p_min) * step / steps)."""
    return max(p_min, p_max - (p_max - p_min) * step / max(1, steps))


def tf_exponential(step: int, k: float, p_min: float) -> float:
    """Exponential decay (Bengio et al. 2015): p = k ** step with k < 1, floored at p_min."""
    return max(p_min, k**step)


def tf_inverse_sigmoid(step: int, k: float, p_min: float) -> float:
    """Inverse sigmoid decay (Bengio et al. 2015): p = k / (k + exp(step / k)), k >= 1."""
    return max(p_min, k / (k + math.exp(min(step / k, 700.0))))


def tf_logistic(step: int, gamma: float, p_min: float, p_max: float, batches: int) -> float:
    """Drossos et al. 2019, exactly:
    p = min(p_max, 1 - min(1 - p_min, 2 / (1 + exp(beta)) - 1)), beta = -gamma * step / batches."""
    beta = -gamma * step / max(1, batches)
    return min(p_max, 1 - min(1 - p_min, 2 / (1 + math.exp(beta)) - 1))


def pointer_weight(step: int, weight: float, steps: int) -> float:
    """Auxiliary pointer loss weight: `weight` for `steps` steps, then linearly down to 0 at
    2 * steps (a nudge that lets the copy path take hold, switched off later); `steps` 0: the
    whole run."""
    if steps <= 0:
        return weight
    return weight * min(max(2.0 - step / steps, 0.0), 1.0)


def pointer_at(step: int, cfg: TrainConfig) -> float:
    return pointer_weight(step, cfg.pointer_weight, cfg.pointer_steps)


def repeat_beta_weight(step: int, weight: float, start: int) -> float:
    """The multiplier of beta on repeats' KL: 1 before step `start`, then `weight` (a short
    last stage within one run when `start` is near the end)."""
    return weight if step >= start else 1.0


def late_start(cfg: TrainConfig, total_steps: int) -> int:
    """The first step that weighs repeats' KL by --repeat-beta (the last stage's start)."""
    return round(cfg.repeat_beta_from * total_steps)


def repeat_beta_at(step: int, cfg: TrainConfig, total_steps: int) -> float:
    return repeat_beta_weight(step, cfg.repeat_beta, late_start(cfg, total_steps))


def beta_at(step: int, cfg: TrainConfig) -> float:
    """The KL weight at `step` under `cfg`'s schedule."""
    if cfg.beta_schedule == "constant":
        return beta_constant(step, cfg.beta)
    if cfg.beta_schedule == "linear":
        return beta_linear(step, cfg.beta, cfg.beta_steps)
    if cfg.beta_schedule == "cyclical":
        return beta_cyclical(step, cfg.beta, cfg.beta_steps)
    raise TvaeError(f"unknown beta schedule {cfg.beta_schedule!r} (choose from {BETA_SCHEDULES})")


def tf_at(step: int, cfg: TrainConfig, batches_per_epoch: int) -> float:
    """The teacher-forcing probability at `step` under `cfg`'s schedule."""
    name = cfg.tf_schedule
    if name == "constant":
        return tf_constant(step, cfg.tf_p)
    if name == "linear":
        return tf_linear(step, cfg.tf_max, cfg.tf_min, cfg.tf_steps)
    if name == "exponential":
        return tf_exponential(step, cfg.tf_k, cfg.tf_min)
    if name == "inverse_sigmoid":
        return tf_inverse_sigmoid(step, cfg.tf_k, cfg.tf_min)
    if name == "logistic":
        return tf_logistic(step, cfg.tf_gamma, cfg.tf_min, cfg.tf_max, batches_per_epoch)
    raise TvaeError(f"unknown teacher-forcing schedule {name!r} (choose from {TF_SCHEDULES})")


def lr_at(step: int, cfg: TrainConfig, total_steps: int) -> float:
    return learning_rate(step, cfg.lr, cfg.warmup_steps, total_steps, cfg.min_lr_ratio)


def fit_warmups(cfg: TrainConfig, total_steps: int, say: bool = True) -> TrainConfig:
    """A learning-rate or beta warm-up longer than the whole run would never reach its setting:
    it is shortened to half the run, with a warning."""
    half = max(1, total_steps // 2)
    changes = {name: half for name in ("warmup_steps", "beta_steps")
               if getattr(cfg, name) > total_steps}
    if changes and say:
        told = ", ".join(f"{flag_of(k)} {getattr(cfg, k)} -> {v}"
                         for k, v in changes.items())
        warnings.warn(f"the run has {total_steps} steps, fewer than its warm-ups: they were "
                      f"shortened to half of it ({told})", TvaeWarning, stacklevel=3)
    return replace(cfg, **changes) if changes else cfg
