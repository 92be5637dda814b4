"""Training speed: a baseline ResNet acoustic model against its Big-Little twin.

Run (from the repository root)::

    .venv/bin/python benchmarks/train_speed.py                        # CPU, the mini presets
    .venv/bin/python benchmarks/train_speed.py --device cuda          # bf16 autocast on CUDA
    .venv/bin/python benchmarks/train_speed.py --device cuda --preset swbd --batch 32
    .venv/bin/python benchmarks/train_speed.py --json                 # one JSON object
    .venv/bin/python benchmarks/train_speed.py --channels-last --padded   # as the recipe trains
    .venv/bin/python benchmarks/train_speed.py --channels-last --padded --breakdown

Each model (a :class:`~blspeech.models.asr.CTCModel` over ``resnet_am_<preset>`` and
``bl_resnet_am_<preset>``) trains on the same random batches: ``--batch`` utterances of
``--seconds`` seconds of 40-bin features with random token targets, full training steps
(forward, CTC loss, backward, gradient clipping, AdamW step). After ``--warmup`` untimed
steps per model, ``--rounds`` rounds each time ``--steps`` steps of every model, the models
taking turns in a rotating order so both see the same machine state. The table gives the
median time per step, throughput in seconds of audio per second, and the bL/baseline time
ratio, next to the ratio of FLOPs counted by torch's flop counter (forward, one 10 s
utterance). On CUDA, autocast runs in bfloat16 (the CTC loss in float32) and the peak GPU
memory of each model is shown.

``--breakdown`` runs ``--steps`` more steps of each model under torch's profiler and
splits their self CPU time into convolutions (forward and backward, every kernel) and
everything else: where the bL model saves time and where it does not (the profiler's
per-op overhead inflates the many small ops a little).

``--channels-last`` trains with NHWC convolutions (``training.channels_last``), as the
telephony recipe does; ``--padded`` makes every other utterance 5% shorter than the batch,
so the padding masks (convolution inputs, BatchNorm statistics) run as in a bucketed
batch; without it nothing is padded and the masks cost nothing.

``--shapes N`` gives every model N batches of different lengths (0.4x to 2x ``--seconds``
in multiples of 32 frames, each as many utterances as fill the same frame budget) that
take turns step by step, as the recipe's length buckets do; a step of a new shape costs
more than a repeated one, and more so in the bL model (use ``--steps`` a multiple of N).
``--bl-set KEY=VALUE`` changes a Big-Little setting of the bL model (``alpha``, ``beta``,
``bl_stages``, ``merge``) to compare variants against the same baseline.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from typing import Any

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from blspeech.models import build_model
from blspeech.models.asr import CTCModel
from blspeech.training.optim import build_optimizer

FRAME_SHIFT = 0.01


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--preset", default="mini", help="tiny, mini, small or swbd (default: mini)")
    p.add_argument("--batch", type=int, default=16, help="utterances per step (default: 16)")
    p.add_argument("--seconds", type=float, default=5.0, help="utterance length (default: 5)")
    p.add_argument("--vocab", type=int, default=30, help="output tokens (default: 30)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per round (default: 5)")
    p.add_argument("--rounds", type=int, default=5, help="rounds (default: 5)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps (default: 3)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads; 0: torch's default")
    p.add_argument("--json", action="store_true", help="print one JSON object instead")
    p.add_argument("--channels-last", action="store_true", help="NHWC convolutions")
    p.add_argument("--padded", action="store_true",
                   help="every other utterance 5%% shorter: padding masks at work")
    p.add_argument("--shapes", type=int, default=1, metavar="N",
                   help="cycle through N batch shapes of the same frame budget, as the "
                        "recipe's length buckets do (default: 1, one fixed batch)")
    p.add_argument("--bl-set", action="append", default=[], metavar="KEY=VALUE",
                   help="a Big-Little setting of the bL model other than the preset's, e.g. "
                        "beta=2 or bl_stages=3 (repeatable; the baseline is unchanged)")
    p.add_argument("--breakdown", action="store_true",
                   help="also profile --steps steps per model: convolution time against "
                        "the rest (BatchNorm, masks, activations, loss, optimizer)")
    args = p.parse_args(argv)
    try:
        args.bl_overrides = {k: yaml.safe_load(v) for k, v in
                             (item.split("=", 1) for item in args.bl_set)}
    except ValueError:
        p.error(f"--bl-set takes KEY=VALUE, got {args.bl_set}")
    if args.shapes < 1:
        p.error(f"--shapes must be >= 1, got {args.shapes}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("--device cuda, but CUDA is not available here")
    return args


def flops_per_second(model: torch.nn.Module, device: torch.device) -> float:
    feats = torch.zeros(1, int(10 / FRAME_SHIFT), 40, device=device)
    counter = FlopCounterMode(display=False)
    model.eval()
    with counter, torch.no_grad():
        model(feats, torch.tensor([feats.shape[1]], device=device))
    model.train()
    return counter.get_total_flops() / 10.0


def batch_shapes(args: argparse.Namespace) -> list[tuple[int, int]]:
    """``(utterances, frames)`` of each batch: ``--batch`` x ``--seconds`` alone, or with
    ``--shapes N`` N lengths from 0.4x to 2x that, multiples of 32 frames as the recipe pads
    them, each with as many utterances as fit the same frame budget (the recipe's
    ``max_frames`` batching)."""
    frames = int(args.seconds / FRAME_SHIFT)
    if args.shapes == 1:
        return [(args.batch, frames)]
    budget = args.batch * frames
    out = []
    for k in range(args.shapes):
        t = max(32, 32 * round(frames * (0.4 + 1.6 * k / (args.shapes - 1)) / 32))
        out.append((max(1, budget // t), t))
    return out


class Trainer:
    """One model, its optimizer and its batches (the same for every model)."""

    def __init__(self, name: str, args: argparse.Namespace, device: torch.device,
                 overrides: dict[str, Any] | None = None) -> None:
        torch.manual_seed(0)
        self.name = name
        self.device = device
        fmt = torch.channels_last if args.channels_last else torch.contiguous_format
        self.model = CTCModel(build_model(name, **(overrides or {})), args.vocab).to(
            device, memory_format=fmt)
        self.flops = flops_per_second(self.model, device)
        self.opt = build_optimizer(self.model, "adamw", lr=1e-3, weight_decay=1e-3)  # the recipe's
        g = torch.Generator().manual_seed(1)
        self.batches = [self._batch(b, t, args, g) for b, t in batch_shapes(args)]
        self.next = 0
        self.bf16 = device.type == "cuda"

    def _batch(self, batch: int, frames: int, args: argparse.Namespace, g: torch.Generator
               ) -> tuple[torch.Tensor, ...]:
        feats = torch.randn(batch, frames, 40, generator=g).to(self.device)
        lengths = torch.full((batch,), frames, device=self.device)
        if args.padded:
            lengths[1::2] = int(frames * 0.95)
        # About one token per 4 output frames, like characters of fast speech.
        n_tok = max(1, frames // (self.model.time_subsampling * 4))
        targets = torch.randint(1, args.vocab, (batch, n_tok), generator=g).to(self.device)
        return feats, lengths, targets, torch.full((batch,), n_tok, device=self.device)

    def step(self) -> None:
        """One training step on the next of the batches (they take turns)."""
        feats, lengths, targets, target_lengths = self.batches[self.next % len(self.batches)]
        self.next += 1
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            log_probs, out_lengths = self.model(feats, lengths)
        loss = self.model.loss(log_probs.float(), out_lengths, targets,
                               target_lengths) / feats.shape[0]
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
        self.opt.step()

    def timed(self, steps: int) -> float:
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        sync()
        return (time.perf_counter() - start) / steps


#: aten ops that are convolution work (forward and backward, oneDNN and the fallback).
CONV_OPS = ("aten::mkldnn_convolution", "aten::convolution_backward",
            "aten::_slow_conv2d_forward", "aten::_slow_conv2d_backward",
            "aten::cudnn_convolution", "aten::_convolution")


def breakdown(trainer: Trainer, steps: int) -> dict[str, float]:
    """Milliseconds per step of convolutions and of everything else (profiler self time)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            trainer.step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    conv = sum(e.self_cpu_time_total for e in events if e.key in CONV_OPS)
    return {"conv_ms": round(conv / steps / 1e3, 2),
            "other_ms": round((total - conv) / steps / 1e3, 2)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    names = [f"resnet_am_{args.preset}", f"bl_resnet_am_{args.preset}"]
    trainers = [Trainer(names[0], args, device),
                Trainer(names[1], args, device, args.bl_overrides)]
    for t in trainers:
        for _ in range(max(args.warmup, args.shapes)):  # every shape once
            t.step()
    times: dict[str, list[float]] = {t.name: [] for t in trainers}
    peak: dict[str, int] = {}
    for r in range(args.rounds):
        for t in trainers[r % 2:] + trainers[:r % 2]:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            times[t.name].append(t.timed(args.steps))
            if device.type == "cuda":
                peak[t.name] = max(peak.get(t.name, 0), torch.cuda.max_memory_allocated(device))
    audio = args.batch * args.seconds
    rows = {}
    for t in trainers:
        med = statistics.median(times[t.name])
        rows[t.name] = {"step_seconds": round(med, 5), "audio_seconds_per_second": round(
            audio / med, 1), "gflops_per_sec_audio": round(t.flops / 1e9, 4),
            "params": sum(p.numel() for p in t.model.parameters()),
            "steps_timed": args.steps * args.rounds}
        if t.name in peak:
            rows[t.name]["peak_memory_mib"] = round(peak[t.name] / 2**20, 1)
    if args.breakdown:
        for t in trainers:
            rows[t.name]["breakdown"] = breakdown(t, args.steps)
    base, bl = (rows[n] for n in names)
    result = {
        "device": (torch.cuda.get_device_name(device) if device.type == "cuda"
                   else f"cpu ({platform.processor() or platform.machine()}, "
                        f"{torch.get_num_threads()} threads)"),
        "dtype": "bf16 autocast" if device.type == "cuda" else "float32",
        "torch": torch.__version__, "batch": args.batch, "seconds": args.seconds,
        "shapes": batch_shapes(args),
        "bl_overrides": args.bl_overrides,
        "channels_last": args.channels_last, "padded": args.padded,
        "models": rows,
        "time_ratio_bl_over_baseline": round(bl["step_seconds"] / base["step_seconds"], 3),
        "flops_ratio_bl_over_baseline": round(bl["gflops_per_sec_audio"]
                                              / base["gflops_per_sec_audio"], 3)}
    if args.breakdown:
        result["breakdown_ratio_bl_over_baseline"] = {
            k: round(bl["breakdown"][k] / base["breakdown"][k], 3)
            for k in ("conv_ms", "other_ms")}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"device: {result['device']}, {result['dtype']}, torch {result['torch']}; batch "
          f"{args.batch} x {args.seconds:g} s, median of {args.rounds} rounds x {args.steps} "
          f"steps; channels-last {args.channels_last}, padded {args.padded}, "
          f"{args.shapes} batch shape(s)")
    print(f"{'model':<24}{'params':>10}{'GFLOPs/s audio':>16}{'s/step':>10}"
          f"{'audio s/s':>11}" + (f"{'peak MiB':>10}" if peak else ""))
    for name, r in rows.items():
        print(f"{name:<24}{r['params']:>10}{r['gflops_per_sec_audio']:>16.3f}"
              f"{r['step_seconds']:>10.4f}{r['audio_seconds_per_second']:>11.1f}"
              + (f"{r['peak_memory_mib']:>10.1f}" if peak else ""))
    print(f"bL / baseline: training time {result['time_ratio_bl_over_baseline']:.3f}, "
          f"FLOPs {result['flops_ratio_bl_over_baseline']:.3f}")
    if args.breakdown:
        print(f"profiled, ms/step: {'conv':>8}{'other':>8}")
        for name in names:
            b = rows[name]["breakdown"]
            print(f"  {name:<22}{b['conv_ms']:>8.1f}{b['other_ms']:>8.1f}")
        r = result["breakdown_ratio_bl_over_baseline"]
        print(f"  {'bL / baseline':<22}{r['conv_ms']:>8.3f}{r['other_ms']:>8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
