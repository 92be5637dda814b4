"""Recognition commands: ``decode``, ``transcribe`` and ``make-bundle`` (bundles),
``forward`` (log-likelihoods for Kaldi decoders),
``align`` (CTC forced alignment), ``train-lm``, ``compare-models`` (FLOPs and real-time
factor of several checkpoints, side by side)."""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import sys
import warnings
from collections.abc import Callable, Iterator

from blspeech.cli.common import UserError, count, positive


@contextlib.contextmanager
def _warnings_as_lines(command: str) -> Iterator[None]:
    """Library warnings as ``blspeech CMD: warning: ...`` lines on stderr (no source lines)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            seen = set()
            for w in caught:
                text = " ".join(str(w.message).split())
                if text not in seen:
                    seen.add(text)
                    print(f"blspeech {command}: warning: {text}", file=sys.stderr)


def _command(name: str):
    """Wrap a command: its warnings are one-liners."""

    def wrap(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        @functools.wraps(func)
        def run(args: argparse.Namespace) -> int:
            with _warnings_as_lines(name):
                return func(args)
        return run

    return wrap


@_command("decode")
def cmd_decode(args: argparse.Namespace) -> int:
    from blspeech.inference.decode import decode_data_dir

    summary = decode_data_dir(
        args.checkpoint, args.data_dir, args.out_dir, method=args.method, beam=args.beam,
        lm=args.lm, lexicon=args.lexicon, lm_weight=args.lm_weight,
        word_score=args.word_score, token_prune=args.token_prune or None,
        insertion_penalty=args.insertion_penalty, prior_scale=args.prior_scale,
        graph=args.graph, acoustic_scale=args.acoustic_scale, word_penalty=args.word_penalty,
        max_active=args.max_active, max_frames=args.max_frames, num_workers=args.nj,
        threads=args.threads,
        device=args.device, allow_wavscp_commands=not args.no_wavscp_commands,
        progress=not args.no_progress)
    print(json.dumps(summary))
    return 0


@_command("align")
def cmd_align(args: argparse.Namespace) -> int:
    from blspeech.inference.align import align_data_dir

    summary = align_data_dir(
        args.checkpoint, args.data_dir, args.out_dir, max_frames=args.max_frames,
        num_workers=args.nj, device=args.device,
        allow_wavscp_commands=not args.no_wavscp_commands, progress=not args.no_progress,
        hybrid_targets=args.hybrid_targets)
    print(json.dumps(summary))
    return 0


@_command("make-bundle")
def cmd_make_bundle(args: argparse.Namespace) -> int:
    from blspeech.inference.bundle import make_bundle

    frontend = None
    if args.frontend:
        from blspeech.frontend.extract import load_frontend_config

        frontend = load_frontend_config(args.frontend)
    print(json.dumps(make_bundle(args.checkpoint, args.out, frontend=frontend,
                                 prior_scale=args.prior_scale,
                                 insertion_penalty=args.insertion_penalty)))
    return 0


@_command("transcribe")
def cmd_transcribe(args: argparse.Namespace) -> int:
    from blspeech.decoding.ctc import format_ctm
    from blspeech.inference.bundle import load_bundle

    bundle = load_bundle(args.bundle, args.device)
    for path in args.audio:
        words = bundle.transcribe_words(path)[0]
        if args.ctm:
            utt = os.path.splitext(os.path.basename(path))[0]
            lines = format_ctm(utt, [(w.word, w.start, w.duration) for w in words])
            if lines:
                print("\n".join(lines))
        else:
            print(f"{path} {' '.join(w.word for w in words)}".rstrip())
    return 0


@_command("forward")
def cmd_forward(args: argparse.Namespace) -> int:
    from blspeech.inference.forward import forward_data_dir, parse_wspecifier

    summary = forward_data_dir(
        args.checkpoint, args.data_dir, args.wspecifier, prior_scale=args.prior_scale,
        max_frames=args.max_frames, num_workers=args.nj, device=args.device,
        allow_wavscp_commands=not args.no_wavscp_commands, progress=not args.no_progress)
    # With ark:- the archive owns stdout; the summary goes to stderr.
    to_stdout = parse_wspecifier(args.wspecifier)[0] != "-"
    print(json.dumps(summary), file=sys.stdout if to_stdout else sys.stderr)
    return 0


@_command("compare-models")
def cmd_compare_models(args: argparse.Namespace) -> int:
    from blspeech.inference.compare import measure_efficiency
    from blspeech.io.fileio import atomic_write

    checkpoints: dict[str, str] = {}
    for spec in args.models:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise UserError(f"expected NAME=CHECKPOINT, got {spec!r}")
        if name in checkpoints:
            raise UserError(f"model name {name!r} given twice")
        checkpoints[name] = path
    results = measure_efficiency(
        checkpoints, args.data_dir, device=args.device, threads=args.threads,
        repeats=args.repeats, max_utts=args.max_utts, max_frames=args.max_frames,
        num_workers=args.nj, allow_wavscp_commands=not args.no_wavscp_commands,
        progress=not args.no_progress)
    if args.out:
        with atomic_write(args.out) as f:
            json.dump(results, f, indent=2)
            f.write("\n")
    for name, row in results.items():
        print(json.dumps({"name": name, **row}))
    return 0


def _normalizer_from(path: str):
    """The text normalizer of a tokenizer dir, its ``tokenizer.pt``, or a model checkpoint."""
    from blspeech.text.tokenizers import TextNormalizer

    if os.path.isdir(path):
        from blspeech.training.config import load_tokenizer_dir

        return load_tokenizer_dir(path)[1]
    if not os.path.isfile(path):
        raise UserError(f"--tokenizer-dir {path} does not exist")
    from blspeech.io.checkpoint import safe_torch_load

    entry = safe_torch_load(path, "checkpoint or tokenizer file")
    if not isinstance(entry, dict) or not isinstance(entry.get("normalizer"), dict):
        raise UserError(f"{path} holds no text normalizer (expected a tokenizer dir, its "
                        "tokenizer.pt, or a model checkpoint)")
    try:
        return TextNormalizer(**entry["normalizer"])
    except TypeError as e:
        raise UserError(f"{path}: bad normalizer: {e}") from e


def read_sentences(source: str, utt_ids: bool | None = None) -> list[str]:
    """Sentences of a data dir's ``text`` or of a text file (one per line).

    ``utt_ids``: the lines start with an utterance id (Kaldi ``text``); default: yes for
    a data dir, no for a file.
    """
    if os.path.isdir(source):
        path, utt_ids = os.path.join(source, "text"), True if utt_ids is None else utt_ids
        if not os.path.isfile(path):
            raise UserError(f"{path} not found: pass a data dir with transcripts or a text "
                            "file")
    elif os.path.isfile(source):
        path = source
    else:
        raise UserError(f"{source} does not exist (expected a data dir or a text file)")
    sentences = []
    with open(path, encoding="utf-8", errors="strict") as f:
        try:
            for line in f:
                words = line.split()
                if utt_ids:
                    words = words[1:]
                if words:
                    sentences.append(" ".join(words))
        except UnicodeDecodeError as e:
            raise UserError(f"{path}: not UTF-8 text: {e}") from e
    return sentences


@_command("train-lm")
def cmd_train_lm(args: argparse.Namespace) -> int:
    from blspeech.text.ngram import train_ngram, write_arpa

    if args.order < 2:
        raise UserError(f"--order must be 2 or more, got {args.order}: KenLM, which 'decode "
                        "--method lm' uses, rejects unigram-only models")
    if not 0.0 < args.discount < 1.0:
        raise UserError(f"--discount must be between 0 and 1, got {args.discount}")
    sentences = read_sentences(args.source, True if args.utt_ids else None)
    normalizer = _normalizer_from(args.tokenizer_dir) if args.tokenizer_dir else None
    if normalizer is not None:
        sentences = [s for s in map(normalizer, sentences) if s]
    if not sentences:
        raise UserError(f"{args.source} has no text to train a language model on")
    lm = train_ngram(sentences, order=args.order, discount=args.discount)
    write_arpa(lm, args.out)
    print(json.dumps({"arpa": args.out, "order": lm.order, "sentences": len(sentences),
                      "vocabulary": len(lm.probs[0]) - 2,  # without <s> and <unk>
                      "ngrams": [len(p) for p in lm.probs],
                      "normalizer": None if normalizer is None else normalizer.to_dict()}))
    return 0


def _common_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-frames", type=positive, default=20000, metavar="N",
                   help="feature frames per batch, padding included (default: 20000)")
    p.add_argument("--nj", type=count, default=0, metavar="N",
                   help="data-loading worker processes (default: 0, in the main process)")
    p.add_argument("--device", default="cpu",
                   help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--no-wavscp-commands", action="store_true",
                   help="refuse to run commands ('... |') in wav.scp, feats.scp, cmvn.scp "
                        "and rspecifiers, as BLSPEECH_NO_WAVSCP_COMMANDS=1 does")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_decode(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "decode",
        help="decode a data dir with a trained CTC or token-topology hybrid model "
             "(text, ctm, WER)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Decode every utterance of DATA_DIR with the model in CHECKPOINT (written by\n"
            "'blspeech train'); features are made as in training (feats.scp or audio, the\n"
            "same CMVN; global stats from the checkpoint). Writes OUT_DIR/text (sorted\n"
            "'utt word ...'), OUT_DIR/ctm ('utt 1 start duration word') and, when DATA_DIR\n"
            "has a text file, OUT_DIR/wer.json and OUT_DIR/wer.txt (sclite counts; reference\n"
            "and hypothesis normalized with the model's normalizer). Every file is written\n"
            "only when all utterances are decoded. Prints one JSON line: utterances, wer,\n"
            "rtf (decode seconds / audio seconds), seconds, ...\n\n"
            "Methods: greedy (best path), beam (CTC prefix beam search, no LM), lm (lexicon\n"
            "+ word n-gram LM beam search, flashlight/KenLM; words from --lexicon or the\n"
            "LM's unigrams, spelled with the model's tokens). Tune --lm-weight (on log10 LM\n"
            "probabilities) and --word-score on a dev set; --lexicon without --lm: its\n"
            "words, no LM. Hybrid models trained on the token topology (targets of\n"
            "'blspeech align --hybrid-targets') decode with viterbi: the best path through\n"
            "a free loop of two-state token HMMs on log posterior - prior-scale x log\n"
            "prior, --insertion-penalty per token; tune both on a dev set. Hybrid models\n"
            "over a GMM's pdfs ('blspeech align-gmm') decode with wfst over an HLG graph\n"
            "('blspeech mkgraph EXP/lang ARPA GRAPH') or with lm and --lexicon\n"
            "EXP/lang/lexicon.txt (its phones.txt and hmm.txt beside it); for Kaldi's own\n"
            "decoders, 'blspeech forward' writes the log-likelihoods.\n"
            "wfst: Kaldi's decoder (kaldi-decoder wheel) over a TLG graph from 'blspeech\n"
            "mkgraph' (--graph); tune --acoustic-scale (1 / LM weight) and --word-penalty on\n"
            "a dev set; utterances that reach no final state of the graph get the best\n"
            "partial path and are named in a warning and in the JSON (no_final_state)."),
        epilog=(
            "examples:\n"
            "  blspeech decode exp/ctc/best.pt data/test exp/ctc/decode_test\n"
            "  blspeech decode exp/ctc/best.pt data/test exp/ctc/decode_beam --method beam "
            "--beam 16\n"
            "  blspeech train-lm data/train data/lm/3gram.arpa --tokenizer-dir data/lang_bpe\n"
            "  blspeech decode exp/ctc/best.pt data/test exp/ctc/decode_lm --method lm \\\n"
            "      --lm data/lm/3gram.arpa --lm-weight 1.5 --word-score 0.5\n"
            "  blspeech mkgraph data/lang_bpe data/lm/3gram.arpa data/graph_3gram\n"
            "  blspeech decode exp/ctc/best.pt data/test exp/ctc/decode_wfst --method wfst \\\n"
            "      --graph data/graph_3gram --acoustic-scale 1.0\n"
            "output:\n"
            '  {"utterances": 200, "wer": 14.2, ..., "rtf": 0.031, "seconds": 21.5}'),
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="model checkpoint (.pt)")
    p.add_argument("data_dir", metavar="DATA_DIR", help="Kaldi data dir to decode")
    p.add_argument("out_dir", metavar="OUT_DIR", help="where text, ctm and wer.* go")
    _search_options(p)
    _lm_options(p)
    _hybrid_and_wfst_options(p)
    p.add_argument("--threads", type=positive, metavar="N",
                   help="torch CPU threads (default: torch's choice)")
    _common_data_options(p)
    p.set_defaults(func=cmd_decode)


def _search_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", choices=("greedy", "beam", "lm", "viterbi", "wfst"),
                   help="search (default: greedy for CTC models, viterbi for hybrid ones)")
    p.add_argument("--beam", type=positive, metavar="N",
                   help="beam width (default: 8 for beam, 32 for lm, 16 for wfst, in cost "
                        "units there)")
    p.add_argument("--token-prune", type=count, default=16, metavar="N",
                   help="most likely tokens tried per frame in beam searches; 0: all "
                        "(default: 16)")


def _lm_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lm", metavar="ARPA", help="word n-gram LM (order >= 2) for --method lm")
    p.add_argument("--lexicon", metavar="FILE",
                   help="words for --method lm, one 'word [token ...]' per line (a word alone "
                        "is spelled by the model's tokenizer); default: the LM's unigrams. "
                        "Hybrid models over a GMM's pdfs: EXP/lang/lexicon.txt")
    p.add_argument("--lm-weight", type=float, default=2.0, metavar="W",
                   help="LM weight on log10 probabilities (default: 2.0)")
    p.add_argument("--word-score", type=float, default=0.0, metavar="S",
                   help="score added per word with --method lm (default: 0)")


def _hybrid_and_wfst_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--insertion-penalty", type=float, default=0.0, metavar="P",
                   help="viterbi: cost (nats) of each token entered (default: 0)")
    p.add_argument("--prior-scale", type=float, default=1.0, metavar="S",
                   help="hybrid models: weight of the log-priors subtracted from the log "
                        "posteriors (default: 1.0; 0: posteriors)")
    p.add_argument("--graph", metavar="GRAPH_DIR",
                   help="TLG graph dir for --method wfst ('blspeech mkgraph')")
    p.add_argument("--acoustic-scale", type=float, default=1.0, metavar="S",
                   help="wfst: weight of the log-probabilities against the LM's -ln costs "
                        "(default: 1.0)")
    p.add_argument("--word-penalty", type=float, default=0.0, metavar="P",
                   help="wfst: cost added per word (default: 0)")
    p.add_argument("--max-active", type=positive, default=7000, metavar="N",
                   help="wfst: most hypotheses kept per frame (default: 7000)")


def _add_make_bundle(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "make-bundle",
        help="pack a trained model into one file for other pipelines (front-end, CMVN, "
             "tokenizer, model)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Write OUT (by convention NAME.bundle): the front-end settings, CMVN statistics,\n"
            "tokenizer, text normalizer, model config and weights and decoding settings of the\n"
            "model in CHECKPOINT, in one file that 'blspeech transcribe' and\n"
            "blspeech.load_bundle(path) read (safely: tensors and plain values only).\n"
            "Prints a JSON summary."),
        epilog=("examples:\n"
                "  blspeech make-bundle exp/bl_resnet_am/final.pt exp/bl_resnet_am/final.bundle\n"
                "  blspeech make-bundle exp/hybrid/final.pt hyb.bundle --prior-scale 0.5 "
                "--insertion-penalty 2\n"
                "python:\n"
                "  import blspeech\n"
                "  asr = blspeech.load_bundle('exp/bl_resnet_am/final.bundle')\n"
                "  asr.transcribe('call.wav')"),
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="checkpoint of 'blspeech train'")
    p.add_argument("out", metavar="OUT", help="bundle file to write")
    p.add_argument("--frontend", metavar="YAML",
                   help="LogMel settings, for models whose checkpoint records none (default: "
                        "the checkpoint's)")
    p.add_argument("--prior-scale", type=float, metavar="S",
                   help="hybrid token-topology models: prior scale of the Viterbi search")
    p.add_argument("--insertion-penalty", type=float, metavar="P",
                   help="hybrid token-topology models: penalty per token")
    p.set_defaults(func=cmd_make_bundle)


def _add_transcribe(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "transcribe",
        help="transcribe audio files with a bundle",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Transcribe each AUDIO file (wav, flac, SPHERE, ...; resampled to the model's\n"
            "rate, first channel) with the model in BUNDLE: features, CMVN and decoding as\n"
            "the bundle records them (greedy CTC, or Viterbi for token-topology hybrid\n"
            "models). Prints 'AUDIO words ...' per file, or with --ctm CTM lines\n"
            "'NAME 1 start duration word' (NAME: the file name without extension)."),
        epilog=("examples:\n"
                "  blspeech transcribe exp/bl_resnet_am_mini/final.bundle call1.wav call2.flac\n"
                "  blspeech transcribe model.bundle call.wav --ctm > call.ctm"),
    )
    p.add_argument("bundle", metavar="BUNDLE", help="bundle file (blspeech make-bundle)")
    p.add_argument("audio", nargs="+", metavar="AUDIO", help="audio files")
    p.add_argument("--ctm", action="store_true", help="print word times as CTM lines")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.set_defaults(func=cmd_transcribe)


def _add_forward(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "forward",
        help="write a model's per-frame log-likelihoods as a Kaldi matrix archive "
             "(for latgen-faster-mapped)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Run the model in CHECKPOINT over DATA_DIR (features made as in training) and\n"
            "write one binary float matrix per utterance (output frames x outputs) to\n"
            "WSPECIFIER, byte for byte as Kaldi writes them. A hybrid model writes scaled\n"
            "log-likelihoods, log posterior - prior-scale x log prior (the log-priors come\n"
            "from its training alignments), the input Kaldi's *-mapped decoders expect; a\n"
            "CTC model writes its token log-probabilities. WSPECIFIER: ark:- (stdout, one\n"
            "utterance at a time, for a pipe), ark:FILE, ark,scp:FILE.ark,FILE.scp, or\n"
            "'ark:| COMMAND'. Utterances come in batch order (similar lengths together).\n"
            "Prints a JSON summary (to stderr with ark:-). Output frames are the encoder's:\n"
            "with time subsampling N, Kaldi's decoder needs a graph and transition model\n"
            "built for that frame rate (as for chain models, --frame-subsampling-factor)."),
        epilog=(
            "examples:\n"
            "  blspeech forward exp/hybrid/final.pt data/eval2000 \\\n"
            "      ark,scp:exp/hybrid/loglikes.ark,exp/hybrid/loglikes.scp\n"
            "  blspeech forward exp/hybrid/final.pt data/eval2000 ark:- | \\\n"
            "      latgen-faster-mapped --acoustic-scale=0.1 --word-symbol-table=words.txt \\\n"
            "      exp/tri4/final.mdl exp/tri4/graph/HCLG.fst ark:- 'ark:|gzip -c >lat.1.gz'"),
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="model checkpoint (.pt)")
    p.add_argument("data_dir", metavar="DATA_DIR", help="Kaldi data dir")
    p.add_argument("wspecifier", metavar="WSPECIFIER",
                   help="where the matrices go: ark:-, ark:FILE, ark,scp:ARK,SCP, 'ark:| CMD'")
    p.add_argument("--prior-scale", type=float, metavar="S",
                   help="hybrid models: weight of the log-priors (default: 1.0; 0: log "
                        "posteriors)")
    _common_data_options(p)
    p.set_defaults(func=cmd_forward)


def _add_compare_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare-models",
        help="parameters, GFLOPs per second of audio and decoding RTF of several models",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Load each CHECKPOINT and measure, side by side in one process: parameters,\n"
            "GFLOPs per second of audio (torch's FLOP counter on a 10 s input; gmacs_per_sec\n"
            "is the same in multiply-adds, the bL-Net paper's unit) and the real-time factor\n"
            "of greedy decoding DATA_DIR (model forward with BatchNorm folded + best path,\n"
            "batched as in 'blspeech decode', features read before timing). The models take\n"
            "turns in each of --repeats rounds (rotating order); the median is reported.\n"
            "Prints one JSON line per model; --out also writes them as one JSON object."),
        epilog=(
            "example:\n"
            "  blspeech compare-models resnet=exp/resnet_am/final.pt \\\n"
            "      bl=exp/bl_resnet_am/final.pt --data-dir data/test --threads 2 --repeats 5"),
    )
    p.add_argument("models", nargs="+", metavar="NAME=CHECKPOINT",
                   help="a name for the model and its checkpoint")
    p.add_argument("--data-dir", required=True, metavar="DIR",
                   help="data dir whose utterances are decoded for the RTF")
    p.add_argument("--max-utts", type=count, default=0, metavar="N",
                   help="use the first N utterances only (default: 0, all)")
    p.add_argument("--repeats", type=positive, default=5, metavar="N",
                   help="timed rounds per model (default: 5)")
    p.add_argument("--out", metavar="JSON", help="also write the results to this file")
    p.add_argument("--threads", type=positive, metavar="N",
                   help="torch CPU threads (default: torch's choice)")
    _common_data_options(p)
    p.set_defaults(func=cmd_compare_models)


def _add_align(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "align",
        help="CTC forced alignment of a data dir's transcripts (ali.ark/.scp, ctm)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Align each transcript of DATA_DIR (normalized and tokenized as in training) to\n"
            "the model's output frames with CTC forced alignment. Writes OUT_DIR/ali.ark +\n"
            "ali.scp (per utterance one token id per encoder output frame, blank 0: Kaldi\n"
            "int vectors), OUT_DIR/ctm (word times) and, for utterances whose transcript\n"
            "has too many tokens for their frames, OUT_DIR/unaligned.txt (also a warning).\n"
            "With --hybrid-targets also OUT_DIR/pdf.ark + pdf.scp: frame targets for a\n"
            "hybrid head in the token topology (pdf 2k-1 on a token's first frame, 2k on\n"
            "the frames after it, 0 silence) and OUT_DIR/topology (num_pdfs,\n"
            "ali_subsampling: the values of the hybrid config's head section).\n"
            "Prints one JSON line: utterances, aligned, unaligned, avg_logprob, ..."),
        epilog=(
            "examples:\n"
            "  blspeech align exp/ctc/best.pt data/train exp/ctc/ali_train\n"
            "  blspeech align exp/ctc/final.pt data/train exp/ctc/ali_train --hybrid-targets\n"
            "  copy-int-vector scp:exp/ctc/ali_train/ali.scp ark,t:- | head   # with Kaldi"),
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="model checkpoint (.pt)")
    p.add_argument("data_dir", metavar="DATA_DIR", help="Kaldi data dir with text")
    p.add_argument("out_dir", metavar="OUT_DIR", help="where ali.ark/.scp and ctm go")
    p.add_argument("--hybrid-targets", action="store_true",
                   help="also write token-topology pdf targets for a hybrid head (pdf.scp)")
    _common_data_options(p)
    p.set_defaults(func=cmd_align)


def _add_train_lm(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-lm",
        help="train a word n-gram LM (interpolated Kneser-Ney, ARPA) for LM decoding",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Estimate an interpolated Kneser-Ney word n-gram model from SOURCE, a data dir\n"
            "(its text file, utterance ids dropped) or a text file (one sentence per line),\n"
            "and write it as an ARPA file. Pass --tokenizer-dir (a tokenizer dir or a model\n"
            "checkpoint) to normalize the text as the model's transcripts were, so the LM's\n"
            "words can be spelled with the model's tokens. For large corpora use KenLM's\n"
            "lmplz instead; 'decode --method lm' reads any ARPA file of order >= 2."),
        epilog=(
            "examples:\n"
            "  blspeech train-lm data/train data/lm/3gram.arpa --tokenizer-dir data/lang_char\n"
            "  blspeech train-lm corpus.txt data/lm/4gram.arpa --order 4 --tokenizer-dir "
            "exp/ctc/best.pt"),
    )
    p.add_argument("source", metavar="TEXT_OR_DATADIR", help="data dir or text file")
    p.add_argument("out", metavar="OUT.arpa", help="ARPA file to write")
    p.add_argument("--order", type=int, default=3, metavar="N", help="n-gram order (default: 3)")
    p.add_argument("--tokenizer-dir", metavar="DIR",
                   help="normalize the text with this tokenizer dir's (or checkpoint's) "
                        "normalizer")
    p.add_argument("--utt-ids", action="store_true",
                   help="the text file's lines start with an utterance id (Kaldi text)")
    p.add_argument("--discount", type=float, default=0.75,
                   help="Kneser-Ney absolute discount (default: 0.75)")
    p.set_defaults(func=cmd_train_lm)


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's sub-commands to the ``blspeech`` parser."""
    for add in (_add_decode, _add_make_bundle, _add_transcribe, _add_forward,
                _add_compare_models, _add_align, _add_train_lm):
        add(sub)
