"""Feature commands: ``compute-feats``, ``compute-cmvn``."""

from __future__ import annotations

import argparse
import json

from blspeech.cli.common import positive


def cmd_compute_feats(args: argparse.Namespace) -> int:
    from blspeech.frontend.extract import compute_feats, load_frontend_config

    config = load_frontend_config(args.config)
    if args.num_mel_bins is not None:
        config["num_mel_bins"] = args.num_mel_bins
    summary = compute_feats(
        args.dir, args.out_dir, nj=args.nj, frontend_config=config, skip_bad=args.skip_bad,
        allow_commands=not args.no_wavscp_commands, resample=not args.no_resample,
        sample_rate=args.sample_rate, progress=not args.no_progress)
    print(json.dumps(summary))
    return 0


def cmd_compute_cmvn(args: argparse.Namespace) -> int:
    from blspeech.frontend.extract import compute_cmvn

    path = compute_cmvn(args.dir, args.mode)
    print(json.dumps({"mode": args.mode, "path": str(path)}))
    return 0


def _add_compute_feats(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compute-feats",
        help="compute Kaldi-compatible log mel features for a data dir",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Read DIR/wav.scp (+ segments, reco2file_and_channel), compute log mel filterbank\n"
            "features equal to Kaldi's compute-fbank-feats, and write OUT/raw_fbank.JOB.ark/.scp,\n"
            "then DIR/feats.scp, utt2num_frames, utt2dur and DIR/conf/fbank.yaml (the settings\n"
            "used, for later stages). Prints a JSON summary.\n\n"
            "Re-running skips finished jobs, so a killed run resumes. wav.scp entries ending in\n"
            "'|' are shell commands and are executed (as in Kaldi): use --no-wavscp-commands\n"
            "(or BLSPEECH_NO_WAVSCP_COMMANDS=1) for data dirs you do not trust."),
        epilog=(
            "examples:\n"
            "  blspeech compute-feats data/train --nj 4\n"
            "  blspeech compute-feats data/test --config data/train/conf/fbank.yaml\n"
            "  blspeech compute-feats data/8k --sample-rate 8000 --num-mel-bins 40 --skip-bad"),
    )
    p.add_argument("dir", metavar="DIR", help="Kaldi data dir (needs wav.scp)")
    p.add_argument("--nj", type=positive, default=1, metavar="N",
                   help="parallel jobs (processes), one thread each (default: 1)")
    p.add_argument("--out-dir", metavar="OUT",
                   help="where the ark/scp files go (default: DIR/data)")
    p.add_argument("--config", metavar="YAML",
                   help="front-end options (LogMel arguments, e.g. a conf/fbank.yaml written "
                        "by an earlier run); the options below override it")
    p.add_argument("--sample-rate", type=positive, metavar="HZ",
                   help="feature sample rate; other rates are resampled (default: the config's,"
                        " else the first utterance's rate)")
    p.add_argument("--num-mel-bins", type=positive, metavar="N",
                   help="mel bins (default: config's, else 80)")
    p.add_argument("--skip-bad", action="store_true",
                   help="leave unreadable/too-short/NaN utterances out and list them in "
                        "OUT/bad_utts.txt instead of failing")
    p.add_argument("--no-wavscp-commands", action="store_true",
                   help="refuse to run commands ('... |') in wav.scp, feats.scp, cmvn.scp "
                        "and rspecifiers, as BLSPEECH_NO_WAVSCP_COMMANDS=1 does")
    p.add_argument("--no-resample", action="store_true",
                   help="treat a sample-rate mismatch as an error instead of resampling")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_compute_feats)


def _add_compute_cmvn(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compute-cmvn",
        help="accumulate CMVN statistics from DIR/feats.scp",
        description=(
            "Kaldi CMVN statistics (2 x (dim+1): sums and frame count, sums of squares). "
            "Default: global stats in DIR/global_cmvn (one binary Kaldi matrix without a "
            "key, like 'compute-cmvn-stats scp:feats.scp global_cmvn'). With --per-speaker "
            "or --per-utterance: DIR/cmvn.ark + DIR/cmvn.scp keyed by speaker or utterance. "
            "Prints {\"mode\": ..., \"path\": ...}."),
        epilog="example: blspeech compute-cmvn data/train --per-speaker",
    )
    p.add_argument("dir", metavar="DIR", help="Kaldi data dir with feats.scp")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--per-speaker", dest="mode", action="store_const", const="speaker",
                      help="one set of stats per speaker (utt2spk)")
    mode.add_argument("--per-utterance", dest="mode", action="store_const", const="utterance",
                      help="one set of stats per utterance")
    p.add_argument("--no-wavscp-commands", action="store_true",
                   help="refuse to run feats.scp entries that are commands ('... |'), as "
                        "BLSPEECH_NO_WAVSCP_COMMANDS=1 does")
    p.set_defaults(func=cmd_compute_cmvn, mode="global")


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's sub-commands to the ``blspeech`` parser."""
    for add in (_add_compute_feats, _add_compute_cmvn):
        add(sub)
