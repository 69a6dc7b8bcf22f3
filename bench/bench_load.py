"""Time loading a MIDI folder: a cold load (reading every file) and a warm load (the cache).

    python -m bench.bench_load CORPUS_DIR [--workers K]

Prints the machine, both load times, the songs, bars and 8-bar windows loaded, and the peak
memory of this process and of its worker processes. The cold load uses a fresh temporary cache
folder, so the user's cache is neither used nor changed.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from bench.machine import describe_machine
from tvae.config import DataConfig
from tvae.data.dataset import format_skipped, load_folder
from tvae.data.windows import Windows


def peak_mib(who: int) -> float:
    """Peak resident memory in MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(who).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus_dir", help="a MIDI folder or an exported corpus")
    parser.add_argument("--workers", type=int, default=None, help="reader processes "
                        "(default: all cores)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tvae-bench-cache-") as cache:
        t0 = time.perf_counter()
        songs, skipped = load_folder(args.corpus_dir, workers=args.workers, cache_dir=cache,
                                     progress=False)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        warm_songs, _ = load_folder(args.corpus_dir, workers=args.workers, cache_dir=cache,
                                    progress=False)
        warm = time.perf_counter() - t0
        cache_mib = sum(p.stat().st_size for p in Path(cache).rglob("*") if p.is_file()) / 2**20
    assert warm_songs.n_songs == songs.n_songs
    data = DataConfig()
    windows = {split: len(Windows(songs, split, data)) for split in ("train", "valid", "test")}
    memory = (f"peak memory: {peak_mib(resource.RUSAGE_SELF):.0f} MiB (this process), "
              f"{peak_mib(resource.RUSAGE_CHILDREN):.0f} MiB (largest worker)")
    print(f"machine: {describe_machine()}")  # after measuring: it may import torch
    print(f"cold load (no cache): {cold:.2f} s")
    print(f"warm load (cache):    {warm:.2f} s  (cache {cache_mib:.1f} MiB on disk)")
    print(f"songs: {songs.n_songs}, bars: {int(songs.offsets[-1])}, {format_skipped(skipped)}")
    print(f"{data.bars}-bar windows (stride {data.stride}): {sum(windows.values())} "
          f"(train {windows['train']}, valid {windows['valid']}, test {windows['test']})")
    print(memory)

if __name__ == "__main__":
    main()
