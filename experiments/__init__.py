"""Reproducible experiments, one command each:

    python -m experiments NAME [--quick] [--corpus DIR] [--out docs/experiments]
    python -m experiments report [--out docs/experiments]

NAME is one of `EXPERIMENTS`. Each writes NAME.json (settings, numbers, the command, machine and
date), NAME.md (a table and its findings) and NAME_*.png into --out; `report` gathers whatever
results exist into docs/experiments.md. `--quick` runs a tiny setting in seconds (the tests use
it); the full setting is sized to take at most ~25 minutes on a 2-core CPU.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# name -> module; each module has run(ctx) -> result and render(result, figures) -> lines.
EXPERIMENTS = {
    "tf": "experiments.tf",
    "masking": "experiments.masking",
    "aux": "experiments.auxiliary",
    "sampling": "experiments.sampling",
    "structure": "experiments.structure",
    "reach": "experiments.reach",
    "finetune": "experiments.finetune",
}


def experiment(name: str) -> ModuleType:
    """The module of experiment `name`."""
    return importlib.import_module(EXPERIMENTS[name])
