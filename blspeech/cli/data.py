"""Data-dir commands: ``validate-data-dir``, ``fix-data-dir``, ``subset-data-dir``,
``combine-data``, ``perturb-speed`` (Kaldi's ``utils/*_data_dir.sh`` equivalents)."""

from __future__ import annotations

import argparse
import json
import sys

from blspeech.cli.common import UserError, positive

EXIT_PROBLEMS = 1
_RAW = argparse.RawDescriptionHelpFormatter


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _factors(text: str) -> list[float]:
    """``0.9,1.0,1.1`` -> [0.9, 1.0, 1.1] (an argparse ``type``)."""
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}"
                                         ) from e
    if not values or any(not v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"speed factors must be positive, got {text!r}")
    return values


def _read_id_list(path: str) -> list[str]:
    """First field of every non-empty line of ``path`` (``-``: stdin), as Kaldi's lists."""
    if path == "-":
        lines = sys.stdin.read().splitlines()
    else:
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except FileNotFoundError as e:
            raise UserError(f"{path}: list file not found") from e
        except UnicodeDecodeError as e:
            raise UserError(f"{path}: not UTF-8 text") from e
    ids = [line.split()[0] for line in lines if line.strip()]
    if not ids:
        raise UserError(f"{path}: the list is empty")
    return ids


def cmd_validate(args: argparse.Namespace) -> int:
    from blspeech.io.datadir import DataDir, check_data_dir

    data = DataDir.load(args.dir, strict=False)
    problems = check_data_dir(data, check_files=not args.no_check_files)
    errors = sum(p.level == "error" for p in problems)
    warnings = len(problems) - errors
    for p in problems:
        print(json.dumps(p.to_dict()) if args.json else p)
    counts = {"dir": args.dir, "utterances": len(data), "speakers": len(data.speakers()),
              "errors": errors, "warnings": warnings}
    if args.json:
        print(json.dumps(counts))
    else:
        print(f"{args.dir}: {_plural(len(data), 'utterance')}, "
              f"{_plural(len(data.speakers()), 'speaker')}, {_plural(errors, 'error')}, "
              f"{_plural(warnings, 'warning')}")
    return EXIT_PROBLEMS if errors else 0


def cmd_fix(args: argparse.Namespace) -> int:
    from blspeech.io.datadir import fix_data_dir

    print(json.dumps(fix_data_dir(args.dir, check_files=not args.no_check_files)))
    return 0


def cmd_subset(args: argparse.Namespace) -> int:
    from blspeech.io.datadir import subset_data_dir

    report = subset_data_dir(
        args.src, args.dst,
        utt_list=_read_id_list(args.utt_list) if args.utt_list else None,
        speakers=_read_id_list(args.spk_list) if args.spk_list else None,
        first=args.first, last=args.last, num=args.random, seed=args.seed)
    if report["missing"]:
        print(f"blspeech subset-data-dir: warning: {len(report['missing'])} listed ids are not "
              f"in {args.src} (first: {report['missing'][0]!r})", file=sys.stderr)
    print(json.dumps(report))
    return 0


def cmd_combine(args: argparse.Namespace) -> int:
    from blspeech.io.datadir import combine_data_dirs

    report = combine_data_dirs(args.dst, args.srcs)
    for warning in report["warnings"]:
        print(f"blspeech combine-data: warning: {warning}", file=sys.stderr)
    print(json.dumps(report))
    return 0


def cmd_perturb(args: argparse.Namespace) -> int:
    from blspeech.io.datadir import perturb_speed

    print(json.dumps(perturb_speed(args.src, args.dst, args.factors)))
    return 0


def _add_validate_data_dir(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "validate-data-dir", formatter_class=_RAW,
        help="check a Kaldi data dir and list every problem",
        description=(
            "Check a Kaldi data dir (like Kaldi's utils/validate_data_dir.sh) and print\n"
            "every problem, one per line as FILE:LINE: [warning:] ID: MESSAGE, then a\n"
            "summary line. Checks: required files (wav.scp, text, utt2spk), undecodable,\n"
            "empty, duplicate or unsorted lines, malformed values, utterance ids that\n"
            "disagree between files, utt2spk vs spk2utt, segments (times, unknown or too\n"
            "short recordings), missing audio files and archives; Kaldi's speaker-prefix\n"
            "convention is a warning.\n"
            "Exit status: 0 when there are no errors (warnings allowed), 1 otherwise."),
        epilog="example: blspeech validate-data-dir data/train --json")
    p.add_argument("dir", help="the data dir")
    p.add_argument("--json", action="store_true",
                   help="print each problem as a JSON line, then a JSON summary")
    p.add_argument("--no-check-files", action="store_true",
                   help="do not check that audio files and feature archives exist")
    p.add_argument("--no-wavscp-commands", action="store_true",
                   help="report command entries ('... |') of wav.scp, feats.scp and cmvn.scp "
                        "as errors, as reading them with this switch (or "
                        "BLSPEECH_NO_WAVSCP_COMMANDS=1) would fail")
    p.set_defaults(func=cmd_validate)


def _add_fix_data_dir(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fix-data-dir", formatter_class=_RAW,
        help="sort a data dir and drop inconsistent entries (utils/fix_data_dir.sh)",
        description=(
            "Repair a data dir in place, like Kaldi's utils/fix_data_dir.sh: sort every\n"
            "table, drop duplicate (keeping the first), malformed or empty lines, keep only\n"
            "utterances present in every utterance table, drop unused recordings and\n"
            "speakers, regenerate spk2utt. The old files are kept in DIR/.backup/.\n"
            "Prints a JSON report of what was dropped."),
        epilog="example: blspeech fix-data-dir data/train")
    p.add_argument("dir", help="the data dir (changed in place)")
    p.add_argument("--no-check-files", action="store_true",
                   help="keep entries whose audio file or feature archive does not exist")
    p.set_defaults(func=cmd_fix)


def _add_subset_data_dir(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "subset-data-dir", formatter_class=_RAW,
        help="copy part of a data dir (utils/subset_data_dir.sh)",
        description=(
            "Copy the chosen utterances of SRC to DST, like Kaldi's\n"
            "utils/subset_data_dir.sh; segments, recordings and speaker tables follow.\n"
            "List files hold one id per line (first field; '-' reads stdin). --random\n"
            "picks N utterances; the same --seed gives the same subset."),
        epilog="examples:\n  blspeech subset-data-dir data/train data/train_500 --random 500\n"
               "  blspeech subset-data-dir data/train data/dev_spk --spk-list dev_speakers")
    p.add_argument("src", help="source data dir")
    p.add_argument("dst", help="output data dir (created; its old tables are replaced)")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--utt-list", metavar="FILE", help="keep the utterances listed in FILE")
    how.add_argument("--spk-list", metavar="FILE",
                     help="keep all utterances of the speakers listed in FILE")
    how.add_argument("--first", type=positive, metavar="N", help="the first N utterances")
    how.add_argument("--last", type=positive, metavar="N", help="the last N utterances")
    how.add_argument("--random", type=positive, metavar="N", help="N random utterances")
    p.add_argument("--seed", type=int, default=0, help="random seed for --random (default: 0)")
    p.set_defaults(func=cmd_subset)


def _add_combine_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "combine-data", formatter_class=_RAW,
        help="merge data dirs into one (utils/combine_data.sh)",
        description=(
            "Write the union of the SRC data dirs to DST, like Kaldi's\n"
            "utils/combine_data.sh. Utterance ids must be unique across sources. Files\n"
            "present in only some sources are dropped with a warning (on stderr and in\n"
            "the JSON report)."),
        epilog="example: blspeech combine-data data/train_all data/train_a data/train_b")
    p.add_argument("dst", help="output data dir")
    p.add_argument("srcs", nargs="+", metavar="SRC", help="source data dirs")
    p.set_defaults(func=cmd_combine)


def _add_perturb_speed(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "perturb-speed", formatter_class=_RAW,
        help="3-way speed perturbation of a data dir (perturb_data_dir_speed_3way.sh)",
        description=(
            "Write speed-perturbed copies of SRC to DST, like Kaldi's\n"
            "utils/data/perturb_data_dir_speed_3way.sh: each factor F gives a copy whose\n"
            "utterance, speaker and recording ids start with spF- (sp0.9-, sp1.0-, sp1.1-)\n"
            "and whose audio is a sox pipe ('... speed F |'); segment times and durations\n"
            "are divided by F. feats.scp, cmvn.scp and utt2num_frames are dropped:\n"
            "compute features for DST afterwards."),
        epilog="example: blspeech perturb-speed data/train data/train_sp --factors 0.9,1.0,1.1")
    p.add_argument("src", help="source data dir")
    p.add_argument("dst", help="output data dir")
    p.add_argument("--factors", type=_factors, default=[0.9, 1.0, 1.1], metavar="F,F,...",
                   help="comma-separated speed factors (default: 0.9,1.0,1.1)")
    p.set_defaults(func=cmd_perturb)


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's sub-commands to the ``blspeech`` parser."""
    for add in (_add_validate_data_dir, _add_fix_data_dir, _add_subset_data_dir,
                _add_combine_data, _add_perturb_speed):
        add(sub)
