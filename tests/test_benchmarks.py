"""The benchmark scripts run and report what they claim (tiny sizes; no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_train_speed_breakdown_splits_convolutions_from_the_rest():
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "train_speed.py"), "--preset", "tiny",
         "--batch", "2", "--seconds", "1", "--steps", "1", "--rounds", "1", "--warmup", "1",
         "--threads", "1", "--channels-last", "--padded", "--breakdown", "--json"],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    models = result["models"]
    assert sorted(models) == ["bl_resnet_am_tiny", "resnet_am_tiny"]
    for row in models.values():
        # Both parts are real work in a training step.
        assert row["breakdown"]["conv_ms"] > 0 and row["breakdown"]["other_ms"] > 0
    ratio = result["breakdown_ratio_bl_over_baseline"]
    base, bl = models["resnet_am_tiny"]["breakdown"], models["bl_resnet_am_tiny"]["breakdown"]
    assert ratio["conv_ms"] == round(bl["conv_ms"] / base["conv_ms"], 3)
    assert 0 < result["flops_ratio_bl_over_baseline"] < 1


def test_train_speed_cycles_batch_shapes_and_changes_bl_settings():
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "train_speed.py"), "--preset", "tiny",
         "--batch", "2", "--seconds", "1", "--steps", "3", "--rounds", "1", "--warmup", "1",
         "--threads", "1", "--shapes", "3", "--bl-set", "alpha=4", "--json"],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    # Three lengths in multiples of 32 frames, each filling the same 200-frame budget.
    assert [t for _, t in result["shapes"]] == [32, 128, 192]
    assert all(b == max(1, 200 // t) for b, t in result["shapes"])
    assert result["bl_overrides"] == {"alpha": 4}
    # alpha 4 narrows the Little branch: fewer parameters than the preset's alpha 2.
    default = subprocess.run(
        [sys.executable, "-c", "from blspeech.models import build_model; "
         "print(sum(p.numel() for p in build_model('bl_resnet_am_tiny').parameters()))"],
        capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result["models"]["bl_resnet_am_tiny"]["params"] < int(default.stdout)
