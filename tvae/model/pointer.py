"""The copy path: a bar is either generated or copied from an earlier bar of the window, chosen
by a pointer computed from the bar's own latent alone.

The pointer logits are a linear function of z_k with one learned row per relative offset k - j
(1..max_offset) and one for "generate": they never look at the bars' content, so a latent can say
"repeat the bar 4 back" in a few bits, and when an earlier bar's latent is swapped (context
transfer), a later repeat copies whatever that bar decodes to. Two ways to mix:

- "bar" (the default): one choice per bar, marginalised exactly,
      p(bar k) = pi_gen g(bar k) + sum_j pi_j prod_s [(1 - eps_ks) [x_s = y_js] + eps_ks g_s(x_s)]
  where y_js is step s of bar j, g the generator and eps_ks (read from z_k too: one per step,
  or one per bar, or a fixed chance) the chance of an edit at step s of a copy, so a
  near-repeat is a copy with a few edits. A repeat then costs about -log pi_j nats, and an
  edit with a per-step chance costs the bits that say where it is and what it becomes. With
  an edit table (`edit_source`), g at an edited step also reads the source's token there
  (a learned bias per (source token, new token)), meant to make "a step lower" cheaper than a
  new note (off by default: no gain measured, docs/experiments.md).
- "step": a mixture at every step, p(x_s) = pi_gen g_s(x_s) + sum_j pi_j [x_s = bar j's step s].

Shape legend: B batch, N bars (k the copying bar, j the copied one), S steps per bar,
V vocabulary, O offsets (max_offset).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from tvae.config import PAD
from tvae.model.modules import mask_logits, valid_steps

TINY = 1e-12  # floor of a mixture probability before its log


def offsets(n: int, device: torch.device) -> Tensor:
    """(N, N) k - j for copying bar k and copied bar j."""
    idx = torch.arange(n, device=device)
    return idx[:, None] - idx[None, :]


def pointer_log_weights(ptr_logits: Tensor, bar_mask: Tensor) -> Tensor:  # noqa: D417
    """ptr_logits (B, N, 1 + O) from z, bar_mask (B, N) -> log weights (B, N, 1 + N): column 0
    is "generate", column 1 + j is "copy bar j". Only real earlier bars within O bars back can
    be copied; bar 0 (and any bar with nothing to copy) generates with weight 1."""
    B, N, width = ptr_logits.shape
    O = width - 1  # noqa: E741 (the shape legend's name)
    off = offsets(N, ptr_logits.device)  # (N, N)
    can = (off >= 1) & (off <= O)  # (N, N)
    idx = (off - 1).clamp(0, max(O - 1, 0)).expand(B, N, N)  # (B, N, N)
    if O == 0:
        copy = ptr_logits.new_full((B, N, N), float("-inf"))
    else:
        copy = ptr_logits[..., 1:].gather(2, idx)  # (B, N, N)
    allowed = can[None] & bar_mask[:, None, :]  # (B, N, N): copied bar is real
    copy = copy.masked_fill(~allowed, float("-inf"))
    return torch.cat([ptr_logits[..., :1], copy], dim=-1).float().log_softmax(-1)  # (B, N, 1+N)


def mixture_probs(logits: Tensor, meters: Tensor, log_pi: Tensor, sources: Tensor) -> Tensor:
    """The mixture's probabilities (B, N, S, V).

    logits (B, N, S, V) of the generator; log_pi (B, N, 1 + N) pointer log weights; sources
    (B, N, S) the bars that can be copied (the true bars in training, the decoded ones in
    free-running decoding). Steps a bar's meter does not use have all their mass on PAD."""
    V = logits.shape[-1]
    pi = log_pi.exp()  # (B, N, 1+N)
    gen = F.softmax(mask_logits(logits.float(), meters), dim=-1) * pi[..., :1, None]  # (B, N, S, V)
    onehot = F.one_hot(sources, V).to(gen.dtype)  # (B, N, S, V)
    copied = torch.einsum("bkj,bjsv->bksv", pi[..., 1:], onehot)  # (B, N, S, V)
    probs = gen + copied
    valid = valid_steps(meters, logits.shape[-2]).unsqueeze(-1)  # (B, N, S, 1)
    keep = torch.ones(V, dtype=torch.bool, device=logits.device)
    keep[PAD] = False
    probs = torch.where(valid, probs * keep, F.one_hot(torch.tensor(PAD, device=logits.device),
                                                       V).to(probs.dtype))
    return probs / probs.sum(-1, keepdim=True).clamp(min=TINY)


def mixture_log_probs(logits: Tensor, meters: Tensor, log_pi: Tensor, sources: Tensor) -> Tensor:
    """log of `mixture_probs` (B, N, S, V): -inf exactly on the classes a step cannot take (PAD
    on a step the meter uses, anything else on one it does not), others floored at TINY."""
    log_probs = mixture_probs(logits, meters, log_pi, sources).clamp(min=TINY).log()
    return mask_logits(log_probs, meters)


def same_bars(tokens: Tensor) -> Tensor:
    """(B, N, N) bool: bar k and bar j are identical. tokens (B, N, S)."""
    return (tokens[:, :, None] == tokens[:, None, :]).all(-1)


def step_differences(tokens: Tensor) -> Tensor:
    """(B, N, N) how many steps bar k and bar j differ in; a large number (S + 1) where their
    PAD steps are not in the same places (a pickup is never a near-repeat of a full bar).
    tokens (B, N, S)."""
    diff = (tokens[:, :, None] != tokens[:, None, :])  # (B, N, N, S)
    pads = tokens == PAD
    layout = (pads[:, :, None] == pads[:, None, :]).all(-1)  # (B, N, N)
    S = tokens.shape[-1]
    return torch.where(layout, diff.sum(-1), torch.full_like(layout, S + 1, dtype=torch.long))


NEAR_STEPS = 2  # a bar differing from an earlier one in at most this many steps is a near-repeat


def repeat_features(tokens: Tensor, max_offset: int) -> Tensor:
    """(B, N, 2 * max_offset) float: for bar k and offset o in 1..max_offset, whether bar k - o
    is identical to bar k (column o - 1) and whether it differs in 1 to NEAR_STEPS steps with the
    same layout (column max_offset + o - 1). A function of the input alone, which the encoder
    reads so that it need not find repeats by attention. Linear in N: one comparison per
    offset. tokens (B, N, S)."""
    B, N, S = tokens.shape
    out = tokens.new_zeros((B, N, 2 * max_offset), dtype=torch.float32)
    real = (tokens != PAD).any(-1)  # (B, N)
    pads = tokens == PAD
    for o in range(1, min(max_offset, N - 1) + 1):
        now, then = tokens[:, o:], tokens[:, :-o]  # (B, N - o, S): bar k and bar k - o
        both = real[:, o:] & real[:, :-o]
        diff = (now != then).sum(-1)  # (B, N - o)
        layout = (pads[:, o:] == pads[:, :-o]).all(-1)
        out[:, o:, o - 1] = (both & (diff == 0)).float()
        out[:, o:, max_offset + o - 1] = (both & layout & (diff >= 1)
                                          & (diff <= NEAR_STEPS)).float()
    return out


def nearest_source(tokens: Tensor, max_offset: int, max_edits: int = NEAR_STEPS
                   ) -> tuple[Tensor, Tensor]:
    """Each bar's source: the earlier bar (within max_offset bars back, same layout) that
    differs from it in the fewest steps, at most `max_edits` (the nearest of those; an exact
    repeat always wins). Returns how many bars back it lies (B, N) long (0: no source) and
    the steps of bar k equal to it (B, N, S) bool (all False without a source). Linear in N:
    one comparison per offset. tokens (B, N, S)."""
    B, N, S = tokens.shape
    same = torch.zeros_like(tokens, dtype=torch.bool)  # (B, N, S)
    offset = torch.zeros((B, N), dtype=torch.long, device=tokens.device)
    best = torch.full((B, N), max_edits + 1, dtype=torch.long, device=tokens.device)
    real = (tokens != PAD).any(-1)  # (B, N)
    pads = tokens == PAD
    for o in range(1, min(max_offset, N - 1) + 1):
        now, then = tokens[:, o:], tokens[:, :-o]  # (B, N - o, S): bar k and bar k - o
        equal = now == then  # (B, N - o, S)
        diff = S - equal.sum(-1)  # (B, N - o)
        ok = real[:, o:] & real[:, :-o] & (pads[:, o:] == pads[:, :-o]).all(-1)
        better = ok & (diff < best[:, o:])  # strictly fewer: the nearest wins a tie
        best[:, o:] = torch.where(better, diff, best[:, o:])
        offset[:, o:] = torch.where(better, o, offset[:, o:])
        same[:, o:] = torch.where(better[..., None], equal, same[:, o:])
    return offset, same


def same_as_source(tokens: Tensor, max_offset: int, max_edits: int = NEAR_STEPS) -> Tensor:
    """(B, N, S) bool: the steps of bar k equal to its `nearest_source`; all False for a bar
    with none. What the encoder reads as "the same" when it reads repeats as their edits."""
    return nearest_source(tokens, max_offset, max_edits)[1]


def copy_target(tokens: Tensor, max_offset: int, max_edits: int = 0) -> Tensor:
    """(B, N, N) bool: bar j (within max_offset bars back) is a repeat source of bar k. The
    data's own labels of which bars repeat, for the pointer's auxiliary loss: the bars that k
    repeats exactly; where there is none, with `max_edits` > 0, the earlier bars that differ
    from it in the fewest steps, if that is at most `max_edits` (a near-repeat is a copy with
    edits)."""
    N = tokens.shape[1]
    off = offsets(N, tokens.device)
    real = (tokens != PAD).any(-1)  # (B, N)
    allowed = ((off >= 1) & (off <= max_offset))[None] & real[:, :, None] & real[:, None, :]
    if max_edits <= 0:
        return same_bars(tokens) & allowed
    dist = step_differences(tokens).masked_fill(~allowed, tokens.shape[-1] + 1)  # (B, N, N)
    best = dist.min(-1, keepdim=True).values  # (B, N, 1)
    return allowed & (dist == best) & (best <= max_edits)


def observed_log_weights(log_pi: Tensor, targets: Tensor) -> Tensor:
    """The pointer's log weights (B, N, 1 + N) kept only on each bar's observed choice, -inf
    elsewhere and not renormalised: the bar's copy sources where it has any in reach (targets
    (B, N, N) from `copy_target`), else "generate". `bar_log_lik` of them is then
    log p(bar k, choice in T_k | z_k), the likelihood of a model whose copy choice is observed
    (found in the data) rather than marginalised: a repeat cannot be explained by the
    generator, so its latent has to say where it comes from, at any distance."""
    targets = targets & torch.isfinite(log_pi[..., 1:])  # sources the pointer can express
    has = targets.any(-1, keepdim=True)  # (B, N, 1)
    keep = torch.cat([~has, targets], dim=-1)  # (B, N, 1 + N)
    return log_pi.masked_fill(~keep, float("-inf"))


def copy_share(log_pi: Tensor) -> Tensor:
    """(B, N) total weight a bar puts on copying rather than generating."""
    return 1.0 - log_pi[..., 0].exp()


# -- the per-bar choice ----------------------------------------------------------------------


def keep_log(log_eps: Tensor) -> Tensor:
    """log(1 - eps) from log eps, any shape."""
    return torch.log1p(-log_eps.exp().clamp(max=1 - 1e-6))


def per_step(log_eps: Tensor) -> Tensor:
    """Edit log-chances as (B, N, S) or (B, N, 1): one per bar (B, N) gets a steps axis."""
    return log_eps[..., None] if log_eps.dim() == 2 else log_eps


def edit_log_probs(gen_log_probs: Tensor, edit_bias: Tensor | None) -> Tensor:
    """The distribution a copy's edits are drawn from (B, N, S, V): the generator's, or, with
    `edit_bias` (B, N, S, V; the learned table's row for the source's token at each step), the
    generator's logits plus that bias, renormalised (-inf stays -inf)."""
    if edit_bias is None:
        return gen_log_probs
    return (gen_log_probs + edit_bias).log_softmax(-1)


def copy_step_log_probs(gen_log_probs: Tensor, sources: Tensor, log_eps: Tensor,
                        edit_table: Tensor | None = None) -> Tensor:
    """Step log-probabilities (B, N, S, V) of copying `sources` (B, N, S) (bar k copies
    sources[:, k]) with an edit at step s with probability eps: log_eps (B, N, S) or (B, N, 1).
    gen_log_probs (B, N, S, V); `edit_table` (V, V), if the model has one, biases an edit by the
    source's token (`edit_log_probs`). Not masked: mask the result for the meter."""
    bias = None if edit_table is None else edit_table[sources]  # (B, N, S, V)
    log_e = per_step(log_eps)[..., None]  # (B, N, S or 1, 1)
    edit = log_e + edit_log_probs(gen_log_probs, bias)  # (B, N, S, V)
    keep = keep_log(log_e)  # log(1 - eps)
    onehot = F.one_hot(sources, gen_log_probs.shape[-1]).bool()  # (B, N, S, V)
    return torch.where(onehot, torch.logaddexp(edit, keep.expand_as(edit)), edit)


def expected_edit_bias(edit_table: Tensor, log_pi: Tensor, sources: Tensor) -> Tensor:
    """(B, N, S, V) the edit table's rows for the sources' tokens, averaged over the copy
    choices by the pointer's weights renormalised over copies (detached: the pointer is taught
    by the likelihood, not by this average): what an edit of bar k is biased by in a likelihood
    marginalised over its sources. The pointer is nearly sure of its source where it copies,
    and there this is the chosen source's row. log_pi (B, N, 1 + N'), sources (B, N', S)."""
    lp = log_pi[..., 1:].detach()  # (B, N, N')
    top = lp.amax(-1, keepdim=True)
    w = torch.where(torch.isfinite(top), (lp - top.clamp(min=-1e30)).exp(), torch.zeros_like(lp))
    w = w / w.sum(-1, keepdim=True).clamp(min=TINY)  # (B, N, N'); 0 where nothing is copyable
    return torch.einsum("bkj,bjsv->bksv", w.to(edit_table.dtype), edit_table[sources])


def bar_log_lik(gen_log_probs: Tensor, tokens: Tensor, sources: Tensor, log_pi: Tensor,
                log_eps: Tensor, edit_bias: Tensor | None = None) -> Tensor:
    """log p(bar k) (B, N) of the per-bar choice, marginalised over generate / copy bar j.
    gen_log_probs (B, N, S, V) masked; tokens (B, N, S) the targets; sources (B, N, S);
    log_eps (B, N, S) or (B, N, 1) the edit chance of each step of a copy; edit_bias (B, N, S,
    V) or None what a copy's edits add to the generator's logits (`expected_edit_bias`)."""
    target = tokens != PAD  # (B, N, S)

    def picked(log_probs: Tensor) -> Tensor:  # (B, N, S) log-probability of the true token
        lp = log_probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        return torch.where(target, lp, torch.zeros_like(lp))

    lg = picked(gen_log_probs)  # (B, N, S)
    le = lg if edit_bias is None else picked(edit_log_probs(gen_log_probs, edit_bias))
    gen = lg.sum(-1)  # (B, N)
    match = tokens[:, :, None] == sources[:, None]  # (B, N, N', S)
    log_e = per_step(log_eps)[:, :, None, :]  # (B, N, 1, S or 1)
    edit = log_e + le[:, :, None]  # (B, N, 1, S)
    keep = keep_log(log_e)
    step = torch.where(match, torch.logaddexp(edit, keep.expand_as(edit)), edit)  # (B, N, N', S)
    copy = (step * target[:, :, None]).sum(-1)  # (B, N, N')
    # a finite stand-in keeps gradients of impossible copies at 0 (never NaN)
    weights = log_pi.masked_fill(torch.isinf(log_pi), -1e4)  # (B, N, 1 + N')
    return (weights + torch.cat([gen[..., None], copy], dim=-1)).logsumexp(-1)


def choose(log_pi: Tensor, generator: torch.Generator | None = None, sample: bool = False
           ) -> Tensor:
    """(B, N) choice per bar, 0 generate, 1 + j copy bar j: the most likely one, or drawn."""
    if not sample:
        return log_pi.argmax(-1)
    probs = log_pi.exp().reshape(-1, log_pi.shape[-1])
    return torch.multinomial(probs, 1, generator=generator).view(log_pi.shape[:-1])


def chosen_log_probs(gen_log_probs: Tensor, sources: Tensor, log_eps: Tensor, choice: Tensor,
                     edit_table: Tensor | None = None) -> Tensor:
    """Step log-probabilities (B, N, S, V) of each bar's chosen component: the generator's, or
    those of copying the chosen source (B, N', S) with edits (biased by the source's tokens
    through `edit_table` (V, V) where the model has one). choice (B, N) from `choose`.
    Not masked: mask the result for the meter."""
    B, N = choice.shape
    if sources.shape[1] == 0:
        return gen_log_probs
    idx = (choice - 1).clamp(min=0)[..., None].expand(B, N, sources.shape[2])  # (B, N, S)
    copied = copy_step_log_probs(gen_log_probs, sources.gather(1, idx), log_eps, edit_table)
    return torch.where((choice > 0)[..., None, None], copied, gen_log_probs)
