"""Long audio: peak memory and real-time factor of chunked vs full-utterance inference.

Run (from the repository root)::

    .venv/bin/python benchmarks/long_audio.py                     # ~3-5 min on 2 CPU cores
    .venv/bin/python benchmarks/long_audio.py --minutes 1,10,60 --repeats 5
    .venv/bin/python benchmarks/long_audio.py --models quartznet_mini --full-max-minutes 60
    .venv/bin/python benchmarks/long_audio.py --checkpoint exp/ctc_bl/best.pt --device cuda

Audio: ``--minutes`` long recordings at 8 kHz (a checkpoint's own rate with
``--checkpoint``), a wobbling tone plus noise (timing and
memory do not depend on what is said). Model: a CTC model over each ``--models`` encoder
with random weights (or ``--checkpoint``), BatchNorm folded and channels-last weights, as
:func:`blspeech.inference.model.load_acoustic_model` prepares it. Two ways to get log-probs:

* ``chunked``: :func:`blspeech.inference.chunked.chunked_log_probs` over
  :class:`~blspeech.inference.chunked.LogMelFrames`: features are made one chunk at a time from
  samples that are themselves synthesized per slice, so the whole recording is never in
  memory, not even as a waveform (``--chunk-frames`` central frames per call);
* ``full``: the whole waveform, its features and one model call, as for a short utterance
  (only up to ``--full-max-minutes``: its memory grows with the length).

Each (model, length, way) runs in a fresh subprocess, so peaks do not mix: one untimed
warm-up on 30 s, then ``--repeats`` timed runs (fewer for long recordings: at most 120
minutes of audio in all, at least one run). Peak memory on CPU is the process's peak
resident set over the warm-up and the timed runs (VmHWM, reset through
``/proc/self/clear_refs`` once the model is loaded), shown whole and as growth over the
resident set at that point: the memory inference needs. On CUDA it is
``torch.cuda.max_memory_allocated`` over the same span. Wall seconds are medians;
RTF = wall / audio seconds.
Before timing, chunked and full log-probs of a 1-minute recording are compared.

Torch runs one CPU thread by default: on a small machine shared with other work, a second
OpenMP thread that loses its core makes every parallel region wait for it (a 24 s forward
of bl_resnet_am_mini measured 0.05 s with one thread and 1.2 s with two, on 2 busy cores).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np
import torch

RATE = 8000
WARMUP_SECONDS = 30.0
MAX_AUDIO_MINUTES = 120.0  # per measurement, over all repeats


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="resnet_am_mini,bl_resnet_am_mini",
                   help="encoders, comma-separated (default: resnet_am_mini,bl_resnet_am_mini)")
    p.add_argument("--checkpoint", help="a trained acoustic model instead of --models")
    p.add_argument("--minutes", default="1,10,60", help="recording lengths (default: 1,10,60)")
    p.add_argument("--full-max-minutes", type=float, default=10.0,
                   help="run full-utterance inference up to this length (default: 10)")
    p.add_argument("--chunk-frames", type=int, default=None,
                   help="central feature frames per chunk (default: the library's, 2000 = "
                        "20 s or 4x the receptive field)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs (default: 3)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default: 1: a second thread on a busy "
                        "2-core machine makes every convolution wait for it)")
    p.add_argument("--json", action="store_true", help="also print the results as JSON")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # one measurement, in a subprocess
    return p.parse_args(argv)


class SynthWave:
    """``n`` samples of a wobbling tone plus noise, made on demand for each slice."""

    def __init__(self, n: int, rate: int = RATE) -> None:
        self.n, self.rate = n, rate
        self.noise = np.random.default_rng(0).standard_normal(rate * 7 + 3).astype(np.float32)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, part: slice) -> np.ndarray:
        start, stop, _ = part.indices(self.n)
        t = np.arange(start, stop, dtype=np.float64) / self.rate
        tone = 0.3 * np.sin(2 * np.pi * (300 * t + 40 * np.sin(2 * np.pi * 0.3 * t)))
        return (tone + 0.05 * self.noise[np.arange(start, stop) % len(self.noise)]
                ).astype(np.float32)


def load(cfg: dict[str, Any]) -> tuple[Any, Any]:
    """(model or bundle for chunked_log_probs, LogMel front-end)."""
    from blspeech.frontend.features import LogMel

    if cfg["checkpoint"]:
        from blspeech.inference.model import load_acoustic_model

        bundle = load_acoustic_model(cfg["checkpoint"], cfg["device"])
        frontend = dict(bundle.frontend_config or {"num_mel_bins": bundle.feature_dim or 40})
        frontend.update(dither=0.0)
        return bundle, LogMel(**frontend).to(bundle.device)
    from blspeech.inference.model import fused_for_inference
    from blspeech.models import build_model
    from blspeech.models.asr import CTCModel

    torch.manual_seed(0)
    model = CTCModel(build_model(cfg["model"], num_mel_bins=40), vocab_size=32).eval()
    # A fresh ResNet's last BN of each block has gamma 0 (its residual branches add nothing):
    # random BN terms make the chunked-vs-full check see the whole receptive field.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
                m.weight.normal_(1.0, 0.5)
                m.bias.normal_(0.0, 0.3)
                m.running_mean.normal_(0.0, 0.3)
                m.running_var.uniform_(0.5, 1.5)
    model = fused_for_inference(model).to(cfg["device"])
    return model, LogMel(sample_rate=RATE, num_mel_bins=40).to(cfg["device"])


def log_probs(way: str, am: Any, frontend: Any, wave: SynthWave, chunk_frames: int
              ) -> torch.Tensor:
    from blspeech.inference.chunked import LogMelFrames, chunked_log_probs

    if way == "chunked":
        return chunked_log_probs(am, LogMelFrames(wave, frontend), chunk_frames=chunk_frames)[0]
    samples = torch.from_numpy(wave[0:len(wave)]).to(frontend.window.device)
    feats, frames = frontend(samples[None])
    if hasattr(am, "log_probs"):  # a bundle: its CMVN too
        return am.log_probs(feats, frames)[0][0]
    with torch.inference_mode():
        return am(feats, frames.to(feats.device))[0][0]


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current resident set
        return True
    except OSError:
        return False


def _peak_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def worker(cfg: dict[str, Any]) -> dict[str, Any]:
    """One (model, length, way) measurement; runs in its own process."""
    torch.set_num_threads(cfg["threads"])
    cuda = cfg["device"].startswith("cuda")
    am, frontend = load(cfg)
    rate = frontend.sample_rate
    wave = SynthWave(int(cfg["minutes"] * 60 * rate), rate)
    # Memory is measured from here, with the model loaded: the warm-up's working set (one
    # chunk's, for chunked runs) counts, which the allocator then keeps for the timed runs.
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before, exact = _rss(), _reset_peak()
    log_probs(cfg["way"], am, frontend, SynthWave(int(WARMUP_SECONDS * rate), rate),
              cfg["chunk_frames"])
    times = []
    for _ in range(cfg["repeats"]):
        start = time.perf_counter()
        out = log_probs(cfg["way"], am, frontend, wave, cfg["chunk_frames"])
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        del out
    peak = _peak_rss()
    result = dict(cfg, wall=statistics.median(times), times=times, peak_rss=peak,
                  rss_growth=peak - before, exact_peak=exact)
    if cuda:
        result["cuda_peak"] = torch.cuda.max_memory_allocated()
    return result


def measure(cfg: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(cfg)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"worker {cfg['model']} {cfg['minutes']} min {cfg['way']} failed:\n"
                         f"{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def check_equal(cfg: dict[str, Any]) -> float:
    """Max abs difference of chunked and full log-probs on one minute."""
    am, frontend = load(cfg)
    wave = SynthWave(60 * frontend.sample_rate, frontend.sample_rate)
    chunked = log_probs("chunked", am, frontend, wave, cfg["chunk_frames"])
    full = log_probs("full", am, frontend, wave, cfg["chunk_frames"])
    assert chunked.shape == full.shape, (chunked.shape, full.shape)
    return float((chunked.float() - full.float()).abs().max())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    minutes = [float(m) for m in args.minutes.split(",")]
    models = [args.checkpoint] if args.checkpoint else args.models.split(",")
    torch.set_num_threads(args.threads)
    from blspeech.inference.chunked import default_chunk_frames, receptive_field

    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{args.threads} torch threads, torch {torch.__version__}, device {args.device}; "
          f"8 kHz audio, 40 log-mel bins")
    rows = []
    for model in models:
        base = dict(model=model, checkpoint=args.checkpoint, device=args.device,
                    threads=args.threads, chunk_frames=args.chunk_frames)
        am, _ = load(base)
        am_model = getattr(am, "model", am)
        left, right = receptive_field(am_model)
        diff = check_equal(base)
        chunk = args.chunk_frames or default_chunk_frames((left, right), am_model.time_subsampling)
        print(f"# {model}: receptive field {left} + {right} frames, chunks of {chunk} frames; "
              f"chunked vs full log-probs on 1 min: max abs diff {diff:.1e}")
        for m in minutes:
            repeats = max(1, min(args.repeats, int(MAX_AUDIO_MINUTES // m)))
            for way in ("full", "chunked"):
                if way == "full" and m > args.full_max_minutes:
                    continue
                rows.append(measure(dict(base, minutes=m, way=way, repeats=repeats)))
                r = rows[-1]
                print(f"  ... {model} {m:g} min {way}: {r['wall']:.1f} s", file=sys.stderr)

    mb = 1 << 20
    cuda = args.device.startswith("cuda")
    print(f"{'model':20s} {'min':>4s} {'way':8s} {'runs':>4s} {'wall s':>8s} {'RTF':>7s} "
          + (f"{'GPU peak MB':>12s}" if cuda else f"{'peak RSS MB':>12s} {'growth MB':>10s}"))
    for r in rows:
        mem = (f"{r['cuda_peak'] / mb:12.0f}" if cuda else
               f"{r['peak_rss'] / mb:12.0f} {r['rss_growth'] / mb:10.0f}")
        print(f"{os.path.basename(r['model'])[:20]:20s} {r['minutes']:4g} {r['way']:8s} "
              f"{r['repeats']:4d} {r['wall']:8.2f} {r['wall'] / (60 * r['minutes']):7.4f} {mem}")
    key = "cuda_peak" if cuda else "rss_growth"
    for model in models:
        by = {(r["minutes"], r["way"]): r for r in rows if r["model"] == model}
        for m in minutes:
            if (m, "full") in by and (m, "chunked") in by:
                full, chunk = by[m, "full"], by[m, "chunked"]
                print(f"{os.path.basename(model)} {m:g} min: chunked/full wall "
                      f"{chunk['wall'] / full['wall']:.2f}, memory "
                      f"{max(chunk[key], 1) / max(full[key], 1):.2f}")
        chunked = [by[m, "chunked"][key] / mb for m in minutes if (m, "chunked") in by]
        if len(chunked) > 1:
            print(f"{os.path.basename(model)} chunked memory over {minutes[0]:g}-"
                  f"{minutes[-1]:g} min: {min(chunked):.0f}-{max(chunked):.0f} MB")
    if not all(r["exact_peak"] for r in rows) and not cuda:
        print("# note: /proc/self/clear_refs unavailable: peaks are ru_maxrss, process-wide")
    if args.json:
        print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
