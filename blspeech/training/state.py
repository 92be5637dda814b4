"""Resuming a training run: one implementation for the speech and the ImageNet trainers.

A run's state is the model, optimizer, LR schedule, gradient scaler, every rank's RNG and
the counters (:class:`Progress`). :func:`save_state` writes it (a collective: every rank's
RNG is gathered, rank 0 writes) and links ``best.pt`` / ``last.pt`` to the new file in an
order that leaves a usable ``last.pt`` at every instant; :func:`restore_state` puts it
back, so that a resumed run continues with the same updates, augmentations and batches as
an uninterrupted one. Each trainer adds its own entries (loader position, classes, config)
through ``extra``.

Example (inside a trainer, after building the modules)::

    >>> progress = restore_state(ckpt, model, optimizer, scheduler, scaler,
    ...                          rank=ctx.rank, world_size=ctx.world_size)  # doctest: +SKIP
    >>> save_state("exp/last.pt", model, optimizer, scheduler, scaler, progress,
    ...            is_main=ctx.is_main)                                      # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from blspeech.errors import UserError
from blspeech.io.checkpoint import (
    capture_rng_state,
    copy_checkpoint,
    make_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from blspeech.training import distributed as dist_utils
from blspeech.training.common import read_metrics, rewrite_metrics
from blspeech.training.optim import sync_lr

log = logging.getLogger("blspeech.training.trainer")


@dataclass
class Progress:
    """The counters a run resumes from; ``best`` is None until a metric was measured."""

    epoch: int = 0
    step: int = 0
    best: float | None = None


def check_same_checkpoint(exp_dir: str, marker: Any) -> None:
    """Every rank must resume from the same checkpoint (a collective).

    ``marker`` identifies what this rank found (e.g. the checkpoint's step, or -1 for
    none); ranks of a multi-node job that see different files have an ``exp_dir`` that is
    not shared.
    """
    seen = dist_utils.all_gather_object(marker)
    if len(set(seen)) > 1:
        raise UserError(f"ranks found different checkpoints in {exp_dir} ({seen}); "
                        "--exp-dir must be on a filesystem shared by all nodes")


def restore_state(ckpt: Mapping[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
                  scheduler: Any, scaler: Any, *, rank: int, world_size: int,
                  reseed: Callable[[int], None] | None = None) -> Progress:
    """Load a checkpoint written by :func:`save_state` into the run's modules.

    The schedule follows the current configuration (e.g. after raising the number of
    epochs). RNG states are restored when the checkpoint has one per rank of this job;
    otherwise ``reseed(epoch)`` is called (when given) and a warning says so.
    """
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    sync_lr(scheduler)
    if ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    progress = Progress(int(ckpt["epoch"]), int(ckpt["step"]),
                        None if ckpt.get("best_metric") is None else float(ckpt["best_metric"]))
    rng = ckpt.get("rng") or []
    if len(rng) == world_size:
        restore_rng_state(rng[rank])
    else:
        log.warning("checkpoint has RNG states for %d rank(s), this job has %d: %s",
                    len(rng), world_size, "reseeding" if reseed else "random streams differ")
        if reseed is not None:
            reseed(progress.epoch)
    return progress


def save_state(path: str, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
               scaler: Any, progress: Progress, *, is_main: bool,
               extra: Mapping[str, Any] | None = None, links: Sequence[str] = ()) -> None:
    """Write the run's state to ``path``, then make each of ``links`` a copy of it.

    A collective: every rank's RNG state is gathered and rank 0 (``is_main``) writes. The
    order (the new file first, then best.pt, then last.pt) means that a crash at any point
    leaves an older but complete ``last.pt``, from which resuming redoes the work since.
    """
    rng = dist_utils.all_gather_object(capture_rng_state())
    if not is_main:
        return
    state = make_checkpoint(model, optimizer, scheduler, scaler, epoch=progress.epoch,
                            step=progress.step, best_metric=progress.best, rng=rng,
                            extra=extra)
    save_checkpoint(path, state)
    for link in links:
        if os.path.abspath(link) != os.path.abspath(path):
            copy_checkpoint(path, link)


def trim_metrics(path: str, epoch: int) -> None:
    """Drop the rows of ``metrics.jsonl`` logged after ``epoch`` (work a resume redoes)."""
    rewrite_metrics(path, [r for r in read_metrics(path) if r.get("epoch", 0) <= epoch])
