#!/usr/bin/env python3
"""Tune, decode and measure a hybrid model trained on GMM-HMM targets (run.sh stage 9 with
--aligner gmm).

Usage: local/hybrid_gmm_decode.py --model EXP/hybrid_gmm_ENC/final.pt --data-dir DATA \\
           --gmm-dir EXP/gmm --lm DATA/lm/3gram.arpa --test-sets "test_real test_synth"
           [--prior-scales "0.5 1.0"] [--acoustic-scales "0.4 0.7 1.0"]
           [--word-penalties "0"] [--lm-weights "1.5 2 3 4"] [--word-scores "-6 -4 -2 0"]
           [--nolm-word-scores "-12 -8 -4 -2"] [--beam 128] [--device cpu]
       local/hybrid_gmm_decode.py --graph-only --data-dir DATA --gmm-dir EXP/gmm --lm LM

1. The HLG graph (``blspeech mkgraph GMM_DIR/lang LM GMM_DIR/graph``: the GMM's phone HMMs
   over its pdfs, its lexicon restricted to the LM's words, the LM) is built unless it is
   newer than the LM and the GMM's lang dir.
2. Dev tuning: the dev set's log posteriors are computed once; every prior scale x
   acoustic scale x word penalty is searched with Kaldi's decoder over the graph and
   scored; the lowest dev WER wins (the first on ties). With that prior scale, the
   flashlight lexicon search over the phones (``blspeech decode --method lm``) is tuned
   too: with the LM (LM weight x word score) and without it (LM weight 0: the LM's words,
   a word score only).
3. Each test set is decoded with each search's dev-best settings: EXP/hybrid_gmm_ENC/
   decode_SET (WFST), decode_lm_SET and decode_nolm_SET (text, ctm, wer.*).
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

from blspeech.decoding.hybrid_lm import HybridLexiconDecoder
from blspeech.decoding.wfst import WfstDecoder
from blspeech.decoding.wfst.hlg import make_hlg
from blspeech.errors import UserError
from blspeech.inference.decode import decode_data_dir
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


def dev_posteriors(bundle, dev_dir: str) -> tuple[dict, dict]:
    """The dev set's log posteriors (one model pass) and normalized references."""
    ds = bundle.dataset(dev_dir, transcripts=True)
    posts = {}
    for batch, log_post, lengths in bundle.batches(ds):
        for i, utt in enumerate(batch["utts"]):
            posts[utt] = log_post[i, : int(lengths[i])].cpu()
    refs = {u: bundle.normalizer(t or "") for u, t in zip(ds.utts, ds.texts, strict=True)}
    return posts, refs


def dev_wer(bundle, decoder, posts: dict, refs: dict, prior: float) -> float:
    hyps = {u: bundle.normalizer(" ".join(decoder.decode(
        bundle.model.to_log_likelihoods(p, prior)).words)) for u, p in posts.items()}
    return round(score(refs, hyps).wer, 2)


def tune(bundle, graph: str, posts: dict, refs: dict, prior_scales: list[float],
         acoustic_scales: list[float], penalties: list[float]) -> list[dict]:
    """Dev WER of every (prior scale, acoustic scale, word penalty) of the WFST search."""
    rows = []
    for scale, penalty in itertools.product(acoustic_scales, penalties):
        dec = WfstDecoder(graph, num_pdfs=bundle.model.num_pdfs, acoustic_scale=scale,
                          word_penalty=penalty)
        for prior in prior_scales:
            rows.append({"prior_scale": prior, "acoustic_scale": scale,
                         "word_penalty": penalty,
                         "dev_wer": dev_wer(bundle, dec, posts, refs, prior)})
    return rows


def tune_lexicon(bundle, lang: str, lm: str, posts: dict, refs: dict, prior: float,
                 lm_weights: list[float], word_scores: list[float], beam: int) -> list[dict]:
    """Dev WER of every (LM weight, word score) of the flashlight lexicon search."""
    rows = []
    for weight, word_score in itertools.product(lm_weights, word_scores):
        dec = HybridLexiconDecoder(lang, lm, num_pdfs=bundle.model.num_pdfs, beam=beam,
                                   lm_weight=weight, word_score=word_score)
        rows.append({"prior_scale": prior, "lm_weight": weight, "word_score": word_score,
                     "dev_wer": dev_wer(bundle, dec, posts, refs, prior)})
    return rows


def lexicon_decodings(bundle, summary: dict, args: argparse.Namespace, posts: dict,
                      refs: dict) -> None:
    """Tune and run the flashlight searches with and without the LM (summary["lexicon"])."""
    exp = os.path.dirname(args.model)
    lang = os.path.join(args.gmm_dir, "lang")
    summary["lexicon"] = {}
    for name, weights, scores in (("lm", args.lm_weights, args.word_scores),
                                  ("nolm", [0.0], args.nolm_word_scores)):
        grid = tune_lexicon(bundle, lang, args.lm, posts, refs, summary["prior_scale"],
                            weights, scores, args.beam)
        best = min(grid, key=lambda r: r["dev_wer"])
        row = {**best, "beam": args.beam, "tuning": grid, "wer": {}}
        for split in args.test_sets.split():
            dec = decode_data_dir(bundle, os.path.join(args.data_dir, split),
                                  os.path.join(exp, f"decode_{name}_{split}"), method="lm",
                                  lm=args.lm, lexicon=os.path.join(lang, "lexicon.txt"),
                                  prior_scale=best["prior_scale"], lm_weight=best["lm_weight"],
                                  word_score=best["word_score"], beam=args.beam,
                                  progress=False)
            row["wer"][split] = dec["wer"]
        summary["lexicon"][name] = row
        print(f"{exp} lexicon search {name}: dev WER {best['dev_wer']:.2f}% (LM weight "
              f"{best['lm_weight']}, word score {best['word_score']}); "
              + ", ".join(f"{t} {w:.2f}%" for t, w in row["wer"].items()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="EXP/hybrid_gmm_ENC/final.pt (all but --graph-only)")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--gmm-dir", required=True, help="EXP/gmm of 'blspeech align-gmm'")
    ap.add_argument("--lm", required=True, help="ARPA word LM of the training transcripts")
    ap.add_argument("--test-sets", help="test data dirs' names (all but --graph-only)")
    ap.add_argument("--prior-scales", type=parse_floats, default=[0.5, 1.0])
    ap.add_argument("--acoustic-scales", type=parse_floats, default=[0.4, 0.7, 1.0])
    ap.add_argument("--word-penalties", type=parse_floats, default=[0.0])
    ap.add_argument("--lm-weights", type=parse_floats, default=[1.5, 2.0, 3.0, 4.0])
    ap.add_argument("--word-scores", type=parse_floats, default=[-6.0, -4.0, -2.0, 0.0])
    ap.add_argument("--nolm-word-scores", type=parse_floats,
                    default=[-12.0, -8.0, -4.0, -2.0])
    ap.add_argument("--beam", type=int, default=128, help="flashlight beam (default: 128)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--graph-only", action="store_true",
                    help="only build GMM_DIR/graph (run.sh does, before decoding the models "
                    "at the same time)")
    args = ap.parse_args()
    if not args.graph_only and not (args.model and args.test_sets):
        ap.error("--model and --test-sets are required (all but --graph-only)")
    exp = os.path.dirname(args.model or "")
    try:
        if args.graph_only:
            ensure_graph(args.gmm_dir, args.lm)
            return 0
        bundle = load_acoustic_model(args.model, args.device)
        if not bundle.is_hybrid or bundle.model.topology is not None:
            raise UserError(f"{args.model} is not a hybrid model over a GMM's pdfs")
        graph = ensure_graph(args.gmm_dir, args.lm)
        posts, refs = dev_posteriors(bundle, os.path.join(args.data_dir, "dev"))
        grid = tune(bundle, graph, posts, refs, args.prior_scales, args.acoustic_scales,
                    args.word_penalties)
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
        lexicon_decodings(bundle, summary, args, posts, refs)
    except UserError as e:
        print(f"{sys.argv[0]}: error: {e}", file=sys.stderr)
        return 2
    write_summary(exp, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
