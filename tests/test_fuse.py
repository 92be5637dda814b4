"""BatchNorm folding (``blspeech.models.fuse``) and the copy-free Big-Little merge."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from blspeech.models import BigLittleModule, build_model, fuse
from blspeech.models.big_little import add_upsampled_


@torch.no_grad()
def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affine parameters (init zeroes the last BN's gamma)."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.2)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.copy_(torch.randn(n, generator=gen) * 0.2)
    return model.eval()


def num_bn(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def assert_close_rel(out: torch.Tensor, ref: torch.Tensor, rtol: float = 1e-4) -> None:
    diff = (out - ref).abs().max().item()
    scale = ref.abs().max().item()
    assert scale > 0
    assert diff <= rtol * scale, f"max abs diff {diff:.3e} vs output scale {scale:.3e}"


def small_biglittle() -> nn.Module:
    torch.manual_seed(0)
    return BigLittleModule(16, 32, blocks=3, big_stride=(2, 1), block="basic")


CASES = {
    "bl_resnet50": (lambda: build_model("bl_resnet50", num_classes=10), (1, 3, 64, 75)),
    "bl_seresnext50_32x4d": (lambda: build_model("bl_seresnext50_32x4d", num_classes=10),
                             (1, 3, 64, 75)),
    "resnet50": (lambda: build_model("resnet50", num_classes=10), (1, 3, 64, 75)),
    "biglittle_odd": (small_biglittle, (1, 16, 41, 37)),
    "biglittle_even": (small_biglittle, (1, 16, 40, 37)),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    torch.manual_seed(0)
    factory, shape = CASES[request.param]
    model = randomize(factory())
    x = torch.randn(*shape)
    with torch.no_grad():
        ref = model(x)
    return request.param, model, x, ref


def test_fused_matches_unfused_and_has_no_bn(case):
    name, model, x, ref = case
    assert num_bn(model) > 0
    fused = fuse(model)
    assert num_bn(fused) == 0, name
    assert not fused.training
    with torch.no_grad():
        assert_close_rel(fused(x), ref)


def test_channels_last_matches(case):
    _, model, x, ref = case
    fused = fuse(model, channels_last=True)
    conv = next(m for m in fused.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert_close_rel(fused(x), ref)
        assert_close_rel(fused(x.contiguous(memory_format=torch.channels_last)), ref)


def test_original_is_not_modified():
    model = randomize(build_model("bl_resnet50", num_classes=10)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    types = [type(m) for m in model.modules()]
    fused = fuse(model, channels_last=True)
    assert fused is not model and model.training
    assert [type(m) for m in model.modules()] == types
    after = model.state_dict()
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert torch.equal(after[k], v), k
    assert all(p.requires_grad for p in model.parameters())
    assert model.conv1.bias is None
    assert model.conv1.weight.is_contiguous()


def test_torchvision_resnet50_folds():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = randomize(torchvision.models.resnet50(num_classes=10))
    x = torch.randn(1, 3, 64, 75)
    fused = fuse(model, channels_last=True)
    assert num_bn(fused) == 0
    with torch.no_grad():
        assert_close_rel(fused(x), model(x))


@pytest.mark.parametrize("big,little", [((5, 7), (10, 14)), ((5, 7), (10, 7)), ((5, 7), (5, 14)),
                                         ((5, 7), (5, 7)), ((21, 37), (41, 37)),
                                         ((4, 4), (9, 9)), ((3, 5), (9, 15))])
@pytest.mark.parametrize("channels_last", [False, True])
def test_add_upsampled_matches_interpolate_exactly(big, little, channels_last):
    torch.manual_seed(0)
    b, l = torch.randn(2, 3, *big), torch.randn(2, 3, *little)
    if channels_last:
        b, l = (t.contiguous(memory_format=torch.channels_last) for t in (b, l))
    expected = F.interpolate(b, size=little, mode="nearest") + l
    out = add_upsampled_(l.clone(), b)
    assert torch.equal(out, expected)


def test_bn_without_running_stats_is_left_alone():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False))
    fused = fuse(model)
    assert isinstance(fused[1], nn.BatchNorm2d)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("name", ["resnet_am_tiny", "bl_resnet_am_tiny", "quartznet_tiny",
                                  "conformer_tiny"])
def test_speech_encoders_fold_and_stay_padding_invariant(name, channels_last):
    torch.manual_seed(0)
    model = randomize(build_model(name))
    before = num_bn(model)
    fused = fuse(model, channels_last=channels_last)
    # Every BN of the conv encoders folds; the Conformer's BN follows a depthwise conv.
    assert num_bn(fused) == 0 and before > 0
    feats, lengths = torch.randn(2, 120, 40), torch.tensor([120, 77])
    with torch.no_grad():
        ref, ref_len = model(feats, lengths)
        out, out_len = fused(feats, lengths)
        alone, _ = fused(feats[1:, :77], lengths[1:])
    assert torch.equal(out_len, ref_len)
    assert_close_rel(out, ref)
    n = int(out_len[1])
    assert_close_rel(out[1, :n], alone[0, :n])
