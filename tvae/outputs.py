"""From a trained model's results to files: MIDI outputs and their HTML pages.

The glue between `tvae.inference` (torch) and `tvae.render` (no torch): it computes each
melody's per-bar KL with the model and hands plain bytes and numbers to the renderer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tvae.files import check_not_an_input, write_bytes_atomic
from tvae.inference import TrainedModel, bundled_model_path
from tvae.melody import Melody, meter_steps
from tvae.midi import melody_to_midi_bytes
from tvae.midi_report import pitch_name
from tvae.render import PageMelody, render_page, write_page

KL_NOTE = ("Under each melody, the KL of each bar's latent in bits: how much information the "
           "model spends on that bar. A bar marked \"= bar j\" (dashed) is one the decoder copies "
           "from bar j, however far back. An exact repeat's latent only points back, so it costs "
           "few bits; a copy with changed notes still costs most of what a new bar costs, "
           "since its latent carries the copy and its changes. After a context transfer a copy "
           "repeats whatever bar j has become, with its own changes.")
LEARNED_NOTE = ("Each bar's copy choice and latent are drawn by the learned prior from the bars "
                "before it, and decoding follows the choice: a bar marked \"= bar j\" is "
                "decoded as a copy of bar j, with the edits its latent asks for (an edited copy "
                "costs most of the bits of a new bar; an exact one few).")
OUTLINE_NOTE = "Outlined bars are the transferred ones."  # only on pages that outline bars


@dataclass
class Item:
    """A melody to write: its role on the page, file stem and the melody itself."""

    label: str
    stem: str
    melody: Melody
    caption: str = ""
    highlight: tuple[int, ...] = ()  # 0-based bars to outline on the KL strip
    write_midi: bool = True  # False for an input: the user's own file is not copied
    # the posterior (means, std devs (N, Z)) that produced or encodes the melody, when known:
    # its KL and the decoder's copy choices are shown; otherwise the melody is encoded
    posterior: tuple[np.ndarray, np.ndarray] | None = None
    # the earlier bar each bar copies, when decoding was told (a learned prior's draws): the
    # page's "= bar j" marks; otherwise they are the decoder's choices from the latents
    copies: list[int | None] | None = None


def describe_model(model: TrainedModel) -> str:
    """One line naming a model, for the footer of its pages: its checkpoint, what kind of
    model it is, and its card's headline numbers."""
    cfg = model.model.config
    name = "the bundled model" if model.path == bundled_model_path() else model.path.name
    kind = {"bar": "copy path per bar", "step": "copy path per step",
            "none": "the paper's model, no copy path"}[cfg.copy]
    line = (f"tvae {name} (width {cfg.d_model}, latent {cfg.d_latent} per bar, {kind}, "
            f"{model.window or 'any'}-bar window)")
    card = model.meta.get("evaluation")
    if not isinstance(card, dict):
        return line

    def number(key: str) -> float | None:
        value = card.get(key)
        return float(value) if isinstance(value, (int, float)) else None

    parts = []
    if number("free_accuracy") is not None and number("kl_bits_per_bar") is not None:
        learned = number("kl_bits_learned_prior")
        parts.append(f"free-running accuracy {number('free_accuracy'):.3f} at "
                     f"{number('kl_bits_per_bar'):.1f} KL bits per bar"
                     + (f" ({learned:.1f} against its learned prior)" if learned is not None
                        else ""))
    if number("transfer_follow_rate") is not None:
        parts.append(f"transfer follows B's repeats of bar 1 in "
                     f"{number('transfer_follow_rate'):.0%} of cases")
    return line + (f"; on {card.get('data')}: " + ", ".join(parts) if parts else "")


def page_melody(model: TrainedModel, item: Item) -> PageMelody:
    kl, copies = None, None
    if item.posterior is not None:
        mu, sigma = item.posterior
        bits, copies = model.kl_bits_of(mu, sigma), model.copy_sources_of(mu)
        kl = bits.round(3).tolist()
    elif item.melody.notes:  # one encoding gives both
        bits, copies = model.kl_and_copy_sources(item.melody)
        kl = bits.round(3).tolist()
    if item.copies is not None:
        copies = list(item.copies)
    pitches = [n.pitch for n in item.melody.notes]
    span = (pitch_name(min(pitches)), pitch_name(max(pitches))) if pitches else None
    return PageMelody(item.label, item.melody.title or item.stem,
                      melody_to_midi_bytes(item.melody), kl, item.caption, copies,
                      item.highlight, f"{item.stem}.mid", span,
                      meter_steps(item.melody.meter), item.melody.pickup, item.melody.qpm)


def write_results(model: TrainedModel, out_dir: str | Path, items: Sequence[Item],
                  title: str, page: str | None, intro: str = "",
                  links: Sequence[tuple[str, str]] = (),
                  inputs: Sequence[str | Path] = ()) -> list[Path]:
    """Write each item as OUT_DIR/<stem>.mid (unless its `write_midi` is False) and, with `page`,
    one HTML page OUT_DIR/<page> showing them all. Returns the paths written. None of them may
    be one of the command's `inputs`: that is refused before anything is written."""
    out_dir = Path(out_dir)
    paths = [out_dir / f"{item.stem}.mid" for item in items if item.write_midi]
    for path in [*paths, *([out_dir / page] if page else [])]:
        check_not_an_input(path, inputs)
    written = []
    for item, path in zip([it for it in items if it.write_midi], paths, strict=True):
        write_bytes_atomic(melody_to_midi_bytes(item.melody), path)
        written.append(path)
    if page:
        note = KL_NOTE + (" " + OUTLINE_NOTE if any(it.highlight for it in items) else "")
        html = render_page(title, [page_melody(model, it) for it in items],
                           intro=(intro + "\n\n" + note).strip(), links=links,
                           made_by=describe_model(model))
        written.append(write_page(out_dir / page, html))
    return written


def transfer_items(model: TrainedModel, a: Melody, b: Melody, a_stem: str, b_stem: str,
                   bars: Sequence[int]) -> list[Item]:
    """Input 1, Input 2, both reconstructions and the context-transfer output. Each shows the
    KL and copy choices of the latents it was encoded to or decoded from: A and B are encoded
    once, and everything on the page comes from those two encodings."""
    post_a, post_b = model.posterior(a), model.posterior(b)
    z, sigma = model.transfer_posterior(a, b, bars, (post_a, post_b))
    out = model.decode(z, b.meter, b.qpm, f"{a.title} -> {b.title}", b.pickup, lead_in=False,
                       edits_from=post_b[0])

    def reconstruction(melody: Melody, post: tuple[np.ndarray, np.ndarray]) -> Melody:
        return model.decode(post[0], melody.meter, melody.qpm,
                            f"{melody.title} (reconstruction)", melody.pickup,
                            known_pickup=True)

    which = ", ".join(str(i + 1) for i in bars)
    edits = edited_repeats_note(model.bars(b).tokens, model.bars(out).tokens, bars)
    return [
        Item("Input 1", a_stem, a, f"Song A: the latent of bar {which} is transferred.",
             tuple(bars), write_midi=False, posterior=post_a),
        Item("Input 2", b_stem, b, "Song B: the flow the output follows.", write_midi=False,
             posterior=post_b),
        Item("Reconstruction 1", f"{a_stem}_reconstruction", reconstruction(a, post_a),
             "Song A encoded and decoded without teacher forcing.", posterior=post_a),
        Item("Reconstruction 2", f"{b_stem}_reconstruction", reconstruction(b, post_b),
             "Song B encoded and decoded without teacher forcing.", posterior=post_b),
        Item("Output", f"{a_stem}_x_{b_stem}", out,
             f"B's latents with bar {which} taken from A. Bars of B that the decoder copies "
             "from a transferred bar repeat A's bar here (with B's changes to it, if any); the "
             "others keep B's own latents. Its KL and \"= bar j\" marks are those of the latents "
             "it was decoded from." + (" " + edits if edits else ""), tuple(bars),
             posterior=(z, sigma)),
    ]


def edited_repeats_note(tokens_b: np.ndarray, tokens_out: np.ndarray, bars: Sequence[int]
                        ) -> str:
    """One sentence on B's edited repeats of the transferred bars (a later bar that differs
    from one in 1 or 2 steps) whose transferred bar changed: whether each is, in the output,
    the new bar with B's change. "" where B has none. tokens_b, tokens_out (N, S) of B and
    of the output."""
    import torch

    from tvae.eval.structure import edited_repeats_of

    b, out = torch.as_tensor(tokens_b)[None], torch.as_tensor(tokens_out)[None]  # (1, N, S)
    parts = []
    for i in bars:
        if i >= b.shape[1] or torch.equal(out[0, i], b[0, i]):
            continue  # no such bar, or the transfer left it as it was
        edited, follows, changed = (t[0] for t in edited_repeats_of(b, out, i))
        for j in edited.nonzero().flatten().tolist():
            steps = int(changed[j])
            parts.append(f"bar {j + 1} ({steps} step{'s' if steps > 1 else ''} changed from "
                         f"bar {i + 1}) is {'' if follows[j] else 'not '}the new bar {i + 1} "
                         "with B's change")
    if not parts:
        return ""
    return "B's edited repeats: " + "; ".join(parts) + "."
