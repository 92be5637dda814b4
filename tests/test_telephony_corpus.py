"""The telephony_mini corpus: number words, text normalization, synthesis, splits, hygiene.

One miniature corpus (a few dozen utterances, real espeak-ng / flite / Asterisk audio) is
built once per module in a temp dir; the tests read it, and the re-run tests build it
again in place.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from blspeech.corpora.number_words import (
    decimal_words,
    digit_words,
    expand_numbers,
    money_words,
    number_to_words,
    ordinal_words,
    pair_words,
    time_words,
    year_words,
)
from blspeech.corpora.synth import (
    Channel,
    SynthJob,
    Voice,
    all_voices,
    engine_text,
    resample,
    telephone_channel,
)
from blspeech.corpora.telephony import (
    HELD_OUT_SPEAKERS,
    QUICK_SIZES,
    REAL_SPEAKER,
    SPLITS,
    CorpusConfig,
    HygieneError,
    build_corpus,
    check_hygiene,
    plan_corpus,
)
from blspeech.corpora.telephony_cli import config_from_args, main, parser
from blspeech.corpora.telephony_text import (
    ASTERISK_SOUND_DIR,
    ASTERISK_TRANSCRIPTS,
    DEFAULT_TEXT_DIR,
    SentenceGenerator,
    clean_prompt_text,
    contains_phrase,
    make_sentence,
    normalize_transcript,
    read_lines,
    read_prompt_transcripts,
    sentence_pieces,
)
from blspeech.io.datadir import DataDir, validate_data_dir

TRANSCRIPT = re.compile(r"[a-z]+(?:'[a-z]+)*(?: [a-z]+(?:'[a-z]+)*)*")
MINI = CorpusConfig(num_train=24, num_dev=6, num_test_synth=8, num_test_real=6, seed=3)


def _require_tools() -> None:
    missing = [t for t in ("espeak-ng", "flite") if shutil.which(t) is None]
    if not ASTERISK_SOUND_DIR.is_dir():
        missing.append("asterisk-core-sounds-en-wav")
    if not ASTERISK_TRANSCRIPTS.is_file():
        missing.append("asterisk-core-sounds-en")
    if missing:
        pytest.fail(f"missing Debian packages: {' '.join(missing)} (run 'make setup' as root "
                    "or apt-get install them)")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A miniature corpus: 24 train, 6 dev, 6 test_real, 8 test_synth utterances."""
    _require_tools()
    data = tmp_path_factory.mktemp("telephony") / "data"
    build_corpus(data, MINI, nj=2, progress=False, log=lambda _: None)
    return data


def _table(path: Path) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in path.read_text().splitlines())


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in sorted(root.rglob("*")) if p.is_file()}


# --- numbers and text -----------------------------------------------------------------------


@pytest.mark.parametrize("n, words", [
    (0, "zero"), (7, "seven"), (13, "thirteen"), (20, "twenty"), (21, "twenty one"),
    (99, "ninety nine"), (100, "one hundred"), (101, "one hundred one"),
    (110, "one hundred ten"), (999, "nine hundred ninety nine"), (1000, "one thousand"),
    (1001, "one thousand one"), (12345, "twelve thousand three hundred forty five"),
    (1_000_000, "one million"), (2_000_019, "two million nineteen"),
    (3_000_000_200, "three billion two hundred"), (-4, "minus four"),
])
def test_number_to_words(n, words):
    assert number_to_words(n) == words


def test_number_word_forms():
    assert [ordinal_words(n) for n in (1, 2, 3, 4, 5, 8, 9, 11, 12, 20, 21, 30, 100, 1000)] == [
        "first", "second", "third", "fourth", "fifth", "eighth", "ninth", "eleventh",
        "twelfth", "twentieth", "twenty first", "thirtieth", "one hundredth", "one thousandth"]
    assert year_words(1984) == "nineteen eighty four" and year_words(2009) == "two thousand nine"
    assert year_words(1800) == "eighteen hundred" and year_words(2031) == "twenty thirty one"
    assert time_words(0, 0) == "midnight" and time_words(12, 30) == "twelve thirty p m"
    assert time_words(23, 59, "plain") == "eleven fifty nine"
    assert time_words(9, 0, "oclock") == "nine o'clock" and time_words(9, 0) == "nine a m"
    assert money_words(0) == "zero dollars" and money_words(2, 1) == "two dollars and one cent"
    assert digit_words("900") == "nine zero zero" and pair_words(1950) == "nineteen fifty"
    assert decimal_words("28.8") == "twenty eight point eight"
    assert expand_numbers("room 12B on the 2nd floor costs $40") == (
        "room twelve B on the second floor costs forty dollars")
    for bad in (lambda: number_to_words(10**12), lambda: ordinal_words(0),
                lambda: time_words(24, 0), lambda: digit_words("12a"),
                lambda: year_words(99), lambda: money_words(1, 100)):
        with pytest.raises(ValueError):
            bad()
    with pytest.raises(TypeError):
        number_to_words(1.5)


def test_normalization_and_spelled_letters():
    assert normalize_transcript("Press 1, then #; or * to exit!") == (
        "press one then pound or star to exit")
    assert normalize_transcript("Don't call after 9 o'clock.") == "don't call after nine o'clock"
    s = make_sentence("my code is A B 7 and a dog", "test")
    assert s.text == "my code is a b seven and a dog"
    assert s.spoken == "my code is A B seven and a dog"
    assert engine_text(s.spoken, "espeak") == "my code is eh b seven and a dog"
    assert engine_text(s.spoken, "flite") == "my code is ay b seven and a dog"
    with pytest.raises(ValueError, match="not a plain word"):
        normalize_transcript("café ünïcode")
    assert sentence_pieces("Login incorrect.  Please try again") == (
        "login incorrect", "please try again")
    assert contains_phrase("please try again later", "try again")
    assert not contains_phrase("please try again later", "try aga")


@pytest.mark.parametrize("key, raw, expected", [
    ("vm-review", "press 1 to accept this recording", "press one to accept this recording"),
    ("dictate/forhelp", "press * for help, # to exit", "press star for help pound to exit"),
    ("letters/at", "at [@]", "at"),
    ("letters/a", "a", "a"),
    ("digits/a-m", "A.M.", "a m"),
    ("confbridge-binaural-on", "3D audio enabled", "three d audio enabled"),
    ("vm-intro", "Leave your message. (simple tone sound plays)", "leave your message"),
    ("conf-x", "umute all non-administrator users", "unmute all non administrator users"),
    ("to-rerecord-it", "To re-record it.", "to rerecord it"),
    ("beep", "[this is a simple beep tone]", None),
    ("silence/1", "(1 second of silence)", None),
    ("spy-sip", "SIP", None),
    ("demo-instruct", "dial 500 for an echo test", None),
    ("demo-moreinfo", "visit www.asterisk.org", None),
])
def test_asterisk_transcript_cleaning(key, raw, expected):
    cleaned, why = clean_prompt_text(key, raw)
    if expected is None:
        assert cleaned is None and why
    else:
        assert normalize_transcript(cleaned) == expected and why == ""
    if key == "letters/a":
        assert make_sentence(cleaned, key).spoken == "A"  # the letter, not the article


def test_templates_and_word_lists_make_clean_sentences():
    gen = SentenceGenerator()
    rng = random.Random(0)
    assert len(gen.templates) >= 100
    for template in gen.templates:
        for _ in range(3):
            s = make_sentence(gen.fill(template, rng), "t")
            assert TRANSCRIPT.fullmatch(s.text), (template, s.text)
            assert s.text == s.spoken.lower()
    for path in sorted(DEFAULT_TEXT_DIR.glob("*.txt")):
        for line in read_lines(path):
            if path.name != "templates.txt":
                assert normalize_transcript(line) == line, (path.name, line)
    assert len(gen.unique_sentences(300, random.Random(1))) == 300


# --- audio ----------------------------------------------------------------------------------


def test_resample_and_telephone_channel():
    t = np.arange(16000) / 16000
    tone = resample(np.sin(2 * np.pi * 700 * t), 16000, 8000)
    spectrum = np.abs(np.fft.rfft(tone))
    assert len(tone) == 8000 and spectrum.argmax() == 700
    assert abs(np.sqrt(2 * np.mean(tone[200:-200] ** 2)) - 1) < 0.01
    high = resample(np.sin(2 * np.pi * 5000 * t), 16000, 8000)  # above 4 kHz: removed
    assert np.sqrt(np.mean(high[200:-200] ** 2)) < 0.01

    speech = np.random.default_rng(0).standard_normal(22050).astype(np.float32) * 0.3
    a = telephone_channel(speech, 22050, Channel(), seed=5)
    b = telephone_channel(speech, 22050, Channel(), seed=5)
    c = telephone_channel(speech, 22050, Channel(), seed=6)
    assert a.dtype == np.int16 and np.array_equal(a, b) and not np.array_equal(a, c)
    assert 8000 < len(a) < 8000 + 2 * 0.3 * 8000 + 1
    x = a.astype(np.float64)
    spec = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / 8000)
    in_band = spec[(freqs > 500) & (freqs < 3000)].mean()
    assert spec[freqs < 150].mean() < in_band / 100  # band-pass removed the low end
    plain = telephone_channel(speech, 22050, Channel(bandpass=None, snr_db=None,
                                                     mulaw=False), seed=5)
    assert plain.dtype == np.int16 and not np.array_equal(plain, a)


def test_voices_are_distinct_speakers():
    voices = all_voices()
    speakers = [v.speaker for v in voices]
    assert len(set(speakers)) == len(speakers) >= 90
    assert all(re.fullmatch(r"[a-z0-9_]+", s) for s in speakers)
    assert set(HELD_OUT_SPEAKERS) <= set(speakers)
    assert {v.engine for v in voices if v.speaker in HELD_OUT_SPEAKERS} == {"espeak", "flite"}
    assert Voice("espeak", "en-gb-x-rp", "f2").engine_voice == "en-gb-x-rp+f2"
    job = SynthJob("u", voices[0], "hi", 1.0, 50, Channel(), 1, "a.wav")
    assert job == SynthJob("u", voices[0], "hi", 1.0, 50, Channel(), 1, "b.wav")


# --- the miniature corpus -------------------------------------------------------------------


def test_splits_validate_clean(corpus):
    for split in SPLITS:
        problems = validate_data_dir(corpus / split)
        assert problems == [], [str(p) for p in problems]
        for name in ("wav.scp", "text", "utt2spk", "spk2utt", "utt2dur", "spk2gender"):
            assert (corpus / split / name).is_file(), (split, name)
    sizes = {split: len(DataDir.load(corpus / split)) for split in SPLITS}
    assert sizes == {"train": 24, "dev": 6, "test_real": 6, "test_synth": 8}


def test_audio_is_8khz_16bit_and_durations_match(corpus):
    for split in SPLITS:
        durations = _table(corpus / split / "utt2dur")
        for utt, path in _table(corpus / split / "wav.scp").items():
            assert path.startswith(str(corpus / "wav")) and path.endswith(".wav")
            info = sf.info(path)
            assert (info.samplerate, info.subtype, info.channels) == (8000, "PCM_16", 1)
            assert abs(info.duration - float(durations[utt])) < 1e-3, utt
            assert info.duration > 0.3


def test_transcripts_are_normalized_words(corpus):
    for split in SPLITS:
        for utt, text in _table(corpus / split / "text").items():
            assert TRANSCRIPT.fullmatch(text), (split, utt, text)
            assert not re.search(r"[0-9]", text)


def test_speakers_prefix_utterances_and_engines(corpus):
    speakers = {}
    for split in SPLITS:
        for utt, spk in _table(corpus / split / "utt2spk").items():
            assert utt.startswith(spk + "-")
            speakers.setdefault(split, set()).add(spk)
    assert speakers["test_real"] == {REAL_SPEAKER}
    assert REAL_SPEAKER in speakers["train"]  # real speech in training
    assert speakers["test_synth"] <= set(HELD_OUT_SPEAKERS)
    assert any(s.startswith("fl_") for s in speakers["train"])
    assert any(s.startswith("es_") for s in speakers["train"])


def test_split_hygiene(corpus):
    phrases = (corpus / "held_out_phrases.txt").read_text().splitlines()
    counts = check_hygiene({s: corpus / s for s in SPLITS}, HELD_OUT_SPEAKERS, phrases)
    assert counts["test_real_texts"] >= 1 and counts["test_synth_speakers"] >= 1

    # The same, spelled out: no test sentence (whole, or inside a longer transcript) in
    # train/dev; no held-out voice in train/dev.
    training = [t for s in ("train", "dev") for t in _table(corpus / s / "text").values()]
    training_speakers = {spk for s in ("train", "dev")
                         for spk in _table(corpus / s / "utt2spk").values()}
    for split in ("test_real", "test_synth"):
        for text in _table(corpus / split / "text").values():
            assert not any(contains_phrase(t, text) for t in training), (split, text)
    assert not set(_table(corpus / "test_synth" / "utt2spk").values()) & training_speakers
    assert not set(HELD_OUT_SPEAKERS) & training_speakers

    # test_real: byte-identical copies of Asterisk recordings whose every sentence is
    # absent from train and dev.
    transcripts = read_prompt_transcripts()
    keys = {p.relative_to(ASTERISK_SOUND_DIR).with_suffix("").as_posix().replace("/", "_"):
            p for p in ASTERISK_SOUND_DIR.rglob("*.wav")}
    texts = _table(corpus / "test_real" / "text")
    for utt, path in _table(corpus / "test_real" / "wav.scp").items():
        source = keys[utt.split("-", 1)[1]]
        assert Path(path).read_bytes() == source.read_bytes()
        key = source.relative_to(ASTERISK_SOUND_DIR).with_suffix("").as_posix()
        cleaned, _ = clean_prompt_text(key, transcripts[key])
        assert normalize_transcript(cleaned) == texts[utt]
        for piece in sentence_pieces(cleaned):
            assert piece in phrases
            assert not any(contains_phrase(t, piece) for t in training), (utt, piece)


def test_hygiene_check_catches_leaks():
    def split(rows):
        d = DataDir()
        d.set_table("text", {u: t for u, _, t in rows})
        d.set_table("utt2spk", {u: s for u, s, _ in rows})
        d.set_table("wav.scp", {u: "/dev/null" for u, _, _ in rows})
        return d

    train = split([("es_en_m1-tr00000", "es_en_m1", "please hold the line for billing")])
    ok = {"train": train,
          "test_real": split([("ast_allison-x", "ast_allison", "goodbye for now")]),
          "test_synth": split([("es_en_us_m2-ts00000", "es_en_us_m2", "call me later")])}
    check_hygiene(ok)
    leaks = [
        ({"test_real": split([("ast_allison-x", "ast_allison", "hold the line")])},
         "test_real sentences"),
        ({"test_synth": split([("es_en_m1-ts00000", "es_en_m1", "call me later")])},
         "test_synth speakers"),
        ({"dev": split([("es_en_us_m2-dv00000", "es_en_us_m2", "new words")])},
         "held-out voices"),
        ({"dev": split([("es_en_m1-dv00000", "es_en_m1", "please hold the line for billing")])},
         "dev sentences also in train"),
    ]
    for change, message in leaks:
        with pytest.raises(HygieneError, match=message):
            check_hygiene({**ok, **change})
    with pytest.raises(HygieneError, match="held-out phrases"):
        check_hygiene(ok, held_out_phrases=["for billing"])


def test_stats_file(corpus):
    import json

    stats = json.loads((corpus / "corpus_stats.json").read_text())
    for split, n in (("train", 24), ("dev", 6), ("test_real", 6), ("test_synth", 8)):
        s = stats["splits"][split]
        assert s["utterances"] == n and s["hours"] * 3600 == pytest.approx(s["seconds"], abs=2)
        assert sum(s["engines"].values()) == n
    assert stats["splits"]["test_real"]["real_utterances"] == 6
    assert stats["sample_rate"] == 8000 and stats["config"]["seed"] == 3


def test_rerun_is_idempotent_and_resumes(corpus):
    before = _snapshot(corpus)
    logs: list[str] = []
    build_corpus(corpus, MINI, nj=2, progress=False, log=logs.append)
    assert _snapshot(corpus) == before  # nothing rewritten, nothing added or removed
    assert any("0 to synthesize" in line for line in logs)

    # An interrupted build: a missing file and a leftover temp file. The re-run makes the
    # same bytes again (synthesis is deterministic) and cleans up.
    wavs = _table(corpus / "train" / "wav.scp")
    victim = next(p for u, p in sorted(wavs.items()) if not u.startswith(REAL_SPEAKER))
    original = Path(victim).read_bytes()
    os.unlink(victim)
    stray = Path(victim).parent / ".stray.wav.123.tmp"
    stray.write_bytes(b"partial")
    logs.clear()
    build_corpus(corpus, MINI, nj=1, progress=False, log=logs.append)
    assert Path(victim).read_bytes() == original
    assert not stray.exists()
    assert any("1 to synthesize" in line for line in logs)
    assert {k: v for k, v in _snapshot(corpus).items() if k != victim} == {
        k: v for k, v in before.items() if k != victim}


def test_rerun_keeps_features_of_later_stages(corpus):
    # Feature extraction adds feats.scp and rewrites utt2dur with 4 decimals; a re-run of
    # the corpus stage with the same settings must not throw that work away.
    train = corpus / "train"
    utt2dur = (train / "utt2dur").read_text()
    rounded = "".join(f"{u} {float(d):.4f}\n" for u, d in _table(train / "utt2dur").items())
    (train / "utt2dur").write_text(rounded)
    (train / "feats.scp").write_text("")
    try:
        build_corpus(corpus, MINI, nj=1, progress=False, log=lambda _: None)
        assert (train / "feats.scp").exists() and (train / "utt2dur").read_text() == rounded
    finally:
        (train / "feats.scp").unlink()
        (train / "utt2dur").write_text(utt2dur)


def test_test_sets_do_not_depend_on_training_sizes(tmp_path):
    _require_tools()
    small = plan_corpus(MINI, tmp_path, log=lambda _: None)
    big = plan_corpus(CorpusConfig(num_train=60, num_dev=9, num_test_synth=8,
                                   num_test_real=6, seed=3), tmp_path, log=lambda _: None)
    for split in ("test_real", "test_synth"):
        assert [(u.utt, u.text, u.wav) for u in small.splits[split]] == [
            (u.utt, u.text, u.wav) for u in big.splits[split]]
    assert len(big.splits["train"]) == 60 and len(small.splits["train"]) == 24
    other_seed = plan_corpus(CorpusConfig(**{**QUICK_SIZES, "num_train": 24, "num_dev": 6,
                                             "seed": 4}), tmp_path, log=lambda _: None)
    assert other_seed.splits["test_synth"][0].text != small.splits["test_synth"][0].text


def test_command_line_options():
    quick = config_from_args(parser().parse_args(["--quick"]))
    assert {k: getattr(quick, k) for k in QUICK_SIZES} == QUICK_SIZES
    mixed = config_from_args(parser().parse_args(
        ["--quick", "true", "--num-train", "50", "--noise", "false", "--bandpass", "false",
         "--snr-db", "20,30", "--held-out-speakers", "fl_rms,es_en_m1"]))
    assert mixed.num_train == 50 and mixed.num_dev == QUICK_SIZES["num_dev"]
    assert mixed.channel.snr_db is None and mixed.channel.bandpass is None
    assert mixed.held_out_speakers == ("fl_rms", "es_en_m1")
    full = config_from_args(parser().parse_args(["--snr-db", "20,30"]))
    assert full.num_train == CorpusConfig().num_train and full.channel.snr_db == (20.0, 30.0)


def test_command_line_errors(tmp_path, capsys):
    assert main(["--data-dir", str(tmp_path), "--num-train", "0"]) == 2
    assert "--num-train must be >= 1" in capsys.readouterr().err
    assert main(["--data-dir", str(tmp_path), "--held-out-speakers", "nobody"]) == 2
    assert "unknown synthetic speaker 'nobody'" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # a mistake leaves nothing behind
