"""``blspeech export --format sherpa-onnx``: sherpa-onnx's offline recognizer (run in a
subprocess, as a user would) transcribes 8 kHz telephony-style speech with the exported
directory as ``blspeech transcribe`` does with the bundle, and its front-end (read back
from sherpa-onnx itself, see :func:`_feature_probe`) gives the bundle's features and, through
the exported model, the bundle's per-frame log-probabilities; bundles sherpa-onnx cannot
run give one clear error.

The bundle is a small ResNet CTC model over a 40-piece sentencepiece BPE vocabulary trained
here for a few seconds on synthesized telephone prompts: a trained model has the confident
per-frame decisions a real one has, where a random one has near-ties that any float rounding
flips.

sherpa-onnx dithers (Gaussian noise of about one 16-bit step on every sample, measured on
sherpa-onnx 1.13.8 and 2.0.1 whatever ``FeatureExtractorConfig.dither`` says), blspeech
does not: on digital silence log-mel energies are about 4 instead of Kaldi's floor of -15.9,
and quiet mel bins move by up to ~0.5. The test audio therefore has a telephone line's noise
floor (white noise at -60 dBFS) over espeak-ng's digital silence; the feature comparison
allows for the dither.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import SENTENCES, VOICES, synthesize

from blspeech.cli import main as cli_main
from blspeech.errors import UserError
from blspeech.frontend.features import LogMel
from blspeech.inference.bundle import load_bundle, make_bundle
from blspeech.inference.export import export_bundle
from blspeech.io.checkpoint import make_checkpoint, save_checkpoint
from blspeech.models import build_model
from blspeech.models.asr import CTCModel
from blspeech.text.tokenizers import BPETokenizer

RATE = 8000
MELS = 40
NOISE = 1e-3  # -60 dBFS line noise (about 33 16-bit steps)

# sherpa-onnx's offline recognizer from the exported directory (model type and front-end
# from sherpa-onnx.json), one line of JSON per file.
DECODE = textwrap.dedent("""
    import json, sys
    import soundfile as sf
    import sherpa_onnx
    from sherpa_onnx.lib._sherpa_onnx import OfflineRecognizer

    d = sys.argv[1]
    with open(f"{d}/sherpa-onnx.json") as f:
        settings = json.load(f)
    config = sherpa_onnx.OfflineRecognizerConfig(
        feat_config=sherpa_onnx.FeatureExtractorConfig(**settings["feat_config"]),
        model_config=sherpa_onnx.OfflineModelConfig(
            wenet_ctc=sherpa_onnx.OfflineWenetCtcModelConfig(model=f"{d}/model.onnx"),
            tokens=f"{d}/tokens.txt", num_threads=1, model_type=settings["model_type"]))
    recognizer = OfflineRecognizer(config)
    for path in sys.argv[2:]:
        wave, rate = sf.read(path, dtype="float32")
        stream = recognizer.create_stream()
        stream.accept_waveform(rate, wave)
        recognizer.decode_stream(stream)
        print(json.dumps({"path": path, "text": stream.result.text,
                          "tokens": list(stream.result.tokens)}))
""")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _sherpa(model_dir, paths) -> list[dict]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", DECODE, str(model_dir), *map(str, paths)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]  # e.g. sherpa-onnx missing: make setup
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def _telephony_waves(root) -> list:
    """The prompts (two voices) at 8 kHz over a -60 dBFS noise floor, as 16-bit wavs."""
    rng = np.random.default_rng(0)
    paths = []
    for i, text in enumerate(SENTENCES):
        wave = synthesize(text, VOICES[i % 2], RATE)
        wave = np.clip(wave + rng.normal(0, NOISE, len(wave)), -1, 1).astype(np.float32)
        path = root / f"utt{i}.wav"
        sf.write(path, wave, RATE, subtype="PCM_16")
        paths.append((path, text))
    return paths


def _train_bundle(root, utts, steps: int = 80):
    """A resnet_am_tiny CTC model trained on ``utts`` (Adam, full batch), as a bundle."""
    torch.manual_seed(0)
    tok = BPETokenizer.train([t for _, t in utts], vocab_size=40)
    frontend = LogMel(sample_rate=RATE, num_mel_bins=MELS)
    waves = [torch.from_numpy(sf.read(p, dtype="float32")[0]) for p, _ in utts]
    lengths = torch.tensor([len(w) for w in waves])
    batch = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
    with torch.no_grad():
        feats, frames = frontend(batch, lengths)
    valid = torch.arange(feats.shape[1])[None] < frames[:, None]
    x = feats[valid].double()
    stats = torch.zeros(2, MELS + 1, dtype=torch.float64)
    stats[0, :MELS], stats[1, :MELS], stats[0, MELS] = x.sum(0), (x * x).sum(0), len(x)
    mean, std = x.mean(0).float(), x.std(0).float()
    normed = (feats - mean) / std * valid[..., None]
    targets = [torch.tensor(tok.encode(t)) for _, t in utts]
    target_lengths = torch.tensor([len(t) for t in targets])
    targets = torch.cat(targets)
    model = CTCModel(build_model("resnet_am_tiny", num_mel_bins=MELS), vocab_size=tok.vocab_size)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    model.train()
    for _ in range(steps):
        log_probs, out_lengths = model(normed, frames)
        loss = model.loss(log_probs, out_lengths, targets, target_lengths) / len(utts)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    ckpt = make_checkpoint(model, extra=dict(
        tokenizer=tok.to_dict(), normalizer={}, data_source="audio",
        frontend=frontend.config(),
        cmvn={"mode": "global", "stats": stats, "norm_vars": True}))
    save_checkpoint(root / "tiny.pt", ckpt)
    make_bundle(root / "tiny.pt", root / "tiny.bundle")
    return root / "tiny.bundle", float(loss.detach())


def _feature_probe(root, feat_config: dict) -> str:
    """A sherpa-onnx wenet-CTC "model" whose greedy transcript spells its input features:
    each value, as round((x + 64) * 2**16), in 3 byte tokens, each followed by a blank.
    sherpa-onnx has no API for its features; this reads them back exactly (to 2**-16)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def const(name, value, dtype=np.int64):
        return helper.make_node("Constant", [], [name],
                                value=numpy_helper.from_array(np.array(value, dtype), name))

    nodes = [
        const("offset", 64.0, np.float32), const("unit", 65536.0, np.float32),
        const("k65536", 65536), const("k256", 256), const("one", 1), const("zero", 0),
        const("axis3", [3]), const("axis0", [0]), const("col", [1, -1, 1]),
        const("row", [1, -1]), const("depth", 257), const("values", [-100.0, 0.0], np.float32),
        helper.make_node("Add", ["feats", "offset"], ["shifted"]),
        helper.make_node("Mul", ["shifted", "unit"], ["scaled"]),
        helper.make_node("Round", ["scaled"], ["rounded"]),
        helper.make_node("Cast", ["rounded"], ["q"], to=TensorProto.INT64),
        helper.make_node("Div", ["q", "k65536"], ["b0"]),
        helper.make_node("Div", ["q", "k256"], ["q8"]),
        helper.make_node("Mod", ["q8", "k256"], ["b1"]),
        helper.make_node("Mod", ["q", "k256"], ["b2"]),
        *[helper.make_node("Unsqueeze", [f"b{i}", "axis3"], [f"u{i}"]) for i in range(3)],
        helper.make_node("Concat", ["u0", "u1", "u2"], ["bytes"], axis=3),
        helper.make_node("Reshape", ["bytes", "col"], ["flat"]),
        helper.make_node("Add", ["flat", "one"], ["ids"]),
        helper.make_node("Mul", ["ids", "zero"], ["blanks"]),
        helper.make_node("Concat", ["ids", "blanks"], ["pairs"], axis=2),
        helper.make_node("Reshape", ["pairs", "row"], ["seq"]),
        helper.make_node("OneHot", ["seq", "depth", "values"], ["log_probs"], axis=-1),
        helper.make_node("Shape", ["seq"], ["seq_shape"]),
        helper.make_node("Gather", ["seq_shape", "one"], ["seq_len"], axis=0),
        helper.make_node("Unsqueeze", ["seq_len", "axis0"], ["out_lengths"]),
    ]
    graph = helper.make_graph(
        nodes, "feature_probe",
        [helper.make_tensor_value_info("feats", TensorProto.FLOAT, ["N", "T", "F"]),
         helper.make_tensor_value_info("lengths", TensorProto.INT64, ["N"])],
        [helper.make_tensor_value_info("log_probs", TensorProto.FLOAT, ["N", "L", 257]),
         helper.make_tensor_value_info("out_lengths", TensorProto.INT64, ["N"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in {"vocab_size": "257", "subsampling_factor": "1"}.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    probe = root / "probe"
    probe.mkdir()
    onnx.save(model, probe / "model.onnx")
    (probe / "tokens.txt").write_text("<blank> 0\n" + "".join(f"b{i} {i}\n" for i in range(1, 257)))
    (probe / "sherpa-onnx.json").write_text(json.dumps(
        {"model_type": "wenet_ctc", "feat_config": feat_config}))
    return probe


def _probe_features(result: dict, dim: int) -> np.ndarray:
    ids = np.array([int(t[1:]) - 1 for t in result["tokens"]], dtype=np.int64).reshape(-1, dim, 3)
    return ((ids[..., 0] * 65536 + ids[..., 1] * 256 + ids[..., 2]) / 65536.0 - 64.0
            ).astype(np.float32)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("sherpa")
    utts = _telephony_waves(root)
    bundle, loss = _train_bundle(root, utts)
    return root, utts, bundle, loss


def test_sherpa_onnx_transcribes_as_blspeech(trained, capsys):
    root, utts, bundle, loss = trained
    assert loss < 1.0  # the model learned the prompts: confident frames
    out = root / "sherpa"
    assert cli_main(["export", str(bundle), "--format", "sherpa-onnx", "--output", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["format"] == "sherpa-onnx" and summary["max_abs_diff"] < 1e-3
    assert sorted(os.listdir(out)) == ["model.onnx", "sherpa-onnx.json", "tokens.txt"]
    # held-out voices too: the model is less sure there
    extra = []
    for i, text in enumerate(SENTENCES[:4]):
        wave = synthesize(text, VOICES[2 + i % 2], RATE)
        wave = np.clip(wave + np.random.default_rng(i).normal(0, NOISE, len(wave)), -1, 1)
        path = root / f"held{i}.wav"
        sf.write(path, wave.astype(np.float32), RATE, subtype="PCM_16")
        extra.append((path, text))
    paths = [p for p, _ in utts + extra]
    got = _sherpa(out, paths)
    assert [r["path"] for r in got] == [str(p) for p in paths]
    assert cli_main(["transcribe", str(bundle), *map(str, paths)]) == 0
    lines = capsys.readouterr().out.splitlines()
    want = {line.split(" ", 1)[0]: line.split(" ", 1)[1].split() if " " in line else []
            for line in lines}
    same = [r["text"].split() == want[r["path"]] for r in got]
    print("sherpa == blspeech:", sum(same), "/", len(same))
    for r in got:
        print(r["path"], r["text"], "|", " ".join(want[r["path"]]))
    assert sum(same) >= 0.98 * len(same)
    # the training prompts come out right (the comparison is not between two empty outputs)
    assert sum(r["text"].split() == t.split() for r, (_, t) in zip(got, utts, strict=False)) >= 6


def test_sherpa_front_end_gives_the_bundles_features_and_log_probs(trained):
    """sherpa-onnx's own features (read back with :func:`_feature_probe`) are the bundle's
    up to its dither, and the exported model on them gives the bundle's log-probabilities;
    sherpa-onnx's default front-end (``from_wenet_ctc``: high_freq -400, snip_edges off)
    would not: the settings in sherpa-onnx.json matter."""
    import onnxruntime

    root, utts, bundle_path, _ = trained
    out = root / "sherpa-probe-export"
    export_bundle(bundle_path, out, "sherpa-onnx")
    settings = json.loads((out / "sherpa-onnx.json").read_text())
    assert settings["model_type"] == "wenet_ctc"
    assert settings["feat_config"] == {"sampling_rate": RATE, "feature_dim": MELS,
                                       "low_freq": 20.0, "high_freq": 0.0, "dither": 0.0,
                                       "normalize_samples": False, "snip_edges": True}
    defaults = dict(settings["feat_config"], high_freq=-400.0, snip_edges=False)
    paths = [p for p, _ in utts[:4]]
    probe = _feature_probe(root, settings["feat_config"])
    (root / "defaults").mkdir()
    probe_defaults = _feature_probe(root / "defaults", defaults)
    bundle = load_bundle(bundle_path)
    sess = onnxruntime.InferenceSession(str(out / "model.onnx"),
                                        providers=["CPUExecutionProvider"])
    for path, got, got_default in zip(paths, _sherpa(probe, paths), _sherpa(probe_defaults, paths),
                                      strict=True):
        wave = torch.from_numpy(sf.read(path, dtype="float32")[0])
        feats, frames = bundle.features(wave)
        ours = feats[0].numpy()
        sherpa_feats = _probe_features(got, MELS)
        assert sherpa_feats.shape == ours.shape
        diff = np.abs(sherpa_feats - ours)
        # dither: a few thousandths typically, up to ~0.7 in quiet mel bins
        assert np.median(diff) < 0.02 and diff.max() < 1.5, (np.median(diff), diff.max())
        default_feats = _probe_features(got_default, MELS)
        assert default_feats.shape != ours.shape  # snip_edges off: other frame count
        n = min(len(default_feats), len(ours))
        assert np.median(np.abs(default_feats[:n] - ours[:n])) > 0.1  # misaligned frames

        want, want_lengths = bundle.log_probs(feats, frames)
        lp, lp_lengths = sess.run(None, {"feats": sherpa_feats[None],
                                         "lengths": np.array([len(sherpa_feats)], np.int64)})
        assert lp.shape == tuple(want.shape) and int(lp_lengths[0]) == int(want_lengths[0])
        want = want[0].numpy()
        agree = (lp[0].argmax(-1) == want.argmax(-1)).mean()
        assert agree >= 0.98, agree
        # probabilities of the bundle's best token per frame, sherpa-side vs bundle
        best = want.argmax(-1)
        p_gap = np.abs(np.exp(lp[0][np.arange(len(best)), best]) - np.exp(want.max(-1)))
        assert p_gap.max() < 0.1, p_gap.max()
        print(f"{path.name}: features median |diff| {np.median(diff):.4f} max {diff.max():.3f}; "
              f"argmax agreement {agree:.3f}; best-token probability gap {p_gap.max():.4f}")


def _random_bundle(root, name: str, head: str = "ctc", **frontend) -> str:
    """An untrained resnet_am_tiny bundle (only its head and front-end matter here)."""
    from blspeech.models.asr import HybridModel
    from blspeech.text.tokenizers import CharTokenizer

    torch.manual_seed(0)
    tok = CharTokenizer.train(["call me at five"])
    if head == "ctc":
        model = CTCModel(build_model("resnet_am_tiny", num_mel_bins=MELS), tok.vocab_size)
    else:
        model, tok = HybridModel(build_model("resnet_am_tiny", num_mel_bins=MELS), 23), None
    stats = torch.zeros(2, MELS + 1, dtype=torch.float64)
    stats[0, :MELS], stats[1, :MELS], stats[0, MELS] = 900.0, 8500.0, 100.0
    ckpt = make_checkpoint(model.eval(), extra=dict(
        tokenizer=tok and tok.to_dict(), normalizer={}, data_source="audio",
        frontend=LogMel(sample_rate=RATE, num_mel_bins=MELS, **frontend).config(),
        cmvn={"mode": "global", "stats": stats, "norm_vars": True}))
    save_checkpoint(root / f"{name}.pt", ckpt)
    make_bundle(root / f"{name}.pt", root / f"{name}.bundle")
    return str(root / f"{name}.bundle")


def _cli_error(capsys, *args: str) -> str:
    assert cli_main(["export", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("blspeech export: error: ") and "\n" not in err, err
    return err


def test_bundles_sherpa_onnx_cannot_run_give_one_clear_error(tmp_path, capsys):
    out = tmp_path / "out"
    hybrid = _random_bundle(tmp_path, "hybrid", head="hybrid")
    err = _cli_error(capsys, hybrid, "--format", "sherpa-onnx", "-o", str(out))
    assert "hybrid head" in err and "Kaldi pdf posteriors" in err and "--format onnx" in err
    hamming = _random_bundle(tmp_path, "hamming", window="hamming")
    err = _cli_error(capsys, hamming, "--format", "sherpa-onnx", "-o", str(out))
    assert "sherpa-onnx cannot compute this bundle's features" in err
    assert "window 'hamming' (sherpa-onnx: 'povey')" in err
    shift = _random_bundle(tmp_path, "shift", frame_shift_ms=12.5, preemphasis=0.9)
    err = _cli_error(capsys, shift, "--format", "sherpa-onnx", "-o", str(out))
    assert "frame_shift_ms 12.5" in err and "preemphasis 0.9" in err
    ok = _random_bundle(tmp_path, "ok")
    (tmp_path / "afile").write_text("")
    err = _cli_error(capsys, ok, "--format", "sherpa-onnx", "-o", str(tmp_path / "afile"))
    assert "is a file; sherpa-onnx export writes a directory" in err
    assert not out.exists()
    with pytest.raises(UserError, match="a name sherpa-onnx reserves"):
        from blspeech.inference.export import _sherpa_tokens

        bundle = load_bundle(ok)
        bundle.tokenizer._tokens[3] = "<eps>"
        _sherpa_tokens(bundle)
