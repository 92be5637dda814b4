"""Command line of the Switchboard data preparation (a recipe's ``local/`` step).

Two sub-commands, each writing one Kaldi data dir and printing a one-line JSON summary::

    python -m blspeech.corpora.swbd_cli train --swbd-dir /corpora/LDC97S62 \\
        --ms98-dir /corpora/swb_ms98_transcriptions --out data/train
    python -m blspeech.corpora.swbd_cli eval2000 --audio-dir /corpora/LDC2002S09 \\
        --transcript-dir /corpora/LDC2002T43 --out data/eval2000

Warnings (skipped transcripts, ...) are one ``warning:`` line each on stderr; a user
mistake is one ``error:`` line and exit status 2.

Example:
    >>> args = parser().parse_args(["train", "--swbd-dir", "a", "--ms98-dir", "b",
    ...                             "--out", "data/train"])
    >>> args.command, args.out
    ('train', 'data/train')
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

from blspeech.corpora.swbd import prepare_eval2000, prepare_swbd
from blspeech.errors import UserError

PROG = "swbd_cli"


def parser() -> argparse.ArgumentParser:
    """The command line: ``train`` and ``eval2000`` sub-commands."""
    p = argparse.ArgumentParser(
        prog=PROG, description="Kaldi data dirs of Switchboard-1 (training) and Hub5'00 "
        "(eval2000) from the LDC releases, as Kaldi's egs/swbd/s5c prepares them.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    train = sub.add_parser("train", help="Switchboard-1 Release 2 + ms98 transcripts",
                           description="Write the training data dir from LDC97S62 audio and "
                           "the ms98 transcripts (swb_ms98_transcriptions).")
    train.add_argument("--swbd-dir", required=True,
                       help="LDC97S62 (its *.sph files are found recursively)")
    train.add_argument("--ms98-dir", required=True,
                       help="swb_ms98_transcriptions (its *-trans.text files)")
    train.add_argument("--out", required=True, help="output data dir, e.g. data/train")
    ev = sub.add_parser("eval2000", help="Hub5'00 evaluation set, with stm and glm",
                        description="Write the eval2000 data dir (with stm and glm for "
                        "scoring) from LDC2002S09 audio and LDC2002T43 transcripts.")
    ev.add_argument("--audio-dir", required=True,
                    help="LDC2002S09 (hub5e_00/english/*.sph, found recursively)")
    ev.add_argument("--transcript-dir", required=True,
                    help="LDC2002T43 (exactly one *.stm and one *.glm under it)")
    ev.add_argument("--out", required=True, help="output data dir, e.g. data/eval2000")
    return p


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2 for a user error)."""
    args = parser().parse_args(argv)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if args.command == "train":
                summary = prepare_swbd(args.swbd_dir, args.ms98_dir, args.out)
            else:
                summary = prepare_eval2000(args.audio_dir, args.transcript_dir, args.out)
        except UserError as e:
            summary = None
            error = str(e)
    for w in caught:
        print(f"{PROG} {args.command}: warning: {w.message}", file=sys.stderr)
    if summary is None:
        print(f"{PROG} {args.command}: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
