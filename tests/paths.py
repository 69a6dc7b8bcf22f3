"""Where the repository and its example melodies are, for tests in any folder under tests/."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
