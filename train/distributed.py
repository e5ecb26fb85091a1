"""DistributedDataParallel plumbing: the same ``python -m train ...`` command under
``torchrun --nproc_per_node=K`` trains on K processes (NCCL on GPUs, gloo on the CPU).

Training data: a :class:`torch.utils.data.distributed.DistributedSampler` (reshuffled every epoch from
the seed). Validation: each rank scores a disjoint shard (``indices[rank::world]``, no padding, so no
image counts twice) and the evaluators are gathered, so every rank sees the same metrics and takes the
same early-stopping decision. Only rank 0 writes files and prints.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from cli.errors import UserError

__all__ = ["DistInfo", "setup", "cleanup", "all_reduce_mean", "all_gather_objects", "barrier", "shard"]


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(arg: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` when CUDA is available, else ``cpu``."""
    if arg == "auto":
        arg = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(arg)
    except RuntimeError:
        raise UserError(f"--device {arg!r} is not a device (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {arg}: CUDA is not available on this machine (use --device cpu)")
        index = dev.index if dev.index is not None else local_rank
        if index >= torch.cuda.device_count():
            raise UserError(f"--device {arg}: only {torch.cuda.device_count()} CUDA device(s) visible")
        dev = torch.device("cuda", index)
    elif dev.type not in ("cpu", "mps", "xpu"):
        raise UserError(f"--device {arg!r}: unsupported device type {dev.type!r}")
    return dev


def setup(device_arg: str = "auto") -> DistInfo:
    """Initialises the process group when launched by torchrun (``WORLD_SIZE`` > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(device=resolve_device(device_arg))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_arg, local)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistInfo(rank, world, local, device)


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce_mean(value: float, info: DistInfo) -> float:
    """The mean of a Python float over the ranks."""
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return float(t.item()) / info.world_size


def all_reduce_sum(values: list[float], info: DistInfo) -> list[float]:
    if not info.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return t.tolist()


def all_gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def shard(n: int, info: DistInfo) -> list[int]:
    """This rank's indices of ``range(n)`` for evaluation: ``rank, rank + world, ...`` (no padding)."""
    return list(range(info.rank, n, info.world_size))


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
