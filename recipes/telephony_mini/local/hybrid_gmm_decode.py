#!/usr/bin/env python3
"""Tune, decode and measure a hybrid model trained on GMM-HMM targets (run.sh stage 9 with
--aligner gmm).

Usage: local/hybrid_gmm_decode.py --model EXP/hybrid_gmm_ENC/final.pt --data-dir DATA \\
           --gmm-dir EXP/gmm --lm DATA/lm/3gram.arpa --test-sets "test_real test_synth"
           [--prior-scales "0.5 1.0"] [--acoustic-scales "0.4 0.7 1.0"]
           [--word-penalties "0"] [--device cpu]

1. The HLG graph (``blspeech mkgraph GMM_DIR/lang LM GMM_DIR/graph``: the GMM's phone HMMs
   over its pdfs, its lexicon restricted to the LM's words, the LM) is built unless it is
   newer than the LM and the GMM's lang dir.
2. Dev tuning: the dev set's log posteriors are computed once; every prior scale x
   acoustic scale x word penalty is searched with Kaldi's decoder over the graph and
   scored; the lowest dev WER wins (the first on ties).
3. Each test set is decoded with it (EXP/hybrid_gmm_ENC/decode_SET: text, ctm, wer.*).
4. Frame accuracy against the GMM's alignments of dev and each test set (made from the
   reference transcripts), at the encoder's output rate.

Writes EXP/hybrid_gmm_ENC/hybrid_summary.json (atomically). Prints one line per result.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys

from hybrid_decode import measure, write_summary
from wfst_decode import parse_floats

from blspeech.decoding.wfst import WfstDecoder
from blspeech.decoding.wfst.hlg import make_hlg
from blspeech.errors import UserError
from blspeech.inference.model import load_acoustic_model
from blspeech.scoring.wer import score


def ensure_graph(gmm_dir: str, lm: str) -> str:
    """GMM_DIR/graph, built unless newer than the LM and the lang dir's files."""
    graph, lang = os.path.join(gmm_dir, "graph"), os.path.join(gmm_dir, "lang")
    hlg = os.path.join(graph, "HLG.fst")
    sources = [lm, *(os.path.join(lang, n) for n in ("lexicon.txt", "phones.txt", "hmm.txt"))]
    if not (os.path.isfile(hlg) and all(os.path.getmtime(hlg) > os.path.getmtime(s)
                                        for s in sources if os.path.isfile(s))):
        make_hlg(lang, lm, graph)
    return graph


def tune(bundle, graph: str, dev_dir: str, prior_scales: list[float],
         acoustic_scales: list[float], penalties: list[float]) -> list[dict]:
    """Dev WER of every (prior scale, acoustic scale, word penalty), one model pass."""
    ds = bundle.dataset(dev_dir, transcripts=True)
    posts = {}
    for batch, log_post, lengths in bundle.batches(ds):
        for i, utt in enumerate(batch["utts"]):
            posts[utt] = log_post[i, : int(lengths[i])].cpu()
    refs = {u: bundle.normalizer(t or "") for u, t in zip(ds.utts, ds.texts, strict=True)}
    rows = []
    num_pdfs = bundle.model.num_pdfs
    for scale, penalty in itertools.product(acoustic_scales, penalties):
        dec = WfstDecoder(graph, num_pdfs=num_pdfs, acoustic_scale=scale, word_penalty=penalty)
        for prior in prior_scales:
            hyps = {u: bundle.normalizer(" ".join(dec.decode(
                bundle.model.to_log_likelihoods(p, prior)).words)) for u, p in posts.items()}
            rows.append({"prior_scale": prior, "acoustic_scale": scale,
                         "word_penalty": penalty, "dev_wer": round(score(refs, hyps).wer, 2)})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--gmm-dir", required=True, help="EXP/gmm of 'blspeech align-gmm'")
    ap.add_argument("--lm", required=True, help="ARPA word LM of the training transcripts")
    ap.add_argument("--test-sets", required=True)
    ap.add_argument("--prior-scales", type=parse_floats, default=[0.5, 1.0])
    ap.add_argument("--acoustic-scales", type=parse_floats, default=[0.4, 0.7, 1.0])
    ap.add_argument("--word-penalties", type=parse_floats, default=[0.0])
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    exp = os.path.dirname(args.model)
    try:
        bundle = load_acoustic_model(args.model, args.device)
        if not bundle.is_hybrid or bundle.model.topology is not None:
            raise UserError(f"{args.model} is not a hybrid model over a GMM's pdfs")
        graph = ensure_graph(args.gmm_dir, args.lm)
        grid = tune(bundle, graph, os.path.join(args.data_dir, "dev"), args.prior_scales,
                    args.acoustic_scales, args.word_penalties)
        best = min(grid, key=lambda r: r["dev_wer"])
        print(f"{exp}: dev WER {best['dev_wer']:.2f}% with prior scale "
              f"{best['prior_scale']}, acoustic scale {best['acoustic_scale']}, word penalty "
              f"{best['word_penalty']}")
        summary = {"model": args.model, "aligner": args.gmm_dir, "graph": graph,
                   "tuning": grid, **best, "sets": {}}
        measure(bundle, summary, args.data_dir, args.test_sets.split(),
                lambda split: f"scp:{args.gmm_dir}/ali_{split}/pdf.scp", 1, method="wfst",
                graph=graph, prior_scale=best["prior_scale"],
                acoustic_scale=best["acoustic_scale"], word_penalty=best["word_penalty"])
    except UserError as e:
        print(f"{sys.argv[0]}: error: {e}", file=sys.stderr)
        return 2
    write_summary(exp, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
