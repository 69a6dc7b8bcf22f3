"""`python -m experiments report`: docs/experiments.md from whatever results exist.

Each NAME.json in the results folder is rendered again by its experiment's `render`, with figure
paths relative to the report; experiments without results are listed with the command that
makes them.
"""

from __future__ import annotations

import json
from pathlib import Path

from experiments import EXPERIMENTS, experiment
from experiments.common import section
from tvae.errors import TvaeError

INTRO = """# Experiments

Each experiment is one command, `python -m experiments NAME [--quick] [--corpus DIR]
[--out docs/experiments]`, run from the repository root on the exported folk corpus
(`tvae corpus corpus`). It trains its models (into `runs/experiments/`; a rerun reuses finished
runs), evaluates them and writes `docs/experiments/NAME.json`, `NAME.md` and `NAME_*.png`. The full
setting is sized for a 2-core CPU (at most about 25 minutes each, one torch thread, so two
experiments can share the machine); `--quick` checks the pipeline in seconds and is what the
tests run. This page is rebuilt by `python -m experiments report`.

Eight studies run by their own commands, written beside their numbers, follow the experiments:
far repeats (`experiments/far_objective.py`, files in `experiments/far_objective/`), the learned
prior (`tvae prior`, `bench/bench_samples.py`, `experiments/joint_prior.py`, files in
`experiments/prior/`), near-repeats read as edits (`tvae train --init-from ... --encoder-edits`,
files in `experiments/edits/`), short runs (`tvae train --max-minutes 12`, files in
`experiments/short_runs/`), scheduled sampling on the bundled model (`tvae train --init-from
... --tf-p 0.8`, files in `experiments/free_running/`), a repeat's KL weighed more (`tvae
train --init-from ... --repeat-beta 2`, files in `experiments/repeat_beta/`), the defaults
in one stage (`tvae train corpus`, files in `experiments/one_stage/`) and a pickup's lead-in
(`scripts/fit_lead_in.py`, `tvae train --init-from ... --lead-in`, files in
`experiments/lead_in/`).
"""


# folders with a hand-written README.md, appended
STUDIES = ("far_objective", "prior", "edits", "short_runs", "free_running", "repeat_beta",
           "one_stage", "lead_in", "transfer_edits")


def study_section(folder: Path) -> list[str]:
    """A study's README.md as a section of the report: headings one level down, and links to
    its files made relative to the report."""
    text = (folder / "README.md").read_text()
    lines = []
    for line in text.splitlines():
        if line.startswith("#"):
            line = "#" + line
        lines.append(line)
    return ["\n".join(lines).rstrip("\n"), ""]


def write_report(out: Path) -> Path:
    """Write OUT.md (docs/experiments.md for docs/experiments) beside the results folder."""
    out = Path(out)
    if not out.is_dir():
        raise TvaeError("no results folder; run an experiment first", out)
    lines = [INTRO]
    missing = []
    for name in EXPERIMENTS:
        path = out / f"{name}.json"
        if not path.exists():
            missing.append(name)
            continue
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise TvaeError(f"cannot read result: {exc}", path) from None
        lines += section(result, experiment(name).render, figures=f"{out.name}/", level=2)
    for name in STUDIES:
        if (out / name / "README.md").is_file():
            lines += study_section(out / name)
    if missing:
        lines += ["## Not run yet", ""] + [f"- `{name}`: `python -m experiments {name}`"
                                           for name in missing] + [""]
    report = out.parent / f"{out.name}.md"
    report.write_text("\n".join(lines).rstrip("\n") + "\n")
    return report
