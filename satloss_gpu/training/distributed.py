"""Data-parallel training helpers: process group set-up from torchrun's environment.

``torchrun --nproc_per_node=N -m satloss_gpu train ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`init` joins the process group (NCCL on CUDA, gloo on the CPU) and
picks the device of the local rank. Without those variables everything is a no-op with one
process.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch

from .config import check_device_name

__all__ = ["DistInfo", "init", "cleanup", "all_reduce_sum", "barrier", "broadcast_object"]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size`` processes, on ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _resolve_device(device: str, local_rank: int, gpu_id: Optional[int]) -> torch.device:
    device = check_device_name(device)
    if device == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError("`device` is 'mps' but torch sees no MPS device")
    if device.startswith("cuda:") and torch.cuda.is_available():
        if int(device[5:]) >= torch.cuda.device_count():
            raise ValueError(f"`device` is {device!r} but torch sees "
                             f"{torch.cuda.device_count()} CUDA GPU(s)")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"`device` is {device!r} but torch sees no CUDA GPU")
        if device == "cuda":
            index = local_rank if "LOCAL_RANK" in os.environ else (gpu_id or 0)
            return torch.device("cuda", index)
    return torch.device(device)


def init(device: str = "auto", gpu_id: Optional[int] = None) -> DistInfo:
    """Join the torchrun process group if there is one and choose this process's device.

    Parameters
    ----------
    device : str, default "auto"
        "auto" (CUDA if available, else CPU), "cpu", "cuda" or "cuda:K". Under torchrun,
        "cuda" means the GPU of the local rank.
    gpu_id : int, optional
        The GPU to use with "cuda" outside torchrun (the reference's ``--gpu_id``).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _resolve_device(device, local_rank, gpu_id)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend)
    return DistInfo(rank, world_size, local_rank, dev)


def cleanup(info: DistInfo) -> None:
    """Leave the process group (if one was joined)."""
    if info.distributed and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        torch.distributed.barrier()


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum of ``tensor`` over the processes (in place; returned for convenience)."""
    if info.distributed:
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
    return tensor


def broadcast_object(obj, info: DistInfo):
    """``obj`` of rank 0 on every process."""
    if not info.distributed:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]
