"""The demo page in a real browser (Debian's chromium through playwright): it draws, plays,
stays offline and does not run a script hidden in a track name.

Skipped when /usr/bin/chromium or playwright is missing, except on CI (CI=true), where that fails.
Never runs `playwright install`.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.paths import DATA
from tvae.melody import Melody, Note
from tvae.midi import melody_to_midi_bytes, read_midi
from tvae.render import PageMelody, render_page, write_page

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
EVIL_NAME = "<script>window.__pwned=1</script>"
LOAD_TIMEOUT_MS = 30_000  # generous: only a ceiling for slow machines, never a measurement


def _require_browser():
    """playwright's sync API, or a skip (a failure on CI) when the browser is unavailable."""
    on_ci = os.environ.get("CI") == "true"
    reason = ""
    if not CHROMIUM.is_file():
        reason = f"{CHROMIUM} is not installed (apt-get install chromium)"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = reason or "the playwright package is not installed"
    if reason:
        if on_ci:
            pytest.fail(f"CI must provide the browser: {reason}")
        pytest.skip(reason)
    return sync_playwright


def _evil_midi() -> bytes:
    notes = (Note(0, 60, 4), Note(4, 64, 4), Note(8, 67, 8))
    return melody_to_midi_bytes(Melody(notes, title=EVIL_NAME))


@pytest.fixture(scope="module")
def page_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    """A page with mary, jingle and a melody whose track name is a script; and note counts."""
    folder = tmp_path_factory.mktemp("page")
    evil = folder / "evil.mid"
    evil.write_bytes(_evil_midi())
    melodies, counts = [], []
    for i, path in enumerate([DATA / "mary.mid", DATA / "jingle.mid", evil], start=1):
        melody, report = read_midi(path)
        kl = [float(b) for b in range(melody.n_bars)]
        melodies.append(PageMelody(f"Input {i}", melody.title, path.read_bytes(), kl))
        counts.append(report.n_notes)
    html = render_page("Browser test", melodies, intro=EVIL_NAME)
    return write_page(folder / "page.html", html), counts


def _is_local(url: str) -> bool:
    """file:// and data: URLs, and blob: URLs the page made itself (Tone.js's audio worklet)."""
    parsed = urlparse(url)
    if parsed.scheme == "blob":
        return not parsed.path.startswith(("http:", "https:"))
    return parsed.scheme in ("file", "data")


def test_page_renders_plays_offline_and_safely(page_file: tuple[Path, list[int]]) -> None:
    sync_playwright = _require_browser()
    path, counts = page_file
    requests: list[str] = []
    blocked: list[str] = []
    errors: list[str] = []

    def guard(route) -> None:  # noqa: ANN001 (playwright Route)
        if _is_local(route.request.url):
            route.continue_()
        else:  # never reaches the network
            blocked.append(route.request.url)
            route.abort()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            context.route("**/*", guard)
            page = context.new_page()
            page.on("request", lambda request: requests.append(request.url))
            page.on("console", lambda m: m.type == "error" and errors.append(m.text))
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(path.as_uri())
            _check_rendered(page, counts)
            _check_plays(page)
            _check_not_pwned(page)
        finally:
            browser.close()
    assert errors == []
    assert blocked == []
    assert requests and all(_is_local(url) for url in requests), requests
    assert any(url.endswith("/assets/midi-player.min.js") for url in requests)


def _check_rendered(page, counts: list[int]) -> None:  # noqa: ANN001 (playwright Page)
    """Every player has its shadow DOM; every visualizer its svg; piano rolls show every note."""
    page.wait_for_function(
        """n => document.querySelectorAll('midi-visualizer svg').length >= n
             && [...document.querySelectorAll('midi-player')].every(p => p.noteSequence)""",
        arg=2 * len(counts),
        timeout=LOAD_TIMEOUT_MS,
    )
    state = page.evaluate(
        """() => ({
          players: [...document.querySelectorAll('midi-player')].map(p =>
            !!p.shadowRoot && !!p.shadowRoot.querySelector('.controls button.play')),
          staffs: [...document.querySelectorAll('midi-visualizer[type=staff]')].map(v =>
            v.querySelector('.staff-visualizer svg') ? v.getBoundingClientRect().height : 0),
          rolls: [...document.querySelectorAll('midi-visualizer[type=piano-roll]')].map(v =>
            v.querySelectorAll('.piano-roll-visualizer svg rect.note').length),
        })"""
    )
    assert state["players"] == [True] * len(counts)
    assert all(height > 10 for height in state["staffs"]), state["staffs"]
    assert state["rolls"] == counts


def _check_plays(page) -> None:  # noqa: ANN001 (playwright Page)
    """Clicking the first player's play button starts playback ('start' event, `playing`)."""
    page.evaluate(
        """() => { const p = document.querySelector('#m1-player');
                   window.__started = false;
                   p.addEventListener('start', () => { window.__started = true; }); }"""
    )
    assert page.evaluate("() => document.querySelector('#m1-player').playing") is False
    page.locator("#m1-player button.play").click()
    page.wait_for_function(
        "() => window.__started && document.querySelector('#m1-player').playing",
        timeout=LOAD_TIMEOUT_MS,
    )
    page.locator("#m1-player button.play").click()  # stop again
    page.wait_for_function(
        "() => !document.querySelector('#m1-player').playing", timeout=LOAD_TIMEOUT_MS
    )


def _check_not_pwned(page) -> None:  # noqa: ANN001 (playwright Page)
    """The script in the track name never ran; the name shows as text."""
    assert page.evaluate("() => typeof window.__pwned") == "undefined"
    assert page.locator("#m3 .name").text_content() == EVIL_NAME
    assert page.locator(".intro").text_content() == EVIL_NAME
    assert page.evaluate("() => document.querySelectorAll('main script').length") == 0


DRAWN = "[...document.querySelectorAll('midi-visualizer')].every(v => v.querySelector('svg rect'))"


def _measure(path: Path, width: int, script: str) -> object:
    """Open `path` in chromium at `width` pixels, wait until every visualizer has drawn its
    notes, and return what `script` (a JS function) evaluates to."""
    sync_playwright = _require_browser()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        tab = browser.new_page(viewport={"width": width, "height": 900})
        tab.goto(path.as_uri())
        tab.wait_for_function(DRAWN, timeout=LOAD_TIMEOUT_MS)
        result = tab.evaluate(script)
        browser.close()
    return result


def test_kl_strip_lies_under_the_piano_roll_bars(tmp_path: Path) -> None:
    """Each bar's KL cell starts where its bar starts in the drawn piano roll (a 3/4 melody at
    90 qpm with a pickup: bar 1 is the pickup's width, then whole bars)."""
    _require_browser()
    notes = tuple(Note(4 * k, 60 + k % 7, 4) for k in range(10))  # 1 pickup beat + 3 bars
    melody = Melody(notes, (3, 4), 90.0, pickup=4, title="waltz")
    page = PageMelody("In", "waltz", melody_to_midi_bytes(melody), [1.0, 2.0, 3.0, 4.0],
                      bar_steps=12, pickup_steps=4, qpm=90.0)
    path = write_page(tmp_path / "aligned.html", render_page("Aligned", [page]))
    found = _measure(path, 1000, """() => {
        const svg = document.querySelector('midi-visualizer[type="piano-roll"] svg');
        const left = svg.getBoundingClientRect().left;
        const notes = [...svg.querySelectorAll('rect')].map(
            r => r.getBoundingClientRect().left - left);
        const cells = [...document.querySelectorAll('.kl .bar')].map(
            c => c.getBoundingClientRect().left - left);
        return {notes, cells}; }""")
    # the roll draws a note per beat; bar k starts with note 0, 1, 4, 7 (pickup of one beat)
    starts = [found["notes"][i] for i in (0, 1, 4, 7)]
    assert found["cells"] == pytest.approx(starts, abs=1.5)
    assert starts[1] > starts[0] and starts[2] - starts[1] == pytest.approx(3 * starts[1], abs=1)


def test_long_melodies_stay_inside_their_card(tmp_path: Path) -> None:
    """A 12-bar melody on a narrow window: the staff, and the piano roll with its KL strip,
    scroll inside the card instead of running past it."""
    _require_browser()
    melody, _ = read_midi(DATA / "twinkle.mid")
    page = PageMelody("In", "twinkle", (DATA / "twinkle.mid").read_bytes(),
                      [float(k) for k in range(12)], bar_steps=16, qpm=melody.qpm)
    path = write_page(tmp_path / "long.html", render_page("Long", [page]))
    sizes = _measure(path, 600, """() => {
        const sec = document.querySelector('section.melody');
        const box = sec.querySelector('.rollbox');
        return [sec.scrollWidth, sec.clientWidth, box.scrollWidth, box.clientWidth]; }""")
    section_scroll, section_width, box_scroll, box_width = sizes
    assert section_scroll <= section_width  # nothing runs past the card
    assert box_scroll > box_width  # the 12 bars scroll inside it
