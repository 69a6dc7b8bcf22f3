"""The validation loss (tvae.training.validation) is the training objective: the same terms,
at beta after warm-up and the final pointer weight, reproducible for the same weights."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from tests.training.test_ddp import songs  # noqa: F401 (the fixture)
from tests.training.test_train import TINY
from tvae.config import DataConfig, TrainConfig
from tvae.data.windows import Windows
from tvae.model.vae import TransformerVAE
from tvae.training.validation import validation_loss

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_validation_loss_is_the_objective_at_the_final_weights(songs: object  # noqa: F811
                                                                ) -> None:
    torch.manual_seed(0)
    model = TransformerVAE(TINY)
    windows = Windows(songs, "valid", DataConfig(bars=4))
    cfg = TrainConfig(beta=0.3, beta_steps=1000, eval_windows=40, pointer_weight=2.0,
                      repeat_beta=1.0)  # every bar's KL weighed alike (the default weighs repeats)
    got = validation_loss(model, windows, cfg, total_steps=10)  # beta warm-up not reached
    assert got == validation_loss(model, windows, cfg, total_steps=10)  # same weights, same
    assert model.training  # put back as it was
    assert cfg.edit_weight == 1.0 and math.isfinite(got["edit"])  # the default's edit loss
    assert got["loss"] == pytest.approx(got["recon"] + 0.3 * got["kl"] + 2.0 * got["pointer"]
                                        + got["edit"], rel=1e-5)
    lighter = validation_loss(model, windows, dataclasses.replace(cfg, pointer_weight=0.0,
                                                                  edit_weight=0.0), 10)
    assert math.isnan(lighter["edit"])
    assert lighter["loss"] == pytest.approx(got["recon"] + 0.3 * got["kl"], rel=1e-5)
    # the default's repeat weight (2 from 0.9 of the run) counts at validation from step 0
    weighted = validation_loss(model, windows, dataclasses.replace(cfg, repeat_beta=2.0,
                                                                   repeat_beta_from=0.9), 10)
    assert weighted["loss"] > got["loss"] and weighted["kl"] == pytest.approx(got["kl"])
    with torch.no_grad():
        model.mu.weight.fill_(float("nan"))
    assert validation_loss(model, windows, cfg, total_steps=10)["loss"] == math.inf


def test_validation_rows_log_the_pointer_and_edit_losses(songs: object,  # noqa: F811
                                                         tmp_path: object) -> None:
    """With the defaults (pointer and edit losses on) every validation row of metrics.csv says
    both auxiliary losses, as the training rows do."""
    from tests.training.test_ddp import _rows, _trainer

    _trainer(songs, tmp_path / "run").fit()  # type: ignore[operator]
    valid = [r for r in _rows(tmp_path / "run") if r["split"] == "valid"]  # type: ignore[operator]
    assert valid and all(float(r["edit_loss"]) > 0 and float(r["pointer_loss"]) > 0
                         for r in valid)
