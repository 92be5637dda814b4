"""Chunked inference over long recordings equals full-utterance inference."""

from __future__ import annotations

import math

import pytest
import torch

from blspeech.errors import UserError
from blspeech.frontend.features import LogMel
from blspeech.inference.chunked import (
    LogMelFrames,
    chunked_forward,
    chunked_log_probs,
    plan_chunks,
    receptive_field,
)
from blspeech.inference.model import Bundle
from blspeech.models import build_model, fuse
from blspeech.models.asr import CTCModel, HybridModel

CONV_ENCODERS = ["resnet_am_tiny", "bl_resnet_am_tiny", "quartznet_tiny"]
LENGTHS = [1, 7, 397, 1001]
# 8: shorter than the receptive field (many chunks, context from several of them);
# 100, 396: do not divide the lengths; None: the default, 2000 here (one chunk).
CHUNKS = [8, 100, 396, None]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # On a small shared machine a second OpenMP thread that loses its core stalls every
    # convolution (runs 20x slower); one thread keeps this file's runtime steady.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _randomize_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial BN statistics and affine terms: a fresh ResNet's last BN of each block has
    gamma 0, which would silence every residual branch (and most of the receptive field)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=gen) * 0.5 + 1)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.3)
    return model


def _ctc(name: str, seed: int = 0) -> CTCModel:
    torch.manual_seed(seed)
    return _randomize_bn(CTCModel(build_model(name), vocab_size=32), seed).eval()


@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    out: dict[str, torch.nn.Module] = {name: _ctc(name) for name in CONV_ENCODERS}
    out["bl_resnet_am_tiny+fused"] = fuse(out["bl_resnet_am_tiny"], channels_last=True)
    out["quartznet_tiny+fused"] = fuse(out["quartznet_tiny"])
    torch.manual_seed(1)
    out["resnet_am_tiny+hybrid"] = _randomize_bn(
        HybridModel(build_model("resnet_am_tiny"), num_pdfs=21), 1).eval()
    return out


def _full(model: torch.nn.Module, feats: torch.Tensor) -> tuple[torch.Tensor, int]:
    with torch.inference_mode():
        out, lengths = model(feats[None], torch.tensor([len(feats)], device=feats.device))
    assert out.shape[1] == int(lengths[0])
    return out[0], int(lengths[0])


@pytest.mark.parametrize("name", [*CONV_ENCODERS, "bl_resnet_am_tiny+fused",
                                  "quartznet_tiny+fused", "resnet_am_tiny+hybrid"])
def test_chunked_equals_full_utterance(models, name):
    model = models[name]
    gen = torch.Generator().manual_seed(len(name))
    for length in LENGTHS:
        feats = torch.randn(length, 40, generator=gen)
        full, frames = _full(model, feats)
        assert frames == math.ceil(length / model.time_subsampling)
        for chunk in CHUNKS:
            if chunk is not None and chunk * 100 < length:  # 125 calls: slow, no news
                continue
            out, n = chunked_forward(model, feats, chunk_frames=chunk)
            assert n == frames and out.shape == full.shape, (length, chunk)
            diff = float((out - full).abs().max())
            assert diff < 1e-4, f"{name}: T={length} chunk={chunk}: max abs diff {diff:.2e}"
    # (1, T, F) input and the encoder on its own work the same way.
    out, n = chunked_forward(model.encoder, feats[None], chunk_frames=100)
    full, frames = _full(model.encoder, feats)
    assert n == frames and float((out - full).abs().max()) < 1e-4


def test_plan_tiles_the_output_on_the_subsampling_grid():
    for s in (1, 2, 4):
        for total in (1, 3, 4, 5, 397, 1001):
            for chunk in (s, 4 * s, 100 * s):
                for context in ((0, 0), (13, 5), (67, 67)):
                    plan = plan_chunks(total, chunk, context, s)
                    assert plan[0].keep_start == 0
                    assert plan[-1].keep_end == math.ceil(total / s)
                    for a, b in zip(plan, plan[1:], strict=False):
                        assert a.keep_end == b.keep_start
                    for c in plan:
                        assert c.start % s == 0 and 0 <= c.start < c.end <= total
                        assert c.start <= max(0, s * c.keep_start - context[0])
                        assert c.end >= min(total, s * (c.keep_end - 1) + context[1] + 1)


# Float64 encoders below (the heads' log-softmax runs in float32): the far edge of the
# receptive field reaches an output frame through one chain of edge taps, and in the tiny
# QuartzNet that contribution is about 1e-9, far under float32 rounding.

@pytest.fixture(scope="module")
def double_encoders() -> dict[str, torch.nn.Module]:
    return {name: _ctc(name, seed=2).double().encoder for name in CONV_ENCODERS}


@pytest.mark.parametrize("name", CONV_ENCODERS)
def test_receptive_field_is_exact(double_encoders, name):
    """Input frame s*t - left changes output t, frame s*t - left - 1 does not (and right)."""
    enc = double_encoders[name]
    left, right = receptive_field(enc)
    s = enc.time_subsampling
    feats = torch.randn(2 * (left + right) + 64, 40, dtype=torch.float64,
                        generator=torch.Generator().manual_seed(6))
    base, _ = _full(enc, feats)
    # Several output frames: a ReLU can block the single edge path of one of them.
    outputs = range(len(base) // 2 - 4, len(base) // 2 + 4)
    offsets = (-left, -left - 1, right, right + 1)
    batch = feats.repeat(len(outputs) * len(offsets), 1, 1)
    for i, (t, k) in enumerate((t, k) for t in outputs for k in offsets):
        batch[i, s * t + k] += 5.0
    with torch.inference_mode():
        moved, _ = enc(batch, torch.full((len(batch),), len(feats)))
    change = {k: [] for k in offsets}
    for i, (t, k) in enumerate((t, k) for t in outputs for k in offsets):
        change[k].append(float((moved[i, t] - base[t]).abs().max()))
    assert max(change[-left]) > 1e-11 and max(change[right]) > 1e-11, change
    assert max(change[-left - 1]) < 1e-13 and max(change[right + 1]) < 1e-13, change


@pytest.mark.parametrize("name", CONV_ENCODERS)
def test_less_context_changes_the_output(double_encoders, name):
    enc = double_encoders[name]
    left, right = receptive_field(enc)
    s = enc.time_subsampling
    feats = torch.randn(301, 40, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    full, _ = _full(enc, feats)

    def diff(context: tuple[int, int]) -> float:
        return max(float((chunked_forward(enc, feats, chunk_frames=c, context=context)[0]
                          - full).abs().max()) for c in (40, 44, 48))

    assert diff((left, right)) < 1e-12
    assert diff((left, right - 1)) > 1e-11  # one frame of right context less
    # Chunks start on the subsampling grid, so left context shrinks s frames at a time.
    assert diff((math.ceil(left / s) * s - s, right)) > 1e-11


def test_receptive_field_follows_the_architecture():
    # Analytic values: stem 3 frames each side, then 3x3 convs at 4x subsampling (+4 each);
    # QuartzNet: each odd kernel k adds (k - 1) / 2 steps, at 2x subsampling after the stem.
    assert receptive_field(build_model("resnet_am_tiny")) == (3 + 4 * 16, 3 + 4 * 16)
    qn = 16 + 2 * (2 * (5 + 6 + 7) + 8)
    assert receptive_field(build_model("quartznet_tiny")) == (qn, qn)


def test_conformer_is_refused():
    model = CTCModel(build_model("conformer_tiny"), vocab_size=32).eval()
    with pytest.raises(UserError, match="self-attention"):
        receptive_field(model)
    with pytest.raises(UserError, match="self-attention"):
        chunked_forward(model, torch.randn(100, 40))


def test_global_pooling_is_refused():
    # Squeeze-and-excitation averages over the whole (freq, time) map.
    enc = build_model("resnet_am_tiny", block="se").eval()
    with pytest.raises(UserError, match="more than"):
        receptive_field(enc, max_frames=1024)


def test_bad_arguments(models):
    resnet, quartz = models["resnet_am_tiny"], models["quartznet_tiny"]
    feats = torch.randn(50, 40)
    for model, chunk in ((resnet, 0), (resnet, -4), (resnet, 6), (quartz, 3)):
        with pytest.raises(UserError, match="multiple of the model's time subsampling"):
            chunked_forward(model, feats, chunk_frames=chunk)
    with pytest.raises(UserError, match="one recording"):
        chunked_forward(resnet, torch.randn(2, 50, 40))
    with pytest.raises(UserError, match="no feature frames"):
        chunked_forward(resnet, torch.randn(0, 40))
    with pytest.raises(UserError, match="context"):
        chunked_forward(resnet, feats, context=(-1, 3))
    with pytest.raises(UserError, match="the model is on cpu"):
        chunked_forward(resnet, feats, device="meta")
    train = CTCModel(build_model("resnet_am_tiny"), vocab_size=32).train()
    with pytest.raises(UserError, match="eval mode"):
        chunked_forward(train, feats)


def test_log_mel_frames_stream_the_full_features(models):
    fbank = LogMel(sample_rate=8000, num_mel_bins=40)
    gen = torch.Generator().manual_seed(4)
    wave = torch.randn(8000 * 7 + 123, generator=gen) * 0.1
    full_feats = fbank(wave)[0][0]
    # Normalized, as the model sees features (raw log-mels give log-probs in the hundreds).
    mean, std = full_feats.mean(0), full_feats.std(0)
    frames = LogMelFrames(wave.numpy(), fbank)
    assert len(frames) == len(full_feats)
    assert float((frames[0:len(frames)] - full_feats).abs().max()) < 1e-4
    assert float((frames[333:400] - full_feats[333:400]).abs().max()) < 1e-4
    assert frames[5:5].shape == (0, 40)
    model = models["bl_resnet_am_tiny"]
    full, n_full = _full(model, (full_feats - mean) / std)
    out, n = chunked_log_probs(model, _Normalized(frames, mean, std), chunk_frames=200)
    assert n == n_full and float((out - full).abs().max()) < 1e-4
    with pytest.raises(UserError, match="snip_edges"):
        LogMelFrames(wave, LogMel(sample_rate=8000, num_mel_bins=40, snip_edges=False))


def test_chunked_log_probs_applies_the_bundle_cmvn(models):
    model = models["quartznet_tiny"]
    gen = torch.Generator().manual_seed(5)
    feats = torch.randn(503, 40, generator=gen) * 3 + 7
    stats = torch.zeros(2, 41, dtype=torch.float64)
    stats[0, :40], stats[1, :40] = feats.sum(0) * 2, (feats.double() ** 2).sum(0) * 2
    stats[0, 40] = 2 * len(feats)
    bundle = Bundle(model, cmvn="global", cmvn_stats=stats, norm_vars=True,
                    data_source="feats", device="cpu")
    want, lengths = bundle.log_probs(feats[None], torch.tensor([len(feats)]))
    got, n = chunked_log_probs(bundle, feats, chunk_frames=64)
    assert n == int(lengths[0]) and got.dtype == torch.float32
    assert float((got - want[0]).abs().max()) < 1e-4
    # Without the CMVN the outputs are not the same: the test above checks something.
    raw, _ = chunked_log_probs(model, feats, chunk_frames=64)
    assert float((raw - want[0]).abs().max()) > 1e-2


class _Normalized:
    def __init__(self, frames: LogMelFrames, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.frames, self.mean, self.std = frames, mean, std

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, part: slice) -> torch.Tensor:
        return (self.frames[part] - self.mean) / self.std


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_model(models, monkeypatch):
    # cuDNN's default TF32 convolutions round to ~1e-3 (0.036 apart on these log-probs, seen
    # on an H200); in full float32 the chunks must agree with the whole utterance as on the CPU.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    model = fuse(models["bl_resnet_am_tiny"]).cuda()
    feats = torch.randn(1001, 40)
    full, n_full = _full(model, feats.cuda())
    out, n = chunked_forward(model, feats, chunk_frames=100, out_device="cpu")
    assert n == n_full and out.device.type == "cpu"
    assert float((out - full.cpu()).abs().max()) < 1e-4
