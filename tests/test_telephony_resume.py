"""recipes/telephony_mini/run.sh killed during training and run again, on its own small
corpus (a module of its own, so that pytest-xdist runs it beside test_telephony_recipe.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from test_telephony_recipe import ENCODERS, ROOT, _cmd, _env, run_recipe


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stages 0-2 only: corpus, features, tokenizer and LM."""
    root = tmp_path_factory.mktemp("telephony_resume")
    data = root / "data"
    run_recipe(data, root / "exp", "--stop-stage", "2")
    return data


def test_killed_run_resumes(corpus, tmp_path):
    """Kill the recipe while it trains the second seed (two trainings at a time: the two
    encoders with seed 0, then with seed 1); the re-run finishes it without redoing the
    first seed, and every output is complete (the report gives the seeds' spread)."""
    data = corpus
    exp = tmp_path / "exp"
    enc = ENCODERS[:2]
    # WFST decoding is left out here (test_telephony_recipe.py covers it): the report's
    # seeds need no more than greedy and LM decodes.
    cmd = _cmd(data, exp, "--stage", "3", "--stop-stage", "7", "--encoders", " ".join(enc),
               "--epochs", "1", "--seeds", "2", "--train-jobs", "2", "--wfst", "false")
    proc = subprocess.Popen(cmd, env=_env(), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    firsts = [exp / e / "final.pt" for e in enc]
    second_started = exp / f"{enc[1]}_seed1" / "config.yaml"
    deadline = time.time() + 300
    while not second_started.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert second_started.exists(), "the recipe never reached the second seed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert all(f.is_file() for f in firsts)
    assert not (exp / f"{enc[1]}_seed1" / "final.pt").exists()
    first_mtimes = [f.stat().st_mtime_ns for f in firsts]
    r = run_recipe(data, exp, "--stage", "3", "--stop-stage", "7", "--encoders",
                   " ".join(enc), "--epochs", "1", "--baseline", enc[0], "--candidate", enc[1],
                   "--seeds", "2", "--wfst", "false")
    assert [f.stat().st_mtime_ns for f in firsts] == first_mtimes
    rows = json.loads((exp / "results.json").read_text())
    assert [r_["encoder"] for r_ in rows] == enc and all(r_["epochs"] == 1 for r_ in rows)
    metrics = [json.loads(line) for line in
               (exp / enc[1] / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1]
    assert "RESULTS.md" in r.stdout
    # Seed 1 trained with its own seed, and the report has every seed's WER.
    assert yaml.safe_load((exp / f"{enc[1]}_seed1" / "config.yaml").read_text()
                          )["training"]["seed"] == 1
    seeds = json.loads((exp / "significance.json").read_text())["seeds"]
    for row in seeds:
        run = row["encoder"] + "_seed1"
        key = {"greedy": "decode_", "LM": "decode_lm_", "WFST": "decode_wfst_"}[
            row["decoding"]]
        second = json.loads((exp / run / f"{key}{row['test_set']}" / "wer.json").read_text())
        assert row["wers"][1] == pytest.approx(second["wer"], abs=0.01)
    assert "## Seeds (2 per encoder)" in (exp / "RESULTS.md").read_text()
    assert {row["decoding"] for row in seeds} == {"greedy", "LM"}
