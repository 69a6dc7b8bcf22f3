"""The copy path (tvae.model.pointer): pointer weights, exact likelihoods, that the pointer reads
only the bar's own latent, and that a copied bar follows its source in free-running decoding (the
mechanism behind context transfer)."""

from __future__ import annotations

import itertools

import pytest
import torch

from tests.model.test_model import random_bars, tiny
from tvae.config import PAD
from tvae.model.pointer import bar_log_lik, copy_target, pointer_log_weights

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_pointer_weights_reach_only_real_earlier_bars_within_range() -> None:
    logits = torch.randn(2, 6, 1 + 3)  # generate + offsets 1..3
    bar_mask = torch.ones(2, 6, dtype=torch.bool)
    bar_mask[1, 2] = False  # a padding bar cannot be copied
    log_pi = pointer_log_weights(logits, bar_mask)  # (B, N, 1 + N)
    torch.testing.assert_close(log_pi.exp().sum(-1), torch.ones(2, 6))
    assert torch.equal(log_pi[:, 0, 0], torch.zeros(2))  # bar 1 can only generate
    for k, j in itertools.product(range(6), range(6)):
        reachable = 1 <= k - j <= 3
        assert bool(torch.isfinite(log_pi[0, k, 1 + j])) == reachable
        if reachable:  # the weight is the offset's logit against the others
            assert (log_pi[0, k, 1 + j] - log_pi[0, k, 0]).item() == pytest.approx(
                (logits[0, k, k - j] - logits[0, k, 0]).item(), abs=1e-5)
    assert torch.isinf(log_pi[1, 4, 1 + 2]) and torch.isinf(log_pi[1, 3, 1 + 2])


def test_bar_likelihood_is_a_distribution_over_bars() -> None:
    """Summed over every possible bar of a small vocabulary, the per-bar choice's probability
    is exactly 1 for each bar position (generate, or copy with edits)."""
    torch.manual_seed(0)
    B, N, S, V = 1, 3, 3, 4  # classes 1..3 allowed, PAD never on a used step
    gen = torch.randn(B, N, S, V)
    gen[..., PAD] = float("-inf")
    gen = gen.log_softmax(-1)
    sources = torch.tensor([[[1, 2, 3], [3, 3, 1], [2, 1, 1]]])
    log_pi = pointer_log_weights(torch.randn(B, N, 1 + 2), torch.ones(B, N, dtype=torch.bool))
    log_eps = torch.log(torch.tensor([[0.1, 0.3, 0.02]]))
    bars = torch.tensor(list(itertools.product([1, 2, 3], repeat=S)))  # (27, S)
    total = torch.zeros(N)
    for bar in bars:
        tokens = sources.clone()
        tokens[0, :] = bar  # every position takes this bar; sources stay fixed
        total += bar_log_lik(gen, tokens, sources, log_pi, log_eps)[0].exp()
    torch.testing.assert_close(total, torch.ones(N))


def test_exact_repeat_costs_only_the_pointer() -> None:
    """With eps -> 0 and all weight on copying bar 0, bar 1 equal to bar 0 has likelihood ~1
    whatever the generator says."""
    gen = torch.randn(1, 2, 4, 5).log_softmax(-1)
    tokens = torch.tensor([[[1, 2, 3, 4], [1, 2, 3, 4]]])
    log_pi = torch.log(torch.tensor([[[1.0, 0.0, 0.0], [1e-6, 1 - 1e-6, 0.0]]]))
    lik = bar_log_lik(gen, tokens, tokens, log_pi, torch.log(torch.full((1, 2), 1e-6)))
    assert lik[0, 1].item() == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize("copy_edit", [0.02, 0.0])
def test_pointer_reads_only_the_bars_own_latent(copy_edit: float) -> None:
    model = tiny(copy_edit=copy_edit)
    z = torch.randn(2, 5, 8, requires_grad=True)
    bar_mask = torch.ones(2, 5, dtype=torch.bool)
    for k in range(1, 5):
        z.grad = None
        log_pi, log_eps = model.pointer_weights(z, bar_mask)
        (log_pi[:, k, : k + 1].sum() + log_eps[:, k].sum()).backward()
        others = torch.cat([z.grad[:, :k], z.grad[:, k + 1 :]], dim=1)
        assert torch.equal(others, torch.zeros_like(others))
        assert bool((z.grad[:, k].abs().sum(-1) > 0).all())


def test_copy_target_marks_exact_earlier_repeats_in_reach() -> None:
    tokens, _ = random_bars(1, 5, seed=3, meters=torch.zeros(1, 5, dtype=torch.long))
    tokens[0, 2] = tokens[0, 0]
    tokens[0, 4] = tokens[0, 0]
    target = copy_target(tokens, max_offset=3)[0]
    assert target[2, 0] and target[4, 2] and not target[4, 0]  # bar 0 is 4 back: out of reach
    assert int(target.sum()) == 2


@pytest.mark.parametrize("copy_edit", [0.02, 0.0])
@pytest.mark.parametrize("decoder", ["mlp", "gru"])
def test_a_copied_bar_follows_its_source_when_the_source_changes(decoder: str,
                                                                 copy_edit: float) -> None:
    """Point every bar at the bar 2 back with certainty (pointer bias): in free-running decoding
    bar 3 equals bar 1 for any latents, including after bar 1's latent is swapped (transfer)."""
    model = tiny(bar_decoder=decoder, copy_edit=copy_edit)
    first = int(model.learn_edit)  # with a learned edit chance, column 0 is its logit
    with torch.no_grad():
        model.pointer.weight.zero_()
        model.pointer.bias.fill_(-30.0)  # edits and every choice unlikely...
        model.pointer.bias[first] = 0.0  # ...but generating...
        model.pointer.bias[first + 2] = 30.0  # ...and copying 2 bars back (decisive if allowed)
    meters = torch.zeros(3, 5, dtype=torch.long)
    torch.manual_seed(1)
    z = torch.randn(3, 5, 8) * 3
    out = model.free_run(z, meters)
    assert torch.equal(out[:, 3], out[:, 1]) and torch.equal(out[:, 4], out[:, 2])
    swapped = z.clone()
    swapped[:, 1] = torch.randn(3, 8) * 3
    again = model.free_run(swapped, meters)
    assert not torch.equal(again[:, 1], out[:, 1])
    assert torch.equal(again[:, 3], again[:, 1])


def test_stock_model_has_no_pointer() -> None:
    model = tiny(copy="none")
    assert model.pointer is None
    assert model.pointer_weights(torch.randn(1, 3, 8), torch.ones(1, 3, dtype=torch.bool)) == (
        None, None)


@pytest.mark.parametrize("field, value", [("copy", "maybe"), ("copy_offsets", 10**9),
                                          ("copy_edit", 0.7), ("copy_edit", float("nan"))])
def test_hostile_copy_settings_are_refused_before_building(field: str, value: object) -> None:
    from tvae.config import ModelConfig
    from tvae.errors import TvaeError

    with pytest.raises(TvaeError, match=field):
        ModelConfig(**{field: value})


# -- what the encoder is told about repeats ------------------------------------------------------
def test_repeat_features_mark_exact_and_near_repeats_at_their_offset() -> None:
    from tvae.model.pointer import repeat_features

    tokens, _ = random_bars(1, 12, seed=5, meters=torch.zeros(1, 12, dtype=torch.long))
    tokens[0, 9] = tokens[0, 2]  # exact, 7 back
    tokens[0, 11] = tokens[0, 1]
    tokens[0, 11, 3] = tokens[0, 1, 3] % 20 + 3  # one step changed: near, 10 back
    tokens[0, 10] = PAD  # a padding bar repeats nothing and is repeated by nothing
    f = repeat_features(tokens, 10)  # (1, 12, 20)
    assert f.shape == (1, 12, 20)
    exact, near = f[0, :, :10], f[0, :, 10:]
    assert exact.nonzero().tolist() == [[9, 6]]  # bar 9, offset 7
    assert near.nonzero().tolist() == [[11, 9]]  # bar 11, offset 10
    assert repeat_features(tokens, 4)[0].sum() == 0  # both beyond a reach of 4


def test_the_encoder_reads_repeats_causally_and_in_linear_cost() -> None:
    """With repeat features (non-zero weights), bar k's posterior is unchanged by any later
    bar, and a song of 3,000 bars is featured without an N x N comparison."""
    from tvae.model.pointer import repeat_features

    model = tiny(copy="bar", copy_offsets=6, encoder_repeats=True)
    assert model.repeats_in is not None
    torch.nn.init.normal_(model.repeats_in.weight, std=1.0)
    tokens, meters = random_bars(2, 8, seed=2)
    tokens[:, 5] = tokens[:, 1]
    mu, _ = model.encode(tokens, meters)
    for k in range(7):
        later = tokens.clone()
        later[:, k + 1 :] = tokens[:, 1:2]  # every later bar becomes a repeat of bar 1
        mu2, _ = model.encode(later, meters)
        assert torch.allclose(mu[:, : k + 1], mu2[:, : k + 1], atol=1e-6)
    assert not torch.allclose(mu, model.encode(tokens.flip(1), meters)[0])
    long_song, _ = random_bars(1, 3000, seed=1)
    assert repeat_features(long_song, 32).shape == (1, 3000, 64)
    without = tiny(copy="bar", copy_offsets=6, encoder_repeats=False)
    assert without.repeats_in is None


def test_the_posterior_mean_reads_repeats_at_any_distance_causally() -> None:
    """With `latent_repeats`, a bar's posterior mean moves by the learned vector of the offset
    at which an earlier bar repeats it, at 24 bars back as at 2; zero vectors (as a fine-tune
    starts) leave the model as it was; later bars never change an earlier bar's mean."""
    torch.manual_seed(0)
    model = tiny(copy="bar", copy_offsets=30, latent_repeats=True).eval()
    plain = tiny(copy="bar", copy_offsets=30, latent_repeats=False).eval()
    assert model.repeats_mu is not None and plain.repeats_mu is None
    plain.load_state_dict(model.state_dict(), strict=False)
    tokens, meters = random_bars(1, 28, seed=3)
    tokens[:, 26] = tokens[:, 2]  # bar 26 repeats bar 2, 24 bars back
    tokens[:, 5] = tokens[:, 3]  # bar 5 repeats bar 3, 2 bars back
    with torch.no_grad():
        before = model.encode(tokens, meters)[0]
        assert torch.equal(before, plain.encode(tokens, meters)[0])
        torch.nn.init.normal_(model.repeats_mu.weight, std=1.0)
        after = model.encode(tokens, meters)[0]
    moved = (after - before).abs().sum(-1)[0]  # (N,)
    assert moved.nonzero().flatten().tolist() == [5, 26]
    torch.testing.assert_close((after - before)[0, 26], model.repeats_mu.weight[:, 23].detach())
    torch.testing.assert_close((after - before)[0, 5], model.repeats_mu.weight[:, 1].detach())
    later = tokens.clone()
    later[:, 27] = tokens[:, 0]  # a later repeat changes nothing before it
    with torch.no_grad():
        torch.testing.assert_close(model.encode(later, meters)[0][:, :27], after[:, :27])


def test_an_observed_choice_scores_a_repeat_as_a_copy_of_its_sources_only() -> None:
    """With `choices`, a bar that repeats an earlier one is scored as log sum over its sources
    of pi_j p(copy j) (never above the marginal likelihood), a bar with no source as
    log pi_gen + log g; the decoded distribution and the pointer weights do not change."""
    from tvae.model.pointer import observed_log_weights

    torch.manual_seed(0)
    model = tiny(copy="bar", copy_offsets=6).eval()
    tokens, meters = random_bars(2, 8, seed=4)
    tokens[:, 6] = tokens[:, 2]
    targets = copy_target(tokens, 6)
    with torch.no_grad():
        marginal = model(tokens, meters, sample=False)
        observed = model(tokens, meters, sample=False, choices=targets)
    assert torch.equal(marginal.log_probs, observed.log_probs)
    assert torch.equal(marginal.log_pi, observed.log_pi)
    assert (observed.log_lik <= marginal.log_lik + 1e-5).all()
    kept = observed_log_weights(marginal.log_pi, targets)  # (B, N, 1 + N)
    assert torch.isfinite(kept[:, 6]).sum(-1).tolist() == [1, 1]  # only bar 2
    assert torch.isfinite(kept[:, 6, 1 + 2]).all() and torch.isinf(kept[:, 6, 0]).all()
    assert torch.isfinite(kept[:, 5, 0]).all() and torch.isinf(kept[:, 5, 1:]).all()
    torch.testing.assert_close(kept[:, 6, 1 + 2], marginal.log_pi[:, 6, 1 + 2])
    # by hand: bar 1 repeats bar 0; generate and copy have weight 1/2 each
    gen = torch.log(torch.tensor([[[[0.0, 0.5, 0.5], [0.0, 0.25, 0.75]]] * 2]))  # (1, 2, 2, 3)
    bars = torch.tensor([[[1, 2], [1, 2]]])  # (1, 2, 2)
    log_pi = torch.log(torch.tensor([[[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]]]))  # (1, 2, 1 + 2)
    log_eps = torch.log(torch.full((1, 2, 1), 0.1))
    g = 0.5 * 0.75  # the generator's probability of the bar
    copy = (0.9 + 0.1 * 0.5) * (0.9 + 0.1 * 0.75)  # copy bar 0, each step kept or edited to it
    mixed = bar_log_lik(gen, bars, bars, log_pi, log_eps)
    seen = bar_log_lik(gen, bars, bars, observed_log_weights(log_pi, copy_target(bars, 1)),
                       log_eps)
    assert mixed[0, 1].item() == pytest.approx(float(torch.log(torch.tensor(0.5 * g
                                                                             + 0.5 * copy))))
    assert seen[0, 1].item() == pytest.approx(float(torch.log(torch.tensor(0.5 * copy))))
    assert seen[0, 0].item() == pytest.approx(float(torch.log(torch.tensor(g))))


def test_same_as_source_marks_the_steps_a_bar_shares_with_its_nearest_source() -> None:
    """A bar's source is the earlier bar (same layout, within reach) differing in the fewest
    steps, at most 2, the nearest on a tie; its shared steps are marked, nothing else is."""
    from tvae.model.pointer import nearest_source, same_as_source

    tokens, _ = random_bars(1, 12, seed=7, meters=torch.zeros(1, 12, dtype=torch.long))
    tokens[0, 9] = tokens[0, 2]  # exact, 7 back
    tokens[0, 11] = tokens[0, 1]
    tokens[0, 11, 3] = tokens[0, 1, 3] % 20 + 3  # one step changed, 10 back
    tokens[0, 6] = tokens[0, 4]
    tokens[0, 6, 0] = tokens[0, 4, 0] % 20 + 3
    tokens[0, 6, 5] = tokens[0, 4, 5] % 20 + 3  # two steps changed, 2 back
    tokens[0, 7] = tokens[0, 6]  # exact repeat of bar 6 (1 back) and a near one of bar 4
    same = same_as_source(tokens, 10)[0]  # (12, S)
    assert same[9].all() and same[7].all()
    assert (~same[11]).nonzero().flatten().tolist() == [3]
    assert (~same[6]).nonzero().flatten().tolist() == [0, 5]
    marked = [k for k in range(12) if same[k].any()]
    assert marked == [6, 7, 9, 11]  # every other bar is new: nothing marked
    assert not same_as_source(tokens, 6)[0, 11].any()  # 10 back is beyond a reach of 6
    assert not same_as_source(tokens, 10, max_edits=1)[0, 6].any()  # 2 edits: too many
    offset, both = nearest_source(tokens, 10)
    assert torch.equal(both[0], same)
    assert {k: int(offset[0, k]) for k in marked} == {6: 2, 7: 1, 9: 7, 11: 10}
    assert int(offset[0].count_nonzero()) == 4  # the new bars have no source


def test_an_encoder_reading_edits_sees_a_repeat_only_through_its_changes() -> None:
    """With `encoder_edits`, the bar vector of an exact repeat does not depend on what is
    repeated, and a near-repeat's only on its changed steps; other bars are read as before."""
    model = tiny(copy="bar", copy_offsets=8, encoder_edits=True)
    assert model.bar_encoder.same_step is not None
    torch.nn.init.normal_(model.bar_encoder.same_step, std=1.0)
    one, meters = random_bars(1, 6, seed=1)
    two, _ = random_bars(1, 6, seed=2)
    for tokens in (one, two):
        tokens[0, 4] = tokens[0, 1]  # an exact repeat, 3 back
        tokens[0, 5] = tokens[0, 2]
        tokens[0, 5, 7] = 30  # a near-repeat of bar 2 whose changed step reads 30
        tokens[0, 2, 7] = 31
    from tvae.model.pointer import same_as_source

    vecs = [model.bar_encoder(t, meters, same_as_source(t, 8)) for t in (one, two)]
    assert torch.allclose(vecs[0][0, 4], vecs[1][0, 4])
    assert torch.allclose(vecs[0][0, 5], vecs[1][0, 5])
    assert not torch.allclose(vecs[0][0, 1], vecs[1][0, 1])
    plain = model.bar_encoder(one, meters)  # without marks: the bars as they are
    assert torch.allclose(plain[0, :4], vecs[0][0, :4])
    assert not tiny(copy="bar", copy_offsets=8, encoder_edits=False).edits_in


@pytest.mark.parametrize("edits", [False, True])
def test_training_reads_the_posterior_as_encode_does(edits: bool) -> None:
    """forward's posterior (training) is `encode`'s (evaluation, transfer), with or without
    reading repeats as edits."""
    model = tiny(copy="bar", copy_offsets=8, encoder_edits=edits, latent_repeats=True)
    if edits:
        torch.nn.init.normal_(model.bar_encoder.same_step, std=1.0)
    tokens, meters = random_bars(2, 7, seed=4)
    tokens[:, 5] = tokens[:, 1]
    tokens[:, 6] = tokens[:, 2]
    tokens[:, 6, 3] = 33
    with torch.no_grad():
        out = model(tokens, meters, sample=False)
        mu, logvar = model.encode(tokens, meters)
    assert torch.allclose(out.mu, mu) and torch.allclose(out.logvar, logvar)
