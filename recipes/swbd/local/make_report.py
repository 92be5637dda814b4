#!/usr/bin/env python3
"""EXP/RESULTS.md and EXP/results.json of the Switchboard recipe (run.sh stage 7).

Usage: local/make_report.py --exp-dir EXP --encoders "A B" [--hybrid-encoders "A B"]

One row per trained model (CTC: EXP/<encoder>; hybrid, when stage 9 scored it:
EXP/hybrid_<encoder>): parameters, GFLOPs per second of audio (torch's FLOP counter on a
10 s input, BatchNorm folded as in decoding), Hub5'00 WER on all / Switchboard / CallHome
(stage 6's scoring), train_dev WER, epochs; then the bL-Net paper's claim for reference.
Files are written atomically; the table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from blspeech.errors import UserError
from blspeech.inference.compare import count_flops
from blspeech.inference.model import load_acoustic_model
from blspeech.io.fileio import atomic_write
from blspeech.models.profile import count_params

SUBSETS = ("all", "swbd", "callhm")

REFERENCE = """\
## Published reference

The bL-Net paper (Chen et al., ICLR 2019, "Big-Little Net: An Efficient Multi-Scale
Feature Representation for Visual and Speech Recognition") reports for Switchboard
acoustic models (hybrid, Hub5'00, SWB and CH) that its multi-scale bL-ResNets "save 30%
FLOPs with slightly better word error rates" than the ResNet baselines. Copy the
per-subset WERs and FLOPs of the paper's speech table into the rows below when comparing;
they are not reproduced here because this recipe could not be checked against them (no
Switchboard run has been made with this toolkit yet).

| system | FLOPs vs baseline | WER SWB | WER CH |
|---|---:|---:|---:|
| paper: ResNet baseline (hybrid) | 1.00x | (paper) | (paper) |
| paper: bL-ResNet (hybrid) | about 0.70x | (paper) | (paper) |
"""


def _json(path: str, stage: str) -> dict:
    if not os.path.isfile(path):
        raise UserError(f"{path} is missing; run stage {stage} first")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _row(name: str, head: str, exp: str) -> dict:
    scores = _json(os.path.join(exp, "decode_eval2000", "score_hub5", "results.json"),
                   "6" if head == "ctc" else "9")
    train = _json(os.path.join(exp, "train_summary.json"), "4" if head == "ctc" else "8")
    dev = os.path.join(exp, "decode_train_dev", "wer.json")
    bundle = load_acoustic_model(os.path.join(exp, "final.pt"))
    raw = load_acoustic_model(os.path.join(exp, "final.pt"), fuse_bn=False)
    return {"encoder": name, "head": head, "params": count_params(raw.model),
            "gflops_per_sec": round(count_flops(bundle) / 10.0 / 1e9, 4),
            "wer": {s: (scores["subsets"].get(s) or {}).get("wer") for s in SUBSETS},
            "train_dev_wer": _json(dev, "5")["wer"] if os.path.isfile(dev) else None,
            "sclite_agrees": scores.get("agree"), "epochs": train["epochs"],
            "checkpoint": os.path.join(exp, "final.pt")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--exp-dir", required=True)
    ap.add_argument("--encoders", required=True)
    ap.add_argument("--hybrid-encoders", default="")
    args = ap.parse_args()
    try:
        rows = [_row(e, "ctc", os.path.join(args.exp_dir, e)) for e in args.encoders.split()]
        for enc in args.hybrid_encoders.split():
            exp = os.path.join(args.exp_dir, f"hybrid_{enc}")
            if os.path.isfile(os.path.join(exp, "decode_eval2000", "score_hub5",
                                           "results.json")):
                rows.append(_row(enc, "hybrid", exp))
    except UserError as e:
        print(f"{sys.argv[0]}: error: {e}", file=sys.stderr)
        return 2

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    base = rows[0]["gflops_per_sec"] if rows else None
    lines = ["# Switchboard 300 h, Hub5'00 (eval2000)", "",
             "WER: NIST-style Hub5 scoring of each model's greedy (CTC) or Kaldi-graph "
             "(hybrid) decoding, with the GLM applied to references and hypotheses and "
             "hesitations and fragments handled as hubscr.pl does (`local/score_eval2000.py`"
             "; checked against csrfilt.sh + sclite where installed). GFLOPs per second of "
             "audio from torch's FLOP counter.", "", "## Results", "",
             "| encoder | head | params | GFLOPs/s | vs first | WER all | WER SWB | WER CH | "
             "WER train_dev | epochs | sclite agrees |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        ratio = f"{r['gflops_per_sec'] / base:.3f}x" if base else "n/a"
        lines.append(f"| {r['encoder']} | {r['head']} | {r['params']:,} | "
                     f"{r['gflops_per_sec']:.3f} | {ratio} | {pct(r['wer']['all'])} | "
                     f"{pct(r['wer']['swbd'])} | {pct(r['wer']['callhm'])} | "
                     f"{pct(r['train_dev_wer'])} | {r['epochs']} | "
                     f"{'n/a' if r['sclite_agrees'] is None else r['sclite_agrees']} |")
    text = "\n".join(lines) + "\n\n" + REFERENCE
    with atomic_write(os.path.join(args.exp_dir, "RESULTS.md")) as f:
        f.write(text)
    with atomic_write(os.path.join(args.exp_dir, "results.json")) as f:
        json.dump(rows, f, indent=1)
        f.write("\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
