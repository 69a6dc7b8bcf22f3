"""Free-running decoding: each bar decoded from the bars decoded before it, the copy path
copying decoded bars. `TransformerVAE` takes it as a mixin (it provides the encoders, the
decoder stack, `_memory`, `_decode_hidden`, `pointer_weights` and the lead-in head `lead`).

Shape legend: B batch, N bars, S steps per bar, V vocabulary, D model width, Z latent size,
W window.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from tvae.config import PAD
from tvae.model.lead_in import lead_outside
from tvae.model.modules import mask_logits, positions
from tvae.model.pointer import NEAR_STEPS, choose, chosen_log_probs, mixture_log_probs
from tvae.model.sampling import Sampler, argmax_sampler

MODEL_EDITS = -1  # in `edits`: the step's edit chance is the model's, read from z
SURE = 30.0  # nats: how sure a located edit (or keep) is made


def choice_offsets(log_pi: Tensor) -> Tensor:
    """The pointer's likeliest choices, log_pi (B, N, 1 + N), as `free_run(choices=...)` takes
    them: (B, N) 0 generate, o copy the bar o back."""
    pick = choose(log_pi)  # (B, N): 0 generate, 1 + j copy bar j
    k = torch.arange(log_pi.shape[1], device=log_pi.device)[None]
    return torch.where(pick > 0, k - (pick - 1), 0)


def located_edits(own: Tensor, choices: Tensor, mine: Tensor | None = None,
                  max_edits: int = NEAR_STEPS) -> Tensor:
    """Where a transfer's copies are edited, located from B's own decoding. own (B, N, S) B's
    latents decoded free-running; choices (B, N) the bars' copy choices in the transfer (0
    generate, o copy the bar o back); mine (B, N) bool, the bars whose latents are still B's
    (default all: the transferred bars' latents, A's, say what those bars are). Returns (B, N,
    S) int8 for `free_run(edits=...)`: a bar of B's that copies bar j and, in `own`, differs
    from its bar j in at most `max_edits` steps gets 1 at those steps (edits: the generator's
    token) and 0 elsewhere (the new source's token, so that it develops what it copies); every
    other bar gets MODEL_EDITS."""
    B, N, S = own.shape
    k = torch.arange(N, device=own.device)[None].expand(B, N)  # (B, N)
    src = (k - choices).clamp(min=0)  # (B, N) the copied bar (itself where generated)
    source = own.gather(1, src[..., None].expand(B, N, S))  # (B, N, S)
    differs = own != source  # (B, N, S)
    located = (choices > 0) & (choices <= k) & (differs.sum(-1) <= max_edits)  # (B, N)
    if mine is not None:
        located &= mine
    return torch.where(located[..., None], differs.to(torch.int8),
                       torch.full_like(differs, MODEL_EDITS, dtype=torch.int8))


class FreeRunning:
    """`free_run` over the class's own modules (see the module's docstring)."""

    def _all_pointers(self, z: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """`pointer_weights` of z (B, N, Z) for decoding, where every bar is real."""
        return self.pointer_weights(z, torch.ones(z.shape[:2], dtype=torch.bool,
                                                  device=z.device))

    def _mixer(self, pointers: tuple[Tensor | None, Tensor | None], i: int,
               sources: list[Tensor], meters: Tensor, sampler: Sampler,
               forced: Tensor | None = None, edits: Tensor | None = None
               ) -> Callable[[Tensor], Tensor] | None:
        """For decoding bar i alone, given `_all_pointers` of its latents: masked logits
        (B, 1, S, V) -> the step log-probabilities of the copy path, given the decoded
        `sources` (each (B, 1, S)). `forced` (B,): the bar's choice where it is given (0
        generate, o copy the bar o back; -1, or o past the sources: the pointer's). `edits`
        (B, S) int8: where a copy is edited (1) or kept (0), MODEL_EDITS: the model's chance."""
        log_pi, log_eps = pointers
        if log_pi is None or not sources:
            return None
        row = log_pi[:, i : i + 1, : 1 + len(sources)]  # (B, 1, 1 + i)
        src = torch.cat(sources, dim=1)  # (B, i, S)
        if log_eps is None:
            return lambda logits: mixture_log_probs(logits, meters, row, src)
        choice = choose(row, getattr(sampler, "generator", None),
                        sample=sampler is not argmax_sampler)  # (B, 1): one choice per bar
        if forced is not None:
            o, n = forced[:, None], len(sources)  # (B, 1)
            choice = torch.where((o >= 0) & (o <= n), torch.where(o > 0, 1 + n - o, 0), choice)
        eps = log_eps[:, i : i + 1]  # (B, 1, S) or (B, 1, 1)
        if edits is not None:
            eps = torch.where(edits[:, None] == MODEL_EDITS, eps,
                              torch.where(edits[:, None] > 0, 0.0, -SURE))  # (B, 1, S)

        def mix(logits: Tensor) -> Tensor:
            gen = logits.float().log_softmax(-1)
            return mask_logits(chosen_log_probs(gen, src, eps, choice, self.edit_bias_table),
                               meters)

        return mix

    @torch.no_grad()
    def transfer_run(self, z: Tensor, own: Tensor, meters: Tensor, window: int = 0,
                     outside: Tensor | None = None, choices: Tensor | None = None,
                     mine: Tensor | None = None) -> Tensor:
        """Decode a transfer: z (B, N, Z), B's latents with some bars taken from A, each copy's
        edits located from `own` (B, N, S), B's own latents decoded free-running with the same
        `window` and `outside` (`located_edits`): a bar that B repeats with a change takes the
        new source's notes and keeps B's change, where the edit chances read from z would
        regenerate B's old notes. `choices` (B, N): the copy choices (0 generate, o copy the
        bar o back), by default the pointer's for z (computed at once: give them for long
        songs); `mine` (B, N) bool the bars whose latents are B's (default all; a transferred
        bar is decoded as its latent says). Returns tokens (B, N, S)."""
        if choices is None:
            log_pi, _ = self._all_pointers(z)
            if log_pi is None:
                return self.free_run(z, meters, window=window, outside=outside)
            choices = choice_offsets(log_pi)  # (B, N)
        return self.free_run(z, meters, window=window, choices=choices, outside=outside,
                             edits=located_edits(own, choices, mine))

    @torch.no_grad()
    def free_run(self, z: Tensor, meters: Tensor, sampler: Sampler = argmax_sampler,
                 use_cache: bool = True, window: int = 0, choices: Tensor | None = None,
                 prefix: Tensor | None = None, outside: Tensor | None = None,
                 edits: Tensor | None = None) -> Tensor:
        """Decode z (B, N, Z) without teacher forcing: the input for bar i is the encoding of the
        bar decoded for i-1, and the copy path copies decoded bars. Cached (linear in N) when
        decoder self-attention is causal. With `window` > 0, bars after the first `window` are
        decoded from the `window` bars ending at them (positions 0..window-1), which is also
        linear in N. `choices` (B, N) gives bars' copy choices (0 generate, o copy the bar o
        back, -1 the pointer's: a learned prior's draws); `prefix` (B, P, S) bars taken as
        they are, not decoded (a melody continued); `outside` (B, N, S) bool, steps known to
        lie outside the melody (before a pickup), decoded as PAD, as the data has them, so that
        later bars read and copy them as in training; without it, a model with a lead-in head
        (`lead_in`) reads bar 0's lead-in from z_0 (`tvae.model.lead_in`) unless bar 0 is in
        `prefix`; `edits` (B, N, S) int8 where copies are edited (1: the generator's token) or
        kept (0: the source's), MODEL_EDITS where the model's edit chance decides
        (`located_edits`). Returns tokens (B, N, S)."""
        N = z.shape[1]
        if outside is None and self.lead is not None and (prefix is None or prefix.shape[1] == 0):
            outside = lead_outside(self.lead(z[:, 0]), meters, N, sampler)
        if window <= 0 or window >= N:
            return self._free_run(z, meters, sampler, use_cache, choices, prefix, outside,
                                  edits)
        first = self._free_run(z[:, :window], meters[:, :window], sampler, use_cache,
                               None if choices is None else choices[:, :window],
                               None if prefix is None else prefix[:, :window],
                               None if outside is None else outside[:, :window],
                               None if edits is None else edits[:, :window])
        bars = list(first.split(1, dim=1))  # W x (B, 1, S)
        P = 0 if prefix is None else prefix.shape[1]
        B, D = z.shape[0], self.config.d_model
        real = torch.ones(B, window, dtype=torch.bool, device=z.device)
        for i in range(window, N):
            if i < P:
                bars.append(prefix[:, i : i + 1])
                continue
            lo = i - window + 1
            prev = self.bar_encoder(torch.cat(bars[lo:i], dim=1), meters[:, lo:i])  # (B, W-1, D)
            prev = torch.cat([prev, prev.new_zeros(B, 1, D)], dim=1)  # last slot is unused
            zw = z[:, lo : i + 1]  # (B, W, Z)
            h = self._decode_hidden(prev, self._memory(zw), real)[:, -1:]
            mix = self._mixer(self._all_pointers(zw), window - 1, bars[lo:i],
                              meters[:, i : i + 1], sampler,
                              None if choices is None else choices[:, i],
                              None if edits is None else edits[:, i])
            bar = self.bar_decoder.generate(h, meters[:, i : i + 1], sampler, mix)
            bars.append(bar if outside is None else bar.masked_fill(outside[:, i : i + 1], PAD))
        return torch.cat(bars, dim=1)

    def _free_run(self, z: Tensor, meters: Tensor, sampler: Sampler, use_cache: bool,
                  choices: Tensor | None = None, prefix: Tensor | None = None,
                  outside: Tensor | None = None, edits: Tensor | None = None) -> Tensor:
        B, N, _ = z.shape
        P = 0 if prefix is None else prefix.shape[1]
        D = self.config.d_model
        memory = self._memory(z)  # (B, N, D)
        pointers = self._all_pointers(z)  # computed once for every bar
        pos = positions(N, D, z.device)  # (N, D)
        inputs = [self.start.expand(B, 1, D)]  # decoder inputs so far, each (B, 1, D)
        caches: list[dict] | None = [{} for _ in self.decoder] if use_cache else None
        if not self.config.mask_decoder:
            caches = None  # a non-causal decoder must recompute its whole prefix
        keys = torch.arange(N, device=z.device)
        bars: list[Tensor] = []
        for i in range(N):
            see = keys <= i if self.config.mask_cross else torch.ones_like(keys, dtype=torch.bool)
            if caches is not None:
                x = inputs[-1] + pos[i]
                for block, cache in zip(self.decoder, caches, strict=True):
                    x = block(x, None, False, memory, see.view(1, 1, 1, N), cache)
            else:
                x = torch.cat(inputs, dim=1) + pos[: i + 1]  # (B, i+1, D)
                cross = see[None, None, None, :].expand(1, 1, i + 1, N)
                if self.config.mask_cross:
                    cross = keys[: i + 1, None] >= keys[None, :]
                    cross = cross[None, None]
                for block in self.decoder:
                    x = block(x, None, self.config.mask_decoder, memory, cross)
                x = x[:, -1:]
            h = self.dec_norm(x)  # (B, 1, D)
            if i < P:
                bar = prefix[:, i : i + 1]  # (B, 1, S) given
            else:
                mix = self._mixer(pointers, i, bars, meters[:, i : i + 1], sampler,
                                  None if choices is None else choices[:, i],
                                  None if edits is None else edits[:, i])
                bar = self.bar_decoder.generate(h, meters[:, i : i + 1], sampler, mix)
                if outside is not None:
                    bar = bar.masked_fill(outside[:, i : i + 1], PAD)
            bars.append(bar)
            inputs.append(self.bar_encoder(bar, meters[:, i : i + 1]))
        return torch.cat(bars, dim=1)
