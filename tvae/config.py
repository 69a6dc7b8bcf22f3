"""Configuration dataclasses, one per concern, each saved as JSON inside every checkpoint.

`GridConfig` fixes the melody grid and vocabulary; `ModelConfig`, `DataConfig` and `TrainConfig`
describe the network, the training windows and the optimisation. Loading validates field names
and types, so a checkpoint made for another version fails with a clear message.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tvae.errors import TvaeError

T = TypeVar("T")

# Class ids shared by every vocabulary; pitch onsets follow them.
PAD = 0  # outside the melody (padding of short bars, before a pickup); ignored by the loss
REST = 1  # silence
HOLD = 2  # the previous note sounds on
N_SPECIAL = 3
MAX_BARS = 4096  # longest melody read, decoded or sampled, in bars (bounds time and memory)


@dataclass(frozen=True)
class GridConfig:
    """The melody grid: sixteenth-note steps, one class per step."""

    min_pitch: int = 48  # lowest onset pitch in the vocabulary (MIDI number, C3)
    max_pitch: int = 96  # highest onset pitch in the vocabulary (MIDI number, C7)
    steps_per_bar: int = 16  # model bar size in sixteenths; shorter meters are PAD-padded

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


def _positive(config: Any, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if not value > 0:
            raise TvaeError(f"{name} (--{name.replace('_', '-')}) must be positive, got {value}")


def _non_negative(config: Any, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if value < 0:
            raise TvaeError(f"{name} (--{name.replace('_', '-')}) must be >= 0, got {value}")


MAX_COPY_OFFSETS = 255  # the copy path reaches at most this many bars back
COPY_MODES = ("bar", "step", "none")  # per-bar choice, per-step mixture, no copy path
BAR_CODERS = ("mlp", "gru")
TF_SCHEDULES = ("constant", "linear", "exponential", "inverse_sigmoid", "logistic")
BETA_SCHEDULES = ("constant", "linear", "cyclical")
# Fields whose value is one of a fixed set: the CLI offers them as choices, checked up front.
CHOICES = {"copy": COPY_MODES, "bar_encoder": BAR_CODERS, "bar_decoder": BAR_CODERS,
           "tf_schedule": TF_SCHEDULES, "beta_schedule": BETA_SCHEDULES}


@dataclass(frozen=True)
class ModelConfig:
    """The network: local bar encoder/decoder around a Transformer VAE over bars."""

    d_model: int = 256  # width of bar vectors and of the attention layers
    d_latent: int = 64  # size Z of each bar's latent
    n_heads: int = 4  # attention heads
    enc_layers: int = 2  # Transformer encoder layers (self-attention over bars)
    dec_layers: int = 2  # Transformer decoder layers (self- and cross-attention)
    d_ff: int = 512  # hidden width of each layer's feed-forward block
    dropout: float = 0.1  # dropout inside the Transformer layers
    bar_encoder: str = "mlp"  # local bar encoder: "mlp" (the paper) or "gru" (bidirectional)
    bar_decoder: str = "mlp"  # local bar decoder: "mlp" (whole bar at once) or "gru" (step by step)
    bar_hidden: int = 512  # hidden width of the local bar encoder/decoder
    mask_encoder: bool = True  # causal encoder self-attention: bar i sees bars <= i
    mask_decoder: bool = True  # causal decoder self-attention
    mask_cross: bool = True  # decoder bar i attends to latents z_1..z_i only
    n_classes: int = 0  # classes of the optional supervised head on the mean latent (0: none)
    copy: str = "bar"  # copy path (tvae.model.pointer): "bar", "step" or "none" (the paper's model)
    copy_offsets: int = 7  # how many bars back the copy path reaches (window - 1 is enough)
    copy_edit: float = 0.02  # "bar": chance of an edit at each step of a copy (0: learned from z)

    def __post_init__(self) -> None:
        _positive(self, "d_model", "d_latent", "n_heads", "d_ff", "bar_hidden")
        _non_negative(self, "enc_layers", "dec_layers", "n_classes", "copy_offsets")
        if self.copy_offsets > MAX_COPY_OFFSETS:
            raise TvaeError(f"copy_offsets (--copy-offsets) must be at most {MAX_COPY_OFFSETS}, "
                            f"got {self.copy_offsets}")
        if not 0.0 <= self.copy_edit < 0.5:
            raise TvaeError(f"copy_edit must be in [0, 0.5), got {self.copy_edit}")
        if not 0.0 <= self.dropout < 1.0:
            raise TvaeError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.d_model % self.n_heads:
            raise TvaeError("d_model must be a multiple of n_heads")
        if self.bar_encoder not in BAR_CODERS or self.bar_decoder not in BAR_CODERS:
            raise TvaeError("bar_encoder and bar_decoder must be 'mlp' or 'gru'")
        if self.copy not in COPY_MODES:
            raise TvaeError(f"copy (--copy) must be one of {', '.join(COPY_MODES)}, got "
                            f"{self.copy!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, schedules and run control."""

    batch_size: int = 64  # windows per step
    lr: float = 1e-3  # peak AdamW learning rate
    weight_decay: float = 0.01  # AdamW weight decay
    warmup_steps: int = 300  # linear learning-rate warm-up, in steps
    min_lr_ratio: float = 0.1  # cosine decay ends at lr * min_lr_ratio
    epochs: int = 20  # passes over the training windows
    max_steps: int = 0  # stop after this many steps (0: no limit)
    max_minutes: float = 0.0  # wall-time limit, validation and checkpoints included (0: none)
    grad_clip: float = 1.0  # gradient-norm clipping
    beta_schedule: str = "linear"  # KL weight: "constant", "linear" (warm-up) or "cyclical"
    beta: float = 0.1  # KL weight after warm-up (or at each cycle's top)
    beta_steps: int = 2000  # warm-up length or cycle length, in steps
    free_bits: float = 0.0  # KL per bar below this many bits is not penalised
    tf_schedule: str = "constant"  # p_tf: constant, linear, exponential, inverse_sigmoid, logistic
    tf_p: float = 1.0  # p_tf of the constant schedule
    tf_min: float = 0.0  # lowest p_tf of decaying schedules
    tf_max: float = 1.0  # highest p_tf of decaying schedules
    tf_steps: int = 5000  # linear: steps from tf_max to tf_min
    tf_k: float = 0.9995  # exponential: p = k**step; inverse sigmoid: k/(k+exp(step/k))
    tf_gamma: float = 0.5  # logistic (Drossos et al. 2019): beta = -gamma * step / N_b
    recon_weight: float = 1.0  # lambda: weight of the reconstruction loss
    class_weight: float = 1.0  # weight of the supervised head's loss (when the model has one)
    pointer_weight: float = 0.0  # weight of the copy pointer's auxiliary loss on exact repeats
    pointer_steps: int = 0  # the pointer loss holds for this many steps, then fades out by 2x
    patience: int = 5  # early stopping: epochs without a better validation loss
    log_every: int = 20  # steps between progress and metrics updates
    checkpoint_every: int = 200  # steps between checkpoints inside an epoch (for --resume)
    max_bad_steps: int = 20  # consecutive non-finite losses before training stops
    eval_windows: int = 2000  # validation windows evaluated per epoch (0: all)
    seed: int = 0  # seeds data order, augmentation, dropout and sampling
    device: str = "auto"  # "auto" (CUDA when present), "cpu", "cuda", "cuda:1"...
    num_threads: int = 0  # torch CPU threads (0: torch's default)

    def __post_init__(self) -> None:
        _positive(self, "batch_size", "lr", "epochs", "grad_clip", "log_every",
                  "checkpoint_every", "max_bad_steps", "beta_steps", "tf_steps", "tf_k")
        _non_negative(self, "weight_decay", "warmup_steps", "max_steps", "max_minutes", "beta",
                      "free_bits", "patience", "eval_windows", "num_threads", "recon_weight",
                      "class_weight", "pointer_weight", "pointer_steps")
        if self.tf_schedule not in TF_SCHEDULES:
            raise TvaeError(f"unknown teacher-forcing schedule {self.tf_schedule!r} "
                            f"(--tf-schedule: one of {', '.join(TF_SCHEDULES)})")
        if self.beta_schedule not in BETA_SCHEDULES:
            raise TvaeError(f"unknown beta schedule {self.beta_schedule!r} "
                            f"(--beta-schedule: one of {', '.join(BETA_SCHEDULES)})")
        for name in ("tf_p", "tf_min", "tf_max", "min_lr_ratio"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise TvaeError(f"{name} must be in [0, 1], got {getattr(self, name)}")


def _check_type(name: str, value: Any, annotation: Any) -> None:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(annotation):
            try:
                _check_type(name, value, arm)
                return
            except TvaeError:
                pass
        raise TvaeError(f"config field '{name}' has an invalid value {value!r}")
    if annotation is type(None):
        ok = value is None
    elif annotation is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif annotation is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif origin in (list, tuple):
        ok = isinstance(value, (list, tuple))
    elif isinstance(annotation, type):
        ok = isinstance(value, annotation)
    else:
        ok = True
    if not ok:
        raise TvaeError(f"config field '{name}' should be {annotation}, got {value!r}")


def config_from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build dataclass `cls` from a JSON dict, refusing unknown fields and wrong types."""
    if not isinstance(data, dict):
        raise TvaeError(f"{cls.__name__} must be a JSON object")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise TvaeError(f"{cls.__name__} has unknown fields {unknown}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        _check_type(name, value, hints[name])
        if isinstance(value, list):
            value = tuple(value) if typing.get_origin(hints[name]) is tuple else value
        kwargs[name] = value
    return cls(**kwargs)


def config_to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def save_config_json(config: Any, path: str | Path) -> None:
    Path(path).write_text(json.dumps(config_to_dict(config), indent=2) + "\n")


def load_config_json(cls: type[T], path: str | Path) -> T:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise TvaeError(f"cannot read config: {exc}", path) from None
    return config_from_dict(cls, data)


@dataclass(frozen=True)
class DataConfig:
    """Training windows cut from songs."""

    bars: int = 8  # bars per training window
    stride: int = 2  # bars between the starts of consecutive windows of a song
    transpose: int = 5  # pitch-shift augmentation: random shift in [-transpose, transpose]
    valid_fraction: float = 0.05  # share of songs for validation when the folder has no manifest
    test_fraction: float = 0.05  # share of songs for test when the folder has no manifest
    min_bars: int = 2  # songs shorter than this are skipped
    repeat_augment: float = 0.0  # share of training windows given one extra exact repeat of an
    # earlier bar at a random offset: the copy pointer meets every offset, not just common ones

    def __post_init__(self) -> None:
        _positive(self, "bars", "stride", "min_bars")
        _non_negative(self, "transpose", "valid_fraction", "test_fraction")
        if not 0.0 <= self.repeat_augment <= 1.0:
            raise TvaeError(f"repeat_augment must be in [0, 1], got {self.repeat_augment}")
        if self.valid_fraction + self.test_fraction >= 1.0:
            raise TvaeError("valid_fraction + test_fraction must be below 1")
