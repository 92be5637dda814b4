"""Audio input: files (wav, flac, SPHERE), wav.scp commands, channels, segments, rates."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from blspeech.errors import UserError
from blspeech.io.audio import NO_COMMANDS_ENV, AudioError, AudioReader, read_audio


def copy_data(src: Path, dst: Path) -> Path:
    """The tables of a data dir (not the audio, which stays shared and read-only)."""
    shutil.copytree(src, dst)
    return dst


def wav_path(data: Path, utt: str) -> str:
    return dict(line.split(" ", 1) for line in (data / "wav.scp").read_text().splitlines())[utt]


def set_wav(data: Path, utt: str, value: str) -> None:
    lines = [line if line.split(" ", 1)[0] != utt else f"{utt} {value}"
             for line in (data / "wav.scp").read_text().splitlines()]
    (data / "wav.scp").write_text("\n".join(lines) + "\n")


def test_reader_reads_sorted_utterances(speech_data_dir):
    reader = AudioReader(speech_data_dir)
    assert reader.utterance_ids == sorted(reader.utterance_ids)
    assert len(reader.utterance_ids) == 6
    assert reader.sample_rate == 16000
    audio = reader.read("spk0-utt000")
    expected, rate = sf.read(wav_path(speech_data_dir, "spk0-utt000"), dtype="float32")
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert np.array_equal(audio, expected) and rate == 16000
    assert np.abs(audio).max() <= 1.0 and np.abs(audio).max() > 0.05


def test_flac_and_sphere_equal_wav(speech_data_dir, tmp_path):
    wav = wav_path(speech_data_dir, "spk0-utt000")
    ref, rate = read_audio(wav)
    flac, sph = tmp_path / "x.flac", tmp_path / "x.sph"
    sf.write(flac, ref, rate, subtype="PCM_16")
    sf.write(sph, ref, rate, format="NIST", subtype="PCM_16")
    for path in (flac, sph):
        audio, got_rate = read_audio(str(path))
        assert got_rate == rate and np.array_equal(audio, ref), path


def test_sox_pipe_and_speed_perturbation(speech_data_dir):
    wav = wav_path(speech_data_dir, "spk0-utt000")
    ref, _ = read_audio(wav)
    piped, rate = read_audio(f"sox {wav} -t wav - |")
    assert rate == 16000 and np.array_equal(piped, ref)
    slow, rate = read_audio(f"sox {wav} -t wav - speed 0.9 |", 16000)
    assert rate == 16000 and abs(len(slow) / len(ref) - 1 / 0.9) < 0.01


def test_reader_runs_wavscp_commands(speech_data_dir, tmp_path):
    data = copy_data(speech_data_dir, tmp_path / "data")
    wav = wav_path(data, "spk1-utt003")
    set_wav(data, "spk1-utt003", f"sox {wav} -t flac - |")
    audio = AudioReader(data).read("spk1-utt003")
    assert np.array_equal(audio, read_audio(wav)[0])


def test_failing_and_empty_commands_are_errors(tmp_path):
    with pytest.raises(AudioError, match=r"exit code 3: .*no such recording; line two$"):
        read_audio("echo no such recording >&2; echo line two >&2; exit 3 |")
    with pytest.raises(AudioError, match="wrote no audio"):
        read_audio("true |")
    with pytest.raises(AudioError, match="cannot read the command's output"):
        read_audio("echo not audio |")


def test_commands_can_be_disabled(speech_data_dir, tmp_path, monkeypatch):
    data = copy_data(speech_data_dir, tmp_path / "data")
    set_wav(data, "spk1-utt003", f"sox {wav_path(data, 'spk1-utt003')} -t wav - |")
    with pytest.raises(AudioError, match=r"wav.scp:5: utt 'spk1-utt003': wav.scp commands are "
                                         r"disabled"):
        AudioReader(data, allow_commands=False).read("spk1-utt003")
    assert len(AudioReader(data).read("spk1-utt003")) > 0
    monkeypatch.setenv(NO_COMMANDS_ENV, "1")  # the environment switch wins
    with pytest.raises(AudioError, match="disabled"):
        AudioReader(data, allow_commands=True).read("spk1-utt003")
    with pytest.raises(AudioError, match="disabled"):
        read_audio("true |", allow_commands=True)


def test_channel_selection(tmp_path):
    rate = 8000
    t = np.arange(rate) / rate
    left, right = 0.5 * np.sin(2 * np.pi * 300 * t), 0.25 * np.sin(2 * np.pi * 700 * t)
    stereo = tmp_path / "stereo.wav"
    sf.write(stereo, np.stack([left, right], axis=1), rate, subtype="PCM_16")
    data = tmp_path / "data"
    data.mkdir()
    (data / "wav.scp").write_text(f"a {stereo}\nb {stereo}\nc {stereo}\n")
    (data / "reco2file_and_channel").write_text("a stereo A\nb stereo B\nc stereo 2\n")
    reader = AudioReader(data)
    assert np.allclose(reader.read("a"), left, atol=1e-4)
    assert np.allclose(reader.read("b"), right, atol=1e-4)
    assert np.allclose(reader.read("c"), right, atol=1e-4)
    assert np.allclose(read_audio(str(stereo), channel=1)[0], right, atol=1e-4)
    with pytest.raises(AudioError, match="channel 2 requested .* 2 channel"):
        read_audio(str(stereo), channel=2)
    (data / "reco2file_and_channel").write_text("a stereo X\n")
    with pytest.raises(AudioError, match=r"reco2file_and_channel:1: expected"):
        AudioReader(data)


def test_segments(speech_data_dir, tmp_path):
    data = copy_data(speech_data_dir, tmp_path / "data")
    full = AudioReader(data).read("spk0-utt000")
    duration = len(full) / 16000
    (data / "segments").write_text(
        "seg-a spk0-utt000 0.10 0.60\n"
        f"seg-b spk0-utt000 0.50 {duration + 0.005:.4f}\n"      # within one frame: clipped
        f"seg-c spk0-utt000 1.00 {duration + 1.0:.4f}\n")       # past the end
    reader = AudioReader(data)
    assert reader.utterance_ids == ["seg-a", "seg-b", "seg-c"]
    assert np.array_equal(reader.read("seg-a"), full[1600:9600])
    assert np.array_equal(reader.read("seg-b"), full[8000:])
    with pytest.raises(AudioError, match=r"segments:3: utt 'seg-c': segment .* ends past the "
                                         r"end of recording 'spk0-utt000'"):
        reader.read("seg-c")
    # The same through a command (run once, cut in memory).
    set_wav(data, "spk0-utt000", f"sox {wav_path(data, 'spk0-utt000')} -t wav - |")
    reader = AudioReader(data)
    assert np.array_equal(reader.read("seg-a"), full[1600:9600])
    with pytest.raises(AudioError, match="segments:3: utt 'seg-c'"):
        reader.read("seg-c")
    (data / "segments").write_text("seg-a nope 0 1\n")
    with pytest.raises(AudioError, match=r"segments:1: utt 'seg-a': recording 'nope' is not"):
        AudioReader(data)


def test_resampling(speech_data_dir_8k):
    native = AudioReader(speech_data_dir_8k)
    assert native.sample_rate == 8000
    audio8 = native.read("spk0-utt000")
    up = AudioReader(speech_data_dir_8k, 16000)
    audio16 = up.read("spk0-utt000")
    assert up.sample_rate == 16000 and len(audio16) == 2 * len(audio8)
    expected = torchaudio.functional.resample(torch.from_numpy(audio8), 8000, 16000).numpy()
    assert np.allclose(audio16, expected, atol=1e-6)
    strict = AudioReader(speech_data_dir_8k, 16000, resample=False)
    with pytest.raises(AudioError, match=r"wav.scp:1: utt 'spk0-utt000': sample rate is 8000 "
                                         r"Hz but 16000 Hz is required"):
        strict.read("spk0-utt000")


@pytest.mark.parametrize("case", ["missing", "corrupt", "empty", "short"])
def test_bad_files_name_file_line_and_utterance(speech_data_dir, tmp_path, case):
    data = copy_data(speech_data_dir, tmp_path / "data")
    bad = tmp_path / "bad.wav"
    if case == "corrupt":
        bad.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk" + bytes(range(200)))
    elif case == "empty":
        sf.write(bad, np.zeros(0, dtype=np.float32), 16000, subtype="PCM_16")
    elif case == "short":
        sf.write(bad, np.full(100, 0.1, dtype=np.float32), 16000, subtype="PCM_16")
    set_wav(data, "spk1-utt003", str(bad))
    expected = {"missing": "file not found", "corrupt": "cannot read", "empty": "empty audio",
                "short": "too short: 100 samples"}[case]
    with pytest.raises(AudioError) as info:
        AudioReader(data).read("spk1-utt003")
    message = str(info.value)
    assert message.startswith(f"{data / 'wav.scp'}:5: utt 'spk1-utt003': ")
    assert expected in message
    assert isinstance(info.value, UserError)
