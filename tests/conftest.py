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


@pytest.fixture
def no_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to unpickle during the test fails it."""
    import pickle

    import torch

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("tvae tried to unpickle")

    class RefusingUnpickler(pickle.Unpickler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            refuse()

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "Unpickler", RefusingUnpickler)
    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(torch.serialization, "load", refuse)


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    """A saved tiny checkpoint; returns its JSON path."""
    from checkpoint_helpers import tiny

    from tvae.config import DataConfig, TrainConfig
    from tvae.model.checkpoint import save_checkpoint

    return save_checkpoint(tmp_path / "model", tiny(), data=DataConfig(bars=4),
                           train=TrainConfig(lr=3e-4), state={"step": 7, "epoch": 1},
                           labels=["a", "b"])


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded tiny untrained checkpoint (latent size 8, copy path per bar); its JSON path."""
    import torch

    from tests.tiny import TINY_MODEL
    from tvae.model.checkpoint import save_checkpoint
    from tvae.model.vae import TransformerVAE

    torch.manual_seed(0)
    model = TransformerVAE(TINY_MODEL)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", model)


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The caches tests fill go to a temporary folder, never the user's ~/.cache/tvae (child
    processes inherit it)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TVAE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield
