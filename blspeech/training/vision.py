"""ImageNet-style training and evaluation of the registered vision models, with DDP.

Run it on one process or under torchrun (one process per GPU, or per CPU slot with Gloo):

    python -m blspeech.training.vision --data-dir /data/imagenet --exp-dir exp/bl50
    torchrun --nproc-per-node 8 -m blspeech.training.vision --data-dir /data/imagenet \\
        --model bl_resnet50 --exp-dir exp/bl50 --resume

Outputs in ``--exp-dir``: ``metrics.jsonl`` (one JSON line per epoch), ``last.pt`` (every
epoch) and ``best.pt`` (best top-1), ``train.log`` and TensorBoard logs under ``tb/``.
``--evaluate CKPT`` only evaluates a checkpoint on ``val/`` and prints one JSON line.

User errors (bad paths, empty class folders, unknown model, ...) print one line on stderr
and exit with code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from tqdm import tqdm

from blspeech.data.vision import ShardSampler, build_train_set, build_val_set, train_classes
from blspeech.errors import UserError
from blspeech.io.checkpoint import load_checkpoint
from blspeech.io.fileio import atomic_write
from blspeech.models import build_model, build_model_from_config, list_models
from blspeech.training import distributed as dist_utils
from blspeech.training.common import autocast_context, seed_everything
from blspeech.training.loop import EpochLoop, run_on_ranks, setup_logging
from blspeech.training.optim import OPTIMIZERS, build_optimizer, build_scheduler, optimizer_step

log = logging.getLogger("blspeech.training.vision")

MIN_IMAGE_SIZE = 32  # the backbones downsample by 32


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    # Show real defaults; None/False defaults are explained in the help text itself.
    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and action.option_strings:
            text += " (default: %(default)s)"
        return text


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface (``--help`` documents every flag)."""
    p = argparse.ArgumentParser(
        prog="python -m blspeech.training.vision",
        formatter_class=_HelpFormatter,
        description="Train or evaluate a bL-Net/ResNet image classifier on an ImageFolder tree\n"
                    "(ImageNet layout: DATA/train/<class>/*.JPEG, DATA/val/<class>/*.JPEG).\n"
                    "Runs as one process or under torchrun (DistributedDataParallel: NCCL on\n"
                    "CUDA, Gloo on CPU). Writes EXP_DIR/metrics.jsonl (one JSON line per\n"
                    "epoch), last.pt, best.pt (by top-1), train.log and TensorBoard logs (tb/).",
        epilog="examples:\n"
               "  python -m blspeech.training.vision --data-dir /data/imagenet --exp-dir exp/bl50\n"
               "  torchrun --nproc-per-node 8 -m blspeech.training.vision \\\n"
               "      --data-dir /data/imagenet --exp-dir exp/bl50 --resume\n"
               "  python -m blspeech.training.vision --data-dir /data/imagenet "
               "--evaluate exp/bl50/best.pt\n"
               "\nexit codes: 0 success, 2 usage/data error (one line on stderr).",
    )
    _model_and_optimizer_options(p)
    _run_options(p)
    return p


def _model_and_optimizer_options(p: argparse.ArgumentParser) -> None:
    a = p.add_argument
    a("--data-dir", required=True,
      help="ImageFolder root holding train/ and val/, each with one sub-folder per class")
    a("--model", default="bl_resnet50",
      help=f"registered model name; one of: {', '.join(list_models())}")
    a("--alpha", type=int, default=None,
      help="bL models: Little-branch channel reduction (model default when unset: 2)")
    a("--beta", type=int, default=None,
      help="bL models: Big-branch block reduction (model default when unset: 4)")
    a("--num-classes", type=int, default=None,
      help="classifier outputs; default: the number of class folders in train/")
    a("--epochs", type=int, default=110, help="total epochs to train (110 as in bL-Net)")
    a("--batch-size", type=int, default=64,
      help="images per process and step; the global batch is this times the world size")
    a("--lr", type=float, default=0.1,
      help="peak learning rate (0.1 suits SGD with a global batch of 256; scale linearly)")
    a("--weight-decay", type=float, default=1e-4,
      help="weight decay for conv/linear weights (BatchNorm parameters and biases get none)")
    a("--warmup-epochs", type=float, default=0.0,
      help="epochs of linear LR warmup before the cosine decay (try 5 for large batches)")
    a("--min-lr-ratio", type=float, default=0.0,
      help="floor of the cosine decay, as a fraction of --lr")
    a("--optimizer", choices=OPTIMIZERS, default="sgd",
      help="sgd (Nesterov, momentum 0.9) or adamw")
    a("--image-size", type=int, default=224,
      help="training crop size; validation resizes to size*256/224 and center-crops size")
    a("--workers", type=int, default=None,
      help="data-loading worker processes per process; default: the CPUs available to "
           "this node divided by its process count, at most 8")



def _run_options(p: argparse.ArgumentParser) -> None:
    a = p.add_argument
    a("--amp", choices=("none", "bf16", "fp16"), default="none",
      help="mixed precision: bf16 autocast (CPU or CUDA), or fp16 autocast with a "
           "GradScaler (CUDA only)")
    a("--device", choices=("cpu", "cuda"), default=None,
      help="where to train; default: cuda when available, else cpu. Under torchrun each "
           "process uses GPU LOCAL_RANK")
    a("--exp-dir", default="exp/train_vision",
      help="output folder: checkpoints, metrics.jsonl, train.log, TensorBoard logs (tb/)")
    a("--resume", action="store_true",
      help="continue from EXP_DIR/last.pt when it exists (model, optimizer, scheduler, "
           "scaler, epoch, RNG); without it training starts over")
    a("--max-steps-per-epoch", type=int, default=0,
      help="cap optimizer steps per epoch, for smoke tests (0: no cap)")
    a("--seed", type=int, default=0, help="random seed (each rank adds its rank)")
    a("--print-freq", type=int, default=100,
      help="log training loss, LR and throughput every N steps")
    a("--check-only", action="store_true",
      help="validate the arguments, the data, the model and the checkpoint to resume, "
           "print a summary and exit without training (exit code 2 on problems)")
    a("--evaluate", metavar="CKPT", default=None,
      help="only evaluate checkpoint CKPT on val/ and print one JSON line (also written "
           "next to it as eval_<name>.json); the model comes from the checkpoint")


# ----------------------------------------------------------------------- train/eval


def topk_correct(logits: torch.Tensor, target: torch.Tensor, ks: Sequence[int]) -> list[int]:
    """Number of samples whose label is among the top-k logits, for each k in ``ks``."""
    top = logits.topk(max(ks), dim=1).indices
    hit = top.eq(target[:, None])
    return [int(hit[:, :k].any(dim=1).sum()) for k in ks]


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, amp: str,
             num_classes: int) -> dict[str, float]:
    """Loss, top-1 and top-5 (k clipped to ``num_classes``) over all ranks, in percent.

    Each rank sums loss, correct counts and samples over its shard; the sums are
    all-reduced before dividing, so the result equals a single-process evaluation.
    """
    model.eval()
    ks = (1, min(5, num_classes))
    loss_sum, correct, count = 0.0, [0, 0], 0
    for images, target in loader:
        images = images.to(device, non_blocking=True)
        target = target.to(device, non_blocking=True)
        with autocast_context(device, amp):
            logits = model(images)
        logits = logits.float()
        loss_sum += float(nn.functional.cross_entropy(logits, target, reduction="sum"))
        c1, c5 = topk_correct(logits, target, ks)
        correct[0] += c1
        correct[1] += c5
        count += target.numel()
    loss_sum, c1, c5, n = dist_utils.all_reduce_sum([loss_sum, *correct, count], device)
    n = max(n, 1.0)
    return {"val_loss": loss_sum / n, "top1": 100.0 * c1 / n, "top5": 100.0 * c5 / n,
            "num_samples": int(n)}


def _loader(ds: Dataset, batch_size: int, sampler: Sampler, workers: int, device: torch.device,
            drop_last: bool) -> DataLoader:
    # No persistent workers: fresh workers draw their seeds from the main RNG each epoch,
    # so a resumed run (which restores that RNG) repeats the same augmentations.
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      pin_memory=device.type == "cuda", drop_last=drop_last)


# -------------------------------------------------------------------------- helpers


def _build_model(args: argparse.Namespace, num_classes: int) -> nn.Module:
    if args.model not in list_models():
        raise UserError(f"unknown model {args.model!r}; known models: {', '.join(list_models())}")
    overrides: dict[str, Any] = {"num_classes": num_classes}
    if args.alpha is not None:
        overrides["alpha"] = args.alpha
    if args.beta is not None:
        overrides["beta"] = args.beta
    try:
        return build_model(args.model, **overrides)
    except (ValueError, AssertionError) as e:
        raise UserError(f"cannot build {args.model}: {e}") from e


def _check_args(args: argparse.Namespace) -> None:
    positive = ("epochs", "batch_size", "print_freq")
    for name in positive:
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.workers is None:
        args.workers = _default_workers()
    for name in ("workers", "max_steps_per_epoch", "warmup_epochs", "weight_decay"):
        if getattr(args, name) < 0:
            raise UserError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if args.lr <= 0:
        raise UserError(f"--lr must be > 0, got {args.lr}")
    if not 0.0 <= args.min_lr_ratio <= 1.0:
        raise UserError(f"--min-lr-ratio must be in [0, 1], got {args.min_lr_ratio}")
    if args.image_size < MIN_IMAGE_SIZE:
        raise UserError(f"--image-size must be >= {MIN_IMAGE_SIZE}, got {args.image_size}")
    if args.num_classes is not None and args.num_classes < 1:
        raise UserError(f"--num-classes must be >= 1, got {args.num_classes}")
    _check_device(args)


def _check_device(args: argparse.Namespace) -> None:
    try:
        device = dist_utils.resolve_device(args.device, dist_utils.env_ranks()[2])
    except ValueError as e:
        raise UserError(str(e)) from e
    if args.amp == "fp16" and device.type != "cuda":
        raise UserError("--amp fp16 needs --device cuda; use --amp bf16 on CPU")


def _default_workers() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    return max(1, min(8, cpus // per_node))


# ---------------------------------------------------------------------------- runs


def run_training(args: argparse.Namespace) -> int:
    """Train (and evaluate every epoch); returns the exit code."""
    _check_args(args)
    env_rank = dist_utils.env_ranks()[0]
    # Everything that can be a user error is checked before joining the process group,
    # so every rank fails fast with the same message instead of hanging in a collective.
    classes = train_classes(args.data_dir)
    num_classes = args.num_classes or len(classes)
    if num_classes < len(classes):
        raise UserError(f"--num-classes {num_classes} is smaller than the {len(classes)} "
                        f"class folders in train/")
    train_set = build_train_set(args.data_dir, classes, args.image_size)
    val_set = build_val_set(args.data_dir, classes, args.image_size)
    seed_everything(args.seed + env_rank)
    model = _build_model(args, num_classes)
    os.makedirs(args.exp_dir, exist_ok=True)
    ckpt = _checkpoint_to_resume(args, model, classes) if args.resume else None
    if args.check_only:
        done = f", resuming after epoch {ckpt['epoch']}" if ckpt is not None else ""
        print(f"ok: {len(classes)} classes, {len(train_set)} train / {len(val_set)} val images, "
              f"model {args.model} with {num_classes} outputs{done}", flush=True)
        return 0

    return run_on_ranks(lambda ctx: _VisionRun(args, ctx, model, classes, train_set, val_set)
                        .run(ckpt), args.device, log)


def _checkpoint_to_resume(args: argparse.Namespace, model: nn.Module, classes: list[str]
                          ) -> dict[str, Any] | None:
    """``exp_dir/last.pt`` when there is one and it continues this run, else None."""
    last_path = os.path.join(args.exp_dir, "last.pt")
    if not os.path.exists(last_path):
        return None
    try:
        ckpt = load_checkpoint(last_path)
    except ValueError as e:
        raise UserError(str(e)) from e
    if ckpt["model_config"] != model.config:
        raise UserError(f"{last_path} holds model {ckpt['model_config']}, but the "
                        f"arguments build {model.config}; use another --exp-dir")
    if ckpt.get("classes") not in (None, classes):
        raise UserError(f"{last_path} was trained on other classes than "
                        f"{args.data_dir}/train; use another --exp-dir")
    if ckpt.get("args", {}).get("optimizer", args.optimizer) != args.optimizer:
        raise UserError(f"{last_path} was trained with --optimizer "
                        f"{ckpt['args']['optimizer']}; resume with the same optimizer")
    return ckpt


class _VisionRun(EpochLoop):
    """One ImageNet run on one rank: the modules, their data, the step and the evaluation;
    the loop, resuming and checkpoints are :class:`~blspeech.training.loop.EpochLoop`'s."""

    select_by = "top1"
    lower_is_better = False
    tb_keys = ("train_loss", "val_loss", "top1", "top5", "lr")

    def __init__(self, args: argparse.Namespace, ctx: dist_utils.DistContext, model: nn.Module,
                 classes: list[str], train_set: Dataset, val_set: Dataset) -> None:
        super().__init__(ctx, args.exp_dir, log, args.epochs)
        self.args, self.classes = args, classes
        self.train_set, self.val_set = train_set, val_set
        dev = ctx.device
        self.train_sampler = DistributedSampler(train_set, num_replicas=ctx.world_size,
                                                rank=ctx.rank, shuffle=True, seed=args.seed,
                                                drop_last=False)
        self.train_loader = _loader(train_set, args.batch_size, self.train_sampler,
                                    args.workers, dev, drop_last=True)
        self.val_loader = _loader(val_set, args.batch_size,
                                  ShardSampler(len(val_set), ctx.rank, ctx.world_size),
                                  args.workers, dev, drop_last=False)
        self.steps_per_epoch = len(self.train_loader)
        if args.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, args.max_steps_per_epoch)
        if self.steps_per_epoch == 0:
            raise UserError(f"train/ has {len(train_set)} images: too few for --batch-size "
                            f"{args.batch_size} on {ctx.world_size} process(es)")
        self.model = model.to(dev)
        self.optimizer = build_optimizer(model, args.optimizer, args.lr, args.weight_decay)
        self.scheduler = build_scheduler(self.optimizer,
                                         round(args.warmup_epochs * self.steps_per_epoch),
                                         self.steps_per_epoch * args.epochs, args.min_lr_ratio)
        self.scaler = torch.amp.GradScaler(dev.type, enabled=args.amp == "fp16")
        self.ddp_model: nn.Module = model
        if ctx.distributed:
            self.ddp_model = DistributedDataParallel(
                model, device_ids=[dev.index] if dev.type == "cuda" else None)
        self.train_loss = self.lr = 0.0
        self.t0 = time.time()

    def run(self, ckpt: dict | None) -> int:
        args, ctx = self.args, self.ctx
        self.start(-1 if ckpt is None else ckpt["epoch"], fresh=ckpt is None)
        if ctx.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self._resume(ckpt)
        del ckpt  # free the checkpoint's copy of the weights
        n_params = sum(p.numel() for p in self.model.parameters())
        log.info("model %s (%.2fM params), %d classes, %d train / %d val images, world size "
                 "%d, device %s, amp %s", args.model, n_params / 1e6, len(self.classes),
                 len(self.train_set), len(self.val_set), ctx.world_size, ctx.device, args.amp)
        log.info("%d steps/epoch, global batch %d, epochs %d..%d", self.steps_per_epoch,
                 args.batch_size * ctx.world_size, self.epoch + 1, args.epochs)
        if self.epoch >= args.epochs:
            log.info("nothing to do: %d of %d epochs already done", self.epoch, args.epochs)
            return 0
        self.open_writer()
        try:
            self.run_epochs()
        finally:
            self.close_writer()
        return 0

    def _resume(self, ckpt: dict | None) -> None:
        """Restore ``ckpt``, or start fresh (an earlier run's metrics removed)."""
        args, ctx = self.args, self.ctx
        if ckpt is None:
            if ctx.is_main:
                if os.path.exists(self.path("last.pt")):
                    log.warning("%s exists but --resume is not set: training starts over",
                                self.path("last.pt"))
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self.path("metrics.jsonl"))
            return
        self.restore(ckpt, reseed=lambda epoch: seed_everything(args.seed + ctx.rank
                                                                + 1000 * epoch))
        log.info("resumed from %s: %d epoch(s), %d step(s) done, best top-1 %s",
                 self.path("last.pt"), self.epoch, self.step,
                 "n/a" if self.progress.best is None else f"{self.progress.best:.2f}")

    def train_epoch(self) -> None:
        """One pass over the training set: the mean loss over all ranks and the last LR."""
        args, ctx, dev = self.args, self.ctx, self.ctx.device
        self.t0 = time.time()
        self.train_sampler.set_epoch(self.epoch)
        self.ddp_model.train()
        criterion = nn.CrossEntropyLoss()
        loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
        seen_images, t_log = 0, time.time()
        bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {self.epoch + 1}/{args.epochs}",
                   # None: no bar when stderr is not a terminal (log files, batch jobs).
                   disable=None if ctx.is_main else True, leave=False, dynamic_ncols=True)
        batches = itertools.islice(self.train_loader, self.steps_per_epoch)
        for i, (images, target) in enumerate(batches):
            images = images.to(dev, non_blocking=True)
            target = target.to(dev, non_blocking=True)
            with autocast_context(dev, args.amp):
                logits = self.ddp_model(images)
            loss = criterion(logits.float(), target)
            self.lr = self.optimizer.param_groups[0]["lr"]  # the LR this step uses
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            # The schedule advances only when the optimizer stepped (fp16 overflow).
            optimizer_step(self.optimizer, self.scheduler, self.scaler, has_loss=True)
            self.step += 1
            loss_sum += loss.detach().double() * target.numel()
            seen_images += target.numel()
            bar.update()
            if (i + 1) % args.print_freq == 0 or i + 1 == self.steps_per_epoch:
                self._log_step(i, loss.item(), t_log, bar)
        bar.close()
        loss_total, n_total = dist_utils.all_reduce_sum([loss_sum.item(), seen_images], dev)
        self.train_loss = loss_total / max(n_total, 1.0)

    def _log_step(self, i: int, value: float, t_log: float, bar: tqdm) -> None:
        if not math.isfinite(value):
            raise RuntimeError(f"training loss is {value} at step {self.step}; "
                               "lower --lr or disable --amp")
        speed = (i + 1) * self.args.batch_size * self.ctx.world_size / (time.time() - t_log)
        bar.set_postfix(loss=f"{value:.3f}", lr=f"{self.lr:.3g}")
        log.info("epoch %d step %d/%d loss %.4f lr %.4g %.1f img/s", self.epoch + 1, i + 1,
                 self.steps_per_epoch, value, self.lr, speed)
        if self.writer is not None:
            self.writer.add_scalar("train/loss", value, self.step)
            self.writer.add_scalar("train/lr", self.lr, self.step)

    def evaluate_epoch(self) -> dict[str, Any]:
        return evaluate(self.model, self.val_loader, self.ctx.device, self.args.amp,
                        len(self.classes))

    def epoch_row(self, metrics: dict[str, Any], improved: bool) -> dict[str, Any]:
        return {"epoch": self.epoch, "step": self.step, "train_loss": self.train_loss,
                "val_loss": metrics["val_loss"], "top1": metrics["top1"],
                "top5": metrics["top5"], "lr": self.lr, "seconds": time.time() - self.t0}

    def epoch_checkpoint(self, improved: bool) -> str:
        # Two files only (ImageNet checkpoints are large): best.pt when top-1 improved, with
        # last.pt a copy of it, else last.pt alone.
        return self.path("best.pt" if improved else "last.pt")

    def checkpoint_extra(self) -> dict[str, Any]:
        return {"classes": self.classes, "args": _plain_args(self.args),
                "metrics": self.last_row}

    def log_epoch(self, row: Mapping[str, Any]) -> None:
        log.info("epoch %d: train loss %.4f, val loss %.4f, top-1 %.2f%%, top-5 %.2f%% "
                 "(best %.2f%%), %.1fs", row["epoch"], row["train_loss"], row["val_loss"],
                 row["top1"], row["top5"], self.progress.best, row["seconds"])


def run_evaluation(args: argparse.Namespace) -> int:
    """Evaluate ``args.evaluate`` on val/; rank 0 prints one JSON line."""
    if args.image_size < MIN_IMAGE_SIZE:
        raise UserError(f"--image-size must be >= {MIN_IMAGE_SIZE}, got {args.image_size}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.workers is None:
        args.workers = _default_workers()
    if args.workers < 0:
        raise UserError(f"--workers must be >= 0, got {args.workers}")
    _check_device(args)
    try:
        ckpt = load_checkpoint(args.evaluate)
        model = build_model_from_config(ckpt["model_config"])
        model.load_state_dict(ckpt["model"])
    except (ValueError, RuntimeError) as e:
        raise UserError(str(e).splitlines()[0]) from e
    classes = ckpt.get("classes") or train_classes(args.data_dir)
    val_set = build_val_set(args.data_dir, classes, args.image_size)
    num_classes = model.config["num_classes"]
    if len(classes) > num_classes:
        raise UserError(f"{args.evaluate} has {num_classes} outputs but the data has "
                        f"{len(classes)} classes")

    return run_on_ranks(lambda ctx: _evaluate_on_rank(args, ctx, model, ckpt, val_set),
                        args.device, log)


def _evaluate_on_rank(args: argparse.Namespace, ctx: dist_utils.DistContext, model: nn.Module,
                      ckpt: Mapping[str, Any], val_set: Dataset) -> int:
    setup_logging(log, None, ctx.rank)
    model.to(ctx.device)
    loader = _loader(val_set, args.batch_size,
                     ShardSampler(len(val_set), ctx.rank, ctx.world_size), args.workers,
                     ctx.device, drop_last=False)
    t0 = time.time()
    val = evaluate(model, loader, ctx.device, args.amp, model.config["num_classes"])
    result = {"checkpoint": os.path.abspath(args.evaluate), "model": model.config["name"],
              "epoch": ckpt.get("epoch"), "image_size": args.image_size, **val,
              "top1_err": 100.0 - val["top1"], "top5_err": 100.0 - val["top5"],
              "seconds": time.time() - t0}
    if ctx.is_main:
        stem = os.path.splitext(os.path.basename(args.evaluate))[0]
        out = os.path.join(os.path.dirname(os.path.abspath(args.evaluate)), f"eval_{stem}.json")
        with atomic_write(out) as f:
            json.dump(result, f, indent=1)
            f.write("\n")
        print(json.dumps(result), flush=True)
    return 0


def _plain_args(args: argparse.Namespace) -> dict[str, Any]:
    # Only str/int/float/bool/None: the checkpoint must stay weights_only-loadable.
    return {k: v for k, v in vars(args).items()
            if v is None or isinstance(v, str | int | float | bool)}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for user errors, reported in one line)."""
    args = build_parser().parse_args(argv)
    try:
        return run_evaluation(args) if args.evaluate else run_training(args)
    except UserError as e:
        # One message per node, not one per process.
        if dist_utils.env_ranks()[2] == 0:
            msg = " ".join(str(e).split("\n"))
            print(f"train_vision: error: {msg}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
