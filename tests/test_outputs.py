"""Pages say only what is true of them: the transfer caption (outlined bars) only where bars are
outlined, and a transfer output's copy marks come from the latents it was decoded from."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.paths import DATA
from tvae.inference import load_model
from tvae.midi import read_melody
from tvae.outputs import Item, transfer_items, write_results

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_only_pages_with_outlined_bars_explain_them(tiny_ckpt: Path, tmp_path: Path) -> None:
    model = load_model(tiny_ckpt)
    mary = read_melody(DATA / "mary.mid")
    write_results(model, tmp_path, [Item("Sample", "s", model.sample(4, seed=0))], "samples",
                  "samples.html")
    write_results(model, tmp_path, [Item("Output", "o", mary, highlight=(0,))], "transfer",
                  "transfer.html")
    assert "Outlined bars" not in (tmp_path / "samples.html").read_text()
    assert "Outlined bars are the transferred ones" in (tmp_path / "transfer.html").read_text()


def test_transfer_output_shows_the_copy_choices_of_its_latents(tiny_ckpt: Path) -> None:
    model = load_model(tiny_ckpt)
    mary, jingle = read_melody(DATA / "mary.mid"), read_melody(DATA / "jingle.mid")
    items = transfer_items(model, mary, jingle, "mary", "jingle", [0])
    out = items[-1]
    z, _ = model.transfer_posterior(mary, jingle, [0])
    assert out.posterior is not None and (out.posterior[0] == z).all()
    assert out.melody == model.transfer(mary, jingle, [0])


def test_a_transfer_page_encodes_each_song_once(tiny_ckpt: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Inputs, reconstructions and output all come from one encoding of A and one of B, and
    each item's KL and copy marks are those of the latents it was decoded from."""
    model = load_model(tiny_ckpt)
    mary, jingle = read_melody(DATA / "mary.mid"), read_melody(DATA / "jingle.mid")
    expected = [model.reconstruct(mary), model.reconstruct(jingle)]
    calls = []
    original = model._encode_chunked

    def counted(melody: object) -> object:
        calls.append(melody)
        return original(melody)

    monkeypatch.setattr(model, "_encode_chunked", counted)
    items = transfer_items(model, mary, jingle, "mary", "jingle", [0])
    write_results(model, tmp_path, items, "t", "page.html")
    assert len(calls) == 2
    assert [it.melody for it in items[2:4]] == expected  # the same reconstructions as before
    assert all(it.posterior is not None for it in items)
    assert (items[2].posterior[0] == items[0].posterior[0]).all()
