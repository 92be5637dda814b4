"""Feature extraction jobs (compute_feats, compute_cmvn) and their CLI commands."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from blspeech.errors import UserError
from blspeech.frontend.extract import compute_cmvn, compute_feats
from blspeech.frontend.features import LogMel, load_cmvn_stats
from blspeech.io.audio import AudioReader
from blspeech.io.kaldi import cmvn_stats, read_matrices, read_matrix, read_table

with contextlib.redirect_stderr(io.StringIO()):
    import kaldi_io

ENV = dict(os.environ, OMP_NUM_THREADS="1")
FBANK = {"num_mel_bins": 40}
BAD_UTT, BAD_LINE = "spk1-utt003", 5  # fifth line of the sorted six-utterance wav.scp

#: Features made in other processes (jobs, the CLI) agree with in-process ones up to float32
#: rounding: thread partitioning of the FFT and mel products may differ between processes.
CROSS_PROCESS = {"rtol": 1e-5, "atol": 1e-5}


def assert_same_feats(result: dict, reference: dict) -> None:
    assert result.keys() == reference.keys()
    for k in reference:
        np.testing.assert_allclose(result[k], reference[k], **CROSS_PROCESS, err_msg=k)


def copy_data(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def set_wav(data: Path, utt: str, value: str) -> None:
    lines = [line if line.split(" ", 1)[0] != utt else f"{utt} {value}"
             for line in (data / "wav.scp").read_text().splitlines()]
    (data / "wav.scp").write_text("\n".join(lines) + "\n")


def wav_of(data: Path, utt: str) -> str:
    return read_table(data / "wav.scp")[utt].value


def feats_of(data: Path) -> dict[str, np.ndarray]:
    return dict(read_matrices(f"scp:{data / 'feats.scp'}"))


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "blspeech", *args], capture_output=True,
                          text=True, env=ENV, timeout=timeout)


@pytest.fixture(scope="module")
def reference(speech_data_dir_8k, tmp_path_factory):
    """An uninterrupted nj=1 run on a copy of the 8 kHz data dir: {utt: features}."""
    data = copy_data(speech_data_dir_8k, tmp_path_factory.mktemp("ref") / "data")
    compute_feats(data, nj=1, frontend_config=FBANK, progress=False)
    return feats_of(data)


def test_compute_feats_writes_kaldi_outputs(speech_data_dir_8k, tmp_path, reference):
    data = copy_data(speech_data_dir_8k, tmp_path / "data")
    summary = compute_feats(data, tmp_path / "fbank", nj=2, frontend_config=FBANK,
                            progress=False)
    assert summary["utterances"] == 6 and summary["bad"] == 0 and summary["jobs"] == 2
    scp = (data / "feats.scp").read_text().splitlines()
    assert [line.split()[0] for line in scp] == sorted(AudioReader(data).utterance_ids)
    assert all(str((tmp_path / "fbank").resolve()) in line for line in scp)
    # kaldi-io's own scp reader sees the same matrices; nj=2 equals nj=1 (other processes:
    # equal up to float32 rounding, which can differ between processes on some CPUs).
    theirs = dict(kaldi_io.read_mat_scp(str(data / "feats.scp")))
    assert theirs.keys() == reference.keys()
    assert_same_feats(theirs, reference)
    # Features equal LogMel on the audio; tables and the front-end config are consistent.
    cfg = yaml.safe_load((data / "conf" / "fbank.yaml").read_text())
    assert cfg["sample_rate"] == 8000 and cfg["num_mel_bins"] == 40
    fbank, reader = LogMel(**cfg), AudioReader(data, 8000)
    frames = {k: int(e.value) for k, e in read_table(data / "utt2num_frames").items()}
    durs = {k: float(e.value) for k, e in read_table(data / "utt2dur").items()}
    for utt, mat in reference.items():
        audio = reader.read(utt)
        np.testing.assert_allclose(mat, fbank.compute([audio])[0].numpy(), **CROSS_PROCESS)
        assert frames[utt] == len(mat) and abs(durs[utt] - len(audio) / 8000) < 1e-3
    assert summary["frames"] == sum(frames.values())


def test_dither_is_reproducible_and_independent_of_nj(speech_data_dir_8k, tmp_path):
    data = copy_data(speech_data_dir_8k, tmp_path / "data")
    cfg = {**FBANK, "dither": 1.0}
    compute_feats(data, nj=1, frontend_config=cfg, progress=False)
    first = feats_of(data)
    compute_feats(data, tmp_path / "other", nj=2, frontend_config=cfg, progress=False)
    second = feats_of(data)
    assert_same_feats(second, first)


def test_resample_option_and_sample_rate_override(speech_data_dir_8k, tmp_path):
    data = copy_data(speech_data_dir_8k, tmp_path / "data")
    with pytest.raises(UserError, match=r"wav.scp:1: utt 'spk0-utt000': sample rate is 8000"):
        compute_feats(data, sample_rate=16000, resample=False, progress=False)
    assert not (data / "feats.scp").exists()
    summary = compute_feats(data, sample_rate=16000, progress=False)
    assert summary["config"]["sample_rate"] == 16000 and summary["config"]["num_mel_bins"] == 80
    assert next(iter(feats_of(data).values())).shape[1] == 80


def _make_bad(case: str, data: Path, tmp: Path) -> str:
    """Break utterance BAD_UTT in one way; returns text the error message must contain."""
    good = wav_of(data, BAD_UTT)
    bad = tmp / "bad.wav"
    if case == "missing":
        set_wav(data, BAD_UTT, str(tmp / "nowhere.wav"))
        return "file not found"
    if case == "corrupt":
        bad.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + os.urandom(64))
        set_wav(data, BAD_UTT, str(bad))
        return "cannot read"
    if case == "empty":
        sf.write(bad, np.zeros(0, np.float32), 8000, subtype="PCM_16")
        set_wav(data, BAD_UTT, str(bad))
        return "empty audio"
    if case == "short":
        sf.write(bad, np.full(120, 0.1, np.float32), 8000, subtype="PCM_16")
        set_wav(data, BAD_UTT, str(bad))
        return "too short"
    if case == "command":
        set_wav(data, BAD_UTT, f"sox {tmp / 'nowhere.wav'} -t wav - |")
        return "command failed with exit code"
    if case == "nan":
        audio, _ = sf.read(good, dtype="float32")
        audio[1000] = np.nan
        sf.write(bad, audio, 8000, subtype="FLOAT")
        set_wav(data, BAD_UTT, str(bad))
        return "NaN or infinite"
    if case == "rate":
        audio, _ = sf.read(good, dtype="float32")
        sf.write(bad, audio, 16000, subtype="PCM_16")  # claims 16 kHz in an 8 kHz dir
        set_wav(data, BAD_UTT, str(bad))
        return "sample rate is 16000 Hz but 8000 Hz is required"
    assert case == "segment"
    (data / "segments").write_text("".join(
        f"{u} {u} 0.0 {1.0 if u != BAD_UTT else 60.0}\n" for u in sorted(
            line.split()[0] for line in (data / "wav.scp").read_text().splitlines())))
    return "ends past the end of recording"


BAD_CASES = ["missing", "corrupt", "empty", "short", "command", "nan", "rate", "segment"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_fails_cleanly_or_is_skipped(speech_data_dir_8k, tmp_path, case):
    data = copy_data(speech_data_dir_8k, tmp_path / "data")
    (data / "feats.scp").write_text("stale x.ark:1\n")  # a previous run's output
    expected = _make_bad(case, data, tmp_path)
    where = f"{data / ('segments' if case == 'segment' else 'wav.scp')}:{BAD_LINE}: " \
            f"utt '{BAD_UTT}': "
    options = dict(nj=2, frontend_config=FBANK, progress=False, sample_rate=8000,
                   resample=case != "rate")
    with pytest.raises(UserError) as info:
        compute_feats(data, **options)
    message = str(info.value)
    assert message.startswith(where) and expected in message, message
    assert "--skip-bad" in message and "\n" not in message
    assert not (data / "feats.scp").exists()  # neither a partial nor the stale one

    summary = compute_feats(data, skip_bad=True, **options)
    assert summary["utterances"] == 5 and summary["bad"] == 1
    assert BAD_UTT not in feats_of(data) and len(feats_of(data)) == 5
    bad_lines = (data / "data" / "bad_utts.txt").read_text().splitlines()
    assert len(bad_lines) == 1 and bad_lines[0].startswith(f"{BAD_UTT} {where}")
    assert expected in bad_lines[0]
    assert BAD_UTT not in (data / "utt2num_frames").read_text()


def test_resume_skips_finished_jobs(speech_data_dir_8k, tmp_path, reference):
    data = copy_data(speech_data_dir_8k, tmp_path / "data")
    out = data / "data"
    summary = compute_feats(data, nj=3, frontend_config=FBANK, progress=False)
    assert summary["jobs_skipped"] == 0
    arks = {j: out / f"raw_fbank.{j}.ark" for j in (1, 2, 3)}
    mtimes = {j: p.stat().st_mtime_ns for j, p in arks.items()}
    # Simulate job 2 killed mid-way: no marker, a half-written temp ark, no feats.scp.
    (out / "raw_fbank.2.done").unlink()
    (out / ".raw_fbank.2.ark.partial.tmp").write_bytes(b"half")
    (data / "feats.scp").unlink()
    time.sleep(0.01)
    summary = compute_feats(data, nj=3, frontend_config=FBANK, progress=False)
    assert summary["jobs_skipped"] == 2
    assert arks[1].stat().st_mtime_ns == mtimes[1] and arks[3].stat().st_mtime_ns == mtimes[3]
    assert arks[2].stat().st_mtime_ns != mtimes[2]
    assert not list(out.glob(".*.tmp"))
    result = feats_of(data)
    assert result.keys() == reference.keys()
    assert_same_feats(result, reference)
    # Other settings invalidate every finished job; fewer jobs drop the extra job files.
    summary = compute_feats(data, nj=2, frontend_config={"num_mel_bins": 30}, progress=False)
    assert summary["jobs_skipped"] == 0 and next(iter(feats_of(data).values())).shape[1] == 30
    assert not list(out.glob("raw_fbank.3.*"))


def test_out_dir_of_another_data_dir_is_refused(speech_data_dir_8k, tmp_path):
    first = copy_data(speech_data_dir_8k, tmp_path / "a")
    second = copy_data(speech_data_dir_8k, tmp_path / "b")
    compute_feats(first, tmp_path / "fbank", frontend_config=FBANK, progress=False)
    with pytest.raises(UserError, match="holds the features of .*own --out-dir"):
        compute_feats(second, tmp_path / "fbank", frontend_config=FBANK, progress=False)


def test_killed_cli_run_resumes(speech_data_dir_8k, tmp_path, reference):
    data = copy_data(speech_data_dir_8k, tmp_path / "data")
    out = data / "data"
    # Job 2 (second half) starts with a slow command, so job 1 finishes first.
    slow = "spk1-utt001"
    set_wav(data, slow, f"sleep 30; cat {wav_of(data, slow)} |")
    proc = subprocess.Popen([sys.executable, "-m", "blspeech", "compute-feats", str(data),
                             "--nj", "2", "--num-mel-bins", "40", "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV,
                            start_new_session=True)
    try:
        deadline = time.time() + 60
        while not (out / "raw_fbank.1.done").exists():
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read()
            time.sleep(0.05)
    finally:
        # Like Ctrl-C or a job scheduler: the whole process group (workers, commands) goes.
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    assert not (data / "feats.scp").exists() and not (out / "raw_fbank.2.done").exists()
    job1 = (out / "raw_fbank.1.ark").stat().st_mtime_ns
    set_wav(data, slow, f"cat {wav_of(data, slow).split()[3]} |")  # same audio, no sleep
    summary = compute_feats(data, nj=2, frontend_config=FBANK, progress=False)
    assert summary["jobs_skipped"] == 1 and (out / "raw_fbank.1.ark").stat().st_mtime_ns == job1
    result = feats_of(data)
    assert_same_feats(result, reference)


def test_compute_cmvn_modes(speech_data_dir_8k, tmp_path, reference):
    data = copy_data(speech_data_dir_8k, tmp_path / "data")
    with pytest.raises(UserError, match="run 'blspeech compute-feats"):
        compute_cmvn(data)
    compute_feats(data, frontend_config=FBANK, progress=False)
    utt2spk = {u: e.value for u, e in read_table(data / "utt2spk").items()}

    path = compute_cmvn(data)
    assert path == data / "global_cmvn"
    stats = read_matrix(str(path))
    assert stats.dtype == np.float64 and stats.shape == (2, 41)
    allf = np.concatenate(list(reference.values())).astype(np.float64)
    assert stats[0, -1] == len(allf) and np.allclose(stats[0, :-1], allf.sum(0))
    assert np.allclose(stats[1, :-1], (allf ** 2).sum(0))

    path = compute_cmvn(data, "speaker")
    per_spk = dict(kaldi_io.read_mat_scp(str(path)))
    assert sorted(per_spk) == ["spk0", "spk1"]
    for spk, mat in per_spk.items():
        expected = cmvn_stats([f for u, f in reference.items() if utt2spk[u] == spk])
        assert np.allclose(mat, expected)
    by_utt = load_cmvn_stats(data)
    assert np.array_equal(by_utt["spk0-utt002"], per_spk["spk0"])

    path = compute_cmvn(data, "utterance")
    per_utt = dict(kaldi_io.read_mat_scp(str(path)))
    assert per_utt.keys() == reference.keys()
    assert np.allclose(per_utt["spk1-utt005"], cmvn_stats([reference["spk1-utt005"]]))
    assert np.array_equal(load_cmvn_stats(data)["spk1-utt005"], per_utt["spk1-utt005"])


def test_cli_compute_feats_and_cmvn(speech_data_dir_8k, tmp_path, reference):
    data = copy_data(speech_data_dir_8k, tmp_path / "data")
    proc = cli("compute-feats", str(data), "--nj", "2", "--num-mel-bins", "40",
               "--no-progress")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["utterances"] == 6 and summary["config"]["num_mel_bins"] == 40
    result = feats_of(data)
    assert_same_feats(result, reference)
    proc = cli("compute-cmvn", str(data), "--per-speaker")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"mode": "speaker", "path": str(data / "cmvn.scp")}
    # A user mistake: one error line naming file, line and utterance; no traceback.
    set_wav(data, BAD_UTT, f"sox {wav_of(data, BAD_UTT)} -t wav - |")
    proc = cli("compute-feats", str(data), "--no-wavscp-commands", "--no-progress",
               "--config", str(data / "conf" / "fbank.yaml"))
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"blspeech compute-feats: error: {data / 'wav.scp'}:"
                                  f"{BAD_LINE}: utt '{BAD_UTT}': wav.scp commands are disabled")
    assert "Traceback" not in proc.stderr and not (data / "feats.scp").exists()


def test_cli_help_has_examples(capsys):
    from blspeech.cli import main

    for command in ("compute-feats", "compute-cmvn"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
    helps = capsys.readouterr().out
    assert "examples:" in helps and "--skip-bad" in helps and "global_cmvn" in helps
    assert "BLSPEECH_NO_WAVSCP_COMMANDS" in helps


def test_torch_threads_restored(speech_data_dir_8k, tmp_path):
    data = copy_data(speech_data_dir_8k, tmp_path / "data")
    threads = torch.get_num_threads()
    compute_feats(data, frontend_config=FBANK, progress=False)
    assert torch.get_num_threads() == threads
