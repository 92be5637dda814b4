"""WFST graph command: ``mkgraph`` (a TLG or HLG decoding graph for ``decode --method
wfst``)."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from blspeech.cli.common import UserError


def _tokenizer_from(path: str) -> Any:
    """The tokenizer of a tokenizer dir, its ``tokenizer.pt``, or a model checkpoint."""
    if os.path.isdir(path):
        from blspeech.training.config import load_tokenizer_dir

        return load_tokenizer_dir(path)[0]
    if not os.path.isfile(path):
        raise UserError(f"tokenizer {path} does not exist (expected a tokenizer dir, its "
                        "tokenizer.pt, or a model checkpoint)")
    from blspeech.io.checkpoint import safe_torch_load
    from blspeech.text.tokenizers import tokenizer_from_dict

    entry = safe_torch_load(path, "checkpoint or tokenizer file")
    if not isinstance(entry, dict) or not isinstance(entry.get("tokenizer"), dict):
        raise UserError(f"{path} holds no tokenizer (expected a tokenizer dir, its "
                        "tokenizer.pt, or a model checkpoint)")
    return tokenizer_from_dict(entry["tokenizer"])


def cmd_mkgraph(args: argparse.Namespace) -> int:
    from blspeech.cli.asr import _warnings_as_lines
    from blspeech.decoding.wfst import make_graph

    with _warnings_as_lines("mkgraph"):
        if os.path.isfile(os.path.join(args.tokenizer, "hmm.txt")):
            from blspeech.decoding.wfst.hlg import make_hlg

            info = make_hlg(args.tokenizer, args.arpa, args.graph_dir,
                            max_order=args.max_order, silence_prob=args.silence_prob)
        else:
            info = make_graph(_tokenizer_from(args.tokenizer), args.arpa, args.graph_dir,
                              max_order=args.max_order)
    summary = {k: v for k, v in vars(info).items() if k != "skipped"}
    print(json.dumps({"graph_dir": args.graph_dir, **summary, "skipped": len(info.skipped)}))
    return 0


def _add_mkgraph(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "mkgraph",
        help="build a decoding graph (CTC topology or HMM, lexicon, n-gram LM) for "
             "'decode --method wfst'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Build GRAPH_DIR/TLG.fst with kaldifst and kaldilm (the 'wfst' extra): T, the\n"
            "CTC topology over the model's tokens (blank 0); L, every word of the ARPA LM\n"
            "spelled with the tokenizer's pieces (words that would need <unk> are left out\n"
            "and counted); G, the ARPA LM (all its orders, or --max-order). Also writes\n"
            "words.txt, tokens.txt and graph.json. Prints one JSON line with the sizes.\n\n"
            "For a hybrid model trained on 'blspeech align-gmm' targets, give that command's\n"
            "EXP/lang instead of a tokenizer: GRAPH_DIR/HLG.fst is then H, each phone's HMM\n"
            "over its pdfs (hmm.txt); L, the LM's words in lexicon.txt with optional silence;\n"
            "G, the LM (see blspeech/decoding/wfst/hlg.py)."),
        epilog=(
            "examples:\n"
            "  blspeech train-lm data/train data/lm/3gram.arpa --tokenizer-dir data/lang_bpe\n"
            "  blspeech mkgraph data/lang_bpe data/lm/3gram.arpa data/graph_3gram\n"
            "  blspeech decode exp/ctc/final.pt data/test exp/ctc/decode_wfst --method wfst \\\n"
            "      --graph data/graph_3gram --acoustic-scale 1.0\n"
            "  blspeech mkgraph exp/mono/lang data/lm/3gram.arpa exp/mono/graph\n"
            "  blspeech decode exp/hybrid/final.pt data/test exp/hybrid/decode_wfst \\\n"
            "      --method wfst --graph exp/mono/graph --acoustic-scale 0.5 --prior-scale 1"),
    )
    p.add_argument("tokenizer", metavar="TOKENIZER",
                   help="tokenizer dir, its tokenizer.pt, or a model checkpoint; or the lang "
                        "dir of 'blspeech align-gmm' (EXP/lang, with hmm.txt)")
    p.add_argument("arpa", metavar="ARPA", help="word n-gram LM (ARPA, any order)")
    p.add_argument("graph_dir", metavar="GRAPH_DIR", help="where TLG.fst and the rest go")
    p.add_argument("--max-order", type=int, metavar="N",
                   help="use the LM's n-grams up to this order (default: all)")
    p.add_argument("--silence-prob", type=float, default=0.5, metavar="P",
                   help="HLG: probability of a silence between two words (default: 0.5)")
    p.set_defaults(func=cmd_mkgraph)


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's sub-commands to the ``blspeech`` parser."""
    _add_mkgraph(sub)
