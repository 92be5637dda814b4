"""Scoring commands: ``score`` (WER/CER with sclite's counts) and ``score-hub5`` (Hub5 /
eval2000 scoring of a CTM against an STM, as Kaldi and NIST hubscr.pl do)."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

from blspeech.cli.common import UserError
from blspeech.scoring.wer import Counts, ScoreResult, UtteranceScore


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


def _jiwer_line(m: dict) -> str:
    return (f"jiwer: WER {m['wer']:.2f}%  MER {m['mer']:.2f}%  WIL {m['wil']:.2f}%  "
            f"[ S {m['substitutions']}, D {m['deletions']}, I {m['insertions']}, "
            f"H {m['hits']} ]  (plain Levenshtein, unit costs: S/D/I can differ from sclite's)")


def _normalizer(args: argparse.Namespace):
    from blspeech.text.tokenizers import HESITATIONS, TextNormalizer

    hesitations: tuple[str, ...] = ()
    if args.hesitations:
        hesitations = HESITATIONS if args.hesitations == "default" else tuple(
            w for w in args.hesitations.replace(",", " ").split() if w)
    if args.case == "keep" and not (args.remove_punctuation or args.remove_tags or hesitations):
        return None
    return TextNormalizer(case=args.case, remove_punctuation=args.remove_punctuation,
                          remove_tags=args.remove_tags, hesitations=hesitations)


def cmd_score(args: argparse.Namespace) -> int:
    from blspeech.scoring.wer import jiwer_cer, jiwer_measures, read_text, read_utt2spk, score

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
    by_jiwer = jiwer_measures(refs, hyps) if args.jiwer else None
    for warning in result.warnings:
        print(f"blspeech score: warning: {warning}", file=sys.stderr)
    if args.json:
        out = result.to_dict(details=args.details, top=args.top)
        out["utt2spk"] = utt2spk_path
        if cer is not None:
            out["cer"] = cer.wer
            out["cer_counts"] = cer.totals().to_dict("char")
            out["cer_jiwer"] = cer_jiwer
        if by_jiwer is not None:
            out["jiwer"] = by_jiwer
        print(json.dumps(out))
    else:
        print(report(result, cer, cer_jiwer, details=args.details, top=args.top))
        if by_jiwer is not None:
            print(_jiwer_line(by_jiwer))
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
    p.add_argument("--jiwer", action="store_true",
                   help="also print jiwer's own WER, MER, WIL and S/D/I (jiwer.process_words "
                   "on the same texts): jiwer aligns with unit costs and knows no optional "
                   "words or alternations, so its S/D/I split (and with those, its totals) "
                   "can differ from sclite's")
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
    _register_hub5(sub)
    _register_compare_wer(sub)


# --- score-hub5 ------------------------------------------------------------------------------


def _subsets(args: argparse.Namespace) -> dict[str, str]:
    from blspeech.scoring.hub5 import DEFAULT_SUBSETS

    out = {} if args.no_default_subsets else dict(DEFAULT_SUBSETS)
    given: set[str] = set()
    for item in args.subset:
        name, sep, regex = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or not regex:
            raise UserError(f"--subset expects NAME=REGEX with a NAME of letters, digits, "
                            f"'_', '.' or '-', got {item!r}")
        if name == "all" or name in given:
            raise UserError(f"--subset {name!r} is given twice (or is 'all', the whole set)")
        given.add(name)
        out[name] = regex
    return out


def hub5_report(results: dict[str, ScoreResult]) -> str:
    """The readable report that ``blspeech score-hub5`` prints and saves."""
    lines = []
    w = max(6, *map(len, results))
    for name, r in results.items():
        lines.append(f"{name:<{w}} {_totals_line('WER', r)}")
    head = (f"{'subset':<{w}} {'#Snt':>6} {'#Wrd':>7} {'Corr':>6} {'Sub':>6} {'Del':>6} "
            f"{'Ins':>6} {'Err':>6} {'S.Err':>6}")
    lines += ["", "Percent of the reference words (sclite's Sum line):", head, "-" * len(head)]
    for name, r in results.items():
        cells = [r.correct, r.substitutions, r.deletions, r.insertions, r.errors]
        pct = [f"{100 * x / r.ref_words:.1f}" if r.ref_words else f"{x}*" for x in cells]
        lines.append(f"{name:<{w}} {r.sentences:>6} {r.ref_words:>7} "
                     + " ".join(f"{p:>6}" for p in pct) + f" {r.ser or 0.0:>6.1f}")
    return "\n".join(lines)


def cmd_score_hub5(args: argparse.Namespace) -> int:
    from blspeech.io.fileio import atomic_write
    from blspeech.scoring.hub5 import ctm_from_utterance_ctm, score_hub5

    stm, glm, ctm_lines, notes = args.stm, args.glm, None, []
    if args.data_dir is not None:
        if not os.path.isdir(args.data_dir):
            raise UserError(f"--data-dir {args.data_dir}: not a directory")
        stm = stm or os.path.join(args.data_dir, "stm")
        default_glm = os.path.join(args.data_dir, "glm")
        glm = glm or (default_glm if os.path.isfile(default_glm) else None)
        try:
            with open(args.ctm, encoding="utf-8") as f:
                utt_lines = f.read().splitlines()
        except OSError as e:
            raise UserError(f"{args.ctm}: cannot read: {e.strerror or e}") from None
        except UnicodeDecodeError as e:
            raise UserError(f"{args.ctm}: not UTF-8 text ({e.reason})") from None
        ctm_lines = ctm_from_utterance_ctm(
            utt_lines, os.path.join(args.data_dir, "segments"),
            os.path.join(args.data_dir, "reco2file_and_channel"), name=args.ctm,
            warnings=notes)
    if stm is None:
        raise UserError("give --stm (or --data-dir with an stm in it)")
    results = score_hub5(stm, args.ctm, glm, _subsets(args), hyp_filter=not args.no_hyp_filter,
                         ctm_lines=ctm_lines)
    warnings = notes + results["all"].warnings
    for warning in warnings[:20]:
        print(f"blspeech score-hub5: warning: {warning}", file=sys.stderr)
    if len(warnings) > 20:
        print(f"blspeech score-hub5: warning: ... and {len(warnings) - 20} more",
              file=sys.stderr)
    setup = {"stm": stm, "ctm": args.ctm, "glm": glm, "data_dir": args.data_dir,
             "hyp_filter": not args.no_hyp_filter}
    report = hub5_report(results)
    if args.out_dir is not None:
        for name, r in results.items():
            with atomic_write(os.path.join(args.out_dir, f"score_{name}.json")) as f:
                json.dump({**setup, "subset": name, **r.to_dict(details=True),
                           "warnings": warnings}, f)
                f.write("\n")
        with atomic_write(os.path.join(args.out_dir, "score_hub5.txt")) as f:
            f.write(report + "\n")
    if args.json:
        print(json.dumps({**setup, "subsets": {name: {**r.totals().to_dict(),
                                                      "per_speaker": r.to_dict()["per_speaker"]}
                                               for name, r in results.items()},
                          "warnings": warnings, "out_dir": args.out_dir}))
    else:
        print(report)
    return 0


_HUB5_DESCRIPTION = (
    "Score a CTM ('file channel start duration word [conf]') against an STM\n"
    "('file channel speaker start end [<label>] words') the way Kaldi's\n"
    "egs/swbd local/score_sclite.sh and NIST's hubscr.pl do (sclite -F -D),\n"
    "counts identical to the NIST tools; by subset too (eval2000: swbd = files\n"
    "sw_*, callhm = files en_*).\n"
    "\n"
    "What is filtered, and why:\n"
    "  * hypothesis (unless --no-hyp-filter, as Kaldi does before hubscr): noise tags\n"
    "    [noise] [laughter] [vocalized-noise], <unk>, hesitations (uh um eh mm hm ah\n"
    "    huh ha er oof hee ach eee ew %hesitation) and fragments (words ending in\n"
    "    '-'). The reference has hesitations and fragments as optional words, so a\n"
    "    recognized one gains nothing while a wrong one costs an insertion; noise\n"
    "    tags are not words.\n"
    "  * both sides, with --glm (NIST's csrfilt.sh -dh): text upper-cased, the GLM's\n"
    "    rules applied (spellings, contractions, hesitations -> %HESITATION; in the\n"
    "    hypothesis a contraction may become alternatives {HE IS / HE HAS}, any of\n"
    "    which may match), hyphens between letters split words ('x-ray' -> 'x ray'),\n"
    "    '(a b)' -> '(a) (b)'. The CTM is rewritten word by word, the STM line by line.\n"
    "  * scoring (sclite): case-insensitive; a reference word in parentheses may be\n"
    "    left out at no cost and counts as correct either way; a fragment 'th-'\n"
    "    matches any word starting 'th'; segments reading\n"
    "    IGNORE_TIME_SEGMENT_IN_SCORING are left out with the words in them.\n"
    "  Hypothesis words go to segments by time: within a file and channel, a word\n"
    "  belongs to the first segment (in time order) that ends after its midpoint;\n"
    "  the last segment takes the rest. CTM words of a file/channel that the STM does\n"
    "  not have are an error.")


def _register_hub5(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score-hub5",
        help="Hub5 (eval2000) WER from an STM and a CTM, as Kaldi + NIST hubscr.pl count it",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_HUB5_DESCRIPTION,
        epilog=(
            "examples:\n"
            "  blspeech score-hub5 --stm data/eval2000/stm --glm data/eval2000/glm \\\n"
            "      --ctm exp/decode/eval2000.ctm --out-dir exp/decode/score\n"
            "  # blspeech decode's per-utterance ctm, times mapped with the data dir's\n"
            "  # segments and reco2file_and_channel (stm and glm taken from it too):\n"
            "  blspeech score-hub5 --data-dir data/eval2000 --ctm exp/decode/ctm --json\n"
            "  blspeech score-hub5 --stm rt03.stm --ctm rt03.ctm --no-default-subsets \\\n"
            "      --subset swbd=^sw_ --subset fsh=^fsh_\n"
            "output (also OUT_DIR/score_hub5.txt; OUT_DIR/score_<subset>.json has every\n"
            "segment's alignment):\n"
            "  all    %WER 18.20 [ 7770 / 42713, 1530 ins, 2201 del, 4039 sub ]"),
    )
    p.add_argument("--stm", help="reference STM (default with --data-dir: DATA_DIR/stm)")
    p.add_argument("--ctm", required=True,
                   help="hypothesis CTM: 'file channel start duration word [conf]', or with "
                   "--data-dir blspeech decode's 'utt 1 start duration word'")
    p.add_argument("--glm", help="NIST GLM mapping file, e.g. en20000405_hub5.glm (default "
                   "with --data-dir: DATA_DIR/glm if present; none: no mapping)")
    p.add_argument("--data-dir", help="Kaldi data dir the CTM was decoded from: its segments "
                   "and reco2file_and_channel turn utterance times into file times")
    p.add_argument("--subset", action="append", default=[], metavar="NAME=REGEX",
                   help="also score the files whose id matches REGEX (Python re.search); "
                   "repeatable; defaults swbd=^sw_ and callhm=^en_")
    p.add_argument("--no-default-subsets", action="store_true",
                   help="only the whole set and the --subset ones")
    p.add_argument("--no-hyp-filter", action="store_true",
                   help="score the hypothesis as it is (no Kaldi noise/hesitation/fragment "
                   "removal)")
    p.add_argument("--out-dir", help="write score_<subset>.json and score_hub5.txt here")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (totals and per-speaker counts per subset)")
    p.set_defaults(func=cmd_score_hub5)


# --- compare-wer ------------------------------------------------------------------------------


def _register_compare_wer(sub: argparse._SubParsersAction) -> None:
    """``compare-wer``: is one system's WER significantly lower? (NIST's MAPSSWE test)"""

    def run(args: argparse.Namespace) -> int:
        from blspeech.scoring.significance import mapsswe
        from blspeech.scoring.wer import read_text

        r = mapsswe(read_text(args.ref), read_text(args.hyp_a), read_text(args.hyp_b))
        verdict = r.verdict(args.alpha)  # checks --alpha before anything is printed
        if args.json:
            print(json.dumps({"ref": args.ref, "hyp_a": args.hyp_a, "hyp_b": args.hyp_b,
                              **r.to_dict(args.alpha)}))
            return 0
        print("\n".join([
            f"A  %WER {_rate(r.wer_a)}  {args.hyp_a}",
            f"B  %WER {_rate(r.wer_b)}  {args.hyp_b}",
            f"MAPSSWE: {r.segments} segments in {r.sentences} utterances (bounded by "
            f"{r.min_good} words both got right)",
            f"  errors per segment, A - B: mean {r.mean:.3f}, std dev {r.std_dev:.3f}",
            f"  Z = {r.z:.3f}, p = {r.p_value:.4g} (two-tailed)",
            f"verdict at alpha {args.alpha:g}: {verdict}"]))
        return 0

    p = sub.add_parser(
        "compare-wer",
        help="is one system significantly better? NIST's matched-pairs (MAPSSWE) test",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Compare two systems' hypotheses of the same test set with NIST's matched-pairs\n"
            "sentence-segment word error test, as SCTK's 'sc_stats -t mapsswe' computes it:\n"
            "each utterance is cut into segments at runs of 2 words both systems got right\n"
            "(sclite's alignment), and Z is the mean per-segment error difference (A - B)\n"
            "over its standard error. |Z| > 1.960 is a difference at the 5% level (two-\n"
            "tailed); the system with fewer errors is the better. As in sc_stats, Z is 0\n"
            "when every segment has the same difference. Files are Kaldi text\n"
            "files ('utt-id word word ...'); both hypotheses must have every reference\n"
            "utterance and no other."),
        epilog=(
            "examples:\n"
            "  blspeech compare-wer data/test/text exp/a/decode/text exp/b/decode/text\n"
            "  blspeech compare-wer ref.txt a.txt b.txt --alpha 0.01 --json\n"
            "report:\n"
            "  A  %WER 12.10  exp/a/decode/text\n"
            "  B  %WER 13.45  exp/b/decode/text\n"
            "  MAPSSWE: 412 segments in 300 utterances (bounded by 2 words both got right)\n"
            "    errors per segment, A - B: mean -0.112, std dev 0.873\n"
            "    Z = -2.604, p = 0.009213 (two-tailed)\n"
            "  verdict at alpha 0.05: A better"),
    )
    p.add_argument("ref", metavar="REF", help="reference transcripts (Kaldi text file)")
    p.add_argument("hyp_a", metavar="HYP_A", help="system A's hypotheses (Kaldi text file)")
    p.add_argument("hyp_b", metavar="HYP_B", help="system B's hypotheses (Kaldi text file)")
    p.add_argument("--alpha", type=float, default=0.05,
                   help="significance level, two-tailed (default: 0.05, as sc_stats)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (wer_a, wer_b, segments, mean, variance, z, "
                   "p_value, verdict, ...)")
    p.set_defaults(func=run)
