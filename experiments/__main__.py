"""Command line: `python -m experiments NAME|report [options]` (see the package doc)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from experiments import EXPERIMENTS, experiment
from tvae.errors import TvaeError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments",
                                description=sys.modules["experiments"].__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", choices=[*EXPERIMENTS, "report"],
                   help="the experiment to run, or 'report' to assemble docs/experiments.md")
    p.add_argument("--quick", action="store_true",
                   help="tiny model, a few steps: checks the pipeline in seconds")
    p.add_argument("--corpus", type=Path, default=Path("corpus"),
                   help="exported corpus folder with manifest.csv (default: corpus)")
    p.add_argument("--out", type=Path, default=Path("docs/experiments"),
                   help="results folder (default: docs/experiments); the report goes beside "
                        "it as OUT.md")
    p.add_argument("--runs", type=Path, default=Path("runs/experiments"),
                   help="where training runs go, under quick/ or full/ (default: "
                        "runs/experiments); a rerun reuses finished runs")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"],
                   help="split the models are evaluated on (default: test)")
    p.add_argument("--model", type=Path, default=None,
                   help="sampling: the checkpoint to sample (default: the bundled model; "
                        "with --quick, a tiny model trained on the spot)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default: 1, the fastest on a 2-core machine that "
                        "also runs other work; two experiments can then run side by side)")
    p.add_argument("--shard", default="0/1",
                   help="I/N: train only every N-th run, from run I (experiments that support "
                        "it, e.g. reach), so N processes share the work; then run without "
                        "--shard to evaluate them all and write the report")
    return p


def _shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise TvaeError(f"--shard must be I/N, got {text!r}") from None
    if not 0 <= i < n:
        raise TvaeError(f"--shard I/N needs 0 <= I < N, got {text!r}")
    return i, n


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    try:
        if args.name == "report":
            from experiments.report import write_report

            print(write_report(args.out))
            return 0
        import torch

        from experiments.common import Context

        torch.set_num_threads(max(1, args.threads))
        ctx = Context(name=args.name, quick=args.quick, corpus=args.corpus, out=args.out,
                      runs=args.runs / ("quick" if args.quick else "full") / args.name,
                      split=args.split, model=args.model, threads=max(1, args.threads),
                      command=["python", "-m", "experiments", *argv],
                      shard=_shard(args.shard))
        experiment(args.name).run(ctx)
    except TvaeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
