"""Bad input at the I/O edges (issue 12): commands switched off everywhere, non-finite
features in CMVN, truncated wav files, replaced audio, a full disk, sox randomness, hanging
pipes, and messages for garbage and misplaced scp offsets."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from blspeech.errors import UserError
from blspeech.frontend.extract import compute_cmvn, compute_feats
from blspeech.frontend.features import LogMel
from blspeech.io.audio import AudioError, AudioReader, read_audio
from blspeech.io.datadir import perturb_speed, validate_data_dir
from blspeech.io.kaldi import (
    KaldiFormatError,
    ScpReader,
    cmvn_stats,
    read_int_vectors,
    read_matrices,
    read_matrix,
    read_table,
    write_matrices,
    write_matrix,
)
from blspeech.io.kaldi.pipes import NO_COMMANDS_ENV, PIPE_TIMEOUT_ENV

FRONTEND = LogMel(sample_rate=8000, num_mel_bins=40).config()
ENV = {k: v for k, v in os.environ.items() if k not in (NO_COMMANDS_ENV, PIPE_TIMEOUT_ENV)}
ENV["OMP_NUM_THREADS"] = "1"


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "blspeech", *map(str, args)],
                          capture_output=True, text=True, env={**ENV, **(env or {})},
                          timeout=300)


def set_entry(path: Path, key: str, value: str) -> int:
    """Replace the value of ``key`` in a table; returns its line number."""
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.split(" ", 1)[0] == key:
            lines[i] = f"{key} {value}"
            path.write_text("\n".join(lines) + "\n")
            return i + 1
    raise KeyError(key)


@pytest.fixture(scope="module")
def feats_dir(speech_data_dir_8k, tmp_path_factory) -> Path:
    """A copy of the 8 kHz data dir with features (read-only use: copy it to change it)."""
    data = tmp_path_factory.mktemp("feats") / "data"
    shutil.copytree(speech_data_dir_8k, data)
    compute_feats(data, frontend_config=FRONTEND, progress=False)
    return data


@pytest.fixture
def feats_copy(feats_dir, tmp_path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(feats_dir, data)  # feats.scp points at the shared (read-only) archives
    return data


def command_entry(data: Path, utt: str, marker: Path) -> tuple[str, int]:
    """Make ``utt``'s feats.scp entry a command that creates ``marker``: (command, line)."""
    mat = read_matrix(read_table(data / "feats.scp")[utt].value)
    single = data / f"{utt}.mat"
    write_matrix(single, mat)
    command = f"touch {marker} && cat {single} |"
    return command, set_entry(data / "feats.scp", utt, command)


# --- 1. one switch for every command that is read from --------------------------------------


def test_rxspec_pipes_obey_the_commands_switch(tmp_path, monkeypatch):
    monkeypatch.delenv(NO_COMMANDS_ENV, raising=False)
    mat = np.arange(6, dtype=np.float32).reshape(3, 2)
    write_matrix(tmp_path / "m.mat", mat)
    write_matrices(tmp_path / "m.ark", None, {"u1": mat})
    marker = tmp_path / "ran"
    command = f"touch {marker} && cat {tmp_path / 'm.mat'} |"
    assert np.array_equal(read_matrix(command), mat) and marker.exists()  # allowed by default
    marker.unlink()
    (tmp_path / "feats.scp").write_text(f"u1 {command}\n")

    monkeypatch.setenv(NO_COMMANDS_ENV, "1")
    with pytest.raises(KaldiFormatError, match=f"commands are disabled.*unset {NO_COMMANDS_ENV}"):
        read_matrix(command)
    with pytest.raises(KaldiFormatError) as e, ScpReader(tmp_path / "feats.scp") as reader:
        reader["u1"]
    assert str(e.value).startswith(f"{tmp_path / 'feats.scp'}:1: key 'u1': commands are "
                                   "disabled")
    with pytest.raises(KaldiFormatError, match="commands are disabled"):
        list(read_matrices(f"ark:touch {marker} && cat {tmp_path / 'm.ark'} |"))
    with pytest.raises(KaldiFormatError, match="commands are disabled"):
        list(read_int_vectors(f"ark:touch {marker}; echo u1 1 2 |"))
    assert not marker.exists()


def test_cli_compute_cmvn_refuses_feats_scp_commands(feats_copy, tmp_path):
    marker = tmp_path / "ran"
    utt = "spk0-utt000"
    command, line = command_entry(feats_copy, utt, marker)
    for how in ({"env": {NO_COMMANDS_ENV: "1"}}, {"flag": "--no-wavscp-commands"}):
        proc = cli("compute-cmvn", feats_copy, *[how["flag"]] if "flag" in how else [],
                   env=how.get("env"))
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith(f"blspeech compute-cmvn: error: {feats_copy / 'feats.scp'}"
                                      f":{line}: key '{utt}': commands are disabled")
        assert f"unset {NO_COMMANDS_ENV}" in proc.stderr and len(proc.stderr.splitlines()) == 1
        assert not marker.exists() and not (feats_copy / "global_cmvn").exists()
    proc = cli("compute-cmvn", feats_copy)  # the same entry runs when commands are allowed
    assert proc.returncode == 0, proc.stderr
    assert marker.exists()


def _feats_checkpoint(data: Path, path: Path) -> Path:
    from blspeech.models import build_model
    from blspeech.models.asr import CTCModel
    from blspeech.text.tokenizers import CharTokenizer, TextNormalizer

    norm = TextNormalizer(case="lower")
    tok = CharTokenizer.train([norm(e.value) for e in read_table(data / "text").values()])
    torch.manual_seed(0)
    model = CTCModel(build_model("quartznet_tiny", dropout=0.0), tok.vocab_size)
    stats = cmvn_stats(m for _, m in read_matrices(f"scp:{data / 'feats.scp'}"))
    torch.save({"model": model.state_dict(), "model_config": model.config,
                "tokenizer": tok.to_dict(), "normalizer": norm.to_dict(), "frontend": FRONTEND,
                "cmvn": {"mode": "global", "stats": torch.from_numpy(stats), "norm_vars": True},
                "data_source": "feats", "optimizer": None}, path)
    return path


def test_cli_decode_refuses_feats_scp_commands(feats_copy, tmp_path):
    ckpt = _feats_checkpoint(feats_copy, tmp_path / "model.pt")
    marker = tmp_path / "ran"
    command_entry(feats_copy, "spk0-utt000", marker)
    proc = cli("decode", ckpt, feats_copy, tmp_path / "out", "--no-wavscp-commands",
               "--no-progress")
    assert proc.returncode == 2, proc.stderr
    assert "commands are disabled" in proc.stderr and "spk0-utt000" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not marker.exists()


def test_validate_reports_feature_commands_when_commands_are_off(feats_copy, tmp_path,
                                                                   monkeypatch):
    monkeypatch.delenv(NO_COMMANDS_ENV, raising=False)
    command, line = command_entry(feats_copy, "spk0-utt000", tmp_path / "ran")
    (feats_copy / "cmvn.scp").write_text(f"spk0 {command}\nspk1 {command}\n")
    assert validate_data_dir(feats_copy) == []
    monkeypatch.setenv(NO_COMMANDS_ENV, "1")
    problems = [str(p) for p in validate_data_dir(feats_copy)]
    assert f"{feats_copy / 'feats.scp'}:{line}: utt 'spk0-utt000': commands are disabled" \
        in "\n".join(problems)
    assert sum("cmvn.scp" in p and "commands are disabled" in p for p in problems) == 2
    monkeypatch.delenv(NO_COMMANDS_ENV)
    proc = cli("validate-data-dir", feats_copy, "--no-wavscp-commands")
    assert proc.returncode == 1 and "commands are disabled" in proc.stdout
    assert not (tmp_path / "ran").exists()


# --- 2. CMVN of non-finite features ------------------------------------------------------------


@pytest.mark.parametrize("mode", ["global", "speaker"])
def test_compute_cmvn_refuses_nan_features(feats_copy, tmp_path, mode):
    utt = "spk1-utt003"
    mat = read_matrix(read_table(feats_copy / "feats.scp")[utt].value).copy()
    mat[2, 3] = np.nan if mode == "global" else np.inf
    offsets = write_matrices(tmp_path / "bad.ark", None, {utt: mat})
    line = set_entry(feats_copy / "feats.scp", utt, offsets[utt])
    with pytest.raises(UserError) as e:
        compute_cmvn(feats_copy, mode)
    message = str(e.value)
    assert message.startswith(f"{feats_copy / 'feats.scp'}:{line}: utt '{utt}': ")
    assert "NaN or inf" in message and "\n" not in message
    for name in ("global_cmvn", "cmvn.scp", "cmvn.ark"):
        assert not (feats_copy / name).exists()


# --- 3. truncated audio files -----------------------------------------------------------------


def _truncate(src: str, dst: Path, keep: float = 0.5) -> tuple[int, int]:
    """A copy of ``src`` cut to ``keep`` of its bytes: (samples in header, samples left)."""
    data = Path(src).read_bytes()
    dst.write_bytes(data[:int(len(data) * keep)])
    info = sf.info(src)
    return info.frames, sf.info(dst).frames


def test_truncated_wav_is_an_error_naming_the_file(speech_data_dir_8k, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(speech_data_dir_8k, data)
    utt = "spk1-utt003"
    cut = tmp_path / "cut.wav"
    header, left = _truncate(read_table(data / "wav.scp")[utt].value, cut)
    line = set_entry(data / "wav.scp", utt, str(cut))
    expected = f"truncated: header says {header} samples, file has {left}"
    with pytest.raises(AudioError, match=expected):
        read_audio(str(cut))
    with pytest.raises(AudioError) as e:
        AudioReader(data).read(utt)
    assert str(e.value).startswith(f"{data / 'wav.scp'}:{line}: utt '{utt}': ")
    assert str(cut) in str(e.value) and expected in str(e.value)
    # A segment of the file, read by seeking, is checked too.
    (data / "segments").write_text(f"{utt}-a {utt} 0.0 0.3\n")
    with pytest.raises(AudioError, match=expected):
        AudioReader(data).read(f"{utt}-a")
    (data / "segments").unlink()
    # compute-feats --skip-bad leaves it out and lists it.
    summary = compute_feats(data, frontend_config=FRONTEND, skip_bad=True, progress=False)
    assert summary["bad"] == 1 and utt not in read_table(data / "feats.scp")
    assert expected in (data / "data" / "bad_utts.txt").read_text()


def test_truncated_sphere_is_an_error(speech_data_dir_8k, tmp_path):
    wav = read_table(speech_data_dir_8k / "wav.scp")["spk0-utt000"].value
    audio, rate = sf.read(wav, dtype="int16")
    sph = tmp_path / "x.sph"
    sf.write(sph, audio, rate, format="NIST", subtype="PCM_16")
    assert np.array_equal(read_audio(str(sph))[0] * 32768, audio)  # the whole file is fine
    cut = tmp_path / "cut.sph"
    cut.write_bytes(sph.read_bytes()[:1024 + 2 * (len(audio) // 2)])
    with pytest.raises(AudioError, match=f"truncated: header says {len(audio)} samples, file "
                                         f"has {len(audio) // 2}"):
        read_audio(str(cut))


# --- 4. replaced audio files are recomputed ----------------------------------------------------


def test_compute_feats_notices_a_replaced_wav(speech_data_dir_8k, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(speech_data_dir_8k, data)
    utt = "spk1-utt003"
    wav = tmp_path / "x.wav"
    shutil.copy(read_table(data / "wav.scp")[utt].value, wav)
    set_entry(data / "wav.scp", utt, str(wav))
    compute_feats(data, frontend_config=FRONTEND, progress=False)
    before = dict(read_matrices(f"scp:{data / 'feats.scp'}"))
    # Same path, same size, different audio (and a different mtime).
    audio, rate = sf.read(wav, dtype="int16")
    stat = wav.stat()
    sf.write(wav, audio[::-1].copy(), rate, subtype="PCM_16")
    os.utime(wav, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert wav.stat().st_size == stat.st_size
    summary = compute_feats(data, frontend_config=FRONTEND, progress=False)
    assert summary["jobs_skipped"] == 0
    after = dict(read_matrices(f"scp:{data / 'feats.scp'}"))
    assert not np.array_equal(after[utt], before[utt])
    assert all(np.array_equal(after[u], before[u]) for u in before if u != utt)
    # Unchanged files: the finished job is reused.
    assert compute_feats(data, frontend_config=FRONTEND, progress=False)["jobs_skipped"] == 1


# --- 5. a full disk ----------------------------------------------------------------------------


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_full_disk_is_one_line_and_leaves_nothing_half_written(speech_data_dir_8k, tmp_path,
                                                               monkeypatch, capsys, code):
    import blspeech.frontend.extract
    from blspeech.cli import main

    data = tmp_path / "data"
    shutil.copytree(speech_data_dir_8k, data)
    real = blspeech.frontend.extract.write_matrices

    def full_disk(ark, scp, items, **kwargs):
        def failing():
            for i, item in enumerate(items):
                if i == 2:
                    raise OSError(code, os.strerror(code))
                yield item
        return real(ark, scp, failing(), **kwargs)

    monkeypatch.setattr(blspeech.frontend.extract, "write_matrices", full_disk)
    out = tmp_path / "fbank"
    with pytest.raises(UserError) as e:
        compute_feats(data, out, frontend_config=FRONTEND, progress=False)
    message = str(e.value)
    assert message.startswith(f"{out / 'raw_fbank.1.ark'}: ") and "disk is full" in message
    assert "\n" not in message
    assert not (data / "feats.scp").exists()
    assert sorted(p.name for p in out.iterdir()) == [".data_dir"]  # no ark, scp, marker, tmp
    assert main(["compute-feats", str(data), "--out-dir", str(out), "--no-progress",
                 "--num-mel-bins", "40"]) == 2
    err = capsys.readouterr().err
    assert "disk is full" in err and len(err.splitlines()) == 1


# --- 6. speed perturbation is deterministic ----------------------------------------------------


def test_perturbed_sox_commands_are_repeatable(speech_data_dir_8k, tmp_path):
    dst = tmp_path / "sp"
    perturb_speed(speech_data_dir_8k, dst, factors=(0.9, 1.0))
    command = read_table(dst / "wav.scp")["sp0.9-spk0-utt000"].value
    assert " -R " in command
    runs = [subprocess.run(command[:-1], shell=True, capture_output=True, check=True).stdout
            for _ in range(2)]
    assert len(runs[0]) > 1000 and runs[0] == runs[1]


# --- 7. a hanging pipe times out ---------------------------------------------------------------


def test_pipe_timeout(tmp_path, monkeypatch):
    monkeypatch.delenv(NO_COMMANDS_ENV, raising=False)
    monkeypatch.setenv(PIPE_TIMEOUT_ENV, "1")
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(8000, np.float32), 8000)
    assert len(read_audio(f"cat {wav} |")[0]) == 8000  # quick commands are unaffected
    (tmp_path / "wav.scp").write_text(f"a cat {wav} |\nb sleep 30 |\n")
    started = time.monotonic()
    with pytest.raises(AudioError) as e:
        AudioReader(tmp_path).read("b")
    assert str(e.value).startswith(f"{tmp_path / 'wav.scp'}:2: utt 'b': ")
    assert f"timed out after 1 s ({PIPE_TIMEOUT_ENV})" in str(e.value)
    assert "sleep 30" in str(e.value)
    with pytest.raises(KaldiFormatError, match="sleep 30.*timed out after 1 s"):
        read_matrix("sleep 30 |")
    with pytest.raises(KaldiFormatError, match="sleep 30.*timed out after 1 s"):
        list(read_matrices("ark:sleep 30 |"))
    assert time.monotonic() - started < 15
    write_matrix(tmp_path / "m.mat", np.ones((2, 2), np.float32))
    assert read_matrix(f"cat {tmp_path / 'm.mat'} |").shape == (2, 2)
    monkeypatch.setenv(PIPE_TIMEOUT_ENV, "soon")
    with pytest.raises(UserError, match=f"{PIPE_TIMEOUT_ENV}='soon'"):
        read_audio("sleep 30 |")


# --- 8. messages for garbage ------------------------------------------------------------------


def test_garbage_from_a_command_names_utterance_and_command(tmp_path):
    (tmp_path / "wav.scp").write_text("a echo not audio |\n")
    with pytest.raises(AudioError) as e:
        AudioReader(tmp_path).read("a")
    message = str(e.value)
    assert message.startswith(f"{tmp_path / 'wav.scp'}:1: utt 'a': ")
    assert "echo not audio" in message and "BytesIO" not in message and "<" not in message
    with pytest.raises(KaldiFormatError) as e:
        read_matrix("echo garbage |")
    assert "echo garbage" in str(e.value) and "AssertionError" not in str(e.value)


def test_scp_offset_inside_a_matrix(tmp_path):
    mat = np.linspace(-3, 3, 40, dtype=np.float32).reshape(10, 4)
    write_matrices(tmp_path / "feats.ark", None, {"utt": mat})
    for offset in (17, 20, 25, 30):
        (tmp_path / "feats.scp").write_text(f"utt {tmp_path / 'feats.ark'}:{offset}\n")
        with pytest.raises(KaldiFormatError) as e:
            list(read_matrices(f"scp:{tmp_path / 'feats.scp'}"))
        message = str(e.value)
        assert message.startswith(f"{tmp_path / 'feats.scp'}:1: key 'utt': "), message
        assert f"byte {offset}" in message and "Error" not in message, message


def test_full_disk_during_a_checkpoint_save_is_one_line(tmp_path, monkeypatch):
    """A checkpoint save on a full disk: one line naming the file, the old checkpoint kept,
    no temporary file left."""
    import torch

    from blspeech.io import checkpoint

    path = tmp_path / "last.pt"
    checkpoint.save_checkpoint(path, {"step": 1})

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(UserError, match=r"last\.pt: cannot write, the disk is full.*resumes"):
        checkpoint.save_checkpoint(path, {"step": 2})
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
