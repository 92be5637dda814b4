"""recipes/telephony_mini/run.sh end to end, in miniature: a few dozen utterances, the tiny
encoders, one epoch. Checks every output file, resuming after a kill, and that a trained
model decodes another data dir with ``blspeech decode``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest

from blspeech.io.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "telephony_mini"
RUN_SH = RECIPE / "run.sh"
# One peer: the recipe treats every encoder alike (QuartzNet's paths are tested in
# test_chunked.py, test_export.py and test_adapters.py).
ENCODERS = ["resnet_am_tiny", "bl_resnet_am_tiny", "conformer_tiny"]
HYBRID = ["resnet_am_tiny", "bl_resnet_am_tiny"]
TESTS = ["test_real", "test_synth"]
CORPUS = "--num-train 30 --num-dev 6 --num-test-real 5 --num-test-synth 6 --seed 3"


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _cmd(data: Path, exp: Path, *extra: str) -> list[str]:
    return [str(RUN_SH), "--data-dir", str(data), "--exp-dir", str(exp),
            "--encoders", " ".join(ENCODERS), "--baseline", ENCODERS[0],
            "--candidate", ENCODERS[1], "--hybrid-encoders", " ".join(HYBRID),
            "--epochs", "1", "--corpus-args", CORPUS,
            "--train-args", "--set data.max_frames=3000 --set data.num_workers=0",
            "--rtf-utts", "4", "--rtf-repeats", "2", "--vocab-size", "40", "--stop-stage", "9",
            *extra]


def run_recipe(data: Path, exp: Path, *extra: str) -> subprocess.CompletedProcess:
    r = subprocess.run(_cmd(data, exp, *extra), env=_env(), capture_output=True, text=True,
                       timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    root = tmp_path_factory.mktemp("telephony_recipe")
    data, exp = root / "data", root / "exp"
    r = run_recipe(data, exp)
    return data, exp, r.stdout


def test_every_output_file(recipe):
    data, exp, stdout = recipe
    for split in ("train", "dev", *TESTS):
        for name in ("wav.scp", "text", "utt2spk", "feats.scp", "utt2num_frames"):
            assert (data / split / name).is_file(), (split, name)
    # The training set: train plus speed-perturbed copies (0.9, 1.1) of the real speaker's
    # utterances, with features of the same front-end and its own CMVN.
    train = _utts(data / "train")
    real = [u for u, spk in train.items() if spk == "ast_allison"]
    assert real, "the miniature corpus has no real recording to perturb"
    copies = {f"sp{f}-{u}" for f in ("0.9", "1.1") for u in real}
    assert set(_utts(data / "train_sp")) == set(train) | copies
    feats = (data / "train_sp" / "feats.scp").read_text()
    assert len(feats.splitlines()) == len(train) + len(copies)
    assert (data / "train_sp" / "conf" / "fbank.yaml").read_bytes() == (
        data / "train" / "conf" / "fbank.yaml").read_bytes()
    assert (data / "train_sp" / "global_cmvn").is_file()
    assert f"{len(train) + len(copies)} train / " in (exp / ENCODERS[0] / "train.log").read_text()
    assert (data / "lang_bpe40" / "tokenizer.pt").is_file()
    # The LM's words are the training transcripts' words: no held-out word reaches it.
    lm_words = _arpa_unigrams(data / "lm" / "3gram.arpa")
    train_words = {w for line in (data / "train" / "text").read_text().splitlines()
                   for w in line.lower().split()[1:]}
    assert lm_words - {"<s>", "</s>", "<unk>"} <= train_words
    for enc in ENCODERS:
        d = exp / enc
        for name in ("final.pt", "best.pt", "last.pt", "metrics.jsonl", "config.yaml",
                     "train_summary.json"):
            assert (d / name).is_file(), (enc, name)
        assert load_checkpoint(d / "final.pt")["model_config"]["encoder"]["name"] == enc
        tuning = json.loads((d / "lm_tuning.json").read_text())
        assert tuning["dev_wer"] == min(g["dev_wer"] for g in tuning["grid"])
        wfst = json.loads((d / "wfst_tuning.json").read_text())
        assert wfst["dev_wer"] == min(g["dev_wer"] for g in wfst["grid"])
        assert len(wfst["grid"]) > 1
        for t in TESTS:
            for dec in (d / f"decode_{t}", d / f"decode_lm_{t}", d / f"decode_wfst_{t}"):
                for name in ("text", "ctm", "wer.json", "wer.txt", "sclite.json"):
                    assert (dec / name).is_file(), (enc, dec, name)
                hyp_ids = [line.split()[0] for line in (dec / "text").read_text().splitlines()]
                ref_ids = [line.split()[0]
                           for line in (data / t / "text").read_text().splitlines()]
                assert hyp_ids == ref_ids
                # NIST sclite's counts equal blspeech's on every decode.
                assert json.loads((dec / "sclite.json").read_text())["agree"] is True
            # lm_tuning.json quotes wer.json's WER to 2 decimals.
            assert tuning["wer"][t] == round(json.loads(
                (d / f"decode_lm_{t}" / "wer.json").read_text())["wer"], 2)
            assert wfst["wer"][t] == round(json.loads(
                (d / f"decode_wfst_{t}" / "wer.json").read_text())["wer"], 2)
    assert (data / "graph_lang_bpe40" / "TLG.fst").is_file()
    # No temporary files are left behind.
    assert not [p for p in exp.rglob("*") if p.name.endswith(".tmp")]


def _utts(data_dir: Path) -> dict[str, str]:
    """utt2spk of a data dir."""
    return dict(line.split() for line in (data_dir / "utt2spk").read_text().splitlines())


def _arpa_unigrams(path: Path) -> set[str]:
    words, section = set(), None
    for line in path.read_text().splitlines():
        if line.startswith("\\"):
            section = line
        elif section == "\\1-grams:" and line.strip():
            words.add(line.split("\t")[1])
    return words


def _bundle_matches_decode(data: Path, model_dir: Path) -> None:
    """final.bundle transcribes a test file as stage 4/9 decoded it."""
    import blspeech
    from blspeech.io.kaldi import read_table

    asr = blspeech.load_bundle(model_dir / "final.bundle")
    wavs = read_table(data / "test_synth" / "wav.scp")
    hyps = read_table(model_dir / "decode_test_synth" / "text", allow_empty_value=True)
    utts = sorted(wavs)[:2]
    assert asr.transcribe([wavs[u].value for u in utts]) == [hyps[u].value for u in utts]


def test_bundles(recipe):
    data, exp, _ = recipe
    for enc in ENCODERS:
        _bundle_matches_decode(data, exp / enc)


def test_results_json(recipe):
    data, exp, _ = recipe
    rows = json.loads((exp / "results.json").read_text())
    assert [r["encoder"] for r in rows] == ENCODERS
    efficiency = json.loads((exp / "efficiency.json").read_text())
    for r in rows:
        assert isinstance(r["params"], int) and r["params"] > 0
        assert r["gflops_per_sec"] > 0 and r["gmacs_per_sec"] == pytest.approx(
            r["gflops_per_sec"] / 2, rel=1e-3)
        assert 0 < r["rtf_cpu"] < 5
        assert r["rtf_cpu"] == efficiency[r["encoder"]]["rtf"]
        assert len(r["rtf_cpu_runs"]) == 2
        assert set(r["wer"]) == set(TESTS)
        assert set(r["wer_greedy"]) == set(TESTS)
        # wer: the search with the lowest dev WER averaged over the encoders (dev only).
        assert r["wer"] == r[f"wer_{r['decoding'].lower()}"]
        for t in TESTS:
            for key, d in (("wer_lm", f"decode_lm_{t}"), ("wer_greedy", f"decode_{t}"),
                           ("wer_wfst", f"decode_wfst_{t}")):
                wer = json.loads((exp / r["encoder"] / d / "wer.json").read_text())
                assert r[key][t] == pytest.approx(wer["wer"], abs=0.01)
                assert r[key][t] >= 0
        assert len(r["dev_wer_curve"]) == 1 and len(r["epoch_seconds"]) == 1
        assert r["train_seconds"] > 0 and r["epochs"] == 1
        assert Path(r["checkpoint"]) == exp / r["encoder"] / "final.pt"
    # Parameters of the model as trained (not of the BN-folded copy that is timed).
    from blspeech.models.asr import acoustic_model_from_config

    for r in rows:
        model = acoustic_model_from_config(load_checkpoint(r["checkpoint"])["model_config"])
        assert r["params"] == sum(p.numel() for p in model.parameters())
    dev = {n: sum(json.loads((exp / r["encoder"] / f).read_text())["dev_wer"] for r in rows)
           for n, f in (("LM", "lm_tuning.json"), ("WFST", "wfst_tuning.json"))}
    assert {r["decoding"] for r in rows} == {min(dev, key=dev.get)}
    bl = {r["encoder"]: r for r in rows}
    assert bl["bl_resnet_am_tiny"]["gflops_per_sec"] < bl["resnet_am_tiny"]["gflops_per_sec"]


def test_results_md_and_plot(recipe):
    data, exp, stdout = recipe
    md = (exp / "RESULTS.md").read_text()
    for enc in ENCODERS:
        assert f"| {enc} |" in md
    assert "| claim | target | measured | met |" in md
    assert "GFLOPs bl_resnet_am_tiny / resnet_am_tiny" in md
    assert "| train | 30 |" in md
    assert "NIST sclite gives the same error counts" in md
    assert "## Results" in stdout  # the table is printed at the end
    assert "## Decodings: greedy, LM, WFST" in md
    # The mini peers were not trained: the report says why.
    assert "`quartznet_mini` does not leave the all-blank stage" in " ".join(md.split())
    # The significance test of the candidate against the baseline, per test set.
    sig = json.loads((exp / "significance.json").read_text())["mapsswe"]
    assert [(s["test_set"], s["decoding"]) for s in sig] == [
        (t, d) for t in TESTS for d in ("greedy", "LM", "WFST")]
    rows = {r["encoder"]: r for r in json.loads((exp / "results.json").read_text())}
    chosen = rows[ENCODERS[1]]["decoding"]
    for s in sig:
        key = f"wer_{s['decoding'].lower()}"
        assert s["wer_a"] == pytest.approx(rows[ENCODERS[1]][key][s["test_set"]], abs=0.01)
        assert s["wer_b"] == pytest.approx(rows[ENCODERS[0]][key][s["test_set"]], abs=0.01)
        assert s["verdict"] in ("bL is better", "no significant difference", "bL is worse")
        flat = " ".join(md.split())  # the verdict sentence is wrapped
        assert f"{s['test_set']}: **{s['verdict']}**" in flat or s["decoding"] != chosen
    for png in ("tradeoff.png", "learning_curves.png"):
        image = matplotlib.image.imread(exp / png)
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 400
        assert image[..., :3].std() > 0.05  # not a blank canvas


def test_rerun_keeps_finished_work(recipe):
    data, exp, _ = recipe
    files = [exp / enc / "final.pt" for enc in ENCODERS]
    files += [exp / enc / f"decode_{t}" / "text" for enc in ENCODERS for t in TESTS]
    before = {p: p.stat().st_mtime_ns for p in files}
    r = run_recipe(data, exp, "--stage", "3", "--stop-stage", "4")
    # Each training logs to its stage3.log (they run two at a time).
    for enc in ENCODERS:
        assert "nothing to train" in (exp / enc / "stage3.log").read_text(), enc
    assert "is up to date" in r.stdout
    assert {p: p.stat().st_mtime_ns for p in files} == before


def test_hybrid_stages(recipe):
    """Stages 8-9: token-topology targets from the baseline's alignment, hybrid models,
    tuning, decoding, sclite agreement, frame accuracy and the report."""
    from blspeech.data.alignments import ctc_path_to_pdfs, read_topology
    from blspeech.io.kaldi import read_int_vectors

    data, exp, _ = recipe
    stdout = run_recipe(data, exp, "--stage", "8", "--stop-stage", "9", "--aligner",
                        ENCODERS[0]).stdout
    for split in ("train", "dev", *TESTS):
        ali = exp / ENCODERS[0] / f"ali_{split}"
        topo = read_topology(ali / "topology")
        assert topo["ali_subsampling"] == 4 and topo["num_pdfs"] == 2 * 40 - 1
        paths = dict(read_int_vectors(f"scp:{ali / 'ali.scp'}"))
        pdfs = dict(read_int_vectors(f"scp:{ali / 'pdf.scp'}"))
        assert paths and sorted(paths) == sorted(pdfs)
        assert all(pdfs[u].tolist() == ctc_path_to_pdfs(paths[u]).tolist() for u in paths)
    rows = {r["encoder"]: r for r in json.loads((exp / "results_hybrid.json").read_text())}
    assert sorted(rows) == sorted(HYBRID)
    md = (exp / "RESULTS_hybrid.md").read_text()
    for enc in HYBRID:
        d = exp / f"hybrid_{enc}"
        ckpt = load_checkpoint(d / "final.pt")
        assert ckpt["model_config"]["head"] == "hybrid"
        assert ckpt["model_config"]["topology"] == "token"
        assert ckpt["model_config"]["encoder"]["name"] == enc
        summary = json.loads((d / "hybrid_summary.json").read_text())
        assert len(summary["tuning"]) == 15
        assert summary["dev_wer"] == min(r["dev_wer"] for r in summary["tuning"])
        for t in TESTS:
            dec = d / f"decode_{t}"
            wer = json.loads((dec / "wer.json").read_text())
            assert rows[enc]["wer"][t] == pytest.approx(wer["wer"], abs=0.01)
            assert json.loads((dec / "sclite.json").read_text())["agree"] is True
            ids = [line.split()[0] for line in (dec / "text").read_text().splitlines()]
            assert ids == [line.split()[0] for line in
                           (data / t / "text").read_text().splitlines()]
        for split in ("dev", *TESTS):
            assert 0.0 <= rows[enc]["frame_acc"][split] <= 100.0
        assert rows[enc]["ctc_wer"]["test_real"] == pytest.approx(json.loads(
            (exp / enc / "decode_test_real" / "wer.json").read_text())["wer"], abs=0.01)
        assert f"| {enc} |" in md
        # The bundle carries the tuned token-loop search.
        _bundle_matches_decode(data, d)
        import blspeech

        decoding = blspeech.load_bundle(d / "final.bundle").decoding
        assert decoding == {"method": "viterbi", "prior_scale": summary["prior_scale"],
                            "insertion_penalty": summary["insertion_penalty"]}
    assert "# telephony_mini: the HMM-hybrid head" in stdout


def test_hybrid_stages_on_gmm_alignments(recipe):
    """Stages 8-9 of the default run (--aligner gmm): a monophone GMM-HMM aligns every
    split, the hybrid models learn its pdfs starting from their CTC models' encoders, an
    HLG graph and flashlight's lexicon search (with and without the LM) decode them (tuned
    on dev), sclite agrees, and RESULTS.md gets the hybrid head's section and verdict."""
    from blspeech.io.kaldi import read_int_vectors

    data, exp, stdout = recipe
    gmm = exp / "gmm"
    num_pdfs = int((gmm / "num_pdfs").read_text())
    for split, scp in (("train", gmm / "pdf.scp"), ("dev", gmm / "ali_dev" / "pdf.scp"),
                       *((t, gmm / f"ali_{t}" / "pdf.scp") for t in TESTS)):
        frames = dict(line.split() for line in
                      (data / split / "utt2num_frames").read_text().splitlines())
        pdfs = dict(read_int_vectors(f"scp:{scp}"))
        assert pdfs and all(len(p) == int(frames[u]) for u, p in pdfs.items()), split
        assert all(p.max() < num_pdfs for p in pdfs.values())
    assert (gmm / "graph" / "HLG.fst").is_file()
    rows = {r_["encoder"]: r_ for r_ in
            json.loads((exp / "results_hybrid_gmm.json").read_text())}
    assert sorted(rows) == sorted(HYBRID)
    for enc in HYBRID:
        d = exp / f"hybrid_gmm_{enc}"
        config = load_checkpoint(d / "final.pt")["model_config"]
        assert config["topology"] is None and config["num_pdfs"] == num_pdfs
        summary = json.loads((d / "hybrid_summary.json").read_text())
        assert len(summary["tuning"]) == 6
        assert summary["dev_wer"] == min(t["dev_wer"] for t in summary["tuning"])
        for t in TESTS:
            dec = d / f"decode_{t}"
            assert rows[enc]["wer"][t] == pytest.approx(
                json.loads((dec / "wer.json").read_text())["wer"], abs=0.01)
            assert json.loads((dec / "sclite.json").read_text())["agree"] is True
            ids = [line.split()[0] for line in (dec / "text").read_text().splitlines()]
            assert ids == [line.split()[0] for line in
                           (data / t / "text").read_text().splitlines()]
        for name, grid in (("lm", 16), ("nolm", 4)):  # flashlight over the phones
            lex = summary["lexicon"][name]
            assert len(lex["tuning"]) == grid and lex["prior_scale"] == summary["prior_scale"]
            assert lex["dev_wer"] == min(t["dev_wer"] for t in lex["tuning"])
            for t in TESTS:
                assert rows[enc]["lexicon"][name]["wer"][t] == pytest.approx(json.loads(
                    (d / f"decode_{name}_{t}" / "wer.json").read_text())["wer"], abs=0.01)
        assert rows[enc]["ctc_wer_wfst"]["test_real"] == pytest.approx(json.loads(
            (exp / enc / "decode_wfst_test_real" / "wer.json").read_text())["wer"], abs=0.01)
        # The hybrid training started from the encoder of the same encoder's CTC model.
        log = (d / "train.log").read_text()
        assert f"encoder weights from {exp / enc / 'final.pt'}" in log, log[:2000]
    md = (exp / "RESULTS_hybrid_gmm.md").read_text()
    assert "monophone GMM-HMM" in md and all(f"| {enc} |" in md for enc in HYBRID)
    assert "# telephony_mini: the HMM-hybrid head" in stdout
    # RESULTS.md, written again by stage 9: the hybrid section, MAPSSWE and verdict.
    results = (exp / "RESULTS.md").read_text()
    assert "## The HMM-hybrid head (stages 8-9)" in results
    sig = json.loads((exp / "significance.json").read_text())
    assert [s["test_set"] for s in sig["mapsswe_hybrid"]] == TESTS
    for s in sig["mapsswe_hybrid"]:
        assert s["wer_a"] == pytest.approx(rows[HYBRID[1]]["wer"][s["test_set"]], abs=0.01)
        assert s["wer_b"] == pytest.approx(rows[HYBRID[0]]["wer"][s["test_set"]], abs=0.01)
        assert f"{s['test_set']}: **{s['verdict']}**" in " ".join(results.split())
    assert sorted((s["encoder"], s["test_set"]) for s in sig["hybrid_vs_ctc"]) == sorted(
        (e, t) for e in HYBRID for t in TESTS)
    ctc = {r_["encoder"]: r_ for r_ in json.loads((exp / "results.json").read_text())}
    for s in sig["hybrid_vs_ctc"]:
        assert s["wer_b"] == pytest.approx(ctc[s["encoder"]]["wer"][s["test_set"]], abs=0.01)
        assert ctc[s["encoder"]]["wer_hybrid_hlg"][s["test_set"]] == pytest.approx(
            s["wer_a"], abs=0.01)
    # A rerun of stages 8-9 keeps the finished alignments, models and decodes.
    r = run_recipe(data, exp, "--stage", "8", "--stop-stage", "9")
    assert f"{exp / 'gmm'} is up to date" in r.stdout
    for enc in HYBRID:  # the models are decoded at the same time, each with its log
        log = (exp / f"hybrid_gmm_{enc}" / "stage9.log").read_text()
        assert "hybrid_summary.json is up to date" in log, log


def test_trained_model_decodes_another_data_dir(recipe, tmp_path):
    data, exp, _ = recipe
    out = tmp_path / "decode_dev"
    r = subprocess.run([sys.executable, "-m", "blspeech", "decode",
                        str(exp / "bl_resnet_am_tiny" / "final.pt"), str(data / "dev"),
                        str(out), "--no-progress"], env=_env(), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["utterances"] == 6
    assert len((out / "text").read_text().splitlines()) == 6


def test_quick_and_bad_options(tmp_path):
    r = subprocess.run([str(RUN_SH), "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "--quick" in r.stdout and "--stop-stage" in r.stdout
    r = subprocess.run([str(RUN_SH), "--quick", "maybe"], capture_output=True, text=True,
                       timeout=30, env=_env())
    assert r.returncode == 2 and "true or false" in r.stderr
    r = subprocess.run([str(RUN_SH), "--nope", "1"], capture_output=True, text=True,
                       timeout=30, env=_env())
    assert r.returncode == 2 and "unknown option --nope" in r.stderr
    # A later stage without the earlier ones' outputs: one line naming what is missing.
    r = subprocess.run([str(RUN_SH), "--stage", "7", "--exp-dir", str(tmp_path / "exp"),
                        "--data-dir", str(tmp_path / "data")], capture_output=True,
                       text=True, timeout=60, env=_env(), cwd=ROOT)
    assert r.returncode == 2
    assert "efficiency.json is missing; run stage 6 first" in r.stderr
    assert "Traceback" not in r.stderr


def test_stage_without_its_inputs_names_the_stage_to_run(tmp_path):
    data, exp = tmp_path / "data", tmp_path / "exp"

    def run(stage: str) -> str:
        r = subprocess.run([str(RUN_SH), "--stage", stage, "--data-dir", str(data),
                            "--exp-dir", str(exp)], capture_output=True, text=True,
                           timeout=60, env=_env(), cwd=ROOT)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        return r.stderr

    assert f"stage 3 needs {data}/train_sp/feats.scp; run --stage 1 first" in run("3")
    for split in ("train_sp", "dev"):
        (data / split).mkdir(parents=True)
        (data / split / "feats.scp").touch()
    assert f"stage 3 needs {data}/lang_bpe128/tokenizer.pt; run --stage 2 first" in run("3")
    assert f"stage 4 needs {exp}/resnet_am_mini/final.pt; run --stage 3 first" in run("4")
    assert not exp.exists()  # nothing written


def test_compare_models_command_errors(recipe, tmp_path):
    data, exp, _ = recipe

    def run(*args):
        return subprocess.run([sys.executable, "-m", "blspeech", "compare-models", *args],
                              env=_env(), capture_output=True, text=True, timeout=120)

    r = run(str(exp / "resnet_am_tiny" / "final.pt"), "--data-dir", str(data / "dev"))
    assert r.returncode == 2 and "expected NAME=CHECKPOINT" in r.stderr
    r = run(f"a={exp / 'resnet_am_tiny' / 'final.pt'}", f"a={exp / 'conformer_tiny' / 'final.pt'}",
            "--data-dir", str(data / "dev"))
    assert r.returncode == 2 and "given twice" in r.stderr
    r = run(f"a={tmp_path / 'missing.pt'}", "--data-dir", str(data / "dev"))
    assert r.returncode == 2 and "missing.pt" in r.stderr and "Traceback" not in r.stderr
    out = tmp_path / "eff.json"
    r = run(f"a={exp / 'resnet_am_tiny' / 'final.pt'}", "--data-dir", str(data / "dev"),
            "--max-utts", "2", "--repeats", "1", "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)
    assert row["name"] == "a" and row["utterances"] == 2 and len(row["rtf_runs"]) == 1
    assert json.loads(out.read_text())["a"]["rtf"] == row["rtf"]


def test_pareto_front_and_claim_checks():
    from blspeech.inference.compare import claim_checks, pareto_front

    assert pareto_front([(1.0, 20.0), (0.7, 19.0), (0.5, 30.0), (0.8, 25.0)]) == [
        False, True, True, False]
    assert pareto_front([(1.0, 20.0), (1.0, 20.0)]) == [True, True]  # ties dominate nothing

    def row(name, gflops, rtf, real, synth):
        return {"encoder": name, "gflops_per_sec": gflops, "rtf_cpu": rtf,
                "wer": {"test_real": real, "test_synth": synth}}

    rows = [row("base", 1.0, 0.010, 20.0, 10.0), row("bl", 0.69, 0.0079, 20.0, 9.0),
            row("peer", 0.5, 0.02, 25.0, 12.0)]
    checks = claim_checks(rows, "base", "bl", TESTS)
    assert [c["met"] for c in checks] == [True, True, True, True, True, True]
    rows[1] = row("bl", 0.71, 0.0081, 20.5, 9.0)
    checks = {c["check"]: c["met"] for c in claim_checks(rows, "base", "bl", TESTS)}
    assert checks == {"GFLOPs bl / base": False, "WER test_real: bl vs base": False,
                      "WER test_synth: bl vs base": True, "CPU RTF bl / base": False,
                      "bl on the WER-vs-GFLOPs Pareto front (test_real)": True,
                      "bl on the WER-vs-GFLOPs Pareto front (test_synth)": True}
    rows.append(row("better", 0.6, 0.005, 19.0, 8.0))
    checks = {c["check"]: c["met"] for c in claim_checks(rows, "base", "bl", TESTS)}
    assert not checks["bl on the WER-vs-GFLOPs Pareto front (test_real)"]
    assert claim_checks(rows, "base", "missing", TESTS) == []


def test_paired_rtf_ratios_and_busy_rounds():
    """compare-models' paired ratios: a round slowed for both models keeps the ratio, and
    rounds that vary too much mark the figure unstable (the issue's busy machine: rounds
    between 0.0022 and 0.0117 s/s)."""
    from blspeech.inference.compare import claim_checks, ratio_summary, rounds_stable

    base = [0.0020, 0.0040, 0.0021]  # the second round ran beside another process
    bl = [0.0015, 0.0030, 0.0016]
    ratios, median, iqr = ratio_summary(bl, base)
    assert median == pytest.approx(0.75) and iqr < 0.01
    assert not rounds_stable({"base": base, "bl": bl}, [0.0, iqr], [1.0, median])
    calm = {"base": [0.0020, 0.0021, 0.0020], "bl": [0.0015, 0.0016, 0.0015]}
    assert rounds_stable(calm, [0.0, 0.02], [1.0, 0.75])
    assert not rounds_stable(calm, [0.0, 0.2], [1.0, 0.75])  # ratios disagree
    busy = {"base": [0.0022, 0.0117], "bl": [0.0030, 0.0031]}
    assert not rounds_stable(busy, [0.0, 0.0], [1.0, 1.0])
    # The claim check uses the paired ratio, not the ratio of the medians.
    rows = [{"encoder": "b", "gflops_per_sec": 1.0, "rtf_cpu": 0.002,
             "wer": {"t": 10.0}},
            {"encoder": "c", "gflops_per_sec": 0.7, "rtf_cpu": 0.0019, "rtf_ratio_cpu": 0.75,
             "wer": {"t": 10.0}}]
    rtf = next(c for c in claim_checks(rows, "b", "c", ["t"]) if c["check"].startswith("CPU"))
    assert rtf["measured"] == 0.75 and rtf["met"]
