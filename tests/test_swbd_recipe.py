"""recipes/swbd/run.sh end to end on a fake corpus in the LDC layouts (tests/swbd_fake.py):
data prep from two-channel SPHERE files and ms98 transcripts, splits, speed perturbation,
features, tokenizer, CTC training of the tiny ResNet and bL-ResNet (1 epoch), decoding,
Hub5 scoring with the GLM by subset (checked against NIST csrfilt.sh + sclite), the report;
and the guards of the Kaldi-only hybrid stages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from swbd_fake import make_fake_swbd, write_fake_shorten

from blspeech.io.checkpoint import load_checkpoint
from blspeech.io.kaldi import read_table

ROOT = Path(__file__).resolve().parents[1]
RUN_SH = ROOT / "recipes" / "swbd" / "run.sh"
ENCODERS = ["resnet_am_tiny", "bl_resnet_am_tiny"]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("KALDI_ROOT", None)  # no Kaldi unless a test gives one
    env.update(extra)
    return env


def _run(corpus, data: Path, exp: Path, *extra: str, env=None) -> subprocess.CompletedProcess:
    cmd = [str(RUN_SH), "--swbd-dir", str(corpus.swbd_dir), "--ms98-dir", str(corpus.ms98_dir),
           "--eval2000-audio-dir", str(corpus.eval_audio_dir),
           "--eval2000-transcript-dir", str(corpus.eval_transcript_dir),
           "--data-dir", str(data), "--exp-dir", str(exp), "--device", "cpu", "--nj", "1",
           "--encoders", " ".join(ENCODERS), "--hybrid-encoders", " ".join(ENCODERS),
           "--vocab-size", "0", "--dev-utts", "2", "--epochs", "1",
           "--train-args", "--set training.amp=none --set data.num_workers=0 "
           "--set data.max_frames=3000 --set training.save_every_n_steps=0", *extra]
    return subprocess.run(cmd, env=env or _env(), capture_output=True, text=True, timeout=600,
                          cwd=ROOT)


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    root = tmp_path_factory.mktemp("swbd_recipe")
    corpus = make_fake_swbd(root / "ldc")
    data, exp = root / "data", root / "exp"
    r = _run(corpus, data, exp)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return corpus, data, exp, r.stdout


def test_data_prep_splits_and_features(recipe):
    corpus, data, _, _ = recipe
    train_all = read_table(data / "train_all" / "text", allow_empty_value=True)
    want = {t.utt: t.text for t in corpus.swbd_turns if t.text}
    assert {u: e.value for u, e in train_all.items()} == want
    r2fc = read_table(data / "train_all" / "reco2file_and_channel")
    assert {e.value for e in r2fc.values()} >= {"sw02001 A", "sw02001 B"}
    dev = list(read_table(data / "train_dev" / "text", allow_empty_value=True))
    train = list(read_table(data / "train" / "text", allow_empty_value=True))
    assert dev == sorted(want)[:2] and train == sorted(want)[2:]
    sp = read_table(data / "train_sp" / "utt2spk")
    assert sorted(sp) == sorted(f"sp{f}-{u}" for f in ("0.9", "1.0", "1.1") for u in train)
    frames = {u: int(e.value) for u, e in read_table(data / "train_sp" / "utt2num_frames").items()}
    for u in train:  # slower speech: more frames
        assert frames[f"sp0.9-{u}"] > frames[f"sp1.0-{u}"] > frames[f"sp1.1-{u}"]
    for d in ("train_sp", "train_dev", "eval2000"):
        assert (data / d / "feats.scp").is_file()
    assert (data / "train_sp" / "global_cmvn").is_file()
    assert (data / "eval2000" / "stm").is_file() and (data / "eval2000" / "glm").is_file()


def test_models_decodes_and_hub5_scores(recipe):
    corpus, data, exp, _ = recipe
    for enc in ENCODERS:
        d = exp / enc
        assert load_checkpoint(d / "final.pt")["model_config"]["encoder"]["name"] == enc
        for t in ("eval2000", "train_dev"):
            assert (d / f"decode_{t}" / "ctm").is_file()
        assert (d / "decode_train_dev" / "wer.json").is_file()
        score = json.loads((d / "decode_eval2000" / "score_hub5" / "results.json").read_text())
        assert set(score["subsets"]) == {"all", "swbd", "callhm"}
        sub = score["subsets"]
        assert sub["all"]["ref_words"] == sub["swbd"]["ref_words"] + sub["callhm"]["ref_words"]
        assert sub["all"]["ref_words"] > 0
        # The real csrfilt.sh + sclite give the same counts for every subset.
        assert score["agree"] is True, score
        hyp = (d / "decode_eval2000" / "score_hub5" / "hyp.ctm").read_text().splitlines()
        assert all(line.split()[0] in ("en_4156", "sw_4390") for line in hyp)


def test_report(recipe):
    _, _, exp, stdout = recipe
    rows = json.loads((exp / "results.json").read_text())
    assert [r["encoder"] for r in rows] == ENCODERS and all(r["head"] == "ctc" for r in rows)
    assert rows[1]["gflops_per_sec"] < rows[0]["gflops_per_sec"]
    for r in rows:
        score = json.loads((exp / r["encoder"] / "decode_eval2000" / "score_hub5" /
                            "results.json").read_text())
        assert r["wer"]["swbd"] == score["subsets"]["swbd"]["wer"]
        assert r["params"] > 0 and r["epochs"] == 1
    md = (exp / "RESULTS.md").read_text()
    assert "| resnet_am_tiny | ctc |" in md and "## Published reference" in md
    assert "# Switchboard 300 h" in stdout


def test_rerun_skips_decodes(recipe):
    corpus, data, exp, _ = recipe
    r = _run(corpus, data, exp, "--stage", "5", "--stop-stage", "5")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("is up to date") == 4


def test_hybrid_stages_without_kaldi_use_the_wheels(recipe, tmp_path):
    """No KALDI_ROOT: stage 8 trains a monophone GMM-HMM (kaldi-hmm-gmm wheel) and the
    hybrid models on its pdfs; stage 9 decodes eval2000 with an HLG graph and scores it as
    stage 6 does. With KALDI_ROOT set, the Kaldi path asks for its binaries."""
    pytest.importorskip("kaldi_hmm_gmm", reason="needs the gmm extra")
    corpus, data, exp, _ = recipe
    r = _run(corpus, data, exp, "--stage", "8", "--stop-stage", "9", "--gmm-utts", "0",
             "--acoustic-scale", "0.5")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    gmm = exp / "gmm"
    num_pdfs = int((gmm / "num_pdfs").read_text())
    assert (gmm / "graph_3gram" / "HLG.fst").is_file()
    for enc in ENCODERS:
        d = exp / f"hybrid_{enc}"
        config = load_checkpoint(d / "final.pt")["model_config"]
        assert config["head"] == "hybrid" and config["num_pdfs"] == num_pdfs
        score = json.loads((d / "decode_eval2000" / "score_hub5" / "results.json").read_text())
        assert set(score["subsets"]) == {"all", "swbd", "callhm"}
        assert score["subsets"]["all"]["ref_words"] > 0
    assert "decoding eval2000" in r.stdout
    r = _run(corpus, data, exp, "--stage", "8", "--stop-stage", "8",
             env=_env(KALDI_ROOT=str(tmp_path)))
    assert r.returncode == 2 and "ali-to-pdf not found under $KALDI_ROOT/src" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_missing_corpus_options_and_shorten_without_sph2pipe(tmp_path):
    r = subprocess.run([str(RUN_SH), "--data-dir", str(tmp_path / "d")], env=_env(),
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 2 and "stage 0 needs --swbd-dir" in r.stderr
    corpus = make_fake_swbd(tmp_path / "ldc")
    shorten = corpus.sph["sw02002"]
    write_fake_shorten(shorten, corpus.audio["sw02002"])
    env = _env(PATH="/usr/bin:/bin")  # no sph2pipe on it, no KALDI_ROOT
    r = _run(corpus, tmp_path / "data", tmp_path / "exp", "--stop-stage", "0", env=env)
    assert r.returncode == 2, r.stdout + r.stderr
    assert str(shorten) in r.stderr and "sph2pipe" in r.stderr
    assert "Traceback" not in r.stderr


def test_stage_without_its_inputs_names_the_stage_to_run(tmp_path):
    data = tmp_path / "data"

    def run(stage: str) -> str:
        r = subprocess.run([str(RUN_SH), "--stage", stage, "--data-dir", str(data),
                            "--exp-dir", str(tmp_path / "exp")], env=_env(),
                           capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        return r.stderr

    assert f"stage 3 needs {data}/train/text; run --stage 1 first" in run("3")
    (data / "train").mkdir(parents=True)
    (data / "train" / "text").touch()
    assert f"stage 4 needs {data}/train_sp/feats.scp; run --stage 2 first" in run("4")
    assert not (data / "lang_bpe2000").exists()


def test_help():
    r = subprocess.run([str(RUN_SH), "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "--swbd-dir" in r.stdout and "--gmm-ali-dir" in r.stdout
