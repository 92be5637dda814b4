"""The training loop both trainers run: the speech trainer (:mod:`blspeech.training.trainer`)
and the ImageNet one (:mod:`blspeech.training.vision`).

:class:`EpochLoop` owns what does not depend on the task: the process group's lifetime
(:func:`run_on_ranks`), logging to the terminal and ``train.log``, resuming (the run's state
through :func:`~blspeech.training.state.restore_state`, the ``metrics.jsonl`` rows past the
checkpoint dropped), the loop over epochs, and the end of each epoch: the best metric, the
``metrics.jsonl`` row, the checkpoint with its ``best.pt`` / ``last.pt`` links, TensorBoard
scalars and the barrier that keeps the ranks together. A trainer subclasses it with its
data, its step and its evaluation (:meth:`EpochLoop.train_epoch`,
:meth:`EpochLoop.evaluate_epoch`, :meth:`EpochLoop.epoch_row`,
:meth:`EpochLoop.checkpoint_extra`, :meth:`EpochLoop.epoch_checkpoint`,
:meth:`EpochLoop.log_epoch`).

Example (a trainer's whole job)::

    >>> class MyRun(EpochLoop):                                     # doctest: +SKIP
    ...     def train_epoch(self): ...
    ...     def evaluate_epoch(self): return {"dev_loss": 1.0}
    >>> run_on_ranks(lambda ctx: MyRun(ctx, "exp/x", log, epochs=3).run_epochs(),
    ...              "cpu", log)                                      # doctest: +SKIP
"""

from __future__ import annotations

import gc
import logging
import math
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import torch
from torch import nn

from blspeech.training import distributed as dist_utils
from blspeech.training.common import TqdmHandler, append_metrics
from blspeech.training.state import (
    Progress,
    check_same_checkpoint,
    restore_state,
    save_state,
    trim_metrics,
)

T = TypeVar("T")


def close_logging(log: logging.Logger) -> None:
    """Remove and close ``log``'s handlers (``train.log`` stays complete on disk)."""
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()


def setup_logging(log: logging.Logger, exp_dir: str | None, rank: int, fresh: bool = True
                  ) -> None:
    """Rank 0 logs to the terminal (above any tqdm bar) and to ``exp_dir/train.log``
    (appended to when resuming); other ranks only report problems, tagged with their rank."""
    close_logging(log)
    log.propagate = False
    if rank != 0:
        h: logging.Handler = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter(f"[rank {rank}] %(levelname)s %(message)s"))
        log.addHandler(h)
        log.setLevel(logging.WARNING)
        return
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    handlers: list[logging.Handler] = [TqdmHandler()]
    if exp_dir is not None:
        handlers.append(logging.FileHandler(os.path.join(exp_dir, "train.log"),
                                            "w" if fresh else "a"))
    for h in handlers:
        h.setFormatter(fmt)
        log.addHandler(h)
    log.setLevel(logging.INFO)


def run_on_ranks(job: Callable[[dist_utils.DistContext], T], device: str | None,
                 log: logging.Logger) -> T:
    """Join the process group (torchrun) or run alone, run ``job(ctx)``, then leave.

    Every rank meets at a barrier after a normal run, before the group is destroyed: a rank
    that tears its Gloo connections down while another still uses them aborts. The job's
    DDP wrapper and pending work objects are collected first, while the interpreter is
    whole: Gloo work freed during interpreter shutdown aborts the process ("terminate
    called without an active exception", seen in a 2-process CPU test under load).
    """
    ctx = dist_utils.init_distributed(device)
    try:
        out = job(ctx)
        gc.collect()
        dist_utils.barrier()
        return out
    finally:
        close_logging(log)
        dist_utils.cleanup()


class EpochLoop:
    """One training run on one rank: the epoch loop and everything around it.

    Subclasses set ``model`` (the bare module), ``optimizer``, ``scheduler`` and ``scaler``
    before :meth:`restore` and implement the hooks. ``select_by`` names the
    :meth:`evaluate_epoch` metric that picks ``best.pt``; ``lower_is_better`` its direction.
    """

    select_by = "dev_loss"
    lower_is_better = True
    #: Row keys written to TensorBoard as ``epoch/KEY`` (when numeric).
    tb_keys: tuple[str, ...] = ()

    def __init__(self, ctx: dist_utils.DistContext, exp_dir: str, log: logging.Logger,
                 epochs: int) -> None:
        self.ctx, self.exp, self.log, self.epochs = ctx, exp_dir, log, epochs
        self.progress = Progress()
        self.last_row: dict[str, Any] = {}
        self.writer: Any = None
        self.model: nn.Module
        self.optimizer: torch.optim.Optimizer
        self.scheduler: Any
        self.scaler: Any

    # -- counters (the checkpointed Progress)

    @property
    def epoch(self) -> int:
        return self.progress.epoch

    @epoch.setter
    def epoch(self, value: int) -> None:
        self.progress.epoch = value

    @property
    def step(self) -> int:
        return self.progress.step

    @step.setter
    def step(self, value: int) -> None:
        self.progress.step = value

    def path(self, name: str) -> str:
        return os.path.join(self.exp, name)

    # -- set-up

    def start(self, marker: Any, fresh: bool) -> None:
        """Logging, then check that every rank found the same checkpoint (``marker``)."""
        setup_logging(self.log, self.exp, self.ctx.rank, fresh)
        check_same_checkpoint(self.exp, marker)

    def restore(self, ckpt: Mapping[str, Any],
                reseed: Callable[[int], None] | None = None) -> None:
        """Continue from ``ckpt``: the modules' state, the counters, the RNG streams; the
        metrics rows logged after it are dropped (the resumed run writes them again)."""
        self.progress = restore_state(ckpt, self.model, self.optimizer, self.scheduler,
                                      self.scaler, rank=self.ctx.rank,
                                      world_size=self.ctx.world_size, reseed=reseed)
        self.last_row = dict(ckpt.get("metrics") or {})
        if self.ctx.is_main:
            trim_metrics(self.path("metrics.jsonl"), self.epoch)

    def open_writer(self, purge_step: int | None = None) -> None:
        """TensorBoard on rank 0; ``purge_step`` drops points logged after a checkpoint."""
        if self.ctx.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(self.path("tb"), purge_step=purge_step)

    def close_writer(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    # -- the loop

    def run_epochs(self) -> str | None:
        """Train the remaining epochs; the reason for stopping early, or None."""
        stop = self.stop_reason()
        while stop is None and self.epoch < self.epochs:
            stop = self.train_epoch()
            if stop is not None:  # mid-epoch (max_steps): no evaluation, no epoch checkpoint
                break
            self.end_epoch()
            stop = self.stop_reason()
        return stop

    def end_epoch(self) -> None:
        """Evaluate, count the epoch, write its metrics row and checkpoint, log it."""
        # Evaluate the bare model: DDP's forward would sync buffers in a collective that
        # ranks with fewer dev batches never reach.
        dist_utils.broadcast_buffers(self.model)
        metrics = self.evaluate_epoch()
        self.epoch += 1
        improved = self._record_if_best(metrics.get(self.select_by))
        self.last_row = self.epoch_row(metrics, improved)
        if self.ctx.is_main:
            # The row goes first: after a crash before the checkpoint, resuming drops it
            # (rows past the checkpoint's epoch) and writes it again.
            append_metrics(self.path("metrics.jsonl"), self.last_row)
        self.save(self.epoch_checkpoint(improved), best=improved)
        if self.ctx.is_main:
            self.log_epoch(self.last_row)
            if self.writer is not None:
                for key in self.tb_keys:
                    if isinstance(self.last_row.get(key), int | float):
                        self.writer.add_scalar(f"epoch/{key}", self.last_row[key], self.epoch)
                self.writer.flush()
        dist_utils.barrier()  # nobody runs ahead while rank 0 writes the checkpoint

    def _record_if_best(self, value: float | None) -> bool:
        """Whether ``value`` beats the best so far (then it becomes the best); a missing or
        non-finite metric never does."""
        if value is None or not math.isfinite(value):
            return False
        best = self.progress.best
        better = best is None or (value < best if self.lower_is_better else value > best)
        if better:
            self.progress.best = float(value)
        return better

    def save(self, path: str, best: bool = False) -> None:
        """Write the run's state to ``path`` (a collective), then link ``best.pt`` (when
        ``best``) and ``last.pt`` to it (see :func:`~blspeech.training.state.save_state`)."""
        links = [self.path("best.pt")] if best else []
        save_state(path, self.model, self.optimizer, self.scheduler, self.scaler,
                   self.progress, is_main=self.ctx.is_main, extra=self.checkpoint_extra(),
                   links=[*links, self.path("last.pt")])

    # -- hooks

    def stop_reason(self) -> str | None:
        """A reason to stop before the next epoch (e.g. early stopping), or None."""
        return None

    def train_epoch(self) -> str | None:
        """One pass over the training data; a reason when it stopped mid-epoch."""
        raise NotImplementedError

    def evaluate_epoch(self) -> dict[str, Any]:
        """The dev/validation metrics after an epoch (a collective)."""
        raise NotImplementedError

    def epoch_row(self, metrics: dict[str, Any], improved: bool) -> dict[str, Any]:
        """The epoch's ``metrics.jsonl`` row (subclasses update their own counters here)."""
        return {"epoch": self.epoch, "step": self.step, **metrics}

    def epoch_checkpoint(self, improved: bool) -> str:
        """Where the epoch's checkpoint goes (``best.pt`` / ``last.pt`` become links)."""
        return self.path(f"epoch-{self.epoch}.pt")

    def checkpoint_extra(self) -> dict[str, Any]:
        """The trainer's own checkpoint entries (beside model, optimizer, RNG, counters)."""
        return {"metrics": self.last_row}

    def log_epoch(self, row: Mapping[str, Any]) -> None:
        """The one log line about a finished epoch (rank 0)."""
        self.log.info("epoch %d: %s", row["epoch"], row)


__all__ = ["EpochLoop", "close_logging", "run_on_ranks", "setup_logging"]
