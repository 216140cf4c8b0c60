"""Data-parallel training under ``torchrun``: joining the process group, sharding, collective sums.

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) each process joins a
process group (nccl on CUDA, gloo on CPU), takes every ``WORLD_SIZE``-th frame
of the epoch's shuffled (padded) training indices and trains a
``DistributedDataParallel`` copy of the model. The model contract takes forces
by ``torch.autograd.grad`` on the positions inside ``forward``; that touches no
parameter's gradient accumulator, so DDP's reducer sees exactly one backward
per step and works with its defaults. Set ``training.find_unused_parameters``
for a family with parameters that some batches do not use. Validation is
sharded the same way and its sums all-reduced, so every rank takes the same
scheduler and early-stopping decisions. Only rank 0 writes files (its RNG
states go into the checkpoint); the output folder must be shared by all ranks.
Exact resume is promised for one CPU process; CUDA's scatter-adds are not
deterministic.
"""

import os
from dataclasses import dataclass
from typing import List, Optional, Sequence

from ..errors import MLMDError


@dataclass
class Distributed:
    """This process's place in the process group (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """Whether this is rank 0, the process that writes files and prints."""
        return self.rank == 0


def setup_distributed(device_name: str):
    """Join a process group when started by torchrun; returns ``(info, device)``."""
    import torch
    import torch.distributed as dist

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    if device_name.startswith("cuda") and not torch.cuda.is_available():
        raise MLMDError(f"training.device is {device_name!r} but torch sees no CUDA device; "
                        "set device = \"cpu\" or \"auto\"")
    info = Distributed(rank=rank, world_size=world_size, local_rank=local_rank)
    if device_name.startswith("cuda"):
        device = torch.device("cuda", local_rank) if world_size > 1 else torch.device(device_name)
        if device.index is not None:
            torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        info.initialized_here = True
    if world_size > 1:
        info.rank, info.world_size = dist.get_rank(), dist.get_world_size()
    return info, device


def teardown_distributed(info: Distributed) -> None:
    """Leave the process group if :func:`setup_distributed` joined it."""
    if info.initialized_here:
        import torch.distributed as dist

        dist.destroy_process_group()


def all_reduce(tensor, info: Distributed):
    """Sum ``tensor`` over all ranks in place (a no-op for one process); returns it."""
    if info.enabled:
        import torch.distributed as dist

        dist.all_reduce(tensor)
    return tensor


def barrier(info: Distributed) -> None:
    """Wait for every rank (a no-op for one process)."""
    if info.enabled:
        import torch.distributed as dist

        dist.barrier()


def shard(indices: Sequence[int], info: Distributed, seed: int, shuffle_epoch: Optional[int]) -> List[int]:
    """This rank's share of ``indices``; when training (``shuffle_epoch`` given) shuffled by
    ``(seed, epoch)`` and padded so every rank gets as many."""
    import numpy as np

    indices = np.asarray(indices)
    if shuffle_epoch is not None:
        indices = np.random.default_rng([seed, shuffle_epoch]).permutation(indices)
        remainder = len(indices) % info.world_size
        if remainder:
            indices = np.concatenate([indices, indices[:info.world_size - remainder]])
    return indices[info.rank::info.world_size].tolist()
