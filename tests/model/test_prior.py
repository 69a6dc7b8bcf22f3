"""The learned prior (tvae.model.prior) on tiny seeded models: causality, a proper density,
seeded drawing, windows, fitting, checkpoints, and sampling through it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tests.paths import DATA
from tests.tiny import TINY_MODEL
from tvae.cli.main import main
from tvae.config import PAD, DataConfig, PriorConfig
from tvae.errors import TvaeError
from tvae.inference import load_model
from tvae.model.checkpoint import load_checkpoint, save_checkpoint
from tvae.model.prior import LatentPrior
from tvae.model.vae import TransformerVAE

TINY_PRIOR = PriorConfig(d_model=16, layers=1, n_heads=2, d_ff=32, components=3, dropout=0.0)


def _prior(offsets: int = 4, seed: int = 0) -> LatentPrior:
    torch.manual_seed(seed)
    return LatentPrior(TINY_PRIOR, 8, offsets).eval()


def test_bar_k_reads_only_the_bars_before_it() -> None:
    prior = _prior()
    z = torch.randn(2, 6, 8, requires_grad=True)
    meters = torch.zeros(2, 6, dtype=torch.long)
    real = torch.ones(2, 6, dtype=torch.bool)
    for k in range(6):
        z.grad = None
        prior.log_marginal(z, meters, real)[:, k].sum().backward(retain_graph=True)
        assert torch.equal(z.grad[:, k + 1 :], torch.zeros_like(z.grad[:, k + 1 :]))
        h_grad = z.grad[:, :k]
        assert k == 0 or h_grad.abs().sum() > 0  # it does read the earlier bars


def test_choices_reach_only_earlier_real_bars() -> None:
    prior = _prior(offsets=4)
    z = torch.randn(1, 6, 8)
    real = torch.tensor([[True, True, True, True, False, False]])
    h = prior.hidden(z, torch.zeros(1, 6, dtype=torch.long), real)
    allowed = torch.isfinite(prior.choice_log_probs(h, real))[0]  # (N, 1 + O)
    assert allowed[:, 0].all()  # generating is always possible
    assert not allowed[0, 1:].any()  # bar 0 has nothing to copy
    assert allowed[3, 1:4].all() and not allowed[3, 4]  # bar 3 reaches bars 2, 1, 0
    assert not allowed[5, 1] and allowed[5, 2]  # bar 4 is padding: bar 5 cannot copy it
    assert torch.allclose(prior.choice_log_probs(h, real).exp().sum(-1), torch.ones(1, 6))


def test_the_marginal_is_a_density_and_bounds_the_joint() -> None:
    """log p(z) sums the choices out: it is at least log p(c, z) for any c, and in one latent
    dimension it integrates to 1."""
    prior = _prior()
    z = torch.randn(3, 5, 8)
    meters = torch.zeros(3, 5, dtype=torch.long)
    real = torch.ones(3, 5, dtype=torch.bool)
    marginal = prior.log_marginal(z, meters, real)
    for c in range(3):
        choice = torch.full((3, 5), c).clamp(max=torch.arange(5))  # a possible choice per bar
        assert (prior.joint_log_prob(z, meters, real, choice) <= marginal + 1e-4).all()
    one = LatentPrior(TINY_PRIOR, 1, 2).eval()
    grid = torch.linspace(-40, 40, 40001)
    zs = torch.zeros(len(grid), 2, 1)
    zs[:, 1, 0] = grid
    density = one.log_marginal(zs, torch.zeros(len(grid), 2, dtype=torch.long),
                               torch.ones(len(grid), 2, dtype=torch.bool))[:, 1].exp()
    assert torch.trapezoid(density, grid).item() == pytest.approx(1.0, abs=1e-3)


def test_windowed_scoring_equals_one_window_when_the_song_fits() -> None:
    prior = _prior()
    z = torch.randn(2, 7, 8)
    meters = torch.zeros(2, 7, dtype=torch.long)
    real = torch.ones(2, 7, dtype=torch.bool)
    whole = prior.log_marginal(z, meters, real)
    assert torch.allclose(prior.log_marginal_windowed(z, meters, real, 7), whole)
    windowed = prior.log_marginal_windowed(z, meters, real, 4)
    assert torch.allclose(windowed[:, :4], whole[:, :4])
    # bar 6 is scored from bars 3..6 alone, as a window of its own
    alone = prior.log_marginal(z[:, 3:7], meters[:, 3:7], real[:, 3:7])[:, -1]
    assert torch.allclose(windowed[:, 6], alone, atol=1e-5)


def test_drawing_is_seeded_keeps_the_prompt_and_picks_possible_choices() -> None:
    prior = _prior(offsets=4)
    meters = torch.zeros(2, 12, dtype=torch.long)

    def draw(seed: int, prompt: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return prior.sample(12, meters, 5, 1.0, torch.Generator().manual_seed(seed), prompt)

    z1, c1 = draw(3)
    z2, c2 = draw(3)
    assert torch.equal(z1, z2) and torch.equal(c1, c2)
    assert not torch.equal(draw(4)[0], z1)
    k = torch.arange(12)
    assert ((c1 >= 0) & (c1 <= torch.clamp(k, max=4))).all()  # within reach and the window
    prompt = torch.randn(2, 3, 8)
    zp, cp = draw(3, prompt)
    assert torch.equal(zp[:, :3], prompt) and (cp[:, :3] == -1).all() and (cp[:, 3:] >= 0).all()
    z0, _ = prior.sample(6, meters[:, :6], 5, 0.0)  # temperature 0: no randomness at all
    assert torch.equal(z0, prior.sample(6, meters[:, :6], 5, 0.0)[0])


def test_forced_choices_are_what_decoding_copies() -> None:
    torch.manual_seed(0)
    model = TransformerVAE(TINY_MODEL).eval()
    z = torch.randn(1, 6, TINY_MODEL.d_latent)
    meters = torch.zeros(1, 6, dtype=torch.long)
    with torch.no_grad():
        model.edit.bias.fill_(-30.0)  # no edits: a copy is exact
        out = model.free_run(z, meters, choices=torch.tensor([[-1, 1, 0, 3, 2, 5]]))[0]
        windowed = model.free_run(z, meters, window=4,
                                  choices=torch.tensor([[-1, 1, 0, 3, 2, 3]]))[0]
    assert torch.equal(out[1], out[0]) and torch.equal(out[3], out[0])
    assert torch.equal(out[4], out[2]) and torch.equal(out[5], out[0])
    assert torch.equal(windowed[5], windowed[2])  # 3 back, past the first window


def test_a_prefix_is_kept_and_continued() -> None:
    torch.manual_seed(0)
    model = TransformerVAE(TINY_MODEL).eval()
    z = torch.randn(1, 7, TINY_MODEL.d_latent)
    meters = torch.zeros(1, 7, dtype=torch.long)
    prefix = torch.full((1, 3, 16), 2)
    prefix[..., 0] = 30
    for window in (0, 2):
        out = model.free_run(z, meters, window=window, prefix=prefix)[0]
        assert torch.equal(out[:3], prefix[0]) and (out[3:] != PAD).all()


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory, folk_corpus: Path,
           torch_one_thread: None) -> Path:
    """The tiny checkpoint given a prior fitted for a few steps on the tiny folk export."""
    torch.manual_seed(0)
    base = save_checkpoint(tmp_path_factory.mktemp("prior") / "tiny",
                           TransformerVAE(TINY_MODEL), data=DataConfig(bars=8))
    out = base.parent / "with_prior"
    args = ["prior", str(folk_corpus), "-o", str(out), "--model", str(base), "--steps", "6",
            "--eval-every", "3", "--eval-windows", "8", "--batch-size", "4", "--d-model", "16",
            "--layers", "1", "--n-heads", "2", "--d-ff", "32", "--components", "2", "--quiet"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "bits per bar against the learned prior" in r.output
    return out.with_suffix(".json")


def test_tvae_prior_writes_a_checkpoint_that_loads_with_its_prior(fitted: Path) -> None:
    model, meta, _ = load_checkpoint(fitted)
    assert model.prior is not None and meta["prior"]["components"] == 2
    record = meta["prior_fit"]
    assert record["steps"] == 6 and record["best"]["step"] in (3, 6)
    assert record["best"]["kl_bits_learned"] > 0 and record["best"]["kl_bits_normal"] > 0
    assert isinstance(record["reference"], dict)
    # the VAE's weights are the ones it was fitted to: only prior.* tensors were added
    base, _, _ = load_checkpoint(fitted.with_name("tiny.json"))
    for key, value in base.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)


def test_an_exported_model_takes_its_prior_in_place(fitted: Path, folk_corpus: Path,
                                                    tmp_path: Path) -> None:
    """`tvae prior --model M -o M` on an inference-only checkpoint (an export, as
    scripts/train_bundled.sh does with the bundled model) replaces its prior and keeps its VAE;
    on a training checkpoint it is refused (tests/cli/test_output_paths.py)."""
    from tvae.model.checkpoint import export_checkpoint

    model = export_checkpoint(fitted, tmp_path / "model")
    before = load_checkpoint(model)[0].state_dict()
    args = ["prior", str(folk_corpus), "-o", str(model), "--model", str(model), "--steps", "3",
            "--eval-every", "3", "--eval-windows", "8", "--batch-size", "4", "--d-model", "16",
            "--layers", "1", "--n-heads", "2", "--d-ff", "32", "--components", "3", "--quiet"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    after, meta, _ = load_checkpoint(model)
    assert meta["prior"]["components"] == 3 and meta["prior_fit"]["steps"] == 3  # the new one
    for key, value in before.items():
        if not key.startswith("prior."):
            assert torch.equal(after.state_dict()[key], value)


def test_sampling_uses_the_learned_prior_by_default(fitted: Path) -> None:
    trained = load_model(fitted)
    assert trained.prior_kind("auto") == "learned"
    melody, sources = trained.draw(10, 1.0, 5)
    again, same = trained.draw(10, 1.0, 5)
    assert melody == again and sources == same and melody.n_bars <= 10
    assert all(s is None or 0 <= s < k for k, s in enumerate(sources))
    normal = trained.sample(10, 1.0, 5, prior="normal")
    assert normal == load_model(fitted.with_name("tiny.json")).sample(10, 1.0, 5)
    with pytest.raises(TvaeError, match="no learned prior"):
        load_model(fitted.with_name("tiny.json")).sample(4, prior="learned")


def test_a_prompt_is_continued(fitted: Path) -> None:
    from tvae.midi import read_melody

    trained = load_model(fitted)
    ode = read_melody(DATA / "ode.mid", grid=trained.grid)
    prompt = trained.bars(ode)
    prompt.tokens = prompt.tokens[:4]
    from tvae.melody import bars_to_melody

    start = bars_to_melody(prompt, trained.grid)
    out, sources = trained.draw(9, 0.0, 1, prompt=start)
    assert np.array_equal(trained.bars(out).tokens[:4], prompt.tokens)
    assert sources[:4] == [None] * 4 and out.meter == start.meter
    with pytest.raises(TvaeError, match="prompt has 4 bars"):
        trained.draw(4, prompt=start)


def test_cli_sample_with_prior_prompt_metrics_and_page(fitted: Path, folk_corpus: Path,
                                                       tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "s"
    r = runner.invoke(main, ["sample", "-n", "3", "--bars", "8", "-o", str(out), "--html",
                             "--metrics", "--data", str(folk_corpus), "--model", str(fitted)])
    assert r.exit_code == 0, r.output
    assert "repeat_share" in r.output and "phrase_repeat" in r.output
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["form"]["songs"] == 3
    page = (out / "samples.html").read_text()
    assert "learned prior" in page
    r = runner.invoke(main, ["sample", "-n", "1", "--bars", "8", "-o", str(tmp_path / "p"),
                             "--prompt", str(DATA / "ode.mid"), "--model", str(fitted)])
    assert r.exit_code == 2 and "ode.mid" in r.output and "prompt has" in r.output
    r = runner.invoke(main, ["sample", "-n", "1", "--bars", "20", "-o", str(tmp_path / "p"),
                             "--prompt", str(DATA / "ode.mid"), "--model", str(fitted)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["sample", "--prior", "learned", "-o", str(tmp_path / "q"),
                             "--model", str(fitted.with_name("tiny.json"))])
    assert r.exit_code == 2 and "no learned prior" in r.output


def test_interpolation_keeps_the_nearer_ends_form(fitted: Path) -> None:
    from tvae.midi import read_melody

    trained = load_model(fitted)
    a = read_melody(DATA / "mary.mid", grid=trained.grid)
    b = read_melody(DATA / "ode.mid", grid=trained.grid)
    za = trained.encode(a)
    steps = trained.interpolate(a, b, 3)
    n = min(len(za), len(trained.encode(b)))
    assert steps[0] == trained.decode(za[:n], a.meter, a.qpm, steps[0].title)
    form = trained.form_of(za[:n])
    tokens = trained.bars(steps[1]).tokens
    for k, o in enumerate(form):  # the middle copies as A does
        if o > 0:
            assert np.array_equal(tokens[k], tokens[k - o]) or k >= len(tokens)


def test_a_model_holding_a_prior_takes_its_kl_against_it() -> None:
    """Joint training: the KL of each bar is log q(z | x) - log p(z_k | z_<k) at the sampled z,
    and the loss reaches the prior's weights."""
    from tvae.model.forward import Noise
    from tvae.model.prior import log_normal

    torch.manual_seed(0)
    model = TransformerVAE(TINY_MODEL, prior=TINY_PRIOR)
    tokens = torch.full((2, 5, 16), 2)
    tokens[..., 0] = torch.randint(3, 40, (2, 5))
    meters = torch.zeros(2, 5, dtype=torch.long)
    noise = Noise.draw(tuple(tokens.shape), TINY_MODEL.d_latent, torch.Generator().manual_seed(1))
    out = model(tokens, meters, noise=noise)
    z = out.mu + noise.latent * (0.5 * out.logvar).exp()
    real = torch.ones(2, 5, dtype=torch.bool)
    expected = log_normal(z, out.mu, out.logvar) - model.prior.log_marginal(z, meters, real)
    assert torch.allclose(out.kl_bars, expected, atol=1e-4)
    out.kl_bars.sum().backward()
    assert model.prior.choice.weight.grad.abs().sum() > 0
    assert model.mu.weight.grad.abs().sum() > 0
    plain = TransformerVAE(TINY_MODEL)
    plain.load_state_dict({k: v for k, v in model.state_dict().items()
                           if not k.startswith("prior.")})
    from tvae.model.forward import kl_per_bar

    base = plain(tokens, meters, noise=noise)
    assert torch.allclose(base.kl_bars, kl_per_bar(base.mu, base.logvar), atol=1e-5)


def test_tvae_prior_refuses_bad_input_in_one_line(tmp_path: Path, tiny_ckpt: Path) -> None:
    runner = CliRunner()
    (tmp_path / "folder").mkdir()
    r = runner.invoke(main, ["prior", str(DATA), "-o", str(tmp_path / "folder"), "--model",
                             str(tiny_ckpt)])
    assert r.exit_code == 2 and "is a folder" in r.output
    r = runner.invoke(main, ["prior", str(DATA), "-o", str(tmp_path / "p"), "--model",
                             str(tiny_ckpt), "--components", "0"])
    assert r.exit_code == 2 and "--components" in r.output
    empty = tmp_path / "empty"
    empty.mkdir()
    r = runner.invoke(main, ["prior", str(empty), "-o", str(tmp_path / "p"), "--model",
                             str(tiny_ckpt)])
    assert r.exit_code == 2 and r.output.startswith("error:") and len(r.output.splitlines()) == 1
    assert not (tmp_path / "p.json").exists()


def test_a_prompt_with_a_pickup_keeps_it(fitted: Path) -> None:
    from tvae.melody import Melody, Note

    trained = load_model(fitted)
    notes = [Note(0, 67, 4)] + [Note(4 + 4 * i, 60 + i % 5, 4) for i in range(16)]
    prompt = Melody(tuple(notes), (4, 4), 100.0, 4, "pickup")
    for prior in ("learned", "normal"):
        out = trained.sample(9, seed=2, prompt=prompt, prior=prior)
        assert out.pickup == 4 and out.qpm == 100.0
        assert np.array_equal(trained.bars(out).tokens[:5], trained.bars(prompt).tokens)
