"""Reproducible experiments, one command each:

    python -m bench.experiments NAME [--quick] [--corpus DIR] [--out docs/experiments]
    python -m bench.experiments report [--out docs/experiments]

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
    "tf": "bench.experiments.tf",
    "masking": "bench.experiments.masking",
    "aux": "bench.experiments.auxiliary",
    "sampling": "bench.experiments.sampling",
    "structure": "bench.experiments.structure",
}


def experiment(name: str) -> ModuleType:
    """The module of experiment `name`."""
    return importlib.import_module(EXPERIMENTS[name])
