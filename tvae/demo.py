"""`tvae demo`: a small static site of what the model does, from the bundled example melodies.

Pages: the paper's context transfers (Mary x Jingle Bells, Twinkle x Ode to Joy, both ways), a
transfer into a song whose repeat of bar 1 is varied (an edited repeat), reconstructions without
teacher forcing, samples from the prior, and an interpolation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from importlib import resources
from pathlib import Path

from tvae.config import N_SPECIAL
from tvae.errors import TvaeError
from tvae.files import check_folder
from tvae.inference import TrainedModel
from tvae.melody import Melody, bars_to_melody
from tvae.midi import read_melody
from tvae.outputs import LEARNED_NOTE, Item, transfer_items, write_results
from tvae.render import render_index, write_page

EXAMPLES = ("mary", "jingle", "twinkle", "ode")
PAIRS = (("mary", "jingle"), ("jingle", "mary"), ("twinkle", "ode"), ("ode", "twinkle"))
NAMES = {"mary": "Mary Had a Little Lamb", "jingle": "Jingle Bells", "twinkle":
         "Twinkle Twinkle Little Star", "ode": "Ode to Joy"}


def examples_folder() -> Path:
    """The example melodies shipped in the package (copies of the repository's data/)."""
    return Path(str(resources.files("tvae") / "examples"))


def _is_file(path: Path) -> bool:
    """Whether `path` is a file; False (not an OSError) for a name too long."""
    try:
        return path.is_file()
    except OSError:
        return False


def build_demo(out_dir: str | Path, examples: str | Path | None, model: TrainedModel,
               say: Callable[[str], None] = lambda message: None) -> Path:
    """Write the site into `out_dir` (examples: default the package's); returns its index.
    `say` hears one line per page as it is written (the CLI prints them)."""
    out_dir = Path(out_dir)
    check_folder(out_dir)  # a file in the way is refused before any work
    examples = examples_folder() if examples is None else Path(examples)
    missing = [f"{n}.mid" for n in EXAMPLES if not _is_file(examples / f"{n}.mid")]
    if missing:
        raise TvaeError(f"missing example melodies {missing} (see --examples)", examples)
    songs = {name: read_melody(examples / f"{name}.mid", grid=model.grid) for name in EXAMPLES}
    entries = []
    for a, b in PAIRS:
        page = f"{a}_x_{b}.html"
        items = transfer_items(model, songs[a], songs[b], a, b, [0])
        write_results(model, out_dir, items, f"{NAMES[a]} x {NAMES[b]}", page,
                      links=[("index.html", "All demos")])
        say(f"wrote {out_dir / page}")
        entries.append((page, f"{NAMES[a]} x {NAMES[b]}",
                        f"Context transfer: the first bar of {NAMES[a]} in the flow of "
                        f"{NAMES[b]}."))
    varied = vary_first_repeat(model, songs["mary"])
    if varied is not None:  # (examples of the user's own may have no repeat of bar 1)
        entries.append(_edited_repeat_page(model, out_dir, songs["jingle"], *varied, say))
    items = []
    for name in EXAMPLES:
        items.append(Item(f"{NAMES[name]}: input", name, songs[name], write_midi=False))
        items.append(Item(f"{NAMES[name]}: reconstruction", f"{name}_reconstruction",
                          model.reconstruct(songs[name]), "Decoded without teacher forcing."))
    write_results(model, out_dir, items, "Reconstructions", "reconstructions.html",
                  links=[("index.html", "All demos")])
    say(f"wrote {out_dir / 'reconstructions.html'}")
    entries.append(("reconstructions.html", "Reconstructions",
                    "Each example encoded and decoded without teacher forcing."))
    learned = model.has_prior
    how = ("each bar's copy choice and latent drawn by the learned prior from the bars before "
           "it" if learned else "each bar's latent drawn from N(0, I)")
    samples = []
    for s in range(4):
        melody, copies = model.draw(16, seed=s)
        samples.append(Item(f"Sample {s + 1}", f"sample_{s}", melody, f"16 bars, {how}, seed {s}",
                            copies=copies if learned else None))
    start = songs["mary"]
    opening = model.bars(start)
    opening.tokens = opening.tokens[:4]
    prompt = bars_to_melody(opening, model.grid)
    for s in range(2):
        melody, copies = model.draw(16, seed=s, prompt=prompt)
        samples.append(Item(f"Continuation {s + 1}", f"mary_continued_{s}", melody,
                            f"The first 4 bars of {NAMES['mary']}, continued to 16 bars "
                            f"({how}), seed {s}", copies=copies if learned else None))
    write_results(model, out_dir, samples, "Samples from the prior", "samples.html",
                  intro=LEARNED_NOTE if learned else "", links=[("index.html", "All demos")])
    say(f"wrote {out_dir / 'samples.html'}")
    entries.append(("samples.html", "Samples", f"New melodies, {how}, and continuations of "
                    f"the opening of {NAMES['mary']}."))
    steps = model.interpolate(songs["mary"], songs["twinkle"], 5)
    items = [Item(f"Step {i + 1} of 5", f"mary_to_twinkle_{i + 1}", m)
             for i, m in enumerate(steps)]
    write_results(model, out_dir, items, "Mary Had a Little Lamb to Twinkle Twinkle",
                  "interpolation.html", links=[("index.html", "All demos")])
    say(f"wrote {out_dir / 'interpolation.html'}")
    entries.append(("interpolation.html", "Interpolation",
                    "From Mary Had a Little Lamb to Twinkle Twinkle, per bar on the sphere."))
    return write_page(out_dir / "index.html", render_index("tvae demos", entries))


def vary_first_repeat(model: TrainedModel, melody: Melody) -> tuple[Melody, int] | None:
    """`melody` with its first later exact repeat of bar 1 varied: that bar's first note a
    semitone higher (in Mary Had a Little Lamb, bar 5 opens on F rather than E). Returns the
    varied melody and the bar (0-based); None where bar 1 never repeats or the note cannot
    move."""
    bars = model.bars(melody)
    tokens = bars.tokens.copy()  # (N, S)
    for j in range(1, len(tokens)):
        if not (tokens[j] == tokens[0]).all():
            continue
        onsets = [s for s in range(tokens.shape[1]) if tokens[j, s] >= N_SPECIAL]
        if not onsets or tokens[j, onsets[0]] + 1 >= model.grid.vocab_size:
            return None
        tokens[j, onsets[0]] += 1
        bars.tokens = tokens
        varied = bars_to_melody(bars, model.grid)
        return replace(varied, title=f"{melody.title or 'B'}, bar {j + 1} varied"), j
    return None


def _edited_repeat_page(model: TrainedModel, out_dir: Path, a: Melody, b: Melody, bar: int,
                        say: Callable[[str], None]) -> tuple[str, str, str]:
    """The page of Jingle Bells' opening put into Mary Had a Little Lamb with its repeat of bar
    1 varied; its output's caption says what happened to that bar (`transfer_items`), its intro
    how often it happens on the model's card. Returns its index entry."""
    page = "edited_repeat.html"
    items = transfer_items(model, a, b, "jingle", "mary_varied", [0])
    said = "B's edited repeats:" in items[-1].caption  # the output's caption says which follow
    card = model.meta.get("evaluation")
    rate, cases = ((card.get("transfer_edit_follow_rate"), card.get("transfer_edit_cases"))
                   if isinstance(card, dict) else (None, None))
    often = ""
    if isinstance(rate, (int, float)) and math.isfinite(rate):  # NaN: no such cases
        of = f"of {int(cases)}" if isinstance(cases, (int, float)) else "of"
        where = f" ({card['data']})" if isinstance(card.get("data"), str) else ""
        often = (f" On the model's card{where}, B's edited repeats of bar 1 come out as the "
                 f"new bar 1 with B's change in {rate:.0%} {of} cases.")
    intro = (f"Song B is Mary Had a Little Lamb with bar {bar + 1}, a repeat of bar 1, varied: "
             "its first note a semitone higher. The musical meaning of developing A's opening "
             f"in B's flow is that bar {bar + 1} becomes A's bar 1 with B's change. "
             + ("The output's caption says which of B's edited repeats did."
                if said else "This transfer left no edited repeat of a changed bar 1 to show.")
             + often)
    write_results(model, out_dir, items, "Jingle Bells x Mary Had a Little Lamb, varied", page,
                  intro=intro, links=[("index.html", "All demos")])
    say(f"wrote {out_dir / page}")
    return (page, "An edited repeat", f"Jingle Bells' opening in Mary Had a Little Lamb whose "
            f"bar {bar + 1} repeats bar 1 with one note changed.")
