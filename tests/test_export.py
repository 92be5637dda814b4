"""``blspeech export``: TorchScript (waveform in, runs where blspeech is not importable) and
ONNX (features in, onnxruntime) files equal the eager bundle on inputs of other lengths and
batch sizes than the traced ones, for every encoder; the static padding masks behind them
change no eager output; bad input gives one-line errors and leaves no file behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import blspeech.inference.export as export_mod
from blspeech.cli import main as cli_main
from blspeech.errors import UserError
from blspeech.frontend.features import LogMel
from blspeech.inference.bundle import load_bundle, make_bundle
from blspeech.inference.export import export_bundle
from blspeech.io.checkpoint import make_checkpoint, save_checkpoint
from blspeech.models import build_model
from blspeech.models.asr import CTCModel, HybridModel
from blspeech.models.speech import make_exportable
from blspeech.text.tokenizers import CharTokenizer

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")

ENCODERS = ["resnet_am_tiny", "bl_resnet_am_tiny", "quartznet_tiny", "conformer_tiny"]
RATE = 8000
TOL = 1e-4


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Small models: one thread is as fast, and it does not spin when the CPUs are shared.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _randomize_bn(model: torch.nn.Module) -> None:
    # Trained-like BN statistics: padded frames become non-zero after each BN (so the masks
    # matter) and folding BN into the convolutions changes the weights.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_(1.0, 0.2)
            m.bias.data.normal_(0, 0.5)


def write_bundle(root, name: str, cmvn: str = "global", head: str = "ctc"):
    torch.manual_seed(0)
    tok = CharTokenizer.train(["call me at five"])
    if head == "ctc":
        model = CTCModel(build_model(name, num_mel_bins=40), vocab_size=tok.vocab_size)
    else:  # pdfs of a Kaldi tree: no tokenizer
        model, tok = HybridModel(build_model(name, num_mel_bins=40), num_pdfs=23), None
    model.eval()
    _randomize_bn(model)
    stats = torch.zeros(2, 41, dtype=torch.float64)  # mean 9, std 2 (log-mel-like)
    stats[0, :40], stats[1, :40], stats[0, 40] = 900.0, 8500.0, 100.0
    ckpt = make_checkpoint(model, extra=dict(
        tokenizer=tok and tok.to_dict(), normalizer={}, data_source="audio",
        frontend=LogMel(sample_rate=RATE, num_mel_bins=40).config(),
        cmvn={"mode": cmvn, "stats": stats if cmvn == "global" else None, "norm_vars": True}))
    save_checkpoint(root / f"{name}.pt", ckpt)
    make_bundle(root / f"{name}.pt", root / f"{name}-{cmvn}.bundle")
    return root / f"{name}-{cmvn}.bundle"


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    return {name: write_bundle(root, name) for name in ENCODERS}


def _waves(seed: int, lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    wave = torch.randn(len(lengths), max(lengths), generator=g) * 0.1
    return wave, torch.tensor(lengths)


# Other batch sizes and lengths than export's traced example (2 rows of 1.0 and 0.6 s).
WAVE_CASES = [[3517], [12345, 9000, 401], [2000, 1999]]
FEAT_CASES = [[3], [57], [203, 150, 11], [64, 9]]


def _feats(seed: int, lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(len(lengths), max(lengths), 40, generator=g) * 2 + 9, \
        torch.tensor(lengths)


ISOLATED = textwrap.dedent("""
    import sys
    sys.modules["blspeech"] = None  # blocks 'import blspeech' (python -I: no cwd, no PYTHONPATH)
    import warnings
    warnings.simplefilter("ignore")
    import torch
    try:
        import blspeech
        raise SystemExit("blspeech is importable")
    except ImportError:
        pass
    cases = torch.load(sys.argv[1])
    results = {}
    with torch.no_grad():
        for name, case in cases.items():
            m = torch.jit.load(case["path"])
            results[name] = [list(m(wave, lengths)) for wave, lengths in case["inputs"]]
    torch.save(results, sys.argv[2])
""")


def test_torchscript_runs_without_blspeech_and_matches_eager(bundles, tmp_path):
    cases, expected = {}, {}
    for name, path in bundles.items():
        out = tmp_path / f"{name}.pt"
        summary = export_bundle(path, out, "torchscript")
        assert summary["format"] == "torchscript" and summary["bytes"] == out.stat().st_size
        assert summary["max_abs_diff"] < TOL
        bundle = load_bundle(path)
        inputs = [_waves(i, lengths) for i, lengths in enumerate(WAVE_CASES)]
        cases[name] = {"path": str(out), "inputs": inputs}
        expected[name] = [bundle.log_probs(*bundle.features(w, n)) for w, n in inputs]
    torch.save(cases, tmp_path / "cases.pt")
    r = subprocess.run([sys.executable, "-I", "-c", ISOLATED, str(tmp_path / "cases.pt"),
                        str(tmp_path / "results.pt")], cwd=tmp_path, capture_output=True,
                       text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    results = torch.load(tmp_path / "results.pt")
    for name in bundles:
        for (got, got_lengths), (want, want_lengths) in zip(results[name], expected[name],
                                                             strict=True):
            assert got.dtype == torch.float32 and got_lengths.dtype == torch.int64
            assert got.shape == want.shape, name
            assert torch.equal(got_lengths, want_lengths), name
            assert (got - want).abs().max() < TOL, name


@pytest.mark.parametrize("name", ENCODERS)
def test_onnx_runs_in_onnxruntime_and_matches_eager(bundles, tmp_path, name, capsys):
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / f"{name}.onnx"
    if name == "bl_resnet_am_tiny":  # through the command line once
        assert cli_main(["export", str(bundles[name]), "--format", "onnx",
                         "--output", str(out)]) == 0
        summary = json.loads(capsys.readouterr().out)
    else:
        summary = export_bundle(bundles[name], out)  # format from the suffix
    assert summary["format"] == "onnx" and summary["max_abs_diff"] < TOL
    assert sorted(os.listdir(tmp_path)) == [out.name]  # no temp files left
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["feats", "lengths"]
    assert [o.name for o in sess.get_outputs()] == ["log_probs", "out_lengths"]
    assert sess.get_inputs()[0].shape == ["batch", "time", 40]
    bundle = load_bundle(bundles[name])
    for i, lengths in enumerate(FEAT_CASES):
        feats, lens = _feats(i, lengths)
        want, want_lengths = bundle.log_probs(feats, lens)
        got, got_lengths = sess.run(None, {"feats": feats.numpy(), "lengths": lens.numpy()})
        assert got.dtype == np.float32 and got_lengths.dtype == np.int64
        assert got.shape == tuple(want.shape), (name, lengths)
        assert got_lengths.tolist() == want_lengths.tolist()
        assert np.abs(got - want.numpy()).max() < TOL, (name, lengths)


@pytest.mark.parametrize("cmvn", ["utterance", "none"])
def test_hybrid_head_and_other_cmvn_modes(tmp_path, cmvn):
    path = write_bundle(tmp_path, "quartznet_tiny", cmvn=cmvn, head="hybrid")
    summary = export_bundle(path, tmp_path / "q.pt", "torchscript")
    assert summary["head"] == "hybrid" and summary["outputs_per_frame"] == 23
    bundle, m = load_bundle(path), torch.jit.load(str(tmp_path / "q.pt"))
    wave, lengths = _waves(5, [5000, 3100])
    want, want_lengths = bundle.log_probs(*bundle.features(wave, lengths))
    with torch.no_grad():
        got, got_lengths = m(wave, lengths)
    assert got.shape == want.shape == (2, 31, 23)  # 61 frames, time subsampling 2
    assert torch.equal(got_lengths, want_lengths) and (got - want).abs().max() < TOL


@pytest.mark.parametrize("name", ENCODERS)
def test_static_padding_masks_change_no_eager_output(name):
    import copy

    torch.manual_seed(0)
    enc = build_model(name).eval()
    _randomize_bn(enc)
    static = make_exportable(copy.deepcopy(enc), 40)
    feats, lengths = torch.randn(3, 75, 40), torch.tensor([75, 40, 13])
    with torch.no_grad():
        want, want_lengths = enc(feats, lengths)
        got, got_lengths = static(feats, lengths)
        assert torch.equal(got, want) and torch.equal(got_lengths, want_lengths)
        # Padding beyond the longest row: the Conformer keeps those (zero) frames.
        got, _ = static(torch.cat([feats, torch.randn(3, 20, 40)], 1), lengths)
    torch.testing.assert_close(got[:, :want.shape[1]], want, atol=1e-5, rtol=1e-5)
    assert not got[:, want.shape[1]:].any()


def _cli_error(capsys, *args: str) -> str:
    assert cli_main(["export", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("blspeech export: error: ") and "\n" not in err, err
    return err


def test_bad_input_is_one_line_error_and_writes_nothing(bundles, tmp_path, capsys):
    bundle = str(bundles["quartznet_tiny"])
    out = tmp_path / "out" / "m.pt"
    assert "not found" in _cli_error(capsys, str(tmp_path / "nope.bundle"), "-o", str(out))
    (tmp_path / "junk.bundle").write_text("not a bundle\n")
    assert "not a readable blspeech bundle" in _cli_error(
        capsys, str(tmp_path / "junk.bundle"), "-o", str(out))
    assert "unknown format 'tflite'" in _cli_error(capsys, bundle, "--format", "tflite",
                                                   "-o", str(out))
    assert "cannot tell the format" in _cli_error(capsys, bundle, "-o", str(tmp_path / "m.x"))
    (tmp_path / "afile").write_text("")
    assert "cannot write" in _cli_error(capsys, bundle, "--format", "torchscript",
                                        "-o", str(tmp_path / "afile" / "m.pt"))
    assert "is a directory" in _cli_error(capsys, bundle, "--format", "onnx",
                                          "-o", str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["afile", "junk.bundle"]


def test_missing_packages_unsupported_encoders_failed_checks(bundles, tmp_path, monkeypatch):
    bundle = bundles["quartznet_tiny"]
    (tmp_path / "m.pt").write_bytes(b"old")
    monkeypatch.setattr(export_mod, "CHECK_TOLERANCE", -1.0)  # no export can pass the check
    with pytest.raises(UserError, match="differs from the bundle by"):
        export_bundle(bundle, tmp_path / "m.pt")
    assert (tmp_path / "m.pt").read_bytes() == b"old"  # kept: nothing half-written
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(UserError, match=r"pip install 'blspeech\[export\]'"):
        export_bundle(bundle, tmp_path / "m.onnx")
    monkeypatch.setattr(export_mod, "SUPPORTED_ENCODERS", ("ResNetAM",))
    with pytest.raises(UserError, match="export supports the ResNetAM encoders, not QuartzNet"):
        export_bundle(bundle, tmp_path / "m.pt")
    assert os.listdir(tmp_path) == ["m.pt"]


def test_help_explains_inputs_outputs_and_usage(capsys):
    with pytest.raises(SystemExit) as e:
        cli_main(["export", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for needle in ("wave_lengths", "int64", "(B, T, F)", "log_probs", "out_lengths",
                   "torch.jit.load", "onnxruntime.InferenceSession", "--format onnx"):
        assert needle in text, needle
