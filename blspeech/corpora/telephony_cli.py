"""Command line of the telephony_mini corpus build (the recipe's ``local/prepare_corpus.py``).

Options follow the recipes' conventions: ``--name value``, booleans as ``true``/``false``
(``--quick`` alone means ``--quick true``). User mistakes print one line and exit 2.

Example:
    >>> config = config_from_args(parser().parse_args(["--quick", "--seed", "7"]))
    >>> config.num_train, config.seed
    (300, 7)
"""

from __future__ import annotations

import argparse
import math
import sys
import time

from blspeech.corpora.synth import Channel
from blspeech.corpora.telephony import (
    HELD_OUT_SPEAKERS,
    QUICK_SIZES,
    CorpusConfig,
    build_corpus,
    format_stats,
)
from blspeech.errors import UserError


def _bool(text: str) -> bool:
    if text in ("true", "yes", "1"):
        return True
    if text in ("false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(x) for x in text.split(","))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH, got {text!r}") from e
    if low > high:
        raise argparse.ArgumentTypeError(f"LOW must not exceed HIGH in {text!r}")
    return low, high


def parser(default_data_dir: str = "data") -> argparse.ArgumentParser:
    """The command line of ``prepare_corpus.py`` (boolean options take true/false)."""
    p = argparse.ArgumentParser(
        prog="prepare_corpus.py",
        description="Build the telephony_mini corpus (8 kHz Kaldi data dirs train, dev, "
                    "test_real, test_synth) from espeak-ng, flite and Asterisk's prompts.")
    d = CorpusConfig()
    p.add_argument("--data-dir", default=default_data_dir,
                   help="output folder for the split dirs and wav/ [%(default)s]")
    for name in ("num_train", "num_dev", "num_test_synth", "num_test_real"):
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=None,
                       help=f"utterances [{getattr(d, name)}; --quick: {QUICK_SIZES[name]}]")
    p.add_argument("--quick", type=_bool, nargs="?", const=True, default=False,
                   help="small corpus for smoke runs (explicit --num-* still win) [false]")
    p.add_argument("--seed", type=int, default=d.seed, help="[%(default)s]")
    p.add_argument("--nj", type=int, default=2, help="parallel synthesis jobs [%(default)s]")
    p.add_argument("--real-share", type=float, default=d.real_share,
                   help="share of train/dev that are real Asterisk recordings [%(default)s]")
    p.add_argument("--prompt-share", type=float, default=d.prompt_share,
                   help="share of synthesized train/dev reading Asterisk prompt sentences "
                        "[%(default)s]")
    p.add_argument("--flite-share", type=float, default=d.flite_share,
                   help="share of synthesized utterances spoken by flite [%(default)s]")
    p.add_argument("--bandpass", type=_bool, default=True,
                   help="300-3400 Hz telephone band-pass [true]")
    p.add_argument("--noise", type=_bool, default=True, help="add low-level noise [true]")
    p.add_argument("--snr-db", type=_range, default=d.channel.snr_db,
                   help="noise SNR range in dB, LOW,HIGH [25,40]")
    p.add_argument("--mulaw", type=_bool, default=True, help="G.711 mu-law round trip [true]")
    p.add_argument("--held-out-speakers", default=",".join(HELD_OUT_SPEAKERS),
                   help="comma-separated voices for test_synth only [%(default)s]")
    p.add_argument("--asterisk-dir", default=d.sound_dir, help="[%(default)s]")
    p.add_argument("--asterisk-transcripts", default=d.transcripts, help="[%(default)s]")
    p.add_argument("--text-dir", default=d.text_dir,
                   help="templates and word lists [%(default)s]")
    p.add_argument("--progress", type=_bool, default=True, help="progress bar [true]")
    return p


def config_from_args(args: argparse.Namespace) -> CorpusConfig:
    """A :class:`CorpusConfig` from parsed :func:`parser` arguments."""
    sizes = {}
    for name, quick in QUICK_SIZES.items():
        value = getattr(args, name)
        sizes[name] = value if value is not None else (
            quick if args.quick else getattr(CorpusConfig, name))
    channel = Channel(bandpass=(300.0, 3400.0) if args.bandpass else None,
                      snr_db=args.snr_db if args.noise else None, mulaw=args.mulaw)
    held_out = tuple(s for s in args.held_out_speakers.split(",") if s)
    return CorpusConfig(**sizes, seed=args.seed, real_share=args.real_share,
                        prompt_share=args.prompt_share, flite_share=args.flite_share,
                        held_out_speakers=held_out, channel=channel,
                        sound_dir=args.asterisk_dir, transcripts=args.asterisk_transcripts,
                        text_dir=args.text_dir)


def main(argv: list[str] | None = None, default_data_dir: str = "data") -> int:
    """Command-line entry point; returns the exit status (2 for a user error)."""
    args = parser(default_data_dir).parse_args(argv)
    start = time.time()
    try:
        config = config_from_args(args)
        if args.nj < 1:
            raise UserError("--nj must be >= 1")
        stats = build_corpus(args.data_dir, config, nj=args.nj, progress=args.progress)
    except UserError as e:
        print(f"prepare_corpus.py: error: {e}", file=sys.stderr)
        return 2
    print(format_stats(stats))
    minutes, seconds = divmod(math.ceil(time.time() - start), 60)
    print(f"corpus ready in {args.data_dir} ({stats['total_hours']:.2f} h in all; "
          f"{minutes}m{seconds:02d}s); statistics in {args.data_dir}/corpus_stats.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
