"""The Transformer VAE over bars (Jiang et al., ICASSP 2020), without a fixed bar count.

Encoder: local bar encoder -> causal self-attention over bars -> a posterior N(mu_i, sigma_i^2)
per bar from heads shared by all positions. Decoder: the input for bar i is the local encoding of
bar i-1 (a learned start vector for bar 0) plus a position encoding; causal self-attention;
cross-attention to z_1..z_i; a local bar decoder emits the bar's steps. Each of the three masks is a
config switch (the paper's full masking is the default). The copy path (tvae.model.pointer, unless
`copy` is "none") lets each bar's latent choose to repeat an earlier bar instead of generating.
The model returns distributions (log-probabilities, per-bar log-likelihood and KL); the loss is
built from them in tvae.training.objective.

Shape legend: B batch, N bars, S steps per bar, V vocabulary, D model width, Z latent size,
C classes of the optional supervised head.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tvae.config import PAD, GridConfig, ModelConfig, PriorConfig
from tvae.model.decoding import FreeRunning
from tvae.model.forward import Noise, VAEOutput, kl_per_bar
from tvae.model.lead_in import lead_log_lik
from tvae.model.modules import (
    BarDecoderGRU,
    BarDecoderMLP,
    BarEncoderGRU,
    BarEncoderMLP,
    Block,
    attention_mask,
    mask_logits,
    on_real_bars,
    positions,
)
from tvae.model.pointer import (
    bar_log_lik,
    choose,
    chosen_log_probs,
    expected_edit_bias,
    mixture_log_probs,
    observed_log_weights,
    pointer_log_weights,
    repeat_features,
    same_as_source,
)
from tvae.model.prior import LatentPrior, log_normal
from tvae.model.windowed import WindowedReading

EDIT_TABLE_GAIN = 20.0  # the edit table's parameter is scaled by this where it is used


class TransformerVAE(FreeRunning, WindowedReading, nn.Module):
    """The model. Build it from configs: `TransformerVAE(ModelConfig(...), GridConfig(...))`;
    with `prior`, it also holds a learned prior over its latents (tvae.model.prior), which
    training the VAE leaves alone (`tvae prior` fits it afterwards)."""

    def __init__(self, config: ModelConfig, grid: GridConfig = GridConfig(),
                 prior: PriorConfig | None = None) -> None:
        super().__init__()
        self.config, self.grid, self.prior_config = config, grid, prior
        self.prior = None if prior is None else LatentPrior(
            prior, config.d_latent, config.copy_offsets if config.copy != "none" else 0)
        D, Z = config.d_model, config.d_latent
        encoder = BarEncoderMLP if config.bar_encoder == "mlp" else BarEncoderGRU
        decoder = BarDecoderMLP if config.bar_decoder == "mlp" else BarDecoderGRU
        self.edits_in = (config.encoder_edits and config.copy != "none"
                         and config.copy_offsets > 0)  # the encoder reads repeats as edits
        self.bar_encoder = encoder(grid, D, config.bar_hidden, self.edits_in)
        self.bar_decoder = decoder(grid, D, config.bar_hidden)
        blocks = [Block(D, config.n_heads, config.d_ff, config.dropout, cross=False)
                  for _ in range(config.enc_layers)]
        self.encoder = nn.ModuleList(blocks)
        self.enc_norm = nn.LayerNorm(D)
        self.repeats_in = None  # (2 O) repeat features of a bar -> (D), added to its vector
        if config.encoder_repeats and config.copy != "none" and config.copy_offsets > 0:
            self.repeats_in = nn.Linear(2 * config.copy_offsets, D)
            nn.init.zeros_(self.repeats_in.weight)  # starts as if absent (fine-tuning too)
            nn.init.zeros_(self.repeats_in.bias)
        self.repeats_mu = None  # (2 O) repeat features of a bar -> (Z), added to its mean
        if config.latent_repeats and config.copy != "none" and config.copy_offsets > 0:
            self.repeats_mu = nn.Linear(2 * config.copy_offsets, Z, bias=False)
            nn.init.zeros_(self.repeats_mu.weight)
        self.mu = nn.Linear(D, Z)  # posterior heads, shared by every bar position
        self.logvar = nn.Linear(D, Z)
        self.start = nn.Parameter(torch.zeros(D))  # decoder input of bar 0
        self.z_proj = nn.Linear(Z, D)
        blocks = [Block(D, config.n_heads, config.d_ff, config.dropout, cross=True)
                  for _ in range(config.dec_layers)]
        self.decoder = nn.ModuleList(blocks)
        self.dec_norm = nn.LayerNorm(D)
        self.classifier = nn.Linear(Z, config.n_classes) if config.n_classes else None
        self.pointer = None  # the copy path (tvae.model.pointer): generate, or copy 1..O bars back
        self.edit = None  # per-step edit logits of a copy, from z alone: (Z) -> (S)
        self.learn_edit = (config.copy == "bar" and config.copy_edit == 0
                           and not config.copy_edit_steps)
        if config.copy != "none":  # with a learned edit chance, column 0 is its logit
            self.pointer = nn.Linear(Z, int(self.learn_edit) + 1 + config.copy_offsets)
            nn.init.zeros_(self.pointer.bias)
            nn.init.normal_(self.pointer.weight, std=0.02)
            if self.learn_edit:
                nn.init.constant_(self.pointer.bias[:1], -3.0)  # edits start rare (eps 0.05)
        if config.copy == "bar" and config.copy_edit_steps:
            self.edit = nn.Linear(Z, grid.steps_per_bar)
            nn.init.normal_(self.edit.weight, std=0.02)
            start = config.copy_edit or 0.02  # edits start rare
            nn.init.constant_(self.edit.bias, math.log(start / (1 - start)))
        self.lead = None  # bar 0's lead-in length from its latent: (Z) -> (S) logits
        if config.lead_in:
            self.lead = nn.Linear(Z, grid.steps_per_bar)
            nn.init.zeros_(self.lead.weight)  # starts uniform: greedy decoding reads no lead-in,
            nn.init.zeros_(self.lead.bias)  # as before the head (fine-tuning too)
        self.edit_table = None  # (V, V) bias of a copy's edit by the source's token, from 0,
        # used times EDIT_TABLE_GAIN (`edit_bias_table`): a bias of a few nats is learned in a
        # few hundred steps at the learning rates of fine-tuning
        if self.edit is not None and config.edit_source:
            self.edit_table = nn.Parameter(torch.zeros(grid.vocab_size, grid.vocab_size))

    @property
    def edit_bias_table(self) -> Tensor | None:
        """(V, V) what a copy's edit adds to the generator's logits, by (source token, new
        token); None without `edit_source`."""
        return None if self.edit_table is None else self.edit_table * EDIT_TABLE_GAIN

    # -- encoder ---------------------------------------------------------------------------
    def encode(self, tokens: Tensor, meters: Tensor) -> tuple[Tensor, Tensor]:
        """tokens (B, N, S), meters (B, N) -> mu, logvar (B, N, Z)."""
        bar_mask = (tokens != PAD).any(-1)  # (B, N)
        same = same_as_source(tokens, self.config.copy_offsets) if self.edits_in else None
        return self._posterior(on_real_bars(self.bar_encoder, bar_mask, tokens, meters, same),
                               bar_mask, tokens)

    def _posterior(self, bar_vecs: Tensor, bar_mask: Tensor, tokens: Tensor
                   ) -> tuple[Tensor, Tensor]:
        B, N, D = bar_vecs.shape
        x = bar_vecs + positions(N, D, bar_vecs.device)  # (B, N, D)
        features = None  # where each bar repeats an earlier one (pointer.py): (B, N, 2 O)
        if self.repeats_in is not None or self.repeats_mu is not None:
            features = repeat_features(tokens, self.config.copy_offsets).to(x.dtype)
        if self.repeats_in is not None:
            x = x + self.repeats_in(features)
        mask = attention_mask(bar_mask, self.config.mask_encoder)
        for block in self.encoder:
            x = block(x, mask, self.config.mask_encoder)
        x = self.enc_norm(x)
        mu = self.mu(x)  # (B, N, Z)
        if self.repeats_mu is not None:
            mu = mu + self.repeats_mu(features)
        return mu, self.logvar(x).clamp(-12.0, 8.0)

    # -- decoder ---------------------------------------------------------------------------
    def _memory(self, z: Tensor) -> Tensor:
        B, N, _ = z.shape
        return self.z_proj(z) + positions(N, self.config.d_model, z.device)  # (B, N, D)

    def _decode_hidden(self, prev_vecs: Tensor, memory: Tensor, bar_mask: Tensor) -> Tensor:
        """prev_vecs (B, N, D): local encodings of bars 0..N-2 -> decoder states (B, N, D)."""
        B, N, D = prev_vecs.shape
        start = self.start.expand(B, 1, D)
        x = torch.cat([start, prev_vecs[:, :-1]], dim=1) + positions(N, D, prev_vecs.device)
        self_mask = attention_mask(bar_mask, self.config.mask_decoder)
        cross_mask = attention_mask(bar_mask, self.config.mask_cross)
        for block in self.decoder:
            x = block(x, self_mask, self.config.mask_decoder, memory, cross_mask)
        return self.dec_norm(x)

    def pointer_weights(self, z: Tensor, bar_mask: Tensor) -> tuple[Tensor | None,
                                                                     Tensor | None]:
        """From z (B, N, Z) alone: the pointer's log weights (B, N, 1 + N) (generate, copy bar
        j) and, for the per-bar choice, the log edit probability of each step of a copy: (B, N,
        S) with per-step edits, else (B, N, 1). None, None for the stock model."""
        if self.pointer is None:
            return None, None
        raw = self.pointer(z).float()
        if self.learn_edit:
            return pointer_log_weights(raw[..., 1:], bar_mask), F.logsigmoid(raw[..., :1])
        log_pi = pointer_log_weights(raw, bar_mask)
        if self.config.copy == "step":
            return log_pi, None
        if self.edit is not None:
            return log_pi, F.logsigmoid(self.edit(z).float())  # (B, N, S)
        return log_pi, torch.full((*raw.shape[:2], 1), math.log(self.config.copy_edit),
                                  device=raw.device)

    def log_pointer(self, z: Tensor, bar_mask: Tensor) -> Tensor | None:
        """The pointer's log weights (B, N, 1 + N) from z alone; None for the stock model."""
        return self.pointer_weights(z, bar_mask)[0]

    def _predict(self, logits: Tensor, meters: Tensor, log_pi: Tensor | None,
                 log_eps: Tensor | None, sources: Tensor) -> Tensor:
        """Generator logits (B, N, S, V) -> the step log-probabilities decoding uses: with the
        copy path, mixed with (or, per bar, replaced by the copy of) `sources` (B, N', S)."""
        gen = mask_logits(logits.float(), meters).log_softmax(-1)
        if log_pi is None:
            return gen
        if log_eps is None:
            return mixture_log_probs(logits, meters, log_pi, sources)
        return mask_logits(chosen_log_probs(gen, sources, log_eps, choose(log_pi),
                                            self.edit_bias_table), meters)

    def _outputs(self, logits: Tensor, meters: Tensor, tokens: Tensor, sources: Tensor,
                 log_pi: Tensor | None, log_eps: Tensor | None,
                 choices: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(log_probs (B, N, S, V) as decoded, log_lik (B, N) of the true bars `tokens`); with
        `choices` (B, N, N), the likelihood of the per-bar copy choice as observed."""
        log_probs = self._predict(logits, meters, log_pi, log_eps, sources)
        target = tokens != PAD
        if log_eps is not None:
            gen = mask_logits(logits.float(), meters).log_softmax(-1)
            if choices is not None:
                log_pi = observed_log_weights(log_pi, choices)
            table = self.edit_bias_table
            bias = None if table is None else expected_edit_bias(table, log_pi, sources)
            return log_probs, bar_log_lik(gen, tokens, sources, log_pi, log_eps, bias)
        picked = log_probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # (B, N, S)
        return log_probs, torch.where(target, picked, torch.zeros_like(picked)).sum(-1)

    def decode_teacher_forced(self, z: Tensor, tokens: Tensor, meters: Tensor
                              ) -> tuple[Tensor, Tensor]:
        """Given z (B, N, Z) and the true previous bars (which are also what the copy path
        copies): step log-probabilities (B, N, S, V) as decoded and each bar's log-likelihood
        (B, N) in nats."""
        bar_mask = (tokens != PAD).any(-1)
        prev = on_real_bars(self.bar_encoder, bar_mask, tokens, meters)  # (B, N, D)
        h = self._decode_hidden(prev, self._memory(z), bar_mask)
        logits = on_real_bars(self.bar_decoder, bar_mask, h, meters, tokens)  # (B, N, S, V)
        log_probs, log_lik = self._outputs(logits, meters, tokens, tokens,
                                           *self.pointer_weights(z, bar_mask))
        return log_probs, log_lik + self._lead_log_lik(z, tokens, meters)

    def _lead_log_lik(self, z: Tensor, tokens: Tensor, meters: Tensor) -> Tensor | float:
        """(B, N) what the lead-in head adds to each bar's log-likelihood (bar 0 only); 0
        without the head."""
        if self.lead is None:
            return 0.0
        return lead_log_lik(self.lead(z[:, 0]), tokens, meters)

    # -- training --------------------------------------------------------------------------
    def forward(self, tokens: Tensor, meters: Tensor, *, p_tf: float = 1.0,
                sample: bool = True, noise: Noise | None = None,
                choices: Tensor | None = None) -> VAEOutput:
        """tokens (B, N, S), meters (B, N) -> the model's distributions (no loss: see
        tvae.training.objective).

        With p_tf < 1 (scheduled sampling), a first teacher-forced pass decodes every bar in
        parallel; bar j as seen by later bars (their decoder input, and what the copy path
        copies) is then, with probability p_tf, the true bar j and otherwise that first pass's
        argmax; a second pass gives the output. `noise` gives the random numbers of the latent
        sample and of scheduled sampling (else they come from torch's generator). `choices`
        (B, N, N) bool, the data's copy sources (`pointer.copy_target`), makes the per-bar
        likelihood that of the choice as observed (`pointer.observed_log_weights`)."""
        bar_mask = (tokens != PAD).any(-1)  # (B, N) real bars
        true_vecs = on_real_bars(self.bar_encoder, bar_mask, tokens, meters)  # (B, N, D)
        if self.edits_in:  # the posterior reads repeats as their edits, as `encode` does
            mu, logvar = self.encode(tokens, meters)
        else:  # the same bar vectors as the decoder's inputs: encoded once
            mu, logvar = self._posterior(true_vecs, bar_mask, tokens)
        if sample:
            eps = torch.randn_like(mu) if noise is None else noise.latent  # (B, N, Z)
            z = mu + eps * (0.5 * logvar).exp()
        else:
            z = mu  # (B, N, Z)
        memory = self._memory(z)
        log_pi, log_eps = self.pointer_weights(z, bar_mask)
        prev, sources = true_vecs, tokens
        if p_tf < 1.0:
            with torch.no_grad():
                h = self._decode_hidden(true_vecs, memory, bar_mask)
                logits = on_real_bars(self.bar_decoder, bar_mask, h, meters, tokens)
                first = self._predict(logits, meters, log_pi, log_eps, tokens)
                guess = first.argmax(-1).masked_fill(tokens == PAD, PAD)  # (B, N, S)
            u = torch.rand(bar_mask.shape, device=tokens.device) if noise is None else noise.bars
            keep = u < p_tf  # (B, N)
            guess_vecs = on_real_bars(self.bar_encoder, bar_mask, guess, meters)  # (B, N, D)
            prev = torch.where(keep[..., None], true_vecs, guess_vecs)
            sources = torch.where(keep[..., None], tokens, guess)
        h = self._decode_hidden(prev, memory, bar_mask)
        draws = None if noise is None else noise.steps
        logits = on_real_bars(lambda *t: self.bar_decoder(*t[:3], p_tf, t[3]), bar_mask, h,
                              meters, tokens, draws)  # (B, N, S, V)
        log_probs, log_lik = self._outputs(logits, meters, tokens, sources, log_pi, log_eps,
                                           choices)
        log_lik = log_lik + self._lead_log_lik(z, tokens, meters)
        kl = kl_per_bar(mu, logvar)  # (B, N) nats, against N(0, I)
        if self.prior is not None and sample:  # trained jointly: against the learned prior,
            # estimated from this sample of z: log q(z | x) - log p(z_k | z_<k)
            kl = log_normal(z.float(), mu.float(), logvar.float()) - self.prior.log_marginal(
                z, meters, bar_mask)
        out = VAEOutput(log_probs, log_lik * bar_mask, kl * bar_mask, mu, logvar, log_pi, log_eps)
        if self.classifier is not None:
            pooled = (mu * bar_mask[..., None]).sum(1) / bar_mask.sum(1, keepdim=True).clamp(min=1)
            out.class_logits = self.classifier(pooled)  # (B, C)
        return out
