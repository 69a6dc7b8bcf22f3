"""The bundled model's transfers into songs whose repeat of bar 1 is varied (one note a semitone
higher, as the demo's edited-repeat page makes it): the varied bar becomes the new bar 1 with
B's change. Transfers locate each copy's edits from B's own decoding; the bundled model reads a
repeat as its edits (the edit model), so its latents alone mark B's change too (the previous
bundled model, without the edit model, lost it that way)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.paths import DATA
from tvae.demo import vary_first_repeat
from tvae.inference import load_model
from tvae.midi import read_melody

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.mark.parametrize("a_name, b_name", [("jingle", "ode"), ("jingle", "twinkle")])
def test_an_edited_repeat_becomes_as_bar_1_with_bs_change(a_name: str, b_name: str) -> None:
    model = load_model()
    a = read_melody(DATA / f"{a_name}.mid")
    varied = vary_first_repeat(model, read_melody(DATA / f"{b_name}.mid"))
    assert varied is not None
    b, j = varied
    truth = model.bars(b).tokens
    changed = truth[j] != truth[0]  # (S,) the steps B changed
    assert 1 <= changed.sum() <= 2
    post_b = model.posterior(b)
    z, _ = model.transfer_posterior(a, b, [0], (model.posterior(a), post_b))

    def follows(out: np.ndarray) -> bool:
        return (np.array_equal(out[j][~changed], out[0][~changed])  # the new bar 1 ...
                and np.array_equal(out[j][changed], truth[j][changed]))  # ... with B's change

    out = model.bars(model.transfer(a, b)).tokens
    assert not np.array_equal(out[0], truth[0])  # bar 1 is A's now
    assert follows(out)
    alone = model.bars(model.decode(z, b.meter, b.qpm, pickup=b.pickup, lead_in=False)).tokens
    assert follows(alone)


def test_edits_from_must_match_the_latents() -> None:
    from tvae.errors import TvaeError

    model = load_model()
    z = model.encode(read_melody(DATA / "mary.mid"))
    with pytest.raises(TvaeError, match="edits_from must have the latents' shape"):
        model.decode(z, lead_in=False, edits_from=z[:-1])
