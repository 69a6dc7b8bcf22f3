"""The diagnostic experiments on trained models: where a near-repeat's bits go
(`experiments.near_cost`) and songs longer than the window (`experiments.long_songs`)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch


def test_near_cost_groups_near_repeats_and_prices_them_as_copies() -> None:
    """X Y X' Y' Z: X' changes one pitch of X (rhythm kept), Y' turns one onset of Y into a
    rest (rhythm changed); both are near-repeats, Z is new. The near-repeats are grouped by what
    changed, their KL is the encoder's, and replacing them by their sources prices the edits."""
    from experiments.near_cost import kl_bits, near_cost
    from tests.model.test_model import random_bars, tiny
    from tvae.config import N_SPECIAL, REST

    model = tiny(copy_offsets=4)
    tokens, meters = random_bars(1, 5, seed=4, meters=torch.zeros(1, 5, dtype=torch.long))
    tokens[tokens > 0] = tokens[tokens > 0].clamp(min=N_SPECIAL)  # every real step an onset
    tokens[0, 2] = tokens[0, 0]
    tokens[0, 2, 1] = N_SPECIAL + (int(tokens[0, 0, 1]) - N_SPECIAL + 3) % 40  # a new pitch
    tokens[0, 3] = tokens[0, 1]
    tokens[0, 3, 2] = REST
    out = near_cost(model, tokens, meters)
    kl = kl_bits(model, tokens, meters)[0]
    assert out["near_bars"] == 2 and out["new_bars"] == 2 and out["repeated_bars"] == 0
    assert out["kl_near"] == pytest.approx(float(kl[2:4].mean()), rel=1e-5)
    assert out["kl_new"] == pytest.approx(float(kl[[1, 4]].mean()), rel=1e-5)
    groups = {(g["steps_changed"], g["pitches_only"]): g["bars"] for g in out["by_change"]}
    assert groups == {(1, True): 1, (1, False): 1, (2, True): 0, (2, False): 0}
    copies = tokens.clone()
    copies[0, 2], copies[0, 3] = tokens[0, 0], tokens[0, 1]
    as_copies = float(kl_bits(model, copies, meters)[0, 2:4].mean())
    assert out["kl_near_as_exact_copies"] == pytest.approx(as_copies, rel=1e-5)
    assert out["kl_of_the_edits"] == pytest.approx(out["kl_near"] - as_copies, rel=1e-5)
    parts = out["kl_parts"]
    assert set(parts) == {"near", "new"}  # no exact repeat in this window
    assert parts["near"]["mean"] + parts["near"]["variance"] == pytest.approx(out["kl_near"],
                                                                              rel=1e-4)
    assert min(parts["new"].values()) >= 0.0


class NearFates(torch.nn.Module):
    """An oracle for `lost_changes`: six 3-bar windows, bar 3 = bar 1 with step 4 changed, each
    window's near-repeat given one fate by its pointer, edit chances and decoding."""

    FATES = ("kept", "generated", "copied from another bar", "not marked",
             "the source's note", "another note")

    def __init__(self, tokens: torch.Tensor) -> None:
        super().__init__()
        from types import SimpleNamespace

        self.config = SimpleNamespace(trained_bars=0)
        self.tokens = tokens

    def encode_windowed(self, tokens, meters, window):  # noqa: ANN001, ANN201
        return torch.zeros(*tokens.shape[:2], 2), torch.zeros(*tokens.shape[:2], 2)

    def pointer_weights(self, z, real):  # noqa: ANN001, ANN201
        B, N = real.shape
        log_pi = torch.full((B, N, 1 + N), -30.0)
        log_pi[:, :, 0] = 0.0  # generate, but for bar 3:
        log_pi[:, 2, 0], log_pi[:, 2, 1] = -30.0, 0.0  # copy bar 1
        log_pi[1, 2, 0], log_pi[1, 2, 1] = 0.0, -30.0  # generated
        log_pi[2, 2, 1], log_pi[2, 2, 2] = -30.0, 0.0  # copies bar 2
        log_eps = torch.full((B, N, self.tokens.shape[-1]), math.log(0.1))
        log_eps[:, 2, 4] = math.log(0.9)  # the change marked
        log_eps[3, 2, 4] = math.log(0.1)  # not marked
        return log_pi.log_softmax(-1), log_eps

    def free_run(self, z, meters, window=0):  # noqa: ANN001, ANN201
        out = self.tokens.clone()
        out[1:5, 2, 4] = out[1:5, 0, 4]  # the source's note
        out[5, 2, 4] = out[5, 0, 4] + 7  # neither
        return out


def test_near_lost_sorts_each_near_repeat_by_what_became_of_its_change() -> None:
    from experiments.near_lost import lost_changes
    from tests.model.test_model import random_bars
    from tvae.config import N_SPECIAL

    tokens, meters = random_bars(6, 3, seed=5, meters=torch.zeros(6, 3, dtype=torch.long))
    tokens[:] = N_SPECIAL + torch.arange(16) % 5  # every step an onset
    tokens[:, 1] += 20  # bar 2 far from bar 1
    tokens[:, 2] = tokens[:, 0]
    tokens[:, 2, 4] += 2  # bar 3: bar 1 with step 4 changed
    out = lost_changes(NearFates(tokens), tokens, meters)
    assert out["near_bars"] == 6
    assert out["counts"] == dict.fromkeys(NearFates.FATES, 1)


def test_near_lost_agrees_with_evaluate_on_a_tiny_model() -> None:
    """On a tiny model, the near-repeats `lost_changes` finds kept are those `tvae evaluate`
    counts in `near_changes_kept`, and every near-repeat falls in one kind."""
    from experiments.near_lost import KINDS, lost_changes
    from tests.model.test_model import random_bars, tiny
    from tvae.config import N_SPECIAL, REST
    from tvae.eval.windows import evaluate_batch

    model = tiny(copy_offsets=4).eval()
    tokens, meters = random_bars(6, 6, seed=5, meters=torch.zeros(6, 6, dtype=torch.long))
    tokens[tokens > 0] = tokens[tokens > 0].clamp(min=N_SPECIAL)
    tokens[:, 2], tokens[:, 4] = tokens[:, 0], tokens[:, 1]
    tokens[:, 2, 1] = N_SPECIAL + (tokens[:, 0, 1] - N_SPECIAL + 3) % 40  # a new pitch
    tokens[:, 4, 2] = REST  # an onset taken out
    out = lost_changes(model, tokens, meters)
    assert set(out["counts"]) == set(KINDS)
    assert out["near_bars"] == sum(out["counts"].values()) == 12
    counts, _ = evaluate_batch(model, tokens, meters)
    assert int(counts["n_near"]) == 12
    assert out["counts"]["kept"] == int(counts["near_change_kept"])


def twinkle_four_times() -> tuple:
    """The bundled model, Twinkle's bars, them played four times (48 bars: tokens and the
    song) and each bar's nearest identical bar up to 32 back (None: none)."""
    from tests.paths import DATA
    from tvae.inference import load_model
    from tvae.melody import Bars, bars_to_melody
    from tvae.midi import read_melody

    model = load_model()
    one = model.bars(read_melody(DATA / "twinkle.mid"))
    tokens = np.concatenate([one.tokens] * 4)  # (48, S)
    song = bars_to_melody(Bars(tokens, one.meter, one.qpm, one.pickup, "long"))
    n = len(model.bars(song).tokens)
    nearest = [max((j for j in range(max(k - 32, 0), k) if np.array_equal(tokens[j], tokens[k])),
                   default=None) for k in range(n)]
    return model, one, tokens, song, nearest


def test_long_songs_scores_each_block_of_window_positions(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """Twinkle played four times (48 bars, past the bundled model's 33-bar window): with a
    reconstruction that returns the song and copy choices at each repeat's nearest identical
    bar, every block is right; a reconstruction that shifts the bars past the window and a
    copy choice of None there are counted as wrong there only."""
    from experiments.long_songs import long_song_scores
    from tvae.melody import Bars, bars_to_melody

    model, one, tokens, song, nearest = twinkle_four_times()
    n = len(nearest)
    monkeypatch.setattr(type(model), "reconstruct", lambda self, m: m)
    monkeypatch.setattr(type(model), "copy_sources", lambda self, m: nearest)
    out = long_song_scores(model, [song])
    first, second = out["blocks"]
    assert (first["positions"], second["positions"]) == ("1-33", "34-66")
    assert first["bars"] == 33 and second["bars"] == n - 33
    for row in out["blocks"]:
        assert row["step_accuracy"] == 1.0 and row["exact_share"] == 1.0
        assert row["copy_accuracy"] == 1.0
    assert second["repeats"] == n - 33  # every bar past the window repeats one 12 bars back
    assert first["repeats"] == sum(s is not None for s in nearest[:33])
    shifted = tokens.copy()
    shifted[33:] = np.where(shifted[33:] >= 3, shifted[33:] + 1, shifted[33:])
    wrong = bars_to_melody(Bars(shifted, one.meter, one.qpm, one.pickup, "wrong"))
    monkeypatch.setattr(type(model), "reconstruct", lambda self, m: wrong)
    monkeypatch.setattr(type(model), "copy_sources", lambda self, m: nearest[:33] + [None] * 15)
    first, second = long_song_scores(model, [song])["blocks"]
    assert first["exact_share"] == 1.0 and first["copy_accuracy"] == 1.0
    assert second["exact_share"] == 0.0 and second["copy_accuracy"] == 0.0
    assert second["step_accuracy"] < 1.0


def test_long_songs_errors_split_made_from_carried(monkeypatch: pytest.MonkeyPatch) -> None:
    """Twinkle played four times, reconstructed right but for one bar past the window: that
    bar's wrong steps are made there (a copy of a bar decoded right), and every later bar that
    copies it, or a copy of it, carries them (a copy of a bar decoded wrong); bars with no
    source are generated."""
    from experiments.long_songs import GENERATED, error_sources
    from tvae.melody import Bars, bars_to_melody

    model, one, tokens, song, nearest = twinkle_four_times()
    n = len(nearest)
    bad = 34
    out = tokens.copy()
    out[bad] = np.where(out[bad] >= 3, out[bad] + 1, out[bad])  # every onset a semitone up
    carriers: list[int] = []  # the bars copying it, or a bar that copies it, ...
    for k in range(bad + 1, n):
        if nearest[k] in [bad, *carriers]:
            carriers.append(k)
            out[k] = out[bad]
    decoded = bars_to_melody(Bars(out, one.meter, one.qpm, one.pickup, "decoded"))
    monkeypatch.setattr(type(model), "reconstruct", lambda self, m: decoded)
    monkeypatch.setattr(type(model), "copy_sources", lambda self, m: nearest)
    result = error_sources(model, [song])
    inside, past = result["ranges"]["1-33"], result["ranges"]["34-"]
    assert inside["step_accuracy"] == 1.0 and inside["carried_share"] == 0.0
    assert inside["bars"] == 33 and past["bars"] == n - 33
    assert inside["kinds"][GENERATED]["bars"] == sum(s is None for s in nearest[:33])
    wrong = int((out[bad] != tokens[bad]).sum())
    assert carriers and wrong > 0
    made = past["kinds"]["copy of a bar decoded right, true bar identical"]
    carried = past["kinds"]["copy of a bar decoded wrong, true bar identical"]
    assert made["wrong"] == wrong and carried["wrong"] == wrong * len(carriers)
    assert carried["bars"] == len(carriers)
    assert past["carried_share"] == pytest.approx(len(carriers) / (1 + len(carriers)))
    assert sum(k["share_of_errors"] for k in past["kinds"].values()) == pytest.approx(1.0)


def test_long_songs_detail_blocks_and_given_bars() -> None:
    """Twinkle played four times: every block of positions is scored; bars given to
    free-running come back as they are, so with all of them given it is right everywhere."""
    from experiments.long_songs import detail_scores
    from tests.paths import DATA
    from tvae.inference import load_model
    from tvae.melody import Bars, bars_to_melody
    from tvae.midi import read_melody

    model = load_model()
    one = model.bars(read_melody(DATA / "twinkle.mid"))
    song = bars_to_melody(Bars(np.concatenate([one.tokens] * 4), one.meter, one.qpm,
                               one.pickup, "long"))
    n = len(model.bars(song).tokens)
    rows = detail_scores(model, [song], block=16, window=33)
    assert [r["positions"] for r in rows] == ["1-16", "17-32", "33-48"][: -(-n // 16)]
    assert sum(r["bars"] for r in rows) == n
    assert "kl_new" in rows[0] and "kl_new" not in rows[-1]  # later bars all repeat bar 1-12
    for r in rows:
        assert 0.0 <= r["free"] <= 1.0 and 0.0 <= r["teacher_forced"] <= 1.0
    given = detail_scores(model, [song], block=16, window=33, given=n)
    assert all(r["free"] == 1.0 for r in given)


def test_joined_songs_are_the_full_bars_of_test_songs_end_to_end(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each joined song is at least as long as asked, in 4/4 without a pickup, and is made of
    whole songs' full bars in order (a short last bar is left out)."""
    import bench.bench_forms
    from experiments.long_songs import joined_songs
    from tests.model.test_model import random_bars
    from tvae.config import PAD
    from tvae.inference import load_model
    from tvae.melody import meter_id

    four = torch.full((1, 7), meter_id((4, 4)))
    a = random_bars(1, 7, seed=1, meters=four)[0][0].numpy()
    b = random_bars(1, 5, seed=2, meters=four[:, :5])[0][0].numpy()
    b[-1, 8:] = PAD  # a short last bar
    monkeypatch.setattr(bench.bench_forms, "phrases",
                        lambda corpus, seed: ([a, b], np.random.default_rng(seed)))
    model = load_model()
    songs = joined_songs("unused", 3, 20)
    assert len(songs) == 3
    for song in songs:
        bars = model.bars(song)
        assert bars.meter == (4, 4) and bars.pickup == 0 and len(bars.tokens) >= 20
        k = 0
        while k < len(bars.tokens):  # every piece is a whole song's full bars
            piece = a if np.array_equal(bars.tokens[k], a[0]) else b[:-1]
            assert np.array_equal(bars.tokens[k:k + len(piece)], piece)
            k += len(piece)


def test_edit_entropy_finds_each_change_and_codes_it_by_its_parts() -> None:
    """X Y X' Y'' : X' moves one pitch of X up 2 semitones, Y'' changes two steps of Y. The
    code finds each near-repeat's source, the changed steps and what they became; a code
    fitted on them gives each its bits as the sum of its parts, an unordered pair of steps
    1 bit less than its two positions, and a change seen in fitting fewer bits than one never
    seen."""
    import math

    from experiments.edit_entropy import EditCode, edits_of
    from tvae.config import HOLD, N_SPECIAL, REST

    S, p = 8, N_SPECIAL + 10
    x = [p, HOLD, p + 2, HOLD, p + 4, HOLD, REST, p]
    y = [p + 7, HOLD, HOLD, HOLD, p + 5, HOLD, p + 4, HOLD]
    x2 = list(x)
    x2[2] = p + 4
    y2 = list(y)
    y2[4], y2[6] = REST, p + 2
    tokens = torch.tensor([[x, y, x2, y2]])
    edits = edits_of(tokens)
    assert edits == [{"offset": 2, "steps": [(2, p + 2, p + 4)]},
                     {"offset": 2, "steps": [(4, p + 5, REST), (6, p + 4, p + 2)]}]
    code = EditCode(3, S, N_SPECIAL + 40).fit(edits)
    one, two = code.bits(edits[0]), code.bits(edits[1])
    for parts in (one, two):
        assert parts["total"] == pytest.approx(sum(v for k, v in parts.items() if k != "total"))
    pair = code.position.bits(4) + code.position.bits(6) - 1.0
    assert two["positions"] == pytest.approx(pair)
    unseen = {"offset": 2, "steps": [(3, p + 2, p + 9)]}  # +7: an interval never fitted
    assert code.bits(unseen)["changes"] > one["changes"] > 0
    assert code.offset.bits(2) < code.offset.bits(1) == pytest.approx(math.log2(5))


def test_an_edit_that_differs_gives_the_source_one_minus_eps_and_spreads_eps_elsewhere() -> None:
    """At every step the distribution sums to 1, the source's token gets exactly 1 - eps, and
    the others keep the generator's proportions; the plain mixture is left as it was."""
    import tvae.model.pointer as pointer
    from experiments.edit_differs import differing_step_log_probs

    torch.manual_seed(0)
    gen = torch.randn(2, 3, 4, 6).log_softmax(-1)  # (B, N, S, V)
    sources = torch.randint(0, 6, (2, 3, 4))
    log_eps = torch.rand(2, 3, 4).clamp(0.05, 0.95).log()
    out = differing_step_log_probs(gen, sources, log_eps)
    assert torch.allclose(out.exp().sum(-1), torch.ones(2, 3, 4), atol=1e-5)
    src = out.gather(-1, sources[..., None])[..., 0].exp()
    assert torch.allclose(src, 1 - log_eps.exp(), atol=1e-5)
    others = out.exp().masked_fill(torch.nn.functional.one_hot(sources, 6).bool(), 0.0)
    g = gen.exp().masked_fill(torch.nn.functional.one_hot(sources, 6).bool(), 0.0)
    assert torch.allclose(others / others.sum(-1, keepdim=True), g / g.sum(-1, keepdim=True),
                          atol=1e-5)
    plain = pointer.copy_step_log_probs(gen, sources, log_eps)
    assert not torch.allclose(plain, out)  # the plain mixture lets an edit repeat the source
