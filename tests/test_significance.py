"""The MAPSSWE test of blspeech.scoring.significance against NIST SCTK's own ``sc_stats``.

Each comparison writes the same transcripts as trn files, aligns both systems with the real
``sclite -s -o sgml`` and runs ``sc_stats -p -t mapsswe -v`` on the two alignments; we
then expect its segment count, error totals, mean, standard deviation, Z (all printed with 3
decimals) and decision. Those tests skip when SCTK is not installed (``make setup``
installs the Debian package sctk).
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from blspeech.errors import UserError
from blspeech.scoring.significance import mapsswe


def _sctk(name: str) -> str | None:
    path = shutil.which(name) or f"/usr/lib/sctk/bin/{name}"
    return path if os.access(path, os.X_OK) else None


SCLITE, SC_STATS = _sctk("sclite"), _sctk("sc_stats")
need_sctk = pytest.mark.skipif(SCLITE is None or SC_STATS is None,
                               reason="NIST SCTK (sclite, sc_stats) is not installed")


def _sgml(tmp: Path, refs: dict, a: dict, b: dict) -> str:
    """sclite's alignments of systems sysA and sysB, concatenated as sc_stats reads them."""
    tmp.mkdir(parents=True, exist_ok=True)
    ids = {u: f"x_{k}" for k, u in enumerate(refs)}  # -i rm: speaker 'x', utterance k

    def trn(name: str, texts: dict) -> str:
        (tmp / name).write_text("".join(f"{texts[u]} ({ids[u]})\n" for u in refs),
                                encoding="utf-8")
        return str(tmp / name)

    ref = trn("ref.trn", refs)
    for name, hyps in (("sysA", a), ("sysB", b)):
        subprocess.run([SCLITE, "-s", "-r", ref, "trn", "-h", trn(f"{name}.trn", hyps), "trn",
                        name, "-i", "rm", "-o", "sgml", "-O", str(tmp), "-n", name],
                       check=True, capture_output=True, timeout=60)
    return "".join((tmp / f"{name}.sgml").read_text(encoding="utf-8")
                   for name in ("sysA", "sysB"))


def sc_stats(tmp: Path, refs: dict, a: dict, b: dict) -> dict:
    """sc_stats's MAPSSWE numbers, its decision and its unified report's p."""
    sgml = _sgml(tmp, refs, a, b)
    # sc_stats writes <system>.sts into its working directory: keep it in tmp
    out = subprocess.run([SC_STATS, "-p", "-t", "mapsswe", "-v", "-n", "-"], input=sgml,
                         capture_output=True, text=True, check=True, timeout=60,
                         cwd=tmp).stdout
    m = re.search(r"\(# segs: (\d+)\).*\(mean: +(\S+)\) \(std dev: +(\S+)\) "
                  r"\(Z Stat: +(\S+)\) \(Stat Diff: (Yes|No)\)", out)
    totals = re.search(r"Totals\s+\d+\s+(\d+)\s+(\d+)", out)
    winner = re.search(r"\| sysA \|\s+\|\s*(\S+)\s*\|", out).group(1)  # comparison matrix
    subprocess.run([SC_STATS, "-p", "-t", "mapsswe", "-u", "-n", str(tmp / "u")], input=sgml,
                   capture_output=True, text=True, check=True, timeout=60, cwd=tmp)
    unified = (tmp / "u.stats.unified").read_text()
    p = re.search(r"\|\|\s+sysA\s+\|\s+\|\s+\S+\s+(<?[\d.]+)", unified).group(1)
    return {"segments": int(m[1]), "mean": float(m[2]), "std_dev": float(m[3]),
            "z": float(m[4]), "significant": m[5] == "Yes",
            "verdict": {"same": "no significant difference", "sysA": "A better",
                        "sysB": "B better"}[winner],
            "errors": (int(totals[1]), int(totals[2])), "p": p}


def assert_same_as_sc_stats(tmp: Path, refs: dict, a: dict, b: dict) -> None:
    theirs = sc_stats(tmp, refs, a, b)
    ours = mapsswe(refs, a, b)
    assert ours.segments == theirs["segments"]
    assert tuple(map(sum, zip(*ours.segment_errors, strict=True))) == theirs["errors"]
    for key in ("mean", "std_dev", "z"):  # printed with %5.3f
        assert getattr(ours, key) == pytest.approx(theirs[key], abs=5.1e-4), key
    assert ours.significant() == theirs["significant"]
    assert ours.verdict() == theirs["verdict"]
    # sc_stats's p comes from a table of the normal CDF in steps of 0.01 of |Z| (rounded
    # down), printed with 3 decimals or as '<0.001'; ours is exact, so at most theirs.
    if theirs["p"] == "<0.001":
        assert ours.p_value < 0.001
    else:
        floor_p = math.erfc(math.floor(abs(ours.z) * 100) / 100 / math.sqrt(2))
        assert ours.p_value - 6e-4 <= float(theirs["p"]) <= floor_p + 6e-4


def noisy(rng: random.Random, ref: list[str], rate: float, vocab: list[str]) -> str:
    """A recognizer's output: substitutions, deletions and insertions at about ``rate``."""
    hyp = [rng.choice(vocab)] if rng.random() < rate else []
    for w in ref:
        x = rng.random()
        if x < rate:
            hyp.append(rng.choice(vocab))
        elif x < 1.5 * rate:
            pass
        elif x < 2 * rate:
            hyp += [w, rng.choice(vocab)]
        else:
            hyp.append(w)
    if rng.random() < rate:
        hyp.append(rng.choice(vocab))
    return " ".join(hyp)


def random_pair(seed: int, n: int = 30, rate_a: float = 0.1, rate_b: float = 0.1,
                max_len: int = 12):
    """References (some empty) and two systems' hypotheses with random errors."""
    rng = random.Random(seed)
    vocab = "a b c d e f g h".split()  # few words: many accidental matches
    refs, a, b = {}, {}, {}
    for k in range(n):
        ref = [rng.choice(vocab) for _ in range(rng.randint(0, max_len))]
        utt = f"utt{k:03d}"
        refs[utt], a[utt], b[utt] = (" ".join(ref), noisy(rng, ref, rate_a, vocab),
                                     noisy(rng, ref, rate_b, vocab))
    return refs, a, b


@need_sctk
@pytest.mark.parametrize("seed,rate_a,rate_b,n,max_len", [
    (0, 0.1, 0.1, 30, 12), (1, 0.05, 0.2, 30, 12), (2, 0.2, 0.05, 30, 12),
    (3, 0.1, 0.12, 30, 25), (4, 0.3, 0.3, 30, 4), (5, 0.02, 0.1, 100, 20),
    (6, 0.15, 0.1, 10, 12), (7, 0.1, 0.1, 3, 12)])
def test_random_systems_match_sc_stats(tmp_path, seed, rate_a, rate_b, n, max_len):
    refs, a, b = random_pair(seed, n, rate_a, rate_b, max_len)
    assert_same_as_sc_stats(tmp_path, refs, a, b)


@need_sctk
def test_many_random_systems_match_sc_stats(tmp_path):
    verdicts = set()
    for seed in range(100, 160):
        rng = random.Random(seed)
        rates = [rng.choice([0.02, 0.05, 0.1, 0.2, 0.3]) for _ in range(2)]
        refs, a, b = random_pair(seed, rng.choice([5, 30]), *rates)
        if mapsswe(refs, a, b).segments:  # sc_stats crashes without any segment
            assert_same_as_sc_stats(tmp_path / str(seed), refs, a, b)
            verdicts.add(mapsswe(refs, a, b).verdict())
    assert verdicts == {"A better", "B better", "no significant difference"}


CRAFTED = {
    # Identical outputs with errors: every difference is 0, so Z is 0.
    "identical": ({"u1": "a b c d e f", "u2": "g h i j"},
                  {"u1": "a x c d f", "u2": "g h i j k"},
                  {"u1": "a x c d f", "u2": "g h i j k"}),
    # A perfect, B with varied errors: clearly better.
    "A clearly better": (
        {f"u{k}": "the cat sat on the mat today" for k in range(12)},
        {f"u{k}": "the cat sat on the mat today" for k in range(12)},
        {f"u{k}": ["a cat sat on the mat today", "the cat sat in a mat today",
                   "the cat sat on the mat to day", "the sat on the mat today"][k % 4]
         for k in range(12)}),
    # Every segment differs by exactly one error: no variance, and sc_stats then sets Z to
    # 0 ("no difference"), however many segments.
    "zero variance": ({f"u{k}": "one two three four five" for k in range(20)},
                      {f"u{k}": "one two three four five" for k in range(20)},
                      {f"u{k}": "one two tree four five" for k in range(20)}),
    # Insertions at the ends, B's after A's last step, empty references, case errors.
    "edges": ({"u1": "a b c", "u2": "a b", "u3": "", "u4": "", "u5": "A b C d"},
              {"u1": "x a b c", "u2": "a", "u3": "", "u4": "y", "u5": "a b C d"},
              {"u1": "a b c z", "u2": "a b z", "u3": "z z", "u4": "", "u5": "A b c d"}),
    "one segment": ({"u1": "a b c d e"}, {"u1": "a b x d e"}, {"u1": "a b y y d e"}),
}


@need_sctk
@pytest.mark.parametrize("case", CRAFTED)
def test_crafted_cases_match_sc_stats(tmp_path, case):
    refs, a, b = CRAFTED[case]
    assert_same_as_sc_stats(tmp_path, refs, a, b)
    assert_same_as_sc_stats(tmp_path / "swapped", refs, b, a)


def test_crafted_outcomes():
    r = mapsswe(*CRAFTED["identical"])
    assert (r.segments, r.z, r.p_value, r.verdict()) == (3, 0.0, 1.0,
                                                          "no significant difference")
    assert mapsswe(*CRAFTED["A clearly better"]).verdict() == "A better"
    refs, a, b = CRAFTED["A clearly better"]
    swapped = mapsswe(refs, b, a)
    assert swapped.verdict() == "B better"
    assert swapped.z == pytest.approx(-mapsswe(refs, a, b).z)
    r = mapsswe(*CRAFTED["zero variance"])
    assert (r.segments, r.mean, r.variance, r.z) == (20, -1.0, 0.0, 0.0)
    assert r.wer_a == 0.0 and r.wer_b == 20.0


@need_sctk
def test_segment_counts_for_other_min_good_match_sc_stats(tmp_path):
    # 'sc_stats -t mapsswe_seg' prints segments per sentence for 1 to 10 boundary words.
    refs, a, b = random_pair(11, n=30, rate_a=0.05, rate_b=0.2, max_len=25)
    out = subprocess.run([SC_STATS, "-p", "-t", "mapsswe_seg", "-n", "-"],
                         input=_sgml(tmp_path, refs, a, b), capture_output=True, text=True,
                         check=True, timeout=60).stdout
    table = out[out.index("Num Buf"):]
    theirs = [float(v) for v in re.findall(r"\|\s+\d+\s+\|\s+([\d.]+)\s+\|", table)]
    ours = [round(mapsswe(refs, a, b, min_good=g).segments / len(refs), 3)
            for g in range(1, 11)]
    assert ours == theirs and len(set(ours)) > 2


def test_no_errors_at_all():
    # sc_stats crashes here (no segment); we report no difference.
    r = mapsswe({"u": "a b"}, {"u": "a b"}, {"u": ["a", "b"]})
    assert (r.segments, r.mean, r.z, r.p_value) == (0, 0.0, 0.0, 1.0)
    assert r.verdict() == "no significant difference"


def test_bad_input():
    refs = {"u1": "a b", "u2": "c"}
    with pytest.raises(UserError, match="'u2' has no hypothesis in system B"):
        mapsswe(refs, refs, {"u1": "a b"})
    with pytest.raises(UserError, match="'u3' of system A is not in the reference"):
        mapsswe(refs, {**refs, "u3": "x"}, refs)
    with pytest.raises(UserError, match="min_good"):
        mapsswe(refs, refs, refs, min_good=0)
    with pytest.raises(UserError, match="alpha"):
        mapsswe(refs, refs, refs).verdict(alpha=1.5)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "blspeech", "compare-wer", *args],
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))


def _write(path: Path, texts: dict) -> str:
    path.write_text("".join(f"{u} {t}".rstrip() + "\n" for u, t in texts.items()),
                    encoding="utf-8")
    return str(path)


def test_cli(tmp_path):
    refs, a, b = random_pair(1, rate_a=0.05, rate_b=0.2)
    files = [_write(tmp_path / n, t) for n, t in (("ref", refs), ("a", a), ("b", b))]
    expected = mapsswe(refs, a, b)
    proc = _cli(*files, "--json", "--alpha", "0.01")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert out["z"] == pytest.approx(expected.z) and out["segments"] == expected.segments
    assert (out["verdict"], out["alpha"], out["hyp_a"]) == ("A better", 0.01, files[1])
    assert out["wer_a"] == pytest.approx(expected.wer_a)
    proc = _cli(*files)
    assert proc.returncode == 0, proc.stderr
    assert f"Z = {expected.z:.3f}" in proc.stdout
    assert proc.stdout.strip().endswith("verdict at alpha 0.05: A better")
    assert f"%WER {expected.wer_b:.2f}" in proc.stdout
    # A hypothesis file without one of the reference utterances: one error line, exit 2.
    short = _write(tmp_path / "short", {u: t for u, t in b.items() if u != "utt007"})
    proc = _cli(files[0], files[1], short)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("blspeech compare-wer: error: utterance 'utt007'")
