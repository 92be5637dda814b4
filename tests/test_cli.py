"""The ``blspeech`` command line, run as real subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from blspeech.models import build_model
from blspeech.models.profile import count

ENV = dict(os.environ, OMP_NUM_THREADS="1")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "blspeech", *args], capture_output=True,
                          text=True, env=ENV, timeout=300)


def test_profile_prints_one_json_object():
    proc = run("profile", "bl_resnet50", "--input-shape", "3,64,75", "--batch", "2",
               "--repeats", "1", "--set", "num_classes=10")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    stats = json.loads(lines[0])
    expected = count(build_model("bl_resnet50", num_classes=10), torch.randn(2, 3, 64, 75),
                     repeats=0)
    assert stats["macs"] == expected["macs"] and stats["params"] == expected["params"]
    assert stats["breakdown"] == expected["breakdown"]
    assert stats["input_shape"] == [2, 3, 64, 75]
    assert stats["forward_ms"] > 0
    assert stats["config"]["num_classes"] == 10


def test_profile_alpha_beta_change_the_count():
    base = json.loads(run("profile", "bl_resnet50", "--input-shape", "3,64,64",
                          "--repeats", "0").stdout)
    wide = json.loads(run("profile", "bl_resnet50", "--input-shape", "3,64,64",
                          "--alpha", "1", "--beta", "1", "--repeats", "0").stdout)
    assert wide["config"]["alpha"] == 1 and wide["config"]["beta"] == 1
    assert wide["breakdown"]["little"]["macs"] > base["breakdown"]["little"]["macs"]
    assert wide["breakdown"]["big"]["macs"] == base["breakdown"]["big"]["macs"]


def test_user_errors_are_one_line_without_traceback():
    for args in (["profile", "no_such_model"],
                 ["profile", "bl_resnet50", "--alpha", "3"],
                 ["profile", "bl_resnet50", "--set", "widht=2"],
                 ["profile", "bl_resnet50", "--input-shape", "1,64,64", "--repeats", "0"]):
        proc = run(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert proc.stderr.startswith("blspeech profile: error:"), proc.stderr
    proc = run("profile", "bl_resnet50", "--input-shape", "3,x,4")
    assert proc.returncode == 2 and "comma-separated integers" in proc.stderr


def test_debug_shows_the_traceback_of_user_errors():
    for proc in (run("--debug", "profile", "no_such_model"),
                 subprocess.run([sys.executable, "-m", "blspeech", "profile", "no_such_model"],
                                capture_output=True, text=True, timeout=300,
                                env=dict(ENV, BLSPEECH_DEBUG="1"))):
        assert proc.returncode == 1
        assert "Traceback" in proc.stderr
        assert "UserError: unknown model 'no_such_model'" in proc.stderr


def test_internal_errors_keep_their_traceback(monkeypatch, capsys):
    # A ValueError that is not a UserError is a bug of ours: main() lets it through.
    from blspeech import cli
    from blspeech.models import profile

    def broken(*args, **kwargs):
        raise ValueError("an internal inconsistency")

    monkeypatch.setattr(profile, "count", broken)
    with pytest.raises(ValueError, match="internal inconsistency"):
        cli.main(["profile", "bl_resnet50", "--input-shape", "3,64,64", "--repeats", "0"])
    assert "error:" not in capsys.readouterr().err


def test_help_and_console_script():
    proc = run("profile", "--help")
    assert proc.returncode == 0
    assert "multiply-accumulates" in proc.stdout and "--input-shape" in proc.stdout
    script = Path(sys.executable).parent / "blspeech"
    exe = str(script) if script.exists() else shutil.which("blspeech")
    assert exe, "console script 'blspeech' is not installed"
    proc = subprocess.run([exe, "list-models"], capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0
    assert "bl_resnet50" in proc.stdout.split() and "resnet50" in proc.stdout.split()
