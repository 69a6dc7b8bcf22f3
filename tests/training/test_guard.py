"""Loss spikes (tvae.training.guard): a step whose loss is far above its running median is
skipped and undone; many in a row send the run back to its last good weights at half the
learning rate, and a run that keeps spiking stops with a message. Spikes are injected into a
tiny run on the CPU."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

import tvae.training.step as step_module
from tests.training.test_ddp import _trainer, songs  # noqa: F401 (the fixture)
from tvae.errors import TvaeError
from tvae.training.guard import SpikeFilter

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_a_spike_is_judged_against_the_median_of_applied_steps() -> None:
    spikes = SpikeFilter(torch.device("cpu"), ratio=3.0, window=8, least=4)
    ok, bad = torch.tensor(True), torch.tensor(False)
    assert not spikes.is_spike(torch.tensor(100.0))  # nothing known yet
    for value in (1.0, 2.0, 1.5):
        spikes.record(torch.tensor(value), ok)
    assert not spikes.is_spike(torch.tensor(100.0))  # 3 known, 4 needed
    spikes.record(torch.tensor(9.0), bad)  # a skipped step is not history
    spikes.record(torch.tensor(1.2), ok)
    assert spikes.values() == pytest.approx([1.0, 2.0, 1.5, 1.2])
    median = 1.2  # torch's median of an even count is the lower middle value
    assert not spikes.is_spike(torch.tensor(3 * median - 0.01))
    assert spikes.is_spike(torch.tensor(3 * median + 0.01))
    assert not spikes.is_spike(torch.tensor(float("nan")))  # non-finite: the other check
    for value in range(10):  # the window keeps the last 8, oldest first
        spikes.record(torch.tensor(float(value + 1)), ok)
    assert spikes.values() == [3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    again = SpikeFilter(torch.device("cpu"), ratio=3.0, window=8, least=4)
    again.load(spikes.values())
    assert again.values() == spikes.values()
    again.record(torch.tensor(11.0), ok)
    spikes.record(torch.tensor(11.0), ok)
    assert again.values() == spikes.values()


def _inject(monkeypatch: pytest.MonkeyPatch, at: set[int]) -> list[int]:
    """Multiply the loss of the `at` calls of the objective (0-based) by 100."""
    calls: list[int] = []
    original = step_module.vae_objective

    def spiky(*args: object, **kwargs: object) -> object:
        parts = original(*args, **kwargs)
        calls.append(len(calls))
        if calls[-1] in at:
            return dataclasses.replace(parts, loss=parts.loss * 100)
        return parts

    monkeypatch.setattr(step_module, "vae_objective", spiky)
    return calls


def _applied(trainer: object) -> int:
    """Optimizer updates applied (Adam's step count)."""
    state = next(iter(trainer.optimizer.state.values()))  # type: ignore[attr-defined]
    return int(state["step"])


def test_spikes_are_skipped_and_undone(songs: object, tmp_path: Path,  # noqa: F811
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    _inject(monkeypatch, {20, 23})
    trainer = _trainer(songs, tmp_path / "run", max_steps=30, epochs=10)
    trainer.fit()
    assert trainer.state.step == 30 and trainer.state.skipped == 2
    assert _applied(trainer) == 28
    assert trainer.state.lr_scale == 1.0 and trainer.state.recoveries == 0
    assert len(trainer.state.loss_history) == 28  # saved with the checkpoint, for --resume

    off = _trainer(songs, tmp_path / "off", max_steps=30, epochs=10, spike_ratio=0.0)
    _inject(monkeypatch, {20, 23})
    off.fit()
    assert off.state.skipped == 0 and _applied(off) == 30


def test_spikes_in_a_row_go_back_at_half_the_learning_rate(
        songs: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
        capsys: pytest.CaptureFixture[str]) -> None:
    _inject(monkeypatch, set(range(20, 24)))  # 4 in a row, 3 allowed
    trainer = _trainer(songs, tmp_path / "run", max_steps=30, epochs=10, max_bad_steps=3)
    lrs: list[float] = []
    original = trainer.step

    def step(batch: object) -> dict:
        stats = original(batch)
        lrs.append(stats["lr"])
        return stats

    trainer.step = step  # type: ignore[method-assign]
    trainer.fit()
    assert trainer.state.recoveries == 1 and trainer.state.lr_scale == 0.5
    assert "loss spikes in a row: went back to the weights of step" in capsys.readouterr().out
    assert trainer.state.step == 30 and trainer.state.skipped == 4
    plain = _trainer(songs, tmp_path / "plain", max_steps=30, epochs=10, max_bad_steps=3)
    from tvae.training.schedules import lr_at
    assert lrs[25] == pytest.approx(0.5 * lr_at(25, plain.cfg, plain.total_steps))
    assert lrs[10] == pytest.approx(lr_at(10, plain.cfg, plain.total_steps))


def test_a_run_that_keeps_spiking_stops_with_a_message(
        songs: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    _inject(monkeypatch, set(range(20, 1000)))
    trainer = _trainer(songs, tmp_path / "run", max_steps=60, epochs=10, max_bad_steps=2)
    with pytest.raises(TvaeError, match="stayed above 3x its running median.*3 return"):
        trainer.fit()
    assert trainer.state.recoveries == 3 and trainer.state.lr_scale == 0.125
    assert (tmp_path / "run" / "last.json").is_file()


def test_outside_a_process_group_a_spike_is_this_process_decision() -> None:
    from tvae.training.distributed import any_rank

    for flag in (True, False):
        assert bool(any_rank(torch.tensor(flag))) is flag
