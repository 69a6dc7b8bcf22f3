"""`--init-from` adding model options to an older checkpoint's model (repeat features, reading
repeats as edits, the lead-in head) and leaving the lead-in head out."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tests.training.test_train import TINY, _train_cfg
from tvae.config import DataConfig
from tvae.training.run import train


@pytest.mark.parametrize("field, module", [("encoder_repeats", "repeats_in"),
                                           ("latent_repeats", "repeats_mu"),
                                           ("edit_source", "edit_table")])
def test_init_from_an_older_model_adds_the_repeat_features(folk_corpus: Path, tmp_path: Path,
                                                           field: str, module: str) -> None:
    """A checkpoint without repeat features fine-tunes into today's default model: its weights
    are taken as they are, the features start at zero (the same model at step 0); a checkpoint
    with them does not go into a model without."""
    import torch

    from tvae.errors import TvaeError
    from tvae.model.checkpoint import load_checkpoint, save_checkpoint
    from tvae.model.vae import TransformerVAE
    from tvae.training.trainer import Trainer

    torch.manual_seed(0)
    none = {"encoder_repeats": False, "latent_repeats": False, "lead_in": False}
    old = TransformerVAE(replace(TINY, **none))
    path = save_checkpoint(tmp_path / "old", old)
    seen = {}
    original = Trainer.fit

    def check_then_fit(self: Trainer) -> None:
        seen["weights"] = {k: v.clone() for k, v in self.model.state_dict().items()}
        original(self)

    try:
        Trainer.fit = check_then_fit  # type: ignore[method-assign]
        train(folk_corpus, tmp_path / "tuned", model_config=replace(TINY, **{**none, field: True}),
              data_config=DataConfig(bars=4), train_config=_train_cfg(epochs=1, max_steps=2),
              init_from=path, progress=False)
    finally:
        Trainer.fit = original  # type: ignore[method-assign]
    weights = seen["weights"]
    assert all(torch.equal(weights[k], v) for k, v in old.state_dict().items())
    added = [k for k in weights if k not in old.state_dict()]
    assert added and all(k.split(".")[0] == module and not weights[k].any() for k in added)
    assert getattr(load_checkpoint(tmp_path / "tuned" / "last")[0].config, field)
    with pytest.raises(TvaeError, match="same model"):
        train(folk_corpus, tmp_path / "back", model_config=replace(TINY, **none),
              data_config=DataConfig(bars=4), train_config=_train_cfg(epochs=1, max_steps=2),
              init_from=tmp_path / "tuned" / "last.json", progress=False)


def test_init_from_adds_reading_repeats_as_edits(folk_corpus: Path, tmp_path: Path) -> None:
    """--encoder-edits on a checkpoint without it: its weights are taken as they are and the
    'same' vectors start at zero; the tuned checkpoint records the option."""
    import torch

    from tvae.model.checkpoint import load_checkpoint, save_checkpoint
    from tvae.model.vae import TransformerVAE

    torch.manual_seed(0)
    old = TransformerVAE(replace(TINY, encoder_edits=False))
    path = save_checkpoint(tmp_path / "old", old)
    trainer = train(folk_corpus, tmp_path / "tuned",
                    model_config=replace(TINY, encoder_edits=True),
                    data_config=DataConfig(bars=4), train_config=_train_cfg(epochs=1, max_steps=2),
                    init_from=path, progress=False)
    tuned = load_checkpoint(tmp_path / "tuned" / "last")[0]
    assert tuned.config.encoder_edits and tuned.bar_encoder.same_step is not None
    assert trainer.model.bar_encoder.same_step.shape == (16, TINY.bar_hidden)
    assert set(tuned.state_dict()) - set(old.state_dict()) == {"bar_encoder.same_step"}


def test_init_from_adds_or_leaves_out_the_lead_in_head(folk_corpus: Path, tmp_path: Path) -> None:
    """--lead-in on a checkpoint without the head adds it at zero (the model decodes as before);
    a checkpoint with it (as the bundled model has) fine-tunes into a model without it, every
    other weight taken as it is."""
    import torch

    from tvae.model.checkpoint import load_checkpoint, save_checkpoint
    from tvae.model.vae import TransformerVAE
    from tvae.training.trainer import Trainer

    torch.manual_seed(0)
    old = TransformerVAE(TINY)
    path = save_checkpoint(tmp_path / "old", old)
    seen = {}
    original = Trainer.fit

    def check_then_fit(self: Trainer) -> None:
        seen.setdefault("weights", []).append(
            {k: v.clone() for k, v in self.model.state_dict().items()})
        original(self)

    try:
        Trainer.fit = check_then_fit  # type: ignore[method-assign]
        train(folk_corpus, tmp_path / "with", model_config=replace(TINY, lead_in=True),
              data_config=DataConfig(bars=4), train_config=_train_cfg(epochs=1, max_steps=2),
              init_from=path, progress=False)
        with_head = load_checkpoint(tmp_path / "with" / "last")[0]
        train(folk_corpus, tmp_path / "without", model_config=TINY,
              data_config=DataConfig(bars=4), train_config=_train_cfg(epochs=1, max_steps=2),
              init_from=tmp_path / "with" / "last.json", progress=False)
    finally:
        Trainer.fit = original  # type: ignore[method-assign]
    added, left = seen["weights"]
    assert set(added) - set(old.state_dict()) == {"lead.weight", "lead.bias"}
    assert not added["lead.weight"].any() and not added["lead.bias"].any()
    assert with_head.config.lead_in and with_head.lead is not None
    assert set(left) == set(old.state_dict())
    assert all(torch.equal(left[k], v) for k, v in with_head.state_dict().items()
               if not k.startswith("lead."))
    assert not load_checkpoint(tmp_path / "without" / "last")[0].config.lead_in


def test_init_from_may_change_dropout_but_not_the_shape(folk_corpus: Path, tmp_path: Path) -> None:
    """Dropout shapes no weight, so a fine-tune may set its own (`--dropout 0`); the tuned
    checkpoint records it. A change that does shape weights (the width) is still refused."""
    import torch

    from tvae.errors import TvaeError
    from tvae.model.checkpoint import load_checkpoint, save_checkpoint
    from tvae.model.vae import TransformerVAE

    torch.manual_seed(0)
    old = TransformerVAE(replace(TINY, dropout=0.1))
    path = save_checkpoint(tmp_path / "old", old)
    train(folk_corpus, tmp_path / "tuned", model_config=replace(TINY, dropout=0.0),
          data_config=DataConfig(bars=4), train_config=_train_cfg(epochs=1, max_steps=2),
          init_from=path, progress=False)
    assert load_checkpoint(tmp_path / "tuned" / "last")[0].config.dropout == 0.0
    with pytest.raises(TvaeError, match="same model"):
        train(folk_corpus, tmp_path / "wider",
              model_config=replace(TINY, dropout=0.1, d_ff=2 * TINY.d_ff),
              data_config=DataConfig(bars=4), train_config=_train_cfg(epochs=1, max_steps=2),
              init_from=path, progress=False)


def test_cli_init_from_takes_the_checkpoints_model_options(folk_corpus: Path,
                                                           tmp_path: Path) -> None:
    """`tvae train --init-from CKPT` with no model options fine-tunes CKPT's model as it is, not
    today's defaults (which read repeats as edits): a checkpoint without the edit view stays
    without it, and its width needs no flag; `--encoder-edits` adds the view; the lead-in head
    is left out unless asked for."""
    import torch
    from click.testing import CliRunner

    from tests.tiny import TINY_ARGS
    from tvae.cli.main import main
    from tvae.model.checkpoint import load_checkpoint, save_checkpoint
    from tvae.model.vae import TransformerVAE

    torch.manual_seed(0)
    old_config = replace(TINY, encoder_edits=False, lead_in=True, d_ff=2 * TINY.d_ff)
    path = save_checkpoint(tmp_path / "old", TransformerVAE(old_config))
    common = ["train", str(folk_corpus), "--init-from", str(path), "--bars", "4", "--epochs",
              "1", "--max-steps", "2", "--quiet"]
    result = CliRunner().invoke(main, [*common, "--out", str(tmp_path / "same")])
    assert result.exit_code == 0, result.output
    same = load_checkpoint(tmp_path / "same" / "last")[0].config
    assert not same.encoder_edits and not same.lead_in and same.d_ff == 2 * TINY.d_ff
    result = CliRunner().invoke(main, [*common, "--encoder-edits", "--out",
                                       str(tmp_path / "edits")])
    assert result.exit_code == 0, result.output
    assert load_checkpoint(tmp_path / "edits" / "last")[0].config.encoder_edits
    # the old rule, today's defaults for every option not given, is refused on this width
    result = CliRunner().invoke(main, [*common, *TINY_ARGS, "--out", str(tmp_path / "tiny")])
    assert result.exit_code == 2 and "same model" in result.output
