#!/usr/bin/env python3
"""EXP/RESULTS_hybrid.md and EXP/results_hybrid.json: the hybrid head beside the CTC head
(run.sh stage 9).

Usage: local/hybrid_report.py --exp-dir EXP --encoders "A B" --ctc-encoders "A B C D" \\
           --aligner A --test-sets "test_real test_synth" [--prefix hybrid_]

Per hybrid encoder: dev and test frame accuracy, the tuned search settings, test WERs
(Viterbi over the token loop; with --aligner gmm the WFST search of the HLG graph and
flashlight's lexicon search over the phones with and without the LM), and
the same encoder's CTC WERs from stage 4 when it was trained there (greedy, and the
search the CTC report chose). Models are in EXP/<prefix><encoder>; with --aligner gmm the
files are EXP/RESULTS_hybrid_gmm.md and results_hybrid_gmm.json. Files are written
atomically; the table is printed.
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
    ap.add_argument("--prefix", default="hybrid_", help="model dirs: EXP/<prefix><encoder>")
    args = ap.parse_args()
    gmm = args.aligner == "gmm"
    exp, tests = args.exp_dir, args.test_sets.split()
    ctc = set(args.ctc_encoders.split())
    rows = []
    for enc in args.encoders.split():
        hexp = os.path.join(exp, f"{args.prefix}{enc}")
        summary = _load(os.path.join(hexp, "hybrid_summary.json"), "9")
        train = _load(os.path.join(hexp, "train_summary.json"), "8")
        row = {"encoder": enc, "head": "hybrid", "checkpoint": summary["model"],
               "epochs": train["epochs"], "prior_scale": summary["prior_scale"],
               "insertion_penalty": summary.get("insertion_penalty"),
               "acoustic_scale": summary.get("acoustic_scale"),
               "word_penalty": summary.get("word_penalty"),
               "dev_wer": summary["dev_wer"],
               "frame_acc": {s: v["frame_acc"] for s, v in summary["sets"].items()},
               "wer": {t: summary["sets"][t]["wer"] for t in tests}, "ctc_wer": None,
               "lexicon": summary.get("lexicon")}
        if enc in ctc:
            row["ctc_wer"] = {t: _load(os.path.join(exp, enc, f"decode_{t}", "wer.json"),
                                       "4")["wer"] for t in tests}
            for name in ("wfst", "lm"):
                if all(os.path.isfile(os.path.join(exp, enc, f"decode_{name}_{t}", "wer.json"))
                       for t in tests):
                    row[f"ctc_wer_{name}"] = {t: _load(os.path.join(
                        exp, enc, f"decode_{name}_{t}", "wer.json"), "4")["wer"] for t in tests}
        rows.append(row)

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    if gmm:
        head = ["encoder", "dev frame acc %", *[f"{t} frame acc %" for t in tests],
                *[f"WER {t} hybrid: no LM / LM / **HLG**" for t in tests],
                *[f"WER {t} CTC: greedy / LM / **WFST**" for t in tests],
                "prior scale", "acoustic scale", "LM weight, word score (LM; no LM)"]
        about = ("Frame targets: the pdfs of a monophone GMM-HMM (`blspeech align-gmm`: "
                 "flat start, Kaldi's train_mono.sh schedule, CMUdict with espeak-ng "
                 "pronunciations for the words it lacks) aligned to every split's reference "
                 "transcripts, one per 10 ms frame. Each encoder below was trained on them "
                 "with `conf/hybrid_gmm.yaml` (frame cross-entropy, the CTC recipe's "
                 "optimizer; the head predicts the pdf at the centre of each 40 ms output "
                 "frame). Decoding: Kaldi's decoder over an HLG graph (the GMM's phone HMMs, "
                 "whose states a phone may skip at the 40 ms rate; the lexicon's "
                 "pronunciations of the 3-gram LM's words, optional silence; the LM of the "
                 "training transcripts) on log posterior - prior scale x log prior; prior "
                 "and acoustic scale tuned on dev. The hybrid's \"LM\" column is "
                 "flashlight's lexicon search over the phones (`blspeech decode --method "
                 "lm --lexicon EXP/gmm/lang/lexicon.txt`: each phone scored by its best "
                 "state, the same lexicon, LM and prior scale; LM weight and word score "
                 "tuned on dev), \"no LM\" the same search with LM weight 0 (a phone "
                 "model writes no words without a lexicon: its counterpart of CTC greedy "
                 "decoding). The CTC columns are stage 4's greedy, flashlight LM and WFST "
                 "(TLG, same LM) searches. Frame accuracy is against the GMM's "
                 "alignments of each set (made from the references), at the encoder's "
                 "output rate.")
    else:
        head = ["encoder", "dev frame acc %", *[f"{t} frame acc %" for t in tests],
                *[f"WER {t} (hybrid)" for t in tests], *[f"WER {t} (CTC)" for t in tests],
                "prior scale", "ins. penalty"]
        about = (f"Frame targets: CTC forced alignment with `{args.aligner}` (its `final.pt`) "
                 "of every split's reference transcripts, turned into the token topology "
                 "(`blspeech align --hybrid-targets`: pdf 2k-1 on the first frame of token k, "
                 "2k on its later frames, 0 silence). Each encoder below was trained on them "
                 "with `conf/hybrid.yaml` (frame cross-entropy, the CTC recipe's optimizer "
                 "and epochs). Decoding: Viterbi over a free loop of the token HMMs on "
                 "log posterior - prior scale x log prior, a penalty per token, no lexicon "
                 "or LM: the hybrid counterpart of the CTC models' greedy decoding (stage "
                 "4), so the two heads compare on equal terms. Prior scale and penalty were "
                 "tuned on dev. Frame accuracy is against the aligner's targets of each set "
                 "(made from the references), at the encoder's output rate.")
    lines = ["# telephony_mini: the HMM-hybrid head", "", about, "",
             "## Results", "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["encoder"], pct(r["frame_acc"].get("dev")),
                 *[pct(r["frame_acc"].get(t)) for t in tests],
                 *[pct(r["wer"][t]) for t in tests]]
        if gmm:
            lex = r["lexicon"] or {}
            cells[-len(tests):] = [" / ".join([*(pct(lex[n]["wer"][t]) if n in lex else "n/a"
                                                 for n in ("nolm", "lm")),
                                               f"**{pct(r['wer'][t])}**"]) for t in tests]
            cells += [" / ".join([pct(r["ctc_wer"][t]), *(
                pct(r[f"ctc_wer_{n}"][t]) if r.get(f"ctc_wer_{n}") else "n/a"
                for n in ("lm",)), f"**{pct(r['ctc_wer_wfst'][t])}**"
                if r.get("ctc_wer_wfst") else "n/a"]) if r["ctc_wer"] else "n/a"
                for t in tests]
            cells += [str(r["prior_scale"]), str(r["acoustic_scale"]),
                      "; ".join(f"{lex[n]['lm_weight']:g}, {lex[n]['word_score']:g}"
                                for n in ("lm", "nolm") if n in lex) or "n/a"]
        else:
            cells += [pct(r["ctc_wer"][t]) if r["ctc_wer"] else "n/a" for t in tests]
            cells += [str(r["prior_scale"]), str(r["insertion_penalty"])]
        lines.append("| " + " | ".join(cells) + " |")
    option = "" if gmm else f" --aligner {args.aligner}"  # gmm: run.sh's default
    lines += ["", f"Reproduce: `recipes/telephony_mini/run.sh --stage 8 --stop-stage 9{option}` "
              "(after stages 0-4).", ""]
    text = "\n".join(lines)
    name = "hybrid_gmm" if gmm else "hybrid"
    with atomic_write(os.path.join(exp, f"RESULTS_{name}.md")) as f:
        f.write(text)
    with atomic_write(os.path.join(exp, f"results_{name}.json")) as f:
        json.dump(rows, f, indent=1)
        f.write("\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
