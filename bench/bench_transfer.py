"""`tvae transfer` end to end: process start to files written, and where the time goes.

    python -m bench.bench_transfer [--repeats 5]

Measures, each in a fresh process: the whole `tvae transfer data/mary.mid data/jingle.mid`;
`import tvae.cli` (what `tvae --help` pays); importing torch; and loading the bundled model.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.machine import describe_machine

ROOT = Path(__file__).resolve().parents[1]
SNIPPETS = {
    "import tvae.cli": "import tvae.cli",
    "import torch": "import torch",
    "import + load bundled model": "import tvae.inference as i; i.load_model()",
}


def _time(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {describe_machine()}")
    baseline = statistics.median(_time([sys.executable, "-c", "pass"])
                                 for _ in range(args.repeats))
    print(f"{'python start-up':34s} {baseline:6.2f} s")
    for label, code in SNIPPETS.items():
        t = statistics.median(_time([sys.executable, "-c", code]) for _ in range(args.repeats))
        print(f"{label:34s} {t:6.2f} s")
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "tvae", "transfer", "data/mary.mid", "data/jingle.mid",
               "-o", out]
        t = statistics.median(_time(cmd) for _ in range(args.repeats))
    print(f"{'tvae transfer (end to end)':34s} {t:6.2f} s")


if __name__ == "__main__":
    main()
