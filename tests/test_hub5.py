"""Hub5 scoring against the real NIST SCTK tools (``/usr/lib/sctk/bin``).

The reference pipeline is Kaldi's ``score_sclite.sh`` made of the real parts: Kaldi's greps
on the CTM, ``hubscr.pl sortSTM`` / ``sortCTM`` (hubscr's own sorters), ``csrfilt.sh -dh``
with a GLM, ``sclite -F -D -o rsum``, and ``grep '^sw_'`` / ``grep '^en_'`` for the subsets.
:func:`blspeech.scoring.hub5.score_hub5` must give sclite's counts (sentences, reference words,
correct, S/D/I, errors, sentence errors), in total and per speaker; the GLM filter must
give csrfilt's output line for line; the network alignment must give sclite's steps.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from blspeech.errors import UserError
from blspeech.scoring.hub5 import (
    CtmAlternation,
    CtmWord,
    Glm,
    StmSegment,
    assign_ctm_to_segments,
    ctm_from_utterance_ctm,
    filter_hyp_words,
    read_ctm,
    read_stm,
    score_hub5,
    split_tokens,
)
from blspeech.scoring.wer import Alternation, align, parse_alternation, score

BIN = "/usr/lib/sctk/bin"
ENV = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}  # csrfilt calls rfilter1

# Kaldi's egs/swbd/s5c/local/score_sclite.sh hypothesis filter, verbatim.
KALDI_GREPS = ("grep -i -v -E '\\[NOISE|LAUGHTER|VOCALIZED-NOISE\\]' | grep -i -v -E '<UNK>' | "
               "grep -i -v -E ' (UH|UM|EH|MM|HM|AH|HUH|HA|ER|OOF|HEE|ACH|EEE|EW)$' | "
               "grep -v -- '-$'")

# A small GLM in the Hub5 GLM's style: word-bounded rules, a context-free one, deletions,
# and contractions expanded to alternatives for the hypothesis only.
GLM = """\
;;  File: test_hub5.glm
;;  Desc: Hub5-style rules for the tests
;;
* name "test_hub5.glm"
* desc "The Global Mapping File for the tests"
* format = 'NIST1'
* max_nrules = '100'
* copy_no_hit = 'T'
* case_sensitive = 'F'

;; Hesitation sound mappings
UH      =>  %HESITATION     / [ ] __ [ ] ;; hesitation token
UM      =>  %HESITATION     / [ ] __ [ ] ;; hesitation token
UH-HUH  =>  %BCACK          / [ ] __ [ ] ;; affirmative token
;; Special contractions
GONNA            => GOING TO ;; ISIP doc
ALRIGHT          => ALL RIGHT / [ ] __ [ ]
OKAY             => OK / [ ] __ [ ]
HMM              =>  / [ ] __ [ ]
'CAUSE           => BECAUSE ;; per AHD
;;  INPUT_DEPENDENT_APPLICATION = "ctm|hyp"
[HE'S] => [{HE IS / HE HAS}] / [ ] __ [ ]
[I'D] => [{I HAD / I WOULD}] / [ ] __ [ ]
;;  INPUT_DEPENDENT_APPLICATION = ".*"
[GOOD BY] => [GOOD BYE] / [ ] __ [ ]
"""


def need_sctk() -> None:
    # The comparison is the point: a missing tool fails, never skips.
    for tool in ("sclite", "csrfilt.sh", "rfilter1", "hubscr.pl"):
        if not os.access(os.path.join(BIN, tool), os.X_OK):
            pytest.fail(f"NIST SCTK {tool} not found in {BIN}: run 'make setup' (as root it "
                        "installs the Debian package sctk)")


def csrfilt(kind: str, purpose: str, glm: Path, text: str) -> list[str]:
    need_sctk()
    proc = subprocess.run([f"{BIN}/csrfilt.sh", "-i", kind, "-t", purpose, "-dh", str(glm)],
                          input=text, capture_output=True, text=True, env=ENV, timeout=60,
                          check=True)
    return proc.stdout.splitlines()


def sclite_rsum(stm: Path, ctm: Path, out: Path, name: str) -> dict[str, list[int]]:
    """sclite -F -D's counts per speaker and 'sum': #Snt #Wrd Corr Sub Del Ins Err S.Err."""
    need_sctk()
    proc = subprocess.run([f"{BIN}/sclite", "-r", str(stm), "stm", "-h", str(ctm), "ctm",
                           "-F", "-D", "-o", "rsum", "-O", str(out), "-n", name],
                          capture_output=True, text=True, env=ENV, timeout=60)
    raw = out / f"{name}.raw"
    assert proc.returncode == 0 and raw.exists(), proc.stdout[-500:] + proc.stderr[-500:]
    rows = {}
    for line in raw.read_text().splitlines():
        m = re.match(r"\s*\|\s*(\S+)\s*\|([\d\s]+)\|([\d\s]+)\|", line)
        if m:
            rows[m.group(1).lower()] = list(map(int, (m.group(2) + m.group(3)).split()))
    return rows


def kaldi_hubscr(tmp: Path, stm: str, ctm: str, glm: str | None, subset: str | None,
                 hyp_filter: bool, name: str) -> dict[str, list[int]]:
    """The real tools, as Kaldi's script runs them for one (sub)set."""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "ref.stm").write_text(stm)
    (tmp / "hyp.ctm").write_text(ctm)
    ref, hyp = "cat ref.stm", "cat hyp.ctm"
    if subset:
        ref += f" | grep '{subset}'"
        hyp += f" | grep '{subset}'"
    if hyp_filter:
        hyp += " | " + KALDI_GREPS
    ref += f" | {BIN}/hubscr.pl sortSTM"
    hyp += f" | {BIN}/hubscr.pl sortCTM"
    if glm is not None:
        (tmp / "g.glm").write_text(glm)
        ref += " | csrfilt.sh -i stm -t ref -dh g.glm"
        hyp += " | csrfilt.sh -i ctm -t hyp -dh g.glm"
    need_sctk()
    subprocess.run(f"{ref} > {name}.stm; {hyp} > {name}.ctm", shell=True, cwd=tmp, env=ENV,
                   check=True, timeout=60)
    return sclite_rsum(tmp / f"{name}.stm", tmp / f"{name}.ctm", tmp, name)


COUNTS = ("sentences", "ref_words", "correct", "substitutions", "deletions", "insertions",
          "errors", "sentence_errors")


def assert_same_as_hubscr(tmp: Path, stm: str, ctm: str, glm: str | None,
                          hyp_filter: bool = True) -> dict:
    (tmp / "ours").mkdir(parents=True, exist_ok=True)
    for name, text in (("ref.stm", stm), ("hyp.ctm", ctm), ("g.glm", glm or "")):
        (tmp / "ours" / name).write_text(text)
    ours = score_hub5(tmp / "ours/ref.stm", tmp / "ours/hyp.ctm",
                      tmp / "ours/g.glm" if glm is not None else None, hyp_filter=hyp_filter)
    theirs = {}
    for name, subset in (("all", None), ("swbd", "^sw_"), ("callhm", "^en_")):
        if subset and not re.search(f"(?m){subset}", stm):
            continue
        theirs[name] = kaldi_hubscr(tmp / name, stm, ctm, glm, subset, hyp_filter, name)
    assert set(ours) == set(theirs)
    for name, rows in theirs.items():
        r = ours[name]
        assert [getattr(r, k) for k in COUNTS] == rows["sum"], name
        assert {s.lower(): [getattr(c, k) for k in COUNTS] for s, c in r.per_speaker.items()} \
            == {s: v for s, v in rows.items() if s != "sum"}, name
    return ours


# --- the handmade end-to-end case -----------------------------------------------------------

STM = """\
;; CATEGORY "0" "" ""
;; LABEL "O" "Overall" "Overall"
sw_4390 A sw_4390_A 0.00 3.00 <O,en,M,en-M> uh he's gonna (th-) uh-huh x-ray (um) okay end
sw_4390 A sw_4390_A 3.50 5.00 <O,en,M,en-M> (%hesitation) alright good by
sw_4390 A sw_4390_A 6.00 7.00 <O,en,M,en-M> IGNORE_TIME_SEGMENT_IN_SCORING
sw_4390 A sw_4390_A 7.50 9.00 <O,en,M,en-M> i'd say (hello there) cause
sw_4390 B sw_4390_B 0.50 2.00 <O,en,F,en-F> yes i know
en_4156 A en_4156_A 1.00 2.50 <O,en,F,en-F> so what (uh) we-
en_4156 A en_4156_A 3.00 4.00 <O,en,F,en-F> {right / rite} okay
en_4156 B en_4156_B 0.20 1.00 <O,en,M,en-M> mhm
"""

CTM = """\
sw_4390 A 0.10 0.20 uh
sw_4390 A 0.30 0.20 he's
sw_4390 A 0.50 0.20 going
sw_4390 A 0.70 0.20 to
sw_4390 A 0.90 0.20 the
sw_4390 A 1.10 0.20 uh-huh
sw_4390 A 1.30 0.20 x-ray
sw_4390 A 1.70 0.20 okay
sw_4390 A 2.50 0.20 [noise]
sw_4390 A 2.80 0.40 end
sw_4390 A 3.20 0.20 um
sw_4390 A 3.60 0.20 all
sw_4390 A 3.80 0.20 right
sw_4390 A 4.00 0.30 good
sw_4390 A 4.30 0.30 bye
sw_4390 A 6.20 0.30 garbage
sw_4390 A 7.60 0.20 i'd
sw_4390 A 7.80 0.20 say
sw_4390 A 8.00 0.20 hello
sw_4390 A 8.30 0.20 'cause
sw_4390 A 8.70 0.20 th-
sw_4390 B 0.60 0.20 yes
sw_4390 B 0.90 0.20 <unk>
en_4156 A 1.10 0.20 so
en_4156 A 1.40 0.20 watt
en_4156 A 1.80 0.20 we
en_4156 A 3.10 0.20 rite
en_4156 A 3.40 0.20 ok
en_4156 A 9.00 0.20 late
"""


def test_handmade_hub5_case_matches_sclite(tmp_path):
    ours = assert_same_as_hubscr(tmp_path, STM, CTM, GLM)
    assert set(ours) == {"all", "swbd", "callhm"}
    by_seg = {u.utt: u for u in ours["all"].utterances}
    first = by_seg["sw_4390_A_0.00_3.00"].alignment
    # Hesitations mapped by the GLM; the optional fragment (th-) matches 'the'; the optional
    # (%HESITATION) from (um) is left out at no cost; "he's" in the hypothesis becomes
    # {he is / he has}, which the reference "he's" (not expanded) does not match.
    assert ("C", "(th-)", "the") in first and ("C", "(%hesitation)", "") in first
    assert ("C", "ok", "ok") in first and ("C", "x", "x") in first and ("C", "ray", "ray") in first
    assert ("C", "going", "going") in first and ("C", "%bcack", "%bcack") in first
    # The ignored segment takes 'garbage' out of the scoring; 'late' after the last
    # segment of its channel goes to that segment.
    assert "sw_4390_A_6.00_7.00" not in by_seg
    assert ("I", None, "late") in by_seg["en_4156_A_3.00_4.00"].alignment
    # The reference alternation {right / rite} takes the hypothesis' choice.
    assert ("C", "rite", "rite") in by_seg["en_4156_A_3.00_4.00"].alignment
    assert any("IGNORE_TIME_SEGMENT" in w for w in ours["all"].warnings)
    # A channel without hypothesis words is all deletions.
    assert by_seg["en_4156_B_0.20_1.00"].deletions == 1


def test_handmade_case_without_glm_or_filter_matches_sclite(tmp_path):
    assert_same_as_hubscr(tmp_path / "noglm", STM, CTM, None)
    assert_same_as_hubscr(tmp_path / "nofilter", STM, CTM, GLM, hyp_filter=False)


# --- random end-to-end cases ---------------------------------------------------------------


def random_case(seed: int, confidences: bool) -> tuple[str, str]:
    rng = random.Random(seed)
    ref_words = ["a", "b", "the", "he", "is", "has", "going", "to", "gonna", "he's", "uh",
                 "(uh)", "(um)", "(th-)", "th-", "uh-huh", "x-ray", "okay", "ok", "all",
                 "right", "alright", "i", "had", "i'd", "hmm", "(a b)"]
    hyp_words = ["a", "b", "the", "th", "he", "is", "has", "going", "to", "gonna", "he's",
                 "uh", "um", "th-", "uh-huh", "x-ray", "okay", "ok", "alright", "i'd",
                 "[noise]", "<unk>", "[laughter]", "hmm"]
    stm, ctm = [';; LABEL "O" "Overall" "Overall"'], []
    for f in ("sw_1", "sw_2", "sw_3", "en_1", "en_2"):
        for ch in rng.sample(["A", "B"], rng.randint(1, 2)):
            t = 0.0
            for _ in range(rng.randint(1, 5)):
                t += round(rng.uniform(0, 1.5), 2)
                dur = round(rng.uniform(0.3, 3), 2)
                words = [rng.choice(ref_words) for _ in range(rng.randint(0, 6))]
                if rng.random() < 0.07:
                    words = ["IGNORE_TIME_SEGMENT_IN_SCORING"]
                label = rng.choice(["", " <O>"])
                stm.append(f"{f} {ch} {f}_{ch} {t:.2f} {t + dur:.2f}{label} {' '.join(words)}")
                t += dur
            if rng.random() < 0.9:  # sometimes a channel has no hypothesis at all
                for _ in range(rng.randint(0, 12)):
                    conf = f" {rng.random():.3f}" if confidences and rng.random() < 0.7 else ""
                    ctm.append(f"{f} {ch} {rng.uniform(0, t + 1):.2f} "
                               f"{rng.uniform(0.05, 0.6):.2f} {rng.choice(hyp_words)}{conf}")
    rng.shuffle(ctm)  # hubscr sorts
    return "\n".join(stm) + "\n", "\n".join(ctm) + "\n"


def test_random_cases_match_sclite(tmp_path):
    for seed in range(24):
        # Kaldi's greps only see a hesitation or fragment as the last field, so the cases
        # with confidences run without the hypothesis filter (and exercise csrfilt's
        # confidence handling instead).
        confidences = seed % 2 == 1
        stm, ctm = random_case(seed, confidences)
        assert_same_as_hubscr(tmp_path / str(seed), stm, ctm, None if seed % 6 == 5 else GLM,
                              hyp_filter=not confidences)


# --- the alignment: optional words, fragments, alternations ---------------------------------


def _sgml_steps(text: str) -> dict[str, list]:
    out = {}
    for m in re.finditer(r'<PATH id="\((.*?)\)"[^>]*>\n(.*?)</PATH>', text, re.S):
        steps = []
        for op, r, h in re.findall(r'([CSDI]),("[^"]*")?,("[^"]*")?', m.group(2)):
            steps.append((op, r.strip('"') if r else None, h.strip('"') if h else None))
        out[m.group(1)] = steps
    return out


def test_network_alignment_matches_sclite(tmp_path):
    """Optional words, fragments, '@' and alternations on both sides: sclite's steps."""
    need_sctk()
    rng = random.Random(3)
    ref_vocab = ["a", "b", "c", "(a)", "(b)", "th-", "-b", "(th-)", "@", "the", "ab", "ba"]
    hyp_vocab = ["a", "b", "c", "the", "th", "ab", "ba", "(a)", "th-", "@"]

    def token(vocab, p_alt):
        if rng.random() < p_alt:
            choices = [tuple(rng.choice(vocab) for _ in range(rng.randint(1, 2)))
                       for _ in range(rng.randint(1, 3))]
            return Alternation(tuple(choices))
        return rng.choice(vocab)

    refs = {f"x_{k}": [token(ref_vocab, 0.2) for _ in range(rng.randint(0, 7))]
            for k in range(600)}
    hyps = {u: [token(hyp_vocab, 0.1) for _ in range(rng.randint(0, 7))] for u in refs}
    for name, texts in (("ref.trn", refs), ("hyp.trn", hyps)):
        (tmp_path / name).write_text("".join(f"{' '.join(map(str, t))} ({u})\n"
                                             for u, t in texts.items()))
    subprocess.run([f"{BIN}/sclite", "-s", "-F", "-D", "-r", str(tmp_path / "ref.trn"), "trn",
                    "-h", str(tmp_path / "hyp.trn"), "trn", "-i", "rm", "-o", "rsum", "sgml",
                    "-O", str(tmp_path), "-n", "out"], check=True, capture_output=True,
                   timeout=60)
    theirs = _sgml_steps((tmp_path / "out.sgml").read_text())
    for u in refs:
        # sclite writes the empty partner of a left-out optional word as "".
        expected = [(op, "" if r is None and op == "C" else r, "" if h is None and op == "C"
                     else h) for op, r, h in theirs[u]]
        assert align(refs[u], hyps[u], optional=True, fragments=True) == expected, u
    r = score(refs, hyps, optional=True, fragments=True)
    m = re.search(r"\|\s*Sum\s*\|([\d\s]+)\|([\d\s]+)\|", (tmp_path / "out.raw").read_text())
    assert [getattr(r, k) for k in COUNTS] == list(map(int, (m.group(1) + m.group(2)).split()))


def test_optional_words_and_alternations_count_like_sclite():
    # A left-out optional word is correct and a reference word; so is a matched one.
    r = score({"u": "a (uh) b"}, {"u": "a b"}, optional=True)
    assert (r.correct, r.ref_words, r.errors) == (3, 3, 0)
    r = score({"u": "a (uh) b"}, {"u": "a uh b"}, optional=True)
    assert (r.correct, r.ref_words, r.errors) == (3, 3, 0)
    # Without -D the parentheses are part of the word.
    assert score({"u": "a (uh) b"}, {"u": "a b"}).deletions == 1
    # Only the words of the alternative taken count; '@' counts nothing.
    alt = [parse_alternation("{ x / y z }")]
    assert score({"u": alt}, {"u": ["y", "z"]}).ref_words == 2
    assert score({"u": alt}, {"u": ["x"]}).ref_words == 1
    assert score({"u": ["i", parse_alternation("{ j / @ }"), "k"]}, {"u": ["i", "k"]}) \
        .to_dict()["ref_words"] == 2
    assert align(["(th-)"], ["they"], optional=True, fragments=True) == [("C", "(th-)", "they")]
    assert align(["-ing"], ["going"], fragments=True) == [("C", "-ing", "going")]
    assert align(["th-"], ["they"]) == [("S", "th-", "they")]  # no -F: no fragment matching
    # The plain case keeps the old fast path and tie-breaking.
    assert align(["a", "b"], ["b", "a"], optional=True) == align(["a", "b"], ["b", "a"])


def test_parse_alternation():
    assert parse_alternation("{a / }").choices == (("a",),)  # sclite drops an empty choice
    for bad in ("{ / }", "{a / {b / c}}", "a / b"):
        with pytest.raises(UserError):
            parse_alternation(bad)
    assert split_tokens(" a {b c / d}  e ") == ["a", "{b c / d}", "e"]
    with pytest.raises(UserError, match="closing"):
        split_tokens("a {b / c")


# --- GLM -------------------------------------------------------------------------------------


def test_glm_parsing(tmp_path):
    path = tmp_path / "g.glm"
    path.write_text(GLM)
    glm = Glm.read(path)
    ref, hyp = glm.rules("ref"), glm.rules("hyp")
    assert len(ref) == 9 and len(hyp) == 11  # contractions are for the hypothesis only
    uh = ref[0]
    assert (uh.lhs, uh.rhs, uh.left, uh.right, uh.line) == ("UH", "%HESITATION", " ", " ", 12)
    assert (ref[3].lhs, ref[3].rhs, ref[3].left, ref[3].right) == ("GONNA", "GOING TO", "", "")
    assert ref[6].rhs == "" and ref[6].left == " "  # HMM => (deleted)
    assert hyp[-3].lhs == "HE'S" and hyp[-3].rhs == "{HE IS / HE HAS}"
    assert ref[-1].lhs == "GOOD BY" and ref[-1].rhs == "GOOD BYE"


def test_glm_matches_csrfilt(tmp_path):
    glm_path = tmp_path / "g.glm"
    glm_path.write_text(GLM)
    glm = Glm.read(glm_path)
    ctm = (";; a comment\n" + CTM + "sw_4390 A 9.00 0.40 he's 0.91\nsw_4390 A 9.50 0.20 "
           "hmm 0.5\nsw_4390 A 9.80 0.20 hmm\nsw_4390 A 10.0 0.30 Gonna 0.7\n"
           "sw_4390 A 10.5 0.20 (uh)\nsw_4390 A 11.0 0.20 ba-na-na\n")
    assert glm.filter_ctm_lines(ctm.splitlines()) == csrfilt("ctm", "hyp", glm_path, ctm)
    stm = STM + "sw_4390 A sw_4390_A 9.00 9.50\nen_4156 A en_4156_A 9.0 9.5 (a b c) x--y -z\n"
    assert glm.filter_stm_lines(stm.splitlines()) == csrfilt("stm", "ref", glm_path, stm)
    # What the tool does, spelled out.
    lines = glm.filter_ctm_lines(["f A 1.0 0.4 he's 0.9", "f A 2 0.2 hmm 0.5", "f A 3 1 uh",
                                  "f A 4 1 gonna"])
    assert lines == ["f A * * <ALT_BEGIN>", "f A 1.000 0.200 HE 0.9", "f A 1.200 0.200 IS 0.9",
                     "f A * * <ALT>", "f A 1.000 0.200 HE 0.9", "f A 1.200 0.200 HAS 0.9",
                     "f A * * <ALT_END>",
                     "f A 2 0.2 0.5",  # csrfilt's quirk: the confidence becomes the word
                     "f A 3 1 %HESITATION", "f A 4.000 0.500 GOING", "f A 4.500 0.500 TO"]
    assert glm.apply(["he's", "good", "by", "x-ray", "(uh", "um)"], side="ref") == \
        ["HE'S", "GOOD", "BYE", "X", "RAY", "(%HESITATION)", "(%HESITATION)"]
    # In a CTM each word is filtered alone: the two-word rule never applies.
    assert glm.apply(["he's", "good", "by"], side="hyp") == ["{HE IS / HE HAS}", "GOOD", "BY"]


# Rule forms of NIST's English GLMs (en20030506.glm and kin): one-sided contexts, contexts
# with words, bracketed fields, '@', hyphenated and dotted words, comments after rules.
NIST_STYLE_GLM = """\
;;  File: nist_style.glm
* name "nist_style.glm"
* desc "Rule forms of the NIST English GLMs"
* format = 'NIST1'
* max_nrules = '50'
* copy_no_hit = 'T'
* case_sensitive = 'F'
HUH-UH  =>  %BCNACK    / [ ] __ [ ] ;; negative token
MM-HM   =>  %BCACK     / [ ] __ [ ] ;; affirmative token
[[SILENCE]]     => @ / [ ] __ [ ]
MR.              => MISTER / [ ] __ [ ]
AIN'T            => [ARE NOT] / [ ] __ [ ]
ADVISER          => ADVISOR / [ ] __  ;; avoids misspelling "advisory"
BINYAMIN         => BENJAMIN / __ [ NETANYAHU]
FALKNER          => FAULKNER / [WILLIAM ] __  ;; the writer
T.               => TEE / __ [ SHIRT] ;; with hyphen
FT SE            => FOOTSIE ;; officially spelled w/hyphen
JOHNNY-COME-LATELYS => JOHNNY-COME-LATELIES ;; per AHD
FUNDRAIS         => FUND RAIS ;; applies to fundraiser, fundraising
"""


def test_nist_glm_rule_forms_match_csrfilt(tmp_path):
    glm_path = tmp_path / "nist.glm"
    glm_path.write_text(NIST_STYLE_GLM)
    glm = Glm.read(glm_path)
    stm = ("f A s 0 1 huh-uh mm-hm [silence] mr. smith ain't my adviser advisers\n"
           "f A s 1 2 binyamin netanyahu binyamin said william falkner falkner\n"
           "f A s 2 3 a t. shirt t. ft se johnny-come-latelys fundraising (fundraiser)\n")
    assert glm.filter_stm_lines(stm.splitlines()) == csrfilt("stm", "ref", glm_path, stm)
    words = "huh-uh [silence] mr. ain't advisers binyamin t. fundraising johnny-come-latelys"
    ctm = "".join(f"f A {k}.0 0.5 {w}\n" for k, w in enumerate(words.split()))
    assert glm.filter_ctm_lines(ctm.splitlines()) == csrfilt("ctm", "hyp", glm_path, ctm)
    assert glm.apply("my adviser advisers fundraising", "ref") == \
        ["MY", "ADVISOR", "ADVISORS", "FUND", "RAISING"]


def random_glm(rng: random.Random) -> str:
    words = ["a", "b", "ab", "ba", "uh", "um", "he's", "x-ray", "th-", "-ing", "gonna", "ok"]
    lines = [";; random", "* name 'random'", "* format = 'NIST1'", "* max_nrules = '200'",
             "* copy_no_hit = 'T'", f"* case_sensitive = '{rng.choice('TF')}'"]
    for _ in range(rng.randint(3, 25)):
        lhs = rng.choice([rng.choice(words).upper(), rng.choice(words), "B", "A-", "'S",
                          f"{rng.choice(words).upper()} {rng.choice(words).upper()}"])
        rhs = rng.choice(["", rng.choice(words).upper(), "%HESITATION", "@",
                          f"({rng.choice(words).upper()})",
                          f"{rng.choice(words).upper()} {rng.choice(words).upper()}",
                          f"{{{rng.choice(words).upper()} / {rng.choice(words).upper()} "
                          f"{rng.choice(words).upper()}}}"])
        context = rng.choice(["", " / [ ] __ [ ]", " / [ ] __", " / __ [ ]",
                              " / [X ] __ [ ]", " / [ ] __ [ B]"])
        lhs = f"[{lhs}]" if " " in lhs or rng.random() < 0.3 else lhs
        rhs = f"[{rhs}]" if rhs and (" " in rhs or rng.random() < 0.3) else rhs
        lines.append(f"{lhs} => {rhs}{context}{rng.choice(['', ' ;; why'])}")
        if rng.random() < 0.1:
            section = rng.choice(["ctm|hyp", "stm", ".*", "ref"])
            lines.append(f';;  INPUT_DEPENDENT_APPLICATION = "{section}"')
    return "\n".join(lines) + "\n"


def test_random_glms_match_csrfilt(tmp_path):
    rng = random.Random(5)
    words = ["a", "b", "ab", "ba", "uh", "um", "he's", "x-ray", "th-", "-ing", "gonna", "OK",
             "ba-na", "(a)", "(uh b)"]
    for k in range(12):
        glm_path = tmp_path / f"g{k}.glm"
        glm_path.write_text(random_glm(rng))
        glm = Glm.read(glm_path)
        stm, ctm = [], []
        for s in range(25):
            ws = [rng.choice(words) for _ in range(rng.randint(0, 8))]
            stm.append(f"f{s % 3} A s{s} {s}.0 {s}.5{rng.choice(['', ' <O>'])} {' '.join(ws)}")
            for j, w in enumerate(w for w in ws if "(" not in w):
                conf = rng.choice(["", " 0.5", " 1"])
                ctm.append(f"f{s % 3} A {s + j / 10:.2f} 0.{rng.randint(1, 9)}0 {w}{conf}")
        assert glm.filter_stm_lines(stm) == csrfilt("stm", "ref", glm_path, "\n".join(stm)), k
        assert glm.filter_ctm_lines(ctm) == csrfilt("ctm", "hyp", glm_path, "\n".join(ctm)), k


@pytest.mark.parametrize("text, message", [
    (";;\nX Y\n", "GLM:2: expected 'LHS => RHS .*no '=>'"),
    (";;\n => Y\n", "GLM:2: empty left-hand side"),
    (";;\n  ;; indented comment\n", "GLM:2: a comment must start the line"),
    (";;\n* max_nrules = '1'\nA => B\nC => D\n", "GLM:4: more rules than max_nrules = 1"),
    (";;\n* format = 'NIST2'\nA => B\n", "format 'NIST2' is not supported"),
    (";;\n* case_sensitive F\n", "GLM:2: header line has no quoted value"),
    (';;\n;;  INPUT_DEPENDENT_APPLICATION = "("\n', "GLM:2: bad INPUT_DEPENDENT"),
])
def test_glm_errors(text, message):
    with pytest.raises(UserError, match=message) as e:
        Glm.from_text(text)
    assert "\n" not in str(e.value)


def test_glm_refuses_unbalanced_parentheses():
    glm = Glm.from_text(";;\nA => B\n")
    with pytest.raises(UserError, match="x.stm:3: unbalanced"):
        glm.filter_stm_lines(["f A s 0 1 a", "f A s 1 2 b", "f A s 2 3 (a b"], path="x.stm")


# --- files -----------------------------------------------------------------------------------


def test_read_stm_and_ctm(tmp_path):
    stm = tmp_path / "x.stm"
    stm.write_text(";; c\n\nf A spk 0 1.5 <O,en> a (b) {c / d}\nf B spk2 2 3\n")
    segs = read_stm(stm)
    assert [(s.file, s.channel, s.speaker, s.start, s.end, s.label, s.text) for s in segs] == \
        [("f", "A", "spk", 0.0, 1.5, "<O,en>", "a (b) {c / d}"), ("f", "B", "spk2", 2.0, 3.0,
                                                                  None, "")]
    assert segs[0].tokens() == ["a", "(b)", Alternation((("c",), ("d",)))]
    assert segs[0].where == f"{stm}:3"
    ctm = tmp_path / "x.ctm"
    ctm.write_text(";; c\nf A 0.5 0.2 hi 0.9\nf A * * <ALT_BEGIN>\nf A 1 0.1 he\nf A 1.1 0.1 "
                   "is\nf A * * <ALT>\nf A * * <ALT>\nf A * * <ALT_END>\n")
    words = read_ctm(ctm)
    assert words[0] == CtmWord("f", "A", 0.5, 0.2, "hi", "0.9", f"{ctm}:2")
    alt = words[1]
    assert isinstance(alt, CtmAlternation) and [len(c) for c in alt.choices] == [2, 0, 0]
    assert alt.midpoint == pytest.approx(1.15)


@pytest.mark.parametrize("kind, text, message", [
    ("stm", "f A s 0\n", "x.stm:1: expected 'file channel speaker start end"),
    ("stm", ";;\nf A s zero 1 a\n", "x.stm:2: start time 'zero' is not a number"),
    ("stm", "f A s 0 nan a\n", "x.stm:1: end time 'nan' is not a number"),
    ("stm", "f A s 2 1 a\n", "x.stm:1: end time 1 is before start time 2"),
    ("stm", "f A s 0 1 {a / b\n", "x.stm:1: alternation"),
    ("ctm", "f A 0 1\n", "x.ctm:1: expected 'file channel start duration word"),
    ("ctm", "f A 0 1 a 0.5 extra\n", "x.ctm:1: expected 'file channel"),
    ("ctm", "f A x 1 a\n", "x.ctm:1: start time 'x' is not a number"),
    ("ctm", "f A * * <ALT_BEGIN>\nf A 1 1 a\n", "x.ctm:1: <ALT_BEGIN> without <ALT_END>"),
    ("ctm", "f A * * <ALT_END>\n", "x.ctm:1: <ALT_END> without <ALT_BEGIN>"),
])
def test_bad_lines_name_file_and_line(tmp_path, kind, text, message):
    path = tmp_path / f"x.{kind}"
    path.write_text(text)
    with pytest.raises(UserError, match=re.escape(message)) as e:
        if kind == "stm":
            [s.tokens() for s in read_stm(path)]
        else:
            read_ctm(path)
    assert str(e.value).startswith(str(tmp_path)) and "\n" not in str(e.value)
    path.write_bytes(b"f A s 0 1 caf\xe9\n")
    with pytest.raises(UserError, match="x.*:1: not UTF-8"):
        read_stm(path) if kind == "stm" else read_ctm(path)


# --- assigning words to segments ------------------------------------------------------------


def test_assign_ctm_to_segments():
    segs = [StmSegment("f", "A", "s", 3, 5, "b"), StmSegment("f", "A", "s", 0, 2, "a"),
            StmSegment("F", "B", "t", 0, 1, "c"), StmSegment("f", "A", "s", 6, 7, "d")]
    words = [CtmWord("f", "A", *w) for w in [(9, 0.2, "late"), (0.5, 0.2, "a"),
                                             (1.9, 0.2, "mid-at-end"), (2.5, 0.2, "gap"),
                                             (-1, 0.5, "early")]]
    words.append(CtmWord("f", "b", 0.1, 0.1, "c"))  # file and channel ids ignore case
    got = assign_ctm_to_segments(segs, words)
    assert [[w.word for w in ws] for ws in got] == [
        ["mid-at-end", "gap"], ["early", "a"], ["c"], ["late"]]
    # Without sorting, sclite's greedy reading of the order given: 'late' first stops
    # every segment but the last.
    got = assign_ctm_to_segments(segs, words, sort=False)
    assert [len(ws) for ws in got] == [0, 0, 1, 5]
    alt = CtmAlternation("f", "A", ((CtmWord("f", "A", 1.5, 0.2, "x"),),
                                    (CtmWord("f", "A", 1.5, 1.0, "y"),)))
    assert assign_ctm_to_segments(segs[:2], [alt])[0] == [alt]  # largest midpoint: 2.0
    with pytest.raises(UserError, match="x.ctm:7: file 'g' channel 'A' has no segment"):
        assign_ctm_to_segments(segs, [CtmWord("g", "A", 0, 1, "w", where="x.ctm:7")])


def test_segment_end_is_compared_in_single_precision(tmp_path):
    """Midpoints within a rounding error of a segment end: sclite compares the (double)
    midpoint with the end read as a float; so does assign_ctm_to_segments."""
    import struct

    def f32(x):
        return struct.unpack("<f", struct.pack("<f", x))[0]

    rng = random.Random(0)
    cases = []
    while len(cases) < 80:
        end = round(rng.uniform(0.5, 900), 2)
        dur = round(rng.uniform(0.01, 1.0), 2)
        start = round(end - dur / 2 + rng.choice([0, 0, 0.001, -0.001]), 3)
        if (start + dur / 2 >= end) != (start + dur / 2 >= f32(end)):
            cases.append((f"{start:.3f}", f"{dur:.2f}", f"{end:.2f}"))
    stm = "".join(f"f{i} A s{i} 0.00 {e} w1\nf{i} A s{i} {e} 999.00 w2\n"
                  for i, (_, _, e) in enumerate(cases))
    ctm = "".join(f"f{i} A {s} {d} w2\n" for i, (s, d, _) in enumerate(cases))
    (tmp_path / "e.stm").write_text(stm)
    (tmp_path / "e.ctm").write_text(ctm)
    rows = sclite_rsum(tmp_path / "e.stm", tmp_path / "e.ctm", tmp_path, "e")
    # Where the word goes decides each speaker's counts: in the first segment it is a
    # substitution and w2 a deletion; in the second it is correct and w1 a deletion.
    r = score_hub5(tmp_path / "e.stm", tmp_path / "e.ctm", subsets={})["all"]
    assert {s: [getattr(c, k) for k in COUNTS] for s, c in r.per_speaker.items()} == \
        {s: v for s, v in rows.items() if s != "sum"}
    got = assign_ctm_to_segments(read_stm(tmp_path / "e.stm"), read_ctm(tmp_path / "e.ctm"))
    assert 0 < sum(1 for ws in got[0::2] if ws) < len(cases)  # both ways occur


# --- Kaldi's CTM handling -------------------------------------------------------------------


def test_filter_hyp_words():
    words = [CtmWord("f", "A", 0, 1, w) for w in
             ["[NOISE]", "[laughter]", "[vocalized-noise]", "<UNK>", "uh", "UM", "%HESITATION",
              "th-", "laughter", "so", "x-ray"]]
    words.append(CtmAlternation("f", "A", ((words[0],),)))
    kept = filter_hyp_words(words)
    assert [getattr(w, "word", "alt") for w in kept] == ["laughter", "so", "x-ray", "alt"]
    assert [w.word for w in filter_hyp_words(words[:11], hesitations=(), fragments=False)
            if isinstance(w, CtmWord)] == ["uh", "UM", "%HESITATION", "th-", "laughter", "so",
                                           "x-ray"]


def test_ctm_from_utterance_ctm(tmp_path):
    # Kaldi's own test case of utils/convert_ctm.pl, with and without a confidence.
    assert ctm_from_utterance_ctm(["utt 1 8.0 1.0 word 0.5", "utt 1 8.0 1.0 word"],
                                  {"utt": "reco 10.0 20.0"}, {"reco": "file A"}) == \
        ["file A 18.00 1.00 word 0.5", "file A 18.00 1.00 word"]
    (tmp_path / "segments").write_text("u1 r1 1.5 4.0\nu2 r2 0 3\n")
    (tmp_path / "reco2file_and_channel").write_text("r1 sw_1 A\nr2 sw_1 B\n")
    warnings: list[str] = []
    lines = ctm_from_utterance_ctm(["u2 1 0.125 0.5 hi", "", "u1 1 2.4 0.2 late"],
                                   tmp_path / "segments",
                                   tmp_path / "reco2file_and_channel", warnings=warnings)
    assert lines == ["sw_1 B 0.12 0.50 hi", "sw_1 A 3.90 0.20 late"]
    assert len(warnings) == 1 and "CTM:3" in warnings[0]
    with pytest.raises(UserError, match=r"CTM:1: utterance 'u9' is not in .*segments; "
                                        r".*per-utterance CTM \('utt 1 start duration word"):
        ctm_from_utterance_ctm(["u9 1 0 1 a"], tmp_path / "segments",
                               tmp_path / "reco2file_and_channel")
    for reco in ("sw_1", "r1"):  # a file-level CTM: file (or recording) id, channel
        with pytest.raises(UserError, match=f"CTM:1: '{reco}' is a recording, not an "
                                            "utterance.*file-level CTM"):
            ctm_from_utterance_ctm([f"{reco} A 0 1 a"], tmp_path / "segments",
                                   tmp_path / "reco2file_and_channel")
    (tmp_path / "reco2file_and_channel").write_text("r1 sw_1\n")
    with pytest.raises(UserError, match="reco2file_and_channel:1: expected 3 fields"):
        ctm_from_utterance_ctm([], tmp_path / "segments", tmp_path / "reco2file_and_channel")


# --- command line ----------------------------------------------------------------------------


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "blspeech", "score-hub5", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def hub5_files(tmp_path) -> Path:
    (tmp_path / "ref.stm").write_text(STM)
    (tmp_path / "hyp.ctm").write_text(CTM)
    (tmp_path / "g.glm").write_text(GLM)
    return tmp_path


def test_cli_report_files_and_json(hub5_files):
    d = hub5_files
    proc = run("--stm", "ref.stm", "--ctm", "hyp.ctm", "--glm", "g.glm", "--out-dir", "out",
               cwd=d)
    assert proc.returncode == 0, proc.stderr
    expected = score_hub5(d / "ref.stm", d / "hyp.ctm", d / "g.glm")
    lines = proc.stdout.splitlines()
    r = expected["swbd"]
    assert f"swbd   %WER {r.wer:.2f} [ {r.errors} / {r.ref_words}, {r.insertions} ins, " \
           f"{r.deletions} del, {r.substitutions} sub ]" in lines
    assert [line.split()[0] for line in lines[:3]] == ["all", "swbd", "callhm"]
    assert (d / "out/score_hub5.txt").read_text() == proc.stdout
    saved = json.loads((d / "out/score_callhm.json").read_text())
    assert saved["errors"] == expected["callhm"].errors and saved["subset"] == "callhm"
    assert saved["glm"] == "g.glm" and len(saved["utterances"]) == 3
    assert not [p for p in (d / "out").iterdir() if p.name.startswith(".")]  # no temp files
    assert "IGNORE_TIME_SEGMENT" in proc.stderr and proc.stderr.startswith(
        "blspeech score-hub5: warning:")
    proc = run("--stm", "ref.stm", "--ctm", "hyp.ctm", "--glm", "g.glm", "--json",
               "--no-default-subsets", "--subset", "sw4390=^sw_4390", "--no-hyp-filter", cwd=d)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert list(out["subsets"]) == ["all", "sw4390"] and out["hyp_filter"] is False
    unfiltered = score_hub5(d / "ref.stm", d / "hyp.ctm", d / "g.glm", hyp_filter=False)
    assert out["subsets"]["all"]["errors"] == unfiltered["all"].errors
    assert out["subsets"]["sw4390"]["ref_words"] == unfiltered["swbd"].ref_words


def test_cli_with_data_dir_and_utterance_ctm(hub5_files):
    d = hub5_files
    data = d / "data"
    data.mkdir()
    (data / "stm").write_text(STM)
    (data / "glm").write_text(GLM)
    (data / "segments").write_text("sw_4390-A_0000-0300 sw_4390-A 0.00 3.00\n"
                                   "en_4156-A_0100-0250 en_4156-A 1.00 2.50\n")
    (data / "reco2file_and_channel").write_text("sw_4390-A sw_4390 A\nen_4156-A en_4156 A\n")
    (d / "utt.ctm").write_text("sw_4390-A_0000-0300 1 0.10 0.20 uh\n"
                               "en_4156-A_0100-0250 1 0.10 0.20 so\n")
    proc = run("--data-dir", "data", "--ctm", "utt.ctm", "--json", cwd=d)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    (d / "file.ctm").write_text("sw_4390 A 0.10 0.20 uh\nen_4156 A 1.10 0.20 so\n")
    expected = score_hub5(data / "stm", d / "file.ctm", data / "glm")
    assert out["glm"] == os.path.join("data", "glm")
    assert {k: v["errors"] for k, v in out["subsets"].items()} == \
        {k: r.errors for k, r in expected.items()}
    # A file-level CTM with --data-dir: the message names the file, the line and both forms.
    proc = run("--data-dir", "data", "--ctm", "file.ctm", cwd=d)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "file.ctm:1: 'sw_4390' is a recording, not an utterance" in lines[0], lines[0]
    assert "file-level CTM" in lines[0] and "without --data-dir" in lines[0], lines[0]
    assert "'utt 1 start duration word [confidence]'" in lines[0], lines[0]


def test_cli_user_errors(hub5_files):
    d = hub5_files
    (d / "bad.ctm").write_text("sw_4390 A 0.1 0.2\n")
    (d / "other.ctm").write_text("sw_9999 A 0.1 0.2 hi\n")
    for args, message in [
            (["--ctm", "bad.ctm"], "bad.ctm:1: expected"),
            (["--ctm", "other.ctm"], "other.ctm:1: file 'sw_9999' channel 'A' has no segment"),
            (["--ctm", "missing.ctm"], "missing.ctm: file not found"),
            (["--ctm", "hyp.ctm", "--subset", "x"], "--subset expects NAME=REGEX"),
            (["--ctm", "hyp.ctm", "--subset", "all=^sw"], "--subset 'all'"),
            (["--ctm", "hyp.ctm", "--subset", "x=("], "subset 'x': bad regex")]:
        proc = run("--stm", "ref.stm", *args, cwd=d)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("blspeech score-hub5: error:"), lines
        assert message in lines[0], lines[0]
    proc = run("--ctm", "hyp.ctm", cwd=d)
    assert proc.returncode == 2 and "give --stm" in proc.stderr
    help_text = run("--help").stdout
    for what in ("[noise]", "hesitation", "fragment", "csrfilt", "IGNORE_TIME_SEGMENT",
                 "midpoint", "parentheses", "example"):
        assert what.lower() in help_text.lower(), what
