"""Shared test fixtures: small Kaldi data dirs with real synthesized speech.

Speech comes from espeak-ng (a Debian package that ``make setup`` installs); the tests
never download anything. Helpers here are plain functions so test modules can build
variants (other rates, segments, pipes) in their own ``tmp_path``.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from blspeech.decoding.wfst.graph import load_kaldi_hmm_gmm_first

# Test modules import kaldi_decoder / kaldifst at collection (importorskip), and
# kaldi-hmm-gmm hangs on import once those are loaded: load it first, whatever subset of
# the tests runs (test_wfst.py alone used to hang here).
load_kaldi_hmm_gmm_first()

SENTENCES = [
    "call me at five five five one two three four",
    "your account balance is twelve dollars",
    "please hold while we transfer your call",
    "the meeting is on monday at nine thirty",
    "press one for sales or two for support",
    "thank you for calling goodbye",
    "i would like to check my order status",
    "the number you have dialed is not in service",
]
VOICES = ["en-us", "en-gb+f3", "en-us+m3", "en-gb-scotland"]

# Under pytest-xdist (``make test`` runs two workers on two cores) each worker and the
# processes its tests start use one thread: two OpenMP teams of two threads on two cores
# stall each other at every barrier.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def _espeak_wav(text: str, voice: str, speed: int) -> bytes:
    """espeak-ng's wav bytes; kept in $BLSPEECH_TEST_SPEECH_CACHE when that is set.

    The cache lets the suite run where espeak-ng cannot be installed (the GPU machine):
    fill it by running the tests once where espeak-ng is, then copy the folder.
    """
    cache = os.environ.get("BLSPEECH_TEST_SPEECH_CACHE")
    key = hashlib.sha256(f"{voice}\0{speed}\0{text}".encode()).hexdigest()[:20]
    cached = Path(cache, f"{key}.wav") if cache else None
    if cached is not None and cached.is_file():
        return cached.read_bytes()
    if not espeak_available():
        pytest.fail("espeak-ng is not installed: run 'make setup' as root (or apt-get "
                    "install espeak-ng)")
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "--stdout", text],
                         check=True, capture_output=True).stdout
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(wav)
        os.replace(tmp, cached)
    return wav


def synthesize(text: str, voice: str = "en-us", sample_rate: int = 16000,
               speed: int = 160) -> np.ndarray:
    """Speak ``text`` with espeak-ng; float32 mono at ``sample_rate``."""
    import torch
    import torchaudio

    wav = _espeak_wav(text, voice, speed)
    audio, rate = sf.read(io.BytesIO(wav), dtype="float32")
    if rate != sample_rate:
        audio = torchaudio.functional.resample(torch.from_numpy(audio), rate,
                                               sample_rate).numpy()
    return audio.astype(np.float32)


def make_data_dir(root: Path, n_utts: int = 6, sample_rate: int = 16000,
                  n_speakers: int = 2, subtype: str = "PCM_16") -> Path:
    """A sorted Kaldi data dir at ``root/data`` with wav files under ``root/wav``.

    Speaker ``spk{j}`` uses voice ``VOICES[j]``; utterance ids are ``spk{j}-utt{i}`` so
    that sorting by utterance also sorts by speaker (Kaldi's convention).
    """
    wav_dir, data = root / "wav", root / "data"
    wav_dir.mkdir(parents=True, exist_ok=True)
    data.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_utts):
        spk = f"spk{i % n_speakers}"
        utt = f"{spk}-utt{i:03d}"
        text = SENTENCES[i % len(SENTENCES)]
        path = wav_dir / f"{utt}.wav"
        sf.write(path, synthesize(text, VOICES[i % n_speakers % len(VOICES)], sample_rate),
                 sample_rate, subtype=subtype)
        rows.append((utt, spk, str(path), text))
    rows.sort()
    (data / "wav.scp").write_text("".join(f"{u} {p}\n" for u, _, p, _ in rows))
    (data / "text").write_text("".join(f"{u} {t}\n" for u, _, _, t in rows))
    (data / "utt2spk").write_text("".join(f"{u} {s}\n" for u, s, _, _ in rows))
    spk2utt: dict[str, list[str]] = {}
    for u, s, _, _ in rows:
        spk2utt.setdefault(s, []).append(u)
    (data / "spk2utt").write_text("".join(f"{s} {' '.join(us)}\n"
                                          for s, us in sorted(spk2utt.items())))
    return data


@pytest.fixture(scope="session")
def speech_data_dir(tmp_path_factory) -> Path:
    """Six real synthesized utterances, two speakers, 16 kHz 16-bit wav (read-only use)."""
    return make_data_dir(tmp_path_factory.mktemp("speech16k"))


@pytest.fixture(scope="session")
def speech_data_dir_8k(tmp_path_factory) -> Path:
    """Six utterances at 8 kHz (telephone band), two speakers (read-only use)."""
    return make_data_dir(tmp_path_factory.mktemp("speech8k"), sample_rate=8000)
