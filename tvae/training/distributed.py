"""Multi-process training (DistributedDataParallel): processes, and each rank's share of a batch.

`torchrun --nproc_per_node N -m tvae train ...` or `tvae train --nproc N` (`launch`) start one
process per rank; `setup` joins them (gloo on CPU, NCCL on CUDA, one GPU per local rank). Every
rank builds the same global batch from the same seeded order and trains on its own rows of it
(`share_of`); each rank's loss is weighted by its share of the batch's real bars (and labelled
windows), so the gradient DDP averages is that of the whole global batch, and the step's noise is
drawn for the whole global batch and cut to the rank's rows (tvae.training.step). With dropout 0
a run on N processes therefore follows the run on one up to float rounding. Rank 0 alone writes
metrics and checkpoints.

Shape legend: B global batch, b this rank's rows, N bars, S steps per bar.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tvae.config import PAD
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


def any_rank(flag: Tensor) -> Tensor:
    """A 0-d bool tensor, true where `flag` is true on any rank: an all-reduce on the device,
    no host sync (every rank must call it; outside a process group, `flag` itself)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return flag
    value = flag.to(torch.int32).reshape(1)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return value[0] > 0


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
        # NCCL is told this rank's device, rather than guessing it from the rank
        torch.distributed.init_process_group("nccl" if cuda else "gloo",
                                             timeout=timedelta(minutes=60),
                                             device_id=device if cuda else None)
    return Dist(rank, world, device)


def teardown(dist: Dist | None, finished: bool = False) -> None:
    """Leave the process group. After a finished run every rank first waits for the others
    (rank 0 may still be writing its last files), so no rank's gloo threads are torn down while
    a peer still talks to them (that aborted rank 1 at exit now and then)."""
    if dist is None or not torch.distributed.is_initialized():
        return
    if finished:
        dist.barrier()
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


def to_device(array: np.ndarray | Tensor, device: torch.device) -> Tensor:
    """A host array (or CPU tensor) on `device`: on CUDA through pinned memory, copied without
    blocking."""
    tensor = array if isinstance(array, Tensor) else torch.from_numpy(np.ascontiguousarray(array))
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
    repeats: float = 0.0  # bars with a pointer target in these rows / in the global batch


def share_of(tokens: np.ndarray, labels: np.ndarray | None, rank: int, world: int,
             reach: int = 0, max_edits: int = 0) -> Share:
    """Rank `rank`'s share of the global batch tokens (B, N, S), labels (B,) (-1: none), and
    of its bars that teach the copy pointer (`copy_target` with the pointer's `reach` and
    `max_edits`: the pointer loss is a mean over them).

    The rows are split as evenly as possible; a rank left without rows (a last batch smaller
    than the world) gets row 0 with weight 0, since every rank must take part in each step."""
    B = len(tokens)
    lo, hi = rank * B // world, (rank + 1) * B // world
    if lo == hi:
        return Share(slice(0, 1), B, 0.0, 0.0, 0.0)
    real_bars = (tokens != PAD).any(-1).sum(-1)  # (B,) as the model counts them
    known = np.zeros(B, bool) if labels is None else labels >= 0  # (B,)
    targets = real_bars  # without a reach (one process): weighted like the bars
    if reach > 0:
        import torch

        from tvae.model.pointer import copy_target

        has = copy_target(torch.as_tensor(tokens), reach, max_edits).any(-1)  # (B, N)
        targets = has.sum(-1).numpy()  # (B,)
    return Share(slice(lo, hi), B, float(real_bars[lo:hi].sum() / max(real_bars.sum(), 1)),
                 float(known[lo:hi].sum() / max(known.sum(), 1)), 1.0,
                 float(targets[lo:hi].sum() / max(targets.sum(), 1)))


def share_loss(out: Loss, share: Share) -> Tensor:
    """This rank's part of the global batch's loss: summed over ranks, the loss of the batch.

    The model normalises its reconstruction and KL terms by the real bars of its rows, the
    class loss by their labelled windows and the pointer loss by their bars with a pointer
    target, so each part is weighted by the rank's share of them.
    """
    # each term is a mean over its own units, so it is weighted by this rank's share of them
    # the edit loss's bars (repeats within reach) are the pointer loss's; the terms are added
    # in the objective's order, so that one process's loss is its `loss` to the last bit
    loss = (out.base * share.bars + out.pointer_term * share.repeats
            + out.edit_term * share.repeats + out.class_term * share.labelled)
    if out.class_logits is not None:  # keep the head in the graph on ranks without labels
        loss = loss + 0.0 * out.class_logits.sum()
    return loss


def reduce_sums(acc: dict[str, Any], dist: Dist | None) -> dict[str, Any]:
    """Sync-free accumulators (device tensors) as floats, summed over the ranks; 'count'
    (steps applied, the same on every rank) is not summed."""
    count = int(acc["count"])
    values = {k: v for k, v in acc.items() if k != "count"}
    sums = dist.sums(values) if dist else {k: float(v) for k, v in values.items()}
    return {**sums, "count": count}
