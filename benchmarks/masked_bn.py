"""Training-step cost of masked BatchNorm statistics (padding kept out of batch statistics).

Run (from the repository root)::

    .venv/bin/python benchmarks/masked_bn.py                  # CPU, the mini presets
    .venv/bin/python benchmarks/masked_bn.py --device cuda    # add --amp bf16 for autocast

Each encoder (``resnet_am_mini``, ``bl_resnet_am_mini``) trains in train mode on one padded
batch: ``--batch`` utterances whose lengths are spread evenly over ``--min-frames`` to
``--max-frames`` 40-bin frames, padded to the longest. A step is forward + backward of the
mean square of the valid outputs. Two variants of the same model take turns, in alternating
order, for ``--rounds`` rounds of ``--steps`` steps after ``--warmup`` untimed steps:
*masked* (the default: BN batch statistics over valid frames only) and *unmasked* (the BNs'
``time_mask`` removed, so they compute plain batch statistics over the whole padded batch;
convolution inputs are masked in both). The table gives the median step time of each
variant, the median masked/unmasked ratio of the rounds (each round's ratio pairs times
taken back to back, which cancels most of a shared machine's drift) and the spread of those
ratios (min to max), and the spread of each variant's round times ((max - min) / median),
for wall-clock time and for the process's CPU time (steadier on a shared machine with
``--threads 1``; with more threads it counts OpenMP spin-waiting too).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterator

import torch
from torch import nn

from blspeech.models import build_model
from blspeech.models.blocks import MaskedBatchNorm1d, MaskedBatchNorm2d

MODELS = ("resnet_am_mini", "bl_resnet_am_mini")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--amp", choices=("none", "bf16"), default="none",
                   help="autocast dtype (default: none)")
    p.add_argument("--batch", type=int, default=16, help="utterances per step (default: 16)")
    p.add_argument("--min-frames", type=int, default=200, help="shortest utterance")
    p.add_argument("--max-frames", type=int, default=500, help="longest utterance")
    p.add_argument("--steps", type=int, default=3, help="timed steps per round (default: 3)")
    p.add_argument("--rounds", type=int, default=7, help="rounds (default: 7)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps (default: 2)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads; 0: torch's default")
    p.add_argument("--models", nargs="+", default=list(MODELS), help="registered encoders")
    return p.parse_args(argv)


def set_masked(model: nn.Module, masked: bool, saved: dict[nn.Module, object]) -> None:
    """Give the model's BNs their ``time_mask`` back (masked) or take it away (unmasked)."""
    for m in model.modules():
        if isinstance(m, MaskedBatchNorm1d | MaskedBatchNorm2d):
            saved.setdefault(m, m.time_mask)
            m.time_mask = saved[m] if masked else None


def steps(model: nn.Module, feats: torch.Tensor, lengths: torch.Tensor, n: int,
          args: argparse.Namespace) -> tuple[float, float]:
    """Wall-clock and process CPU seconds per forward + backward step, over ``n`` steps."""
    device = feats.device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp == "bf16")
    sync()
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(n):
        with autocast:
            out, out_lengths = model(feats, lengths)
        valid = torch.arange(out.shape[1], device=device)[None, :] < out_lengths[:, None]
        (out.float().square().sum(-1) * valid).sum().div(valid.sum()).backward()
        model.zero_grad(set_to_none=True)
    sync()
    return (time.perf_counter() - start) / n, (time.process_time() - cpu_start) / n


def spread(values: list[float]) -> float:
    return (max(values) - min(values)) / statistics.median(values)


def bench(name: str, args: argparse.Namespace, device: torch.device) -> Iterator[str]:
    torch.manual_seed(0)
    model = build_model(name, num_mel_bins=40).to(device).train()
    lengths = torch.linspace(args.min_frames, args.max_frames, args.batch).round().long()
    feats = torch.randn(args.batch, args.max_frames, 40, device=device)
    lengths = lengths.to(device)
    saved: dict[nn.Module, object] = {}
    # times[clock][masked]: per-round seconds per step; clock 0 wall, 1 process CPU.
    times: list[dict[bool, list[float]]] = [{True: [], False: []}, {True: [], False: []}]
    for masked in (True, False):
        set_masked(model, masked, saved)
        steps(model, feats, lengths, args.warmup, args)
    for r in range(args.rounds):
        for masked in (True, False) if r % 2 == 0 else (False, True):
            set_masked(model, masked, saved)
            for clock, seconds in enumerate(steps(model, feats, lengths, args.steps, args)):
                times[clock][masked].append(seconds)
    for clock, label in enumerate(("wall", "cpu")):
        t = times[clock]
        ratios = [m / p for m, p in zip(t[True], t[False], strict=True)]
        yield (f"{name:<18} {label:<5} {1e3 * statistics.median(t[False]):>9.1f} "
               f"{1e3 * statistics.median(t[True]):>9.1f} {statistics.median(ratios):>7.3f}"
               f"   {min(ratios):.3f}-{max(ratios):.3f}   {100 * spread(t[False]):>5.1f}%"
               f" / {100 * spread(t[True]):.1f}%")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device {device}, amp {args.amp}, threads {torch.get_num_threads()}, batch "
          f"{args.batch} x {args.min_frames}-{args.max_frames} frames, "
          f"{args.rounds} rounds x {args.steps} steps")
    print(f"{'model':<18} {'clock':<5} {'plain ms':>9} {'masked ms':>9} {'ratio':>7}   "
          "ratio range   round spread plain / masked")
    for name in args.models:
        for line in bench(name, args, device):
            print(line, flush=True)


if __name__ == "__main__":
    main()
