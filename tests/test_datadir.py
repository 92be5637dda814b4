"""Kaldi data dirs: validation finds every problem, fix / subset / combine / perturb-speed
produce clean dirs, and the ``blspeech`` data commands behave (exit codes, one-line errors)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from blspeech.errors import UserError
from blspeech.io import datadir, kaldi
from blspeech.io.datadir import (
    DataDir,
    Problem,
    combine_data_dirs,
    fix_data_dir,
    perturb_speed,
    subset_data_dir,
    validate_data_dir,
)
from blspeech.io.datadir import core as datadir_core

ENV = dict(os.environ, OMP_NUM_THREADS="1")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "blspeech", *map(str, args)],
                          capture_output=True, text=True, env=ENV, timeout=120)


def copy_dir(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def build_segmented(src: Path, dst: Path) -> Path:
    """Each wav of ``src`` becomes a recording cut into two segments; with reco2dur,
    reco2file_and_channel, utt2dur, and real feats.scp / cmvn.scp archives."""
    d = DataDir.load(src)
    tables: dict[str, dict[str, str]] = {n: {} for n in (
        "wav.scp", "reco2dur", "reco2file_and_channel", "segments", "text", "utt2spk",
        "utt2dur", "feats.scp", "cmvn.scp")}
    feats, rng = {}, np.random.default_rng(0)
    for reco in d.recordings():
        path = d.wav(reco)
        dur = round(sf.info(path).duration, 3)
        half = round(dur / 2, 3)
        tables["wav.scp"][reco] = path
        tables["reco2dur"][reco] = str(dur)
        tables["reco2file_and_channel"][reco] = f"{reco} A"
        for i, (start, end) in enumerate(((0.0, half), (half, dur)), 1):
            utt = f"{reco}-{i}"
            tables["segments"][utt] = f"{reco} {start} {end}"
            tables["text"][utt] = d.text(reco)
            tables["utt2spk"][utt] = d.speaker(reco)
            tables["utt2dur"][utt] = str(round(end - start, 3))
            feats[utt] = rng.standard_normal((int((end - start) * 100), 13)).astype(np.float32)
    dst.mkdir(parents=True)
    tables["feats.scp"] = kaldi.write_matrices(dst / "feats.ark", None, feats)
    by_spk: dict[str, list[str]] = {}
    for utt, spk in tables["utt2spk"].items():
        by_spk.setdefault(spk, []).append(utt)
    tables["cmvn.scp"] = kaldi.write_matrices(
        dst / "cmvn.ark", None,
        {spk: kaldi.cmvn_stats(feats[u] for u in utts) for spk, utts in by_spk.items()})
    out = DataDir()
    for name, table in tables.items():
        out.set_table(name, table)
    out.save(dst)
    return dst


@pytest.fixture(scope="module")
def segmented(speech_data_dir, tmp_path_factory) -> Path:
    """12 segments of 6 recordings, 2 speakers (read-only: copy before changing)."""
    return build_segmented(speech_data_dir, tmp_path_factory.mktemp("seg") / "data")


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def assert_sorted_tables(d: Path) -> None:
    for name in datadir.TABLES:
        if (d / name).exists():
            keys = [line.split()[0] for line in lines(d / name)]
            assert keys == sorted(keys, key=str.encode), name
            assert len(keys) == len(set(keys)), name


# --- validation ----------------------------------------------------------------------------


def test_clean_dirs_validate_clean(speech_data_dir, speech_data_dir_8k, segmented):
    for d in (speech_data_dir, speech_data_dir_8k, segmented):
        assert validate_data_dir(d) == []


def test_data_dir_accessors(segmented):
    d = DataDir.load(segmented)
    assert len(d) == 12 and d.utterances()[0] == "spk0-utt000-1"
    assert d.speakers() == ["spk0", "spk1"]
    assert d.speaker("spk1-utt003-2") == "spk1"
    reco, start, end = d.segment("spk0-utt002-2")
    assert reco == "spk0-utt002" and 0 < start < end and isinstance(end, float)
    assert d.recording("spk0-utt002-2") == "spk0-utt002"
    assert d.wav("spk0-utt002").endswith("spk0-utt002.wav")
    assert d.text("spk0-utt000-1").startswith("call me")
    assert d.duration("spk0-utt002-2") == pytest.approx(end - start, abs=1e-3)
    assert d.num_frames("spk0-utt000-1") is None
    assert d.spk2utt()["spk0"][:2] == ["spk0-utt000-1", "spk0-utt000-2"]
    assert d.where("text", "spk0-utt000-2") == f"{segmented / 'text'}:2"
    assert "spk0-utt000-1" in d and "spk0-utt000" not in d
    with pytest.raises(UserError, match="no line for 'nope'"):
        d.speaker("nope")


def write(d: Path, name: str, text: str) -> None:
    (d / name).write_text(text)


@pytest.fixture
def broken(speech_data_dir, tmp_path) -> Path:
    """A data dir with one of each kind of problem, at known lines."""
    src = DataDir.load(speech_data_dir)
    wav_a, wav_b = (src.wav(r) for r in src.recordings()[:2])
    d = tmp_path / "broken"
    d.mkdir()
    write(d, "wav.scp", f"recA {wav_a}\nrecB {wav_b}\nrecC /nonexistent/recC.wav\n")
    write(d, "reco2dur", "recA 3.0\nrecB 2.0\nrecC 1.0\n")
    write(d, "reco2file_and_channel", "recA recA A\nrecB recB A\nrecC recC\n")
    write(d, "segments", "spkA-a1 recA 0.00 1.00\n"
                         "spkA-a2 recA 1.00 2.50\n"
                         "spkA-a3 recA 2.00 1.50\n"      # 3: end <= start
                         "spkA-a4 recA -0.50 0.50\n"     # 4: negative
                         "spkA-a5 recA zero 1.0\n"       # 5: not a number
                         "spkB-b1 recB 0.00 1.20\n"
                         "spkB-b2 recB 1.20 9.00\n"      # 7: past the end of recB (2.0 s)
                         "spkB-b3 recX 0.00 1.00\n"      # 8: unknown recording
                         "spkB-b4 recB 0.10 0.90\n"      # 9: no transcript
                         "spkB-b5 recB 1.00 1.90\n")
    write(d, "text", "spkA-a1 hello\nspkA-a2 hello\nspkA-a3 x\nspkA-a4 x\nspkA-a5 x\n"
                     "spkB-b1 x\n"
                     "spkB-b1 dup\n"                     # 7: duplicate
                     "spkB-b2 x\nspkB-b3 x\nspkB-b5 x\n"
                     "spkZ-z9 stray\n")                  # 11: not an utterance
    write(d, "utt2spk", "spkA-a1 spkA\nspkA-a2 spkA\nspkA-a4 spkA\n"
                        "spkA-a3 spkA\n"                 # 4: unsorted
                        "spkA-a5 spkA\nspkB-b1 spkB\n"
                        "spkB-b2 spkB extra\n"           # 7: malformed
                        "spkB-b3 spkB\nspkB-b4 spkB\nspkB-b5 spkB\n")
    write(d, "spk2utt", "spkA spkA-a1 spkA-a2 spkA-a3 spkA-a4 spkA-a5 spkB-b4\n"  # 1: b4 is spkB's
                        "spkB spkB-b1 spkB-b2 spkB-b3 spkB-b5\n")
    feats = {u: np.ones((3, 2), np.float32) for u in (
        "spkA-a1", "spkA-a3", "spkA-a4", "spkA-a5", "spkB-b1", "spkB-b2", "spkB-b3",
        "spkB-b4", "spkB-b5", "spkC-c1")}                # no a2; c1 (line 10) is unknown
    kaldi.write_matrices(d / "feats.ark", d / "feats.scp", feats)
    write(d, "utt2dur", "spkA-a1 1.0\n"
                        "spkA-a2 abc\n"                  # 2: not a number
                        "spkA-a3 1.0\nspkA-a4 1.0\nspkA-a5 1.0\n"
                        "spkB-b1 0\n"                    # 6: not > 0
                        "spkB-b2 1.0\nspkB-b3 1.0\nspkB-b4 1.0\nspkB-b5 0.9\n"
                        "\n")                            # 11: empty line
    write(d, "utt2num_frames", "spkA-a1 100\n"
                               "spkA-a2 -5\n"            # 2: not a whole number
                               "spkA-a3 0\n"             # 3: not > 0
                               "spkA-a4 100\nspkA-a5 100\nspkB-b1 100\nspkB-b2 100\n"
                               "spkB-b3 100\nspkB-b4 100\nspkB-b5 90\n"
                               "spkY-y1 5\n")            # 11: not an utterance
    return d


EXPECTED_BROKEN = {
    # (file, line, id, level, part of the message)
    ("wav.scp", 3, "recC", "error", "audio file not found: /nonexistent/recC.wav"),
    ("wav.scp", 3, "recC", "warning", "not used by any segment"),
    ("segments", 2, "spkA-a2", "error", "missing from feats.scp"),
    ("segments", 3, "spkA-a3", "error", "end time 1.50 is not after start time 2.00"),
    ("segments", 4, "spkA-a4", "error", "negative time"),
    ("segments", 5, "spkA-a5", "error", "start time 'zero' is not a number"),
    ("segments", 7, "spkB-b2", "error", "past the end of recording 'recB'"),
    ("segments", 8, "spkB-b3", "error", "recording 'recX' is not in wav.scp"),
    ("segments", 9, "spkB-b4", "error", "missing from text"),
    ("reco2file_and_channel", 3, "recC", "error", "expected 'FILE CHANNEL'"),
    ("text", 7, "spkB-b1", "error", "duplicate key (first on line 6)"),
    ("text", 11, "spkZ-z9", "error", "not an utterance of segments"),
    ("utt2spk", 4, "spkA-a3", "error", "not sorted (comes after 'spkA-a4')"),
    ("utt2spk", 7, "spkB-b2", "error", "expected one id"),
    ("spk2utt", 1, "spkB-b4", "error", "listed under speaker 'spkA' but utt2spk says 'spkB'"),
    ("feats.scp", 10, "spkC-c1", "error", "not an utterance of segments"),
    ("utt2dur", 2, "spkA-a2", "error", "duration 'abc' is not a number"),
    ("utt2dur", 6, "spkB-b1", "error", "duration 0 must be > 0"),
    ("utt2dur", 11, None, "error", "empty line"),
    ("utt2num_frames", 2, "spkA-a2", "error", "frame count '-5' is not a whole number"),
    ("utt2num_frames", 3, "spkA-a3", "error", "frame count 0 must be > 0"),
    ("utt2num_frames", 11, "spkY-y1", "error", "not an utterance of segments"),
}


def test_validation_reports_every_problem_with_file_line_and_id(broken):
    problems = validate_data_dir(broken)
    found = {(os.path.basename(p.file), p.line, p.utt, p.level) for p in problems}
    assert found == {e[:4] for e in EXPECTED_BROKEN}
    assert len(problems) == len(EXPECTED_BROKEN)
    for name, line, utt, level, text in EXPECTED_BROKEN:
        match = [p for p in problems if (os.path.basename(p.file), p.line, p.utt, p.level)
                 == (name, line, utt, level)]
        assert any(text in p.message for p in match), (name, line, utt, [str(p) for p in match])
    p = next(p for p in problems if p.utt == "spkZ-z9")
    assert str(p).startswith(f"{broken / 'text'}:11: utt 'spkZ-z9': not an utterance")
    w = next(p for p in problems if p.level == "warning")
    assert str(w).startswith(f"{broken / 'wav.scp'}:3: warning: reco 'recC': ")
    # Sorted by file (Kaldi order) and line.
    order = [(datadir.TABLES.index(os.path.basename(p.file)), p.line or 0) for p in problems]
    assert order == sorted(order)


def test_missing_required_files_and_spk2utt(speech_data_dir, tmp_path):
    d = copy_dir(speech_data_dir, tmp_path / "d")
    for name in ("text", "utt2spk", "spk2utt"):
        (d / name).unlink()
    problems = validate_data_dir(d)
    assert [(os.path.basename(p.file), p.line, p.level, p.message) for p in problems] == [
        ("text", None, "error", "required file is missing"),
        ("utt2spk", None, "error", "required file is missing")]
    (d / "utt2spk").write_text((speech_data_dir / "utt2spk").read_text())
    problems = validate_data_dir(d)
    assert [(os.path.basename(p.file), p.level) for p in problems] == [
        ("text", "error"), ("spk2utt", "warning")]


def test_speaker_prefix_convention_is_a_warning(speech_data_dir, tmp_path):
    d = copy_dir(speech_data_dir, tmp_path / "d")
    # spk0's utterances sort first, but its new name sorts last: not grouped by speaker.
    swap = {"spk0": "zz", "spk1": "aa"}
    dd = DataDir.load(d)
    dd.set_table("utt2spk", {u: swap[s] for u, s in dd.values("utt2spk").items()})
    dd.save(d)
    problems = validate_data_dir(d)
    assert len(problems) == 1
    p = problems[0]
    assert (os.path.basename(p.file), p.line, p.utt, p.level) == (
        "utt2spk", 1, "spk0-utt000", "warning")
    assert "grouped by speaker" in p.message
    proc = run("validate-data-dir", d)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == f"{d}: 6 utterances, 2 speakers, 0 errors, 1 warning"


def test_problem_str():
    assert str(Problem("data/train/text", 12, "x", "bad")) == "data/train/text:12: utt 'x': bad"
    assert str(Problem("d/wav.scp", None, None, "gone")) == "d/wav.scp: gone"
    assert str(Problem("d/cmvn.scp", 3, "s1", "odd", "warning", "spk")) == \
        "d/cmvn.scp:3: warning: spk 's1': odd"


def test_strict_load_names_the_line(broken):
    with pytest.raises(kaldi.KaldiFormatError) as e:
        DataDir.load(broken)
    assert str(e.value).startswith(f"{broken / 'text'}:7: key 'spkB-b1': duplicate key")
    assert "fix-data-dir" in str(e.value)


# --- fix -----------------------------------------------------------------------------------


def test_fix_makes_the_broken_dir_validate_clean(broken):
    originals = {p.name: p.read_bytes() for p in broken.iterdir() if p.is_file()}
    report = fix_data_dir(broken)
    assert validate_data_dir(broken) == []
    d = DataDir.load(broken)
    assert d.utterances() == ["spkA-a1", "spkB-b5"]
    assert d.recordings() == ["recA", "recB"] and d.speakers() == ["spkA", "spkB"]
    assert report["utterances"] == {"before": 10, "after": 2}
    assert report["recordings"] == {"before": 3, "after": 2}
    assert report["dropped_recordings"] == ["recC"]
    assert report["dropped_lines"] == {"reco2file_and_channel": 1, "segments": 4, "text": 1,
                                       "utt2dur": 3, "utt2num_frames": 2, "utt2spk": 1,
                                       "wav.scp": 1}
    assert report["resorted"] == ["utt2spk"]
    assert (broken / "spk2utt").read_text() == "spkA spkA-a1\nspkB spkB-b5\n"
    assert (broken / "text").read_text() == "spkA-a1 hello\nspkB-b5 x\n"
    assert_sorted_tables(broken)
    backup = broken / ".backup"
    for name, data in originals.items():
        if name in datadir.TABLES:
            assert (backup / name).read_bytes() == data
    # Features still read through the kept scp entries.
    assert dict(kaldi.read_matrices(f"scp:{broken / 'feats.scp'}")).keys() == {
        "spkA-a1", "spkB-b5"}


def test_fix_refuses_to_drop_everything(speech_data_dir, tmp_path):
    d = copy_dir(speech_data_dir, tmp_path / "d")
    (d / "wav.scp").write_text("".join(f"{u} /gone/{u}.wav\n"
                                       for u in DataDir.load(d).utterances()))
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    with pytest.raises(UserError, match="would drop all 6 utterances; nothing was changed"):
        fix_data_dir(d)
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before


def test_fix_unsorted_and_duplicate_only(speech_data_dir, tmp_path):
    d = copy_dir(speech_data_dir, tmp_path / "d")
    text = lines(d / "text")
    (d / "text").write_text("\n".join(reversed(text + [text[0].split()[0] + " again"])) + "\n")
    (d / "spk2utt").unlink()
    report = fix_data_dir(d)
    assert report["utterances"] == {"before": 6, "after": 6}
    assert report["dropped_lines"] == {"text": 1} and report["resorted"] == ["text"]
    # The first of the duplicate lines wins (here the added one), as in Kaldi.
    first_utt = text[0].split()[0]
    assert lines(d / "text") == [f"{first_utt} again"] + text[1:]
    assert validate_data_dir(d) == []
    assert (d / "spk2utt").read_text() == (speech_data_dir / "spk2utt").read_text()


# --- subset and combine --------------------------------------------------------------------


def test_subset_first_last_random(segmented, tmp_path):
    src = DataDir.load(segmented)
    utts = src.utterances()
    r = subset_data_dir(segmented, tmp_path / "first", first=3)
    d = DataDir.load(tmp_path / "first")
    assert d.utterances() == utts[:3] and r["utterances"] == 3
    # Recordings and speakers follow the utterances.
    assert d.recordings() == ["spk0-utt000", "spk0-utt002"]
    assert d.values("reco2dur").keys() == {"spk0-utt000", "spk0-utt002"}
    assert d.speakers() == ["spk0"] and list(d.values("cmvn.scp")) == ["spk0"]
    assert validate_data_dir(tmp_path / "first") == []

    subset_data_dir(segmented, tmp_path / "last", last=2)
    assert DataDir.load(tmp_path / "last").utterances() == utts[-2:]

    a = subset_data_dir(segmented, tmp_path / "r1", num=5, seed=7)
    subset_data_dir(segmented, tmp_path / "r2", num=5, seed=7)
    subset_data_dir(segmented, tmp_path / "r3", num=5, seed=8)
    assert (tmp_path / "r1" / "segments").read_text() == (tmp_path / "r2" / "segments").read_text()
    assert (tmp_path / "r1" / "segments").read_text() != (tmp_path / "r3" / "segments").read_text()
    assert a["utterances"] == 5 and len(DataDir.load(tmp_path / "r1")) == 5
    for name in ("r1", "r3"):
        assert validate_data_dir(tmp_path / name) == []
        assert_sorted_tables(tmp_path / name)


def test_subset_by_lists(segmented, tmp_path):
    r = subset_data_dir(segmented, tmp_path / "u", utt_list=["spk1-utt005-2", "nope",
                                                              "spk0-utt000-1"])
    assert r["missing"] == ["nope"]
    assert DataDir.load(tmp_path / "u").utterances() == ["spk0-utt000-1", "spk1-utt005-2"]
    assert validate_data_dir(tmp_path / "u") == []
    subset_data_dir(segmented, tmp_path / "s", speakers=["spk1"])
    d = DataDir.load(tmp_path / "s")
    assert len(d) == 6 and d.speakers() == ["spk1"]
    assert list(d.values("cmvn.scp")) == ["spk1"]
    assert (tmp_path / "s" / "spk2utt").read_text().startswith("spk1 spk1-utt001-1 ")
    assert validate_data_dir(tmp_path / "s") == []


def test_subset_errors(segmented, tmp_path):
    with pytest.raises(UserError, match="exactly one"):
        subset_data_dir(segmented, tmp_path / "x")
    with pytest.raises(UserError, match="exactly one"):
        subset_data_dir(segmented, tmp_path / "x", first=1, last=1)
    with pytest.raises(UserError, match="cannot take 13 utterances.*it has 12"):
        subset_data_dir(segmented, tmp_path / "x", num=13)
    with pytest.raises(UserError, match="none of the 1 utterance ids"):
        subset_data_dir(segmented, tmp_path / "x", utt_list=["nope"])
    with pytest.raises(UserError, match="also an input"):
        subset_data_dir(segmented, segmented, first=1)
    assert not (tmp_path / "x").exists()


def test_subset_replaces_stale_tables(segmented, speech_data_dir, tmp_path):
    dst = copy_dir(segmented, tmp_path / "dst")
    subset_data_dir(speech_data_dir, dst, first=2)  # a dir without segments or feats
    assert sorted(p.name for p in dst.iterdir() if p.suffix not in (".ark",)) == [
        "spk2utt", "text", "utt2spk", "wav.scp"]
    assert validate_data_dir(dst) == []


def test_combine_restores_the_split(segmented, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    subset_data_dir(segmented, a, first=4)
    subset_data_dir(segmented, b, last=8)
    report = combine_data_dirs(tmp_path / "all", [b, a])
    assert report["utterances"] == 12 and report["warnings"] == []
    for name in datadir.TABLES:
        if (segmented / name).exists():
            assert (tmp_path / "all" / name).read_text() == (segmented / name).read_text(), name
    assert validate_data_dir(tmp_path / "all") == []


def test_combine_duplicates_and_partial_files(segmented, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    subset_data_dir(segmented, a, first=4)
    subset_data_dir(segmented, b, first=5)
    with pytest.raises(UserError) as e:
        combine_data_dirs(tmp_path / "all", [a, b])
    message = str(e.value)
    assert "utterance 'spk0-utt000-1' is in two sources" in message
    assert f"{a / 'segments'}:1" in message and f"{b / 'segments'}:1" in message
    assert not (tmp_path / "all").exists()

    subset_data_dir(segmented, b, last=8)
    (b / "utt2dur").unlink()
    report = combine_data_dirs(tmp_path / "all", [a, b])
    assert report["dropped_files"] == {"utt2dur": [str(b)]}
    assert report["warnings"] == [f"utt2dur is missing in {b}; dropped"]
    assert not (tmp_path / "all" / "utt2dur").exists()
    assert validate_data_dir(tmp_path / "all") == []


def test_combine_with_and_without_segments(segmented, speech_data_dir, tmp_path):
    report = combine_data_dirs(tmp_path / "all", [segmented, speech_data_dir])
    d = DataDir.load(tmp_path / "all")
    assert len(d) == 18 and len(d.recordings()) == 6  # same recordings, same wav entries
    reco, start, end = d.segment("spk0-utt000")
    assert reco == "spk0-utt000" and start == 0
    assert end == pytest.approx(sf.info(d.wav(reco)).duration, abs=1e-4)
    assert set(report["dropped_files"]) == {"reco2dur", "reco2file_and_channel", "feats.scp",
                                            "cmvn.scp", "utt2dur"}
    assert validate_data_dir(tmp_path / "all") == []


def test_combine_keeps_features_of_one_front_end(speech_data_dir_8k, tmp_path):
    """The recipe's train_sp: train plus speed-perturbed copies with their own features.
    Combined features keep their conf/fbank.yaml; features of two front-ends are dropped;
    utt2uniq (from perturb-speed) is filled for the unperturbed utterances."""
    from blspeech.frontend.extract import compute_feats

    train = copy_dir(speech_data_dir_8k, tmp_path / "train")
    subset_data_dir(train, tmp_path / "one", first=2)
    perturb_speed(tmp_path / "one", tmp_path / "sp", factors=(0.9,))
    for d in (train, tmp_path / "sp"):
        compute_feats(d, nj=1, frontend_config={"num_mel_bins": 23}, progress=False)
    report = combine_data_dirs(tmp_path / "all", [train, tmp_path / "sp"])
    assert report["warnings"] == []
    all_ = DataDir.load(tmp_path / "all")
    assert len(all_.values("feats.scp")) == len(all_) == 8
    assert (tmp_path / "all" / "conf" / "fbank.yaml").read_bytes() == (
        train / "conf" / "fbank.yaml").read_bytes()
    uniq = all_.values("utt2uniq")
    assert uniq == {u: u.removeprefix("sp0.9-") for u in all_.utterances()}

    compute_feats(tmp_path / "sp", nj=1, frontend_config={"num_mel_bins": 40},
                  progress=False)
    report = combine_data_dirs(tmp_path / "all", [train, tmp_path / "sp"])
    assert "different front-end settings" in report["warnings"][0]
    assert not (tmp_path / "all" / "feats.scp").exists()
    assert not (tmp_path / "all" / "conf" / "fbank.yaml").exists()


# --- speed perturbation --------------------------------------------------------------------


def test_perturb_speed_ids_times_and_tables(segmented, tmp_path):
    dst = tmp_path / "sp"
    report = perturb_speed(segmented, dst)
    assert report["dropped_files"] == ["feats.scp", "cmvn.scp"]
    for name in ("feats.scp", "cmvn.scp", "utt2num_frames"):
        assert not (dst / name).exists()
    src, out = DataDir.load(segmented), DataDir.load(dst)
    assert len(out) == 36 and len(out.speakers()) == 6 and len(out.recordings()) == 18
    for f in (0.9, 1.0, 1.1):
        p = f"sp{f}-"
        for utt in src.utterances():
            reco, start, end = src.segment(utt)
            new_reco, new_start, new_end = out.segment(p + utt)
            assert new_reco == p + reco
            assert new_start == pytest.approx(start / f, abs=1e-4)
            assert new_end == pytest.approx(end / f, abs=1e-4)
            assert out.duration(p + utt) == pytest.approx(src.duration(utt) / f, abs=1e-4)
            assert out.speaker(p + utt) == p + src.speaker(utt)
            assert out.text(p + utt) == src.text(utt)
            assert out.get("utt2uniq", p + utt) == utt
        for reco in src.recordings():
            expected = src.wav(reco) if f == 1.0 else f"sox -R {src.wav(reco)} -t wav - speed {f} |"
            assert out.wav(p + reco) == expected
            assert float(out.get("reco2dur", p + reco)) == pytest.approx(
                float(src.get("reco2dur", reco)) / f, abs=1e-4)
            assert out.get("reco2file_and_channel", p + reco) == f"{p}{reco} A"
    # The 1.0 copy keeps the original numbers verbatim.
    assert out.get("segments", "sp1.0-spk0-utt000-2").split()[1:] == \
        src.get("segments", "spk0-utt000-2").split()[1:]
    assert_sorted_tables(dst)
    assert validate_data_dir(dst) == []


def test_perturbed_audio_plays_at_the_new_speed(speech_data_dir, tmp_path):
    src = copy_dir(speech_data_dir, tmp_path / "src")
    d = DataDir.load(src)
    piped = "spk1-utt001"
    path = d.wav(piped)
    wav = d.values("wav.scp")
    wav[piped] = f"sox {path} -t wav - |"  # an entry that already is a pipe
    d.set_table("wav.scp", wav)
    d.save(src)
    dst = tmp_path / "sp"
    perturb_speed(src, dst)
    out = DataDir.load(dst)
    assert out.wav(f"sp0.9-{piped}") == (f"sox {path} -t wav - | sox -R -t wav - -t wav - "
                                         "speed 0.9 |")
    assert out.wav(f"sp1.0-{piped}") == f"sox {path} -t wav - |"
    for utt in ("spk0-utt000", piped):
        original = sf.info(d.wav(utt) if utt != piped else path)
        for factor in (0.9, 1.1):
            command = out.wav(f"sp{factor}-{utt}")
            assert command.endswith("|")
            audio = subprocess.run(command[:-1], shell=True, capture_output=True,
                                   check=True).stdout
            samples, rate = sf.read(io.BytesIO(audio), dtype="float32")
            assert rate == original.samplerate
            expected = original.duration / factor
            assert abs(len(samples) / rate - expected) < 0.01 * expected, (utt, factor)
            assert np.abs(samples).max() > 0.05  # real speech, not silence
    assert validate_data_dir(dst) == []


def test_perturb_errors_and_quoting(speech_data_dir, tmp_path):
    with pytest.raises(UserError, match="positive"):
        perturb_speed(speech_data_dir, tmp_path / "x", factors=(0.9, 0))
    with pytest.raises(UserError, match="repeat"):
        perturb_speed(speech_data_dir, tmp_path / "x", factors=(1, 1.0))
    with pytest.raises(UserError, match="also an input"):
        perturb_speed(speech_data_dir, speech_data_dir)
    assert (datadir.speed_command("my dir/a.wav", 0.9)
            == "sox -R 'my dir/a.wav' -t wav - speed 0.9 |")
    assert not (tmp_path / "x").exists()


def test_a_failed_write_leaves_the_output_dir_untouched(segmented, tmp_path, monkeypatch):
    dst = tmp_path / "sp"
    perturb_speed(segmented, dst, factors=(1.0,))
    before = {p.name: p.read_bytes() for p in dst.iterdir()}
    real = datadir_core.atomic_write

    @contextlib.contextmanager
    def disk_full_on_text(path, mode="w"):
        with real(path, mode) as f:
            if os.path.basename(path) == "text":
                f.write("spk0-utt000-1 half a li")
                raise OSError(28, "No space left on device", str(path))
            yield f

    monkeypatch.setattr(datadir_core, "atomic_write", disk_full_on_text)
    with pytest.raises(OSError, match="No space"):
        perturb_speed(segmented, dst)
    assert {p.name: p.read_bytes() for p in dst.iterdir()} == before  # no temp files either


# --- command line --------------------------------------------------------------------------


def test_cli_validate(broken, speech_data_dir):
    proc = run("validate-data-dir", speech_data_dir)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{speech_data_dir}: 6 utterances, 2 speakers, 0 errors, 0 warnings\n"

    proc = run("validate-data-dir", broken)
    assert proc.returncode == 1, proc.stderr
    out = proc.stdout.splitlines()
    assert len(out) == len(EXPECTED_BROKEN) + 1
    assert f"{broken / 'text'}:7: utt 'spkB-b1': duplicate key (first on line 6)" in out
    assert out[-1] == f"{broken}: 10 utterances, 2 speakers, 21 errors, 1 warning"

    proc = run("validate-data-dir", broken, "--json")
    assert proc.returncode == 1
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert records[-1] == {"dir": str(broken), "utterances": 10, "speakers": 2, "errors": 21,
                           "warnings": 1}
    assert {"file": str(broken / "segments"), "line": 8, "utt": "spkB-b3", "level": "error",
            "id_kind": "utt", "message": "recording 'recX' is not in wav.scp"} in records


def test_cli_fix_subset_combine_perturb(broken, segmented, tmp_path):
    proc = run("fix-data-dir", broken)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["utterances"] == {"before": 10, "after": 2}
    assert run("validate-data-dir", broken).returncode == 0

    (tmp_path / "list").write_text("spk0-utt000-1 extra fields are ignored\n\nspk1-utt001-2\n")
    proc = run("subset-data-dir", segmented, tmp_path / "u", "--utt-list", tmp_path / "list")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["utterances"] == 2
    proc = run("subset-data-dir", segmented, tmp_path / "r", "--random", "10", "--seed", "3")
    assert proc.returncode == 0 and json.loads(proc.stdout)["utterances"] == 10
    (tmp_path / "spk").write_text("spk1\n")
    proc = run("subset-data-dir", segmented, tmp_path / "s", "--spk-list", tmp_path / "spk")
    assert json.loads(proc.stdout)["speakers"] == 1

    (tmp_path / "u" / "utt2dur").unlink()
    proc = run("combine-data", tmp_path / "c", tmp_path / "u", tmp_path / "s")
    assert proc.returncode == 2 and "utterance 'spk1-utt001-2' is in two sources" in proc.stderr
    assert run("subset-data-dir", segmented, tmp_path / "f", "--last", "3").returncode == 0
    proc = run("combine-data", tmp_path / "c", tmp_path / "u", tmp_path / "f")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == f"blspeech combine-data: warning: utt2dur is missing in " \
                          f"{tmp_path / 'u'}; dropped\n"
    assert json.loads(proc.stdout)["utterances"] == 5

    proc = run("perturb-speed", tmp_path / "c", tmp_path / "sp", "--factors", "0.95,1.05")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["utterances"] == 10
    assert DataDir.load(tmp_path / "sp").utterances()[0] == "sp0.95-spk0-utt000-1"
    assert run("validate-data-dir", tmp_path / "sp").returncode == 0


@pytest.mark.parametrize("args", [
    ["validate-data-dir", "/no/such/dir"],
    ["fix-data-dir", "/no/such/dir"],
    ["subset-data-dir", "SEG", "OUT", "--first", "100"],
    ["subset-data-dir", "SEG", "OUT", "--utt-list", "/no/such/list"],
    ["subset-data-dir", "SEG", "SEG", "--first", "1"],
    ["combine-data", "OUT", "SEG", "SEG"],
    ["perturb-speed", "SEG", "OUT", "--factors", "0.9,abc"],
    ["perturb-speed", "SEG", "OUT", "--factors", "0.9,-1"],
    ["subset-data-dir", "SEG", "OUT"],
    ["subset-data-dir", "SEG", "OUT", "--first", "1", "--last", "1"],
])
def test_cli_user_errors_are_one_line(args, segmented, tmp_path):
    args = [str(segmented) if a == "SEG" else str(tmp_path / "out") if a == "OUT" else a
            for a in args]
    proc = run(*args)
    assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    if "error:" in proc.stderr and not proc.stderr.startswith("usage:"):
        assert proc.stderr.startswith(f"blspeech {args[0]}: error: "), proc.stderr
        assert proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "out").exists()


def test_cli_help_mentions_kaldi_and_examples():
    for command, kaldi_name in (("validate-data-dir", "validate_data_dir.sh"),
                                ("fix-data-dir", "fix_data_dir.sh"),
                                ("subset-data-dir", "subset_data_dir.sh"),
                                ("combine-data", "combine_data.sh"),
                                ("perturb-speed", "perturb_data_dir_speed_3way.sh")):
        proc = run(command, "--help")
        assert proc.returncode == 0
        assert kaldi_name in proc.stdout and "example" in proc.stdout
