"""Shared test fixtures. Others may append fixtures below."""

from __future__ import annotations

from pathlib import Path

import pytest

FOLK_LIMIT = 40  # the first tunes of the export order: they cover all four meters and pickups


@pytest.fixture(scope="session")
def folk_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny export of the bundled folk corpus (`tvae corpus --limit 40`), made once."""
    from tvae.corpus import export_corpus

    out = tmp_path_factory.mktemp("folk") / "corpus"
    export_corpus(out, limit=FOLK_LIMIT, workers=2, progress=False)
    return out
