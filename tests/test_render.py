"""The offline HTML pages: escaping, self-contained MIDI, no network, assets, no torch."""

from __future__ import annotations

import base64
import hashlib
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.paths import DATA
from tvae.errors import TvaeError
from tvae.render import PageMelody, copy_assets, render_index, render_page, write_page
from tvae.render.page import SCRIPTS, STATIC_DIR

EVIL = "<script>alert(1)</script>"
EVIL_ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


class Tags(HTMLParser):
    """Every start tag of a document as (tag, attributes), in order."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def find(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.tags if name == tag]


def _melodies() -> list[PageMelody]:
    mary = (DATA / "mary.mid").read_bytes()
    jingle = (DATA / "jingle.mid").read_bytes()
    return [
        PageMelody("Input 1", "mary.mid", mary, [3.0, 1.0, 0.5, 2.0, 0.0, 0.25, 1.5, 4.0]),
        PageMelody("Input 2", "jingle.mid", jingle, None, caption="no strip"),
    ]


def _decode(uri: str | None) -> bytes:
    prefix = "data:audio/midi;base64,"
    assert uri is not None and uri.startswith(prefix)
    return base64.b64decode(uri[len(prefix):])


def test_user_strings_appear_only_escaped() -> None:
    midi = (DATA / "mary.mid").read_bytes()
    melody = PageMelody(EVIL, EVIL + '"quoted"', midi, [1.0], caption=EVIL)
    html = render_page(EVIL, [melody], intro=EVIL, links=[("other.html", EVIL)])
    assert EVIL not in html
    assert "<script>alert" not in html
    assert html.count(EVIL_ESCAPED) == 7  # title tag, h1, intro, link, label, name, caption
    assert "&quot;quoted&quot;" in html
    index = render_index(EVIL, [("a.html", EVIL, EVIL)])
    assert EVIL not in index and index.count(EVIL_ESCAPED) == 4


def test_every_element_carries_its_own_midi() -> None:
    melodies = _melodies()
    tags = Tags(render_page("Page", melodies))
    players = tags.find("midi-player")
    visualizers = tags.find("midi-visualizer")
    assert len(players) == 2 and len(visualizers) == 4
    assert [v["type"] for v in visualizers] == ["staff", "piano-roll"] * 2
    for i, melody in enumerate(melodies):
        player, own = players[i], visualizers[2 * i : 2 * i + 2]
        assert _decode(player["src"]) == melody.midi
        assert all(_decode(v["src"]) == melody.midi for v in own)
        linked = player["visualizer"]
        assert linked is not None and linked.startswith(".")
        assert all(linked[1:] in (v["class"] or "").split() for v in own)
    ids = [attrs["id"] for _, attrs in tags.tags if "id" in attrs]
    assert len(ids) == len(set(ids))


def test_page_is_offline_and_loads_scripts_in_order() -> None:
    html = render_page("Page", _melodies(), links=[("index.html", "Index")])
    tags = Tags(html)
    assert "sound-font" not in html
    assert not any("sound-font" in attrs for _, attrs in tags.tags)
    assert not re.search(r"https?:", html, re.IGNORECASE)
    urls = [v for _, attrs in tags.tags for k, v in attrs.items() if k in ("src", "href")]
    assert urls and all(not re.match(r"[a-z]+:(?!audio/midi;base64,)|//", u or "") for u in urls)
    scripts = [attrs["src"] for attrs in tags.find("script")]
    assert scripts == [f"assets/{name}" for name in SCRIPTS]
    assert SCRIPTS == ("Tone.js", "core.js", "midi-player.min.js")


@pytest.mark.parametrize("href", ["https://example.com", "http://x", "//cdn.x/y", "javascript:x"])
def test_links_must_be_relative(href: str) -> None:
    with pytest.raises(TvaeError, match="relative"):
        render_page("Page", [], links=[(href, "x")])
    with pytest.raises(TvaeError, match="relative"):
        render_index("Index", [(href, "x", "y")])


def test_kl_strip_has_one_shaded_cell_per_bar() -> None:
    midi = (DATA / "mary.mid").read_bytes()
    kl = [0.0, 2.0, float("nan"), 4.0, 1.0]
    html = render_page("Page", [PageMelody("In", "m", midi, kl)])
    cell = r'class="bar[^"]*" style="--shade: ([0-9.]+)"[^>]*>bar (\d+)<b>([^<]*)<'
    cells = re.findall(cell, html)
    assert [int(bar) for _, bar, _ in cells] == [1, 2, 3, 4, 5]
    assert [shown for _, _, shown in cells] == ["0.00", "2.00", "n/a", "4.00", "1.00"]
    shade = [float(s) for s, _, _ in cells]
    assert shade[0] < shade[4] < shade[1] < shade[3]  # shading follows the value
    assert shade[3] == pytest.approx(0.9)  # the page's largest value gets the darkest shade
    assert 'class="kl"' not in render_page("Page", [PageMelody("In", "m", midi, None)])


def test_kl_strip_marks_copies_and_transferred_bars() -> None:
    midi = (DATA / "mary.mid").read_bytes()
    melody = PageMelody("Out", "m", midi, [5.0, 1.0, 6.0, 0.5], copies=[None, 0, None, 2],
                        highlight=(0,))
    html = render_page("Page", [melody])
    cells = re.findall(r'<span class="bar([^"]*)"[^>]*>bar (\d+)<b>[^<]*</b>(.*?)</span>', html)
    assert [int(bar) for _, bar, _ in cells] == [1, 2, 3, 4]
    assert ["copy" in c for c, _, _ in cells] == [False, True, False, True]
    assert ["moved" in c for c, _, _ in cells] == [True, False, False, False]
    assert [ref for _, _, ref in cells] == ["", '<i class="ref">= bar 1</i>', "",
                                            '<i class="ref">= bar 3</i>']


def test_not_midi_is_refused() -> None:
    with pytest.raises(TvaeError, match="not a MIDI file"):
        render_page("Page", [PageMelody("In", "m", b"<html>", None)])


def test_write_page_copies_assets_once(tmp_path: Path) -> None:
    page = write_page(tmp_path / "site" / "page.html", render_page("Page", _melodies()))
    assert page.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assets = tmp_path / "site" / "assets"
    for name in (*SCRIPTS, "ASSETS.md", "LICENSE.magenta-music.txt"):
        assert (assets / name).read_bytes() == (STATIC_DIR / name).read_bytes()
    assert copy_assets(tmp_path / "site") == []  # identical files are skipped
    (assets / "core.js").write_text("stale")
    assert copy_assets(tmp_path / "site") == [assets / "core.js"]
    assert (assets / "core.js").read_bytes() == (STATIC_DIR / "core.js").read_bytes()
    write_page(tmp_path / "bare.html", "<p>x</p>", assets="none")
    assert not (tmp_path / "assets").exists()
    with pytest.raises(TvaeError, match="directory"):
        write_page(tmp_path / "site", "<p>x</p>")


def test_assets_match_their_manifest_and_licences() -> None:
    manifest = (STATIC_DIR / "ASSETS.md").read_text()
    for name in SCRIPTS:
        digest = hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()
        assert f"`{name}` | `{digest}`" in manifest
    apache = (STATIC_DIR / "LICENSE.magenta-music.txt").read_text()
    assert "Apache License" in apache and "Version 2.0, January 2004" in apache
    assert "MIT" in (STATIC_DIR / "LICENSE.tone.txt").read_text()
    assert "Redistribution" in (STATIC_DIR / "LICENSE.html-midi-player.txt").read_text()


def test_render_imports_no_torch() -> None:
    code = (
        "import sys, tvae.render, tvae.render.page; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_writing_where_a_file_blocks_the_folder_is_one_clear_error(tmp_path: Path) -> None:
    from tvae.files import write_bytes_atomic

    (tmp_path / "afile").write_text("x")
    with pytest.raises(TvaeError, match="afile is a file, not a folder") as info:
        write_bytes_atomic(b"data", tmp_path / "afile" / "deeper" / "out.mid")
    assert info.value.path == str(tmp_path / "afile" / "deeper" / "out.mid")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # nothing half-written


def test_a_full_disk_while_copying_assets_leaves_no_page(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk fills up on the second script. The error names that file, and
    no page is left without its scripts (pages were written first, then their assets)."""
    import errno
    import os

    import tvae.files

    replace = os.replace

    def full_disk(src: str, dst: str) -> None:
        if Path(dst).name == SCRIPTS[1]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        replace(src, dst)

    monkeypatch.setattr(tvae.files.os, "replace", full_disk)
    page = tmp_path / "site" / "page.html"
    with pytest.raises(TvaeError, match="No space left on device") as info:
        write_page(page, render_page("Page", _melodies()))
    assert info.value.path == str(tmp_path / "site" / "assets" / SCRIPTS[1])
    assert not page.exists()
    assert not [p for p in (tmp_path / "site").rglob("*") if p.name.endswith(".tmp")]
    monkeypatch.setattr(tvae.files.os, "replace", replace)  # space again: the page works
    write_page(page, render_page("Page", _melodies()))
    for name in SCRIPTS:
        assert (page.parent / "assets" / name).read_bytes() == (STATIC_DIR / name).read_bytes()
