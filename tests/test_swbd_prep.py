"""Switchboard data preparation (blspeech.corpora.swbd) on a fake corpus in the LDC layouts.

The fake corpus (tests/swbd_fake.py: three Switchboard conversations and two Hub5'00
ones, spoken by espeak-ng) is written once per module; the data dirs made from it are
checked table by table, by the validator and by reading audio back.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from swbd_fake import (
    RATE,
    FakeCorpus,
    make_fake_swbd,
    write_fake_shorten,
    write_ldc_ulaw,
    write_sphere,
    write_stand_in_sph2pipe,
)

from blspeech.cli import main as blspeech_main
from blspeech.corpora.swbd import (
    find_sph2pipe,
    fix_stm_line,
    is_shorten,
    normalize_stm_words,
    normalize_swbd_words,
    prepare_eval2000,
    prepare_swbd,
    sphere_header,
    wav_scp_entry,
)
from blspeech.corpora.swbd_cli import main as swbd_main
from blspeech.errors import UserError
from blspeech.io.audio import AudioReader
from blspeech.io.datadir import validate_data_dir
from blspeech.io.kaldi import read_table

SCTK_BIN = Path("/usr/lib/sctk/bin")


def _table(path: Path) -> dict[str, str]:
    """A table's ``{key: value}``; read_table also checks that it is C-sorted."""
    return {k: e.value for k, e in read_table(path, allow_empty_value=True).items()}


def _hide_sph2pipe(mp: pytest.MonkeyPatch, empty_dir: Path) -> None:
    """No sph2pipe to find: PATH of an empty folder, no KALDI_ROOT."""
    empty_dir.mkdir(exist_ok=True)
    mp.setenv("PATH", str(empty_dir))
    mp.delenv("KALDI_ROOT", raising=False)


@pytest.fixture
def no_sph2pipe(monkeypatch, tmp_path):
    _hide_sph2pipe(monkeypatch, tmp_path / "empty_bin")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> FakeCorpus:
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed: run 'make setup' as root (or apt-get "
                    "install espeak-ng)")
    return make_fake_swbd(tmp_path_factory.mktemp("swbd_corpus"))


@pytest.fixture(scope="module")
def train_dir(corpus, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("data") / "train"
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        _hide_sph2pipe(mp, out.parent / "empty_bin")
        warnings.simplefilter("error")  # the clean corpus gives no warning
        summary = prepare_swbd(corpus.swbd_dir, corpus.ms98_dir, out)
    return out, summary


@pytest.fixture(scope="module")
def eval_dir(corpus, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("data") / "eval2000"
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        _hide_sph2pipe(mp, out.parent / "empty_bin")
        warnings.simplefilter("error")
        summary = prepare_eval2000(corpus.eval_audio_dir, corpus.eval_transcript_dir, out)
    return out, summary


def _one_line_error(excinfo, *needles: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


# --- SPHERE headers -------------------------------------------------------------------------


def test_sphere_header_of_libsndfile_files(tmp_path):
    audio = np.zeros((800, 2), np.float32)
    write_sphere(tmp_path / "pcm.sph", audio)
    write_sphere(tmp_path / "ulaw.sph", audio, "ULAW")
    pcm, ulaw = sphere_header(tmp_path / "pcm.sph"), sphere_header(tmp_path / "ulaw.sph")
    assert pcm["channel_count"] == 2 and pcm["sample_rate"] == 8000
    assert pcm["sample_count"] == 800 and pcm["sample_coding"] == "pcm"
    assert pcm["sample_byte_format"] == "01"  # a -s2 string stays a string
    assert ulaw["sample_coding"] == "ulaw"
    assert not is_shorten(pcm) and not is_shorten(ulaw)


def test_sphere_header_real_and_shorten_fields(tmp_path):
    head = (b"NIST_1A\n   1024\nsample_count -i 4806520\nsample_n_bytes -i 1\n"
            b"channel_count -i 2\nsample_rate -i 8000\nbeta -r 0.25\n"
            b"sample_coding -s26 ulaw,embedded-shorten-v2.00\nend_head\n")
    (tmp_path / "sw.sph").write_bytes(head.ljust(1024, b" ") + b"\x00" * 16)
    header = sphere_header(tmp_path / "sw.sph")
    # -s26 declares one character less than LDC wrote: the whole value is kept.
    assert header["sample_coding"] == "ulaw,embedded-shorten-v2.00"
    assert header["beta"] == 0.25 and header["sample_count"] == 4806520
    assert is_shorten(header)
    write_fake_shorten(tmp_path / "fake.sph", np.zeros((80, 2), np.float32))
    assert sphere_header(tmp_path / "fake.sph")["sample_coding"] == "pcm,embedded-shorten-v2.00"


@pytest.mark.parametrize("coding, expected", [
    ("ulaw,embedded-shorten-v2.00", True), ("pcm,embedded-shorten-v2.00", True),
    ("PCM,EMBEDDED-SHORTEN-V1.09", True), ("pcm", False), ("ulaw", False), (None, False)])
def test_is_shorten(coding, expected):
    assert is_shorten({} if coding is None else {"sample_coding": coding}) is expected


@pytest.mark.parametrize("content, needle", [
    (b"RIFF\x24\x00\x00\x00WAVEfmt ", "not a NIST SPHERE file"),
    (b"NIST_1A\n   1024\nchannel_count -i 2\n", "truncated SPHERE header (35 of 1024"),
    (b"NIST_1A\n   1024\nchannel_count -i 2\n".ljust(1024, b" "), "no 'end_head'"),
    (b"NIST_1A\n   10x4\n", "bad SPHERE header size"),
    (b"NIST_1A\n   1024\nchannel_count -x 2\nend_head\n".ljust(1024), "header line 3"),
    (b"NIST_1A\n   1024\nchannel_count -i two\nend_head\n".ljust(1024), "header line 3"),
])
def test_sphere_header_errors_name_the_file(tmp_path, content, needle):
    path = tmp_path / "bad.sph"
    path.write_bytes(content)
    with pytest.raises(UserError) as excinfo:
        sphere_header(path)
    _one_line_error(excinfo, str(path), needle)


def test_libsndfile_reads_nist_ulaw(tmp_path):
    # What wav.scp relies on for plain paths: libsndfile decodes SPHERE u-law.
    t = np.arange(RATE) / RATE
    audio = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 700 * t)], 1)
    write_sphere(tmp_path / "u.sph", audio.astype(np.float32), "ULAW")
    back, rate = sf.read(tmp_path / "u.sph")
    assert rate == RATE and sf.info(tmp_path / "u.sph").subtype == "ULAW"
    assert np.abs(back - audio).max() < 0.02  # u-law's quantization, nothing more


# --- sph2pipe -------------------------------------------------------------------------------


def test_find_sph2pipe(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv("KALDI_ROOT", raising=False)
    assert find_sph2pipe() is None
    kaldi = tmp_path / "kaldi"
    binary = kaldi / "tools/sph2pipe_v2.5/sph2pipe"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    assert find_sph2pipe(str(kaldi)) is None  # not executable
    binary.chmod(0o755)
    assert find_sph2pipe(str(kaldi)) == str(binary)
    monkeypatch.setenv("KALDI_ROOT", str(kaldi))
    assert find_sph2pipe() == str(binary)
    newer = tmp_path / "kaldi2/tools/sph2pipe/sph2pipe"
    newer.parent.mkdir(parents=True)
    newer.write_text("#!/bin/sh\n")
    newer.chmod(0o755)
    assert find_sph2pipe(str(tmp_path / "kaldi2")) == str(newer)
    on_path = write_stand_in_sph2pipe(tmp_path / "bin")
    monkeypatch.setenv("PATH", str(on_path.parent))
    assert find_sph2pipe() == str(on_path)  # PATH wins over KALDI_ROOT


def test_wav_scp_entry(tmp_path, monkeypatch):
    audio = np.zeros((800, 2), np.float32)
    write_sphere(tmp_path / "pcm.sph", audio)
    write_sphere(tmp_path / "ulaw.sph", audio, "ULAW")
    shorten = write_fake_shorten(tmp_path / "short.sph", audio)
    for name in ("pcm.sph", "ulaw.sph"):
        assert wav_scp_entry(tmp_path / name, None) == str(tmp_path / name)
    assert wav_scp_entry(shorten, "/k/sph2pipe") == f"/k/sph2pipe -f wav -p {shorten} |"
    with pytest.raises(UserError) as excinfo:
        wav_scp_entry(shorten, None)
    _one_line_error(excinfo, str(shorten), "shorten-compressed", "libsndfile",
                    "make sph2pipe", "PATH", "KALDI_ROOT")
    # An uncompressed u-law header libsndfile refuses also goes through sph2pipe.
    ldc = write_ldc_ulaw(tmp_path / "ldc.sph", audio)
    with pytest.raises(sf.LibsndfileError):
        sf.info(ldc)
    assert wav_scp_entry(ldc, "/k/sph2pipe") == f"/k/sph2pipe -f wav -p {ldc} |"
    with pytest.raises(UserError) as excinfo:
        wav_scp_entry(ldc, None)
    _one_line_error(excinfo, str(ldc), "libsndfile rejects", "sph2pipe")
    # Paths that need quoting are quoted for the shell.
    odd = write_fake_shorten(tmp_path / "a b.sph", audio)
    assert wav_scp_entry(odd, "/k/sph2pipe") == f"/k/sph2pipe -f wav -p '{odd}' |"


# --- normalization --------------------------------------------------------------------------


@pytest.mark.parametrize("markup, expected", [
    ("[silence]", ""),
    ("[noise] [vocalized-noise] [laughter] [NOISE]", ""),
    ("uh um uh-huh", "uh um uh-huh"),                  # hesitations are words
    ("[laughter-yes]", "yes"),
    ("[laughter-yes]-", "yes-"),
    ("[LAUGHTER-Story]", "story"),
    ("[it'n/isn't]", "it'n"),                           # what was said
    ("[lem[guini]-/linguini]", "lem-"),
    ("th[e]-", "th-"),
    ("th[e]", "th-"),                                   # trailing hyphen sometimes omitted
    ("-[th]at", "-at"),
    ("[th]at", "-at"),                                  # leading hyphen sometimes omitted
    ("ex[specially]-/especially]", "ex-"),              # malformed in the corpus
    ("ammu[n]it-", "ammu-it-"),
    ("{yuppiedom}", "yuppiedom"),
    ("them_1 them_1's", "them them's"),
    ("<b_aside> so <e_aside>", "so"),
    ("<B_ASIDE>so", "so"),
    ("[laughter-abou[t]-]", "abou-"),
    ("- [other-tag]", ""),
    ("I Said AT&T", "i said at&t"),
])
def test_normalize_swbd_words(markup, expected):
    assert " ".join(normalize_swbd_words(markup.split())) == expected


@pytest.mark.parametrize("words, expected", [
    ("OH YEAH", "oh yeah"),
    ("(%HESITATION) WELL %HESITATION", "well"),
    ("(UH) (TH-) THE", "uh th- the"),
    ("((UH) OK", "uh ok"),
    ("<B_ASIDE> HI <E_ASIDE>", "hi"),
    ("I { GONNA / GOING TO } GO", "i gonna go"),
    ("[LAUGH] YES", "yes"),
    ("(%HESITATION)", ""),
])
def test_normalize_stm_words(words, expected):
    assert " ".join(normalize_stm_words(words.split())) == expected


def test_fix_stm_line():
    line = "en_4156 A en_4156_A 1.00 2.00 <O,en,F,en-F> <B_ASIDE> ((UH) WELL ((OK) <E_ASIDE>"
    assert fix_stm_line(line) == "en_4156 A en_4156_A 1.00 2.00 <O,en,F,en-F>  (UH) WELL (OK) "


# --- Switchboard training data --------------------------------------------------------------


def test_prepare_swbd_tables(corpus, train_dir):
    out, summary = train_dir
    spoken = [t for t in corpus.swbd_turns if t.text]
    assert summary["utterances"] == len(spoken) == 7
    assert summary["conversations"] == 3 and summary["recordings"] == 6
    assert summary["dropped_empty"] == 15  # 14 lines of [silence], one of [noise]
    text, segments = _table(out / "text"), _table(out / "segments")
    assert text == {t.utt: t.text for t in spoken}
    for t in spoken:
        rec = f"{t.conv}-{t.side}"
        assert segments[t.utt] == f"{rec} {t.start - 0.002:g} {t.end - 0.002:g}"
    # Kaldi's ids: side, then start and end in centiseconds (the first turn is at 0.502 s).
    assert min(text).startswith("sw02001-A_000050-") and len(min(text)) == len("sw02001-A_") + 13
    assert _table(out / "reco2file_and_channel") == {
        f"{c}-{s}": f"{c} {s}" for c in ("sw02001", "sw02002", "sw02003") for s in "AB"}
    assert _table(out / "wav.scp") == {
        f"{c}-{s}": str(corpus.sph[c]) for c in ("sw02001", "sw02002", "sw02003") for s in "AB"}
    utt2spk = _table(out / "utt2spk")
    assert utt2spk == {u: u.split("_")[0] for u in text}  # speaker = conversation side
    spk2utt = _table(out / "spk2utt")
    assert spk2utt["sw02001-B"].split() == sorted(u for u in text if u.startswith("sw02001-B"))
    reco2dur = _table(out / "reco2dur")
    assert float(reco2dur["sw02002-B"]) == pytest.approx(len(corpus.audio["sw02002"]) / RATE)


def test_prepare_swbd_validates(train_dir, capsys):
    out, _ = train_dir
    assert [str(p) for p in validate_data_dir(out)] == []
    assert blspeech_main(["validate-data-dir", str(out)]) == 0
    assert "0 errors, 0 warnings" in capsys.readouterr().out


@pytest.mark.parametrize("conv, side", [("sw02001", "B"), ("sw02001", "A"), ("sw02003", "B")])
def test_segments_read_their_channel(corpus, train_dir, conv, side):
    out, _ = train_dir
    reader = AudioReader(out)
    channel = "AB".index(side)
    for t in (t for t in corpus.swbd_turns if t.text and (t.conv, t.side) == (conv, side)):
        got = reader.read(t.utt)
        first, last = round((t.start - 0.002) * RATE), round((t.end - 0.002) * RATE)
        np.testing.assert_array_equal(got, corpus.audio[conv][first:last, channel])
        other = corpus.audio[conv][first:last, 1 - channel]
        assert np.abs(got - other).max() > 0.1  # the other side is quiet there


def test_ulaw_conversation_reads_its_channel(corpus, train_dir):
    out, _ = train_dir
    reader = AudioReader(out)
    t = next(t for t in corpus.swbd_turns if t.conv == "sw02002" and t.side == "B" and t.text)
    got = reader.read(t.utt)
    first = round((t.start - 0.002) * RATE)
    want = corpus.audio["sw02002"][first:first + len(got), 1]
    assert np.corrcoef(got, want)[0, 1] > 0.99


def test_transcripts_without_audio_warn_and_are_skipped(corpus, tmp_path, no_sph2pipe):
    ms98 = tmp_path / "ms98"
    shutil.copytree(corpus.ms98_dir, ms98)
    (ms98 / "20/2004").mkdir()
    for side in "AB":
        (ms98 / f"20/2004/sw2004{side}-ms98-a-trans.text").write_text(
            f"sw2004{side}-ms98-a-0001 0.000000 1.500000 hello there\n")
    with pytest.warns(UserWarning, match=r"1 transcribed conversations have no audio .*sw02004"):
        summary = prepare_swbd(corpus.swbd_dir, ms98, tmp_path / "train")
    assert summary["skipped_no_audio_conversations"] == 1 and summary["utterances"] == 7


def test_overshoot_is_clipped_or_dropped(corpus, tmp_path, no_sph2pipe):
    swbd = tmp_path / "swbd"
    shutil.copytree(corpus.swbd_dir / "swb1_d2", swbd)
    total = len(corpus.audio["sw02003"]) / RATE
    ms98 = tmp_path / "ms98"
    ms98.mkdir()
    (ms98 / "sw2003A-ms98-a-trans.text").write_text(
        f"sw2003A-ms98-a-0001 1.000000 {total + 0.3:.6f} a bit past\n"
        f"sw2003A-ms98-a-0002 {total - 1:.6f} {total + 2:.6f} far past\n")
    with pytest.warns(UserWarning, match="1 segments end more than 0.5 s past"):
        summary = prepare_swbd(swbd, ms98, tmp_path / "train")
    assert summary["utterances"] == 1 and summary["skipped_past_end"] == 1
    (seg,) = _table(tmp_path / "train/segments").values()
    assert float(seg.split()[2]) == pytest.approx(total)


def test_shorten_without_sph2pipe_names_the_first_file(corpus, tmp_path, no_sph2pipe):
    swbd = tmp_path / "swbd"
    for conv in ("sw02003", "sw02001"):
        write_fake_shorten(swbd / f"data/{conv}.sph", corpus.audio[conv])
    with pytest.raises(UserError) as excinfo:
        prepare_swbd(swbd, corpus.ms98_dir, tmp_path / "train")
    message = _one_line_error(excinfo, str(swbd / "data/sw02001.sph"), "shorten", "sph2pipe",
                              "KALDI_ROOT")
    assert "sw02003" not in message
    assert not (tmp_path / "train/wav.scp").exists()  # nothing half-written


def test_shorten_with_sph2pipe_uses_the_command(corpus, tmp_path, monkeypatch):
    # The stand-in sph2pipe is found on PATH; the command it makes is read back.
    sph2pipe = write_stand_in_sph2pipe(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{sph2pipe.parent}{os.pathsep}{os.environ['PATH']}")
    swbd = tmp_path / "swbd"
    shorten = write_fake_shorten(swbd / "data/sw02001.sph", corpus.audio["sw02001"])
    with pytest.warns(UserWarning, match="2 transcribed conversations have no audio"):
        summary = prepare_swbd(swbd, corpus.ms98_dir, tmp_path / "train")
    assert summary["shorten_files"] == 1 and summary["conversations"] == 1
    wav = _table(tmp_path / "train/wav.scp")
    assert wav["sw02001-B"] == f"{sph2pipe} -f wav -p {shorten} |"
    assert [p for p in validate_data_dir(tmp_path / "train") if p.level == "error"] == []
    reader = AudioReader(tmp_path / "train")
    t = next(t for t in corpus.swbd_turns if t.conv == "sw02001" and t.side == "B" and t.text)
    first, last = round((t.start - 0.002) * RATE), round((t.end - 0.002) * RATE)
    np.testing.assert_array_equal(reader.read(t.utt), corpus.audio["sw02001"][first:last, 1])


@pytest.mark.parametrize("line, needles", [
    ("sw2001A-ms98-a-0001 0.5\n", ["trans.text:2", "expected 'swNNNNS-ms98-a-NNNN"]),
    ("sw2001A-ms98-a-0001 0.5 x hello\n", ["trans.text:2", "times '0.5 x'"]),
    ("sw2001A-ms98-a-0001 2.5 1.0 hello\n", ["trans.text:2", "end time 1.0 is before start"]),
    ("2001A-0001 0.5 1.0 hello\n", ["trans.text:2", "expected"]),
])
def test_bad_transcript_lines(corpus, tmp_path, no_sph2pipe, line, needles):
    ms98 = tmp_path / "ms98"
    ms98.mkdir()
    (ms98 / "sw2001A-ms98-a-trans.text").write_text(
        "sw2001A-ms98-a-0000 0.000000 0.500000 [silence]\n" + line)
    with pytest.raises(UserError) as excinfo:
        prepare_swbd(corpus.swbd_dir, ms98, tmp_path / "train")
    _one_line_error(excinfo, str(ms98 / "sw2001A-ms98-a-trans.text"), *needles)


def test_missing_inputs(corpus, tmp_path, no_sph2pipe):
    cases = [
        ((tmp_path / "nope", corpus.ms98_dir), ["nope: no such directory", "LDC97S62"]),
        ((corpus.swbd_dir, tmp_path / "nope"), ["nope: no such directory", "ms98"]),
        ((tmp_path, corpus.ms98_dir), ["no .sph files found"]),
        ((corpus.swbd_dir, corpus.swbd_dir), ["no *-trans.text files found"]),
    ]
    for (swbd, ms98), needles in cases:
        with pytest.raises(UserError) as excinfo:
            prepare_swbd(swbd, ms98, tmp_path / "train")
        _one_line_error(excinfo, *needles)


# --- eval2000 -------------------------------------------------------------------------------


def test_prepare_eval2000_tables(corpus, eval_dir):
    out, summary = eval_dir
    scored = [t for t in corpus.eval_turns if t.markup != "IGNORE_TIME_SEGMENT_IN_SCORING"]
    assert summary["utterances"] == len(scored) == 5
    assert summary["ignored_segments"] == 1 and summary["empty_text"] == 1
    text, segments = _table(out / "text"), _table(out / "segments")
    assert text == {t.utt: t.text for t in scored}  # the lone (%HESITATION) stays, empty
    assert text[corpus.eval_turns[0].utt] == "oh yeah"
    assert corpus.eval_turns[0].utt.startswith("en_4156-A_000050-")
    for t in scored:
        assert segments[t.utt] == f"{t.conv}-{t.side} {t.start:g} {t.end:g}"
    assert _table(out / "reco2file_and_channel") == {
        f"{c}-{s}": f"{c} {s}" for c in ("en_4156", "sw_4390") for s in "AB"}
    assert _table(out / "utt2spk") == {u: u.rsplit("_", 1)[0] for u in text}
    assert [p.level for p in validate_data_dir(out)] == ["warning"]  # the empty transcript


def test_eval2000_stm_and_glm(corpus, eval_dir):
    out, _ = eval_dir
    assert (out / "glm").read_bytes() == corpus.glm.read_bytes()
    original = corpus.stm.read_text().splitlines()
    stm = (out / "stm").read_text().splitlines()
    assert len(stm) == len(original)
    assert not any("((" in line or "_ASIDE>" in line for line in stm)
    aside = next(t for t in corpus.eval_turns if "ASIDE" in t.markup)
    assert (f"en_4156 A en_4156_A {aside.start:.2f} {aside.end:.2f} <O,en,F,en-F>  (UH) WELL "
            "(TH-) THE CAR ") in stm
    assert [x for x in stm if x.startswith(";;")] == [x for x in original if x.startswith(";;")]


def test_eval2000_audio(corpus, eval_dir):
    out, _ = eval_dir
    reader = AudioReader(out)
    t = next(t for t in corpus.eval_turns if (t.conv, t.side) == ("en_4156", "B"))
    first, last = round(t.start * RATE), round(t.end * RATE)
    np.testing.assert_array_equal(reader.read(t.utt), corpus.audio["en_4156"][first:last, 1])


def test_fake_glm_is_accepted_by_csrfilt(corpus, eval_dir):
    if not (SCTK_BIN / "csrfilt.sh").is_file():
        pytest.fail(f"NIST csrfilt.sh not found in {SCTK_BIN}: run 'make setup' (as root it "
                    "installs the Debian package sctk)")
    out, _ = eval_dir
    env = dict(os.environ, PATH=f"{SCTK_BIN}{os.pathsep}{os.environ['PATH']}")
    with open(out / "stm", "rb") as stm:
        proc = subprocess.run([str(SCTK_BIN / "csrfilt.sh"), "-i", "stm", "-dh",
                               str(out / "glm")], stdin=stm, capture_output=True, env=env,
                              timeout=60)
    assert proc.returncode == 0 and proc.stderr == b"", proc.stderr
    lines = proc.stdout.decode().splitlines()
    assert len(lines) == len((out / "stm").read_text().splitlines())
    assert any("{I'M / I AM} {GONNA / GOING TO} GO HOME" in x for x in lines)
    assert any("(%HESITATION) WELL (TH-) THE CAR" in x for x in lines)  # (UH) is a hesitation


def test_eval2000_errors(corpus, tmp_path, no_sph2pipe):
    ref = tmp_path / "ref"
    shutil.copytree(corpus.eval_transcript_dir, ref)
    stm = next(ref.rglob("*.stm"))

    def fails(*needles, audio=corpus.eval_audio_dir):
        with pytest.raises(UserError) as excinfo:
            prepare_eval2000(audio, ref, tmp_path / "eval2000")
        return _one_line_error(excinfo, *needles)

    fails("no such directory", audio=tmp_path / "nope")
    fails("no .sph files found", audio=ref)
    shutil.copy(stm, ref / "other.stm")
    fails("expected exactly one *.stm", "found 2", "other.stm")
    (ref / "other.stm").unlink()
    glm = next(ref.rglob("*.glm"))
    glm.rename(tmp_path / "moved.glm")
    fails("expected exactly one *.glm", "found 0")
    (tmp_path / "moved.glm").rename(glm)
    good = stm.read_text()
    stm.write_text(good + "en_4156 A en_4156_A 9.00\n")
    fails(f"{stm}:{len(good.splitlines()) + 1}", "expected 'FILE CHANNEL SPEAKER START END")
    stm.write_text(good + "en_4156 A en_4156_A 9.00 8.00 <O,en,F,en-F> HI\n")
    fails(f"{stm}:{len(good.splitlines()) + 1}", "end time 8.00 is before start time 9.00")
    stm.write_text(good + "en_9999 A en_9999_A 1.00 2.00 <O,en,F,en-F> HI\n")
    fails(f"{stm}:{len(good.splitlines()) + 1}", "1 stm file ids have no .sph", "en_9999")


# --- command line ---------------------------------------------------------------------------


def test_cli_train_and_eval2000(corpus, tmp_path, capsys, no_sph2pipe):
    assert swbd_main(["train", "--swbd-dir", str(corpus.swbd_dir), "--ms98-dir",
                      str(corpus.ms98_dir), "--out", str(tmp_path / "train")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and json.loads(out[0])["utterances"] == 7
    assert swbd_main(["eval2000", "--audio-dir", str(corpus.eval_audio_dir),
                      "--transcript-dir", str(corpus.eval_transcript_dir),
                      "--out", str(tmp_path / "eval2000")]) == 0
    assert json.loads(capsys.readouterr().out)["ignored_segments"] == 1
    assert (tmp_path / "eval2000/stm").is_file()


def test_cli_user_error_is_one_line(corpus, tmp_path, capsys, no_sph2pipe):
    assert swbd_main(["train", "--swbd-dir", str(tmp_path / "nope"), "--ms98-dir",
                      str(corpus.ms98_dir), "--out", str(tmp_path / "train")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith("swbd_cli train: error: ") and "nope: no such directory" in line


def test_cli_warnings_are_lines(corpus, tmp_path, capsys, no_sph2pipe):
    ms98 = tmp_path / "ms98"
    ms98.mkdir()
    (ms98 / "sw2009A-ms98-a-trans.text").write_text("sw2009A-ms98-a-0001 0.0 1.0 hi\n")
    shutil.copy(next(corpus.ms98_dir.rglob("sw2001A-ms98-a-trans.text")), ms98)
    assert swbd_main(["train", "--swbd-dir", str(corpus.swbd_dir), "--ms98-dir", str(ms98),
                      "--out", str(tmp_path / "train")]) == 0
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("swbd_cli train: warning: 1 transcribed conversations")


def test_cli_module_exit_status(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "blspeech.corpora.swbd_cli", "eval2000",
                           "--audio-dir", str(tmp_path), "--transcript-dir", str(tmp_path),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = proc.stderr.splitlines()
    assert line.startswith("swbd_cli eval2000: error: ") and "no .sph files found" in line
