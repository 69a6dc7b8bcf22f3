"""Fetch the JavaScript that tvae's HTML pages load, from npm, into tvae/render/static/.

The pages play and draw MIDI offline with html-midi-player, which needs Tone.js and Magenta.js's
core bundle. This script downloads the three pinned npm tarballs, checks each against the
registry's published sha512 integrity, copies the needed files out unchanged together with each
package's licence text, and writes ASSETS.md (package, version, file, sha256, licence). It is a
one-off setup step; the fetched files are committed, and nothing downloads when a page is made.

Run:  python scripts/fetch_player_assets.py
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REGISTRY = "https://registry.npmjs.org"
STATIC = Path(__file__).resolve().parent.parent / "tvae" / "render" / "static"
LICENCE_NAMES = ("LICENSE", "LICENSE.md", "LICENSE.txt", "LICENCE", "license", "license.md")
# For a tarball without a licence file: the standard text of the licence its package.json names,
# from Debian's common-licenses, checked against the sha256 of the canonical text.
STANDARD_LICENCES = {
    "Apache-2.0": (
        Path("/usr/share/common-licenses/Apache-2.0"),
        "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30",
    ),
}


@dataclass(frozen=True)
class Asset:
    """One file taken from one npm package."""

    package: str  # npm name, possibly scoped ("@magenta/music")
    version: str
    member: str  # path inside the package ("dist/midi-player.min.js")
    target: str  # file name in tvae/render/static/
    licence_target: str  # file name for the package's licence text


ASSETS: tuple[Asset, ...] = (
    Asset("tone", "14.7.58", "build/Tone.js", "Tone.js", "LICENSE.tone.txt"),
    Asset("@magenta/music", "1.23.1", "es6/core.js", "core.js", "LICENSE.magenta-music.txt"),
    Asset(
        "html-midi-player", "1.6.0", "dist/midi-player.min.js", "midi-player.min.js",
        "LICENSE.html-midi-player.txt",
    ),
)


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=120) as response:  # noqa: S310 (fixed https URL)
        return response.read()


def fetch_tarball(package: str, version: str) -> tuple[bytes, dict]:
    """The package's tarball and its package.json metadata, checked against the registry's hash."""
    meta = json.loads(_get(f"{REGISTRY}/{package}/{version}"))
    data = _get(meta["dist"]["tarball"])
    algo, _, digest = meta["dist"]["integrity"].partition("-")
    if algo != "sha512" or hashlib.sha512(data).digest() != base64.b64decode(digest):
        raise SystemExit(f"{package}@{version}: tarball does not match the registry's integrity")
    return data, meta


def read_members(data: bytes, names: list[str]) -> dict[str, bytes]:
    """The contents of `names` (paths under the tarball's `package/` folder) that exist."""
    found: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for info in tar.getmembers():
            name = info.name.split("/", 1)[-1]
            if info.isfile() and name in names and name not in found:
                handle = tar.extractfile(info)
                if handle is not None:
                    found[name] = handle.read()
    return found


def write_if_changed(path: Path, data: bytes) -> None:
    if not path.exists() or path.read_bytes() != data:
        path.write_bytes(data)


def standard_licence(spdx: str, what: str) -> bytes:
    """The canonical text of licence `spdx`, for a package that ships no licence file."""
    if spdx not in STANDARD_LICENCES:
        raise SystemExit(f"{what} ships no licence file and {spdx!r} has no known standard text")
    path, sha256 = STANDARD_LICENCES[spdx]
    text = path.read_bytes() if path.is_file() else b""
    if hashlib.sha256(text).hexdigest() != sha256:
        raise SystemExit(f"{what}: need the canonical {spdx} text at {path}")
    return text


def fetch_asset(asset: Asset) -> dict[str, str]:
    """Download one package, write its file and licence; return a row for ASSETS.md."""
    data, meta = fetch_tarball(asset.package, asset.version)
    members = read_members(data, [asset.member, *LICENCE_NAMES])
    if asset.member not in members:
        raise SystemExit(f"{asset.package}@{asset.version} has no {asset.member}")
    licence = str(meta.get("license", ""))
    licence_file = next((n for n in LICENCE_NAMES if n in members), None)
    if licence_file is not None:
        licence_text, source = members[licence_file], f"the package's {licence_file}"
    else:
        licence_text = standard_licence(licence, f"{asset.package}@{asset.version}")
        source = f"standard {licence} text: the tarball has none; its package.json says {licence}"
    write_if_changed(STATIC / asset.target, members[asset.member])
    write_if_changed(STATIC / asset.licence_target, licence_text)
    return {
        "package": asset.package,
        "version": asset.version,
        "member": asset.member,
        "target": asset.target,
        "sha256": hashlib.sha256(members[asset.member]).hexdigest(),
        "licence": licence,
        "licence_file": f"`{asset.licence_target}` ({source})",
    }


NOTES = """
## How the page loads them

Each page loads, with plain `<script>` tags and relative paths from its `assets/` folder, in this
order: `Tone.js`, `core.js`, `midi-player.min.js`. The order is html-midi-player's documented one:
Tone.js and Magenta's core bundle must come before the player.

- `Tone.js` (tone's `build/Tone.js`) is a UMD bundle; as a plain script it defines `window.Tone`.
- `core.js` (@magenta/music's `es6/core.js`) is Magenta.js's single-file webpack bundle of the
  `core` module: despite the folder name it is a classic UMD script, not an ES module, so a plain
  `<script>` tag works. It defines `window.core` and takes the globals `Tone` and `tf` as
  externals; TensorFlow.js is not loaded, and nothing the player uses (MIDI parsing, `Player`,
  the staff and piano-roll visualizers) touches it. This is the bundle html-midi-player's README
  names, both in its CDN snippet and for use from npm (`node_modules/@magenta/music/es6/core.js`).
- `midi-player.min.js` (html-midi-player's `dist/` bundle) is a UMD bundle that, as a plain
  script, takes `window.core` and defines the `<midi-player>` and `<midi-visualizer>` elements.
  (The 1.6.0 tarball's file carries a banner saying 1.5.0; it is the file the 1.6.0 package
  ships, unchanged.)

`tests/test_browser.py` checks, in Debian's chromium from `file://`, that these three files
draw every note, start playback on a click, log no errors and request nothing off the machine.

Pages never set the player's `sound-font` attribute, which would download samples from the
internet; without it the player plays with Magenta's built-in oscillator synth, fully offline.
The optional focus-visible polyfill that the README mentions only affects focus styling and is
not shipped.

Regenerate with `python scripts/fetch_player_assets.py`.
"""


def write_manifest(rows: list[dict[str, str]]) -> None:
    lines = [
        "# Third-party player assets",
        "",
        "Shipped unchanged from the npm registry by `scripts/fetch_player_assets.py`, each with",
        "its package's own licence text. Tarballs are checked against the registry's sha512.",
        "",
        "| Package | Version | File in package | File here | sha256 | Licence | Licence text |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['package']} | {r['version']} | `{r['member']}` | `{r['target']}` | "
            f"`{r['sha256']}` | {r['licence']} | {r['licence_file']} |"
        )
    text = "\n".join(lines) + "\n" + NOTES
    write_if_changed(STATIC / "ASSETS.md", text.encode())


def main() -> None:
    STATIC.mkdir(parents=True, exist_ok=True)
    rows = [fetch_asset(asset) for asset in ASSETS]
    write_manifest(rows)
    for row in rows:
        print(f"{row['package']}@{row['version']}: {row['target']} sha256 {row['sha256'][:16]}...")


if __name__ == "__main__":
    main()
