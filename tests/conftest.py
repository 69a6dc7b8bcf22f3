"""Shared test fixtures. Others may append fixtures below."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

FOLK_LIMIT = 40  # the first tunes of the export order: they cover all four meters and pickups


@pytest.fixture(scope="session")
def folk_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny export of the bundled folk corpus (`tvae corpus --limit 40`), made once."""
    from tvae.data.corpus import export_corpus

    out = tmp_path_factory.mktemp("folk") / "corpus"
    export_corpus(out, limit=FOLK_LIMIT, workers=2, progress=False)
    return out


@pytest.fixture(scope="module")
def torch_one_thread() -> Iterator[None]:
    """Tiny models run fastest on one torch thread, and do not fight parallel runs for cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
