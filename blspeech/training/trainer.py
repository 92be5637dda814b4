"""Training of the speech acoustic models (CTC or HMM-hybrid head), on one process or
under torchrun (DDP).

    blspeech train --config ctc_small --train-dir data/train --dev-dir data/dev \\
        --tokenizer-dir data/lang_bpe --exp-dir exp/ctc_bl
    torchrun --nproc-per-node 4 -m blspeech train --config conf/ctc.yaml ...   # DDP
    blspeech train --config conf/hybrid.yaml ... --train-ali "ark:gunzip -c \\
        exp/tri4_ali/ali.*.gz | ali-to-pdf exp/tri4_ali/final.mdl ark:- ark:- |" \\
        --dev-ali ...                                     # hybrid head (head.type hybrid)

The hybrid head is trained with frame cross-entropy against pdf-id alignments (see
:mod:`blspeech.data.alignments`: length checks, subsampling, priors); it reports ``dev_frame_acc``
instead of a dev WER, and its log-priors (from the training alignments) are saved in the
model's state.

The config (see :mod:`blspeech.training.config`) picks the encoder, the data, SpecAugment,
the optimizer, the LR schedule and the training loop settings. One optimizer step is:
for each of ``accum_grad`` batches, autocast forward, CTC loss *summed* over the batch,
backward; then the gradients are divided by the number of utterances (``loss_norm:
utterance``, as ESPnet) or of output frames (``frame``, as icefall reports) summed over
all batches of the step on all ranks; clip, optimizer step, scheduler step (only when the
optimizer stepped: not when every utterance was skipped or fp16's GradScaler skipped
the step for inf/NaN gradients, see :func:`blspeech.training.optim.optimizer_step`). So the
**global batch** is ``world_size x accum_grad`` batches of up to ``data.max_frames``
padded frames each, and 2 processes give the same steps as 1 process with twice the
``accum_grad`` (the sampler hands global batch ``g`` to rank ``g % world_size``). The
logged loss is that normalized sum.

Random draws of a batch (dropout, SpecAugment) come from a seed derived from
``(seed, epoch, global batch index)``, so they do not depend on the number of ranks or
on where a run was resumed. Every ``save_every_n_steps`` steps and at every epoch end a
checkpoint holds everything needed to continue exactly (model, optimizer, scheduler,
scaler, the data loader's position, RNG states) and to use the model (see CHECKPOINT
below); re-running after a kill continues the same loss curve from the last one.

Outputs in ``exp_dir``: ``epoch-N.pt``, ``checkpoint-STEP.pt`` (the newest
``keep_last_n``), ``last.pt`` (the newest of them), ``best.pt`` (best ``select_by``
metric), ``avg_last_N.pt`` (weights averaged over the last N epochs), ``config.yaml``,
``metrics.jsonl`` (one JSON line per epoch), ``train.log`` and TensorBoard logs (``tb/``).

CHECKPOINT keys (all loadable with ``torch.load(weights_only=True)``): ``model``,
``model_config`` (rebuild with :func:`blspeech.models.asr.acoustic_model_from_config`),
``tokenizer`` (``tokenizer_from_dict``), ``normalizer`` (``TextNormalizer(**d)``),
``frontend`` (LogMel options, or None when the features came without
``conf/fbank.yaml``), ``cmvn`` (``{"mode", "stats", "norm_vars"}``; ``stats`` is the
training dir's global Kaldi stats, a 2 x (D+1) float64 tensor, for mode ``global``, else
None), ``data_source``, ``optimizer``, ``scheduler``, ``scaler``, ``loader``, ``epoch``
(completed epochs), ``step``, ``best_metric``, ``rng`` (one state per rank), ``config``,
``metrics``, plus ``bad_epochs`` and ``epoch_stats`` (early stopping and the running
epoch loss, for exact resume).

Utterances whose transcript needs more frames than the encoder outputs are left out of
the loss with a warning (counted per epoch); an epoch in which every utterance was left out
stops with an error before its checkpoint. A non-finite loss or gradient stops with an
error naming the step and the utterances, except under fp16, where GradScaler skips that
step and lowers its scale (a warning names the utterances).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from blspeech.errors import UserError
from blspeech.io.checkpoint import make_checkpoint, save_checkpoint
from blspeech.io.fileio import atomic_write
from blspeech.training import distributed as dist_utils
from blspeech.training.checkpoints import average_checkpoints, prune, remove_old_run
from blspeech.training.common import autocast_context
from blspeech.training.config import build_config, config_diff, plain
from blspeech.training.loop import EpochLoop, run_on_ranks
from blspeech.training.losses import ctc_loss_sum, hybrid_loss_sum
from blspeech.training.optim import build_optimizer, optimizer_step
from blspeech.training.prep import Prepared, build_lr_scheduler, prepare

log = logging.getLogger("blspeech.training.trainer")


# --- the entry point -----------------------------------------------------------------------


def train(config: Mapping[str, Any], *, train_dir: str | os.PathLike,
          dev_dir: str | os.PathLike, tokenizer_dir: str | os.PathLike | None,
          exp_dir: str | os.PathLike, device: str | None = None, resume: bool = True,
          train_ali: str | None = None, dev_ali: str | None = None) -> dict[str, Any]:
    """Train an acoustic model (see the module docstring); returns a summary dict.

    ``config`` is a full or partial config (missing keys take their defaults). With
    ``resume`` an existing ``exp_dir/last.pt`` is continued; without, an earlier run's
    checkpoints in ``exp_dir`` are deleted and training starts over. Under torchrun every
    process calls this. User errors raise :class:`UserError` before any training.

    Example:
        >>> summary = train({"model": {"name": "bl_resnet_am_tiny"},
        ...                  "training": {"epochs": 5}},
        ...                 train_dir="data/train", dev_dir="data/dev",
        ...                 tokenizer_dir="data/lang_char", exp_dir="exp/tiny")  # doctest: +SKIP
        >>> summary["best"], summary["average"]                              # doctest: +SKIP
        ('exp/tiny/best.pt', 'exp/tiny/avg_last_5.pt')
    """
    cfg = build_config(config)
    # Every check that can fail runs before joining the process group, so all ranks stop
    # with the same message instead of one hanging in a collective.
    prep = prepare(cfg, os.fspath(train_dir), os.fspath(dev_dir),
                   None if tokenizer_dir is None else os.fspath(tokenizer_dir),
                   os.fspath(exp_dir), device, resume, train_ali, dev_ali)
    return run_on_ranks(lambda ctx: _Run(prep, ctx).run(), device, log)


# --- one training run ----------------------------------------------------------------------


def _batch_seed(seed: int, epoch: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


def _grouped(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    group: list[Any] = []
    for item in items:
        group.append(item)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


class _Run(EpochLoop):
    """State of one training run on one rank; :meth:`run` is the whole job."""

    tb_keys = ("train_loss", "dev_loss", "dev_wer", "dev_frame_acc")

    def __init__(self, prep: Prepared, ctx: dist_utils.DistContext) -> None:
        super().__init__(ctx, prep.exp_dir, log, prep.cfg["training"]["epochs"])
        self.p, self.cfg = prep, prep.cfg
        self.t = prep.cfg["training"]
        self.select_by = self.t["select_by"]
        self.dev = ctx.device
        self.bad_epochs = 0
        self.epoch_stats = {"loss_sum": 0.0, "count": 0.0, "skipped": 0.0, "frames": 0.0}
        self.warned: set[str] = set()
        self.lr, self.grad_norm, self.last_skipped = 0.0, 0.0, 0
        self.first_skipped: str | None = None  # e.g. "utt7, 57 tokens > 12 frames"
        self.t0 = self.t_log = time.time()
        self.frames_seen, self.epoch_batches = 0.0, 0

    # -- set-up

    def run(self) -> dict[str, Any]:
        p, ctx, t = self.p, self.ctx, self.t
        fresh = p.ckpt is None
        if ctx.is_main:
            os.makedirs(self.exp, exist_ok=True)
            if fresh:
                remove_old_run(self.exp)
        dist_utils.barrier()
        self.start(-1 if fresh else p.ckpt["step"], fresh)
        if self.dev.type == "cuda":
            torch.backends.cudnn.benchmark = False  # varying shapes: autotuning never pays
        # Channels-last 2-D convolutions skip oneDNN's layout reorders on the CPU (a
        # ResNetAM training step took 0.75x the time here); 1-D models are unaffected.
        fmt = torch.channels_last if self.t["channels_last"] else torch.contiguous_format
        model = p.model.to(self.dev, memory_format=fmt)
        self.model = model
        o = self.cfg["optim"]
        self.optimizer = build_optimizer(model, o["name"], o["lr"], o["weight_decay"],
                                         momentum=o["momentum"], betas=tuple(o["betas"]))
        self.scheduler = build_lr_scheduler(self.optimizer, self.cfg["schedule"],
                                            p.total_steps)
        self.scaler = torch.amp.GradScaler(self.dev.type, enabled=t["amp"] == "fp16")
        self.cmvn = p.cmvn_module.to(self.dev) if p.cmvn_module is not None else None
        self.specaug = p.specaug
        if not fresh:
            self._restore(p.ckpt)
        p.ckpt = None  # free the checkpoint's copy of the weights
        self.ddp = model
        if ctx.distributed:
            self.ddp = DistributedDataParallel(
                model, device_ids=[self.dev.index] if self.dev.type == "cuda" else None)
        self.open_writer(purge_step=None if fresh else self.step + 1)
        if ctx.is_main:
            with atomic_write(os.path.join(self.exp, "config.yaml")) as f:
                yaml.safe_dump(plain(self.cfg), f, sort_keys=False)
        n_params = sum(q.numel() for q in model.parameters())
        log.info("config: %s", json.dumps(plain(self.cfg)))
        outputs = (f"vocab {p.tokenizer.vocab_size} ({p.tokenizer.kind})"
                   if self.cfg["head"]["type"] == "ctc" else
                   f"hybrid head, {model.num_pdfs} pdfs"
                   f"{' (token topology)' if model.topology else ''}")
        log.info("model %s: %.2fM parameters, %s, %d train / %d dev utterances, "
                 "world size %d (process group: %s), device %s, amp %s",
                 self.cfg["model"]["name"], n_params / 1e6, outputs, len(p.train_ds),
                 len(p.dev_ds), ctx.world_size, dist_utils.backend(), self.dev, t["amp"])
        log.info("%d batches per epoch and rank, %d optimizer steps per epoch, global batch "
                 "%d x %d batches of <= %d frames", p.batches_per_epoch, p.steps_per_epoch,
                 ctx.world_size, t["accum_grad"], self.cfg["data"]["max_frames"])
        if fresh and t["init_encoder"]:
            log.info("encoder weights from %s (training.init_encoder)", t["init_encoder"])
        try:
            return self._loop()
        finally:
            self.close_writer()

    def _restore(self, ckpt: dict[str, Any]) -> None:
        self.restore(ckpt)
        self.bad_epochs = int(ckpt.get("bad_epochs", 0))
        if ckpt.get("epoch_stats") and ckpt["loader"]["epoch"] == self.epoch:
            self.epoch_stats = {k: float(v) for k, v in ckpt["epoch_stats"].items()}
        changed = config_diff(ckpt.get("config") or {}, self.cfg)
        log.info("resumed from %s: %d epoch(s) and %d step(s) done%s",
                 self.path("last.pt"), self.epoch, self.step,
                 f"; config changed: {', '.join(changed)}" if changed else "")

    # -- the loop

    def _loop(self) -> dict[str, Any]:
        start = self.epoch
        stop = self.stop_reason()
        if stop is not None or start >= self.epochs:
            log.info("nothing to train: %d epoch(s), %d step(s) done%s", start, self.step,
                     f" ({stop})" if stop else "")
        stop = self.run_epochs()
        if stop == "early_stopping" and self.epoch > start:
            log.info("early stopping: no better %s for %d epoch(s)", self.select_by,
                     self.t["early_stopping_patience"])
        if stop != "max_steps" and (self.epoch > start or not os.path.exists(self._avg_path())):
            self._average()
        summary = {"exp_dir": self.exp, "epochs": self.epoch, "step": self.step,
                   "stopped": stop or "completed", "select_by": self.select_by,
                   "best_metric": self.progress.best,
                   "best": self.path("best.pt"), "last": self.path("last.pt"),
                   "average": self._avg_path() if os.path.exists(self._avg_path()) else None,
                   "metrics": self.last_row}
        log.info("done: %s", json.dumps(summary))
        return summary

    def stop_reason(self) -> str | None:
        patience = self.t["early_stopping_patience"]
        if patience and self.bad_epochs >= patience:
            return "early_stopping"
        if self.t["max_steps"] and self.step >= self.t["max_steps"]:
            return "max_steps"
        return None

    def _avg_path(self) -> str:
        return self.path(f"avg_last_{self.t['average_last_n']}.pt")

    def train_epoch(self) -> str | None:
        p, ctx, t = self.p, self.ctx, self.t
        epoch = self.epoch
        p.sampler.set_epoch(epoch)
        first = p.train_loader.state_dict()["batches_done"]  # > 0 when resumed mid-epoch
        if first == 0:
            self.epoch_stats = dict.fromkeys(self.epoch_stats, 0.0)
        self.t0, self.frames_seen, self.t_log = time.time(), 0.0, time.time()
        self.epoch_batches = first + len(p.train_loader)
        bar = tqdm(total=len(p.train_loader), desc=f"epoch {epoch + 1}/{t['epochs']}",
                   disable=None if ctx.is_main else True, leave=False, dynamic_ncols=True)
        numbered = ((k * ctx.world_size + ctx.rank, k, batch)
                    for k, batch in enumerate(p.train_loader, start=first))
        try:
            for group in _grouped(numbered, t["accum_grad"]):
                loss, frames = self._train_step(group)
                bar.update(len(group))
                self.frames_seen += frames
                done = group[-1][1] + 1
                if self.step % t["log_interval"] == 0 or done == self.epoch_batches:
                    self._log_step(loss, done, bar)
                if t["save_every_n_steps"] and self.step % t["save_every_n_steps"] == 0:
                    self._save_step()
                if t["max_steps"] and self.step >= t["max_steps"]:
                    self._check_usable()
                    if not (t["save_every_n_steps"]
                            and self.step % t["save_every_n_steps"] == 0):
                        self._save_step()
                    log.info("stopping: max_steps %d reached", t["max_steps"])
                    return "max_steps"
        finally:
            bar.close()
        self._check_usable()
        return None

    def _check_usable(self) -> None:
        """Stop before the epoch's checkpoints when no utterance of it gave a loss (rather
        than a "completed" run with loss NaN that never learned)."""
        s = self.epoch_stats
        if s["count"] > 0:
            return
        first = f" (first: {self.first_skipped})" if self.first_skipped else ""
        raise UserError(f"no batch of epoch {self.epoch + 1} had a usable utterance: all "
                        f"{int(s['skipped'])} utterances have more tokens than output frames"
                        f"{first}; use a smaller vocabulary or less time subsampling")

    def _train_step(self, group: list[tuple[int, int, dict[str, Any]]]) -> tuple[float, float]:
        """One optimizer step over ``accum_grad`` batches; returns (normalized loss, frames)."""
        t, ctx = self.t, self.ctx
        self.ddp.train()
        sums = np.zeros(5)  # loss sum, count, non-finite utterances, input frames, skipped
        nonfinite: list[str] = []
        for j, (g, _, batch) in enumerate(group):
            torch.manual_seed(_batch_seed(t["seed"], self.epoch, g))
            feats, lengths = self._features(batch, train=True)
            last = j == len(group) - 1
            # Gradients are synced across ranks once per step, on the last batch.
            sync = contextlib.nullcontext() if last or not ctx.distributed \
                else self.ddp.no_sync()
            with sync:
                with autocast_context(self.dev, t["amp"]):
                    log_probs, out_lens = self.ddp(feats, lengths)
                loss, count, per, skipped, _ = self._loss(log_probs.float(), out_lens,
                                                          batch["utts"], self.p.targets)
                self.scaler.scale(loss).backward()
            loss_value = 0.0
            if per is not None:
                per = per.detach()
                finite = torch.isfinite(per)
                kept = [u for i, u in enumerate(batch["utts"]) if i not in skipped]
                nonfinite += [kept[i] for i in (~finite).nonzero().flatten().tolist()]
                loss_value = float(per[finite].sum())
            self._warn_skipped([batch["utts"][i] for i in skipped])
            if skipped and self.first_skipped is None:
                self.first_skipped = self._describe_skipped(batch["utts"][skipped[0]],
                                                            int(out_lens[skipped[0]]))
            sums += (loss_value, count, 0, float(lengths.sum()), len(skipped))
        sums[2] = len(nonfinite)
        loss_sum, count, n_bad, frames, n_skipped = dist_utils.all_reduce_sum(
            sums.tolist(), self.dev)
        if n_bad:
            self._nonfinite_loss(nonfinite)
        self._update(count)
        self.step += 1
        for key, value in zip(("loss_sum", "count", "skipped", "frames"),
                              (loss_sum, count, n_skipped, frames), strict=True):
            self.epoch_stats[key] += value
        self.last_skipped = n_skipped
        return (loss_sum / count if count else float("nan")), frames

    def _nonfinite_loss(self, nonfinite: list[str]) -> None:
        """Stop (or, under fp16, warn) naming the utterances whose loss was not finite."""
        t = self.t
        names = sorted({u for us in dist_utils.all_gather_object(nonfinite) for u in us})
        which = (f"at step {self.step + 1} (epoch {self.epoch + 1}) for utterance(s) "
                 f"{', '.join(names[:10])}{' ...' if len(names) > 10 else ''}")
        if t["amp"] != "fp16":
            raise UserError(f"non-finite loss {which}; check their features and "
                            "transcripts, lower optim.lr or use training.amp none")
        # fp16 overflows now and then: GradScaler skips the step and lowers its scale.
        log.warning("non-finite fp16 loss %s: GradScaler skips the step", which)

    def _update(self, count: float) -> None:
        """Normalize the summed gradients by the step's ``count``, clip, step."""
        t, ctx = self.t, self.ctx
        self.scaler.unscale_(self.optimizer)
        if count > 0:
            # Sum over all ranks / global count; DDP has already averaged over ranks.
            factor = ctx.world_size / count
            for q in self.model.parameters():
                if q.grad is not None:
                    q.grad.mul_(factor)
        clip = t["grad_clip"] if t["grad_clip"] > 0 else math.inf
        self.grad_norm = float(nn.utils.clip_grad_norm_(self.model.parameters(), clip))
        if not math.isfinite(self.grad_norm) and t["amp"] != "fp16":
            raise UserError(f"non-finite gradient norm at step {self.step + 1} (epoch "
                            f"{self.epoch + 1}); lower optim.lr, set training.grad_clip or "
                            "use training.amp none")
        self.lr = self.optimizer.param_groups[0]["lr"]  # the LR this step uses
        optimizer_step(self.optimizer, self.scheduler, self.scaler, has_loss=count > 0)
        self.optimizer.zero_grad(set_to_none=True)

    def _loss(self, log_probs: torch.Tensor, out_lens: torch.Tensor, utts: Sequence[str],
              targets: Mapping[str, Any]
              ) -> tuple[torch.Tensor, int, torch.Tensor | None, list[int], int]:
        """The head's summed loss: ``(loss, count, per utterance, skipped, correct frames)``."""
        head = self.cfg["head"]
        if head["type"] == "ctc":
            return (*ctc_loss_sum(log_probs, out_lens, [targets[u] for u in utts],
                                  self.t["loss_norm"]), 0)
        loss, count, per, correct = hybrid_loss_sum(
            log_probs, out_lens, [targets[u] for u in utts], self.model.time_subsampling,
            ali_subsampling=head["ali_subsampling"], label_smoothing=head["label_smoothing"],
            loss_norm=self.t["loss_norm"])
        return loss, count, per, [], correct

    def _features(self, batch: Mapping[str, Any], train: bool
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        feats = batch["feats"].to(self.dev, non_blocking=True)
        lengths = batch["lengths"].to(self.dev, non_blocking=True)
        if self.cmvn is not None:
            feats = self.cmvn(feats, lengths)
        if train and self.specaug is not None:
            feats = self.specaug(feats, lengths)
        return feats, lengths

    def _describe_skipped(self, utt: str, frames: int) -> str:
        tokens = list(self.p.targets[utt])
        # CTC also needs a blank between equal neighbours (models.asr.too_long_for_ctc).
        repeats = sum(a == b for a, b in zip(tokens, tokens[1:], strict=False))
        extra = f" (+{repeats} blanks between repeats)" if repeats else ""
        return f"{utt}, {len(tokens)} tokens{extra} > {frames} frames"

    def _warn_skipped(self, utts: list[str]) -> None:
        new = [u for u in utts if u not in self.warned]
        if new:
            self.warned.update(new)
            log.warning("skipping %d utterance(s) whose transcript needs more frames than "
                        "the encoder outputs after subsampling: %s", len(new),
                        ", ".join(new[:10]) + (" ..." if len(new) > 10 else ""))

    def _log_step(self, loss: float, done: int, bar: tqdm) -> None:
        speed = self.frames_seen / max(time.time() - self.t_log, 1e-9)
        self.frames_seen, self.t_log = 0.0, time.time()
        bar.set_postfix(loss=f"{loss:.3f}", fps=f"{speed:.0f}")
        log.info("epoch %d step %d batch %d/%d loss %.8g lr %.4g grad_norm %.4g skipped %d "
                 "%.0f frames/s", self.epoch + 1, self.step, done, self.epoch_batches,
                 loss, self.lr, self.grad_norm, self.last_skipped, speed)
        if self.writer is not None:
            self.writer.add_scalar("train/loss", loss, self.step)
            self.writer.add_scalar("train/lr", self.lr, self.step)
            self.writer.add_scalar("train/grad_norm", self.grad_norm, self.step)

    # -- evaluation, checkpoints, averaging

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, Any]:
        """Dev loss (normalized as in training) over all ranks, with greedy-decoding WER
        (CTC head) or frame accuracy (hybrid head)."""
        from blspeech.decoding.ctc import greedy_batch
        from blspeech.scoring.wer import score

        p, t = self.p, self.t
        ctc = self.cfg["head"]["type"] == "ctc"
        model.eval()
        sums = np.zeros(5)  # loss sum, count, skipped, correct frames, output frames
        hyps: dict[str, str] = {}
        for batch in p.dev_loader:
            feats, lengths = self._features(batch, train=False)
            with autocast_context(self.dev, t["amp"]):
                log_probs, out_lens = model(feats, lengths)
            log_probs = log_probs.float()
            loss, count, per, skipped, correct = self._loss(log_probs, out_lens, batch["utts"],
                                                            p.dev_targets)
            sums += (float(loss), count, len(skipped), correct, float(out_lens.sum()))
            if ctc:
                for utt, hyp in zip(batch["utts"],
                                    greedy_batch(log_probs.cpu(), out_lens.cpu()), strict=True):
                    hyps[utt] = p.normalizer(p.tokenizer.decode(hyp.tokens))
        loss_sum, count, skipped, correct, frames = dist_utils.all_reduce_sum(sums.tolist(),
                                                                            self.dev)
        dev_loss = loss_sum / count if count else float("nan")
        if not ctc:
            return {"dev_loss": dev_loss, "dev_wer": None,
                    "dev_frame_acc": round(100.0 * correct / frames, 4) if frames else None,
                    "dev_skipped": int(skipped)}
        for part in dist_utils.all_gather_object(hyps):
            hyps.update(part)
        result = score(p.dev_refs, hyps)
        return {"dev_loss": dev_loss, "dev_wer": result.wer, "dev_skipped": int(skipped)}

    def evaluate_epoch(self) -> dict[str, Any]:
        return self.evaluate(self.model)

    def epoch_row(self, metrics: dict[str, Any], improved: bool) -> dict[str, Any]:
        s = self.epoch_stats
        self.bad_epochs = 0 if improved else self.bad_epochs + 1
        seconds = time.time() - self.t0
        return {"epoch": self.epoch, "step": self.step,
                "train_loss": s["loss_sum"] / s["count"] if s["count"] else None,
                **metrics, "lr": self.optimizer.param_groups[0]["lr"],
                "train_skipped": int(s["skipped"]), "seconds": round(seconds, 3),
                "frames_per_second": round(s["frames"] / max(seconds, 1e-9), 1)}

    def end_epoch(self) -> None:
        super().end_epoch()
        if self.ctx.is_main:
            prune(self.exp, "epoch", max(self.t["keep_last_n"], self.t["average_last_n"]))

    def log_epoch(self, row: Mapping[str, Any]) -> None:
        metric_text = (f"dev frame accuracy {row['dev_frame_acc']:.2f}%"
                       if "dev_frame_acc" in row else f"dev WER {_fmt(row['dev_wer'])}")
        log.info("epoch %d: train loss %.4f, dev loss %.4f, %s (best %s %.4g), %d skipped, "
                 "%.1fs", row["epoch"], _nan(row["train_loss"]), row["dev_loss"], metric_text,
                 self.select_by, _nan(self.progress.best), row["train_skipped"],
                 row["seconds"])

    def _save_step(self) -> None:
        self.save(self.path(f"checkpoint-{self.step}.pt"))
        if self.ctx.is_main:
            prune(self.exp, "checkpoint", self.t["keep_last_n"])
        dist_utils.barrier()

    def checkpoint_extra(self) -> dict[str, Any]:
        return {**self.p.inference_payload(), "loader": self.p.train_loader.state_dict(),
                "metrics": plain(self.last_row), "bad_epochs": self.bad_epochs,
                "epoch_stats": dict(self.epoch_stats)}

    def _average(self) -> None:
        n = self.t["average_last_n"]
        if not n:
            return
        paths = [self.path(f"epoch-{e}.pt") for e in range(max(1, self.epoch - n + 1),
                                                              self.epoch + 1)]
        paths = [q for q in paths if os.path.exists(q)]
        if not paths:
            log.warning("no epoch checkpoints to average in %s", self.exp)
            return
        if len(paths) < n:
            log.warning("averaging %d epoch checkpoint(s), fewer than average_last_n=%d",
                        len(paths), n)
        dist_utils.barrier()
        self.model.load_state_dict(average_checkpoints(paths))
        dev = self.evaluate(self.model)
        if self.ctx.is_main:
            state = make_checkpoint(
                self.model, epoch=self.epoch, step=self.step,
                best_metric=self.progress.best, rng=[],
                extra={**self.p.inference_payload(), "loader": None, "metrics": dev,
                       "averaged_from": [os.path.basename(q) for q in paths]})
            save_checkpoint(self._avg_path(), state)
            log.info("averaged %s into %s: dev loss %.4f, dev WER %s, dev frame accuracy %s",
                     ", ".join(os.path.basename(q) for q in paths), self._avg_path(),
                     dev["dev_loss"], _fmt(dev["dev_wer"]), _fmt(dev.get("dev_frame_acc")))
        dist_utils.barrier()


def _fmt(wer: float | None) -> str:
    return "n/a" if wer is None else f"{wer:.2f}%"


def _nan(value: float | None) -> float:
    return math.nan if value is None else value
