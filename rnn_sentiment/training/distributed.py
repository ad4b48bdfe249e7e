"""Multi-process training with PyTorch's DistributedDataParallel, started by ``torchrun``.

``torchrun --nproc-per-node N -m rnn_sentiment train CONFIG`` starts N copies of the same
training; each learns from its share of every global batch (the length-bucketed batch of
``training.batch_size`` reviews, split in contiguous slices), DDP averages the gradients, and
every rank ends each step with the same weights. The loss of a rank is its slice's summed
cross-entropy times ``world / global batch``, so the averaged gradient is exactly the gradient of
the global batch's mean loss: N ranks take the steps one process would take with the same
``training.batch_size`` (tests/test_distributed.py holds them to float tolerance).

What is decided once for all ranks: whether to stop (Ctrl-C, SIGTERM, a non-finite loss, early
stopping or the time budget are all-reduced or broadcast from rank 0, so no rank waits forever in
a collective another has left). Rank 0 alone writes the run directory and prints; the others write
their checkpoints to a scratch folder that is removed at the end. Dropout draws from a generator
seeded by (seed, epoch, step, rank), so a resumed run repeats its masks exactly.

Gloo on CPU, NCCL on CUDA. Without ``torchrun`` (no ``WORLD_SIZE`` above 1) nothing here is used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes."""

    rank: int = 0
    world: int = 1
    local_world: int = 1
    owned: bool = False  # the process group was started here (and is ended here)

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes the run directory and reports progress."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """Whether several processes train together."""
        return self.world > 1

    def share(self, batch: list[int]) -> list[int]:
        """This rank's contiguous slice of a global batch (possibly empty for a tiny batch)."""
        bounds = np.linspace(0, len(batch), self.world + 1).round().astype(int)
        return batch[bounds[self.rank] : bounds[self.rank + 1]]

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any rank (every rank gets the same answer)."""
        if not self.active:
            return flag
        value = torch.tensor([float(flag)])
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)

    def from_main(self, flag: bool) -> bool:
        """Rank 0's ``flag``, on every rank."""
        if not self.active:
            return flag
        value = torch.tensor([float(flag)])
        dist.broadcast(value, src=0)
        return bool(value.item() > 0)

    def sums(self, *values: float) -> list[float]:
        """Each value summed over the ranks."""
        if not self.active:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(tensor)
        return tensor.tolist()


def start(device: str) -> Ranks:
    """Join the process group ``torchrun`` set up (its environment variables), or a single-process
    :class:`Ranks` when there is none."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    owned = not dist.is_initialized()  # a caller's own group is left to the caller
    if owned:
        backend = "nccl" if device.startswith("cuda") and torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    return Ranks(dist.get_rank(), dist.get_world_size(), local, owned)


def stop(ranks: Ranks) -> None:
    """Leave the process group this training started (after training, on every rank)."""
    if ranks.owned and dist.is_initialized():
        dist.destroy_process_group()


def step_seed(seed: int, epoch: int, step: int, rank: int) -> None:
    """Seed this rank's generator for one step, from nothing a resume could lose."""
    torch.manual_seed((seed * 1_000_003 + epoch * 10_007 + step) * 131 + rank)
