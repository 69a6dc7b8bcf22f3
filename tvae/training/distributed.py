"""Multi-process training (DistributedDataParallel) and the device-side bookkeeping of a step.

`torchrun --nproc_per_node N -m tvae train ...` or `tvae train --nproc N` (`launch`) start one
process per rank; `setup` joins them (gloo on CPU, NCCL on CUDA, one GPU per local rank). Every
rank builds the same global batch from the same seeded order and trains on its own rows of it
(`share_of`); each rank's loss is weighted by its share of the batch's real bars (and labelled
windows), so the gradient DDP averages is that of the whole global batch, and random draws inside
the model depend only on (seed, step, row of the global batch) (`SampleNoise`). With dropout 0 a
run on N processes therefore follows the run on one up to float rounding. Rank 0 alone writes
metrics and checkpoints.

`StepGuard` counts non-finite steps on the device and `apply_update` skips the optimizer update
on the device when the optimizer is fused (AMP's `found_inf` mechanism), so a CUDA training step
never waits for the GPU; the host reads the counters every few steps.

Shape legend: B global batch, b this rank's rows, N bars, S steps per bar.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

from tvae.config import PAD, TrainConfig
from tvae.errors import TvaeError
from tvae.training.objective import Loss


def mix_seed(*values: int) -> int:
    """A 63-bit seed mixed from integers (numpy's SeedSequence)."""
    state = np.random.SeedSequence([v % (1 << 64) for v in values]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


# --- processes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dist:
    """This process's place in a multi-process run."""

    rank: int  # 0 .. world - 1; rank 0 writes metrics and checkpoints
    world: int  # number of processes
    device: torch.device  # cuda:LOCAL_RANK with NCCL, else the CPU

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        torch.distributed.barrier()

    def any(self, flag: bool) -> bool:
        """Whether `flag` is true on any rank (a collective: every rank must call it)."""
        value = torch.tensor([int(flag)], device=self.device)
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
        return bool(value.item())

    def sums(self, values: dict[str, Any]) -> dict[str, float]:
        """Each value summed over the ranks, as floats (one collective)."""
        keys = sorted(values)
        stacked = torch.stack([torch.as_tensor(values[k], device=self.device).double()
                               for k in keys])
        torch.distributed.all_reduce(stacked)
        return dict(zip(keys, stacked.tolist(), strict=True))

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        holder = [obj]
        torch.distributed.broadcast_object_list(holder, src=0)
        return holder[0]


def setup(device_name: str = "auto") -> Dist | None:
    """Join the process group when started by torchrun (WORLD_SIZE is set), else None."""
    if "WORLD_SIZE" not in os.environ or not torch.distributed.is_available():
        return None
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    cuda = device_name != "cpu" and torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if cuda else "gloo",
                                             timeout=timedelta(minutes=60))
    return Dist(rank, world, device)


def teardown(dist: Dist | None) -> None:
    if dist is not None and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def launch(nproc: int, args: list[str]) -> int:
    """Run `tvae ARGS` in `nproc` processes under torch.distributed.run; its exit code."""
    if "WORLD_SIZE" in os.environ:
        raise TvaeError("--nproc cannot be used inside torchrun (it already started the ranks)")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", "-m", "tvae", *args]
    process = subprocess.Popen(command)
    try:
        return process.wait()
    except KeyboardInterrupt:  # the ranks got the Ctrl-C too: let rank 0 save, then report
        return process.wait()


@contextmanager
def rank0_first(dist: Dist | None) -> Iterator[None]:
    """Run the block on rank 0 first, then on the other ranks (e.g. to fill a cache once)."""
    if dist is not None and not dist.main:
        dist.barrier()
    yield
    if dist is not None and dist.main:
        dist.barrier()


def to_device(array: np.ndarray, device: torch.device) -> Tensor:
    """A host array on `device`: on CUDA through pinned memory, copied without blocking."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type != "cuda":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)


def wrap_model(model: torch.nn.Module, dist: Dist | None, compile_model: bool
               ) -> torch.nn.Module:
    """The module the training step calls: `model`, in DDP when `dist`, compiled if asked."""
    net = model
    if dist is not None:
        from torch.nn.parallel import DistributedDataParallel

        ids = [dist.device] if dist.device.type == "cuda" else None
        net = DistributedDataParallel(model, device_ids=ids)
    return torch.compile(net) if compile_model else net


# --- one rank's share of a global batch --------------------------------------------------------


@dataclass(frozen=True)
class Share:
    """One rank's rows of a global batch and its weights in the batch's loss."""

    rows: slice  # this rank's rows of the global batch
    batch: int  # B, rows in the global batch
    bars: float  # real bars in these rows / in the global batch (0 for a stand-in row)
    labelled: float  # labelled windows in these rows / in the global batch
    real: float  # 1.0, or 0.0 for a rank left without rows, which trains on a stand-in row


def share_of(tokens: np.ndarray, labels: np.ndarray | None, rank: int, world: int) -> Share:
    """Rank `rank`'s share of the global batch tokens (B, N, S), labels (B,) (-1: none).

    The rows are split as evenly as possible; a rank left without rows (a last batch smaller
    than the world) gets row 0 with weight 0, since every rank must take part in each step."""
    B = len(tokens)
    lo, hi = rank * B // world, (rank + 1) * B // world
    if lo == hi:
        return Share(slice(0, 1), B, 0.0, 0.0, 0.0)
    real_bars = (tokens != PAD).any(-1).sum(-1)  # (B,) as the model counts them
    known = np.zeros(B, bool) if labels is None else labels >= 0  # (B,)
    return Share(slice(lo, hi), B, float(real_bars[lo:hi].sum() / max(real_bars.sum(), 1)),
                 float(known[lo:hi].sum() / max(known.sum(), 1)), 1.0)


def take_share(dist: Dist | None, tokens: np.ndarray, meters: np.ndarray,
               labels: np.ndarray | None) -> tuple[Any, ...]:
    """(tokens, meters, labels, share): this rank's rows of a global batch (all rows and share
    None in a single process)."""
    if dist is None:
        return tokens, meters, labels, None
    share = share_of(tokens, labels, dist.rank, dist.world)
    rows = share.rows
    return tokens[rows], meters[rows], None if labels is None else labels[rows], share


def share_loss(out: Loss, share: Share, class_weight: float) -> Tensor:
    """This rank's part of the global batch's loss: summed over ranks, the loss of the batch.

    The model normalises its reconstruction and KL terms by the real bars of its rows and the
    class loss by their labelled windows, so each part is weighted by the rank's share of them.
    """
    if out.class_loss is None:
        loss = out.loss * share.bars
    else:
        part = class_weight * out.class_loss
        loss = (out.loss - part) * share.bars + part * share.labelled
    if out.class_logits is not None:  # keep the head in the graph on ranks without labels
        loss = loss + 0.0 * out.class_logits.sum()
    return loss


_DRAWS = {torch.rand: torch.rand, torch.rand_like: torch.rand, torch.randn: torch.randn,
          torch.randn_like: torch.randn}


class SampleNoise(TorchFunctionMode):
    """Inside this mode, `torch.rand`, `torch.randn` and their `_like` forms whose first
    dimension is this rank's rows (and that get no generator) return rows `share.rows` of a
    (B, ...) draw from a generator seeded by (seed, step, call number): each row's numbers
    depend on its row of the global batch, not on how the batch is split across ranks.
    Dropout masks are not covered (they come from torch's generator)."""

    def __init__(self, seed: int, step: int, share: Share) -> None:
        super().__init__()
        self.seed, self.step, self.share, self.calls = seed, step, share, 0
        self.local = share.rows.stop - share.rows.start  # b

    def __torch_function__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        draw = _DRAWS.get(func)
        if draw is None or kwargs.get("generator") is not None:
            return func(*args, **kwargs)
        if func in (torch.rand_like, torch.randn_like):
            like = args[0]
            shape = tuple(like.shape)
            dtype, device = kwargs.get("dtype") or like.dtype, kwargs.get("device") or like.device
        else:
            shape = tuple(args[0]) if len(args) == 1 and not isinstance(args[0], int) else args
            dtype = kwargs.get("dtype") or torch.get_default_dtype()
            device = kwargs.get("device") or "cpu"
        if not shape or shape[0] != self.local:
            return func(*args, **kwargs)
        generator = torch.Generator(device=device)
        generator.manual_seed(mix_seed(self.seed, self.step, self.calls))
        self.calls += 1
        full = draw((self.share.batch, *shape[1:]), generator=generator, dtype=dtype,
                    device=device)  # (B, ...)
        return full[self.share.rows]  # (b, ...)


def seed_step(seed: int, step: int, dist: Dist | None, share: Share | None
              ) -> AbstractContextManager[Any]:
    """Seed torch for a step from (seed, step) (and the rank); returns the context in which
    the model draws its noise by global sample index (`SampleNoise`, when `share` is given)."""
    torch.manual_seed(seed * 1_000_003 + step if dist is None else
                      mix_seed(seed, step, dist.rank))
    return nullcontext() if share is None else SampleNoise(seed, step, share)


# --- steps without host syncs ------------------------------------------------------------------


def poison_nonfinite(loss: Tensor) -> Tensor:
    """`loss`, or NaN when it is not finite, so that its gradients (after DDP's all-reduce: on
    every rank) are NaN and the step is skipped everywhere. Multiplies by exactly 1 otherwise."""
    return loss * torch.where(torch.isfinite(loss), 1.0, float("nan"))


def apply_update(optimizer: torch.optim.Optimizer, ok: Tensor) -> None:
    """`optimizer.step()` unless the 0-d bool `ok` is false. A fused optimizer skips on the
    device through its `found_inf` argument (as AMP's GradScaler does); others read `ok`."""
    if optimizer.defaults.get("fused"):
        optimizer.found_inf = (~ok).to(torch.float32)  # type: ignore[attr-defined]
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf  # type: ignore[attr-defined]
    elif bool(ok):
        optimizer.step()


def class_stats(out: Loss, labels: Tensor | None) -> dict[str, Tensor]:
    """Correct predictions and labelled windows of the supervised head (if it has labels)."""
    if out.class_logits is None or labels is None:
        return {}
    known = labels >= 0
    return {"class_correct": ((out.class_logits.argmax(-1) == labels) & known).sum(),
            "class_n": known.sum()}


def pointer_stats(out: Loss) -> dict[str, Tensor]:
    """The pointer's auxiliary loss, logged whether or not it is weighted into the loss."""
    return {} if out.pointer_loss is None else {"pointer": out.pointer_loss.detach()}


def update_sync_free(out: Loss, labels: Tensor | None, share: Share | None,
                     model: torch.nn.Module, optimizer: torch.optim.Optimizer, guard: StepGuard,
                     cfg: TrainConfig, world: int) -> dict[str, Tensor]:
    """Backward and update without a host sync: a non-finite loss or gradient norm skips the
    update (on the device when the optimizer is fused) and `guard` counts it. Returns this
    rank's part of the global batch's stats (0 when skipped) and 'ok'."""
    loss = out.loss if share is None else share_loss(out, share, cfg.class_weight)
    loss = poison_nonfinite(loss)
    (loss * world if world > 1 else loss).backward()  # DDP averages the ranks' gradients
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    ok = torch.isfinite(norm)
    apply_update(optimizer, ok)
    guard.record(ok)
    bars, real = (1.0, 1.0) if share is None else (share.bars, share.real)
    stats = {"loss": loss.detach(), "recon": out.recon.detach() * bars,
             "kl": out.kl.detach() * bars, "correct": out.correct * real,
             "n": out.n_steps * real}
    stats.update({k: v * real for k, v in class_stats(out, labels).items()})
    stats.update(pointer_stats(out))
    return {**{k: torch.where(ok, v, 0) for k, v in stats.items()}, "ok": ok}


def reduce_sums(acc: dict[str, Any], dist: Dist | None) -> dict[str, Any]:
    """Sync-free accumulators (device tensors) as floats, summed over the ranks; 'count'
    (steps applied, the same on every rank) is not summed."""
    count = int(acc["count"])
    values = {k: v for k, v in acc.items() if k != "count"}
    sums = dist.sums(values) if dist else {k: float(v) for k, v in values.items()}
    return {**sums, "count": count}


class StepGuard:
    """Non-finite (skipped) steps counted on the device; `check` reads them on the host."""

    def __init__(self, device: torch.device) -> None:
        zero = torch.zeros((), dtype=torch.int64, device=device)
        self.bad = zero.clone()  # skipped steps since the last check
        self.run = zero.clone()  # length of the current run of consecutive skipped steps
        self.worst = zero.clone()  # longest run since the last check

    def record(self, ok: Tensor) -> None:
        bad = (~ok).long()
        self.bad += bad
        self.run = (self.run + 1) * bad
        self.worst = torch.maximum(self.worst, self.run)

    def check(self) -> tuple[int, int]:
        """(steps skipped since the last check, longest run of skipped steps in a row)."""
        bad, worst = torch.stack([self.bad, self.worst]).tolist()
        self.bad.zero_()
        self.worst = self.run.clone()
        return int(bad), int(worst)
