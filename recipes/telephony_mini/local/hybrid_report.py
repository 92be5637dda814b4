#!/usr/bin/env python3
"""EXP/RESULTS_hybrid.md and EXP/results_hybrid.json: the hybrid head beside the CTC head
(run.sh stage 9).

Usage: local/hybrid_report.py --exp-dir EXP --encoders "A B" --ctc-encoders "A B C D" \\
           --aligner A --test-sets "test_real test_synth"

Per hybrid encoder: dev and test frame accuracy, the tuned prior scale and insertion
penalty, test WERs (Viterbi over the token loop), and the same encoder's CTC WERs (greedy)
from stage 4 when it was trained there. Files are written atomically; the table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from blspeech.io.fileio import atomic_write


def _load(path: str, stage: str) -> dict:
    if not os.path.isfile(path):
        raise SystemExit(f"{sys.argv[0]}: {path} not found: run stage {stage} first")
    with open(path) as f:
        return json.load(f)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--exp-dir", required=True)
    ap.add_argument("--encoders", required=True)
    ap.add_argument("--ctc-encoders", default="")
    ap.add_argument("--aligner", required=True)
    ap.add_argument("--test-sets", required=True)
    args = ap.parse_args()
    exp, tests = args.exp_dir, args.test_sets.split()
    ctc = set(args.ctc_encoders.split())
    rows = []
    for enc in args.encoders.split():
        hexp = os.path.join(exp, f"hybrid_{enc}")
        summary = _load(os.path.join(hexp, "hybrid_summary.json"), "9")
        train = _load(os.path.join(hexp, "train_summary.json"), "8")
        row = {"encoder": enc, "head": "hybrid", "checkpoint": summary["model"],
               "epochs": train["epochs"], "prior_scale": summary["prior_scale"],
               "insertion_penalty": summary["insertion_penalty"],
               "dev_wer": summary["dev_wer"],
               "frame_acc": {s: v["frame_acc"] for s, v in summary["sets"].items()},
               "wer": {t: summary["sets"][t]["wer"] for t in tests}, "ctc_wer": None}
        if enc in ctc:
            row["ctc_wer"] = {t: _load(os.path.join(exp, enc, f"decode_{t}", "wer.json"),
                                       "4")["wer"] for t in tests}
        rows.append(row)

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    head = ["encoder", "dev frame acc %", *[f"{t} frame acc %" for t in tests],
            *[f"WER {t} (hybrid)" for t in tests], *[f"WER {t} (CTC)" for t in tests],
            "prior scale", "ins. penalty"]
    lines = ["# telephony_mini: the HMM-hybrid head", "",
             f"Frame targets: CTC forced alignment with `{args.aligner}` (its `final.pt`) "
             "of every split's reference transcripts, turned into the token topology "
             "(`blspeech align --hybrid-targets`: pdf 2k-1 on the first frame of token k, "
             "2k on its later frames, 0 silence). Each encoder below was trained on them "
             "with `conf/hybrid.yaml` (frame cross-entropy, the CTC recipe's optimizer and "
             "epochs). Decoding: Viterbi over a free loop of the token HMMs on "
             "log posterior - prior scale x log prior, a penalty per token, no lexicon or "
             "LM: the hybrid counterpart of the CTC models' greedy decoding (stage 4), so "
             "the two heads compare on equal terms. Prior scale and penalty were tuned on "
             "dev. Frame accuracy is against the aligner's targets of each set (made from "
             "the references), at the encoder's output rate.", "",
             "## Results", "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["encoder"], pct(r["frame_acc"].get("dev")),
                 *[pct(r["frame_acc"].get(t)) for t in tests],
                 *[pct(r["wer"][t]) for t in tests],
                 *[pct(r["ctc_wer"][t]) if r["ctc_wer"] else "n/a" for t in tests],
                 str(r["prior_scale"]), str(r["insertion_penalty"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Reproduce: `recipes/telephony_mini/run.sh --stage 8` (after stages 0-4).",
              ""]
    text = "\n".join(lines)
    with atomic_write(os.path.join(exp, "RESULTS_hybrid.md")) as f:
        f.write(text)
    with atomic_write(os.path.join(exp, "results_hybrid.json")) as f:
        json.dump(rows, f, indent=1)
        f.write("\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
