#!/usr/bin/env python3
"""Tune, decode and measure a token-topology hybrid model (run.sh stage 9).

Usage: local/hybrid_decode.py --model EXP/hybrid_ENC/final.pt --data-dir DATA \\
           --ali-dir EXP/ALIGNER --test-sets "test_real test_synth" [--device cpu]

1. Dev tuning: the dev set's log posteriors are computed once; every pair of prior scale
   (0, 0.5, 1) and token insertion penalty (-2 ... 6) is decoded with the token-loop
   Viterbi search and scored; the pair with the lowest dev WER is kept (the first on ties).
2. Each test set is decoded with that pair (EXP/hybrid_ENC/decode_SET: text, ctm, wer.*).
3. Frame accuracy against the CTC aligner's token-topology targets of dev and each test
   set (ALI_DIR/ali_SPLIT/pdf.scp; made from the reference transcripts).

Writes EXP/hybrid_ENC/hybrid_summary.json (atomically). Prints one line per result.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from blspeech.data.alignments import read_topology
from blspeech.decoding.hybrid import viterbi_token_loop
from blspeech.errors import UserError
from blspeech.inference.decode import decode_data_dir
from blspeech.inference.forward import frame_accuracy
from blspeech.inference.model import load_acoustic_model
from blspeech.io.fileio import atomic_write
from blspeech.scoring.wer import score

PRIOR_SCALES = (0.0, 0.5, 1.0)
PENALTIES = (-2.0, 0.0, 2.0, 4.0, 6.0)


def tune(bundle, dev_dir: str) -> list[dict]:
    """Dev WER of every (prior scale, penalty) pair, from one pass of the model."""
    ds = bundle.dataset(dev_dir, transcripts=True)
    posts = {}
    for batch, log_post, lengths in bundle.batches(ds):
        for i, utt in enumerate(batch["utts"]):
            posts[utt] = log_post[i, : int(lengths[i])].cpu()
    refs = {u: bundle.normalizer(t or "") for u, t in zip(ds.utts, ds.texts, strict=True)}
    rows = []
    for scale in PRIOR_SCALES:
        ll = {u: bundle.model.to_log_likelihoods(p, scale) for u, p in posts.items()}
        for penalty in PENALTIES:
            hyps = {u: bundle.normalizer(bundle.tokenizer.decode(
                viterbi_token_loop(x, penalty)[0])) for u, x in ll.items()}
            rows.append({"prior_scale": scale, "insertion_penalty": penalty,
                         "dev_wer": round(score(refs, hyps).wer, 2)})
    return rows


def measure(bundle, summary: dict, data_dir: str, test_sets: list[str],
            ali_scp: Callable[[str], str], ali_subsampling: int, **search: Any) -> None:
    """Frame accuracy of dev and the test sets against their alignments (``ali_scp(split)``),
    and each test set decoded with ``search`` (decode_data_dir's options) into
    MODEL_DIR/decode_SET, into ``summary["sets"]``; one line printed per set."""
    exp = os.path.dirname(summary["model"])
    for split in ["dev", *test_sets]:
        data = os.path.join(data_dir, split)
        acc = frame_accuracy(bundle, data, ali_scp(split), ali_subsampling=ali_subsampling,
                             tolerance=0)
        row = {"frame_acc": acc["frame_acc"], "frames": acc["frames"]}
        if split != "dev":
            dec = decode_data_dir(bundle, data, os.path.join(exp, f"decode_{split}"),
                                  progress=False, **search)
            row["wer"] = dec["wer"]
        summary["sets"][split] = row
        print(f"{exp} {split}: frame accuracy {acc['frame_acc']:.2f}%"
              + (f", WER {row['wer']:.2f}%" if "wer" in row else ""))


def write_summary(exp: str, summary: dict) -> None:
    """EXP/hybrid_summary.json, atomically."""
    with atomic_write(os.path.join(exp, "hybrid_summary.json")) as f:
        json.dump(summary, f, indent=1)
        f.write("\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--ali-dir", required=True)
    ap.add_argument("--test-sets", required=True)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    exp = os.path.dirname(args.model)
    try:
        bundle = load_acoustic_model(args.model, args.device)
        if not bundle.is_hybrid or bundle.model.topology != "token":
            raise UserError(f"{args.model} is not a token-topology hybrid model")
        grid = tune(bundle, os.path.join(args.data_dir, "dev"))
        best = min(grid, key=lambda r: r["dev_wer"])
        print(f"{exp}: dev WER {best['dev_wer']:.2f}% with prior scale "
              f"{best['prior_scale']}, insertion penalty {best['insertion_penalty']}")
        sub = read_topology(os.path.join(args.ali_dir, "ali_dev", "topology"))["ali_subsampling"]
        summary = {"model": args.model, "aligner": args.ali_dir, "tuning": grid,
                   "prior_scale": best["prior_scale"],
                   "insertion_penalty": best["insertion_penalty"],
                   "dev_wer": best["dev_wer"], "sets": {}}
        measure(bundle, summary, args.data_dir, args.test_sets.split(),
                lambda split: f"scp:{args.ali_dir}/ali_{split}/pdf.scp", sub,
                method="viterbi", prior_scale=best["prior_scale"],
                insertion_penalty=best["insertion_penalty"])
    except UserError as e:
        print(f"{sys.argv[0]}: error: {e}", file=sys.stderr)
        return 2
    write_summary(exp, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
