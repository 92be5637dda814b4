#!/usr/bin/env python3
"""WFST decoding of the test sets (TLG graph, Kaldi's decoder), acoustic scale tuned on dev.

Usage: local/wfst_decode.py --model EXP/ENC/final.pt --lm DATA/lm/3gram.arpa --lang DATA/LANG
           --graph DATA/graph_3gram --data-dir DATA --out-dir EXP/ENC
           [--test-sets "test_real test_synth"] [--acoustic-scales "0.5 0.7 1.0"]
           [--word-penalties "-6 -5 -4 -3 -2 -1 0"] [--device cpu]

The graph (``blspeech mkgraph``: CTC topology over LANG's pieces, every word of the LM
spelled with them, the LM itself) is built into GRAPH unless it is newer than the LM and
the tokenizer. Its words are the LM's unigrams: words of the *training* transcripts
only, as for the flashlight LM search (local/lm_decode.py). The acoustic scale (1 / LM
weight in Kaldi's 1-best scoring) and the per-word penalty are chosen on DATA/dev from a
small grid (the lowest dev WER; ties to the scale nearest 1, then the smaller penalty),
then each test set is decoded into OUT_DIR/decode_wfst_<test>/ (text, ctm, wer.json,
wer.txt). OUT_DIR/wfst_tuning.json records the grid and the choice, and the utterances
whose search reached no final state of the graph (none expected). The model is loaded
once for all decodes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sys
import tempfile

from blspeech.decoding.wfst import make_graph
from blspeech.errors import UserError
from blspeech.inference.decode import decode_data_dir
from blspeech.inference.model import load_acoustic_model
from blspeech.io.fileio import atomic_write
from blspeech.training.config import load_tokenizer_dir

# A negative penalty is a bonus per word: these CTC models delete more than they insert,
# and on telephony_mini's models the best dev WER lay at -3 or below (README, run L).
ACOUSTIC_SCALES = (0.5, 0.7, 1.0)
WORD_PENALTIES = (-6.0, -5.0, -4.0, -3.0, -2.0, -1.0, 0.0)


def parse_floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"expected numbers separated by spaces, got {text!r}") from err


def ensure_graph(lang: str, lm: str, graph: str) -> None:
    """Build the graph unless it is newer than the LM and the tokenizer."""
    tlg = os.path.join(graph, "TLG.fst")
    sources = [lm, os.path.join(lang, "tokenizer.pt")]
    if os.path.isfile(tlg) and all(os.path.getmtime(tlg) > os.path.getmtime(s)
                                   for s in sources):
        return
    make_graph(load_tokenizer_dir(lang)[0], lm, graph)


def tune(bundle, graph: str, dev: str, beam: int, scales: list[float],
         penalties: list[float]) -> tuple[dict, list[dict]]:
    grid = []
    with tempfile.TemporaryDirectory() as tmp:
        for scale, penalty in itertools.product(scales, penalties):
            out = os.path.join(tmp, f"a{scale}_p{penalty}")
            s = decode_data_dir(bundle, dev, out, method="wfst", graph=graph,
                                acoustic_scale=scale, word_penalty=penalty, beam=beam,
                                progress=False)
            grid.append({"acoustic_scale": scale, "word_penalty": penalty,
                         "dev_wer": s["wer"], "no_final_state": s["no_final_state"]})
            shutil.rmtree(out)
    best = min(grid, key=lambda g: (g["dev_wer"], abs(g["acoustic_scale"] - 1.0),
                                    g["word_penalty"]))
    return best, grid


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="checkpoint (EXP/ENC/final.pt)")
    ap.add_argument("--lm", required=True, help="ARPA word LM of the training transcripts")
    ap.add_argument("--lang", required=True, help="tokenizer dir (DATA/lang_*)")
    ap.add_argument("--graph", required=True, help="graph dir (built when stale)")
    ap.add_argument("--data-dir", required=True, help="DATA with dev and the test sets")
    ap.add_argument("--out-dir", required=True, help="where decode_wfst_<test>/ go")
    ap.add_argument("--test-sets", default="test_real test_synth")
    ap.add_argument("--beam", type=int, default=16, help="decoder beam (default: 16)")
    ap.add_argument("--acoustic-scales", type=parse_floats, default=ACOUSTIC_SCALES,
                    help="the grid's acoustic scales (default: %(default)s)")
    ap.add_argument("--word-penalties", type=parse_floats, default=WORD_PENALTIES,
                    help="the grid's word penalties (default: %(default)s)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    try:
        ensure_graph(args.lang, args.lm, args.graph)
        bundle = load_acoustic_model(args.model, args.device)
        best, grid = tune(bundle, args.graph, os.path.join(args.data_dir, "dev"), args.beam,
                          args.acoustic_scales, args.word_penalties)
        results, no_final = {}, {}
        for t in args.test_sets.split():
            s = decode_data_dir(bundle, os.path.join(args.data_dir, t),
                                os.path.join(args.out_dir, f"decode_wfst_{t}"),
                                method="wfst", graph=args.graph,
                                acoustic_scale=best["acoustic_scale"],
                                word_penalty=best["word_penalty"], beam=args.beam,
                                progress=False)
            results[t] = s["wer"]
            no_final[t] = s["no_final_state"]
    except UserError as e:
        print(f"{sys.argv[0]}: error: {e}", file=sys.stderr)
        return 2
    summary = {**best, "beam": args.beam, "lm": args.lm, "graph": args.graph, "wer": results,
               "no_final_state_test": no_final, "grid": grid}
    with atomic_write(os.path.join(args.out_dir, "wfst_tuning.json")) as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    print(json.dumps({k: summary[k] for k in ("acoustic_scale", "word_penalty", "dev_wer",
                                              "wer")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
