"""Learning-rate, KL-weight and teacher-forcing schedules: exact values at chosen steps."""

from __future__ import annotations

import dataclasses
import math

import pytest

from tvae.config import TrainConfig
from tvae.errors import TvaeError
from tvae.training.schedules import (
    BETA_SCHEDULES,
    TF_SCHEDULES,
    beta_at,
    beta_constant,
    beta_cyclical,
    beta_linear,
    learning_rate,
    lr_at,
    repeat_beta_at,
    repeat_beta_weight,
    tf_at,
    tf_constant,
    tf_exponential,
    tf_inverse_sigmoid,
    tf_linear,
    tf_logistic,
)


def drossos(i: int, gamma: float, p_min: float, p_max: float, n_b: int) -> float:
    """Drossos et al. 2019, written out independently of tvae."""
    beta = -gamma * i / n_b
    return min(p_max, 1 - min(1 - p_min, 2 / (1 + math.exp(beta)) - 1))


# -- learning rate ------------------------------------------------------------------------------
def test_learning_rate_warmup_cosine_and_floor() -> None:
    base, warmup, total, floor = 1e-3, 10, 110, 0.1
    assert learning_rate(0, base, warmup, total, floor) == pytest.approx(1e-4)
    assert learning_rate(4, base, warmup, total, floor) == pytest.approx(5e-4)
    assert learning_rate(9, base, warmup, total, floor) == pytest.approx(1e-3)
    assert learning_rate(10, base, warmup, total, floor) == pytest.approx(1e-3)  # cosine start
    assert learning_rate(60, base, warmup, total, floor) == pytest.approx(5.5e-4)  # halfway
    quarter = 1e-4 + 9e-4 * 0.5 * (1 + math.cos(math.pi * 0.25))
    assert learning_rate(35, base, warmup, total, floor) == pytest.approx(quarter)
    assert learning_rate(110, base, warmup, total, floor) == pytest.approx(1e-4)
    assert learning_rate(10_000, base, warmup, total, floor) == pytest.approx(1e-4)
    rates = [learning_rate(s, base, warmup, total, floor) for s in range(200)]
    assert all(a <= b for a, b in zip(rates[:10], rates[1:10], strict=False))  # rising
    assert all(a >= b for a, b in zip(rates[10:], rates[11:], strict=False))  # then falling
    assert min(rates) == pytest.approx(base * floor)


def test_learning_rate_without_warmup() -> None:
    assert learning_rate(0, 2e-3, 0, 100, 0.5) == pytest.approx(2e-3)
    assert learning_rate(50, 2e-3, 0, 100, 0.5) == pytest.approx(1.5e-3)


def test_lr_at_reads_the_config() -> None:
    cfg = TrainConfig(lr=2e-3, warmup_steps=4, min_lr_ratio=0.25)
    assert lr_at(1, cfg, 100) == pytest.approx(learning_rate(1, 2e-3, 4, 100, 0.25)) == 1e-3
    assert lr_at(100, cfg, 100) == pytest.approx(5e-4)


# -- beta ---------------------------------------------------------------------------------------
def test_beta_schedules() -> None:
    assert beta_constant(0, 0.3) == beta_constant(10**6, 0.3) == 0.3
    assert beta_linear(0, 0.2, 100) == 0.0
    assert beta_linear(25, 0.2, 100) == pytest.approx(0.05)
    assert beta_linear(100, 0.2, 100) == pytest.approx(0.2)
    assert beta_linear(5000, 0.2, 100) == pytest.approx(0.2)
    assert beta_linear(3, 0.2, 0) == pytest.approx(0.2)  # no warm-up
    # cyclical: cycles of 100 steps, rising over the first half, then flat
    assert beta_cyclical(0, 1.0, 100) == 0.0
    assert beta_cyclical(25, 1.0, 100) == pytest.approx(0.5)
    assert beta_cyclical(50, 1.0, 100) == pytest.approx(1.0)
    assert beta_cyclical(99, 1.0, 100) == pytest.approx(1.0)
    assert beta_cyclical(100, 1.0, 100) == 0.0  # a new cycle
    assert beta_cyclical(110, 1.0, 100) == pytest.approx(0.2)
    assert beta_cyclical(10, 0.5, 100, ratio=0.25) == pytest.approx(0.2)


def test_beta_at_dispatch() -> None:
    for name, step, expected in [("constant", 7, 0.4), ("linear", 50, 0.2), ("cyclical", 125, 0.2)]:
        cfg = TrainConfig(beta_schedule=name, beta=0.4, beta_steps=100)
        assert beta_at(step, cfg) == pytest.approx(expected)
    assert set(BETA_SCHEDULES) == {"constant", "linear", "cyclical"}
    with pytest.raises(TvaeError, match="unknown beta schedule 'sigmoid'"):
        beta_at(0, TrainConfig(beta_schedule="sigmoid"))


# -- teacher forcing ----------------------------------------------------------------------------
def test_tf_constant_linear_exponential_inverse_sigmoid() -> None:
    assert tf_constant(123, 0.7) == 0.7
    assert tf_linear(0, 1.0, 0.2, 100) == 1.0
    assert tf_linear(50, 1.0, 0.2, 100) == pytest.approx(0.6)
    assert tf_linear(100, 1.0, 0.2, 100) == pytest.approx(0.2)  # reaches p_min at tf_steps
    assert tf_linear(1000, 1.0, 0.2, 100) == pytest.approx(0.2)
    assert tf_exponential(0, 0.99, 0.0) == 1.0
    assert tf_exponential(10, 0.99, 0.0) == pytest.approx(0.99**10)
    assert tf_exponential(10_000, 0.99, 0.25) == 0.25
    assert tf_inverse_sigmoid(0, 10.0, 0.0) == pytest.approx(10 / 11)
    assert tf_inverse_sigmoid(30, 10.0, 0.0) == pytest.approx(10 / (10 + math.exp(3)))
    assert tf_inverse_sigmoid(10**9, 10.0, 0.1) == 0.1  # no overflow far out


@pytest.mark.parametrize(("gamma", "p_min", "p_max", "n_b"),
                         [(0.5, 0.0, 1.0, 100), (2.0, 0.3, 0.9, 7), (0.1, 0.05, 1.0, 1)])
def test_tf_logistic_is_drossos(gamma: float, p_min: float, p_max: float, n_b: int) -> None:
    assert tf_logistic(0, gamma, p_min, p_max, n_b) == pytest.approx(p_max)
    steps = range(0, 50 * n_b, max(1, n_b // 3))
    values = [tf_logistic(i, gamma, p_min, p_max, n_b) for i in steps]
    for i in (0, 1, 3, n_b, 5 * n_b, 40 * n_b):
        assert tf_logistic(i, gamma, p_min, p_max, n_b) == pytest.approx(
            drossos(i, gamma, p_min, p_max, n_b), abs=1e-12)
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))  # non-increasing
    assert all(p_min - 1e-12 <= v <= p_max for v in values)
    assert tf_logistic(10**6 * n_b, gamma, p_min, p_max, n_b) == pytest.approx(p_min)


def test_tf_logistic_reference_value() -> None:
    # gamma 0.5, step 200 of 100 batches: beta = -1, p = 1 - (2 / (1 + e^-1) - 1)
    expected = 1 - (2 / (1 + math.exp(-1.0)) - 1)
    assert tf_logistic(200, 0.5, 0.0, 1.0, 100) == pytest.approx(expected)
    assert expected == pytest.approx(0.5378828427399902)


def test_tf_at_dispatch() -> None:
    base = TrainConfig(tf_p=0.8, tf_min=0.1, tf_max=0.9, tf_steps=100, tf_gamma=0.5)
    cases = {  # name: (tf_k, expected p_tf at step 40 with 20 batches per epoch)
        "constant": (0.99, 0.8),
        "linear": (0.99, 0.9 - 0.8 * 40 / 100),
        "exponential": (0.99, 0.99**40),
        "inverse_sigmoid": (10.0, 10 / (10 + math.exp(4))),
        "logistic": (0.99, drossos(40, 0.5, 0.1, 0.9, 20)),
    }
    assert set(cases) == set(TF_SCHEDULES)
    for name, (k, value) in cases.items():
        cfg = dataclasses.replace(base, tf_schedule=name, tf_k=k)
        assert tf_at(40, cfg, batches_per_epoch=20) == pytest.approx(value)
    with pytest.raises(TvaeError, match="unknown teacher-forcing schedule 'cosine'"):
        tf_at(0, dataclasses.replace(base, tf_schedule="cosine"), 20)


def test_warmups_longer_than_the_run_are_shortened_to_half_of_it() -> None:
    from tvae.errors import TvaeWarning
    from tvae.training.schedules import fit_warmups

    cfg = TrainConfig(warmup_steps=300, beta_steps=2000, tf_steps=5000)
    with pytest.warns(TvaeWarning, match="--warmup-steps 300 -> 100, --beta-steps 2000 -> 100"):
        short = fit_warmups(cfg, 200)
    assert (short.warmup_steps, short.beta_steps, short.tf_steps) == (100, 100, 5000)
    assert beta_at(150, short) == short.beta  # the short run reaches its KL weight
    assert fit_warmups(cfg, 2000) is cfg  # both warm-ups fit in 2,000 steps: unchanged


def test_the_default_learning_rate_follows_the_batch_size() -> None:
    """No --lr: 1e-3 up to 64 windows, the square-root rule above, capped at 2e-3; a given lr
    is kept; the config carries the value chosen (saved in every checkpoint)."""
    from tvae.config import TrainConfig, config_from_dict

    assert TrainConfig().lr == 1e-3 and TrainConfig(batch_size=8).lr == 1e-3
    assert TrainConfig(batch_size=128).lr == pytest.approx(1e-3 * 2 ** 0.5)
    assert TrainConfig(batch_size=256).lr == pytest.approx(2e-3)
    assert TrainConfig(batch_size=16384).lr == pytest.approx(2e-3)
    assert TrainConfig(batch_size=1024, lr=5e-4).lr == 5e-4
    saved = dataclasses.asdict(TrainConfig(batch_size=128))
    assert config_from_dict(TrainConfig, saved).lr == pytest.approx(1e-3 * 2 ** 0.5)


def test_epochs_limit_a_run_only_where_no_step_or_time_limit_is_given() -> None:
    assert TrainConfig().epoch_limit == 20
    assert TrainConfig(epochs=7, max_minutes=5.0).epoch_limit == 7
    assert TrainConfig(max_minutes=12.0).epoch_limit > 10**5
    assert TrainConfig(max_steps=100).epoch_limit > 10**5
    # without the plan, the lr decay is planned over the epochs: 20, as before
    assert TrainConfig(max_minutes=12.0, fit_schedules=False).epoch_limit == 20


def test_repeat_beta_holds_from_its_share_of_the_run() -> None:
    assert [repeat_beta_weight(s, 2.0, 3) for s in range(5)] == [1.0, 1.0, 1.0, 2.0, 2.0]
    cfg = TrainConfig(repeat_beta=2.0, repeat_beta_from=0.9)
    assert repeat_beta_at(8_999, cfg, 10_000) == 1.0 and repeat_beta_at(9_000, cfg, 10_000) == 2.0
    always = TrainConfig(repeat_beta=2.0, repeat_beta_from=0.0)  # from the first step
    assert repeat_beta_at(0, always, 10_000) == 2.0
    default = TrainConfig()  # the default: 2 over the last tenth
    assert repeat_beta_at(8_999, default, 10_000) == 1.0
    assert repeat_beta_at(9_000, default, 10_000) == 2.0
    assert repeat_beta_at(9_000, TrainConfig(repeat_beta=1.0), 10_000) == 1.0  # weighs none
