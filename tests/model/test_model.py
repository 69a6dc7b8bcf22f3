"""The Transformer VAE: shapes for any bar count, causality by gradients, cached decoding,
padding, scheduled sampling, samplers, and that a tiny model can learn.

Shape legend: B batch, N bars, S steps per bar, V vocabulary, D model width, Z latent size.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import Tensor

from tests.paths import DATA
from tests.tiny import TINY_FIELDS
from tvae.config import PAD, GridConfig, ModelConfig
from tvae.melody import METER_STEPS, METERS, melody_to_bars
from tvae.midi import read_melody
from tvae.model.forward import Noise
from tvae.model.modules import mask_logits
from tvae.model.sampling import argmax_sampler, make_sampler
from tvae.model.vae import TransformerVAE
from tvae.training.objective import vae_objective

GRID = GridConfig()
DECODERS = ("mlp", "gru")
ENCODERS = ("mlp", "gru")
COPIES = ("bar", "step", "none")


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def tiny(seed: int = 0, layers: int = 2, **overrides: object) -> TransformerVAE:
    """A small seeded model in eval mode, without dropout."""
    torch.manual_seed(seed)
    fields = dict(TINY_FIELDS, enc_layers=layers, dec_layers=layers, dropout=0.0)
    fields.update(overrides)
    return TransformerVAE(ModelConfig(**fields), GRID).eval()  # type: ignore[arg-type]


def random_bars(B: int, N: int, seed: int = 0, meters: Tensor | None = None
                ) -> tuple[Tensor, Tensor]:
    """Random real bars: tokens (B, N, S), PAD exactly after each meter's length; meters (B, N)."""
    gen = torch.Generator().manual_seed(seed)
    if meters is None:
        meters = torch.randint(0, len(METERS), (B, N), generator=gen)
    tokens = torch.randint(1, GRID.vocab_size, (B, N, GRID.steps_per_bar), generator=gen)
    lengths = torch.tensor([METER_STEPS[m] for m in METERS])[meters]  # (B, N)
    tokens[torch.arange(GRID.steps_per_bar) >= lengths[..., None]] = PAD
    return tokens, meters


class BarVectors:
    """Captures the bar encoder's outputs (B, N, D) so that gradients can be taken w.r.t. them."""

    def __init__(self, model: TransformerVAE) -> None:
        self.outputs: list[Tensor] = []
        self.handle = model.bar_encoder.register_forward_hook(self._hook)

    def _hook(self, module: torch.nn.Module, inputs: object, output: Tensor) -> None:
        output.retain_grad()
        self.outputs.append(output)


# -- shapes -------------------------------------------------------------------------------------
@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("decoder", DECODERS)
def test_shapes_for_any_number_of_bars(encoder: str, decoder: str) -> None:
    model = tiny(layers=1, bar_encoder=encoder, bar_decoder=decoder)
    S, V, Z = GRID.steps_per_bar, GRID.vocab_size, 8
    for N in (1, 3, 8, 17):
        tokens, meters = random_bars(2, N, seed=N)
        mu, logvar = model.encode(tokens, meters)
        assert mu.shape == logvar.shape == (2, N, Z)
        out = model(tokens, meters)
        assert out.log_probs.shape == (2, N, S, V)
        assert out.mu.shape == out.logvar.shape == (2, N, Z)
        assert out.kl_bars.shape == out.log_lik.shape == (2, N)
        assert out.log_pi is not None and out.log_pi.shape == (2, N, 1 + N)
        loss = vae_objective(out, tokens, beta=1.0)
        assert loss.loss.shape == loss.recon.shape == loss.kl.shape == ()
        assert torch.isfinite(loss.loss)
        assert int(loss.n_steps) == int((tokens != PAD).sum())
        generated = model.free_run(torch.randn(2, N, Z), meters)
        assert generated.shape == (2, N, S) and generated.dtype == torch.long
        valid = torch.arange(S) < torch.tensor([METER_STEPS[m] for m in METERS])[meters][..., None]
        assert torch.equal(generated == PAD, ~valid)  # PAD exactly on the meter's unused steps


# -- causality by gradients ---------------------------------------------------------------------
@pytest.mark.parametrize("padded", [False, True])
def test_encoder_is_causal(padded: bool) -> None:
    """mu of bar k gets no gradient from bars after k, and does get one from bars up to k."""
    N = 6
    model = tiny()
    bar_vecs = torch.randn(2, N, 32, requires_grad=True)
    bar_mask = torch.ones(2, N, dtype=torch.bool)
    if padded:  # the explicit-mask path (padding bars at the end of the first window)
        bar_mask[0, 4:] = False
    for k in range(N):
        bar_vecs.grad = None
        mu, logvar = model._posterior(bar_vecs, bar_mask, random_bars(2, N, seed=3)[0])
        (mu[:, k].sum() + logvar[:, k].sum()).backward()
        assert torch.equal(bar_vecs.grad[:, k + 1 :], torch.zeros_like(bar_vecs.grad[:, k + 1 :]))
        seen = bar_vecs.grad[1, : k + 1].abs().sum(-1)  # window 1 has no padding
        assert bool((seen > 0).all())


def test_unmasked_encoder_sees_the_future() -> None:
    model = tiny(mask_encoder=False)
    bar_vecs = torch.randn(2, 5, 32, requires_grad=True)
    mu, _ = model._posterior(bar_vecs, torch.ones(2, 5, dtype=torch.bool),
                             random_bars(2, 5, seed=3)[0])
    mu[:, 1].sum().backward()
    assert bool((bar_vecs.grad[:, 2:].abs().sum(-1) > 0).all())


@pytest.mark.parametrize("decoder", DECODERS)
def test_encode_is_causal_end_to_end(decoder: str) -> None:
    """Through `encode`: gradients w.r.t. the bar encoder's outputs, hooked."""
    model = tiny(bar_decoder=decoder)
    tokens, meters = random_bars(2, 5, seed=1)
    captured = BarVectors(model)
    mu, _ = model.encode(tokens, meters)
    mu[:, 2].sum().backward()
    grad = captured.outputs[0].grad
    assert torch.equal(grad[:, 3:], torch.zeros_like(grad[:, 3:]))
    assert bool((grad[:, :3].abs().sum(-1) > 0).all())


@pytest.mark.parametrize("decoder", DECODERS)
def test_decoder_ignores_later_latents(decoder: str) -> None:
    N = 5
    model = tiny(bar_decoder=decoder)
    tokens, meters = random_bars(2, N, seed=2)
    z = torch.randn(2, N, 8, requires_grad=True)
    for k in range(N):
        z.grad = None
        model.decode_teacher_forced(z, tokens, meters)[0][:, k].sum().backward()
        assert torch.equal(z.grad[:, k + 1 :], torch.zeros_like(z.grad[:, k + 1 :]))
        assert bool((z.grad[:, : k + 1].abs().sum(-1) > 0).all())


def test_unmasked_cross_attention_sees_later_latents() -> None:
    model = tiny(mask_cross=False)
    tokens, meters = random_bars(2, 4, seed=3)
    z = torch.randn(2, 4, 8, requires_grad=True)
    model.decode_teacher_forced(z, tokens, meters)[0][:, 0].sum().backward()
    assert bool((z.grad[:, 1:].abs().sum(-1) > 0).all())


@pytest.mark.parametrize("decoder", DECODERS)
def test_decoder_input_of_bar_k_is_bar_k_minus_1(decoder: str) -> None:
    """Logits of bar k get no gradient from the true bars k.. (their bar vectors)."""
    N = 5
    model = tiny(bar_decoder=decoder)
    tokens, meters = random_bars(2, N, seed=4)
    z = torch.randn(2, N, 8)
    for k in range(N):
        captured = BarVectors(model)
        model.decode_teacher_forced(z, tokens, meters)[0][:, k].sum().backward()
        captured.handle.remove()
        grad = captured.outputs[0].grad
        assert torch.equal(grad[:, k:], torch.zeros_like(grad[:, k:]))
        assert bool((grad[:, :k].abs().sum(-1) > 0).all())


def test_unmasked_decoder_self_attention_sees_later_bars() -> None:
    model = tiny(mask_decoder=False)
    tokens, meters = random_bars(2, 4, seed=5)
    captured = BarVectors(model)
    model.decode_teacher_forced(torch.randn(2, 4, 8), tokens, meters)[0][:, 0].sum().backward()
    grad = captured.outputs[0].grad
    assert bool((grad[:, :3].abs().sum(-1) > 0).all())  # bar 0 sees the inputs of bars 1..3
    assert torch.equal(grad[:, 3], torch.zeros_like(grad[:, 3]))  # the last bar is never input


def test_gru_bar_decoder_is_causal_over_steps() -> None:
    """Step s of a bar gets no gradient from the bar's own true steps s, s+1, ..."""
    model = tiny(bar_decoder="gru")
    tokens, meters = random_bars(1, 2, seed=6, meters=torch.zeros(1, 2, dtype=torch.long))
    embedded: list[Tensor] = []

    def hook(module: torch.nn.Module, inputs: object, output: Tensor) -> None:
        output.retain_grad()
        embedded.append(output)

    model.bar_decoder.embed.register_forward_hook(hook)
    for s in (0, 5, 15):
        embedded.clear()
        model.decode_teacher_forced(torch.randn(1, 2, 8), tokens, meters)[0][:, :, s]\
            .sum().backward()
        grad = embedded[0].grad  # (B, N, S, hidden): input s is the true step s - 1
        assert torch.equal(grad[:, :, s + 1 :], torch.zeros_like(grad[:, :, s + 1 :]))
        assert bool((grad[:, :, : s + 1].abs().sum(-1) > 0).all())


# -- free-running decoding ----------------------------------------------------------------------
@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("mask_cross", [True, False])
def test_cached_free_run_equals_uncached(decoder: str, mask_cross: bool) -> None:
    model = tiny(bar_decoder=decoder, mask_cross=mask_cross)
    for N in (1, 2, 5, 9):
        _, meters = random_bars(3, N, seed=N)
        z = torch.randn(3, N, 8)
        cached = model.free_run(z, meters, use_cache=True)
        assert torch.equal(cached, model.free_run(z, meters, use_cache=False))


@pytest.mark.parametrize("copy", COPIES)
@pytest.mark.parametrize("decoder", DECODERS)
def test_free_run_agrees_with_teacher_forcing_on_its_own_output(decoder: str, copy: str) -> None:
    """Greedy free-running output is a fixed point: teacher-forced on it, argmax gives it back
    (the copy path then copies the same bars it copied while decoding)."""
    model = tiny(bar_decoder=decoder, copy=copy)
    _, meters = random_bars(2, 6, seed=7)
    z = torch.randn(2, 6, 8) * 3
    generated = model.free_run(z, meters)
    with torch.no_grad():
        log_probs, _ = model.decode_teacher_forced(z, generated, meters)
    assert torch.equal(log_probs.argmax(-1), generated)


def test_free_run_without_decoder_mask() -> None:
    model = tiny(mask_decoder=False)
    _, meters = random_bars(2, 4, seed=8)
    z = torch.randn(2, 4, 8)
    generated = model.free_run(z, meters)
    assert generated.shape == (2, 4, GRID.steps_per_bar)
    assert torch.equal(generated, model.free_run(z, meters, use_cache=False))
    assert bool(((generated >= 0) & (generated < GRID.vocab_size)).all())


def test_free_run_depends_on_z() -> None:
    model = tiny()
    meters = torch.zeros(1, 4, dtype=torch.long)
    a = model.free_run(torch.randn(1, 4, 8) * 3, meters)
    b = model.free_run(torch.randn(1, 4, 8) * 3, meters)
    assert not torch.equal(a, b)


# -- padding ------------------------------------------------------------------------------------
@pytest.mark.parametrize("copy", COPIES)
@pytest.mark.parametrize("masks", [True, False])
def test_padding_bars_change_nothing(masks: bool, copy: str) -> None:
    """A window of 4 real bars + 3 PAD bars, batched with an 7-bar window, gives the same mu,
    logits and losses for its real bars as the 4 bars alone; padding bars have KL 0."""
    model = tiny(mask_encoder=masks, mask_decoder=masks, mask_cross=masks, copy=copy)
    tokens, meters = random_bars(2, 7, seed=9)
    tokens[0, 4:] = PAD
    alone_tokens, alone_meters = tokens[:1, :4], meters[:1, :4]
    with torch.no_grad():
        outs = [model(t, m, sample=False) for t, m in ((tokens, meters), (alone_tokens,
                alone_meters), (tokens[1:], meters[1:]))]
        padded, alone, other = (vae_objective(o, t, beta=1.0) for o, t in zip(
            outs, (tokens, alone_tokens, tokens[1:]), strict=True))
    torch.testing.assert_close(outs[0].mu[0, :4], outs[1].mu[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outs[0].log_probs[0, :4], outs[1].log_probs[0], rtol=1e-5,
                               atol=1e-5)
    torch.testing.assert_close(outs[0].mu[1], outs[2].mu[0], rtol=1e-5, atol=1e-5)
    assert torch.equal(outs[0].kl_bars[0, 4:], torch.zeros(3))
    assert torch.equal(outs[0].log_lik[0, 4:], torch.zeros(3))
    assert bool((outs[0].kl_bars[0, :4] > 0).all())
    # losses are per real bar: 11 real bars in all
    total_recon = alone.recon * 4 + other.recon * 7
    torch.testing.assert_close(padded.recon * 11, total_recon, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(padded.kl * 11, alone.kl * 4 + other.kl * 7, rtol=1e-5, atol=1e-4)
    assert int(padded.n_steps) == int(alone.n_steps + other.n_steps)


@pytest.mark.parametrize("decoder", DECODERS)
def test_no_teacher_forcing_changes_the_loss(decoder: str) -> None:
    model = tiny(bar_decoder=decoder)
    tokens, meters = random_bars(2, 4, seed=13)
    with torch.no_grad():
        forced = model(tokens, meters, p_tf=1.0, sample=False)
        free = model(tokens, meters, p_tf=0.0, sample=False)
    torch.testing.assert_close(free.mu, forced.mu)  # the encoder is untouched
    assert not torch.allclose(free.log_lik, forced.log_lik)


@pytest.mark.parametrize("decoder", DECODERS)
def test_explicit_noise_decides_every_draw(decoder: str) -> None:
    """With `noise`, forward draws nothing itself: a zero latent draw gives z = mu, draws below
    p_tf keep every true bar and step (teacher forcing), draws above it keep none."""
    model = tiny(bar_decoder=decoder)
    tokens, meters = random_bars(2, 4, seed=13)
    B, N, S = tokens.shape
    keep_all = Noise(torch.zeros(B, N, 8), torch.zeros(B, N), torch.zeros(B, N, S))
    keep_none = Noise(torch.zeros(B, N, 8), torch.ones(B, N), torch.ones(B, N, S))
    latent = Noise(torch.randn(B, N, 8), torch.ones(B, N), torch.ones(B, N, S))
    with torch.no_grad():
        forced = model(tokens, meters, p_tf=1.0, sample=False)
        free = model(tokens, meters, p_tf=0.0, sample=False)
        kept = model(tokens, meters, p_tf=0.5, noise=keep_all)
        none_kept = model(tokens, meters, p_tf=0.5, noise=keep_none)
        noisy = [model(tokens, meters, noise=latent) for _ in range(2)]
    torch.testing.assert_close(kept.log_lik, forced.log_lik)
    torch.testing.assert_close(none_kept.log_lik, free.log_lik)
    torch.testing.assert_close(noisy[0].log_lik, noisy[1].log_lik)  # the same noise, the same z
    assert not torch.allclose(noisy[0].log_lik, forced.log_lik)


# -- samplers -----------------------------------------------------------------------------------
def test_samplers() -> None:
    logits = torch.randn(64, 16, GRID.vocab_size) * 3
    greedy = logits.argmax(-1)
    assert make_sampler(0.0) is argmax_sampler
    assert torch.equal(make_sampler(0.0)(logits), greedy)
    assert torch.equal(make_sampler(1.0, top_k=1)(logits), greedy)
    assert torch.equal(make_sampler(1.0, top_p=1e-6)(logits), greedy)
    a = make_sampler(1.0, generator=torch.Generator().manual_seed(3))(logits)
    b = make_sampler(1.0, generator=torch.Generator().manual_seed(3))(logits)
    assert torch.equal(a, b) and not torch.equal(a, greedy)
    top3 = logits.topk(3, dim=-1).indices
    drawn = make_sampler(2.0, top_k=3, generator=torch.Generator().manual_seed(4))(logits)
    assert bool((drawn[..., None] == top3).any(-1).all())  # only the 3 most likely classes


def test_sampling_respects_the_meter_mask() -> None:
    meters = torch.full((8, 1), METERS.index((3, 4)))
    logits = mask_logits(torch.randn(8, 1, 16, GRID.vocab_size), meters)
    drawn = make_sampler(5.0, generator=torch.Generator().manual_seed(0))(logits)
    assert bool((drawn[..., 12:] == PAD).all()) and bool((drawn[..., :12] != PAD).all())


# -- learning -----------------------------------------------------------------------------------
def test_tiny_model_overfits_four_windows() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        songs = [read_melody(DATA / f"{name}.mid") for name in ("mary", "jingle", "twinkle", "ode")]
    tokens = torch.as_tensor(np.stack([melody_to_bars(s).tokens[:4] for s in songs]))  # (4, 4, S)
    meters = torch.zeros(4, 4, dtype=torch.long)
    model = tiny(layers=1).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss = vae_objective(model(tokens, meters), tokens, beta=0.01).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        out = vae_objective(model.eval()(tokens, meters, sample=False), tokens, beta=0.01)
    assert float(out.correct / out.n_steps) >= 0.95


def test_windowed_encoding_sees_only_the_training_window() -> None:
    model = tiny()
    tokens, meters = random_bars(2, 11, seed=21)
    with torch.no_grad():
        full_mu, _ = model.encode(tokens[:, :4], meters[:, :4])
        short_mu, _ = model.encode_windowed(tokens[:, :4], meters[:, :4], window=4)
        torch.testing.assert_close(short_mu, full_mu)
        mu, logvar = model.encode_windowed(tokens, meters, window=4)
        assert mu.shape == logvar.shape == (2, 11, model.config.d_latent)
        torch.testing.assert_close(mu[:, :4], full_mu)
        for i in range(4, 11):
            alone, _ = model.encode(tokens[:, i - 3 : i + 1], meters[:, i - 3 : i + 1])
            torch.testing.assert_close(mu[:, i], alone[:, -1])


def test_windowed_free_run_uses_only_the_window() -> None:
    model = tiny()
    torch.manual_seed(3)
    z = torch.randn(2, 10, model.config.d_latent)
    meters = torch.zeros(2, 10, dtype=torch.long)
    out = model.free_run(z, meters, window=4)
    assert out.shape == (2, 10, model.grid.steps_per_bar)
    assert torch.equal(out[:, :4], model.free_run(z[:, :4], meters[:, :4]))
    assert torch.equal(model.free_run(z[:, :4], meters[:, :4], window=4),
                       model.free_run(z[:, :4], meters[:, :4]))
