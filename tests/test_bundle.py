"""Bundles: make one from a trained checkpoint, load it with ``blspeech.load_bundle``,
transcribe files and arrays (equal to ``blspeech decode`` on the same audio), encode,
``blspeech transcribe`` (text and CTM), and safe, clear rejection of foreign, corrupt and
malicious files."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import make_data_dir

import blspeech
from blspeech.cli import main as cli_main
from blspeech.errors import UserError
from blspeech.frontend.extract import compute_cmvn, compute_feats
from blspeech.inference.decode import decode_data_dir
from blspeech.io.kaldi import read_table
from blspeech.training.config import read_config_file
from blspeech.training.trainer import train

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, OMP_NUM_THREADS="1",
           PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny CTC model overfit on 4 utterances (so its transcripts are words), a bundle."""
    root = tmp_path_factory.mktemp("bundle")
    data = make_data_dir(root, n_utts=4, sample_rate=8000, n_speakers=1)
    compute_feats(data, nj=1, frontend_config={"num_mel_bins": 40}, progress=False)
    compute_cmvn(data)
    lang = root / "lang"
    assert cli_main(["train-tokenizer", str(data), str(lang), "--kind", "char"]) == 0
    cfg = read_config_file("ctc_tiny")
    cfg["training"].update(epochs=60, average_last_n=0)
    cfg["optim"]["lr"] = 0.01
    cfg["data"].update(buckets=1, max_frames=4000)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(cfg, train_dir=data, dev_dir=data, tokenizer_dir=lang, exp_dir=root / "exp",
              device="cpu", resume=False)
    finally:
        torch.set_num_threads(threads)
    ckpt = root / "exp" / "last.pt"
    bundle = root / "model.bundle"
    assert cli_main(["make-bundle", str(ckpt), str(bundle)]) == 0
    decoded = decode_data_dir(str(ckpt), data, root / "decode", progress=False)
    assert decoded["wer"] is not None
    hyps = {u: e.value for u, e in read_table(root / "decode" / "text",
                                               allow_empty_value=True).items()}
    wavs = {u: e.value for u, e in read_table(data / "wav.scp").items()}
    return {"root": root, "data": data, "ckpt": ckpt, "bundle": bundle, "hyps": hyps,
            "wavs": wavs}


def test_transcribe_equals_decode_and_parts_are_there(trained):
    asr = blspeech.load_bundle(trained["bundle"])
    assert asr.sample_rate == 8000 and asr.tokenizer is not None and asr.cmvn is not None
    assert asr.frontend.config()["num_mel_bins"] == 40
    assert not any(m.training for m in asr.model.modules())
    utts = sorted(trained["wavs"])
    # Files, one by one and as a list: the same words as 'blspeech decode' on feats.scp.
    texts = asr.transcribe([trained["wavs"][u] for u in utts])
    assert texts == [trained["hyps"][u] for u in utts]
    assert any(texts)  # the overfit model says something
    audio, rate = sf.read(trained["wavs"][utts[0]], dtype="float32")
    assert asr.transcribe(audio, sample_rate=rate) == trained["hyps"][utts[0]]
    # 16 kHz input is resampled to the model's 8 kHz.
    up = torch.from_numpy(audio).repeat_interleave(2).numpy()
    assert isinstance(asr.transcribe(up, sample_rate=16000), str)


def test_encode_is_the_encoder_on_normalized_features(trained):
    asr = blspeech.load_bundle(trained["bundle"])
    audio, _ = sf.read(next(iter(trained["wavs"].values())), dtype="float32")
    feats, frames = asr.features(torch.from_numpy(audio))
    enc, enc_lengths = asr.encode(feats, frames)
    assert enc.shape[-1] == asr.model.encoder.output_size()
    with torch.inference_mode():
        want, want_lengths = asr.model.encoder(asr.cmvn(feats, frames), frames)
    assert torch.equal(enc, want) and torch.equal(enc_lengths, want_lengths)
    log_probs, _ = asr.log_probs(feats, frames)
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(log_probs.shape[:2]), atol=1e-4)


def test_a_checkpoint_and_its_bundle_file_load_as_one_kind_of_object(trained, tmp_path):
    """load_acoustic_model (BatchNorm folded) and load_bundle give the same class with the
    same outputs, and a loaded bundle file decodes a data dir like its checkpoint."""
    from blspeech.inference.model import Bundle, load_acoustic_model

    from_ckpt = load_acoustic_model(trained["ckpt"])
    from_file = blspeech.load_bundle(trained["bundle"])
    assert type(from_ckpt) is Bundle and type(from_file) is Bundle
    audio, _ = sf.read(next(iter(trained["wavs"].values())), dtype="float32")
    feats, frames = from_file.features(torch.from_numpy(audio))
    a, a_lengths = from_ckpt.log_probs(feats, frames)
    b, b_lengths = from_file.log_probs(feats, frames)
    assert torch.equal(a_lengths, b_lengths)
    assert float((a - b).abs().max()) < 1e-3
    wav = next(iter(trained["wavs"].values()))
    assert from_ckpt.transcribe(wav) == from_file.transcribe(wav)
    decode_data_dir(from_file, trained["data"], tmp_path / "decode", progress=False)
    got = {u: e.value for u, e in read_table(tmp_path / "decode" / "text",
                                             allow_empty_value=True).items()}
    assert got == trained["hyps"]


def test_transcribe_command_text_and_ctm(trained):
    wav = trained["wavs"][sorted(trained["wavs"])[0]]
    utt = sorted(trained["wavs"])[0]
    r = subprocess.run([sys.executable, "-m", "blspeech", "transcribe", str(trained["bundle"]),
                        wav], capture_output=True, text=True, env=ENV, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{wav} {trained['hyps'][utt]}".strip()
    r = subprocess.run([sys.executable, "-m", "blspeech", "transcribe", str(trained["bundle"]),
                        wav, "--ctm"], capture_output=True, text=True, env=ENV, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = [line.split() for line in r.stdout.splitlines()]
    name = os.path.splitext(os.path.basename(wav))[0]
    assert [x[4] for x in lines] == trained["hyps"][utt].split()
    assert all(x[0] == name and x[1] == "1" for x in lines)
    starts = [float(x[2]) for x in lines]
    assert starts == sorted(starts)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch EVIL_RAN",))


def test_foreign_corrupt_and_malicious_files_are_rejected(trained, tmp_path, monkeypatch,
                                                          capsys):
    monkeypatch.chdir(tmp_path)
    cases = {}
    evil = tmp_path / "evil.bundle"
    evil.write_bytes(pickle.dumps({"format": "blspeech-bundle", "x": _Evil()}))
    cases[evil] = "not a readable blspeech bundle"
    buf = io.BytesIO()
    torch.save({"format": "blspeech-bundle", "version": 1, "x": _Evil()}, buf)
    evil2 = tmp_path / "evil2.bundle"
    evil2.write_bytes(buf.getvalue())
    cases[evil2] = "not a readable blspeech bundle"
    truncated = tmp_path / "cut.bundle"
    truncated.write_bytes(trained["bundle"].read_bytes()[:5000])
    cases[truncated] = "not a readable blspeech bundle"
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    cases[other] = "not a blspeech bundle"
    cases[trained["ckpt"]] = "a blspeech training checkpoint; make a bundle with"
    text = tmp_path / "text.bundle"
    text.write_text("hello")
    cases[text] = "not a readable blspeech bundle"
    entries = torch.load(trained["bundle"], weights_only=True)
    future = tmp_path / "future.bundle"
    torch.save({**entries, "version": 99}, future)
    cases[future] = "bundle version 99"
    broken = tmp_path / "broken.bundle"
    torch.save({**entries, "model": {"head.weight": torch.zeros(1)}}, broken)
    cases[broken] = "the weights do not fit the model config"
    cases[tmp_path / "missing.bundle"] = "not found"
    for path, message in cases.items():
        with pytest.raises(UserError, match=message):
            blspeech.load_bundle(path)
        assert cli_main(["transcribe", str(path), "x.wav"]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "EVIL_RAN").exists()  # loading ran none of the payloads


def test_bad_audio_and_bad_make_bundle_options(trained, tmp_path, capsys):
    bundle = str(trained["bundle"])
    assert cli_main(["transcribe", bundle, str(tmp_path / "nope.wav")]) == 2
    assert "nope.wav" in capsys.readouterr().err
    (tmp_path / "bad.wav").write_bytes(b"RIFF0000WAVEjunk")
    assert cli_main(["transcribe", bundle, str(tmp_path / "bad.wav")]) == 2
    err = capsys.readouterr().err
    assert "bad.wav" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(UserError, match="one channel"):
        blspeech.load_bundle(bundle).transcribe(np.zeros((2, 8000), np.float32))
    assert cli_main(["make-bundle", str(trained["ckpt"]), str(tmp_path / "x.bundle"),
                     "--prior-scale", "0.5"]) == 2
    assert "for hybrid models" in capsys.readouterr().err
    assert not (tmp_path / "x.bundle").exists()


def test_long_recordings_run_in_chunks_with_the_same_result(trained):
    """A recording of all four utterances back to back, transcribed in chunks of 100
    frames (much less than the recording) and in one pass: the same words."""
    asr = blspeech.load_bundle(trained["bundle"])
    audio = np.concatenate([sf.read(trained["wavs"][u], dtype="float32")[0]
                            for u in sorted(trained["wavs"])])
    feats, frames = asr.features(torch.from_numpy(audio))
    assert int(frames[0]) > 400
    asr.chunk_frames = None
    whole = asr.transcribe_words(audio)[0]
    asr.chunk_frames = 100
    chunked = asr.transcribe_words(audio)[0]
    assert [(w.word, w.start) for w in chunked] == [(w.word, w.start) for w in whole]
    assert len(whole) >= 4
