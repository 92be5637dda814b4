"""CUDA paths: training on the GPU (fp32 against the CPU's loss curve, fp16 and bf16
autocast), a GPU checkpoint resumed on the CPU, torchrun with NCCL, decoding and
transcription on the GPU against the CPU.

Skipped without a GPU (CI has none). Where espeak-ng is missing, set
``BLSPEECH_TEST_SPEECH_CACHE`` to a folder filled by a run on a machine that has it (see
conftest.py). Data and helpers are test_train.py's.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_train import ENV, STEPPED, cli_train, corpus, overfit_config, step_losses

from blspeech.inference.bundle import load_bundle
from blspeech.inference.decode import decode_data_dir
from blspeech.io.checkpoint import load_checkpoint
from blspeech.training.trainer import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

__all__ = ["corpus"]  # the fixture shared with test_train.py

# test_train.py's stepped run (12 steps, checkpoints every 3) without dropout and
# SpecAugment: the GPU draws its dropout masks from another generator than the CPU.
SETS = [x for x in STEPPED if not x.startswith(("model.dropout", "specaug"))] + [
    "training.accum_grad=2", "training.keep_last_n=10"]
# The GPU's convolutions use TF32 (10-bit mantissa) by default and reduce in another order
# than the CPU: the first step's loss (the same weights and batch) agrees to rounding, and
# the curves drift apart slowly as the updates differ. Seen on an H200: 8e-6 at step 1,
# at most 5.1e-3 over the 12 steps.
FIRST_STEP_REL, CURVE_REL = 1e-4, 2e-2


def run_cli(args: list[str], launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([*(launcher or [sys.executable]), "-m", "blspeech", *args],
                          capture_output=True, text=True, env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def on_gpu(args: list[str]) -> list[str]:
    i = args.index("--device")
    return [*args[:i + 1], "cuda", *args[i + 2:]]


def stepped_run(corpus, exp: Path, device: str) -> dict[int, float]:
    args = cli_train(corpus, exp, *SETS)
    run_cli(on_gpu(args) if device == "cuda" else args)
    losses = step_losses(exp / "train.log")
    assert sorted(losses) == list(range(1, 13))
    return {s: v[0] for s, v in losses.items()}


def rel_diffs(a: dict[int, float], b: dict[int, float]) -> dict[int, float]:
    return {s: abs(a[s] - b[s]) / abs(b[s]) for s in a}


@pytest.fixture(scope="module")
def gpu_run(corpus, tmp_path_factory):
    exp = tmp_path_factory.mktemp("gpu") / "exp"
    return {"losses": stepped_run(corpus, exp, "cuda"), "exp": exp}


def test_gpu_training_follows_the_cpu_loss_curve(corpus, gpu_run, tmp_path):
    assert "device cuda:0" in (gpu_run["exp"] / "train.log").read_text()
    cpu = stepped_run(corpus, tmp_path / "cpu", "cpu")
    diffs = rel_diffs(gpu_run["losses"], cpu)
    print("GPU against CPU, relative loss differences by step:", diffs)
    assert diffs[1] < FIRST_STEP_REL and max(diffs.values()) < CURVE_REL, diffs
    ckpt = load_checkpoint(gpu_run["exp"] / "last.pt")  # weights_only, onto the CPU
    assert all(v.device.type == "cpu" for v in ckpt["model"].values())
    assert ckpt["rng"][0]["cuda"] is not None


def test_gpu_checkpoint_resumes_on_the_cpu(corpus, gpu_run, tmp_path):
    exp = tmp_path / "exp"
    exp.mkdir()
    shutil.copy(gpu_run["exp"] / "checkpoint-6.pt", exp / "last.pt")
    run_cli(cli_train(corpus, exp, *SETS))
    log = (exp / "train.log").read_text()
    assert "resumed from" in log and "6 step(s) done" in log and "device cpu" in log
    after = step_losses(exp / "train.log")
    assert sorted(after) == list(range(7, 13))
    resumed = {s: v[0] for s, v in after.items()}
    diffs = rel_diffs(resumed, gpu_run["losses"])
    print("resumed on the CPU against the GPU run, relative loss differences:", diffs)
    assert max(diffs.values()) < CURVE_REL, diffs


@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_mixed_precision_training_on_the_gpu(corpus, tmp_path, amp):
    exp = tmp_path / "exp"
    run_cli(on_gpu(cli_train(corpus, exp, "training.epochs=6", f"training.amp={amp}")))
    assert f"amp {amp}" in (exp / "train.log").read_text()
    rows = [json.loads(x) for x in (exp / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train_loss"] for r in rows]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < 0.8 * losses[0], losses
    scaler = load_checkpoint(exp / "last.pt")["scaler"]
    # fp16 needs loss scaling (the scale is saved to resume it); bf16 has fp32's range.
    assert (scaler.get("scale", 0) > 0) if amp == "fp16" else not scaler, scaler


def test_torchrun_on_the_gpu_uses_nccl(corpus, tmp_path):
    exp = tmp_path / "exp"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc-per-node", "1"]
    run_cli(on_gpu(cli_train(corpus, exp, "training.epochs=2")), launcher)
    assert "world size 1 (process group: nccl), device cuda:0" in (exp / "train.log").read_text()
    assert (exp / "last.pt").is_file()


@pytest.fixture(scope="module")
def overfit_gpu(corpus, tmp_path_factory):
    """test_train.py's overfitting run (80 epochs of one batch), trained on the GPU."""
    exp = tmp_path_factory.mktemp("overfit_gpu") / "exp"
    summary = train(overfit_config(average_last_n=0), train_dir=corpus["small"],
                    dev_dir=corpus["small"], tokenizer_dir=corpus["lang"], exp_dir=exp,
                    device="cuda", resume=False)
    assert summary["best_metric"] == 0.0, summary
    return exp


def test_gpu_and_cpu_decode_alike(corpus, overfit_gpu, tmp_path):
    results = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / device
        summary = decode_data_dir(overfit_gpu / "best.pt", corpus["small"], out,
                                  method="greedy", device=device, progress=False)
        results[device] = (summary, (out / "text").read_text())
    assert results["cuda"][1] == results["cpu"][1]
    assert results["cuda"][0]["wer"] == results["cpu"][0]["wer"] == 0.0


def test_transcribe_on_the_gpu(corpus, overfit_gpu, tmp_path):
    bundle_path = tmp_path / "model.bundle"
    run_cli(["make-bundle", str(overfit_gpu / "best.pt"), str(bundle_path)])
    wavs = [line.split(maxsplit=1)[1].strip()
            for line in (corpus["small"] / "wav.scp").read_text().splitlines()]
    texts = {}
    for device in ("cpu", "cuda"):
        texts[device] = run_cli(["transcribe", str(bundle_path), *wavs,
                                 "--device", device]).stdout
    assert texts["cuda"] == texts["cpu"] and len(texts["cpu"].splitlines()) == len(wavs)
    bundle = load_bundle(bundle_path, "cuda")
    refs = dict(line.split(maxsplit=1) for line in
                (corpus["small"] / "text").read_text().splitlines())
    utt = next(iter(refs))
    wav = Path(wavs[0])
    assert utt in wav.name and bundle.transcribe(str(wav)) == refs[utt].strip()
