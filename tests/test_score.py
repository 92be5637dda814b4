"""Scoring against the real NIST sclite binary: totals, speakers, alignments, confusions.

Every comparison runs ``sclite -s`` (case-sensitive, as we are) on trn files written from
the same transcripts. sclite's ``-i rm`` ids take the speaker from the text before the
first ``_`` or ``-`` (lower-cased without ``-s``), so utterance number ``k`` of speaker
``spk`` (from our utt2spk) is written as ``(spk_k)``; speakers here are lower-case names
without ``_``/``-``.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import jiwer
import pytest

from blspeech.errors import UserError
from blspeech.scoring.wer import align, jiwer_cer, jiwer_measures, read_text, read_utt2spk, score

SCLITE = "/usr/lib/sctk/bin/sclite"


def need_sclite() -> None:
    # The comparison is the point of these tests: a missing binary fails, never skips.
    if not os.access(SCLITE, os.X_OK):
        pytest.fail(f"NIST sclite not found at {SCLITE}: run 'make setup' (as root it "
                    "installs the Debian package sctk)")


def sclite(tmp: Path, refs: dict, hyps: dict, utt2spk: dict | None = None,
           char: bool = False) -> dict:
    """Run sclite; its per-speaker/Sum counts, per-utterance steps and confusion counts."""
    need_sclite()
    trn_id = {u: f"{(utt2spk or {}).get(u, 'x')}_{k}" for k, u in enumerate(refs)}
    back = {v: k for k, v in trn_id.items()}
    tmp.mkdir(parents=True, exist_ok=True)

    def trn(name: str, texts: dict) -> str:
        path = tmp / name
        path.write_text("".join(f"{' '.join(_words(t))} ({trn_id[u]})\n"
                                for u, t in texts.items()), encoding="utf-8")
        return str(path)

    cmd = [SCLITE, "-s", "-e", "utf-8", "-r", trn("ref.trn", refs), "trn",
           "-h", trn("hyp.trn", hyps), "trn", "-i", "rm", "-o", "rsum", "sgml", "dtl",
           "-O", str(tmp), "-n", "out"]
    if char:
        cmd.append("-c")
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60)
    out = {ext: (tmp / f"out.{ext}").read_text(encoding="utf-8")
           for ext in ("raw", "sgml", "dtl")}
    return {"speakers": _parse_raw(out["raw"]),
            "steps": {back[u]: s for u, s in _parse_sgml(out["sgml"])},
            "confusions": _parse_dtl(out["dtl"])}


def _words(text) -> list[str]:
    return text.split() if isinstance(text, str) else list(text)


def _parse_raw(text: str) -> dict:
    """``| spk | #snt #wrd | C S D I Err S.Err |`` rows of ``-o rsum`` (counts, not %)."""
    rows = {}
    for line in text.splitlines():
        m = re.match(r"\s*\|\s*(\S+)\s*\|([\d\s]+)\|([\d\s]+)\|\s*$", line)
        if m:
            snt, wrd = map(int, m.group(2).split())
            c, s, d, i, err, serr = map(int, m.group(3).split())
            rows[m.group(1)] = dict(sentences=snt, ref_words=wrd, correct=c, substitutions=s,
                                    deletions=d, insertions=i, errors=err,
                                    sentence_errors=serr)
    return rows


def _parse_sgml(text: str):
    for m in re.finditer(r'<PATH id="\((.*?)\)"[^>]*>\n(.*?)</PATH>', text, re.S):
        steps = []
        for item in filter(None, m.group(2).strip().split(":")):
            op, r, h = item.split(",")
            steps.append((op, r.strip('"') or None, h.strip('"') or None))
        yield m.group(1), steps


def _parse_dtl(text: str) -> dict:
    """Counts in the CONFUSION PAIRS, INSERTIONS and DELETIONS sections of ``-o dtl``."""
    out: dict[str, dict] = {}
    section = None
    for line in text.splitlines():
        head = re.match(r"(CONFUSION PAIRS|INSERTIONS|DELETIONS|SUBSTITUTIONS)\s+Total", line)
        if head:
            section = head.group(1)
            out[section] = {}
            continue
        m = re.match(r"\s*\d+:\s+(\d+)\s+->\s+(.*\S)\s*$", line)
        if m and section:
            key = tuple(m.group(2).split(" ==> ")) if section == "CONFUSION PAIRS" \
                else m.group(2)
            out[section][key] = int(m.group(1))
    return out


def assert_same_as_sclite(tmp: Path, refs: dict, hyps: dict, utt2spk: dict | None = None,
                          char: bool = False) -> None:
    # sclite leaves out references without hypothesis; we count them as empty ones.
    full = {u: hyps.get(u, "") for u in refs}
    theirs = sclite(tmp, refs, full, utt2spk, char)
    ours = score(refs, hyps, utt2spk=utt2spk, unit="char" if char else "word")
    keys = ["sentences", "ref_words", "correct", "substitutions", "deletions", "insertions",
            "errors", "sentence_errors"]
    assert {k: getattr(ours, k) for k in keys} == theirs["speakers"]["Sum"]
    if utt2spk:
        assert {s: {k: getattr(c, k) for k in keys} for s, c in ours.per_speaker.items()} \
            == {s: v for s, v in theirs["speakers"].items() if s != "Sum"}
    assert {u.utt: u.alignment for u in ours.utterances} == theirs["steps"]
    conf = theirs["confusions"]
    assert dict(ours.substitution_pairs) == conf["CONFUSION PAIRS"]
    assert dict(ours.inserted) == conf["INSERTIONS"]
    assert dict(ours.deleted) == conf["DELETIONS"]


def random_corpus(seed: int, n: int, vocab: list[str], max_len: int = 12):
    """Refs and hyps that collide a lot: edited refs, unrelated hyps, empty ones."""
    rng = random.Random(seed)
    refs, hyps, utt2spk = {}, {}, {}
    for k in range(n):
        utt = f"spk{k % 5}-utt{k:04d}"
        ref = [rng.choice(vocab) for _ in range(rng.randint(0, max_len))]
        if rng.random() < 0.6:
            hyp = []
            for w in ref:  # a recognizer's errors: substitutions, deletions, insertions
                x = rng.random()
                if x < 0.15:
                    hyp.append(rng.choice(vocab))
                elif x > 0.9:
                    hyp += [w, rng.choice(vocab)]
                elif x > 0.08:
                    hyp.append(w)
        else:
            hyp = [rng.choice(vocab) for _ in range(rng.randint(0, max_len))]
        refs[utt], hyps[utt], utt2spk[utt] = " ".join(ref), hyp, f"spk{k % 5}"
    return refs, hyps, utt2spk


def test_random_corpus_matches_sclite(tmp_path):
    for seed, vocab in enumerate([["a", "b"], ["a", "b", "c"], ["yes", "no", "maybe", "uh"]]):
        refs, hyps, utt2spk = random_corpus(seed, 300, vocab)
        assert_same_as_sclite(tmp_path / str(seed), refs, hyps, utt2spk)


def test_long_utterances_match_sclite(tmp_path):
    refs, hyps, utt2spk = random_corpus(7, 60, ["a", "b", "c", "d"], max_len=60)
    assert_same_as_sclite(tmp_path, refs, hyps, utt2spk)


CRAFTED = {  # utt: (ref, hyp)
    "empty-hyp": ("a b c", ""),
    "empty-ref": ("", "a b"),
    "both-empty": ("", ""),
    "longer-hyp": ("a b", "a a b b c c"),
    "repeated": ("the the the the", "the the"),
    "repeated-hyp": ("a", "a a a a"),
    "all-insertions": ("", "x y z x y z"),
    "single-correct": ("yes", "yes"),
    "single-sub": ("yes", "no"),
    "single-del-ins": ("yes", "no yes"),
    "swap": ("a b", "b a"),  # D C I (cost 6), not two substitutions (cost 8)
    "shift": ("a b c d", "b c d e"),
    "rotate": ("a b c", "c a b"),
    "palindrome": ("a b a b a", "b a b a b"),
    "weighted-total": ("b b b b a b a a b", "a a a b b a"),  # 7 errors here, 6 in jiwer
    "case": ("Yes no", "yes No"),
}


def test_crafted_cases_match_sclite(tmp_path):
    refs = {u: r for u, (r, _) in CRAFTED.items()}
    hyps = {u: h for u, (_, h) in CRAFTED.items()}
    assert_same_as_sclite(tmp_path, refs, hyps)
    utts = {u.utt: u for u in score(refs, hyps).utterances}
    assert utts["swap"].alignment == [("D", "a", None), ("C", "b", "b"), ("I", None, "a")]
    assert (utts["both-empty"].errors, utts["both-empty"].sentence_errors) == (0, 0)
    assert utts["empty-ref"].insertions == 2 and utts["empty-ref"].sentence_errors == 1
    assert utts["case"].substitutions == 2
    # The weighted alignment can cost more errors than the unit-cost edit distance.
    ref, hyp = CRAFTED["weighted-total"]
    out = jiwer.process_words(ref, hyp)
    assert utts["weighted-total"].errors == 7
    assert out.substitutions + out.deletions + out.insertions == 6


def test_empty_reference_corpus_has_undefined_rates():
    r = score({"u1": "", "u2": ""}, {"u1": "a b", "u2": ""})
    assert (r.ref_words, r.insertions, r.wer, r.sentence_errors, r.ser) == (0, 2, None, 1, 50.0)
    assert score({}, {}).wer is None and score({}, {}).ser is None


def test_align_examples():
    assert align([], []) == []
    assert align(["a"], []) == [("D", "a", None)]
    assert align([], ["a"]) == [("I", None, "a")]
    # Tie between S+D and D+S: sclite substitutes the later word, deletes the earlier one.
    assert align(["ab", "cd"], ["abcd"]) == [("D", "ab", None), ("S", "cd", "abcd")]


def test_characters_match_sclite_c(tmp_path):
    vocab = ["ab", "ba", "abc", "c", "cab", "bb"]
    refs, hyps, utt2spk = random_corpus(11, 150, vocab, max_len=6)
    refs.update({"x-0": "ab cd", "x-1": "", "x-2": "hello world", "x-3": "héllo wörld",
                 "x-4": "a-b"})
    hyps.update({"x-0": "abcd", "x-1": "a b", "x-2": "helo wrld x", "x-3": "hello wörd",
                 "x-4": "ab"})
    utt2spk.update({u: "x" for u in ("x-0", "x-1", "x-2", "x-3", "x-4")})
    assert_same_as_sclite(tmp_path, refs, hyps, utt2spk, char=True)
    r = score(refs, hyps, unit="char")
    utts = {u.utt: u for u in r.utterances}
    assert utts["x-0"].errors == 0  # spaces are not characters for sclite -c
    assert utts["x-3"].substitutions == 1 and utts["x-4"].deletions == 1  # é->e, hyphen
    assert r.ref_words == sum(len(t.replace(" ", "")) for t in refs.values())


def test_jiwer_cer_is_jiwer():
    refs, hyps, _ = random_corpus(5, 200, ["ab", "ba", "abc", "c"], max_len=6)
    hyps = {u: " ".join(h) for u, h in hyps.items()}
    expected = 100 * jiwer.cer(list(refs.values()), [hyps[u] for u in refs])
    assert jiwer_cer(refs, hyps) == pytest.approx(expected)
    assert jiwer_cer({"u": "ab cd"}, {"u": "abcd"}) == pytest.approx(20.0)
    # Where the two definitions differ: sclite -c has no space to delete.
    assert score({"u": "ab cd"}, {"u": "abcd"}, unit="char").wer == 0.0


def test_missing_hypothesis_counts_as_deletions(tmp_path):
    refs = {"s1-a": "a b c", "s1-b": "d e", "s2-c": "f"}
    hyps = {"s1-a": "a b c", "s2-c": "f"}
    utt2spk = {"s1-a": "s1", "s1-b": "s1", "s2-c": "s2"}
    r = score(refs, hyps, utt2spk=utt2spk)
    assert (r.deletions, r.ref_words, r.sentence_errors, r.missing) == (2, 6, 1, ["s1-b"])
    assert r.per_speaker["s1"].deletions == 2 and r.per_speaker["s2"].errors == 0
    assert len(r.warnings) == 1 and "s1-b" in r.warnings[0] and "deletion" in r.warnings[0]
    assert r.utterances[1].missing
    # Same as sclite given an explicit empty hypothesis (sclite itself drops the utterance).
    assert_same_as_sclite(tmp_path / "explicit", refs, hyps, utt2spk)
    dropped = sclite(tmp_path / "dropped", refs, hyps, utt2spk)["speakers"]["Sum"]
    assert dropped["ref_words"] == 4 and dropped["deletions"] == 0


def test_unknown_hypothesis_is_an_error(tmp_path):
    refs, hyps = {"u1": "a b"}, {"u1": "a b", "ghost": "x"}
    with pytest.raises(UserError, match="'ghost'.*not in the reference"):
        score(refs, hyps)
    with pytest.raises(UserError, match="ghost"):
        jiwer_cer(refs, hyps)
    # sclite refuses too.
    need_sclite()
    (tmp_path / "r.trn").write_text("a b (s_1)\n")
    (tmp_path / "h.trn").write_text("a b (s_1)\nx (s_2)\n")
    proc = subprocess.run([SCLITE, "-r", str(tmp_path / "r.trn"), "trn", "-h",
                           str(tmp_path / "h.trn"), "trn", "-i", "rm", "-o", "sum", "stdout"],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "Missing" in proc.stderr


def test_speaker_and_unit_errors():
    with pytest.raises(UserError, match="'u2'.*no speaker"):
        score({"u1": "a", "u2": "b"}, {}, utt2spk={"u1": "s"})
    with pytest.raises(UserError, match="unit"):
        score({"u1": "a"}, {}, unit="phone")


def test_read_text_and_utt2spk(tmp_path):
    text = tmp_path / "text"
    text.write_text("u2 hello   world\nu1\nu3 x\n")
    assert read_text(text) == {"u2": ["hello", "world"], "u1": [], "u3": ["x"]}
    assert list(read_text(text)) == ["u2", "u1", "u3"]  # file order, unsorted is fine
    text.write_text("u1 a\nu2 b\nu1 c\n")
    with pytest.raises(UserError, match=r"text:3: ") as e:
        read_text(text)
    assert "duplicate" in str(e.value) and "'u1'" in str(e.value) and "line 1" in str(e.value)
    with pytest.raises(UserError, match="not found"):
        read_text(tmp_path / "nope")
    spk = tmp_path / "utt2spk"
    spk.write_text("u1 s1\nu2 s2\n")
    assert read_utt2spk(spk) == {"u1": "s1", "u2": "s2"}
    spk.write_text("u1 s1\nu2 s2 extra\n")
    with pytest.raises(UserError, match="utt2spk:2"):
        read_utt2spk(spk)


def test_confusions_are_most_frequent_first():
    r = score({"u1": "a b a b c", "u2": "a"}, {"u1": "x b x b c d", "u2": "y"})
    conf = r.confusions(top=1)
    assert conf == {"substitutions": [("a", "x", 2)], "insertions": [("d", 1)],
                    "deletions": []}
    assert r.confusions()["substitutions"] == [("a", "x", 2), ("a", "y", 1)]


# --- command line --------------------------------------------------------------------------


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "blspeech", "score", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def data_dir(tmp_path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    (d / "text").write_text("s1-u1 a b c\ns1-u2 a b\ns2-u3\ns2-u4 hello world\n")
    (d / "utt2spk").write_text("s1-u1 s1\ns1-u2 s1\ns2-u3 s2\ns2-u4 s2\n")
    (tmp_path / "hyp").write_text("s1-u2 b a\ns1-u1 a x c d\ns2-u3 uh\n")
    return tmp_path


def test_cli_json_is_one_object(data_dir):
    proc = run("--ref", "data/text", "--hyp", "hyp", "--json", "--cer", cwd=data_dir)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    refs, hyps = read_text(data_dir / "data/text"), read_text(data_dir / "hyp")
    expected = score(refs, hyps, utt2spk=read_utt2spk(data_dir / "data/utt2spk"))
    for key in ("wer", "substitutions", "deletions", "insertions", "ref_words", "sentences",
                "sentence_errors", "ser"):
        assert out[key] == getattr(expected, key), key
    assert (out["substitutions"], out["deletions"], out["insertions"]) == (1, 3, 3)
    assert set(out["per_speaker"]) == {"s1", "s2"}  # utt2spk found next to data/text
    assert out["per_speaker"]["s2"]["deletions"] == 2
    assert out["cer"] == score(refs, hyps, unit="char").wer
    assert out["cer_jiwer"] == pytest.approx(jiwer_cer(refs, hyps))
    assert out["missing"] == ["s2-u4"]
    assert proc.stderr.startswith("blspeech score: warning: 1 of 4") and "s2-u4" in proc.stderr


def test_cli_report(data_dir):
    proc = run("--ref", "data/text", "--hyp", "hyp", "--details", cwd=data_dir)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "%WER 100.00 [ 7 / 7, 3 ins, 3 del, 1 sub ]"
    assert lines[1] == "%SER 100.00 [ 4 / 4 ]"
    assert "s1 " in proc.stdout and "Top substitutions" in proc.stdout
    assert "  REF:  a b c *" in lines and "  HYP:  a x c d" in lines
    assert "  Eval:   S   I" in lines
    # Without utt2spk (ref not named 'text'): no per-speaker table, still a report.
    (data_dir / "ref").write_text((data_dir / "data/text").read_text())
    proc = run("--ref", "ref", "--hyp", "hyp", cwd=data_dir)
    assert proc.returncode == 0 and "no utt2spk" in proc.stdout


def test_cli_user_errors(data_dir):
    (data_dir / "bad").write_text("s1-u1 a\nghost b\n")
    for args in (["--hyp", "bad"], ["--hyp", "missing-file"], ["--hyp", "hyp", "--top", "-1"],
                 ["--hyp", "hyp", "--utt2spk", "hyp"]):
        proc = run("--ref", "data/text", *args, cwd=data_dir)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.startswith("blspeech score: error:"), proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert "ghost" in run("--ref", "data/text", "--hyp", "bad", cwd=data_dir).stderr
    help_text = run("--help").stdout
    assert "example" in help_text and "blspeech score --ref" in help_text


def test_cli_normalization_hooks_apply_to_both_sides(tmp_path):
    ref, hyp = tmp_path / "ref", tmp_path / "hyp"
    ref.write_text("u1 UH I think [noise] so\nu2 Hello, World\n")
    hyp.write_text("u1 i think so um\nu2 hello word\n")
    raw = json.loads(run("--ref", str(ref), "--hyp", str(hyp), "--json").stdout)
    normed = json.loads(run("--ref", str(ref), "--hyp", str(hyp), "--json", "--case", "lower",
                            "--remove-punctuation", "--remove-tags",
                            "--hesitations", "default").stdout)
    assert raw["errors"] > normed["errors"]
    assert (normed["ref_words"], normed["errors"], normed["substitutions"]) == (5, 1, 1)


def test_jiwer_measures_are_jiwers_own_numbers():
    refs, hyps, _ = random_corpus(7, 40, ["a", "b", "c", "d"])
    got = jiwer_measures(refs, hyps)
    out = jiwer.process_words([" ".join(_words(refs[u])) for u in refs],
                              [" ".join(_words(hyps.get(u, ""))) for u in refs])
    assert got["wer"] == pytest.approx(100 * out.wer)
    assert got["mer"] == pytest.approx(100 * out.mer)
    assert got["wil"] == pytest.approx(100 * out.wil)
    assert (got["substitutions"], got["deletions"], got["insertions"], got["hits"]) == (
        out.substitutions, out.deletions, out.insertions, out.hits)


def test_score_jiwer_prints_both_when_their_alignments_differ(tmp_path):
    # sclite: 'c' deleted, 'a' correct, 'd' inserted (costs 3 + 3 < two substitutions' 8);
    # jiwer's unit costs make it two substitutions. The same 2 errors either way.
    (tmp_path / "ref").write_text("u1 c a\n")
    (tmp_path / "hyp").write_text("u1 a d\n")
    proc = run("--ref", "ref", "--hyp", "hyp", "--jiwer", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "%WER 100.00 [ 2 / 2, 1 ins, 1 del, 0 sub ]" in proc.stdout
    assert "jiwer: WER 100.00%" in proc.stdout and "S 2, D 0, I 0, H 0" in proc.stdout
    proc = run("--ref", "ref", "--hyp", "hyp", "--jiwer", "--json", cwd=tmp_path)
    out = json.loads(proc.stdout)
    assert out["jiwer"]["substitutions"] == 2 and out["jiwer"]["wer"] == pytest.approx(100.0)
    assert (out["substitutions"], out["deletions"], out["insertions"]) == (0, 1, 1)
