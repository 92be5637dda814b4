"""Small helpers for torchrun-style distributed data parallel training.

The same code runs under ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``) and as one plain process: without those variables no
process group is created and every collective below is a no-op.

Example:
    >>> ctx = init_distributed("cpu")   # plain process: rank 0 of 1, no process group
    >>> ctx.rank, ctx.world_size, is_main()
    (0, 1, True)
    >>> all_reduce_sum([3.0, 4.0], ctx.device)
    [3.0, 4.0]
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from blspeech.devices import resolve_device


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the job and which device it trains on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def env_ranks() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the torchrun environment; ``(0, 1, 0)`` without."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def launched_by_torchrun() -> bool:
    """True when the torchrun rendezvous variables are set."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def init_distributed(device: str | None = None, timeout_s: float = 1800.0) -> DistContext:
    """Join the torchrun process group if launched by torchrun, else run as rank 0 of 1.

    The backend is NCCL on CUDA and Gloo on CPU. Calling it twice is harmless.
    """
    rank, world_size, local_rank = env_ranks()
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if launched_by_torchrun() and not dist.is_initialized():
        timeout = datetime.timedelta(seconds=timeout_s)
        if dev.type == "cuda":
            # Binding the device up front lets NCCL set up eagerly and keeps barrier() quiet.
            dist.init_process_group("nccl", timeout=timeout, device_id=dev)
        else:
            dist.init_process_group("gloo", timeout=timeout)
    if dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return DistContext(rank, world_size, local_rank, dev)


def is_initialized() -> bool:
    """True when a process group exists (collectives do real work)."""
    return dist.is_available() and dist.is_initialized()


def backend() -> str:
    """The process group's backend (``nccl``, ``gloo``), or ``none`` without one."""
    return str(dist.get_backend()) if is_initialized() else "none"


def get_rank() -> int:
    """Global rank (0 without a process group)."""
    return dist.get_rank() if is_initialized() else 0


def get_world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    """True on the process that logs and writes files (global rank 0)."""
    return get_rank() == 0


def barrier() -> None:
    """Wait for all processes; no-op without a process group."""
    if is_initialized():
        dist.barrier()


def cleanup() -> None:
    """Destroy the process group if one exists (call once, at exit). After a run that
    ended normally, call :func:`barrier` first: a rank that tears down its Gloo connections
    while another still uses them can make that one abort at exit ("terminate called
    without an active exception", seen once in a 2-process CPU test)."""
    if is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: Sequence[float], device: torch.device | str = "cpu") -> list[float]:
    """Element-wise sum of ``values`` over all processes.

    Use it for metric *sums* (loss x count, correct predictions, sample counts) and divide
    afterwards: averaging per-rank means would weight ranks with fewer samples wrongly.
    float64 keeps integer counts exact far beyond ImageNet's size.
    """
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    if is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def all_gather_object(obj: Any) -> list[Any]:
    """Picklable ``obj`` from every rank, in rank order (``[obj]`` without a process group)."""
    if not is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Copy ``src``'s buffers (BatchNorm running stats) to all ranks.

    After training, each rank's BN statistics saw only its own last batch; syncing them
    makes every rank evaluate exactly the weights that rank 0 saves.
    """
    if not is_initialized():
        return
    for buf in module.buffers():
        dist.broadcast(buf, src)
