"""Optimizers and learning-rate schedules shared by the vision and speech trainers.

Example:
    >>> from blspeech.models import build_model
    >>> model = build_model("bl_resnet50", num_classes=10)
    >>> opt = build_optimizer(model, "sgd", lr=0.1, weight_decay=1e-4)
    >>> sched = build_scheduler(opt, warmup_steps=500, total_steps=10_000, min_lr_ratio=0.0)
    >>> # per optimizer step: opt.step(); sched.step()
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from blspeech.errors import UserError

OPTIMIZERS = ("sgd", "adamw")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Split trainable parameters into a decayed group and a ``weight_decay=0`` group.

    Every parameter with at most one dimension (BatchNorm/LayerNorm weights and biases,
    all biases) skips weight decay: shrinking them towards zero only fights the
    normalisation and does not regularise. Empty groups are left out.
    """
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(
    model: nn.Module,
    name: str,
    lr: float,
    weight_decay: float,
    momentum: float = 0.9,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.Optimizer:
    """``sgd`` (Nesterov momentum) or ``adamw`` over :func:`param_groups`.

    Raises:
        ValueError: unknown ``name``.
    """
    groups = param_groups(model, weight_decay)
    # One fused kernel for all parameters instead of ~10 ops per parameter tensor: that
    # per-tensor cost grows with the layer count (the bL model has 1.6x the baseline's).
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda")
                for g in groups for p in g["params"]) or None
    key = name.lower()
    if key == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True, fused=fused)
    if key == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused)
    raise UserError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0
                  ) -> float:
    """LR multiplier at optimizer step ``step`` (0-based).

    Linear warmup ``(step + 1) / warmup_steps`` for ``step < warmup_steps`` (so the first
    step already learns), then a half cosine from 1 at ``warmup_steps`` down to
    ``min_lr_ratio`` at ``total_steps``, and flat at ``min_lr_ratio`` afterwards:

        progress = (step - warmup_steps) / (total_steps - warmup_steps)
        factor = min_lr_ratio + (1 - min_lr_ratio) * (1 + cos(pi * progress)) / 2
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    warmup_steps: int,
    total_steps: int,
    min_lr_ratio: float = 0.0,
) -> LambdaLR:
    """:func:`warmup_cosine` as a per-step :class:`LambdaLR` (call ``.step()`` after each
    optimizer step).

    The multiplier is a ``functools.partial``, whose ``__dict__`` is empty, so the
    scheduler's state_dict holds only the step counter and base LRs: resuming with a new
    ``total_steps`` (more epochs) follows the new schedule instead of restoring the old one.
    """
    if total_steps < 1 or warmup_steps < 0:
        raise UserError(f"need total_steps >= 1 and warmup_steps >= 0, "
                        f"got {total_steps} and {warmup_steps}")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise UserError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
    fn = functools.partial(warmup_cosine, warmup_steps=warmup_steps, total_steps=total_steps,
                           min_lr_ratio=min_lr_ratio)
    return LambdaLR(optimizer, fn)


def sync_lr(scheduler: LambdaLR) -> None:
    """Set each group's LR from the schedule at the scheduler's current step.

    After ``load_state_dict`` the optimizer still holds the LR its *old* schedule gave;
    this makes the first resumed step use the current schedule.
    """
    step = scheduler.last_epoch
    for group, base, fn in zip(scheduler.optimizer.param_groups, scheduler.base_lrs,
                               scheduler.lr_lambdas, strict=True):
        group["lr"] = base * fn(step)


def optimizer_stepped(has_loss: bool, scale_before: float | None,
                      scale_after: float | None) -> bool:
    """Whether an optimizer step really ran, so the LR schedule may advance.

    No step without a loss to learn from (every utterance of the step skipped). Under fp16
    (``scale_*`` from ``GradScaler.get_scale()``, None without a scaler) ``scaler.step``
    skips the step when the gradients hold inf/NaN, and ``update()`` then lowers the scale:
    a smaller scale after the update is PyTorch's documented sign of a skipped step.
    """
    if not has_loss:
        return False
    return scale_before is None or scale_after is None or scale_after >= scale_before


def optimizer_step(optimizer: torch.optim.Optimizer, scheduler: Any,
                   scaler: torch.amp.GradScaler, has_loss: bool) -> bool:
    """``scaler.step`` (when there is a loss) and ``scaler.update``, then ``scheduler.step``
    only if the optimizer stepped (:func:`optimizer_stepped`): a skipped step must not use up
    warm-up or decay. Call it after ``scaler.unscale_(optimizer)``. Returns whether it
    stepped."""
    before = scaler.get_scale() if scaler.is_enabled() else None
    if has_loss:
        scaler.step(optimizer)
    scaler.update()
    stepped = optimizer_stepped(has_loss, before,
                                scaler.get_scale() if scaler.is_enabled() else None)
    if stepped:
        scheduler.step()
    return stepped
