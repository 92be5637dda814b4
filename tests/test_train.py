"""CTC training: overfitting, exact resume after SIGKILL, DDP equivalence, config errors,
the checkpoint contract and checkpoint averaging.

Data: 8 real espeak-ng utterances at 8 kHz (two speakers), 40 log-mel bins computed once
per session; a BPE tokenizer with 40 pieces trained on their transcripts. Training runs
with one intra-op thread (in-process and in subprocesses) so that timings and numerics do
not depend on how busy the machine is.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_data_dir

from blspeech.cli import main as cli_main
from blspeech.data.speech import SpeechDataset, collate
from blspeech.decoding.ctc import greedy_batch
from blspeech.frontend.extract import compute_cmvn, compute_feats
from blspeech.frontend.features import CMVN
from blspeech.io.checkpoint import load_checkpoint
from blspeech.io.datadir.ops import subset_data_dir
from blspeech.models.asr import acoustic_model_from_config
from blspeech.scoring.wer import score
from blspeech.text.tokenizers import TextNormalizer, tokenizer_from_dict
from blspeech.training.checkpoints import average_checkpoints
from blspeech.training.config import build_config, config_diff, read_config_file
from blspeech.training.losses import ctc_loss_sum
from blspeech.training.prep import noam
from blspeech.training.trainer import train

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, OMP_NUM_THREADS="1",
           PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
STEP_LINE = re.compile(r" step (\d+) batch \d+/\d+ loss (\S+) ")
CONTRACT = ("model", "model_config", "tokenizer", "normalizer", "frontend", "cmvn",
            "data_source", "optimizer", "scheduler", "scaler", "loader", "epoch", "step",
            "best_metric", "rng", "config", "metrics")


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """8 utterances with features and global CMVN, spk0's 4 as a subset, a BPE-40 dir."""
    root = tmp_path_factory.mktemp("ctc")
    full = make_data_dir(root, n_utts=8, sample_rate=8000, n_speakers=2)
    small = root / "small"
    subset_data_dir(full, small, speakers=["spk0"])
    for d in (full, small):
        compute_feats(d, nj=1, frontend_config={"num_mel_bins": 40}, progress=False)
        compute_cmvn(d)
    lang = root / "lang_bpe40"
    assert cli_main(["train-tokenizer", str(full), str(lang), "--vocab-size", "40"]) == 0
    return {"root": root, "full": full, "small": small, "lang": lang}


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(**training) -> dict:
    cfg = read_config_file("ctc_tiny")
    cfg["training"].update(training)
    return cfg


def overfit_config(**training) -> dict:
    """80 epochs of one batch of 4 utterances, selected by dev WER."""
    cfg = tiny_config(epochs=80, seed=0, log_interval=20, keep_last_n=1, select_by="dev_wer",
                      **training)
    cfg["optim"]["lr"] = 0.01
    cfg["data"].update(buckets=1, max_frames=2000)
    return cfg


@pytest.fixture(scope="session")
def overfit(corpus, tmp_path_factory):
    """bl_resnet_am_tiny trained on spk0's 4 utterances (one batch of 4), dev = train."""
    exp = tmp_path_factory.mktemp("overfit") / "exp"
    cfg = overfit_config(average_last_n=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summary = train(cfg, train_dir=corpus["small"], dev_dir=corpus["small"],
                        tokenizer_dir=corpus["lang"], exp_dir=exp, device="cpu", resume=False)
    finally:
        torch.set_num_threads(threads)
    return exp, summary


def cli_train(corpus, exp, *sets, train_dir=None, resume=True) -> list[str]:
    args = ["train", "--config", "ctc_tiny", "--train-dir", str(train_dir or corpus["full"]),
            "--dev-dir", str(corpus["small"]), "--tokenizer-dir", str(corpus["lang"]),
            "--exp-dir", str(exp), "--device", "cpu", "--resume" if resume else "--no-resume"]
    for s in sets:
        args += ["--set", s]
    return args


def step_losses(log: Path) -> dict[int, list[float]]:
    """Every logged training loss by step (a resumed run logs replayed steps again)."""
    out: dict[int, list[float]] = {}
    for line in log.read_text().splitlines():
        m = STEP_LINE.search(line)
        if m:
            out.setdefault(int(m.group(1)), []).append(float(m.group(2)))
    return out


# Batches of one utterance (max_frames below two utterances), dropout and SpecAugment on:
# their random draws are seeded per global batch, so they must not break the comparisons.
STEPPED = ["data.max_frames=400", "model.dropout=0.1", "specaug.time_masks=2",
           "training.epochs=3", "training.log_interval=1", "training.save_every_n_steps=3",
           "training.average_last_n=0"]


@pytest.fixture(scope="session")
def straight_run(corpus, tmp_path_factory):
    """One process, accum_grad 2: 8 batches of 1 utterance = 4 steps per epoch, 12 steps."""
    exp = tmp_path_factory.mktemp("straight") / "exp"
    proc = subprocess.run([sys.executable, "-m", "blspeech",
                           *cli_train(corpus, exp, *STEPPED, "training.accum_grad=2")],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr
    losses = step_losses(exp / "train.log")
    assert sorted(losses) == list(range(1, 13))
    return {"losses": {s: v[0] for s, v in losses.items()}, "exp": exp}


# --- 1. a tiny model overfits ---------------------------------------------------------------


def test_tiny_model_overfits_to_wer_zero(overfit):
    exp, summary = overfit
    rows = [json.loads(line) for line in (exp / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 80 and summary["stopped"] == "completed"
    assert rows[-1]["dev_wer"] == 0.0, rows[-1]
    assert rows[-1]["train_loss"] < 0.05 < rows[0]["train_loss"]
    assert summary["best_metric"] == 0.0 and summary["select_by"] == "dev_wer"
    for name in ("best.pt", "last.pt", "avg_last_2.pt", "config.yaml", "train.log"):
        assert (exp / name).is_file(), name
    assert list((exp / "tb").iterdir())  # TensorBoard events


# --- 5. checkpoint contract, decoding from a checkpoint alone, averaging --------------------


def test_checkpoint_rebuilds_and_decodes(overfit, corpus):
    exp, _ = overfit
    ckpt = torch.load(exp / "last.pt", map_location="cpu", weights_only=True)
    assert set(CONTRACT) <= set(ckpt)
    assert ckpt["data_source"] == "feats" and ckpt["epoch"] == 80 and ckpt["step"] == 80
    assert ckpt["cmvn"]["mode"] == "global" and ckpt["cmvn"]["stats"].dtype == torch.float64
    assert ckpt["cmvn"]["stats"].shape == (2, 41) and ckpt["frontend"]["num_mel_bins"] == 40
    assert ckpt["frontend"]["sample_rate"] == 8000
    assert ckpt["config"]["model"]["name"] == "bl_resnet_am_tiny"
    assert ckpt["loader"]["epoch"] == 79 and len(ckpt["rng"]) == 1

    model = acoustic_model_from_config(ckpt["model_config"])
    model.load_state_dict(ckpt["model"])
    model.eval()
    tok = tokenizer_from_dict(ckpt["tokenizer"])
    norm = TextNormalizer(**ckpt["normalizer"])
    ds = SpeechDataset(corpus["small"])
    batch = collate([ds[i] for i in range(len(ds))])  # the batch it was trained on
    cmvn = CMVN.from_stats(ckpt["cmvn"]["stats"], norm_vars=ckpt["cmvn"]["norm_vars"])
    with torch.no_grad():
        log_probs, lengths = model(cmvn(batch["feats"], batch["lengths"]), batch["lengths"])
    decoded = greedy_batch(log_probs, lengths)
    hyps = {u: tok.decode(h.tokens) for u, h in zip(batch["utts"], decoded, strict=True)}
    refs = {u: norm(t) for u, t in zip(batch["utts"], batch["texts"], strict=True)}
    assert score(refs, hyps).wer == 0.0, hyps

    best = load_checkpoint(exp / "best.pt")
    assert best["metrics"]["dev_wer"] == 0.0 and best["best_metric"] == 0.0


def test_average_checkpoints_is_the_mean(overfit):
    exp, _ = overfit
    paths = [exp / "epoch-79.pt", exp / "epoch-80.pt"]
    a, b = (load_checkpoint(p)["model"] for p in paths)
    avg = average_checkpoints(paths)
    assert set(avg) == set(a)
    for key, value in avg.items():
        assert value.dtype == a[key].dtype
        if value.is_floating_point():
            torch.testing.assert_close(value, (a[key] + b[key]) / 2)
        else:
            assert torch.equal(value, torch.div(a[key] + b[key], 2, rounding_mode="floor"))
    saved = torch.load(exp / "avg_last_2.pt", weights_only=True)
    assert saved["averaged_from"] == ["epoch-79.pt", "epoch-80.pt"]
    for key, value in avg.items():
        assert torch.equal(saved["model"][key], value)
    assert not (exp / "epoch-78.pt").exists()  # pruned: keep max(keep_last_n, average_last_n)


# --- 2. exact resume after SIGKILL -----------------------------------------------------------


def test_resume_after_kill_continues_the_same_loss_curve(corpus, straight_run, tmp_path):
    exp = tmp_path / "exp"
    cmd = [sys.executable, "-m", "blspeech",
           *cli_train(corpus, exp, *STEPPED, "training.accum_grad=2")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=ENV)
    for line in proc.stderr:
        # Steps 3 and 6 end mid-epoch (4 steps per epoch): the kill lands after
        # checkpoint-6.pt, in the middle of epoch 2, unless the machine stalls us a whole step.
        if STEP_LINE.search(line) and " step 7 " in line:
            proc.send_signal(signal.SIGKILL)
            break
    proc.stderr.close()
    assert proc.wait(timeout=60) == -signal.SIGKILL, "training ended before it was killed"
    before = step_losses(exp / "train.log")
    # The kill can land between a step's stderr line and its train.log line.
    assert 6 <= max(before) < 12

    done = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 0, done.stderr
    resumed = re.search(r"resumed from \S+: (\d+) epoch\(s\) and (\d+) step\(s\) done",
                        (exp / "train.log").read_text())
    assert resumed and (resumed.group(1), resumed.group(2)) in (("1", "6"), ("2", "8"))
    after = step_losses(exp / "train.log")
    assert sorted(after) == list(range(1, 13))
    # Step 7 ran before the kill (its stderr line was read), so it was replayed even when
    # its first train.log line was lost to the kill.
    replayed = [s for s, v in after.items() if len(v) > 1 or (s == 7 and 7 not in before)]
    assert replayed, "no step ran twice: the kill did not land after a checkpoint"
    for step, values in after.items():
        for v in values:
            assert v == pytest.approx(straight_run["losses"][step], rel=1e-6), (step, values)
    # Not just the logged losses: the final weights and optimizer state are bit-identical.
    ours, theirs = (load_checkpoint(e / "last.pt") for e in (exp, straight_run["exp"]))
    for key, value in theirs["model"].items():
        assert torch.equal(ours["model"][key], value), key
    for i, state in theirs["optimizer"]["state"].items():
        assert torch.equal(ours["optimizer"]["state"][i]["exp_avg_sq"], state["exp_avg_sq"])
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["step"] == 12 and summary["epochs"] == 3
    rows = [json.loads(x) for x in (exp / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]


# --- 3. DDP with 2 processes = 1 process with accum_grad 2 -----------------------------------


def test_ddp_two_processes_match_one_process(corpus, straight_run, tmp_path):
    exp = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", "-m", "blspeech", *cli_train(corpus, exp, *STEPPED, "training.accum_grad=1")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world size 2 (process group: gloo)" in (exp / "train.log").read_text()
    losses = step_losses(exp / "train.log")
    assert sorted(losses) == list(range(1, 13))
    for step, (value,) in losses.items():
        assert value == pytest.approx(straight_run["losses"][step], rel=1e-4), step
    ckpt = load_checkpoint(exp / "last.pt")
    # The same weights too; BatchNorm running stats differ (rank 0 saw half the batches).
    single = load_checkpoint(straight_run["exp"] / "last.pt")["model"]
    for name, _ in acoustic_model_from_config(ckpt["model_config"]).named_parameters():
        torch.testing.assert_close(ckpt["model"][name], single[name], rtol=1e-4, atol=1e-6)
    assert len(ckpt["rng"]) == 2 and ckpt["loader"]["num_replicas"] == 2
    assert len(proc.stdout.strip().splitlines()) == 1  # one summary line, from rank 0


# --- 4. user errors: exit code 2, one line, no traceback -------------------------------------


@pytest.mark.parametrize("sets, expected", [
    (["training.epoch=3"], "unknown config key 'training.epoch'; valid keys in training:"),
    (["optim.lr=-1"], "config optim.lr: must be a number > 0"),
    (["training.amp=fp8"], "config training.amp: must be one of none, bf16, fp16"),
    (["training.amp=fp16"], "fp16 needs --device cuda"),
    (["model.name=no_such_model"], "unknown model 'no_such_model'"),
    (["model.widths=[1]"], "cannot build bl_resnet_am_tiny"),
    (["model.num_mel_bins=80"], "model.num_mel_bins is 80 but the features have 40"),
    (["data.cmvn=speaker"], "cmvn.scp not found"),
    (["bogus.key=1"], "valid sections: model, head, data, specaug"),
])
def test_bad_config_is_one_line_exit_2(corpus, tmp_path, capsys, sets, expected):
    assert cli_main(cli_train(corpus, tmp_path / "exp", *sets)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("blspeech train: error:"), err
    assert expected in err
    assert not (tmp_path / "exp").exists()  # nothing written


def test_missing_tokenizer_dir_and_mismatched_tokenizer(corpus, overfit, tmp_path, capsys):
    args = cli_train(corpus, tmp_path / "exp")
    args[args.index("--tokenizer-dir") + 1] = str(tmp_path / "nowhere")
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert f"tokenizer dir {tmp_path / 'nowhere'} does not exist" in err
    assert "blspeech train-tokenizer" in err and len(err.strip().splitlines()) == 1

    # Resuming a checkpoint trained with BPE-40 with a character tokenizer.
    chars = tmp_path / "lang_char"
    assert cli_main(["train-tokenizer", str(corpus["full"]), str(chars), "--kind", "char"]) == 0
    capsys.readouterr()
    exp, _ = overfit
    args = cli_train(corpus, exp, train_dir=corpus["small"])
    args[args.index("--tokenizer-dir") + 1] = str(chars)
    proc = subprocess.run([sys.executable, "-m", "blspeech", *args], capture_output=True,
                          text=True, env=ENV, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "another tokenizer (vocab size 40)" in proc.stderr


# --- smaller pieces ------------------------------------------------------------------------


def test_too_long_transcripts_are_skipped_not_nan(corpus, tmp_path, one_thread):
    data = tmp_path / "long"
    subset_data_dir(corpus["small"], data, first=4)
    for name in ("feats.scp", "utt2num_frames", "global_cmvn"):
        (data / name).write_bytes((corpus["small"] / name).read_bytes())
    lines = (data / "text").read_text().splitlines()
    lines[1] = lines[1].split()[0] + " " + " ".join(["five"] * 60)  # far more than 70 frames
    (data / "text").write_text("\n".join(lines) + "\n")
    cfg = tiny_config(epochs=1, log_interval=1, average_last_n=0)
    cfg["data"].update(buckets=1, max_frames=2000)
    summary = train(cfg, train_dir=data, dev_dir=data, tokenizer_dir=corpus["lang"],
                    exp_dir=tmp_path / "exp", device="cpu", resume=False)
    row = summary["metrics"]
    assert row["train_skipped"] == 1 and row["dev_skipped"] == 1
    assert row["train_loss"] == row["train_loss"]  # not NaN
    log = (tmp_path / "exp" / "train.log").read_text()
    assert "skipping 1 utterance(s) whose transcript needs more frames" in log
    assert "spk0-utt002" in log


def _long_transcripts(corpus, data: Path, which: list[int]) -> Path:
    """spk0's 4 utterances, those of ``which`` with far more tokens than their frames."""
    subset_data_dir(corpus["small"], data, first=4)
    for name in ("feats.scp", "utt2num_frames", "global_cmvn"):
        (data / name).write_bytes((corpus["small"] / name).read_bytes())
    lines = (data / "text").read_text().splitlines()
    for i in which:
        lines[i] = lines[i].split()[0] + " " + " ".join(["five"] * 60)
    (data / "text").write_text("\n".join(lines) + "\n")
    return data


def test_all_transcripts_too_long_stops_with_one_error_and_no_checkpoint(
        corpus, tmp_path, capsys, one_thread):
    data = _long_transcripts(corpus, tmp_path / "long", [0, 1, 2, 3])
    exp = tmp_path / "exp"
    args = cli_train(corpus, exp, "training.epochs=2", "data.max_frames=400",
                     "training.average_last_n=0", train_dir=data)
    args[args.index("--dev-dir") + 1] = str(data)
    assert cli_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.fullmatch(
        r"blspeech train: error: no batch of epoch 1 had a usable utterance: all 4 "
        r"utterances have more tokens than output frames \(first: spk0-utt00\d, \d+ tokens "
        r"(\(\+\d+ blanks between repeats\) )?> \d+ frames\); use a smaller vocabulary or "
        r"less time subsampling", err), err
    assert not list(exp.glob("*.pt"))  # no best.pt, last.pt or epoch checkpoint


def test_scheduler_steps_only_with_the_optimizer(corpus, tmp_path, one_thread):
    # Batches of one utterance; utterance 1's batch is skipped: no optimizer step there,
    # so no scheduler step either (AdamW counts the steps it took in its state).
    data = _long_transcripts(corpus, tmp_path / "long", [1])
    cfg = tiny_config(epochs=2, log_interval=1, average_last_n=0)
    cfg["data"].update(max_frames=400)
    summary = train(cfg, train_dir=data, dev_dir=data, tokenizer_dir=corpus["lang"],
                    exp_dir=tmp_path / "exp", device="cpu", resume=False)
    assert summary["step"] == 8 and summary["metrics"]["train_skipped"] == 1
    ckpt = load_checkpoint(tmp_path / "exp" / "last.pt")
    adam_steps = {int(s["step"]) for s in ckpt["optimizer"]["state"].values()}
    assert adam_steps == {6} and ckpt["scheduler"]["last_epoch"] == 6


def test_optimizer_step_skips_the_scheduler_when_grad_scaler_skips():
    from blspeech.training.optim import optimizer_step, optimizer_stepped

    assert optimizer_stepped(True, None, None) and not optimizer_stepped(False, None, None)
    assert optimizer_stepped(True, 1024.0, 1024.0) and optimizer_stepped(True, 1024.0, 2048.0)
    assert not optimizer_stepped(True, 1024.0, 512.0)  # GradScaler backed off: inf grads
    # A real GradScaler (CPU: fp16 training itself needs CUDA) with an infinite gradient.
    w = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([w], lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    for grad, expected in ((float("inf"), False), (1.0, True)):
        (scaler.scale(w.sum()) * grad).backward()
        scaler.unscale_(opt)
        assert optimizer_step(opt, sched, scaler, has_loss=True) is expected
        opt.zero_grad()
    assert sched.last_epoch == 1 and torch.allclose(w, torch.full((2,), 0.9))
    (scaler.scale(w.sum()) * 0.0).backward()  # the trainer's zero loss of skipped batches
    scaler.unscale_(opt)
    assert not optimizer_step(opt, sched, scaler, has_loss=False) and sched.last_epoch == 1


def test_exploding_training_names_the_step(corpus, tmp_path, capsys, one_thread):
    args = cli_train(corpus, tmp_path / "exp", "optim.lr=1e12", "training.grad_clip=0",
                     "schedule.warmup_steps=0", "training.epochs=1",
                     train_dir=corpus["small"])
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert re.search(r"non-finite (loss|gradient norm) at step \d+ \(epoch 1\)", err), err


def test_ctc_loss_sum_skips_and_normalizes():
    torch.manual_seed(0)
    lp = torch.randn(3, 6, 5).log_softmax(-1)
    lens = torch.tensor([6, 3, 6])
    total, n, per, skipped = ctc_loss_sum(lp, lens, [[1, 2], [1, 1, 2], [3]])
    assert skipped == [1] and n == 2 and per.shape == (2,)
    _, frames, _, _ = ctc_loss_sum(lp, lens, [[1, 2], [1, 1, 2], [3]], "frame")
    assert frames == 12
    zero, n0, per0, skipped0 = ctc_loss_sum(lp, lens, [[1] * 9] * 3)
    assert n0 == 0 and per0 is None and skipped0 == [0, 1, 2] and float(zero) == 0.0


def test_config_overrides_and_schedules():
    cfg = build_config(read_config_file("ctc_small"), {"specaug": None, "training.epochs": 2})
    assert cfg["specaug"] is None and cfg["training"]["epochs"] == 2
    assert build_config(cfg, {"specaug.time_masks": 1})["specaug"]["freq_masks"] == 2
    assert config_diff(cfg, build_config(cfg)) == []
    assert noam(9, 10) == 1.0 and noam(39, 10) == pytest.approx(0.5)
    assert noam(10_000, 10, min_lr_ratio=0.2) == 0.2
