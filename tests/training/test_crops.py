"""The crop phase: a run's first `crop_steps` steps train on `crop_bars`-bar crops of its windows
(tvae.data.windows, tvae.training.trainer), timed and planned apart from whole-window steps
(tvae.training.time_plan)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.tiny import TINY_MODEL
from tvae.config import PAD, Configs, DataConfig, GridConfig, TrainConfig
from tvae.data.arrays import SongArrays
from tvae.data.windows import Windows
from tvae.training.time_plan import CALIBRATION_STEPS, TimePlanner, steps_that_fit

S = 16


def _songs(lengths: list[int]) -> SongArrays:
    """Songs whose bar k of song i is all token 3 + 100 * i + k (every bar tells where it is
    from)."""
    tokens = np.concatenate([
        np.repeat((3 + 100 * i + np.arange(n))[:, None], S, axis=1) for i, n in
        enumerate(lengths)]).astype(np.int64)
    n = len(lengths)
    return SongArrays(tokens=tokens, offsets=np.concatenate([[0], np.cumsum(lengths)]),
                      meters=np.zeros(n, np.int8), pickups=np.zeros(n, np.int8),
                      paths=[f"{i}.mid" for i in range(n)], splits=np.array(["train"] * n))


def test_a_crop_is_consecutive_bars_of_its_window_at_a_random_bar() -> None:
    songs = _songs([40, 5, 12])
    data = DataConfig(bars=10, stride=2, transpose=0, repeat_augment=0.0, crop_bars=4)
    windows = Windows(songs, None, data)
    idx = np.arange(len(windows))
    firsts: dict[int, set[int]] = {}
    for seed in range(30):
        tokens, meters = windows.batch(idx, np.random.default_rng(seed), trim=True, crop=4)
        assert tokens.shape == (len(idx), 4, S) and meters.shape == (len(idx), 4)
        for b, w in enumerate(idx):
            song, start = int(windows.song[w]), int(windows.start[w])
            real = (tokens[b] != PAD).any(-1)
            bars = tokens[b][real][:, 0] - 3 - 100 * song  # bar numbers within the song
            assert (np.diff(bars) == 1).all()  # consecutive bars of the window's own song
            assert start <= bars[0] and bars[-1] < start + int(windows.lengths[w])
            assert real.sum() == min(4, int(windows.lengths[w]))  # a full crop where it fits
            firsts.setdefault(int(w), set()).add(int(bars[0]) - start)
    long = int(np.flatnonzero(windows.song == 0)[0])  # a 10-bar window of the 40-bar song
    assert firsts[long] == set(range(7))  # every first bar that leaves a full crop
    short = int(np.flatnonzero(windows.song == 1)[0])  # the 5-bar song: 2 choices
    assert firsts[short] == {0, 1}


def test_a_crop_needs_an_rng_and_fewer_bars_than_the_window() -> None:
    songs = _songs([40, 5])
    data = DataConfig(bars=10, stride=2, transpose=0, repeat_augment=0.0)
    windows = Windows(songs, None, data)
    idx = np.arange(len(windows))
    whole, _ = windows.batch(idx)
    assert np.array_equal(windows.batch(idx, crop=4)[0], whole)  # no rng: validation
    assert np.array_equal(windows.batch(idx, np.random.default_rng(0), crop=10)[0], whole)
    # cropped batches never keep the whole window for far repeats, whatever repeat_reach says
    reach = Windows(songs, None, DataConfig(bars=10, stride=2, transpose=0, repeat_reach=1.0))
    assert {reach.batch(idx, np.random.default_rng(s), trim=True, crop=4)[0].shape[1]
            for s in range(10)} == {4}
    assert {reach.batch(idx, np.random.default_rng(s), trim=True)[0].shape[1]
            for s in range(10)} == {10}


def test_steps_that_fit_with_a_crop_phase() -> None:
    # 100 s, whole steps 1 s, crop steps 0.25 s for the first 50 (80% of the run is later)
    assert steps_that_fit(0, 0.0, 100.0, 1.0, 0.0, 10, margin=0, crop_steps=50,
                          crop_seconds=0.25) == 137  # 50 * 0.25 + 87 * 1 = 99.5
    # a crop phase longer than 80% of the run ends there: 0.8 * T crops, 0.2 * T whole steps
    assert steps_that_fit(0, 0.0, 100.0, 1.0, 0.0, 10, margin=0, crop_steps=10**6,
                          crop_seconds=0.25) == 250  # 200 * 0.25 + 50 * 1 = 100
    assert steps_that_fit(0, 0.0, 100.0, 1.0, 0.0, 10, margin=0, crop_steps=0,
                          crop_seconds=0.25) == 100  # no crop phase: as before


def test_the_planner_times_crop_and_whole_steps_apart() -> None:
    now = [0.0]
    cfg = TrainConfig(max_minutes=10.0, crop_steps=100, warmup_steps=10, beta_steps=10)
    planner = TimePlanner(cfg, 10**6, 50, lambda: now[0], crop_ratio=0.25)
    asked = []
    for step in range(200):
        cropped = step < 100
        now[0] += 0.1 if cropped else 0.8  # a crop step is 8x cheaper (the ratio says 4x)
        asked.append(planner.stepped(cropped))
    # planned after the first timed steps, and again once whole steps have been timed
    assert [i for i, a in enumerate(asked) if a] == [CALIBRATION_STEPS, 100 + CALIBRATION_STEPS - 1]
    assert planner.crop_seconds() == pytest.approx(0.1)
    assert planner.step_seconds() == pytest.approx(0.8)
    early = TimePlanner(cfg, 10**6, 50, lambda: now[0], crop_ratio=0.25)
    for _ in range(30):
        now[0] += 0.1
        early.stepped(True)
    assert early.step_seconds() == pytest.approx(0.4)  # guessed from the bars' ratio
    total, fitted = planner.fitted(110)
    assert total == 110 and fitted.crop_steps == 88  # the run ends on whole windows


def test_the_trainer_crops_its_first_steps(folk_corpus: Path, tmp_path: Path) -> None:
    from tvae.data.dataset import load_folder
    from tvae.training.trainer import Trainer

    songs, _ = load_folder(folk_corpus, progress=False)
    cfg = TrainConfig(batch_size=8, max_steps=20, crop_steps=10, warmup_steps=2, beta_steps=2,
                      num_threads=1)
    data = DataConfig(bars=8, crop_bars=3, repeat_reach=0.0)
    trainer = Trainer(songs, tmp_path / "run", Configs(GridConfig(), TINY_MODEL, data, cfg),
                      progress=False)
    order = trainer.train_windows.epoch_order(8, np.random.default_rng(0))
    widths = [trainer._batch(order, 0, step).tokens.shape[1] for step in range(20)]
    assert set(widths[:10]) == {3} and min(widths[10:]) > 3
    off = Trainer(songs, tmp_path / "off", Configs(GridConfig(), TINY_MODEL, data,
                                                   TrainConfig(batch_size=8, crop_steps=0)),
                  progress=False)
    assert off._batch(order, 0, 0).tokens.shape[1] > 3


def test_a_crop_can_take_the_positions_of_any_place_in_the_window() -> None:
    """Encoding bars with `first_position` k gives them the position encodings of bars k.. of a
    longer window: the posterior of a crop placed at k equals that of the same bars there
    (with attention that sees only them)."""
    import torch

    from tvae.model.modules import positions
    from tvae.model.vae import TransformerVAE

    assert torch.equal(positions(4, 8, torch.device("cpu"), 5),
                       positions(9, 8, torch.device("cpu"))[5:])
    torch.manual_seed(0)
    model = TransformerVAE(TINY_MODEL, GridConfig()).eval()
    tokens = torch.randint(3, 40, (2, 3, S))
    meters = torch.zeros(2, 3, dtype=torch.long)
    at0 = model.encode(tokens, meters)[0]
    at5 = model.encode(tokens, meters, first_position=5)[0]
    assert not torch.allclose(at0, at5)
    out = model(tokens, meters, sample=False, first_position=5)
    assert torch.allclose(out.mu, at5, atol=1e-6)


def test_crop_batches_draw_their_place_and_whole_windows_start_at_zero(
        folk_corpus: Path, tmp_path: Path) -> None:
    from tvae.data.dataset import load_folder
    from tvae.training.trainer import Trainer

    songs, _ = load_folder(folk_corpus, progress=False)
    cfg = TrainConfig(batch_size=8, max_steps=100, crop_steps=40, num_threads=1)
    firsts = {}
    for anywhere in (True, False):
        data = DataConfig(bars=8, crop_bars=3, crop_anywhere=anywhere)
        trainer = Trainer(songs, tmp_path / str(anywhere),
                          Configs(GridConfig(), TINY_MODEL, data, cfg), progress=False)
        order = trainer.train_windows.epoch_order(8, np.random.default_rng(0))
        firsts[anywhere] = [trainer._batch(order, 0, step).first_position for step in range(80)]
    assert set(firsts[True][:40]) == set(range(6))  # 8 - 3 + 1 places, every one drawn
    assert set(firsts[True][40:]) == {0} and set(firsts[False]) == {0}


def test_epochs_limit_a_run_only_where_no_step_or_time_limit_is_given() -> None:
    assert TrainConfig().epoch_limit == 20
    assert TrainConfig(epochs=7, max_minutes=5.0).epoch_limit == 7
    assert TrainConfig(max_minutes=12.0).epoch_limit > 10**5
    assert TrainConfig(max_steps=100).epoch_limit > 10**5


def test_epochs_of_the_crop_phase_do_not_stop_a_run_early(folk_corpus: Path,
                                                         tmp_path: Path) -> None:
    """Validation reads whole windows, which the crop phase does not train on yet: its epochs
    keep the best checkpoint but never count towards --patience."""
    from tvae.data.dataset import load_folder
    from tvae.training.trainer import Trainer

    songs, _ = load_folder(folk_corpus, progress=False)
    data = DataConfig(bars=8, crop_bars=3)
    probe = Trainer(songs, tmp_path / "probe", Configs(GridConfig(), TINY_MODEL, data,
                                                        TrainConfig(batch_size=8)), progress=False)
    n = probe.batches
    for crop_steps, epochs_run in ((3 * n, 4), (0, 2)):
        cfg = TrainConfig(batch_size=8, epochs=10, patience=1, crop_steps=crop_steps,
                          warmup_steps=2, beta_steps=2, num_threads=1, log_every=1)
        run = tmp_path / f"run{crop_steps}"
        run.mkdir()
        trainer = Trainer(songs, run, Configs(GridConfig(), TINY_MODEL, data, cfg),
                          progress=False)
        # every validation after the first is worse
        trainer.validate = lambda t=trainer: {"loss": float(t.state.step), "tf_accuracy": 0.5,
                                              "free_accuracy": 0.5, "kl_bits": 1.0}
        trainer.fit()
        assert trainer.state.epoch == epochs_run and trainer.state.finished
