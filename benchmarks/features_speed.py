"""Feature extraction speed: ``compute_feats`` end to end vs in-memory reference loops.

Run (from the repository root; needs espeak-ng and the dev extra's kaldi-native-fbank)::

    .venv/bin/python benchmarks/features_speed.py                 # 200 x ~5 s at 8 kHz, ~40 s
    .venv/bin/python benchmarks/features_speed.py --utts 400 --repeats 7 --json

On the same audio (espeak-ng speech in a temporary Kaldi data dir, 16-bit wav, lengths
4.5-5.5 s, 40 mel bins), one run measures:

(a) an in-memory loop of ``torchaudio.compliance.kaldi.fbank`` over the utterances (audio
    already decoded and scaled to int16 range): the compute floor;
(b) an in-memory loop of kaldi-native-fbank as its documentation shows it (``OnlineFbank``,
    ``accept_waveform(rate, samples.tolist())``, ``input_finished()``, ``get_frame(i)`` for
    every frame, stacked);
(c1), (c2) :func:`blspeech.frontend.extract.compute_feats` end to end (read the wav files, compute,
    write ark/scp, feats.scp, utt2num_frames, utt2dur, conf) with ``nj=1`` and ``nj=2``,
    into a fresh output dir each time (no resumed jobs).

Torch runs single-threaded in (a) and in every compute_feats worker. Each repeat times
every variant once, in a rotating order; the table shows medians (and minima) in
utterances per second. Targets from the issue: (c1)/(a) >= 0.8, (c2)/(a) >= 1.5,
(c1)/(b) >= 3. Before timing, (c1)'s output is checked against (a) (max abs difference).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio
import torchaudio.compliance.kaldi as ta_kaldi

from blspeech.frontend.extract import compute_feats
from blspeech.io.kaldi import read_matrices

TARGETS = {"c1/a": 0.8, "c2/a": 1.5, "c1/b": 3.0}
WORDS = ("one two three four five six seven eight nine zero please hold your call is "
         "important to us the balance of your account transfer support sales order status "
         "monday tuesday morning evening thank you goodbye").split()
VOICES = ("en-us", "en-gb", "en-us+m3", "en-gb+f3")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--utts", type=int, default=200, help="utterances (default: 200)")
    p.add_argument("--rate", type=int, default=8000, help="sample rate (default: 8000)")
    p.add_argument("--bins", type=int, default=40, help="mel bins (default: 40)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats (default: 5)")
    p.add_argument("--json", action="store_true", help="also print the results as JSON")
    return p.parse_args(argv)


def synthesize(i: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    text = " ".join(rng.choice(WORDS, size=22))
    wav = subprocess.run(["espeak-ng", "-v", VOICES[i % len(VOICES)], "-s", "170", "--stdout",
                          text], check=True, capture_output=True).stdout
    audio, native = sf.read(io.BytesIO(wav), dtype="float32")
    audio = torchaudio.functional.resample(torch.from_numpy(audio), native, rate).numpy()
    length = int(rate * rng.uniform(4.5, 5.5))
    if len(audio) < length:
        audio = np.pad(audio, (0, length - len(audio)))
    return audio[:length]


def make_data_dir(root: Path, n: int, rate: int) -> Path:
    data, wav_dir = root / "data", root / "wav"
    data.mkdir(parents=True)
    wav_dir.mkdir()
    rngs = [np.random.default_rng(i) for i in range(n)]
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # espeak-ng runs as subprocesses
        audios = list(pool.map(lambda i: synthesize(i, rate, rngs[i]), range(n)))
    lines = []
    for i, audio in enumerate(audios):
        utt = f"spk{i % 4}-utt{i:04d}"
        path = wav_dir / f"{utt}.wav"
        sf.write(path, audio, rate, subtype="PCM_16")
        lines.append(f"{utt} {path}\n")
    (data / "wav.scp").write_text("".join(sorted(lines)))
    return data


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import kaldi_native_fbank as knf

    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="features_speed."))
    try:
        t0 = time.perf_counter()
        data = make_data_dir(root, args.utts, args.rate)
        utts = sorted(line.split()[0] for line in (data / "wav.scp").read_text().splitlines())
        # In-memory audio for (a) and (b): decoded once, int16-scaled floats.
        waves = [sf.read(data / ".." / "wav" / f"{u}.wav", dtype="float32")[0] * 32768.0
                 for u in utts]
        tensors = [torch.from_numpy(w).unsqueeze(0) for w in waves]
        seconds = sum(len(w) for w in waves) / args.rate
        print(f"# {args.utts} utterances, {seconds / args.utts:.2f} s each on average, "
              f"{args.rate} Hz, {args.bins} bins; synthesized in {time.perf_counter() - t0:.1f}"
              f" s; {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
              f"torch {torch.__version__}")

        def run_a():
            for x in tensors:
                ta_kaldi.fbank(x, num_mel_bins=args.bins, sample_frequency=args.rate,
                               dither=0.0)

        opts = knf.FbankOptions()
        opts.frame_opts.dither = 0
        opts.frame_opts.samp_freq = args.rate
        opts.mel_opts.num_bins = args.bins

        def run_b():
            for w in waves:
                fbank = knf.OnlineFbank(opts)
                fbank.accept_waveform(args.rate, w.tolist())
                fbank.input_finished()
                np.stack([fbank.get_frame(i) for i in range(fbank.num_frames_ready)])

        def run_c(nj: int):
            compute_feats(data, root / f"out{nj}", nj=nj, sample_rate=args.rate,
                          frontend_config={"num_mel_bins": args.bins}, progress=False)

        def clean_c(nj: int):  # untimed: a fresh output dir each time, nothing resumed
            shutil.rmtree(root / f"out{nj}", ignore_errors=True)

        clean_c(1)
        run_c(1)
        diff = max(float(np.abs(mat - ta_kaldi.fbank(
            tensors[utts.index(k)], num_mel_bins=args.bins, sample_frequency=args.rate,
            dither=0.0).numpy()).max()) for k, mat in read_matrices(f"scp:{data}/feats.scp"))
        print(f"# compute_feats vs torchaudio fbank: max abs diff {diff:.2e}")
        if diff > 1e-4:
            print("error: features differ from torchaudio's", file=sys.stderr)
            return 1

        variants = {"a": run_a, "b": run_b, "c1": lambda: run_c(1), "c2": lambda: run_c(2)}
        times: dict[str, list[float]] = {k: [] for k in variants}
        names = list(variants)
        for name in names:  # warm-up: caches, allocator, page cache
            variants[name]()
        for rep in range(args.repeats):
            for name in names[rep % len(names):] + names[:rep % len(names)]:
                if name.startswith("c"):
                    clean_c(int(name[1:]))
                start = time.perf_counter()
                variants[name]()
                times[name].append(time.perf_counter() - start)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    labels = {"a": "(a) torchaudio fbank loop, in memory",
              "b": "(b) kaldi-native-fbank loop, in memory",
              "c1": "(c1) compute_feats nj=1, files end to end",
              "c2": "(c2) compute_feats nj=2, files end to end"}
    rate = {k: args.utts / statistics.median(v) for k, v in times.items()}
    best = {k: args.utts / min(v) for k, v in times.items()}
    print(f"{'variant':46s} {'utt/s (median)':>15s} {'utt/s (best)':>13s}")
    for k in variants:
        print(f"{labels[k]:46s} {rate[k]:15.0f} {best[k]:13.0f}")
    ratios = {"c1/a": rate["c1"] / rate["a"], "c2/a": rate["c2"] / rate["a"],
              "c1/b": rate["c1"] / rate["b"]}
    ok = True
    for name, value in ratios.items():
        met = value >= TARGETS[name]
        ok &= met
        print(f"ratio {name:5s} {value:5.2f}  (target >= {TARGETS[name]}: "
              f"{'met' if met else 'MISSED'})")
    if args.json:
        print(json.dumps({"utts_per_s": rate, "best_utts_per_s": best, "ratios": ratios,
                          "targets": TARGETS, "max_abs_diff": diff}))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
