"""`tvae prior`: fit a learned prior over a trained model's bar latents and copy choices."""

from __future__ import annotations

from pathlib import Path

import click

from tvae.cli.common import handle_errors
from tvae.cli.infer import DEVICE_OPTION, MODEL_HELP, _load
from tvae.cli.options import build_config, config_options
from tvae.config import PriorConfig, PriorFitConfig
from tvae.errors import TvaeError


@click.command()
@click.argument("midi_dir", type=click.Path(file_okay=False))
@click.option("-o", "--out", "out", required=True, type=click.Path(),
              help="Name of the checkpoint to write: OUT.json and OUT.safetensors, the model "
              "with its prior.")
@click.option("--model", "model_path", default=None, help=MODEL_HELP)
@click.option("--num-threads", type=click.IntRange(min=1), default=None,
              help="CPU threads (default: torch's).")
@click.option("--quiet", is_flag=True, help="Only the last line.")
@config_options(PriorConfig, PriorFitConfig)
@DEVICE_OPTION
@handle_errors
def prior(midi_dir: str, out: str, model_path: str | None, num_threads: int | None, quiet: bool,
          **options: object) -> None:
    """Fit a learned prior p(choice, z | earlier bars) to the model's latents of MIDI_DIR's
    training songs (the VAE itself is unchanged) and write the model with it to OUT.

    `tvae sample` then draws each bar's copy choice and latent from it (`--prior normal` keeps
    N(0, I)); `tvae sample --metrics` compares the samples with this data's statistics, which
    are kept in OUT.json.
    """
    import torch

    from tvae.data.dataset import load_songs
    from tvae.files import is_folder
    from tvae.model.checkpoint import check_new_pair, data_config_of, write_inference_pair
    from tvae.training.prior_fit import fit_prior

    prior_config = build_config(PriorConfig, options)
    fit = build_config(PriorFitConfig, options)
    if is_folder(out):
        raise TvaeError("is a folder; give the new checkpoint's name, e.g. "
                        f"{Path(out) / 'model'} (writes model.json and model.safetensors)", out)
    if num_threads:
        torch.set_num_threads(num_threads)
    trained = _load(model_path)
    if model_path is not None and trained.meta.get("optimizer_groups"):
        # a training checkpoint would lose its optimizer state; an inference-only one (an
        # export, the bundled model) loses nothing and takes its new prior in place
        check_new_pair(model_path, out)
    data = data_config_of(trained.meta)
    songs, _ = load_songs(midi_dir, trained.grid, data, progress=not quiet)
    say = (lambda _: None) if quiet else click.echo
    record = fit_prior(trained.model, songs, data, prior_config, fit, say=say)
    half = trained.meta.get("weights_dtype") == "float16"
    path = write_inference_pair(trained.model.cpu(), trained.meta, out, half,
                                prior_fit={**record, "data_folder": Path(midi_dir).name})
    best = record["best"]
    click.echo(f"wrote {path}: KL {best['kl_bits_learned']:.2f} bits per bar against the learned "
               f"prior, {best['kl_bits_normal']:.2f} against N(0, I) (validation, step "
               f"{best['step']} of {record['steps']})")


COMMANDS = (prior,)
