"""Scoring command: ``score`` (WER/CER with sclite's counts)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from ..score import Counts, ScoreResult, UtteranceScore
from .common import UserError


def _rate(value: float | None) -> str:
    return "UNDEF" if value is None else f"{value:.2f}"


def _totals_line(name: str, c: Counts) -> str:
    # Kaldi compute-wer's line, so existing scripts that grep '%WER' keep working.
    return (f"%{name} {_rate(c.wer)} [ {c.errors} / {c.ref_words}, {c.insertions} ins, "
            f"{c.deletions} del, {c.substitutions} sub ]")


def _speaker_table(result: ScoreResult) -> list[str]:
    # sclite's 'sum' columns; rates in percent of the speaker's reference words.
    w = max([4, *map(len, result.per_speaker)])
    head = (f"{'SPKR':<{w}} {'#Snt':>5} {'#Wrd':>6} {'Corr':>6} {'Sub':>6} {'Del':>6} "
            f"{'Ins':>6} {'Err':>6} {'S.Err':>6}")
    rows = [head, "-" * len(head)]
    table = list(result.per_speaker.items()) + [("Sum", result)]
    for name, c in table:
        if name == "Sum":
            rows.append("-" * len(head))
        cells = [c.correct, c.substitutions, c.deletions, c.insertions, c.errors]
        # Like sclite, a speaker without reference words shows counts, not percents.
        pct = [f"{x}*" if c.ref_words == 0 else f"{100 * x / c.ref_words:.1f}" for x in cells]
        rows.append(f"{name:<{w}} {c.sentences:>5} {c.ref_words:>6} "
                    + " ".join(f"{p:>6}" for p in pct) + f" {c.ser or 0.0:>6.1f}")
    return rows


def _aligned(u: UtteranceScore) -> list[str]:
    """sclite-style REF/HYP/Eval lines, gaps as stars (words keep their case: scoring is
    case-sensitive, so sclite's upper-casing of errors would hide a case error)."""
    ref, hyp, ops = [], [], []
    for op, r, h in u.alignment:
        r = "*" * len(h or "") if r is None else r
        h = "*" * len(r) if h is None else h
        width = max(len(r), len(h), 1)
        ref.append(r.ljust(width))
        hyp.append(h.ljust(width))
        ops.append(("" if op == "C" else op).ljust(width))
    missing = " (no hypothesis)" if u.missing else ""
    return [f"{u.utt}{missing}: {u.errors} errors "
            f"({u.substitutions} sub, {u.deletions} del, {u.insertions} ins)",
            "  REF:  " + " ".join(ref), "  HYP:  " + " ".join(hyp),
            "  Eval: " + " ".join(ops).rstrip()]


def report(result: ScoreResult, cer: ScoreResult | None, cer_jiwer: float | None,
           *, details: bool = False, top: int = 10) -> str:
    """The readable report that ``blspeech score`` prints by default."""
    lines = [_totals_line("WER", result),
             f"%SER {_rate(result.ser)} [ {result.sentence_errors} / {result.sentences} ]",
             f"Scored {result.sentences} sentences, {len(result.missing)} not present in hyp."]
    if cer is not None:
        lines.append(_totals_line("CER", cer) + "  (sclite -c: spaces removed)")
        lines.append(f"%CER {_rate(cer_jiwer)} jiwer-style (spaces count, unit costs)")
    lines.append("")
    if result.per_speaker:
        lines += ["Per speaker (percent of reference words):", *_speaker_table(result), ""]
    else:
        lines += ["Per speaker: no utt2spk (pass --utt2spk)", ""]
    conf = result.confusions(top)
    lines.append(f"Top substitutions (ref -> hyp), of {sum(result.substitution_pairs.values())}:")
    lines += [f"  {c:>5}  {r} -> {h}" for r, h, c in conf["substitutions"]] or ["  none"]
    for key, title in (("insertions", "Top insertions"), ("deletions", "Top deletions")):
        total = sum((result.inserted if key == "insertions" else result.deleted).values())
        lines.append(f"{title}, of {total}:")
        lines += [f"  {c:>5}  {w}" for w, c in conf[key]] or ["  none"]
    if details:
        lines += ["", "Aligned errors (utterances with errors):"]
        for u in result.utterances:
            if u.errors:
                lines += _aligned(u)
    return "\n".join(lines)


def _normalizer(args: argparse.Namespace):
    from ..text import HESITATIONS, TextNormalizer

    hesitations: tuple[str, ...] = ()
    if args.hesitations:
        hesitations = HESITATIONS if args.hesitations == "default" else tuple(
            w for w in args.hesitations.replace(",", " ").split() if w)
    if args.case == "keep" and not (args.remove_punctuation or args.remove_tags or hesitations):
        return None
    return TextNormalizer(case=args.case, remove_punctuation=args.remove_punctuation,
                          remove_tags=args.remove_tags, hesitations=hesitations)


def cmd_score(args: argparse.Namespace) -> int:
    from ..score import jiwer_cer, read_text, read_utt2spk, score

    if args.top < 0:
        raise UserError(f"--top must be 0 or more, got {args.top}")
    refs, hyps = read_text(args.ref), read_text(args.hyp)
    normalize = _normalizer(args)
    if normalize is not None:  # the same hook on both sides
        refs = {u: normalize(" ".join(w)).split() for u, w in refs.items()}
        hyps = {u: normalize(" ".join(w)).split() for u, w in hyps.items()}
    utt2spk_path = args.utt2spk
    if utt2spk_path is None and os.path.basename(args.ref) == "text":
        # Kaldi data dir: its utt2spk is the speaker map, as in Kaldi's scoring scripts.
        guess = os.path.join(os.path.dirname(args.ref), "utt2spk")
        utt2spk_path = guess if os.path.isfile(guess) else None
    utt2spk = read_utt2spk(utt2spk_path) if utt2spk_path else None
    result = score(refs, hyps, utt2spk=utt2spk)
    cer = score(refs, hyps, unit="char") if args.cer else None
    cer_jiwer = jiwer_cer(refs, hyps) if args.cer else None
    for warning in result.warnings:
        print(f"blspeech score: warning: {warning}", file=sys.stderr)
    if args.json:
        out = result.to_dict(details=args.details, top=args.top)
        out["utt2spk"] = utt2spk_path
        if cer is not None:
            out["cer"] = cer.wer
            out["cer_counts"] = cer.totals().to_dict("char")
            out["cer_jiwer"] = cer_jiwer
        print(json.dumps(out))
    else:
        print(report(result, cer, cer_jiwer, details=args.details, top=args.top))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add this module's sub-commands to the ``blspeech`` parser."""
    p = sub.add_parser(
        "score",
        help="word (and character) error rates, identical to NIST sclite's counts",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Score a hypothesis 'text' file against a reference one (Kaldi format:\n"
            "'utt-id word word ...'; an id alone is an empty transcript).\n"
            "Counts are NIST sclite's (sclite -s, trn format): weighted alignment (sub 4,\n"
            "ins 3, del 3) with sclite's tie-breaking, so S/D/I can differ from jiwer's.\n"
            "A reference utterance without hypothesis counts as all deletions (warning);\n"
            "a hypothesis utterance not in the reference is an error."),
        epilog=(
            "examples:\n"
            "  blspeech score --ref data/test/text --hyp exp/decode/text\n"
            "  blspeech score --ref data/test/text --hyp exp/decode/text --cer --json\n"
            "  blspeech score --ref ref.txt --hyp hyp.txt --utt2spk utt2spk --details\n"
            "default report:\n"
            "  %WER 12.34 [ 10 / 81, 2 ins, 3 del, 5 sub ]\n"
            "  %SER 50.00 [ 2 / 4 ]\n"
            "  ... per-speaker table, top confusions"),
    )
    p.add_argument("--ref", required=True, help="reference transcripts (Kaldi text file)")
    p.add_argument("--hyp", required=True, help="hypothesis transcripts (Kaldi text file)")
    p.add_argument("--utt2spk", help="utterance-to-speaker map for the per-speaker table "
                   "(default: utt2spk next to REF when REF is a data dir's 'text')")
    p.add_argument("--cer", action="store_true",
                   help="also the character error rate: sclite -c (characters of the words, "
                   "spaces removed) and jiwer's (spaces count)")
    p.add_argument("--json", action="store_true",
                   help="print only one JSON object (wer, substitutions, deletions, "
                   "insertions, ref_words, sentences, sentence_errors, ser, per_speaker, ...)")
    p.add_argument("--details", action="store_true",
                   help="add each utterance's alignment (with --json: all utterances)")
    p.add_argument("--top", type=int, default=10,
                   help="how many of the most frequent confusions to list (default: 10)")
    norm = p.add_argument_group(
        "normalization", "applied the same way to reference and hypothesis before scoring")
    norm.add_argument("--case", choices=("keep", "lower", "upper"), default="keep",
                      help="case folding (default: keep, i.e. case-sensitive like Kaldi)")
    norm.add_argument("--remove-punctuation", action="store_true",
                      help="drop punctuation (apostrophes inside words stay)")
    norm.add_argument("--remove-tags", action="store_true",
                      help="drop bracketed tokens such as [noise], [laughter], <unk>")
    norm.add_argument("--hesitations", metavar="WORDS",
                      help="drop these words (comma-separated), or 'default' for "
                      "uh,um,uhm,er,ah,eh,hm,hmm,mm")
    p.set_defaults(func=cmd_score)
