"""ImageNet-style training and evaluation of the registered vision models, with DDP.

Run it on one process or under torchrun (one process per GPU, or per CPU slot with Gloo):

    python -m blspeech.train_vision --data-dir /data/imagenet --exp-dir exp/bl50
    torchrun --nproc-per-node 8 -m blspeech.train_vision --data-dir /data/imagenet \\
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
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from tqdm import tqdm

from . import distributed as dist_utils
from .checkpoint import (
    capture_rng_state,
    copy_checkpoint,
    load_checkpoint,
    make_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from .errors import UserError
from .models import build_model, build_model_from_config, list_models
from .optim import OPTIMIZERS, build_optimizer, build_scheduler, optimizer_step, sync_lr
from .train_common import (
    TqdmHandler,
    append_metrics,
    autocast_context,
    read_metrics,
    rewrite_metrics,
    seed_everything,
)
from .vision_data import ShardSampler, build_train_set, build_val_set, train_classes

log = logging.getLogger("blspeech.train_vision")

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
        prog="python -m blspeech.train_vision",
        formatter_class=_HelpFormatter,
        description="Train or evaluate a bL-Net/ResNet image classifier on an ImageFolder tree\n"
                    "(ImageNet layout: DATA/train/<class>/*.JPEG, DATA/val/<class>/*.JPEG).\n"
                    "Runs as one process or under torchrun (DistributedDataParallel: NCCL on\n"
                    "CUDA, Gloo on CPU). Writes EXP_DIR/metrics.jsonl (one JSON line per\n"
                    "epoch), last.pt, best.pt (by top-1), train.log and TensorBoard logs (tb/).",
        epilog="examples:\n"
               "  python -m blspeech.train_vision --data-dir /data/imagenet --exp-dir exp/bl50\n"
               "  torchrun --nproc-per-node 8 -m blspeech.train_vision \\\n"
               "      --data-dir /data/imagenet --exp-dir exp/bl50 --resume\n"
               "  python -m blspeech.train_vision --data-dir /data/imagenet "
               "--evaluate exp/bl50/best.pt\n"
               "\nexit codes: 0 success, 2 usage/data error (one line on stderr).",
    )
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
    return p


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


def _close_logging() -> None:
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()


def _setup_logging(exp_dir: str | None, rank: int) -> None:
    _close_logging()
    log.propagate = False
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    if rank != 0:
        # Other ranks only report problems, tagged with their rank.
        h: logging.Handler = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter(f"[rank {rank}] %(levelname)s %(message)s"))
        log.addHandler(h)
        log.setLevel(logging.WARNING)
        return
    h = TqdmHandler()
    h.setFormatter(fmt)
    log.addHandler(h)
    if exp_dir is not None:
        fh = logging.FileHandler(os.path.join(exp_dir, "train.log"))
        fh.setFormatter(fmt)
        log.addHandler(fh)
    log.setLevel(logging.INFO)


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


def _init_distributed(device: str | None) -> dist_utils.DistContext:
    try:
        return dist_utils.init_distributed(device)
    except ValueError as e:
        raise UserError(str(e)) from e


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
    last_path = os.path.join(args.exp_dir, "last.pt")
    ckpt = None
    if args.resume and os.path.exists(last_path):
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
    if args.check_only:
        done = f", resuming after epoch {ckpt['epoch']}" if ckpt is not None else ""
        print(f"ok: {len(classes)} classes, {len(train_set)} train / {len(val_set)} val images, "
              f"model {args.model} with {num_classes} outputs{done}", flush=True)
        return 0

    ctx = _init_distributed(args.device)
    try:
        return _train(args, ctx, model, classes, train_set, val_set, ckpt)
    finally:
        _close_logging()
        dist_utils.cleanup()


def _train(args: argparse.Namespace, ctx: dist_utils.DistContext, model: nn.Module,
           classes: list[str], train_set: Dataset, val_set: Dataset, ckpt: dict | None
           ) -> int:
    _setup_logging(args.exp_dir, ctx.rank)
    dev = ctx.device
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    metrics_path = os.path.join(args.exp_dir, "metrics.jsonl")
    last_path = os.path.join(args.exp_dir, "last.pt")
    best_path = os.path.join(args.exp_dir, "best.pt")
    num_classes = model.config["num_classes"]

    # A multi-node job must see the same checkpoint everywhere (shared --exp-dir).
    seen = dist_utils.all_gather_object(-1 if ckpt is None else ckpt["epoch"])
    if len(set(seen)) > 1:
        raise UserError(f"ranks found different checkpoints in {args.exp_dir} (epochs {seen}); "
                        "--exp-dir must be on a filesystem shared by all nodes")

    train_sampler = DistributedSampler(train_set, num_replicas=ctx.world_size, rank=ctx.rank,
                                       shuffle=True, seed=args.seed, drop_last=False)
    train_loader = _loader(train_set, args.batch_size, train_sampler, args.workers, dev,
                           drop_last=True)
    val_loader = _loader(val_set, args.batch_size,
                         ShardSampler(len(val_set), ctx.rank, ctx.world_size), args.workers,
                         dev, drop_last=False)
    steps_per_epoch = len(train_loader)
    if args.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, args.max_steps_per_epoch)
    if steps_per_epoch == 0:
        raise UserError(f"train/ has {len(train_set)} images: too few for --batch-size "
                        f"{args.batch_size} on {ctx.world_size} process(es)")

    model.to(dev)
    optimizer = build_optimizer(model, args.optimizer, args.lr, args.weight_decay)
    scheduler = build_scheduler(optimizer, round(args.warmup_epochs * steps_per_epoch),
                                steps_per_epoch * args.epochs, args.min_lr_ratio)
    scaler = torch.amp.GradScaler(dev.type, enabled=args.amp == "fp16")

    start_epoch, step, best = 0, 0, -math.inf
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        sync_lr(scheduler)  # follow the current schedule, e.g. after raising --epochs
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        start_epoch, step = ckpt["epoch"], ckpt["step"]
        best = ckpt["best_metric"] if ckpt["best_metric"] is not None else -math.inf
        rng = ckpt.get("rng") or []
        if len(rng) == ctx.world_size:
            restore_rng_state(rng[ctx.rank])
        else:
            log.warning("checkpoint has RNG states for %d ranks, this job has %d: reseeding",
                        len(rng), ctx.world_size)
            seed_everything(args.seed + ctx.rank + 1000 * start_epoch)
        log.info("resumed from %s: %d epoch(s), %d step(s) done, best top-1 %.2f",
                 last_path, start_epoch, step, best)
        if ctx.is_main:
            rewrite_metrics(metrics_path, [r for r in read_metrics(metrics_path)
                                            if r.get("epoch", 0) <= start_epoch])
    elif ctx.is_main:
        if os.path.exists(last_path):
            log.warning("%s exists but --resume is not set: training starts over", last_path)
        with contextlib.suppress(FileNotFoundError):
            os.remove(metrics_path)
    del ckpt  # free the checkpoint's copy of the weights

    ddp_model: nn.Module = model
    if ctx.distributed:
        ddp_model = DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None)

    n_params = sum(p.numel() for p in model.parameters())
    log.info("model %s (%.2fM params), %d classes, %d train / %d val images, world size %d, "
             "device %s, amp %s", args.model, n_params / 1e6, num_classes, len(train_set),
             len(val_set), ctx.world_size, dev, args.amp)
    log.info("%d steps/epoch, global batch %d, epochs %d..%d", steps_per_epoch,
             args.batch_size * ctx.world_size, start_epoch + 1, args.epochs)
    if start_epoch >= args.epochs:
        log.info("nothing to do: %d of %d epochs already done", start_epoch, args.epochs)
        return 0

    writer = None
    if ctx.is_main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(os.path.join(args.exp_dir, "tb"))
    criterion = nn.CrossEntropyLoss()
    try:
        for epoch in range(start_epoch, args.epochs):
            t0 = time.time()
            train_sampler.set_epoch(epoch)
            ddp_model.train()
            loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
            seen_images, t_log = 0, time.time()
            bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{args.epochs}",
                       # None: no bar when stderr is not a terminal (log files, batch jobs).
                       disable=None if ctx.is_main else True, leave=False, dynamic_ncols=True)
            for i, (images, target) in enumerate(
                    itertools.islice(train_loader, steps_per_epoch)):
                images = images.to(dev, non_blocking=True)
                target = target.to(dev, non_blocking=True)
                with autocast_context(dev, args.amp):
                    logits = ddp_model(images)
                loss = criterion(logits.float(), target)
                lr = optimizer.param_groups[0]["lr"]  # the LR this step uses
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                # The schedule advances only when the optimizer stepped (fp16 overflow).
                optimizer_step(optimizer, scheduler, scaler, has_loss=True)
                step += 1
                loss_sum += loss.detach().double() * target.numel()
                seen_images += target.numel()
                bar.update()
                if (i + 1) % args.print_freq == 0 or i + 1 == steps_per_epoch:
                    value = loss.item()
                    if not math.isfinite(value):
                        raise RuntimeError(f"training loss is {value} at step {step}; "
                                           "lower --lr or disable --amp")
                    speed = (i + 1) * args.batch_size * ctx.world_size / (time.time() - t_log)
                    bar.set_postfix(loss=f"{value:.3f}", lr=f"{lr:.3g}")
                    log.info("epoch %d step %d/%d loss %.4f lr %.4g %.1f img/s", epoch + 1,
                             i + 1, steps_per_epoch, value, lr, speed)
                    if writer is not None:
                        writer.add_scalar("train/loss", value, step)
                        writer.add_scalar("train/lr", lr, step)
            bar.close()
            loss_total, n_total = dist_utils.all_reduce_sum([loss_sum.item(), seen_images], dev)
            train_loss = loss_total / max(n_total, 1.0)

            # Evaluate the bare model: DDP's forward would sync buffers in a collective that
            # ranks with fewer validation batches never reach.
            dist_utils.broadcast_buffers(model)
            val = evaluate(model, val_loader, dev, args.amp, num_classes)
            row = {"epoch": epoch + 1, "step": step, "train_loss": train_loss,
                   "val_loss": val["val_loss"], "top1": val["top1"], "top5": val["top5"],
                   "lr": lr, "seconds": time.time() - t0}
            is_best = val["top1"] > best
            best = max(best, val["top1"])
            rng = dist_utils.all_gather_object(capture_rng_state())
            if ctx.is_main:
                append_metrics(metrics_path, row)
                state = make_checkpoint(
                    model, optimizer, scheduler, scaler, epoch=epoch + 1, step=step,
                    best_metric=best, rng=rng,
                    extra={"classes": classes, "args": _plain_args(args),
                           "metrics": row})
                if is_best:
                    # best.pt first, then last.pt as a link to it: a crash in between leaves
                    # an older last.pt, and resuming simply redoes this epoch.
                    save_checkpoint(best_path, state)
                    copy_checkpoint(best_path, last_path)
                else:
                    save_checkpoint(last_path, state)
                log.info("epoch %d: train loss %.4f, val loss %.4f, top-1 %.2f%%, top-5 %.2f%% "
                         "(best %.2f%%), %.1fs", epoch + 1, train_loss, val["val_loss"],
                         val["top1"], val["top5"], best, row["seconds"])
                if writer is not None:
                    for key in ("train_loss", "val_loss", "top1", "top5", "lr"):
                        writer.add_scalar(f"epoch/{key}", row[key], epoch + 1)
                    writer.flush()
            dist_utils.barrier()  # nobody runs ahead while rank 0 writes the checkpoint
    finally:
        if writer is not None:
            writer.close()
    return 0


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

    ctx = _init_distributed(args.device)
    try:
        _setup_logging(None, ctx.rank)
        model.to(ctx.device)
        loader = _loader(val_set, args.batch_size,
                         ShardSampler(len(val_set), ctx.rank, ctx.world_size), args.workers,
                         ctx.device, drop_last=False)
        t0 = time.time()
        val = evaluate(model, loader, ctx.device, args.amp, num_classes)
        result = {"checkpoint": os.path.abspath(args.evaluate),
                  "model": model.config["name"], "epoch": ckpt.get("epoch"),
                  "image_size": args.image_size, **val,
                  "top1_err": 100.0 - val["top1"], "top5_err": 100.0 - val["top5"],
                  "seconds": time.time() - t0}
        if ctx.is_main:
            stem = os.path.splitext(os.path.basename(args.evaluate))[0]
            out = os.path.join(os.path.dirname(os.path.abspath(args.evaluate)),
                               f"eval_{stem}.json")
            tmp = f"{out}.tmp"
            with open(tmp, "w") as f:
                json.dump(result, f, indent=1)
                f.write("\n")
            os.replace(tmp, out)
            print(json.dumps(result), flush=True)
        return 0
    finally:
        _close_logging()
        dist_utils.cleanup()


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
