"""Big-Little core, registry and the official-parity vision backbones."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from blspeech.errors import UserError
from blspeech.models import (
    BigLittleModule,
    build_model,
    build_model_from_config,
    list_models,
    make_stage,
    model_defaults,
)
from blspeech.models.profile import count
from blspeech.models.vision import load_official_checkpoint

REFERENCE = json.loads(
    (Path(__file__).parent / "data" / "bl_imagenet_state_dict_shapes.json").read_text()
)

# Official figures (DESIGN.md / official README): multiply-accumulates at 224x224, params.
OFFICIAL = {
    "bl_resnet50": (2.856e9, 26.69e6),
    "bl_resnet101": (3.893e9, 41.85e6),
    "bl_resnext50_32x4d": (3.027e9, 26.19e6),
    "bl_resnext101_32x4d": (4.079e9, 41.51e6),
    "bl_resnext101_64x4d": (7.142e9, 77.36e6),
    "bl_seresnext50_32x4d": (3.030e9, 28.77e6),
    "bl_seresnext101_32x4d": (4.083e9, 45.88e6),
}


def _randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial weights and BN statistics, so no branch is silently zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.dtype != torch.float32:
                continue
            if name.endswith("running_var") or (t.dim() == 1 and name.endswith("weight")):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.dim() == 1:
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            else:
                t.copy_(torch.randn(t.shape, generator=g) / math.sqrt(t[0].numel()))
    return model.eval()


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_state_dict_matches_official_keys_and_shapes(name):
    with torch.device("meta"):
        model = build_model(name)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == REFERENCE[name]


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_macs_and_params_within_half_percent_of_official(name):
    with torch.device("meta"):
        model = build_model(name)
        stats = count(model, torch.empty(1, 3, 224, 224), repeats=0)
    macs, params = OFFICIAL[name]
    assert abs(stats["macs"] / macs - 1) < 0.005, stats["macs"]
    assert abs(stats["params"] / params - 1) < 0.005, stats["params"]
    parts = stats["breakdown"]
    assert sum(p["macs"] for p in parts.values()) == stats["macs"]
    assert sum(p["params"] for p in parts.values()) == stats["params"]
    assert all(parts[p]["macs"] > 0 for p in ("big", "little", "merge+fusion", "other"))


def test_bl_resnet152_depth_counts():
    with torch.device("meta"):
        model = build_model("bl_resnet152")
    # Big gets blocks - 1, Little max(1, blocks // beta - 1), fusion 1.
    assert [len(getattr(model, f"layer{i}").big) for i in (1, 2, 3)] == [4, 11, 29]
    assert [len(getattr(model, f"layer{i}").little) for i in (1, 2, 3)] == [1, 2, 6]
    assert len(model.layer4) == 3


def test_bl_model_is_cheaper_than_its_baseline():
    with torch.device("meta"):
        x = torch.empty(1, 3, 224, 224)
        bl = count(build_model("bl_resnet50"), x, repeats=0)["macs"]
        base = count(build_model("resnet50"), x, repeats=0)["macs"]
    assert 0.65 < bl / base < 0.75  # 2.856 / 4.089 = 0.698


# --- an independent, functional reading of the official structure -------------------------
# It rebuilds the forward pass from state_dict keys alone (DESIGN.md section 3), so the
# nn.Module implementation is checked against a second implementation, not against itself.


def _bn(sd, p, x):
    return F.batch_norm(x, sd[p + ".running_mean"], sd[p + ".running_var"],
                        sd[p + ".weight"], sd[p + ".bias"], False, 0.0, 1e-5)


def _conv(sd, p, x, stride=1):
    w = sd[p + ".weight"]
    groups = x.shape[1] // w.shape[1]
    return F.conv2d(x, w, sd.get(p + ".bias"), stride, w.shape[-1] // 2, 1, groups)


def _ref_block(sd, p, x, stride, last_relu):
    out = F.relu(_bn(sd, p + ".bn1", _conv(sd, p + ".conv1", x)))
    out = F.relu(_bn(sd, p + ".bn2", _conv(sd, p + ".conv2", out, stride)))
    out = _bn(sd, p + ".bn3", _conv(sd, p + ".conv3", out))
    if p + ".se_layer.fc1.weight" in sd:
        w = out.mean((2, 3), keepdim=True)
        w = _conv(sd, p + ".se_layer.fc2", F.relu(_conv(sd, p + ".se_layer.fc1", w)))
        out = out * torch.sigmoid(w)
    short = F.avg_pool2d(x, 3, 2, 1) if stride == 2 else x
    idx = 1 if stride == 2 else 0
    if f"{p}.downsample.{idx}.weight" in sd:
        short = _bn(sd, f"{p}.downsample.{idx + 1}", _conv(sd, f"{p}.downsample.{idx}", short))
    out = out + short
    return F.relu(out) if last_relu else out


def _ref_stage(sd, p, x, stride, last_relu=True):
    n = len({k.split(".")[len(p.split("."))] for k in sd if k.startswith(p + ".")})
    for i in range(n):
        x = _ref_block(sd, f"{p}.{i}", x, stride if i == 0 else 1, last_relu or i < n - 1)
    return x


def reference_forward(sd, x):
    x = F.relu(_bn(sd, "bn1", _conv(sd, "conv1", x, 2)))
    big = _bn(sd, "bn_b0", _conv(sd, "b_conv0", x, 2))
    lit = F.relu(_bn(sd, "bn_l0", _conv(sd, "l_conv0", x)))
    lit = F.relu(_bn(sd, "bn_l1", _conv(sd, "l_conv1", lit, 2)))
    lit = _bn(sd, "bn_l2", _conv(sd, "l_conv2", lit))
    x = F.relu(_bn(sd, "bn_bl_init", _conv(sd, "bl_init", F.relu(big + lit))))
    for i, stride in ((1, 2), (2, 2), (3, 1)):
        p = f"layer{i}"
        big = _ref_stage(sd, p + ".big", x, 2, last_relu=False)
        lit = _ref_stage(sd, p + ".little", x, 1)
        lit = _bn(sd, p + ".little_e.1", _conv(sd, p + ".little_e.0", lit))
        big = F.interpolate(big, size=lit.shape[2:], mode="nearest")
        x = _ref_stage(sd, p + ".fusion", F.relu(big + lit), stride)
    x = _ref_stage(sd, "layer4", x, 2)
    return F.linear(x.mean((2, 3)), sd["fc.weight"], sd["fc.bias"])


@pytest.mark.parametrize(
    "name", ["bl_resnet50", "bl_resnext50_32x4d", "bl_seresnext50_32x4d"]
)
def test_official_checkpoint_loads_and_matches_reference_forward(name, tmp_path):
    # A checkpoint in the official training script's format: wrapped, DataParallel keys.
    g = torch.Generator().manual_seed(1)
    official = {}
    for key, shape in REFERENCE[name].items():
        if key.endswith("num_batches_tracked"):
            official[key] = torch.tensor(0)
        elif key.endswith("running_var") or (len(shape) == 1 and key.endswith("weight")):
            official[key] = torch.rand(shape, generator=g) + 0.5
        elif len(shape) == 1:
            official[key] = torch.randn(shape, generator=g) * 0.1
        else:
            official[key] = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
    path = tmp_path / "model_best.pth.tar"
    torch.save({"epoch": 100, "state_dict": {"module." + k: v for k, v in official.items()}},
               path)
    model = load_official_checkpoint(build_model(name), path).eval()
    for key, value in official.items():
        assert torch.equal(model.state_dict()[key], value), key
    # Odd, non-square input: exercises the nearest merge on odd sizes.
    x = torch.randn(2, 3, 97, 131, generator=g)
    with torch.no_grad():
        ours = model(x)
        ref = reference_forward(official, x)
    assert ours.shape == (2, 1000)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


class _Evil:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_load_official_checkpoint_reports_bad_files(tmp_path):
    model = build_model("bl_resnet50", num_classes=10)
    with pytest.raises(ValueError, match="fc.weight"):  # 1000-class weights into 10 classes
        sd = {k: torch.zeros(v) for k, v in REFERENCE["bl_resnet50"].items()}
        load_official_checkpoint(model, sd)
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="broken.pth"):
        load_official_checkpoint(model, broken)
    # A file whose unpickling would run code: refused, and without PyTorch's advice to
    # load it with weights_only=False.
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": _Evil()}, evil)
    with pytest.raises(ValueError, match="evil.pth") as info:
        load_official_checkpoint(model, evil)
    assert "weights_only" not in str(info.value)
    with pytest.raises(UserError, match="missing.pth"):
        load_official_checkpoint(model, tmp_path / "missing.pth")
    partial = {k: v for k, v in build_model("bl_resnet50").state_dict().items()
               if not k.startswith("layer4")}
    with pytest.raises(ValueError, match="missing keys: layer4"):
        load_official_checkpoint(build_model("bl_resnet50"), partial)


def test_torchvision_baselines_load_and_match():
    tv = pytest.importorskip("torchvision")
    for name in ("resnet50", "resnext50_32x4d"):
        ref = _randomize(getattr(tv.models, name)())
        ours = build_model(name)
        ours.load_state_dict(ref.state_dict(), strict=True)
        ours.eval()
        x = torch.randn(1, 3, 67, 45)
        with torch.no_grad():
            torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("name", "shape", "overrides"),
    [
        ("bl_resnet50", (2, 3, 64, 301), {"num_classes": 7}),
        ("bl_resnext50_32x4d", (1, 3, 33, 47), {"num_classes": 5}),
        ("bl_resnet50", (2, 1, 40, 157), {"num_classes": 3, "in_channels": 1,
                                          "merge": "bilinear"}),
    ],
)
def test_forward_backward_odd_sizes(name, shape, overrides):
    model = build_model(name, **overrides).train()
    x = torch.randn(*shape, requires_grad=True)
    out = model(x)
    assert out.shape == (shape[0], overrides["num_classes"])
    out.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("block", ["basic", "bottleneck", "grouped", "se"])
def test_speech_big_little_keeps_time_resolution(block):
    # (batch, channels, freq, time) with odd sizes; the Big branch strides frequency only.
    opts = {"cardinality": 8, "base_width": 8} if block in ("grouped", "se") else {}
    m = BigLittleModule(32, 64, blocks=4, alpha=2, beta=2, big_stride=(2, 1), block=block,
                        **opts)
    x = torch.randn(2, 32, 41, 157)
    big = m.big(x)
    assert big.shape[2:] == (21, 157)
    y = m(x)
    assert y.shape == (2, 64, 41, 157)
    y.sum().backward()
    # The module stride applies per axis too: (2, 1) halves frequency only.
    m2 = BigLittleModule(32, 64, blocks=2, stride=(2, 1), big_stride=(2, 1), block=block,
                         **opts)
    assert m2(x).shape == (2, 64, 21, 157)
    assert len(m2.big) == 1 and len(m2.little) == 1


def test_big_little_merge_and_validation():
    x = torch.randn(1, 16, 9, 13)
    for merge in ("nearest", "bilinear"):
        m = BigLittleModule(16, 32, blocks=3, block="basic", merge=merge)
        assert m(x).shape == (1, 32, 9, 13)
    with pytest.raises(ValueError, match="blocks >= 2"):
        BigLittleModule(16, 32, blocks=1)
    with pytest.raises(ValueError, match="merge"):
        BigLittleModule(16, 32, blocks=2, merge="cubic")
    with pytest.raises(ValueError, match="block type"):
        make_stage("dense", 16, 32, 2)
    # Little width and depth follow alpha and beta.
    m = BigLittleModule(16, 64, blocks=8, alpha=4, beta=2, block="basic")
    assert len(m.big) == 7 and len(m.little) == 3
    assert m.little[0].conv1.out_channels == 16


def test_last_bn_is_zero_initialized_and_big_ends_without_relu():
    model = build_model("bl_resnet50")
    assert torch.count_nonzero(model.layer1.big[0].bn3.weight) == 0
    assert torch.count_nonzero(model.layer4[2].bn3.weight) == 0
    assert model.layer1.big[-1].last_relu is False
    assert model.layer1.little[-1].last_relu is True
    assert model.layer1.fusion[-1].last_relu is True


def test_registry_round_trip_and_errors():
    names = list_models()
    assert set(REFERENCE) | {"bl_resnet152", "resnet50", "resnet101", "resnext50_32x4d"} <= set(
        names
    )
    for name in names:
        defaults = model_defaults(name)
        overrides = {k: v for k, v in (("num_classes", 11), ("alpha", 4)) if k in defaults}
        with torch.device("meta"):
            model = build_model(name, **overrides)
            config = json.loads(json.dumps(model.config))  # plain data only
            again = build_model_from_config(config)
        assert config["name"] == name
        assert all(config[k] == v for k, v in overrides.items())
        shapes = {k: v.shape for k, v in model.state_dict().items()}
        assert shapes == {k: v.shape for k, v in again.state_dict().items()}
    assert model_defaults("bl_resnet50")["alpha"] == 2
    with pytest.raises(ValueError, match="unknown model"):
        build_model("bl_resnet9000")
    with pytest.raises(ValueError, match="no option"):
        build_model("bl_resnet50", widht=3)
    with pytest.raises(ValueError, match="no 'name'"):
        build_model_from_config({"alpha": 2})
