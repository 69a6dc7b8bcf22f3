"""`tvae sample`: new melodies from the model's prior, or continuations of a melody."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from tvae.cli.common import handle_errors
from tvae.cli.infer import DEVICE_OPTION, MAX_SAMPLES, MODEL_HELP, _finite, _load, _meter, _report
from tvae.config import MAX_BARS, PRIOR_TEMPERATURE
from tvae.errors import TvaeError
from tvae.files import check_folder

PRIOR_HELP = ('Where each bar\'s latent comes from: "learned", the model\'s learned prior, which '
              'draws each bar\'s copy choice (generate, or repeat the bar o back) and latent '
              'from the bars before it; "normal", N(0, I) for every bar alone, the paper\'s '
              'sampling; "auto": learned when the model has one (the bundled model does).')


@click.command()
@click.option("-o", "--out", "out", default="tvae-output", show_default=True, help="Folder.")
@click.option("-n", "count", type=click.IntRange(1, MAX_SAMPLES), default=4, show_default=True,
              help=f"Melodies to draw (at most {MAX_SAMPLES}).")
@click.option("--bars", type=click.IntRange(1, MAX_BARS), default=8, show_default=True,
              help=f"Bars per melody, a prompt's included (at most {MAX_BARS}).")
@click.option("--prior", type=click.Choice(["auto", "learned", "normal"]), default="auto",
              show_default=True, help=PRIOR_HELP)
@click.option("--prior-temperature", type=click.FloatRange(0.0, 100.0), default=PRIOR_TEMPERATURE,
              show_default=True, callback=_finite, help="The learned prior's temperature: its "
              "spread and how freely it chooses (0: its likeliest choice and latent).")
@click.option("--prompt", type=click.Path(dir_okay=False), default=None,
              help="A MIDI file to continue: its bars come first, as they are, and the rest "
              "are drawn given them (its meter and tempo are the samples').")
@click.option("--temperature", type=click.FloatRange(0.0, 100.0), default=None,
              callback=_finite, help="Step sampling temperature (0: greedy). Default: 0 with "
              "the learned prior (its draws carry the randomness; the bar decoder would draw a "
              "bar's steps independently), 1 with N(0, I).")
@click.option("--top-k", type=click.IntRange(min=0), default=0,
              help="Sample among the k likeliest classes (with --temperature above 0).")
@click.option("--top-p", type=click.FloatRange(0.0, 1.0, min_open=True), default=1.0,
              callback=_finite, help="Nucleus sampling threshold, in (0, 1] (with --temperature "
              "above 0).")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True,
              help="First seed.")
@click.option("--meter", default="4/4", show_default=True, help="Meter of the samples.")
@click.option("--model", "model_path", default=None, help=MODEL_HELP)
@DEVICE_OPTION
@click.option("--html", is_flag=True, help="Also write a page with the samples.")
@click.option("--metrics", is_flag=True, help="Also print how the samples compare with the "
              "data: pitch range, distinct pitches, pitch-class entropy, scale consistency, "
              "share of repeated bars, share with a phrase repeat (tvae.eval.form), and muspy's "
              "metrics; written to OUT/metrics.json.")
@click.option("--data", "data_dir", default=None, type=click.Path(file_okay=False),
              help="With --metrics: the data to compare with (its test split, the samples' "
              "meter, songs cut to --bars). Default: the statistics kept with the learned prior.")
@handle_errors
def sample(out: str, count: int, bars: int, prior: str, prior_temperature: float,
           prompt: str | None, temperature: float | None, top_k: int, top_p: float, seed: int,
           meter: str, model_path: str | None, html: bool, metrics: bool,
           data_dir: str | None) -> None:
    """Draw new melodies: each bar's latent from the prior, decoded step by step. With the
    learned prior, each bar's copy choice too, so the samples have a form that decoding
    follows (the page marks each copy "= bar j")."""
    from tvae.melody import normalize_meter
    from tvae.outputs import Item, write_results

    check_folder(out)
    model = _load(model_path)
    given = None
    if prompt is not None:
        from tvae.midi import read_melody

        given = read_melody(prompt, grid=model.grid)
    the_meter = given.meter if given is not None else normalize_meter(_meter(meter))
    kind = model.prior_kind(prior)
    if temperature is None:
        temperature = 0.0 if kind == "learned" else 1.0
    items = []
    for i in range(count):
        with _named(prompt):
            melody, copies = model.draw(bars, temperature, seed + i, the_meter, top_k=top_k,
                                        top_p=top_p, prior=prior,
                                        prior_temperature=prior_temperature, prompt=given)
        caption = f"seed {seed + i}, temperature {temperature:g}, {kind} prior" + (
            f" (temperature {prior_temperature:g})" if kind == "learned" else "")
        items.append(Item(f"Sample {i + 1}", f"sample_{seed + i}", melody, caption,
                          copies=copies if kind == "learned" else None))
    stats = reference = None
    name = ""
    if metrics or html:
        stats, reference, name = _form_stats(model, items, bars, the_meter, data_dir)
    intro = _intro(kind, stats, reference, name) if html else ""
    _report(write_results(model, out, items, "Samples", "samples.html" if html else None,
                          intro=intro, inputs=(prompt,) if prompt else ()))
    if metrics:
        _write_metrics(items, Path(out), stats, reference, name)


@contextmanager
def _named(path: str | None) -> Iterator[None]:
    """Name the prompt file in an error about it (too many bars for --bars)."""
    try:
        yield
    except TvaeError as exc:
        if exc.path is None and path is not None:
            raise TvaeError(exc.reason, path) from None
        raise


def _form_stats(model: Any, items: list, bars: int, meter: tuple[int, int],
                data_dir: str | None) -> tuple[dict, dict | None, str]:
    """The samples' form statistics, the data's (from `data_dir` or the prior's record) and
    the data's name."""
    from tvae.eval.form import form_metrics, mean_metrics, reference_stats
    from tvae.melody import meter_id

    stats = mean_metrics([form_metrics(item.melody, model.grid, bars) for item in items])
    key = f"{meter[0]}/{meter[1]}"
    if data_dir is not None:
        from tvae.data.dataset import load_songs

        songs, _ = load_songs(data_dir, model.grid, progress=False)
        return stats, reference_stats(songs, model.grid, bars, meter_id(meter)), \
            f"{Path(data_dir).name} {key}"
    record = model.meta.get("prior_fit") or {}
    reference = (record.get("reference") or {}).get(key, {}).get(str(bars))
    return stats, reference, f"{record.get('data_folder', 'data')} {key}"


def _intro(kind: str, stats: dict | None, reference: dict | None, name: str) -> str:
    from tvae.outputs import LEARNED_NOTE

    what = (LEARNED_NOTE if kind == "learned" else
            "Each bar's latent is drawn from N(0, I) on its own; the decoder's pointer reads "
            "any copy choice from it.")
    if not stats:
        return what

    def pair(key: str, fmt: str) -> str:
        s = stats.get(key)
        d = reference.get(key) if reference else None
        text = "-" if s is None else format(s, fmt)
        return text + (f" (data {format(d, fmt)})" if d is not None else "")

    return (f"{what} These {stats['songs']} samples: pitch range {pair('pitch_range', '.1f')} "
            f"semitones, {pair('distinct_pitches', '.1f')} distinct pitches, "
            f"{pair('repeat_share', '.0%')} of bars repeat an earlier bar, "
            f"{pair('phrase_repeat', '.0%')} repeat bars 1-4 in bars 5-8"
            + (f"; data: {name}, {reference['songs']} songs." if reference else "."))


def _write_metrics(items: list, out: Path, stats: dict | None, reference: dict | None,
                   name: str) -> None:
    from tvae.eval.form import form_table
    from tvae.eval.music import collect, format_table, melody_metrics, summarize
    from tvae.files import write_bytes_atomic

    summary = summarize(collect([item.melody for item in items]))
    per_sample = {item.stem: {k: (None if math.isnan(v) else round(v, 6))
                              for k, v in melody_metrics(item.melody).items()} for item in items}
    path = out / "metrics.json"
    text = json.dumps({"samples": per_sample, "summary": summary, "form": stats,
                       "data_form": reference, "data": name}, indent=2) + "\n"
    write_bytes_atomic(text.encode(), path)
    click.echo(form_table(stats or {"songs": 0}, reference, name))
    if reference is None:
        click.echo(f"(no data statistics for {name} at this length: pass --data DIR)")
    click.echo("")
    click.echo(format_table({"samples": summary}))
    click.echo(f"wrote {path}")


COMMANDS = (sample,)
