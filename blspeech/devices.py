"""Device resolution: one place that turns ``--device`` into a usable ``torch.device``."""

from __future__ import annotations

import torch

from blspeech.errors import UserError

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device | None = None,
                   local_rank: int | None = None) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` (or None: cuda when available) as a usable device.

    A bare ``cuda`` picks GPU ``local_rank`` when given (one GPU per torchrun process),
    else the current GPU. Raises :class:`UserError` for an unknown or unsupported device,
    CUDA requested but unavailable, or a GPU index beyond those visible.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise UserError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from e
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"unsupported device {device!r}; use cpu, cuda or cuda:N")
    if dev.type == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError(f"device {device!r} requested but CUDA is not available; use "
                        "--device cpu")
    index = dev.index if dev.index is not None else local_rank
    if index is None:
        return dev
    if index >= torch.cuda.device_count():
        hint = ("lower --nproc-per-node" if dev.index is None
                else "choose another index")
        raise UserError(f"GPU {index} requested (device {device!r}) but only "
                        f"{torch.cuda.device_count()} visible; {hint}")
    return torch.device("cuda", index)
