#!/usr/bin/env python3
"""Lexicon + word n-gram LM decoding of the test sets, with the LM weight tuned on dev.

Usage: local/lm_decode.py --model EXP/ENC/final.pt --lm DATA/lm/3gram.arpa --data-dir DATA
           --out-dir EXP/ENC [--test-sets "test_real test_synth"] [--device cpu]

The words the search may output are the LM's unigrams: words of the *training*
transcripts only (stage 2 estimates the LM from DATA/train), so held-out sentences never
reach the LM or the lexicon. The LM weight (on log10 probabilities) and the per-word
score are chosen on DATA/dev from a small grid (the pair with the lowest dev WER, ties to
the smaller weight), then each test set is decoded into OUT_DIR/decode_lm_<test>/ (text,
ctm, wer.json, wer.txt). OUT_DIR/lm_tuning.json records the grid and the choice. The
model is loaded once for all decodes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sys
import tempfile

from blspeech.errors import UserError
from blspeech.inference.decode import decode_data_dir
from blspeech.inference.model import load_acoustic_model
from blspeech.io.fileio import atomic_write

LM_WEIGHTS = (1.0, 2.0, 3.0)
WORD_SCORES = (0.0, 1.0, 2.0)


def tune(bundle, lm: str, dev: str, beam: int) -> tuple[dict, list[dict]]:
    grid = []
    with tempfile.TemporaryDirectory() as tmp:
        for weight, score in itertools.product(LM_WEIGHTS, WORD_SCORES):
            out = os.path.join(tmp, f"w{weight}_s{score}")
            s = decode_data_dir(bundle, dev, out, method="lm", lm=lm, lm_weight=weight,
                                word_score=score, beam=beam, progress=False)
            grid.append({"lm_weight": weight, "word_score": score, "dev_wer": s["wer"]})
            shutil.rmtree(out)
    best = min(grid, key=lambda g: (g["dev_wer"], g["lm_weight"], g["word_score"]))
    return best, grid


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="checkpoint (EXP/ENC/final.pt)")
    ap.add_argument("--lm", required=True, help="ARPA word LM of the training transcripts")
    ap.add_argument("--data-dir", required=True, help="DATA with dev and the test sets")
    ap.add_argument("--out-dir", required=True, help="where decode_lm_<test>/ go")
    ap.add_argument("--test-sets", default="test_real test_synth")
    # Beam 128 against 32: dev WER 20.1 / 19.5 against 22.8 / 23.4 (baseline / bL; README, K).
    ap.add_argument("--beam", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    try:
        bundle = load_acoustic_model(args.model, args.device)
        best, grid = tune(bundle, args.lm, os.path.join(args.data_dir, "dev"), args.beam)
        results = {}
        for t in args.test_sets.split():
            s = decode_data_dir(bundle, os.path.join(args.data_dir, t),
                                os.path.join(args.out_dir, f"decode_lm_{t}"), method="lm",
                                lm=args.lm, lm_weight=best["lm_weight"],
                                word_score=best["word_score"], beam=args.beam, progress=False)
            results[t] = s["wer"]
    except UserError as e:
        print(f"{sys.argv[0]}: error: {e}", file=sys.stderr)
        return 2
    summary = {**best, "beam": args.beam, "lm": args.lm, "wer": results, "grid": grid}
    with atomic_write(os.path.join(args.out_dir, "lm_tuning.json")) as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    print(json.dumps({k: summary[k] for k in ("lm_weight", "word_score", "dev_wer", "wer")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
