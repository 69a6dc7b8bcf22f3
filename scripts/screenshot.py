"""Screenshot an HTML page with Debian's chromium (for the README's picture).

    python scripts/screenshot.py demos/mary_x_jingle.html docs/transfer_page.png

Waits until every visualizer has drawn, then captures the top of the page.
"""

from __future__ import annotations

import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def main(page_path: str, png: str, height: int = 1100) -> None:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 1000, "height": height})
        page.goto(Path(page_path).resolve().as_uri())
        page.wait_for_function(
            "[...document.querySelectorAll('midi-visualizer')].every(v => v.querySelector('svg'))",
            timeout=30000)
        Path(png).parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=png)
        browser.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
