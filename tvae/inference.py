"""The trained model's API: encode, decode, reconstruct, transfer, sample, interpolate.

`load_model()` with no path gives the model bundled in the package. Every method takes and gives
`Melody` objects (and numpy latents), any number of bars. Decoding is free-running: each bar is
decoded from the model's own previous bars, as in the paper's inference.

Shape legend: N bars, Z latent size, S steps per bar.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from tvae.config import MAX_BARS, PAD, PRIOR_TEMPERATURE, REST, DataConfig
from tvae.errors import TvaeError, TvaeWarning
from tvae.generation import draw_melody
from tvae.latents import check_latent_values, slerp
from tvae.melody import (
    Bars,
    Melody,
    Meter,
    bars_to_melody,
    fit_pitch_range,
    melody_to_bars,
    meter_id,
    meter_steps,
    normalize_meter,
)
from tvae.model.checkpoint import load_checkpoint
from tvae.model.decoding import located_edits
from tvae.model.forward import LN2, kl_per_bar
from tvae.model.lead_in import lead_steps
from tvae.model.sampling import make_sampler

UNKNOWN_WINDOW = DataConfig().bars  # assumed training window of checkpoints that name none
ENCODE_CHUNK = 256  # windows a windowed model encodes in one batch (bounds memory, not results)
COPY_CHUNK = 512  # bars whose copy sources are found in one batch (bounds memory, not results)
PRIORS = ("auto", "learned", "normal")  # where sampled latents come from (`TrainedModel.draw`)


def bundled_model_path() -> Path:
    """Where the package's own trained model lives (`tvae/weights/default.json`)."""
    return Path(str(resources.files("tvae") / "weights" / "default.json"))


def load_model(path: str | Path | None = None, device: str = "cpu") -> TrainedModel:
    """A trained model from a checkpoint (NAME.json/NAME.safetensors or a run folder);
    with no path, the model bundled in the package."""
    if path is None:
        path = bundled_model_path()
        if not path.exists():
            raise TvaeError("this installation has no bundled model; pass --model", path)
    model, meta, _ = load_checkpoint(path, device)
    return TrainedModel(model, meta, Path(path))


MAX_STEPS = 1000  # melodies in one interpolation


class TrainedModel:
    """A loaded model and its inference methods. Build with `load_model`."""

    def __init__(self, model: torch.nn.Module, meta: dict, path: Path) -> None:
        self.model, self.meta, self.path = model.eval(), meta, path
        self.grid = model.grid
        self.device = next(model.parameters()).device
        # Songs longer than the training window are read and decoded window by window; the
        # loader takes the window of checkpoints that predate `trained_bars` from their data.
        self.window = model.config.trained_bars
        self._warned_window = False

    def _window_for(self, n_bars: int) -> int:
        """The window to read or decode `n_bars` bars with. A checkpoint that does not record
        its training window is read in one window: past the default training window
        (DataConfig.bars) that meets positions it may never have seen, so this warns (once)."""
        if not self.window and n_bars > UNKNOWN_WINDOW and not self._warned_window:
            self._warned_window = True
            warnings.warn(f"{self.path.name} does not record the window length it was trained "
                          f"on (trained_bars); its {n_bars} bars are read and decoded in one "
                          f"window, past the default {UNKNOWN_WINDOW}-bar training window, at "
                          "positions it may never have seen", TvaeWarning, stacklevel=4)
        return self.window

    # -- conversions ----------------------------------------------------------------------
    def bars(self, melody: Melody) -> Bars:
        melody, moved = fit_pitch_range(melody, self.grid)
        if moved:
            warnings.warn(f"moved {moved} notes by octaves into the model's range "
                          f"{self.grid.min_pitch}-{self.grid.max_pitch}", TvaeWarning,
                          stacklevel=3)
        return melody_to_bars(melody, self.grid)

    def _tensors(self, melody: Melody) -> tuple[torch.Tensor, torch.Tensor]:
        bars = self.bars(melody)
        tokens = torch.as_tensor(bars.tokens, device=self.device)[None]  # (1, N, S)
        meters = torch.full(tokens.shape[:2], meter_id(melody.meter), device=self.device)
        return tokens, meters

    def _melody(self, tokens: torch.Tensor, meter: Meter, qpm: float, title: str,
                pickup: int = 0) -> Melody:
        """Decoded tokens (N, S) -> Melody; a pickup is kept when its lead-in decoded as rest (or
        is a prompt's own pickup bar, kept as it was). Without one, a lead-in the model decoded
        itself (bar 0 opening with PAD: the lead-in head) makes the melody open with that
        pickup."""
        if not pickup and len(tokens):
            pads = int(lead_steps(tokens[None])[0])  # bar 0's leading PAD steps
            if 0 < pads < meter_steps(meter):
                pickup = meter_steps(meter) - pads
        arr = tokens.cpu().numpy().astype(np.int64)
        offset = (meter_steps(meter) - pickup) % meter_steps(meter)
        lead = arr[0, :offset] if len(arr) else arr
        if pickup and len(arr) and ((lead == REST) | (lead == PAD)).all():  # PAD: a prompt's
            arr[0, :offset] = PAD
        else:
            pickup = 0
        return bars_to_melody(Bars(arr, meter, qpm, pickup, title), self.grid)

    @torch.no_grad()
    def _encode_chunked(self, melody: Melody) -> tuple[torch.Tensor, torch.Tensor]:
        """The melody's posteriors (1, N, Z) twice, read window by window in chunks of
        ENCODE_CHUNK windows (`TransformerVAE.encode_chunked`: memory bounded at any length)."""
        tokens, meters = self._tensors(melody)  # (1, N, S), (1, N)
        return self.model.encode_chunked(tokens, meters, self._window_for(tokens.shape[1]),
                                         ENCODE_CHUNK)

    # -- the API --------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, melody: Melody) -> np.ndarray:
        """Posterior means, one latent per bar: (N, Z)."""
        mu, _ = self._encode_chunked(melody)
        return mu[0].cpu().numpy()

    @torch.no_grad()
    def posterior(self, melody: Melody) -> tuple[np.ndarray, np.ndarray]:
        """Each bar's posterior: means and standard deviations, (N, Z) each."""
        mu, logvar = self._encode_chunked(melody)
        return mu[0].cpu().numpy(), (0.5 * logvar[0]).exp().cpu().numpy()

    def encode_many(self, melodies: Sequence[Melody]) -> list[tuple[np.ndarray, np.ndarray]]:
        """`posterior` of each melody (any lengths and meters): [(mu, sigma), ...]."""
        return [self.posterior(melody) for melody in melodies]

    def kl_bits(self, melody: Melody) -> np.ndarray:
        """KL of each bar's posterior from the prior, in bits: (N,). Repeats should be cheap."""
        return self.kl_bits_of(*self.posterior(melody))

    @staticmethod
    def kl_bits_of(mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
        """KL bits per bar (N,) of posteriors given by their means and std devs (N, Z)."""
        mu_t, sigma_t = torch.as_tensor(mu), torch.as_tensor(sigma)
        return (kl_per_bar(mu_t, 2 * sigma_t.log()) / LN2).numpy()

    def kl_and_copy_sources(self, melody: Melody) -> tuple[np.ndarray, list[int | None]]:
        """`kl_bits` and `copy_sources` of a melody from one encoding (what pages show)."""
        mu, sigma = self.posterior(melody)
        return self.kl_bits_of(mu, sigma), self.copy_sources_of(mu)

    def copy_sources(self, melody: Melody) -> list[int | None]:
        """For each bar, the earlier bar (0-based) the decoder copies it from: the pointer's
        likeliest choice, the one decoding makes; None where the bar is generated (or the model
        has no copy path)."""
        return self.copy_sources_of(self.encode(melody))

    def copy_sources_of(self, z: np.ndarray) -> list[int | None]:
        """`copy_sources` from latents (N, Z), e.g. the ones a transfer decodes."""
        return [source for source, _ in self.copy_choices(z)]

    @torch.no_grad()
    def copy_choices(self, z: np.ndarray) -> list[tuple[int | None, float]]:
        """For each bar of latents (N, Z): the choice decoding makes, (source bar, its pointer
        weight) for a copy or (None, weight of generating), as `free_run` takes it.

        Bar k's pointer weights depend on z_k and on which of the `copy_offsets` bars before it
        exist, so the bars are taken COPY_CHUNK at a time, each chunk with the bars it can point
        back to: the same answer as all at once, without an (N, N) matrix (0.5 GB at 4,096 bars).
        """
        z = np.asarray(z, dtype=np.float32)
        back = max(int(self.model.config.copy_offsets), 1)
        out: list[tuple[int | None, float]] = []
        for lo in range(0, len(z), COPY_CHUNK):
            first = max(lo - back, 0)  # the chunk's bars [lo, hi) and the bars they reach
            zt = torch.as_tensor(z[first:lo + COPY_CHUNK], device=self.device)[None]  # (1, M, Z)
            log_pi = self.model.log_pointer(zt, torch.ones(zt.shape[:2], dtype=torch.bool,
                                                           device=self.device))
            if log_pi is None:
                return [(None, 1.0)] * len(z)
            best = log_pi[0, lo - first:].exp().max(-1)  # generate (0) or copy bar j (1 + j)
            out += [(first + int(c) - 1 if int(c) > 0 else None, float(w))
                    for c, w in zip(best.indices.tolist(), best.values.tolist(), strict=True)]
        return out

    @torch.no_grad()
    def decode(self, z: np.ndarray, meter: Meter = (4, 4), qpm: float = 120.0, title: str = "",
               pickup: int = 0, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
               seed: int | None = None, choices: Sequence[int] | None = None,
               prefix: np.ndarray | None = None, known_pickup: bool = False,
               lead_in: bool = True, edits_from: np.ndarray | None = None) -> Melody:
        """Latents (N, Z) -> a melody, free-running; greedy unless temperature > 0. `choices`
        (N,) fixes bars' copy choices (0 generate, o copy the bar o back, -1 the pointer's);
        `prefix` (P, S) tokens of the first P bars, kept as they are (a melody continued).
        `known_pickup`: the song's own layout is decoded (a reconstruction): the steps before
        a pickup are outside the melody, decoded as PAD as training saw them, and later bars
        read and copy them so (without it the decoder fills them in; measured on the folk test
        split, the free-running accuracy of the bundled model of commit dea496b is 0.945 with
        them given, 0.935 without: `python -m experiments.free_gap`). Otherwise a model with a
        lead-in head (`ModelConfig.lead_in`) reads bar 0's lead-in from z_0 and the melody takes
        that pickup, unless `lead_in` is False (a transfer: B's bar layout is decoded freely).
        `edits_from`
        (N, Z), B's own latents in a transfer: each copy's edits are located from B's own
        decoding (`TransformerVAE.transfer_run`), so that a bar B repeats with a change takes
        the new source's notes and keeps B's change."""
        z = np.asarray(z, dtype=np.float32)
        if z.ndim != 2 or z.shape[1] != self.model.config.d_latent or len(z) == 0:
            raise TvaeError(f"latents must have shape (bars, {self.model.config.d_latent}), "
                            f"got {z.shape}")
        if len(z) > MAX_BARS:
            raise TvaeError(f"{len(z)} bars of latents; tvae decodes at most {MAX_BARS}")
        check_latent_values(z)
        if not (math.isfinite(qpm) and 1.0 <= qpm <= 1000.0):
            raise TvaeError(f"qpm must be between 1 and 1000, got {qpm}")
        meter = normalize_meter(meter)
        zt = torch.as_tensor(z, device=self.device)[None]  # (1, N, Z)
        meters = torch.full(zt.shape[:2], meter_id(meter), device=self.device)
        gen = None
        if seed is not None:
            gen = torch.Generator(device=self.device).manual_seed(seed)
        sampler = make_sampler(temperature, top_k, top_p, gen)
        window = self._window_for(len(z))
        forced = None if choices is None else torch.as_tensor(
            np.asarray(choices, dtype=np.int64), device=self.device)[None]  # (1, N)
        given = None if prefix is None else torch.as_tensor(
            np.asarray(prefix, dtype=np.int64), device=self.device)[None]  # (1, P, S)
        outside = None
        lead = (meter_steps(meter) - pickup) % meter_steps(meter)  # steps before the pickup
        if known_pickup or not lead_in:  # the layout is given: the lead-in head is not read
            outside = torch.zeros((*zt.shape[:2], self.grid.steps_per_bar), dtype=torch.bool,
                                  device=self.device)  # (1, N, S)
            if known_pickup and pickup and lead:
                outside[0, 0, :lead] = True
        edits = None
        if edits_from is not None and self.model.pointer is not None:
            own_z = np.asarray(edits_from, dtype=np.float32)
            if own_z.shape != z.shape:
                raise TvaeError(f"edits_from must have the latents' shape {z.shape}, got "
                                f"{own_z.shape}")
            own = self.model.free_run(torch.as_tensor(own_z, device=self.device)[None], meters,
                                      window=window, outside=outside)  # (1, N, S) greedy
            picked = [i - source if source is not None else 0
                      for i, (source, _) in enumerate(self.copy_choices(z))]
            offsets = torch.as_tensor(picked, device=self.device)[None]  # (1, N)
            if forced is not None:
                offsets = torch.where(forced >= 0, forced, offsets)
            mine = torch.as_tensor((z == own_z).all(-1), device=self.device)[None]  # (1, N)
            forced, edits = offsets, located_edits(own, offsets, mine)
        tokens = self.model.free_run(zt, meters, sampler, window=window, choices=forced,
                                     prefix=given, outside=outside, edits=edits)[0]  # (N, S)
        return self._melody(tokens, meter, qpm, title, pickup)

    def reconstruct(self, melody: Melody) -> Melody:
        """Encode, then decode without teacher forcing."""
        return self.decode(self.encode(melody), melody.meter, melody.qpm,
                           f"{melody.title} (reconstruction)", melody.pickup, known_pickup=True)

    def transfer(self, a: Melody, b: Melody, bars: Sequence[int] = (0,)) -> Melody:
        """B's latents with the listed bars (0-based) taken from A: A's opening developed in
        B's flow (the paper swaps the first bar). Both songs must share a meter."""
        post_b = self.posterior(b)
        z, _ = self.transfer_posterior(a, b, bars, (self.posterior(a), post_b))
        return self.decode(z, b.meter, b.qpm, f"{a.title} -> {b.title}", b.pickup,
                           lead_in=False, edits_from=post_b[0])

    def transfer_posterior(self, a: Melody, b: Melody, bars: Sequence[int] = (0,),
                           posteriors: tuple[tuple[np.ndarray, np.ndarray],
                                             tuple[np.ndarray, np.ndarray]] | None = None
                           ) -> tuple[np.ndarray, np.ndarray]:
        """The latents a transfer decodes: B's posterior means and standard deviations (N, Z)
        with the listed bars (0-based) taken from A's. `posteriors`, A's and B's `posterior`
        when the caller has them already (they are not changed), saves encoding them again."""
        if a.meter != b.meter:  # a Melody's meter is normalised already
            raise TvaeError(f"transfer needs songs in one meter: A is {a.meter[0]}/{a.meter[1]},"
                            f" B is {b.meter[0]}/{b.meter[1]}")
        (za, sa), (zb, sb) = posteriors or (self.posterior(a), self.posterior(b))
        zb, sb = zb.copy(), sb.copy()
        bars = sorted(set(bars))
        if not bars or min(bars) < 0 or max(bars) >= min(len(za), len(zb)):
            raise TvaeError(f"bars {[i + 1 for i in bars]} must lie within both songs "
                            f"(A has {len(za)} bars, B has {len(zb)})")
        zb[bars], sb[bars] = za[bars], sa[bars]
        return zb, sb

    @property
    def has_prior(self) -> bool:
        """Whether the checkpoint holds a learned prior (`tvae prior`)."""
        return self.model.prior is not None

    def prior_kind(self, prior: str) -> str:
        """Which prior `draw(prior=...)` uses: "learned" or "normal" ("auto": learned when the
        model has one)."""
        if prior not in PRIORS:
            raise TvaeError(f"prior must be one of {', '.join(PRIORS)}, got {prior!r}")
        if prior == "learned" and not self.has_prior:
            raise TvaeError("this model has no learned prior (fit one with `tvae prior`), so "
                            "it samples from N(0, I) only", self.path)
        return "learned" if prior == "auto" and self.has_prior else (
            "normal" if prior == "auto" else prior)

    def sample(self, n_bars: int = 8, temperature: float | None = None, seed: int = 0,
               meter: Meter = (4, 4), qpm: float = 120.0, top_k: int = 0,
               top_p: float = 1.0, prior: str = "auto",
               prior_temperature: float = PRIOR_TEMPERATURE, prompt: Melody | None = None
               ) -> Melody:
        """A new melody of `n_bars` bars (`draw` without its form)."""
        return self.draw(n_bars, temperature, seed, meter, qpm, top_k, top_p, prior,
                         prior_temperature, prompt)[0]

    def draw(self, n_bars: int = 8, temperature: float | None = None, seed: int = 0,
             meter: Meter = (4, 4), qpm: float = 120.0, top_k: int = 0, top_p: float = 1.0,
             prior: str = "auto", prior_temperature: float = PRIOR_TEMPERATURE,
             prompt: Melody | None = None) -> tuple[Melody, list[int | None]]:
        """A new melody and, per bar, the earlier bar it copies (None: generated, or a prompt
        bar). Each bar's latent comes from the learned prior (`prior` "auto" when the model has
        one, "learned") with its copy choice, which decoding follows, or from N(0, I)
        ("normal": the pointer reads the choice from the latent). `prior_temperature` scales
        the learned prior's spread and sharpens its choices (0: the likeliest). `temperature`,
        `top_k` and `top_p` choose each step; `temperature` None is 0 (greedy) with the learned
        prior, whose draws then carry all the randomness (the MLP bar decoder draws a bar's
        steps independently of each other, so step sampling scatters pitches), and 1 with
        N(0, I), as before the learned prior. With `prompt`, its bars are the first ones (kept
        as they are: its meter and tempo are the sample's) and the rest continue it."""
        return draw_melody(self, n_bars, temperature, seed, meter, qpm, top_k, top_p, prior,
                           prior_temperature, prompt)

    def form_of(self, z: np.ndarray) -> list[int]:
        """Each bar's copy choice as decoding takes it from latents (N, Z): 0 generate, o copy
        the bar o back (the form `decode(choices=...)` takes)."""
        return [k - source if source is not None else 0
                for k, source in enumerate(self.copy_sources_of(z))]

    def interpolate(self, a: Melody, b: Melody, steps: int = 5, temperature: float = 0.0,
                    seed: int = 0, keep_form: bool = True) -> list[Melody]:
        """`steps` melodies from A to B (both ends included), spherical per bar. Songs of
        different lengths are interpolated over the shorter one's bars. With `keep_form`, each
        step's bars copy what the nearer end's bars copy (A's form up to the middle, B's
        after it): only the content moves from A to B, not the song's form."""
        if a.meter != b.meter:  # a Melody's meter is normalised already
            raise TvaeError("interpolation needs songs in one meter")
        if not 2 <= steps <= MAX_STEPS:
            raise TvaeError(f"interpolation takes 2 to {MAX_STEPS} steps, got {steps}")
        za, zb = self.encode(a), self.encode(b)
        n = min(len(za), len(zb))
        if len(za) != len(zb):
            warnings.warn(f"interpolating over the first {n} bars only: A has {len(za)} bars, "
                          f"B has {len(zb)}", TvaeWarning, stacklevel=2)
        forms = (self.form_of(za[:n]), self.form_of(zb[:n])) if keep_form else (None, None)
        out = []
        for k, t in enumerate(np.linspace(0.0, 1.0, steps)):
            z = np.stack([slerp(za[i], zb[i], float(t)) for i in range(n)])
            out.append(self.decode(z, a.meter, a.qpm, f"{a.title} -> {b.title} ({k + 1}/{steps})",
                                   temperature=temperature, seed=seed + k,
                                   choices=forms[0] if t <= 0.5 else forms[1]))
        return out
