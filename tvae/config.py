"""Configuration dataclasses, one per concern, each saved as JSON inside every checkpoint.

`GridConfig` fixes the melody grid and vocabulary; `ModelConfig`, `DataConfig` and `TrainConfig`
describe the network, the training windows and the optimisation; `PriorConfig` and
`PriorFitConfig` the learned prior over bar latents and how it is fitted. Each field is declared
with `setting(default, help, lo, hi)`: its meaning (the CLI's help text) and its allowed range.
Every config checks its fields' types and ranges when built, so a bad option, a hand-edited JSON
or a hostile checkpoint is refused with one line naming the field, before anything is allocated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tvae.config_fields import (  # noqa: F401 (re-exported: tvae.config is where callers look)
    config_from_dict,
    config_to_dict,
    flag_of,
    setting,
    validate_fields,
)
from tvae.errors import TvaeError

# Class ids shared by every vocabulary; pitch onsets follow them.
PAD = 0  # outside the melody (padding of short bars, before a pickup); ignored by the loss
REST = 1  # silence
HOLD = 2  # the previous note sounds on
N_SPECIAL = 3
MAX_BARS = 4096  # longest melody read, decoded or sampled, in bars (bounds time and memory)
MAX_STEPS_PER_BAR = 96  # finest grid: 4/4 at 1/96 notes (bounds the vocabulary's tensors)
MAX_PITCH = 127  # the MIDI pitch range is 0..127
MAX_LAYERS = 64  # Transformer layers per stack
MAX_WIDTH = 16384  # d_model, d_ff, bar_hidden
MAX_COPY_OFFSETS = 255  # the copy path reaches at most this many bars back
PRIOR_TEMPERATURE = 0.8  # the learned prior's default when sampling (docs/experiments/prior)
COPY_MODES = ("bar", "step", "none")  # per-bar choice, per-step mixture, no copy path
BAR_CODERS = ("mlp", "gru")
TF_SCHEDULES = ("constant", "linear", "exponential", "inverse_sigmoid", "logistic")
BETA_SCHEDULES = ("constant", "linear", "cyclical")
# Fields whose value is one of a fixed set: the CLI offers them as choices, checked up front.
CHOICES = {"copy": COPY_MODES, "bar_encoder": BAR_CODERS, "bar_decoder": BAR_CODERS,
           "tf_schedule": TF_SCHEDULES, "beta_schedule": BETA_SCHEDULES}


def _choice(config: Any, name: str) -> None:
    value = getattr(config, name)
    if value not in CHOICES[name]:
        raise TvaeError(f"{name} ({flag_of(name)}) must be one of {', '.join(CHOICES[name])}, "
                        f"got {value!r}")


@dataclass(frozen=True)
class GridConfig:
    """The melody grid: sixteenth-note steps, one class per step."""

    min_pitch: int = setting(48, "lowest onset pitch in the vocabulary (MIDI number, C3)",
                             0, MAX_PITCH)
    max_pitch: int = setting(96, "highest onset pitch in the vocabulary (MIDI number, C7)",
                             0, MAX_PITCH)
    steps_per_bar: int = setting(16, "model bar size in sixteenths; shorter meters are "
                                 "PAD-padded", 1, MAX_STEPS_PER_BAR)

    def __post_init__(self) -> None:
        validate_fields(self)
        if self.min_pitch > self.max_pitch:
            raise TvaeError(f"min_pitch (--min-pitch) {self.min_pitch} is above max_pitch "
                            f"(--max-pitch) {self.max_pitch}: the pitch range is empty")

    @property
    def n_pitches(self) -> int:
        return self.max_pitch - self.min_pitch + 1

    @property
    def vocab_size(self) -> int:
        return N_SPECIAL + self.n_pitches

    def pitch_to_class(self, pitch: int) -> int:
        return N_SPECIAL + pitch - self.min_pitch

    def class_to_pitch(self, cls: int) -> int:
        return cls - N_SPECIAL + self.min_pitch


@dataclass(frozen=True)
class ModelConfig:
    """The network: local bar encoder/decoder around a Transformer VAE over bars."""

    d_model: int = setting(256, "width of bar vectors and of the attention layers", 1, MAX_WIDTH)
    d_latent: int = setting(64, "size Z of each bar's latent", 1, 4096)
    n_heads: int = setting(4, "attention heads", 1, 256)
    enc_layers: int = setting(2, "Transformer encoder layers (self-attention over bars)",
                              0, MAX_LAYERS)
    dec_layers: int = setting(2, "Transformer decoder layers (self- and cross-attention)",
                              0, MAX_LAYERS)
    d_ff: int = setting(512, "hidden width of each layer's feed-forward block", 1, MAX_WIDTH)
    dropout: float = setting(0.1, "dropout inside the Transformer layers")
    bar_encoder: str = setting("mlp", 'local bar encoder: "mlp" (the paper) or "gru" '
                               "(bidirectional)")
    bar_decoder: str = setting("mlp", 'local bar decoder: "mlp" (whole bar at once) or "gru" '
                               "(step by step)")
    bar_hidden: int = setting(512, "hidden width of the local bar encoder/decoder", 1, MAX_WIDTH)
    mask_encoder: bool = setting(True, "causal encoder self-attention: bar i sees bars <= i")
    mask_decoder: bool = setting(True, "causal decoder self-attention")
    mask_cross: bool = setting(True, "decoder bar i attends to latents z_1..z_i only")
    n_classes: int = setting(0, "classes of the optional supervised head on the mean latent "
                             "(0: none)", 0, 65536)
    copy: str = setting("bar", 'copy path (tvae.model.pointer): "bar", "step" or "none" (the '
                        "paper's model)")
    copy_offsets: int = setting(32, "how many bars back the copy path reaches (the training "
                                "window minus 1 is enough)", 0, MAX_COPY_OFFSETS)
    copy_edit: float = setting(0.02, '"bar": chance of an edit at each step of a copy (0: '
                               "learned from z per bar); the start value with --copy-edit-steps")
    copy_edit_steps: bool = setting(True, '"bar": each step of a copy has its own edit chance, '
                                    "read from the bar's latent, so a near-repeat is a copy that "
                                    "pays only for its edits")
    encoder_repeats: bool = setting(False, "the encoder's input is told which earlier bars "
                                    "(within the copy path's reach) each bar repeats, exactly or "
                                    "with 1 or 2 steps changed; no gain measured (the posterior's "
                                    "repeat vectors, --latent-repeats, are what works)")
    latent_repeats: bool = setting(True, "each bar's posterior mean is moved by one learned "
                                   "vector per offset at which an earlier bar repeats it (exactly, "
                                   "or with 1 or 2 steps changed; found from the input), so the "
                                   "pointer reads a repeat at any distance from the latent")
    encoder_edits: bool = setting(True, "the bar encoder reads a bar that repeats an earlier "
                                  "one (exactly, or with 1 or 2 steps changed) as its "
                                  "differences from it: the steps they share become one learned "
                                  "'same' vector, so its latent has only the edits to say")
    edit_source: bool = setting(False, '"bar" with --copy-edit-steps: an edited step of a copy '
                                "is drawn from the generator biased by the source's token at that "
                                "step (a learned table over (source token, new token), starting "
                                "at zero); no gain measured in fine-tunes of the bundled model "
                                "(docs/experiments.md)")
    lead_in: bool = setting(False, "train a head that reads from the first bar's latent how "
                            "many of its steps lie before a pickup (a lead-in), so that "
                            "free-running decoding leaves them out of the melody; trained with "
                            "the VAE it made repeats cost more in 12-minute runs, so it is off: "
                            "fit it afterwards instead (scripts/fit_lead_in.py), as the bundled "
                            "model's was")
    trained_bars: int = setting(0, "bars per window the model was trained on, set by training "
                                "from the data config (0: not recorded); longer songs are read "
                                "and decoded window by window", 0, MAX_BARS, cli=False)

    def __post_init__(self) -> None:
        validate_fields(self)
        if not 0.0 <= self.copy_edit < 0.5:
            raise TvaeError(f"copy_edit (--copy-edit) must be in [0, 0.5), got {self.copy_edit}")
        if not 0.0 <= self.dropout < 1.0:
            raise TvaeError(f"dropout (--dropout) must be in [0, 1), got {self.dropout}")
        if self.d_model % self.n_heads:
            raise TvaeError(f"d_model (--d-model) {self.d_model} must be a multiple of n_heads "
                            f"(--n-heads) {self.n_heads}")
        for name in ("bar_encoder", "bar_decoder", "copy"):
            _choice(self, name)


BASE_LR, BASE_BATCH, MAX_DEFAULT_LR = 1e-3, 64, 2e-3
DEFAULT_EPOCHS = 20  # passes of a run given no step or time limit
NO_EPOCH_LIMIT = 10**6  # passes of a run given one: that limit ends it


def default_lr(batch_size: int) -> float:
    """The learning rate `tvae train` uses when none is given: 1e-3 (the bundled model's) up to
    64 windows a step, scaled by sqrt(batch / 64) above (the square-root rule for Adam), and
    at most 2e-3: larger batches on a GPU were measured stable at 1e-3 to 2e-3 (issue 18's
    H200 runs at batch 1,024), and a loss spike is caught by the step guard."""
    return min(BASE_LR * math.sqrt(max(batch_size, BASE_BATCH) / BASE_BATCH), MAX_DEFAULT_LR)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, schedules and run control."""

    batch_size: int = setting(64, "windows per step", 1, 2**20)
    lr: float = setting(0.0, "peak AdamW learning rate (0: chosen from the batch size, "
                        "1e-3 up to 64 windows, times sqrt(batch / 64) above, at most 2e-3)",
                        0.0)
    weight_decay: float = setting(0.01, "AdamW weight decay", 0.0)
    warmup_steps: int = setting(300, "linear learning-rate warm-up, in steps", 0)
    min_lr_ratio: float = setting(0.1, "cosine decay ends at lr * min_lr_ratio", 0.0, 1.0)
    epochs: int = setting(0, "passes over the training windows (0: 20, or as many as "
                          "--max-steps or a fitted --max-minutes allow when either is given)", 0)
    max_steps: int = setting(0, "stop after this many steps (0: no limit)", 0)
    max_minutes: float = setting(0.0, "wall-time limit, validation and checkpoints included "
                                 "(0: none)", 0.0)
    fit_schedules: bool = setting(True, "with --max-minutes, the lr decay ends at the step where "
                                  "the time does (steps timed after 20 steps and each epoch), "
                                  "not at the end of the epochs; warm-ups stay as set")
    grad_clip: float = setting(1.0, "gradient-norm clipping", 0.0, above=True)
    beta_schedule: str = setting("linear", 'KL weight: "constant", "linear" (warm-up) or '
                                 '"cyclical"')
    beta: float = setting(0.3, "KL weight after warm-up (or at each cycle's top)", 0.0)
    beta_steps: int = setting(2000, "warm-up length or cycle length, in steps", 1)
    free_bits: float = setting(0.0, "KL per bar below this many bits is not penalised", 0.0)
    tf_schedule: str = setting("constant", "p_tf: constant, linear, exponential, "
                               "inverse_sigmoid, logistic")
    tf_p: float = setting(1.0, "p_tf of the constant schedule", 0.0, 1.0)
    tf_min: float = setting(0.0, "lowest p_tf of decaying schedules", 0.0, 1.0)
    tf_max: float = setting(1.0, "highest p_tf of decaying schedules", 0.0, 1.0)
    tf_steps: int = setting(5000, "linear: steps from tf_max to tf_min", 1)
    tf_k: float = setting(0.9995, "exponential: p = k**step; inverse sigmoid: k/(k+exp(step/k))",
                          0.0, above=True)
    tf_gamma: float = setting(0.5, "logistic (Drossos et al. 2019): beta = -gamma * step / N_b")
    recon_weight: float = setting(1.0, "lambda: weight of the reconstruction loss", 0.0)
    class_weight: float = setting(1.0, "weight of the supervised head's loss (when the model has "
                                  "one)", 0.0)
    pointer_weight: float = setting(1.0, "weight of the copy pointer's auxiliary loss on the "
                                    "data's repeats (0: off)", 0.0)
    pointer_steps: int = setting(0, "the pointer loss holds for this many steps, then fades out "
                                 "by 2x (0: it holds all run)", 0)
    pointer_cap: float = setting(0.9, "the pointer loss stops pushing once the pointer gives a "
                                 "true source this weight (1: never stops)", 0.0, 1.0,
                                 above=True)
    pointer_edits: int = setting(2, "a bar with no exact earlier repeat teaches the pointer its "
                                 "nearest earlier bar if at most this many steps differ (0: exact "
                                 "repeats only)", 0, MAX_STEPS_PER_BAR)
    repeat_beta: float = setting(2.0, "multiplier of beta on the KL of bars that repeat an "
                                 "earlier bar in the copy path's reach (exactly, or with up to "
                                 "--pointer-edits steps changed, as the pointer loss finds "
                                 "them), from --repeat-beta-from on: above 1, a repeat's latent "
                                 "pays more for content its source already has (1: every bar "
                                 "weighted alike). The default, 2 over the last tenth of the "
                                 "run, took the bundled model's run from 18.2 to 16.6 KL bits "
                                 "per bar for 0.002 of free-running accuracy, and a 12-minute "
                                 "run from 20.8 to 18.6 bits for 0.003; from the first step of "
                                 "9,000 it cost 0.006, with far repeats copied from nearer "
                                 "near-matches (docs/experiments.md)", 0.0)
    repeat_beta_from: float = setting(0.9, "--repeat-beta holds from this share of the run's "
                                      "steps on, 1 before (0: from the first step; 0.9: the "
                                      "last tenth, like a short last stage); validation weighs "
                                      "repeats by --repeat-beta throughout, so that its losses "
                                      "compare; the run keeps its checkpoint at that step as "
                                      "before_late.json, from which scripts/branch_run.py tries "
                                      "another last stage", 0.0, 1.0)
    source_weight: float = setting(0.0, "a phrase's first occurrence: its reconstruction loss "
                                   "weighs 1 + this x the later bars in the copy path's reach "
                                   "that repeat it (exactly, or with up to --pointer-edits steps "
                                   "changed), since decoded without teacher forcing its errors "
                                   "recur in every copy (0: every bar weighted alike)", 0.0)
    edit_weight: float = setting(1.0, "weight of the edit loss: a copied bar's per-step edit "
                                 "chances are taught the steps where it differs from its source "
                                 "(0: off)", 0.0)
    patience: int = setting(5, "early stopping: epochs without a better validation loss", 0)
    log_every: int = setting(20, "steps between progress and metrics updates", 1)
    checkpoint_every: int = setting(200, "steps between checkpoints inside an epoch (for "
                                    "--resume)", 1)
    max_bad_steps: int = setting(20, "consecutive non-finite losses before training stops; "
                                 "as many spikes in a row go back to the last good weights at "
                                 "half the learning rate (3 times at most, then it stops)", 1)
    spike_ratio: float = setting(3.0, "a step whose loss per bar exceeds this many times the "
                                 "median of the last 64 applied steps is skipped and undone "
                                 "(0: off)", 0.0)
    eval_windows: int = setting(2000, "validation windows evaluated per epoch (0: all)", 0)
    seed: int = setting(0, "seeds data order, augmentation, dropout and sampling", 0, 2**63 - 1)
    device: str = setting("auto", '"auto" (CUDA when present), "cpu", "cuda", "cuda:1"...')
    num_threads: int = setting(0, "torch CPU threads (0: torch's default)", 0, 256)

    @property
    def epoch_limit(self) -> int:
        """The passes a run may take: `epochs`, or with 0, 20 (`DEFAULT_EPOCHS`) unless a step
        limit or a time limit with its schedules fitted is given (then that limit ends the run;
        with --no-fit-schedules the lr decay is planned over the 20 epochs, as before)."""
        if self.epochs:
            return self.epochs
        limited = self.max_steps or (self.max_minutes and self.fit_schedules)
        return NO_EPOCH_LIMIT if limited else DEFAULT_EPOCHS

    def __post_init__(self) -> None:
        validate_fields(self)
        if self.lr == 0:  # the batch-size rule: the config then carries the value it chose
            object.__setattr__(self, "lr", default_lr(self.batch_size))
        if self.tf_schedule not in TF_SCHEDULES:
            raise TvaeError(f"unknown teacher-forcing schedule {self.tf_schedule!r} "
                            f"(--tf-schedule: one of {', '.join(TF_SCHEDULES)})")
        if self.beta_schedule not in BETA_SCHEDULES:
            raise TvaeError(f"unknown beta schedule {self.beta_schedule!r} "
                            f"(--beta-schedule: one of {', '.join(BETA_SCHEDULES)})")


@dataclass(frozen=True)
class DataConfig:
    """Training windows cut from songs."""

    bars: int = setting(33, "bars per training window (33: a bar and the 32 before it)", 1,
                        MAX_BARS)
    stride: int = setting(2, "bars between the starts of consecutive windows of a song", 1,
                          MAX_BARS)
    transpose: int = setting(5, "pitch-shift augmentation: random shift in [-transpose, "
                             "transpose]", 0, MAX_PITCH)
    valid_fraction: float = setting(0.05, "share of songs for validation when the folder has no "
                                    "manifest", 0.0, 1.0)
    test_fraction: float = setting(0.05, "share of songs for test when the folder has no "
                                   "manifest", 0.0, 1.0)
    min_bars: int = setting(2, "songs shorter than this are skipped", 1, MAX_BARS)
    repeat_augment: float = setting(0.5, "share of training windows given a repeated phrase "
                                    "(1, 2, 4 or 8 bars) at an offset drawn uniformly from the "
                                    "window: the copy pointer meets every offset, not just "
                                    "common ones", 0.0, 1.0)
    repeat_edits: float = setting(0.3, "share of those repeats given 1 or 2 moved pitches (a "
                                  "near-repeat, to be copied with edits)", 0.0, 1.0)
    repeat_reach: float = setting(0.5, "share of training batches that keep the whole window: "
                                  "in them short songs are played on past their end and given "
                                  "repeats from a quarter of the window back on (8 to 32 bars in "
                                  "33), so that far repeats are met often", 0.0, 1.0)

    def __post_init__(self) -> None:
        validate_fields(self)
        if self.valid_fraction + self.test_fraction >= 1.0:
            raise TvaeError("valid_fraction + test_fraction (--valid-fraction, --test-fraction) "
                            "must be below 1")


@dataclass(frozen=True)
class PriorConfig:
    """The learned prior p(c_k, z_k | z_<k) over bar latents and copy choices (tvae.model.prior):
    a small causal Transformer over bars."""

    d_model: int = setting(128, "width of the prior's Transformer over bars", 1, MAX_WIDTH)
    layers: int = setting(2, "the prior's Transformer layers", 1, MAX_LAYERS)
    n_heads: int = setting(4, "the prior's attention heads", 1, 256)
    d_ff: int = setting(256, "hidden width of the prior's feed-forward blocks", 1, MAX_WIDTH)
    dropout: float = setting(0.1, "dropout inside the prior's layers")
    components: int = setting(8, "Gaussians in the mixture of each bar's latent, given its copy "
                              "choice", 1, 256)

    def __post_init__(self) -> None:
        validate_fields(self)
        if not 0.0 <= self.dropout < 1.0:
            raise TvaeError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.d_model % self.n_heads:
            raise TvaeError(f"the prior's d_model {self.d_model} must be a multiple of its "
                            f"n_heads {self.n_heads}")


@dataclass(frozen=True)
class PriorFitConfig:
    """Fitting the prior after the VAE, on posterior samples of the training windows."""

    steps: int = setting(3000, "optimizer steps (the best validation step is kept)", 1, 10**7)
    max_minutes: float = setting(0.0, "stop after this many minutes (0: no limit)", 0.0, 10**6)
    batch_size: int = setting(64, "windows per step", 1, 65536)
    lr: float = setting(1e-3, "peak learning rate (AdamW, cosine decay to a tenth)", 0.0, 1.0,
                        above=True)
    transpose: int = setting(5, "pitch-shift augmentation of the windows encoded", 0, MAX_PITCH)
    eval_every: int = setting(250, "steps between validations", 1, 10**7)
    eval_windows: int = setting(400, "validation windows", 1, 10**6)
    seed: int = setting(0, "seed of the window order and of the posterior noise", 0, 2**63 - 1)


@dataclass(frozen=True)
class Configs:
    """The four configs of a run, passed whole."""

    grid: GridConfig
    model: ModelConfig
    data: DataConfig
    train: TrainConfig
