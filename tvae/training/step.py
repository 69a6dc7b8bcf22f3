"""One training step: the same function on one CPU, one GPU and every rank of a DDP run.

A step never waits for the device. A non-finite loss (or a spike, `guard.SpikeFilter`) turns
into NaN (so after DDP's all-reduce
every rank sees NaN gradients), `ok` is a 0-d bool tensor saying whether the gradient norm is
finite, and `apply_update` skips the update where it is false: on an accelerator the optimizer
steps anyway and `UpdateUndo` puts the parameters and optimizer state back on the device; on
the CPU, where reading a tensor waits for nothing, the host reads `ok` and does not step.
`tvae.training.guard` counts skipped steps on the device; the host reads the count every few
steps.

The step's random numbers come in with the batch (`Batch.noise`, drawn for the whole global
batch and cut to this process's rows), so a run on W processes follows the run on one.

Shape legend: B global batch, b this process's rows, N bars, S steps per bar.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from tvae.config import TrainConfig
from tvae.model.forward import Noise
from tvae.training.distributed import Share, any_rank, share_loss
from tvae.training.guard import SpikeFilter
from tvae.training.objective import Loss, vae_objective
from tvae.training.schedules import beta_at, lr_at, pointer_at, repeat_beta_at, tf_at


@dataclass(frozen=True)
class Batch:
    """This process's rows of one global batch, on the training device."""

    tokens: Tensor  # (b, N, S) step classes
    meters: Tensor  # (b, N) meter ids
    labels: Tensor | None  # (b,) class ids, -1 for unlabelled windows; None without a head
    share: Share  # these rows' weight in the global batch's loss (all of it in one process)
    noise: Noise  # these rows' random numbers (latent sample, scheduled sampling)


@dataclass(frozen=True)
class Scheduled:
    """The values the schedules give this step."""

    lr: float  # learning rate
    beta: float  # KL weight
    p_tf: float  # teacher-forcing probability
    pointer_weight: float  # weight of the copy pointer's auxiliary loss
    repeat_beta: float = 1.0  # multiplier of beta on repeated bars' KL

    @classmethod
    def at(cls, step: int, cfg: TrainConfig, total_steps: int, batches_per_epoch: int,
           lr_scale: float = 1.0) -> Scheduled:
        """Every schedule's value at `step` of a `total_steps` run (tvae.training.schedules);
        the learning rate times `lr_scale` (the step guard's recoveries halve it)."""
        return cls(lr=lr_at(step, cfg, total_steps) * lr_scale, beta=beta_at(step, cfg),
                   p_tf=tf_at(step, cfg, batches_per_epoch), pointer_weight=pointer_at(step, cfg),
                   repeat_beta=repeat_beta_at(step, cfg, total_steps))


def train_step(net: torch.nn.Module, optimizer: torch.optim.Optimizer, undo: UpdateUndo,
               batch: Batch, at: Scheduled, cfg: TrainConfig, world: int = 1,
               spikes: SpikeFilter | None = None) -> dict[str, Tensor]:
    """Forward, loss, backward, clipping and update of one batch, without a host sync.
    `net` is the model (or its DDP / compiled wrapper); `world` the number of processes.
    With `spikes`, a loss far above its running median is skipped like a non-finite one.
    Returns this process's part of the batch's summed statistics (0 when the update was
    skipped), 'ok', a 0-d bool tensor (False when the step was skipped), and 'spike' (True
    when it was skipped as a spike)."""
    for group in optimizer.param_groups:
        group["lr"] = at.lr
    net.train()
    device = batch.tokens.device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        out = net(batch.tokens, batch.meters, p_tf=at.p_tf, noise=batch.noise)
        parts = vae_objective(out, batch.tokens, beta=at.beta, free_bits=cfg.free_bits,
                              recon_weight=cfg.recon_weight, labels=batch.labels,
                              class_weight=cfg.class_weight, pointer_weight=at.pointer_weight,
                              pointer_edits=cfg.pointer_edits, pointer_cap=cfg.pointer_cap,
                              edit_weight=cfg.edit_weight,
                              repeat_beta=at.repeat_beta,
                              source_weight=cfg.source_weight)
    per_bar = parts.loss.detach().float()  # this process's loss per real bar
    spike = spikes.is_spike(per_bar) if spikes is not None else torch.zeros(
        (), dtype=torch.bool, device=device)
    if world > 1 and spikes is not None:  # every rank skips it and counts it as a spike
        spike = any_rank(spike)
    loss = poison_nonfinite(share_loss(parts, batch.share), spike)
    optimizer.zero_grad(set_to_none=True)
    (loss * world).backward()  # DDP averages the ranks' gradients; their sum is the batch's
    params = [p for group in optimizer.param_groups for p in group["params"]]
    ok = torch.isfinite(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))  # 0-d bool
    apply_update(optimizer, ok, undo)
    if spikes is not None:
        spikes.record(per_bar, ok)
    return {**step_stats(parts, loss, batch, ok), "spike": spike & ~ok}


def poison_nonfinite(loss: Tensor, spike: Tensor | None = None) -> Tensor:
    """`loss`, or NaN when it is not finite (or `spike`, a 0-d bool, is true), so that its
    gradients (after DDP's all-reduce: on every rank) are NaN and the step is skipped
    everywhere. Multiplies by exactly 1 otherwise."""
    good = torch.isfinite(loss) if spike is None else torch.isfinite(loss) & ~spike
    return loss * torch.where(good, 1.0, float("nan"))


def apply_update(optimizer: torch.optim.Optimizer, ok: Tensor, undo: UpdateUndo) -> None:
    """`optimizer.step()` unless the 0-d bool `ok` is false, without waiting for the device.
    On the CPU the host reads `ok` (CPU tensors are computed already: nothing to wait for, and
    no copy of the state to pay for); on an accelerator the update is made and then taken back
    on the device where `ok` is false."""
    if ok.device.type == "cpu":
        if bool(ok):
            optimizer.step()
        return
    undo.save(optimizer)
    optimizer.step()
    undo.restore_unless(optimizer, ok)


def step_stats(parts: Loss, loss: Tensor, batch: Batch, ok: Tensor) -> dict[str, Tensor]:
    """This process's part of the global batch's statistics, to be summed over processes and
    steps: the loss, reconstruction and KL weighted by its share of the real bars, counts of
    (correctly) predicted steps; all 0 when the step was skipped. Plus 'ok'."""
    share = batch.share
    stats = {"loss": loss.detach(), "recon": parts.recon.detach() * share.bars,
             "kl": parts.kl.detach() * share.bars, "correct": parts.correct * share.real,
             "n": parts.n_steps * share.real}
    if parts.class_logits is not None and batch.labels is not None:
        known = batch.labels >= 0
        right = (parts.class_logits.argmax(-1) == batch.labels) & known
        stats["class_correct"] = right.sum() * share.real
        stats["class_n"] = known.sum() * share.real
    if parts.pointer_loss is not None:  # logged whether or not it is weighted into the loss
        stats["pointer"] = parts.pointer_loss.detach() * share.bars
    if parts.edit_loss is not None:
        stats["edit"] = parts.edit_loss.detach() * share.bars
    return {**{k: torch.where(ok, v, 0) for k, v in stats.items()}, "ok": ok}


class UpdateUndo:
    """Takes back an optimizer update where a 0-d bool tensor says so, without a host sync:
    `save` copies the parameters and the optimizer's state tensors, and after the update
    `restore_unless(ok)` sets each to `where(ok, updated, saved)`. State the update created
    (the first step) is put back to zeros, which is Adam's initial state."""

    def __init__(self) -> None:
        self.saved: dict[tuple[int, str], Tensor] = {}  # (parameter index, slot) -> copy
        self.present: set[tuple[int, str]] = set()  # the keys the last `save` copied

    @staticmethod
    def _tensors(optimizer: torch.optim.Optimizer) -> list[tuple[tuple[int, str], Tensor]]:
        """Every parameter ("param") and optimizer state tensor, keyed by (index, slot)."""
        found = []
        params = [p for group in optimizer.param_groups for p in group["params"]]
        for i, param in enumerate(params):
            found.append(((i, "param"), param.data))
            for slot, value in optimizer.state.get(param, {}).items():
                if isinstance(value, Tensor):
                    found.append(((i, slot), value))
        return found

    @torch.no_grad()
    def save(self, optimizer: torch.optim.Optimizer) -> None:
        """Copy the parameters and state, reusing the buffers of earlier copies."""
        tensors = self._tensors(optimizer)
        for key, tensor in tensors:
            buffer = self.saved.get(key)
            if buffer is None or (buffer.shape, buffer.dtype, buffer.device) != (
                    tensor.shape, tensor.dtype, tensor.device):
                self.saved[key] = tensor.detach().clone()
            else:
                buffer.copy_(tensor)
        self.present = {key for key, _ in tensors}

    @torch.no_grad()
    def restore_unless(self, optimizer: torch.optim.Optimizer, ok: Tensor) -> None:
        """Put back what `save` copied where `ok` is false (state new since then: zeros)."""
        for key, tensor in self._tensors(optimizer):
            keep = ok if ok.device == tensor.device else ok.to(tensor.device)
            saved = self.saved[key] if key in self.present else torch.zeros_like(tensor)
            tensor.copy_(torch.where(keep, tensor, saved))
