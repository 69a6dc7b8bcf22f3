"""Standalone HTML pages that play and draw melodies offline.

A page shows each melody with a `<midi-player>` and two `<midi-visualizer>`s (staff and piano
roll) from html-midi-player, and, when given, a strip of per-bar KL in bits. The MIDI travels
inside the page as `data:` URIs and the player's scripts load from a sibling `assets/` folder, so
a page works from `file://` with no network. No `sound-font` attribute is ever written: it would
download samples; without it the player uses Magenta's built-in synth.

Every string a user supplies (titles, names, captions, links) is HTML-escaped. This module imports
only the standard library, `tvae.errors` and `tvae.files` (its atomic writes; never torch or
symusic).
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Literal

from tvae.errors import TvaeError
from tvae.files import is_folder, readable, write_bytes_atomic

STATIC_DIR = Path(__file__).resolve().parent / "static"
ASSETS_DIR = "assets"  # folder next to each page that holds the player's scripts
# Load order documented by html-midi-player: Tone.js, then Magenta's core bundle, then the player.
SCRIPTS: tuple[str, ...] = ("Tone.js", "core.js", "midi-player.min.js")
_SCHEME = re.compile(r"^\s*([a-zA-Z][a-zA-Z0-9+.-]*:|//|\\\\)")  # an absolute or scheme URL

CSS = """
:root { --ink: #1f2430; --muted: #5b6272; --line: #d9dde5; --accent: 37, 99, 235; }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif;
       color: var(--ink); background: #f6f7f9; }
main { max-width: 980px; margin: 0 auto; padding: 2rem 1.25rem 4rem; }
h1 { font-size: 1.7rem; margin: 0 0 .5rem; }
.intro { color: var(--muted); max-width: 70ch; white-space: pre-line; }
nav.links { margin: 1rem 0 1.5rem; display: flex; gap: 1rem; flex-wrap: wrap; }
nav.links a, .index a { color: rgb(var(--accent)); }
section.melody { background: #fff; border: 1px solid var(--line); border-radius: 10px;
                 padding: 1rem 1.25rem 1.25rem; margin: 1.25rem 0; }
section.melody h2 { font-size: 1.15rem; margin: 0 0 .25rem; }
.label { color: rgb(var(--accent)); margin-right: .5rem; }
.caption { color: var(--muted); margin: 0 0 .5rem; white-space: pre-line; }
midi-player { display: block; width: 100%; margin: .5rem 0; }
midi-visualizer { display: block; margin: .5rem 0; border: 1px solid var(--line);
                  border-radius: 6px; background: #fff; overflow-x: auto; }
midi-visualizer .staff-visualizer { overflow-x: auto; }
.below { color: var(--muted); font-size: .85rem; margin: .25rem 0; }
.below a { color: rgb(var(--accent)); }
.kl { display: flex; flex-wrap: wrap; gap: 3px; margin: .5rem 0 0; align-items: stretch; }
.what { color: var(--muted); font-size: .85rem; margin: .5rem 0 .2rem; }
.rollbox { overflow-x: auto; margin: .5rem 0; }
.rollbox midi-visualizer { overflow: visible; width: max-content; min-width: 100%;
                           box-sizing: border-box; margin: 0; }
.kl.aligned { display: block; position: relative; height: 3.1rem; }
.kl.aligned .bar { position: absolute; top: 0; bottom: 0; min-width: 0; overflow: hidden;
                   padding: .2rem .1rem; box-sizing: border-box; font-size: .7rem; }
.kl .bar { min-width: 3.4rem; padding: .2rem .4rem; border: 1px solid var(--line);
           border-radius: 4px; text-align: center; font-size: .8rem; line-height: 1.2;
           background: rgba(var(--accent), var(--shade)); }
.kl .bar.dark { color: #fff; }
.kl .bar b { display: block; font-weight: 600; }
.kl .bar .ref { display: block; font-style: normal; font-size: .72rem; }
.kl .bar.copy { border-style: dashed; border-color: rgb(var(--accent)); }
.kl .bar.moved { outline: 2px solid #d9822b; outline-offset: 1px; }
.index ul { list-style: none; padding: 0; }
.index li { background: #fff; border: 1px solid var(--line); border-radius: 8px;
            padding: .75rem 1rem; margin: .75rem 0; }
.index li p { margin: .25rem 0 0; color: var(--muted); }
footer { color: var(--muted); font-size: .8rem; margin-top: 2.5rem; }
"""


@dataclass
class PageMelody:
    """One melody on a page."""

    label: str  # role on the page, e.g. "Input 1" or "Reconstruction"
    name: str  # file name or title given by the user; shown escaped
    midi: bytes  # a standard MIDI file
    kl_bits: list[float] | None  # (N,) KL of each bar in bits, or None for no strip
    caption: str = ""
    copies: list[int | None] | None = None  # (N,) 0-based bar the decoder copies each bar from
    highlight: tuple[int, ...] = ()  # 0-based bars to highlight (the transferred bars)
    file_name: str = ""  # name for the MIDI download link (none when empty)
    pitch_range: tuple[str, str] | None = None  # lowest and highest note, e.g. ("C4", "G5")
    bar_steps: int = 0  # sixteenths per bar; with qpm, the KL strip is laid under the piano
    pickup_steps: int = 0  # roll's bars (bar 1 is the pickup's length when there is one)
    qpm: float = 0.0  # the MIDI's tempo (quarter notes per minute)


# html-midi-player draws its piano roll at Magenta's default of 30 pixels per second of music, so
# a sixteenth at `qpm` quarter notes per minute is 30 * 60 / (4 * qpm) pixels wide: the KL strip
# is laid out with the same scale under the roll, bar k under bar k.
ROLL_PX_PER_SECOND = 30.0
ROLL_BORDER_PX = 1.0  # the visualizer's border: where the roll's time 0 is drawn


def _text(value: object) -> str:
    return escape(readable(str(value)), quote=True)


def _check_href(href: str) -> str:
    """`href` escaped, if it is a relative link; pages link nowhere outside their folder tree."""
    if _SCHEME.match(href):
        raise TvaeError(f"page links must be relative paths, got {href!r}")
    return _text(href)


def midi_data_uri(midi: bytes) -> str:
    """`midi` as a `data:audio/midi;base64,...` URI; refuses bytes that are not a MIDI file."""
    if not midi.startswith(b"MThd"):
        raise TvaeError("page melody is not a MIDI file (no MThd header)")
    return "data:audio/midi;base64," + base64.b64encode(midi).decode("ascii")


def _finite(values: Sequence[float] | None) -> list[float]:
    return [float(v) for v in values or () if math.isfinite(float(v))]


def _kl_strip(melody: PageMelody, scale: float) -> str:
    """One cell per bar holding its KL in bits, shaded by magnitude relative to `scale`; a bar
    the decoder copies names the bar it copies, and highlighted bars are outlined."""
    cells = []
    copies = list(melody.copies or [])
    for bar, value in enumerate(melody.kl_bits or [], start=1):
        value = float(value)
        if math.isfinite(value):
            shade = min(max(value, 0.0) / scale, 1.0) if scale > 0 else 0.0
            shown, tip = f"{value:.2f}", f"bar {bar}: {value:.3f} bits"
        else:
            shade, shown, tip = 0.0, "n/a", f"bar {bar}: not a number"
        classes = " dark" if shade > 0.55 else ""
        ref = ""
        source = copies[bar - 1] if bar - 1 < len(copies) else None
        if source is not None:
            classes += " copy"
            ref = f'<i class="ref">= bar {int(source) + 1}</i>'
            tip += f"; decoded as a copy of bar {int(source) + 1}"
        if bar - 1 in melody.highlight:
            classes += " moved"
            tip += "; transferred"
        cells.append(
            f'<span class="bar{classes}" style="--shade: {0.08 + 0.82 * shade:.3f}" '
            f'title="{_text(tip)}">bar {bar}<b>{shown}</b>{ref}</span>'
        )
    aligned = melody.bar_steps > 0 and math.isfinite(melody.qpm) and melody.qpm > 0
    if aligned:  # each cell under its bar of the piano roll
        px = ROLL_PX_PER_SECOND * 60.0 / (4.0 * melody.qpm)  # pixels per sixteenth
        start = 0
        for k in range(len(cells)):
            steps = melody.pickup_steps if k == 0 and melody.pickup_steps else melody.bar_steps
            style = (f'left: {ROLL_BORDER_PX + start * px:.2f}px; '
                     f'width: {max(steps * px - 2.0, 1.0):.2f}px; ')
            cells[k] = cells[k].replace('style="', f'style="{style}', 1)
            start += steps
        width = f' style="width: {ROLL_BORDER_PX * 2 + start * px:.2f}px"'
    klass, width = ("kl aligned", width) if aligned else ("kl", "")
    return ('<div class="what">KL per bar (bits)</div>'
            f'<div class="{klass}" role="list"{width}>' + "".join(cells) + "</div>")


def _melody_section(index: int, melody: PageMelody, scale: float) -> str:
    """The HTML of one melody: heading, caption, player, staff, piano roll and KL strip."""
    uri = midi_data_uri(melody.midi)
    key = f"m{index}"
    parts = [
        f'<section class="melody" id="{key}">',
        f'<h2><span class="label">{_text(melody.label)}</span>'
        f'<span class="name">{_text(melody.name)}</span></h2>',
    ]
    if melody.caption:
        parts.append(f'<p class="caption">{_text(melody.caption)}</p>')
    parts += [
        f'<midi-player id="{key}-player" src="{uri}" visualizer=".{key}-vis"></midi-player>',
        f'<midi-visualizer type="staff" id="{key}-staff" class="{key}-vis" src="{uri}">'
        "</midi-visualizer>",
    ]
    # the piano roll and the KL strip scroll together, so the strip stays under the roll's bars
    roll = [f'<div class="rollbox"><midi-visualizer type="piano-roll" id="{key}-roll" '
            f'class="{key}-vis" src="{uri}"></midi-visualizer>']
    if melody.kl_bits is not None:
        roll.append(_kl_strip(melody, scale))
    parts.append("".join(roll) + "</div>")
    below = []
    if melody.pitch_range:
        low, high = melody.pitch_range
        below.append(f'<span class="axis">piano roll: {_text(low)} at the bottom, '
                     f'{_text(high)} at the top</span>')
    if melody.file_name:
        below.append(f'<a class="download" download="{_text(melody.file_name)}" '
                     f'href="{uri}">Download MIDI</a>')
    if below:
        parts.append('<p class="below">' + " · ".join(below) + "</p>")
    parts.append("</section>")
    return "\n".join(parts)


def _document(title: str, body: str, scripts: bool) -> str:
    """A complete HTML document around `body`; `scripts` adds the player's script tags."""
    tags = "".join(f'<script src="{ASSETS_DIR}/{name}"></script>\n' for name in SCRIPTS)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_text(title)}</title>\n<style>{CSS}</style>\n"
        f"{tags if scripts else ''}</head>\n<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


def _links(links: Sequence[tuple[str, str]]) -> str:
    if not links:
        return ""
    items = "".join(f'<a href="{_check_href(href)}">{_text(text)}</a>' for href, text in links)
    return f'<nav class="links">{items}</nav>'


def render_page(
    title: str,
    melodies: list[PageMelody],
    intro: str = "",
    links: Sequence[tuple[str, str]] = (),
    made_by: str = "",
) -> str:
    """A standalone HTML page showing `melodies`, each with a player, staff and piano roll.

    KL strips share one shading scale (the largest finite value on the page), so bars can be
    compared across melodies. `links` are (relative href, text) pairs shown under the title;
    `made_by` names the model that made the page (in the footer).
    """
    scale = max((v for m in melodies for v in _finite(m.kl_bits)), default=0.0)
    body = [f"<h1>{_text(title)}</h1>"]
    if intro:
        body.append(f'<p class="intro">{_text(intro)}</p>')
    if links:
        body.append(_links(links))
    body += [_melody_section(i, m, scale) for i, m in enumerate(melodies, start=1)]
    made = f"Made by {_text(made_by)}. " if made_by else ""
    body.append(
        f"<footer>{made}Playback and notation offline with html-midi-player (BSD-2-Clause), "
        "Magenta.js (Apache-2.0) and Tone.js (MIT); their licences are in "
        f'<a href="{ASSETS_DIR}/ASSETS.md">{ASSETS_DIR}/ASSETS.md</a>.</footer>'
    )
    return _document(title, "\n".join(body), scripts=True)


def render_index(title: str, entries: Sequence[tuple[str, str, str]]) -> str:
    """An index page for a demo site: one item per (relative href, title, description)."""
    items = "".join(
        f'<li><a href="{_check_href(href)}">{_text(name)}</a><p>{_text(text)}</p></li>'
        for href, name, text in entries
    )
    body = f'<h1>{_text(title)}</h1>\n<div class="index"><ul>{items}</ul></div>'
    return _document(title, body, scripts=False)


def copy_assets(page_dir: str | Path) -> list[Path]:
    """Copy the player's scripts and licences into `page_dir/assets/`; returns the files written.

    Files already there with identical bytes are left alone.
    """

    if not (STATIC_DIR / SCRIPTS[0]).is_file():
        raise TvaeError("player assets are missing; run scripts/fetch_player_assets.py", STATIC_DIR)
    target = Path(page_dir) / ASSETS_DIR
    written = []
    for source in sorted(STATIC_DIR.iterdir()):
        if not source.is_file():
            continue
        dest = target / source.name
        data = source.read_bytes()
        if dest.is_file() and dest.read_bytes() == data:
            continue
        write_bytes_atomic(data, dest)
        written.append(dest)
    return written


def write_page(
    path: str | Path, html: str, assets: Literal["copy", "none"] = "copy"
) -> Path:
    """Write `html` to `path` atomically and, with assets="copy", the assets beside it.

    The assets go first and the page last, so a failure (a full disk, no permission) never
    leaves a new page without its player scripts: either the page is complete and playable, or
    it was not written (an older page of that name is left as it was)."""

    if assets not in ("copy", "none"):
        raise TvaeError(f'assets must be "copy" or "none", got {assets!r}')
    path = Path(path)
    if is_folder(path):
        raise TvaeError("is a directory; give a file name such as page.html", path)
    try:
        if assets == "copy":
            copy_assets(path.parent)
        write_bytes_atomic(readable(html).encode("utf-8"), path)
    except TvaeError:
        raise  # already one line naming the file that could not be written
    except OSError as exc:
        raise TvaeError(f"cannot write page: {exc.strerror or exc}", path) from None
    return path
