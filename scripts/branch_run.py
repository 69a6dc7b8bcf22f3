"""Try another last stage on a run without training its first part again.

    python scripts/branch_run.py RUN NEW repeat_beta=3 [repeat_beta_from=0.9 ...]

A run with a last stage (--repeat-beta other than 1 from --repeat-beta-from on) keeps its
checkpoint at the stage's first step as RUN/before_late.json. This copies RUN to NEW with that
checkpoint as NEW's last one, sets the given training options in NEW/config.json, and prints the
`tvae train --resume` command that trains NEW's last stage. Up to that step NEW is RUN, step for
step (the options change nothing before it; its metrics rows past it are dropped on resume), so
the two runs differ in the last stage only.

Only the loss's weights may change (`repeat_beta`, `repeat_beta_from` no earlier than RUN's,
`source_weight`, `edit_weight`, `pointer_weight`, `pointer_cap`): the other options set the
schedules, limits and data that the steps before the branch were planned and taken under.
Exit code 2 with one line on a bad request.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from tvae.config import TrainConfig, config_from_dict
from tvae.errors import TvaeError

LATE_OPTIONS = ("repeat_beta", "repeat_beta_from", "source_weight", "edit_weight",
                "pointer_weight", "pointer_cap")
BRANCH = "before_late"


def branch(run: Path, new: Path, changes: dict[str, float]) -> str:
    """Make NEW from RUN's branch point with `changes`; returns the command that resumes it."""
    point = run / f"{BRANCH}.json"
    if not point.is_file():
        raise TvaeError(f"{point} not found: the run has no last stage (--repeat-beta 1) or has "
                        "not reached it")
    if new.exists():
        raise TvaeError(f"{new} exists: choose a new folder")
    for name in changes:
        if name not in LATE_OPTIONS:
            raise TvaeError(f"{name} cannot change at the branch point (only "
                            f"{', '.join(LATE_OPTIONS)})")
    config = json.loads((run / "config.json").read_text())
    old = config_from_dict(TrainConfig, config["train"])
    train = config_from_dict(TrainConfig, {**config["train"], **changes})  # checks the values
    if train.repeat_beta_from < old.repeat_beta_from:
        raise TvaeError(f"repeat_beta_from {train.repeat_beta_from} would start the last stage "
                        f"before the branch point ({old.repeat_beta_from} of the run)")
    step = json.loads(point.read_text())["state"]["step"]
    shutil.copytree(run, new, ignore=shutil.ignore_patterns(".lock", "last.*", "plots"))
    for suffix in (".json", ".safetensors"):
        shutil.copyfile(run / f"{BRANCH}{suffix}", new / f"last{suffix}")
    best = new / "best.json"
    if best.is_file() and json.loads(best.read_text())["state"]["step"] > step:
        for suffix in (".json", ".safetensors"):  # a best checkpoint from past the branch
            (new / f"best{suffix}").unlink()
    config["train"] = {**config["train"], **changes}
    (new / "config.json").write_text(json.dumps(config, indent=2))
    return f"tvae train {config.get('data_dir') or 'DATA'} --out {new} --resume"


def _value(text: str) -> tuple[str, float]:
    name, _, value = text.partition("=")
    try:
        return name.replace("-", "_"), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=NUMBER") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("changes", nargs="+", type=_value, metavar="NAME=VALUE")
    args = parser.parse_args()
    try:
        command = branch(args.run, args.new, dict(args.changes))
    except TvaeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"{args.new}: {args.run} at its last stage's start; train its last stage with\n"
          f"  {command}")


if __name__ == "__main__":
    main()
