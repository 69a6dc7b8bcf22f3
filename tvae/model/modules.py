"""Building blocks: local bar encoders/decoders and attention layers (no VAE logic).

Shape legend: B batch, N bars, S steps per bar, V vocabulary, D model width, H heads,
Hd head width, F step features, M meters.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tvae.config import PAD, GridConfig
from tvae.melody import BEAT_STEPS, METER_STEPS, METERS
from tvae.model.dropout import Dropout, dropout

N_STEP_FEATURES = 4  # valid step, downbeat, beat, eighth-note position


def step_features(steps_per_bar: int) -> Tensor:
    """(M, S, F) metric features of each step of a bar, for each meter."""
    feats = torch.zeros(len(METERS), steps_per_bar, N_STEP_FEATURES)
    for m, meter in enumerate(METERS):
        n, beat = METER_STEPS[meter], BEAT_STEPS[meter]
        steps = torch.arange(steps_per_bar)
        feats[m, :, 0] = (steps < n).float()
        feats[m, :, 1] = (steps == 0).float()
        feats[m, :, 2] = ((steps % beat == 0) & (steps < n)).float()
        feats[m, :, 3] = ((steps % 2 == 0) & (steps < n)).float()
    return feats


def valid_steps(meters: Tensor, steps_per_bar: int) -> Tensor:
    """(B, N, S) bool: which steps of each bar its meter uses. meters: (B, N) meter ids."""
    lengths = torch.tensor([METER_STEPS[m] for m in METERS], device=meters.device)
    return torch.arange(steps_per_bar, device=meters.device) < lengths[meters].unsqueeze(-1)


def positions(n: int, d: int, device: torch.device) -> Tensor:
    """(n, d) sinusoidal position encodings of bars 0..n-1: any number of bars."""
    pos = torch.arange(n, device=device, dtype=torch.float32).unsqueeze(1)  # (n, 1)
    freq = torch.exp(torch.arange(0, d, 2, device=device, dtype=torch.float32)
                     * (-math.log(10000.0) / d))
    enc = torch.zeros(n, d, device=device)
    enc[:, 0::2] = torch.sin(pos * freq)
    enc[:, 1::2] = torch.cos(pos * freq[: d // 2])
    return enc


class BarEncoderMLP(nn.Module):
    """One bar's steps -> a bar vector. Equivalent to a linear layer on the flattened one-hot bar
    (an embedding per (step, class) pair, summed), plus meter and step features, then an MLP."""

    def __init__(self, grid: GridConfig, d_model: int, hidden: int, edits: bool = False
                 ) -> None:
        super().__init__()
        self.S, self.V = grid.steps_per_bar, grid.vocab_size
        self.step_class = nn.Embedding(self.S * self.V, hidden)
        self.meter = nn.Embedding(len(METERS), hidden)
        feats = step_features(self.S).flatten(1)  # (M, S*F)
        self.register_buffer("feats", feats, persistent=False)
        self.feat_proj = nn.Linear(self.S * N_STEP_FEATURES, hidden, bias=False)
        self.out = nn.Sequential(nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, d_model))
        self.same_step: nn.Parameter | None = None  # (S, hidden): "as the source bar" per step
        if edits:
            self.same_step = nn.Parameter(torch.zeros(self.S, hidden))

    def forward(self, tokens: Tensor, meters: Tensor, same: Tensor | None = None) -> Tensor:
        """tokens (B, N, S), meters (B, N) -> (B, N, D). With `same` (B, N, S) bool (an
        encoder built with `edits`), the steps it marks read as the learned 'same' vector."""
        B, N, S = tokens.shape
        steps = torch.arange(S, device=tokens.device)  # (S,)
        idx = tokens + steps * self.V  # (B, N, S) rows of the (step, class) table
        table = self.step_class.weight  # (S * V, hidden)
        if same is not None and self.same_step is not None:  # "same" rows follow the table's
            idx = torch.where(same, S * self.V + steps, idx)
            table = torch.cat([table, self.same_step.to(table.dtype)])
        # summed in one embedding_bag: no (B, N, S, hidden) tensor (6x faster on a CPU)
        h = F.embedding_bag(idx.reshape(B * N, S), table, mode="sum").view(B, N, -1)
        h = h + self.meter(meters) + self.feat_proj(self.feats[meters])
        return self.out(h)


class BarEncoderGRU(nn.Module):
    """One bar's steps -> a bar vector with a small bidirectional GRU over the steps."""

    def __init__(self, grid: GridConfig, d_model: int, hidden: int, edits: bool = False
                 ) -> None:
        super().__init__()
        self.S = grid.steps_per_bar
        self.embed = nn.Embedding(grid.vocab_size, hidden)
        self.same_step: nn.Parameter | None = None  # (S, hidden): "as the source bar" per step
        if edits:
            self.same_step = nn.Parameter(torch.zeros(self.S, hidden))
        self.meter = nn.Embedding(len(METERS), hidden)
        self.register_buffer("feats", step_features(self.S), persistent=False)  # (M, S, F)
        self.feat_proj = nn.Linear(N_STEP_FEATURES, hidden, bias=False)
        self.gru = nn.GRU(hidden, hidden // 2, batch_first=True, bidirectional=True)
        self.out = nn.Linear(hidden, d_model)

    def forward(self, tokens: Tensor, meters: Tensor, same: Tensor | None = None) -> Tensor:
        """tokens (B, N, S), meters (B, N) -> (B, N, D); `same` as in BarEncoderMLP."""
        B, N, S = tokens.shape
        x = self.embed(tokens)
        if same is not None and self.same_step is not None:
            x = torch.where(same[..., None], self.same_step.to(x.dtype), x)
        x = x + self.feat_proj(self.feats[meters])
        x = x + self.meter(meters)[:, :, None]  # (B, N, S, hidden)
        _, h = self.gru(x.reshape(B * N, S, -1))  # h: (2, B*N, hidden/2)
        h = h.transpose(0, 1).reshape(B, N, -1)  # (B, N, hidden)
        return self.out(h)


def attention_mask(bar_mask: Tensor, causal: bool) -> Tensor:
    """(B, 1, N, N) bool attention mask (True = may attend). Built on the device every time
    (no host sync to test for padding): at bar level N is small."""
    N = bar_mask.shape[1]
    allowed = bar_mask[:, None, None, :].expand(-1, 1, N, N)  # keys that are real bars
    if causal:
        allowed = allowed & torch.ones(N, N, dtype=torch.bool, device=bar_mask.device).tril()
    return allowed | torch.eye(N, dtype=torch.bool, device=bar_mask.device)  # never an empty row


def mask_logits(logits: Tensor, meters: Tensor) -> Tensor:
    """Decoding constraint: PAD exactly on the steps a bar's meter does not use."""
    valid = valid_steps(meters, logits.shape[-2]).unsqueeze(-1)  # (B, N, S, 1)
    is_pad = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
    is_pad[PAD] = True
    allowed = torch.where(valid, ~is_pad, is_pad)  # (B, N, S, V)
    return logits.masked_fill(~allowed, float("-inf"))


class BarDecoderMLP(nn.Module):
    """A bar vector -> the logits of all of the bar's steps at once (the paper's decoder)."""

    def __init__(self, grid: GridConfig, d_model: int, hidden: int) -> None:
        super().__init__()
        self.S, self.V = grid.steps_per_bar, grid.vocab_size
        self.meter = nn.Embedding(len(METERS), d_model)
        self.net = nn.Sequential(nn.Linear(d_model, hidden), nn.GELU(),
                                 nn.Linear(hidden, self.S * self.V))

    def forward(self, h: Tensor, meters: Tensor, targets: Tensor | None = None,
                p_tf: float = 1.0, draws: Tensor | None = None) -> Tensor:
        """h (B, N, D), meters (B, N) -> logits (B, N, S, V). targets, p_tf and draws are
        unused here."""
        B, N, _ = h.shape
        return self.net(h + self.meter(meters)).view(B, N, self.S, self.V)

    def generate(self, h: Tensor, meters: Tensor, sampler, mix=None) -> Tensor:  # noqa: ANN001
        """h (B, N, D) -> tokens (B, N, S), each step drawn by `sampler` from masked logits, or
        from `mix(masked logits)` (log-probabilities, e.g. the copy path's mixture)."""
        logits = mask_logits(self.forward(h, meters), meters)
        return sampler(logits if mix is None else mix(logits))


class BarDecoderGRU(nn.Module):
    """A bar vector -> step logits, autoregressively: a GRU over the steps whose input is the
    previous step's class. Teacher forcing and scheduled sampling apply to steps too."""

    def __init__(self, grid: GridConfig, d_model: int, hidden: int) -> None:
        super().__init__()
        self.S, self.V = grid.steps_per_bar, grid.vocab_size
        self.embed = nn.Embedding(self.V + 1, hidden)  # index V: start of bar
        self.register_buffer("feats", step_features(self.S), persistent=False)  # (M, S, F)
        self.feat_proj = nn.Linear(N_STEP_FEATURES, hidden, bias=False)
        self.cond = nn.Linear(d_model, hidden)
        self.init = nn.Linear(d_model, hidden)
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        self.out = nn.Linear(hidden, self.V)

    def _run(self, h: Tensor, meters: Tensor, prev: Tensor) -> Tensor:
        """prev (B, N, S) classes fed at each step (start token first) -> logits (B, N, S, V)."""
        B, N, S = prev.shape
        x = self.embed(prev) + self.feat_proj(self.feats[meters]) + self.cond(h)[:, :, None]
        h0 = torch.tanh(self.init(h)).reshape(1, B * N, -1)  # (1, B*N, hidden)
        out, _ = self.gru(x.reshape(B * N, S, -1), h0)  # (B*N, S, hidden)
        return self.out(out).view(B, N, S, self.V)

    def _shift(self, tokens: Tensor) -> Tensor:
        start = torch.full_like(tokens[..., :1], self.V)
        return torch.cat([start, tokens[..., :-1]], dim=-1)  # (B, N, S)

    def forward(self, h: Tensor, meters: Tensor, targets: Tensor | None = None,
                p_tf: float = 1.0, draws: Tensor | None = None) -> Tensor:
        """Teacher-forced logits (B, N, S, V); with p_tf < 1, each step's input is the true class
        where `draws` (B, N, S) uniform numbers (default: torch's generator) are below p_tf,
        else the argmax of a first teacher-forced pass (in parallel)."""
        assert targets is not None, "the autoregressive bar decoder needs the true steps"
        prev = self._shift(targets)
        if p_tf < 1.0:
            with torch.no_grad():
                guess = mask_logits(self._run(h, meters, prev), meters).argmax(-1)  # (B, N, S)
            if draws is None:
                draws = torch.rand(prev.shape, device=prev.device)
            keep = draws < p_tf  # (B, N, S)
            prev = torch.where(keep, prev, self._shift(guess))
        return self._run(h, meters, prev)

    def generate(self, h: Tensor, meters: Tensor, sampler, mix=None) -> Tensor:  # noqa: ANN001
        """Free-running: each step's input is the class drawn at the previous step. `mix` maps
        masked logits (B, 1, S, V) to log-probabilities (one bar at a time: N must be 1)."""
        B, N, _ = h.shape
        assert mix is None or N == 1, "mixing decodes one bar at a time"
        x_h = self.cond(h).reshape(B * N, 1, -1)
        state = torch.tanh(self.init(h)).reshape(1, B * N, -1)
        feats = self.feat_proj(self.feats[meters]).reshape(B * N, self.S, -1)
        flat_meters = meters.reshape(B * N, 1)
        prev = torch.full((B * N,), self.V, dtype=torch.long, device=h.device)
        out = []
        for s in range(self.S):
            x = self.embed(prev)[:, None] + feats[:, s : s + 1] + x_h  # (B*N, 1, hidden)
            y, state = self.gru(x, state)
            logits = torch.full((B * N, 1, self.S, self.V), 0.0, device=h.device)
            logits[:, 0, s] = self.out(y[:, 0])
            logits = mask_logits(logits, flat_meters)
            step = sampler(logits if mix is None else mix(logits))[:, 0, s]  # (B*N,)
            out.append(step)
            prev = step
        return torch.stack(out, dim=-1).view(B, N, self.S)


class Attention(nn.Module):
    """Multi-head attention on PyTorch's fused scaled_dot_product_attention, with a KV cache."""

    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.h, self.dropout = heads, dropout
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.o = nn.Linear(d, d)

    def split(self, x: Tensor) -> Tensor:
        B, T, D = x.shape
        return x.view(B, T, self.h, D // self.h).transpose(1, 2)  # (B, H, T, Hd)

    def keys_values(self, x: Tensor) -> tuple[Tensor, Tensor]:
        k, v = self.kv(x).chunk(2, dim=-1)
        return self.split(k), self.split(v)  # (B, H, T, Hd) each

    def forward(self, x: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None,
                causal: bool = False) -> Tensor:
        """x (B, T, D) against k, v (B, H, T', Hd); mask (B|1, 1, T, T') bool, True = see."""
        q = self.split(self.q(x))  # (B, H, T, Hd)
        p = self.dropout if self.training else 0.0
        if p > 0 and q.device.type == "cpu":  # torch's CPU kernel draws its dropout slowly
            y = attend_with_dropout(q, k, v, mask, causal and mask is None, p)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p,
                                               is_causal=causal and mask is None)
        B, _, T, _ = y.shape
        return self.o(y.transpose(1, 2).reshape(B, T, -1))  # (B, T, D)


def attend_with_dropout(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, causal: bool,
                        p: float) -> Tensor:
    """scaled_dot_product_attention with dropout p on the attention weights, computed step by
    step so that the dropout is `tvae.model.dropout`'s (7.7 ms against torch's 11.4 ms at the
    training size on a 2-core Xeon: `python -m bench.bench_dropout`). q (B, H, T, Hd), k and
    v (B, H, T', Hd); mask (B|1, 1, T, T') bool, True = see (or None, with `causal`: query t
    sees keys <= t, as torch's) -> (B, H, T, Hd)."""
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5  # (B, H, T, T')
    if mask is None and causal:
        T, T2 = scores.shape[-2:]
        mask = torch.ones(T, T2, dtype=torch.bool, device=q.device).tril()
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return dropout(scores.softmax(-1), p, True) @ v


class FeedForward(nn.Sequential):
    def __init__(self, d: int, d_ff: int, dropout: float) -> None:
        super().__init__(nn.Linear(d, d_ff), nn.GELU(), nn.Linear(d_ff, d), Dropout(dropout))


class Block(nn.Module):
    """Pre-LayerNorm Transformer layer: self-attention, optional cross-attention, feed-forward."""

    def __init__(self, d: int, heads: int, d_ff: int, dropout: float, cross: bool) -> None:
        super().__init__()
        self.ln1, self.self_attn = nn.LayerNorm(d), Attention(d, heads, dropout)
        self.ln2 = nn.LayerNorm(d) if cross else None
        self.cross_attn = Attention(d, heads, dropout) if cross else None
        self.ln3, self.ff = nn.LayerNorm(d), FeedForward(d, d_ff, dropout)
        self.drop = Dropout(dropout)

    def forward(self, x: Tensor, self_mask: Tensor | None, causal: bool,
                memory: Tensor | None = None, cross_mask: Tensor | None = None,
                cache: dict | None = None) -> Tensor:
        """x (B, T, D); memory (B, T', D). With `cache` (incremental decoding), x holds only the
        newest positions; their keys/values are appended to the cache's."""
        h = self.ln1(x)
        k, v = self.self_attn.keys_values(h)
        if cache is not None:
            if "k" in cache:
                k = torch.cat([cache["k"], k], dim=2)
                v = torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        x = x + self.drop(self.self_attn(h, k, v, self_mask, causal))
        if self.cross_attn is not None and memory is not None:
            if cache is not None and "mk" in cache:
                mk, mv = cache["mk"], cache["mv"]
            else:
                mk, mv = self.cross_attn.keys_values(memory)
                if cache is not None:
                    cache["mk"], cache["mv"] = mk, mv
            x = x + self.drop(self.cross_attn(self.ln2(x), mk, mv, cross_mask))
        return x + self.ff(self.ln3(x))


def on_real_bars(fn: Callable[..., Tensor], bar_mask: Tensor, *tensors: Tensor | None
                 ) -> Tensor:
    """`fn(*tensors)` for per-bar tensors (B, N, ...), computed on the real bars only where that
    saves work: on the CPU, the real bars are gathered into one row (1, R, ...), and the result
    is put back in place, zeros on all-PAD bars (which no real bar reads: windows are padded
    at the end, and attention masks padding). Long windows of short songs then cost what
    their bars cost. On accelerators (static shapes, no host sync) every bar is computed."""
    if bar_mask.device.type != "cpu" or bool(bar_mask.all()):
        return fn(*tensors)
    packed = [None if t is None else t[bar_mask][None] for t in tensors]  # (1, R, ...)
    out = fn(*packed)[0]  # (R, ...)
    full = out.new_zeros((*bar_mask.shape, *out.shape[1:]))  # (B, N, ...)
    full[bar_mask] = out
    return full
