"""CPU inference speed: bL-ResNet-50 vs torchvision ResNet-50, measured in one run.

Run (from the repository root, torchvision installed)::

    .venv/bin/python benchmarks/vision_speed.py                  # batch 1 and 16, ~1-2 min
    .venv/bin/python benchmarks/vision_speed.py --batch-sizes 16 --repeats 30 --json
    .venv/bin/python benchmarks/vision_speed.py --compile        # + torch.compile (minutes)

Target (from the issue): the forward-time ratio bL-ResNet-50 / torchvision ResNet-50, eval
mode, 224x224, on CPU, is at most 0.75 at batch 16 and at most 0.9 at batch 1 (the official
implementation reaches about 0.81 and 1.0), with outputs unchanged. bL-ResNet-50 needs
2.86 GMACs per image against 4.09 for ResNet-50 (0.70).

Both networks get random weights with non-trivial BatchNorm statistics and affine
parameters, and the same NCHW float32 input. Before timing, the optimized copies are checked
against their unoptimized originals (max abs diff printed; the run fails beyond
``--rtol`` relative to the output's scale). Each repeat times one forward of every variant
in a rotating order, so machine drift hits all of them alike; the table shows the median
(and the minimum) over the repeats. Three ratios are printed:

(a) ``as built``: our bL-ResNet-50 as built (official structure and weights layout, BN
    unfused; its forward already uses in-place ReLU/add and a copy-free 2x nearest merge) /
    torchvision ResNet-50.
(b) ``optimized vs shipped``: our inference path, :func:`blspeech.models.fuse` (BN folded
    into the convs) in channels-last memory format, / torchvision ResNet-50 as shipped.
(c) ``optimized vs optimized``: the same, with torchvision ResNet-50 given the same
    treatment (``fuse`` folds its BNs too, same memory format; its blocks already use
    in-place ReLU/add). This is the like-for-like number.

``--compile`` adds ``torch.compile`` (inductor, frozen weights) to both optimized models.

The timings on a shared CPU are noisy (other processes, page faults on fresh allocations):
read the median together with the minimum, and rerun when they disagree. PyTorch's
``THP_MEM_ALLOC_ENABLE=1`` environment variable (transparent huge pages for large tensors,
read once at start-up) cuts the page-fault cost of every variant; the header says whether it
is set.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch
from torch import nn

from blspeech.models import build_model, fuse

TARGETS = {1: 0.9, 16: 0.75}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-sizes", default="1,16",
                   help="comma-separated batch sizes (default: 1,16)")
    p.add_argument("--repeats", type=int, default=15,
                   help="timed forwards per model and batch size (default: 15)")
    p.add_argument("--warmup", type=int, default=3,
                   help="untimed forwards per model and batch size first (default: 3)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="intra-op threads (default: all cores)")
    p.add_argument("--size", type=int, default=224, help="image side (default: 224)")
    p.add_argument("--rtol", type=float, default=1e-4,
                   help="max |optimized - original| / max |original| accepted (default: 1e-4)")
    p.add_argument("--compile", action="store_true",
                   help="also torch.compile both optimized models (slow to build)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    args = p.parse_args(argv)
    try:
        args.batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    except ValueError:
        p.error(f"--batch-sizes must be comma-separated integers, got {args.batch_sizes!r}")
    if not args.batch_sizes or min(args.batch_sizes) < 1:
        p.error("--batch-sizes needs positive integers")
    if args.repeats < 1 or args.warmup < 0 or args.threads < 1:
        p.error("--repeats and --threads must be >= 1, --warmup >= 0")
    return args


@torch.no_grad()
def randomize_bn(model: nn.Module, gen: torch.Generator) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.copy_(torch.rand(n, generator=gen) * 0.5 + 0.5)
            m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
    return model


def build_variants(args: argparse.Namespace) -> dict[str, nn.Module]:
    import torchvision

    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    bl = randomize_bn(build_model("bl_resnet50"), gen).eval()
    tv = randomize_bn(torchvision.models.resnet50(), gen).eval()
    bl_opt = fuse(bl, channels_last=True)
    tv_opt = fuse(tv, channels_last=True)
    if args.compile:
        import torch._inductor.config as inductor_config

        inductor_config.freezing = True
        bl_opt, tv_opt = torch.compile(bl_opt), torch.compile(tv_opt)
    return {"bl": bl, "tv": tv, "bl_opt": bl_opt, "tv_opt": tv_opt}


def check_outputs(models: dict[str, nn.Module], x: torch.Tensor, rtol: float) -> dict[str, float]:
    """Max abs diff of each optimized model against its original; exits beyond ``rtol``."""
    diffs = {}
    for name in ("bl", "tv"):
        ref, out = models[name](x), models[name + "_opt"](x)
        diff = (out - ref).abs().max().item()
        scale = ref.abs().max().item()
        diffs[name] = diff
        label = "bL-ResNet-50" if name == "bl" else "torchvision ResNet-50"
        print(f"  {label:22s} optimized vs original: max abs diff {diff:.3e} "
              f"(output max abs {scale:.3g}, relative {diff / max(scale, 1e-30):.2e})")
        if not diff <= rtol * scale:
            sys.exit(f"FAIL: optimized {label} output differs by more than rtol={rtol}")
    return diffs


def time_models(models: dict[str, nn.Module], x: torch.Tensor, repeats: int,
                warmup: int) -> dict[str, list[float]]:
    """Seconds per forward for each model; every repeat runs each model once, rotating order."""
    names = list(models)
    for _ in range(warmup):
        for name in names:
            models[name](x)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            models[name](x)
            times[name].append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    cpu = platform.processor() or platform.machine()
    thp = os.environ.get("THP_MEM_ALLOC_ENABLE", "0")
    print(f"torch {torch.__version__}, {args.threads} thread(s) of {os.cpu_count()} cores, "
          f"{cpu}, input {args.size}x{args.size}, repeats {args.repeats}, "
          f"warmup {args.warmup}, THP_MEM_ALLOC_ENABLE={thp}"
          f"{', torch.compile' if args.compile else ''}")
    t0 = time.perf_counter()
    models = build_variants(args)
    results: dict = {"torch": torch.__version__, "threads": args.threads, "size": args.size,
                     "repeats": args.repeats, "compile": args.compile, "thp": thp,
                     "batches": {}}
    gen = torch.Generator().manual_seed(args.seed + 1)
    with torch.inference_mode():
        for b in args.batch_sizes:
            x = torch.randn(b, 3, args.size, args.size, generator=gen)
            print(f"\nbatch {b}: checking outputs")
            diffs = check_outputs(models, x, args.rtol)
            times = time_models(models, x, args.repeats, args.warmup)
            med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            low = {k: min(v) * 1e3 for k, v in times.items()}
            ratios = {"a_as_built": med["bl"] / med["tv"],
                      "b_optimized_vs_shipped": med["bl_opt"] / med["tv"],
                      "c_optimized_vs_optimized": med["bl_opt"] / med["tv_opt"]}
            min_ratios = {"a_as_built": low["bl"] / low["tv"],
                          "b_optimized_vs_shipped": low["bl_opt"] / low["tv"],
                          "c_optimized_vs_optimized": low["bl_opt"] / low["tv_opt"]}
            results["batches"][str(b)] = {
                "median_ms": {k: round(v, 3) for k, v in med.items()},
                "min_ms": {k: round(v, 3) for k, v in low.items()},
                "ratios": {k: round(v, 4) for k, v in ratios.items()},
                "min_ratios": {k: round(v, 4) for k, v in min_ratios.items()},
                "max_abs_diff": diffs,
            }
            print_table(b, med, low, ratios, min_ratios, args.compile)
    results["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"\ntotal {results['seconds']} s")
    if args.json:
        print(json.dumps(results, sort_keys=True))
    return results


def print_table(b: int, med: dict[str, float], low: dict[str, float], ratios: dict[str, float],
                min_ratios: dict[str, float], compiled: bool) -> None:
    target = TARGETS.get(b)
    opt = "fused + NHWC" + (" + compile" if compiled else "")
    rows = [
        ("torchvision ResNet-50, as shipped", "tv"),
        (f"torchvision ResNet-50, {opt}", "tv_opt"),
        ("bL-ResNet-50, as built (unfused)", "bl"),
        (f"bL-ResNet-50, {opt} (ours)", "bl_opt"),
    ]
    print(f"  {'model':48s} {'median ms':>10s} {'min ms':>10s}")
    for label, key in rows:
        print(f"  {label:48s} {med[key]:10.2f} {low[key]:10.2f}")
    print(f"  {'ratio bL / torchvision':48s} {'of medians':>10s} {'of mins':>10s}")
    for label, key in (("(a) as built / shipped", "a_as_built"),
                       ("(b) optimized / shipped", "b_optimized_vs_shipped"),
                       ("(c) optimized / optimized", "c_optimized_vs_optimized")):
        mark = ""
        if target is not None and key != "a_as_built":
            mark = f"  target <= {target}: {'met' if ratios[key] <= target else 'NOT met'}"
        print(f"  {label:48s} {ratios[key]:10.3f} {min_ratios[key]:10.3f}{mark}")


if __name__ == "__main__":
    main()
