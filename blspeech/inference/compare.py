"""Compare trained acoustic models: compute per second of audio, real-time factor, Pareto front.

:func:`measure_efficiency` loads several checkpoints (written by ``blspeech train``) and
measures, side by side in one process:

* ``params``: trainable parameters of the whole CTC model (encoder + output layer);
* ``gflops_per_sec``: floating-point operations per second of audio, counted by torch's
  ``FlopCounterMode`` on a 10 s input (convolutions and matrix products, 2 FLOPs per
  multiply-add); ``gmacs_per_sec`` is the same count in multiply-adds, the unit of the
  bL-Net paper's "FLOPs";
* ``rtf``: the real-time factor of greedy decoding (model forward with BatchNorm folded
  into the convolutions + best path over the data dir's features, in length-sorted
  batches, as ``blspeech decode`` does) divided by the audio duration. Features are read
  once before timing and every model decodes them once untimed (its kernels' set-up per
  batch shape, CUDA's lazy initialization); the models then take turns in every repeat
  (the order rotates, so none always runs first) and the median over repeats is
  reported, so every model sees the same machine state;
* ``rtf_ratio``: the median over repeats of each round's RTF divided by the *first*
  model's RTF in the same round (paired ratios: a round slowed by another process slows
  both models of the pair), with ``rtf_ratio_runs`` and ``rtf_ratio_iqr``. ``rtf_stable``
  is False when the machine was too busy for a stable figure: the paired ratios'
  interquartile range exceeds :data:`MAX_RATIO_IQR` of their median, or some model's
  slowest round took more than :data:`MAX_ROUND_SPREAD` times its fastest.

:func:`pareto_front`, :func:`write_report` turn per-encoder results (those numbers plus
WERs) into ``results.json``, ``RESULTS.md`` and ``tradeoff.png`` (WER against GFLOPs per
second of audio).

Example:
    >>> rows = measure_efficiency({"base": "exp/resnet_am/final.pt",
    ...                            "bl": "exp/bl_resnet_am/final.pt"},
    ...                           "data/test_real")                  # doctest: +SKIP
    >>> rows["bl"]["gflops_per_sec"] / rows["base"]["gflops_per_sec"]  # doctest: +SKIP
    0.69
    >>> pareto_front([(1.0, 20.0), (0.7, 19.0), (0.5, 30.0), (0.8, 25.0)])
    [False, True, True, False]
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from blspeech.decoding.ctc import greedy_batch
from blspeech.errors import UserError
from blspeech.inference.model import Bundle, fused_for_inference, load_acoustic_model
from blspeech.io.fileio import atomic_write

#: Seconds of audio in the FLOP-counting input.
FLOP_SECONDS = 10.0
#: Stability limits of the RTF rounds (see the module docstring).
MAX_RATIO_IQR = 0.1
MAX_ROUND_SPREAD = 1.5


def ratio_summary(runs: Sequence[float], base_runs: Sequence[float]
                  ) -> tuple[list[float], float, float]:
    """Per-round ratios ``runs[i] / base_runs[i]``, their median and interquartile range.

    Example:
        >>> ratio_summary([2.0, 1.0, 3.0], [4.0, 2.0, 3.0])
        ([0.5, 0.5, 1.0], 0.5, 0.25)
    """
    ratios = [r / b for r, b in zip(runs, base_runs, strict=True)]
    if len(ratios) < 2:
        return ratios, ratios[0], 0.0
    q = statistics.quantiles(ratios, n=4, method="inclusive")
    return ratios, statistics.median(ratios), q[2] - q[0]


def rounds_stable(runs: Mapping[str, Sequence[float]], ratio_iqrs: Sequence[float],
                  ratio_medians: Sequence[float]) -> bool:
    """False when the rounds say the machine was too busy (see the module docstring)."""
    spread = max((max(r) / min(r) for r in runs.values() if min(r) > 0), default=1.0)
    iqr = max((i / m for i, m in zip(ratio_iqrs, ratio_medians, strict=True) if m > 0),
              default=0.0)
    return spread <= MAX_ROUND_SPREAD and iqr <= MAX_RATIO_IQR


def count_flops(bundle: Bundle, seconds: float = FLOP_SECONDS) -> int:
    """FLOPs of one forward pass of ``bundle``'s model over ``seconds`` of audio."""
    dim = bundle.feature_dim
    if dim is None:
        raise UserError(f"{bundle.path}: the checkpoint records no feature dimension")
    frames = round(seconds / bundle.frame_shift)
    feats = torch.zeros(1, frames, dim, device=bundle.device)
    lengths = torch.tensor([frames], device=bundle.device)
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        bundle.model(feats, lengths)
    return int(counter.get_total_flops())


def _timed_decode(bundle: Bundle, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]
                  ) -> float:
    sync = torch.cuda.synchronize if bundle.device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for feats, lengths in batches:
        log_probs, out_lengths = bundle.log_probs(feats, lengths, normalized=True)
        greedy_batch(log_probs, out_lengths)
    sync()
    return time.perf_counter() - start


def measure_efficiency(checkpoints: Mapping[str, str | os.PathLike], data_dir: str | os.PathLike,
                       *, device: str = "cpu", threads: int | None = None, repeats: int = 5,
                       max_utts: int = 0, max_frames: int = 20000, num_workers: int = 0,
                       allow_wavscp_commands: bool | None = None,
                       progress: bool = False) -> dict[str, dict[str, Any]]:
    """Parameters, FLOPs per second of audio and greedy-decoding RTF of each checkpoint.

    ``checkpoints`` maps a name to a checkpoint path. The RTF is measured on the first
    ``max_utts`` utterances of ``data_dir`` (0: all) with ``threads`` torch threads
    (None: torch's default), ``repeats`` times per model, interleaved; see the module
    docstring. ``num_workers`` and ``allow_wavscp_commands`` apply to the untimed pass that
    reads the features. Returns ``{name: {params, gflops_per_sec, gmacs_per_sec, rtf, rtf_runs,
    audio_seconds, utterances, device, threads, checkpoint}}``.
    """
    if not checkpoints:
        raise UserError("measure_efficiency needs at least one checkpoint")
    if repeats < 1:
        raise UserError(f"repeats must be >= 1, got {repeats}")
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        bundles, params = _load_for_timing(checkpoints, device)
        inputs, audio_seconds, utterances = _timing_inputs(
            bundles, checkpoints, data_dir, max_utts=max_utts, max_frames=max_frames,
            num_workers=num_workers, allow_wavscp_commands=allow_wavscp_commands)
        names = list(bundles)
        runs: dict[str, list[float]] = {name: [] for name in names}
        from tqdm import tqdm

        for name in names:  # untimed: kernel set-up per shape (oneDNN, cuDNN), lazy CUDA init
            _timed_decode(bundles[name], inputs[name])
        for r in tqdm(range(repeats), desc="rtf", disable=not progress, leave=False):
            for name in names[r % len(names):] + names[:r % len(names)]:
                runs[name].append(_timed_decode(bundles[name], inputs[name]) / audio_seconds)
        paired = {name: ratio_summary(runs[name], runs[names[0]]) for name in names}
        stable = rounds_stable(runs, [p[2] for p in paired.values()],
                               [p[1] for p in paired.values()])
        results = {}
        for name, bundle in bundles.items():
            flops = count_flops(bundle) / FLOP_SECONDS
            ratios, ratio, iqr = paired[name]
            results[name] = {
                "params": params[name],
                "gflops_per_sec": round(flops / 1e9, 5),
                "gmacs_per_sec": round(flops / 2e9, 5),
                "rtf": round(statistics.median(runs[name]), 6),
                "rtf_runs": [round(x, 6) for x in runs[name]],
                "rtf_ratio": round(ratio, 4), "rtf_ratio_iqr": round(iqr, 4),
                "rtf_ratio_runs": [round(x, 4) for x in ratios],
                "rtf_ratio_to": names[0], "rtf_stable": stable,
                "audio_seconds": round(audio_seconds, 3), "utterances": utterances,
                "device": str(bundle.device), "threads": torch.get_num_threads(),
                "checkpoint": os.fspath(checkpoints[name])}
        return results
    finally:
        torch.set_num_threads(old_threads)


def _load_for_timing(checkpoints: Mapping[str, str | os.PathLike], device: str
                     ) -> tuple[dict[str, Bundle], dict[str, int]]:
    """Each model as ``blspeech decode`` runs it, and its parameter count as trained."""
    bundles, params = {}, {}
    for name, path in checkpoints.items():
        bundle = load_acoustic_model(path, device, fuse_bn=False)
        # Parameters as trained: folding BN into the convs changes their count.
        params[name] = sum(p.numel() for p in bundle.model.parameters())
        bundle.model = fused_for_inference(bundle.model)
        bundles[name] = bundle
    return bundles, params


def _timing_inputs(bundles: Mapping[str, Bundle], checkpoints: Mapping[str, Any],
                   data_dir: str | os.PathLike, *, max_utts: int, max_frames: int,
                   num_workers: int, allow_wavscp_commands: bool | None
                   ) -> tuple[dict[str, list[tuple[torch.Tensor, torch.Tensor]]], float, int]:
    """Each model's feature batches of ``data_dir`` (read in one untimed pass that also
    warms the model up), the seconds of audio and the number of utterances."""
    inputs: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    audio_seconds, utterances = 0.0, 0
    for name, bundle in bundles.items():
        ds = bundle.dataset(data_dir, allow_wavscp_commands=allow_wavscp_commands)
        if max_utts and len(ds) > max_utts:
            ds = torch.utils.data.Subset(ds, range(max_utts))
            ds.lengths = ds.dataset.lengths[:max_utts]  # what bundle.batches sorts by
        inputs[name] = [(b["feats"], b["lengths"])
                        for b, _, _ in bundle.batches(ds, max_frames=max_frames,
                                                      num_workers=num_workers)]
        seconds = sum(ds.lengths) * bundle.frame_shift
        if audio_seconds and abs(seconds - audio_seconds) > 1e-6:
            raise UserError(f"{checkpoints[name]}: its features of {data_dir} last "
                            f"{seconds:.2f} s, the other models' {audio_seconds:.2f} s; "
                            "compare models trained on the same front-end")
        audio_seconds, utterances = seconds, len(ds)
    if audio_seconds <= 0:
        raise UserError(f"{data_dir} has no audio to decode")
    return inputs, audio_seconds, utterances


def pareto_front(points: Sequence[tuple[float, float]]) -> list[bool]:
    """Which ``(cost, error)`` points no other point dominates (lower or equal in both,
    lower in one)."""
    def dominated(p: tuple[float, float]) -> bool:
        return any(q[0] <= p[0] and q[1] <= p[1] and q != p for q in points)
    return [not dominated(p) for p in points]


def rtf_ratio(row: Mapping[str, Any], base: Mapping[str, Any]) -> float:
    """``row``'s CPU RTF relative to ``base``'s: the paired per-round ratio
    (``rtf_ratio_cpu``) when ``row`` has one, else the ratio of the medians."""
    if row is base:
        return 1.0
    if "rtf_ratio_cpu" in row:
        return row["rtf_ratio_cpu"]
    return row["rtf_cpu"] / base["rtf_cpu"] if base.get("rtf_cpu") else float("nan")


def claim_checks(rows: Sequence[Mapping[str, Any]], baseline: str, candidate: str,
                 test_sets: Sequence[str], *, max_flops_ratio: float = 0.7,
                 max_rtf_ratio: float = 0.8) -> list[dict[str, Any]]:
    """The bL-Net efficiency claim, checked on measured rows: ``candidate`` needs at most
    ``max_flops_ratio`` of ``baseline``'s FLOPs, no worse WER on every test set, at most
    ``max_rtf_ratio`` of its RTF, and a place on the WER-vs-FLOPs Pareto front of all rows
    for every test set."""
    by = {r["encoder"]: r for r in rows}
    if baseline not in by or candidate not in by:
        return []
    b, c = by[baseline], by[candidate]
    flops = c["gflops_per_sec"] / b["gflops_per_sec"]
    rtf = rtf_ratio(c, b)
    checks = [{"check": f"GFLOPs {candidate} / {baseline}", "target": f"<= {max_flops_ratio}",
               "measured": round(flops, 3), "met": flops <= max_flops_ratio}]
    for t in test_sets:
        checks.append({"check": f"WER {t}: {candidate} vs {baseline}", "target": "<=",
                       "measured": f"{c['wer'][t]:.2f} vs {b['wer'][t]:.2f}",
                       "met": c["wer"][t] <= b["wer"][t]})
    checks.append({"check": f"CPU RTF {candidate} / {baseline}", "target": f"<= {max_rtf_ratio}",
                   "measured": round(rtf, 3), "met": rtf <= max_rtf_ratio})
    for t in test_sets:
        front = pareto_front([(r["gflops_per_sec"], r["wer"][t]) for r in rows])
        on = front[[r["encoder"] for r in rows].index(candidate)]
        checks.append({"check": f"{candidate} on the WER-vs-GFLOPs Pareto front ({t})",
                       "target": "yes", "measured": "yes" if on else "no", "met": on})
    return checks


def plot_tradeoff(rows: Sequence[Mapping[str, Any]], test_sets: Sequence[str], path: str) -> None:
    """WER against GFLOPs per second of audio, one panel per test set, Pareto front drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(test_sets), figsize=(5.2 * len(test_sets), 4.2),
                             squeeze=False)
    for ax, t in zip(axes[0], test_sets, strict=True):
        pts = [(r["gflops_per_sec"], r["wer"][t]) for r in rows]
        front = pareto_front(pts)
        for r, (x, y), on in zip(rows, pts, front, strict=True):
            ax.scatter([x], [y], s=60, marker="o" if on else "x", zorder=3)
            ax.annotate(r["encoder"], (x, y), textcoords="offset points", xytext=(5, 5),
                        fontsize=8)
        line = sorted(p for p, on in zip(pts, front, strict=True) if on)
        if len(line) > 1:
            ax.step([p[0] for p in line], [p[1] for p in line], where="post", color="0.6",
                    linestyle="--", zorder=1, label="Pareto front")
            ax.legend(fontsize=8)
        ax.set_xlabel("GFLOPs per second of audio")
        ax.set_ylabel(f"WER on {t} (%)")
        ax.set_title(t)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)


def results_markdown(rows: Sequence[Mapping[str, Any]], test_sets: Sequence[str],
                     baseline: str | None = None,
                     checks: Sequence[Mapping[str, Any]] = ()) -> str:
    """The results table (and the claim checks) as Markdown."""
    base = next((r for r in rows if r["encoder"] == baseline), None)
    head = (["encoder", "params", "GFLOPs/s audio"] + (["x baseline"] if base else [])
            + ["CPU RTF"] + (["x baseline"] if base else [])
            + [f"WER {t} %" for t in test_sets] + ["train min", "Pareto"])
    fronts = [pareto_front([(r["gflops_per_sec"], r["wer"][t]) for r in rows])
              for t in test_sets]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, r in enumerate(rows):
        cells = [r["encoder"], f"{r['params'] / 1e6:.2f}M", f"{r['gflops_per_sec']:.3f}"]
        if base:
            cells.append(f"{r['gflops_per_sec'] / base['gflops_per_sec']:.2f}")
        cells.append(f"{r['rtf_cpu']:.4f}")
        if base:
            cells.append(f"{rtf_ratio(r, base):.2f}")
        cells += [f"{r['wer'][t]:.2f}" for t in test_sets]
        cells.append(f"{r['train_seconds'] / 60:.1f}")
        cells.append(", ".join(t for t, f in zip(test_sets, fronts, strict=True) if f[i]) or "-")
        lines.append("| " + " | ".join(cells) + " |")
    if checks:
        lines += ["", "| claim | target | measured | met |", "|---|---|---|---|"]
        lines += [f"| {c['check']} | {c['target']} | {c['measured']} | "
                  f"{'yes' if c['met'] else '**no**'} |" for c in checks]
    return "\n".join(lines) + "\n"


def write_report(rows: Sequence[Mapping[str, Any]], out_dir: str, test_sets: Sequence[str], *,
                 baseline: str | None = None, candidate: str | None = None,
                 preamble: str = "", epilogue: str = "") -> dict[str, str]:
    """Write ``results.json`` (the rows), ``RESULTS.md`` and ``tradeoff.png`` to ``out_dir``,
    each atomically. ``preamble``/``epilogue``: Markdown around the tables."""
    for r in rows:
        missing = [k for k in ("encoder", "params", "gflops_per_sec", "rtf_cpu", "wer",
                               "train_seconds") if k not in r]
        missing += [f"wer.{t}" for t in test_sets if t not in r.get("wer", {})]
        if missing:
            raise UserError(f"result for {r.get('encoder', '?')} lacks {', '.join(missing)}")
    os.makedirs(out_dir, exist_ok=True)
    checks = (claim_checks(rows, baseline, candidate, test_sets)
              if baseline and candidate else [])
    paths = {k: os.path.join(out_dir, n) for k, n in
             (("json", "results.json"), ("md", "RESULTS.md"), ("png", "tradeoff.png"))}
    with atomic_write(paths["json"]) as f:
        json.dump(list(rows), f, indent=2)
        f.write("\n")
    plot_tradeoff(rows, test_sets, paths["png"])
    md = preamble + results_markdown(rows, test_sets, baseline, checks) + epilogue
    with atomic_write(paths["md"]) as f:
        f.write(md)
    return paths
