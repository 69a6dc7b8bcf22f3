"""How `tvae prepare` and training start-up grow with the corpus: 1x, 10x (and 100x) the folk
corpus, made by repeating it with transpositions.

    python -m bench.bench_scale CORPUS_DIR WORK_DIR [--scales 1 10 100] [--workers 2] [--midi]

WORK_DIR/c<j>/ holds copy j of the corpus (copy 0 as is, the others transposed), written
once and reused; WORK_DIR/manifest-x<k>.csv lists the first k copies with the corpus' splits
and labels. For each scale the script prepares the manifest into WORK_DIR/prepared-x<k> (once,
in a fresh process) and prints files per second, peak memory and bytes per bar, then times
training start-up: a fresh `python -m bench.bench_scale --startup` process that imports tvae,
loads the prepared shards, builds the windows and the default model, and stops at its first
optimizer step (best of --repeats; the imports and the rest are also shown apart). The last
table gives each number at every scale relative to 1x. With --midi, start-up is also timed
from the MIDI files themselves (load_folder's warm cache), for comparison.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.machine import describe_machine

SHIFTS = (0, 2, -3, 5, -1, 4, -5, 1, -2, 3, -4, 6)  # transposition of copy j (cycled)


def _write_copies(job: tuple[str, str, str, int]) -> int:
    """Write copies 1..n-1 of one corpus file, transposed, where missing; files written."""
    from tvae.midi import read_midi, write_melody

    corpus, rel, work, copies = job
    melody, _ = read_midi(Path(corpus) / rel)
    low, high = min(n.pitch for n in melody.notes), max(n.pitch for n in melody.notes)
    written = 0
    for j in range(1, copies):
        target = Path(work) / f"c{j}" / rel
        if target.exists():
            continue
        shift = max(48 - low, min(96 - high, SHIFTS[j % len(SHIFTS)]))  # stay in the vocabulary
        write_melody(melody.transpose(shift), target)
        written += 1
    return written


def make_scaled(corpus: Path, work: Path, scale: int, workers: int) -> Path:
    """WORK_DIR/manifest-x<scale>.csv over copies 0..scale-1 (copies written once)."""
    from multiprocessing import Pool

    manifest = work / f"manifest-x{scale}.csv"
    if manifest.exists():
        return manifest
    with open(corpus / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not (work / "c0").exists():
        (work / "c0").symlink_to(corpus.resolve(), target_is_directory=True)
    started = time.perf_counter()
    jobs = [(str(corpus), r["path"], str(work), scale) for r in rows]
    with Pool(workers) as pool:
        written = sum(pool.imap_unordered(_write_copies, jobs, chunksize=64))
    print(f"x{scale}: wrote {written} transposed files in {time.perf_counter() - started:.0f} s",
          flush=True)
    tmp = manifest.with_suffix(".tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["path", "split", "collection", "copy"])
        writer.writeheader()
        for j in range(scale):
            for r in rows:
                writer.writerow({"path": f"c{j}/{r['path']}", "split": r["split"],
                                 "collection": r["collection"], "copy": j})
    os.replace(tmp, manifest)
    return manifest


def peak_mib() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited from the
    process that started it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def prepare_scale(manifest: Path, out: Path, workers: int) -> dict[str, Any]:
    """Prepare (once, in a fresh process) and report the time, files per second, the peak
    memory of the writing process (not its readers) and bytes per bar."""
    shard = out / "shard-0-of-1"
    timing = out / "timing.json"
    if not timing.exists():
        shutil.rmtree(out, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "bench.bench_scale", "--prepare", str(manifest),
                        str(out), str(workers)], check=True)
    info = json.loads((shard / "prepared.json").read_text())
    measured = json.loads(timing.read_text())
    total = folder_bytes(shard)
    return {"files": info["files"], "songs": info["songs"], "bars": info["bars"],
            "prepare_s": measured["seconds"], "files_per_s": info["files"] / measured["seconds"],
            "prepare_peak_mib": measured["peak_mib"],
            "bytes_per_bar": total / max(info["bars"], 1),
            "token_bytes_per_bar": (shard / "tokens.npy").stat().st_size / max(info["bars"], 1),
            "folder_mib": total / 2**20}


def prepare_child(manifest: str, out: str, workers: str) -> None:
    """In a fresh process: prepare `manifest` into `out` and write out/timing.json."""
    from tvae.data.prepare import prepare_folder

    started = time.perf_counter()
    prepare_folder(manifest, out, workers=int(workers), progress=False)
    seconds = time.perf_counter() - started
    Path(out, "timing.json").write_text(json.dumps({"seconds": seconds, "peak_mib": peak_mib()}))


def startup(data: str, repeats: int, warm_up: bool = False) -> dict[str, float]:
    """Best of `repeats` fresh processes: seconds from process start to the first step, and
    that process's peak memory (after one untimed run when `warm_up`: filling a cache)."""
    best: dict[str, float] = {}
    for _ in range(repeats + warm_up):
        with tempfile.TemporaryDirectory(prefix="tvae-startup-") as tmp:
            report = Path(tmp) / "report.json"
            started = time.time()
            subprocess.run([sys.executable, "-m", "bench.bench_scale", "--startup", data,
                            tmp, str(report)], check=True)
            result = json.loads(report.read_text())
        seconds = result["first_step_at"] - started
        if warm_up:
            warm_up = False
            continue
        if not best or seconds < best["startup_s"]:
            best = {"startup_s": seconds, "startup_imports_s": result["imported_at"] - started,
                    "startup_load_s": result["first_step_at"] - result["imported_at"],
                    "startup_peak_mib": result["peak_mib"], "windows": result["windows"]}
    return best


def startup_child(data: str, run: str, report: str) -> None:
    """In a fresh process: train on `data` until the first step starts, then report."""
    import torch

    from tvae.config import TrainConfig
    from tvae.training.run import train
    from tvae.training.trainer import Trainer

    imported_at = time.time()

    def first_step(self: Trainer, *args: Any) -> None:
        peak = peak_mib()
        Path(report).write_text(json.dumps({"first_step_at": time.time(), "peak_mib": peak,
                                            "imported_at": imported_at,
                                            "windows": len(self.train_windows)}))
        os._exit(0)

    Trainer.step = first_step  # type: ignore[method-assign]
    torch.set_num_threads(1)
    train(data, Path(run) / "run", train_config=TrainConfig(num_threads=1, device="cpu"),
          progress=False)


def print_table(results: dict[int, dict[str, Any]]) -> None:
    keys = ["files", "bars", "prepare_s", "files_per_s", "prepare_peak_mib", "bytes_per_bar",
            "token_bytes_per_bar", "folder_mib", "windows", "startup_s", "startup_imports_s",
            "startup_load_s", "startup_peak_mib", "midi_startup_s", "midi_startup_peak_mib"]
    scales = sorted(results)
    print(f"{'':22s}" + "".join(f"{f'x{k}':>12s}" for k in scales)
          + "".join(f"{f'x{k}/x1':>10s}" for k in scales[1:]))
    for key in keys:
        values = [results[k].get(key, float("nan")) for k in scales]
        cells = "".join(f"{v:12.4g}" for v in values)
        ratios = "".join(f"{v / values[0]:10.3g}" for v in values[1:])
        print(f"{key:22s}{cells}{ratios}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("--startup", "--prepare"):
        (startup_child if sys.argv[1] == "--startup" else prepare_child)(*sys.argv[2:5])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path, help="the exported folk corpus (with manifest.csv)")
    parser.add_argument("work", type=Path, help="where the scaled corpora go (not the repo)")
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--workers", type=int, default=2, help="reader processes")
    parser.add_argument("--repeats", type=int, default=3, help="start-ups timed per scale")
    parser.add_argument("--midi", action="store_true", help="also time start-up from the MIDI "
                        "files (load_folder with a warm cache under WORK_DIR/cache)")
    args = parser.parse_args()
    print(f"machine: {describe_machine()}; load average {os.getloadavg()[0]:.2f}")
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ["TVAE_CACHE_DIR"] = str(args.work / "cache")  # for the start-up processes
    results = {}
    for scale in sorted(args.scales):
        manifest = make_scaled(args.corpus, args.work, scale, args.workers)
        results[scale] = prepare_scale(manifest, args.work / f"prepared-x{scale}", args.workers)
        results[scale].update(startup(str(args.work / f"prepared-x{scale}"), args.repeats))
        if args.midi:  # the same songs from the MIDI files, through load_folder's warm cache
            midi = startup(str(manifest), args.repeats, warm_up=True)
            results[scale].update({"midi_startup_s": midi["startup_s"],
                                   "midi_startup_peak_mib": midi["startup_peak_mib"]})
        print(f"x{scale}: {json.dumps({k: round(v, 3) for k, v in results[scale].items()})}",
              flush=True)
    print_table(results)


if __name__ == "__main__":
    main()
