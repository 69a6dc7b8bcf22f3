"""The cost of long inputs: `tvae reconstruct --html` and `tvae decode` at up to MAX_BARS bars.

    python -m bench.bench_long [--bars 512 4096] [--threads 1]

Each run is a fresh `python -m tvae` process; prints its wall time and peak resident memory.
The input is about the smallest file that long: one note in the first bar and one in the last
(47 bytes), so the cost is the model's, not the reader's. Issue #13 measured 31 s and 1.4 GB for
4,091 bars before encoding and the copy sources were chunked.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.machine import describe_machine

ROOT = Path(__file__).resolve().parents[1]
TPQ = 480


def long_midi(n_bars: int) -> bytes:
    """A 4/4 file at TPQ whose two quarter notes open the first and the last of `n_bars` bars."""
    def vlq(value: int) -> bytes:
        out = [value & 0x7F]
        while value := value >> 7:
            out.append(0x80 | (value & 0x7F))
        return bytes(reversed(out))

    gap = TPQ * 4 * (n_bars - 1) - TPQ
    events = (b"\x00\x90\x3c\x5a" + vlq(TPQ) + b"\x80\x3c\x00" + vlq(gap) + b"\x90\x3e\x5a"
              + vlq(TPQ) + b"\x80\x3e\x00" + b"\x00\xff\x2f\x00")
    header = b"MThd" + (6).to_bytes(4, "big") + bytes([0, 0, 0, 1]) + TPQ.to_bytes(2, "big")
    return header + b"MTrk" + len(events).to_bytes(4, "big") + events


def measure(args: list[str], threads: int) -> tuple[float, float]:
    """Wall seconds and peak resident MiB of `python -m tvae ARGS` in its own process."""
    code = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
            "capture_output=True); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, sys.executable, "-m", "tvae", *args],
                         check=True, capture_output=True, text=True, cwd=ROOT, env=env)
    return time.perf_counter() - start, int(out.stdout) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bars", type=int, nargs="+", default=[512, 4096])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    print(f"machine: {describe_machine()}; {args.threads} torch thread(s) per run")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.bars:
            midi = Path(tmp) / f"long{n}.mid"
            midi.write_bytes(long_midi(n))
            seconds, mib = measure(["reconstruct", str(midi), "-o", tmp, "--html"], args.threads)
            print(f"reconstruct --html, {n} bars ({midi.stat().st_size} bytes): "
                  f"{seconds:.1f} s, {mib:.0f} MiB peak")
            latents = Path(tmp) / f"z{n}.npy"
            np.save(latents, np.random.default_rng(0).standard_normal((n, 64)).astype(np.float32))
            seconds, mib = measure(["decode", str(latents), "-o", str(Path(tmp) / "z.mid")],
                                   args.threads)
            print(f"decode, {n} bars of latents: {seconds:.1f} s, {mib:.0f} MiB peak")


if __name__ == "__main__":
    main()
