"""ImageNet recipe: run.sh end to end under torchrun (2 CPU processes, Gloo), resume,
checkpoints, optimizer/schedule helpers and user-error handling."""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from blspeech.data.vision import ShardSampler
from blspeech.io import checkpoint as ckpt_mod
from blspeech.io.checkpoint import (
    capture_rng_state,
    copy_checkpoint,
    load_checkpoint,
    make_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from blspeech.models import build_model, build_model_from_config
from blspeech.training.optim import (
    build_optimizer,
    build_scheduler,
    param_groups,
    sync_lr,
    warmup_cosine,
)
from blspeech.training.vision import build_parser, main, topk_correct

ROOT = Path(__file__).resolve().parents[1]
RUN_SH = ROOT / "recipes" / "imagenet" / "run.sh"
COLOURS = {"red": (200, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 200)}
IMAGE_SIZE = 32


def make_image_folder(root: Path, train_per_class: int = 4, val_per_class: int = 2) -> Path:
    """A tiny ImageFolder tree: 3 classes told apart by colour, 48x48 noisy PNGs."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for name, rgb in COLOURS.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                noise = rng.integers(-30, 30, size=(48, 48, 3))
                pixels = np.clip(np.array(rgb) + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def run_recipe(data: Path, exp: Path, epochs: int, stage: int = 0, stop_stage: int = 2
               ) -> subprocess.CompletedProcess:
    cmd = [str(RUN_SH), "--stage", str(stage), "--stop-stage", str(stop_stage),
           "--data-dir", str(data), "--exp-dir", str(exp), "--model", "bl_resnet50",
           "--nproc-per-node", "2", "--device", "cpu", "--epochs", str(epochs),
           "--batch-size", "3", "--image-size", str(IMAGE_SIZE), "--max-steps-per-epoch", "2",
           "--extra-args", "--workers 0 --print-freq 1"]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300,
                          cwd=ROOT)


def read_metrics(exp: Path) -> list[dict]:
    return [json.loads(line) for line in (exp / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Train in-process with one intra-op thread, like the torchrun children: on a busy
    2-core machine OpenMP spin-waits make two threads much slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("imagenet") / "data")


# ------------------------------------------------------------------- end to end


def test_recipe_trains_evaluates_and_resumes(data_dir: Path, tmp_path: Path) -> None:
    exp = tmp_path / "exp"
    r = run_recipe(data_dir, exp, epochs=2)
    assert r.returncode == 0, r.stdout + r.stderr

    rows = read_metrics(exp)
    assert [row["epoch"] for row in rows] == [1, 2]
    for row in rows:
        assert math.isfinite(row["train_loss"])
        assert 0.0 <= row["top1"] <= row["top5"] <= 100.0
        assert row["lr"] > 0 and row["seconds"] > 0

    # Stage 2 prints the best checkpoint's metrics as the last stdout line.
    final = json.loads(r.stdout.strip().splitlines()[-1])
    assert final["num_samples"] == 6  # every val image counted once over both ranks
    assert final["top1"] == max(row["top1"] for row in rows)
    assert final == json.loads((exp / "eval_best.json").read_text())

    x = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE)
    for name in ("last.pt", "best.pt"):
        ckpt = torch.load(exp / name, map_location="cpu", weights_only=True)
        model = build_model_from_config(ckpt["model_config"])
        model.load_state_dict(ckpt["model"])
        out = model.eval()(x)
        assert out.shape == (2, 3) and torch.isfinite(out).all()
        assert len(ckpt["rng"]) == 2  # one RNG state per rank
        assert ckpt["classes"] == sorted(COLOURS)
    assert torch.load(exp / "last.pt", weights_only=True)["epoch"] == 2

    r = run_recipe(data_dir, exp, epochs=3, stage=1, stop_stage=1)
    assert r.returncode == 0, r.stdout + r.stderr
    resumed = read_metrics(exp)
    assert len(resumed) == 3 and resumed[:2] == rows
    assert resumed[2]["epoch"] == 3 and resumed[2]["step"] == rows[1]["step"] + 2
    assert "resumed from" in (exp / "train.log").read_text()
    assert load_checkpoint(exp / "last.pt")["epoch"] == 3


def test_resume_after_crash_matches_uninterrupted_run(data_dir: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     one_thread: None) -> None:
    """Model, optimizer, scheduler and RNG restore exactly: a run that crashes in epoch 2
    and resumes ends with the same weights and losses as one that never stopped."""
    import blspeech.training.vision as tv

    def argv(exp: Path) -> list[str]:
        return ["--data-dir", str(data_dir), "--exp-dir", str(exp), "--device", "cpu",
                "--epochs", "2", "--batch-size", "4", "--image-size", str(IMAGE_SIZE),
                "--max-steps-per-epoch", "2", "--workers", "0", "--warmup-epochs", "1",
                "--optimizer", "sgd", "--lr", "0.01", "--seed", "5"]

    assert main(argv(tmp_path / "a")) == 0

    real_evaluate, calls = tv.evaluate, []

    def crash_in_epoch_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulated crash")
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(tv, "evaluate", crash_in_epoch_2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        main(argv(tmp_path / "b"))
    monkeypatch.undo()
    assert [r["epoch"] for r in read_metrics(tmp_path / "b")] == [1]
    assert main([*argv(tmp_path / "b"), "--resume"]) == 0

    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    assert a["epoch"] == b["epoch"] == 2 and a["step"] == b["step"] == 4
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    drop = ("seconds",)
    rows_a, rows_b = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert [{k: v for k, v in r.items() if k not in drop} for r in rows_a] == \
        [{k: v for k, v in r.items() if k not in drop} for r in rows_b]


# ------------------------------------------------------------------- user errors


def test_bad_data_dir_exits_2_with_one_line(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "blspeech.training.vision", "--data-dir",
           str(tmp_path / "missing"), "--exp-dir", str(tmp_path / "exp")]
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr
    assert str(tmp_path / "missing") in lines[0]


def test_recipe_stage0_rejects_bad_input(data_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "data" / "train").mkdir(parents=True)
    r = subprocess.run([str(RUN_SH), "--data-dir", str(tmp_path / "data")], env=_env(),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "no val/ folder" in r.stderr and "Traceback" not in r.stderr
    # Errors that only Python can see are caught before torchrun starts any worker.
    r = subprocess.run([str(RUN_SH), "--data-dir", str(data_dir), "--model", "nope",
                        "--exp-dir", str(tmp_path / "exp"), "--nproc-per-node", "2"],
                       env=_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "unknown model 'nope'" in r.stderr and "Traceback" not in r.stderr
    assert "stage 1" not in r.stdout


def test_user_errors_in_process(data_dir: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture) -> None:
    empty = make_image_folder(tmp_path / "data")
    (empty / "train" / "yellow").mkdir()
    cases = [
        (["--data-dir", str(empty)], "without images: yellow"),
        (["--data-dir", str(data_dir), "--model", "nope"], "unknown model 'nope'"),
        (["--data-dir", str(data_dir), "--num-classes", "2"], "smaller than the 3"),
        (["--data-dir", str(data_dir), "--device", "cpu", "--amp", "fp16"], "--amp fp16"),
        (["--data-dir", str(data_dir), "--evaluate", str(tmp_path / "x.pt")], "x.pt"),
    ]
    for argv, message in cases:
        assert main([*argv, "--exp-dir", str(tmp_path / "exp")]) == 2, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err

    assert main(["--data-dir", str(data_dir), "--exp-dir", str(tmp_path / "exp"),
                 "--check-only"]) == 0
    assert capsys.readouterr().out.startswith("ok: 3 classes, 12 train / 6 val images")


def test_help_documents_every_flag() -> None:
    parser = build_parser()
    for action in parser._actions:
        assert action.help and action.help.strip(), action.option_strings
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0


def test_run_sh_help_and_option_parsing(tmp_path: Path) -> None:
    r = subprocess.run([str(RUN_SH), "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0
    assert "Usage:" in r.stdout and "--nproc-per-node" in r.stdout
    assert "#!" not in r.stdout and "set -euo" not in r.stdout  # only the header comment

    script = tmp_path / "opts.sh"
    script.write_text(f"#!/usr/bin/env bash\n# usage line\nset -eu\nfoo_bar=1\nflag=false\n"
                      f". {ROOT}/recipes/utils/parse_options.sh\necho \"$foo_bar $flag $#\"\n")
    script.chmod(0o755)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(script), *args], capture_output=True, text=True, timeout=30)

    assert run("--foo-bar", "x y", "--flag=true", "rest").stdout.strip() == "x y true 1"
    assert run("--help").stdout.strip() == "usage line"
    assert run("--nope", "1").returncode == 2
    assert run("--flag", "maybe").returncode == 2
    assert run("--foo-bar").returncode == 2


# -------------------------------------------------------------------- checkpoints


def _tiny_model() -> nn.Module:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    model.config = {"name": "tiny"}
    return model


def _trained_state() -> tuple[nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR,
                              torch.amp.GradScaler]:
    model = _tiny_model()
    opt = build_optimizer(model, "sgd", lr=0.1, weight_decay=1e-4)
    sched = build_scheduler(opt, warmup_steps=2, total_steps=10, min_lr_ratio=0.1)
    scaler = torch.amp.GradScaler("cpu", enabled=True)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    opt.step()
    sched.step()
    return model, opt, sched, scaler


def test_checkpoint_roundtrip_weights_only(tmp_path: Path) -> None:
    model, opt, sched, scaler = _trained_state()
    path = tmp_path / "sub" / "last.pt"
    save_checkpoint(path, make_checkpoint(model, opt, sched, scaler, epoch=3, step=7,
                                          best_metric=12.5, extra={"classes": ["a", "b"]}))
    raw = torch.load(path, weights_only=True)  # the whole dict, RNG included
    assert raw["epoch"] == 3 and raw["step"] == 7 and raw["best_metric"] == 12.5
    assert raw["model_config"] == {"name": "tiny"} and raw["classes"] == ["a", "b"]

    ckpt = load_checkpoint(path)
    model2, opt2, sched2, scaler2 = _trained_state()
    model2.load_state_dict(ckpt["model"])
    opt2.load_state_dict(ckpt["optimizer"])
    sched2.load_state_dict(ckpt["scheduler"])
    scaler2.load_state_dict(ckpt["scaler"])
    for a, b in zip(model.state_dict().values(), model2.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert sched2.last_epoch == sched.last_epoch
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    assert scaler2.get_scale() == scaler.get_scale()
    assert [p.name for p in tmp_path.joinpath("sub").iterdir()] == ["last.pt"]


def test_checkpoint_restores_rng(tmp_path: Path) -> None:
    torch.manual_seed(1)
    random.seed(2)
    np.random.seed(3)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    path = tmp_path / "rng.pt"
    save_checkpoint(path, make_checkpoint(_tiny_model()))

    def draw() -> tuple:
        return (torch.rand(5).tolist(), random.random(), random.gauss(0, 1),
                np.random.rand(3).tolist(), np.random.randn())

    expected = draw()
    draw()  # move every generator on
    restore_rng_state(load_checkpoint(path)["rng"][0])
    assert draw() == expected
    assert restore_rng_state(capture_rng_state()) is None  # current state round-trips too


def test_checkpoint_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, make_checkpoint(_tiny_model(), epoch=1))

    def broken_save(obj: object, f) -> None:
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, make_checkpoint(_tiny_model(), epoch=2))
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left


def test_copy_checkpoint_survives_source_replacement(tmp_path: Path) -> None:
    last, best = tmp_path / "last.pt", tmp_path / "best.pt"
    save_checkpoint(last, make_checkpoint(_tiny_model(), epoch=1))
    copy_checkpoint(last, best)
    save_checkpoint(last, make_checkpoint(_tiny_model(), epoch=2))
    assert load_checkpoint(best)["epoch"] == 1 and load_checkpoint(last)["epoch"] == 2


def test_load_checkpoint_errors_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pt"
    with pytest.raises(ValueError, match="missing.pt"):
        load_checkpoint(missing)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt.pt"):
        load_checkpoint(corrupt)
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"model": {}, "model_config": {}, "args": argparse.Namespace(x=1)}, unsafe)
    with pytest.raises(ValueError, match="unsafe.pt"):
        load_checkpoint(unsafe)
    not_ckpt = tmp_path / "weights.pt"
    torch.save({"conv.weight": torch.zeros(1)}, not_ckpt)
    with pytest.raises(ValueError, match="weights.pt"):
        load_checkpoint(not_ckpt)


# ---------------------------------------------------------------- optimizer/schedule


def test_no_weight_decay_on_bn_and_bias() -> None:
    model = build_model("bl_resnet50", num_classes=10)
    groups = param_groups(model, weight_decay=1e-4)
    assert [g["weight_decay"] for g in groups] == [1e-4, 0.0]
    decay, no_decay = ({id(p) for p in g["params"]} for g in groups)
    assert len(decay) + len(no_decay) == len(list(model.parameters()))
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            assert {id(module.weight), id(module.bias)} <= no_decay
        if isinstance(module, nn.Conv2d | nn.Linear):
            assert id(module.weight) in decay
            if module.bias is not None:
                assert id(module.bias) in no_decay
    assert id(model.fc.bias) in no_decay


def test_build_optimizer_by_name() -> None:
    model = _tiny_model()
    sgd = build_optimizer(model, "SGD", lr=0.1, weight_decay=1e-4)
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.9
    assert isinstance(build_optimizer(model, "adamw", lr=1e-3, weight_decay=0.05),
                      torch.optim.AdamW)
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer(model, "lion", lr=1e-3, weight_decay=0.0)


def test_warmup_cosine_schedule_values() -> None:
    warmup, total, floor, base = 10, 110, 0.1, 0.5

    def expected(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / (total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    assert warmup_cosine(0, warmup, total, floor) == pytest.approx(0.1)
    assert warmup_cosine(4, warmup, total, floor) == pytest.approx(0.5)
    assert warmup_cosine(9, warmup, total, floor) == pytest.approx(1.0)
    assert warmup_cosine(10, warmup, total, floor) == pytest.approx(1.0)
    assert warmup_cosine(60, warmup, total, floor) == pytest.approx(0.55)
    assert warmup_cosine(110, warmup, total, floor) == pytest.approx(floor)
    assert warmup_cosine(500, warmup, total, floor) == pytest.approx(floor)
    assert warmup_cosine(0, 0, 100, 0.0) == pytest.approx(1.0)  # no warmup

    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=base)
    sched = build_scheduler(opt, warmup, total, floor)
    seen = []
    for _ in range(total + 5):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([base * expected(s) for s in range(total + 5)])


def test_scheduler_resume_follows_new_length() -> None:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_scheduler(opt, 0, 20)
    for _ in range(10):
        opt.step()
        sched.step()
    state = sched.state_dict()
    opt2 = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    longer = build_scheduler(opt2, 0, 40)
    longer.load_state_dict(state)
    sync_lr(longer)
    assert longer.last_epoch == 10
    assert opt2.param_groups[0]["lr"] == pytest.approx(warmup_cosine(10, 0, 40))


# ------------------------------------------------------------------- evaluation


def test_shard_sampler_covers_each_index_once() -> None:
    shards = [list(ShardSampler(7, r, 3)) for r in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(7))
    assert [len(ShardSampler(7, r, 3)) for r in range(3)] == [3, 2, 2]


def test_topk_correct() -> None:
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.0, 0.2], [0.2, 0.3, 0.5]])
    target = torch.tensor([1, 2, 0])
    assert topk_correct(logits, target, (1, 2, 3)) == [1, 2, 3]
