"""Counting and timing models: parameters, multiply-accumulates, forward time.

MACs come from PyTorch's operator-level counter (``torch.utils.flop_counter``), which
counts convolutions and matrix products (FLOPs = 2 x MACs); element-wise ops (BN, ReLU,
pooling, the Big-Little merge) are not counted, the same convention as the bL-Net paper
and the usual ImageNet tables.

Example:
    >>> import torch
    >>> from blspeech.models import build_model
    >>> from blspeech.models.profile import count
    >>> stats = count(build_model("bl_resnet50"), torch.randn(1, 3, 224, 224))
    >>> round(stats["macs"] / 1e9, 3)
    2.856
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from blspeech.models.big_little import BigLittleModule

PARTS = ("big", "little", "merge+fusion", "other")


def _bl_parts(model: nn.Module) -> dict[str, list[str]]:
    """Module paths of each Big-Little part, for every BigLittleModule in ``model``."""
    parts: dict[str, list[str]] = {p: [] for p in PARTS[:3]}
    for path, module in model.named_modules():
        if isinstance(module, BigLittleModule):
            prefix = f"{path}." if path else ""
            parts["big"].append(prefix + "big")
            parts["little"] += [prefix + "little", prefix + "little_e"]
            parts["merge+fusion"].append(prefix + "fusion")
    return parts


def count_params(model: nn.Module) -> int:
    """Number of parameters (buffers such as BN statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


@torch.inference_mode()
def time_forward(
    model: nn.Module, example_input: torch.Tensor, repeats: int = 5, warmup: int = 1
) -> float:
    """Median wall time of one forward pass in milliseconds (model in eval mode)."""
    was_training = model.training
    model.eval()
    sync = torch.cuda.synchronize if example_input.is_cuda else (lambda: None)
    for _ in range(warmup):
        model(example_input)
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(example_input)
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    model.train(was_training)
    return statistics.median(times)


def count(
    model: nn.Module, example_input: torch.Tensor, repeats: int = 5, warmup: int = 1
) -> dict[str, Any]:
    """Parameters, MACs (per the whole ``example_input`` batch) and forward time.

    Returns a dict with ``params``, ``macs``, ``breakdown`` (``macs`` and ``params`` per part:
    ``big``, ``little`` (Little branch + its 1x1 expansion), ``merge+fusion`` and ``other``
    (stem, plain stages, classifier)), ``input_shape`` and ``forward_ms`` (median over
    ``repeats``; 0 repeats skips timing).
    """
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(example_input)
    model.train(was_training)
    by_module = counter.get_flop_counts()
    root = type(model).__name__
    total_macs = counter.get_total_flops() // 2
    modules = dict(model.named_modules())
    breakdown: dict[str, dict[str, int]] = {}
    for part, paths in _bl_parts(model).items():
        breakdown[part] = {
            "macs": sum(sum(by_module.get(f"{root}.{p}", {}).values()) for p in paths) // 2,
            "params": sum(count_params(modules[p]) for p in paths),
        }
    params = count_params(model)
    breakdown["other"] = {
        "macs": total_macs - sum(b["macs"] for b in breakdown.values()),
        "params": params - sum(b["params"] for b in breakdown.values()),
    }
    result: dict[str, Any] = {
        "params": params,
        "macs": total_macs,
        "breakdown": breakdown,
        "input_shape": list(example_input.shape),
    }
    if repeats > 0:
        result["forward_ms"] = round(time_forward(model, example_input, repeats, warmup), 3)
    return result
