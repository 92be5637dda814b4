"""ImageNet backbones: the official bL-ResNet/ResNeXt/SEResNeXt and plain ResNet baselines.

The bL models rebuild the structure of the official IBM BigLittleNet release exactly (same
state_dict keys and shapes, same outputs for the same weights), so published checkpoints
load with :func:`load_official_checkpoint`. The baselines follow torchvision's ResNet
layout (max-pool stem, strided 1x1 shortcuts) and load torchvision state_dicts.

Example:
    >>> import torch
    >>> from blspeech.models import build_model
    >>> model = build_model("bl_resnet50").eval()
    >>> model(torch.randn(1, 3, 224, 224)).shape
    torch.Size([1, 1000])
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from blspeech.errors import UserError
from blspeech.models.big_little import BigLittleModule
from blspeech.models.blocks import init_weights, make_stage
from blspeech.models.bn_fold import register_fuse_pairs
from blspeech.models.registry import register_model

# bL depths count Big + fusion blocks per stage, so bL-ResNet-101/152 use other stage
# counts than ResNet-101/152.
BL_DEPTHS = {50: [3, 4, 6, 3], 101: [4, 8, 18, 3], 152: [5, 12, 30, 3]}
RESNET_DEPTHS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3],
                 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}


def _expansion(block: str) -> int:
    return 1 if block == "basic" else 4


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False), nn.BatchNorm2d(cout)


class BLResNet(nn.Module):
    """bL-ResNet family for images (official bL-Net structure).

    Stem: 7x7/2 conv, then a two-branch Big-Little stem (no max-pool). Stages 1-3 are
    :class:`BigLittleModule` with module strides 2, 2, 1 and Big stride (2, 2); stage 4 is a
    plain residual stage with stride 2; global average pool; linear classifier.
    """

    def __init__(
        self,
        layers: list[int],
        block: str = "bottleneck",
        cardinality: int = 1,
        base_width: int = 64,
        alpha: int = 2,
        beta: int = 4,
        num_classes: int = 1000,
        in_channels: int = 3,
        merge: str = "nearest",
    ) -> None:
        super().__init__()
        c0 = 64
        widths = [w * _expansion(block) for w in (64, 128, 256, 512)]
        self.conv1, self.bn1 = _conv_bn(in_channels, c0, 7, stride=2)
        self.b_conv0, self.bn_b0 = _conv_bn(c0, c0, 3, stride=2)
        self.l_conv0, self.bn_l0 = _conv_bn(c0, c0 // alpha, 3)
        self.l_conv1, self.bn_l1 = _conv_bn(c0 // alpha, c0 // alpha, 3, stride=2)
        self.l_conv2, self.bn_l2 = _conv_bn(c0 // alpha, c0, 1)
        self.bl_init, self.bn_bl_init = _conv_bn(c0, c0, 1)
        opts = dict(alpha=alpha, beta=beta, block=block, cardinality=cardinality,
                    base_width=base_width, merge=merge, big_stride=(2, 2))
        self.layer1 = BigLittleModule(c0, widths[0], layers[0], stride=2, **opts)
        self.layer2 = BigLittleModule(widths[0], widths[1], layers[1], stride=2, **opts)
        self.layer3 = BigLittleModule(widths[1], widths[2], layers[2], stride=1, **opts)
        self.layer4 = make_stage(block, widths[2], widths[3], layers[3], stride=2,
                                 cardinality=cardinality, base_width=base_width)
        self.fc = nn.Linear(widths[3], num_classes)
        init_weights(self)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu_(self.bn1(self.conv1(x)))
        big = self.bn_b0(self.b_conv0(x))
        little = torch.relu_(self.bn_l0(self.l_conv0(x)))
        little = torch.relu_(self.bn_l1(self.l_conv1(little)))
        little = self.bn_l2(self.l_conv2(little))
        little += big
        return torch.relu_(self.bn_bl_init(self.bl_init(torch.relu_(little))))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map before pooling: (B, C, H/32, W/32)."""
        x = self.stem(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x).mean(dim=(2, 3)))


class ResNet(nn.Module):
    """Plain ResNet/ResNeXt baseline with torchvision's layout and parameter names."""

    def __init__(
        self,
        layers: list[int],
        block: str = "bottleneck",
        cardinality: int = 1,
        base_width: int = 64,
        num_classes: int = 1000,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        widths = [w * _expansion(block) for w in (64, 128, 256, 512)]
        self.conv1, self.bn1 = _conv_bn(in_channels, 64, 7, stride=2)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        cin = 64
        for i, (n, w) in enumerate(zip(layers, widths, strict=True)):
            stage = make_stage(block, cin, w, n, stride=1 if i == 0 else 2, shortcut="conv",
                               cardinality=cardinality, base_width=base_width)
            setattr(self, f"layer{i + 1}", stage)
            cin = w
        self.fc = nn.Linear(widths[3], num_classes)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(torch.relu_(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x).mean(dim=(2, 3)))


# The conv/BN pairs that forward() chains directly (blspeech.models.fuse folds them).
register_fuse_pairs(ResNet, (("conv1", "bn1"),))
register_fuse_pairs(BLResNet, (("conv1", "bn1"), ("b_conv0", "bn_b0"), ("l_conv0", "bn_l0"),
                               ("l_conv1", "bn_l1"), ("l_conv2", "bn_l2"),
                               ("bl_init", "bn_bl_init")))


def bl_resnet(depth: int = 50, **kwargs: Any) -> BLResNet:
    """bL-ResNet of a given depth (50, 101, 152); ``kwargs`` go to :class:`BLResNet`."""
    if depth not in BL_DEPTHS:
        raise UserError(f"bL-ResNet depth must be one of {sorted(BL_DEPTHS)}, got {depth}")
    return BLResNet(BL_DEPTHS[depth], **kwargs)


def resnet(depth: int = 50, **kwargs: Any) -> ResNet:
    """Plain ResNet/ResNeXt baseline (depths 18 and 34 need ``block="basic"``)."""
    if depth not in RESNET_DEPTHS:
        raise UserError(f"ResNet depth must be one of {sorted(RESNET_DEPTHS)}, got {depth}")
    return ResNet(RESNET_DEPTHS[depth], **kwargs)


_BL_COMMON = dict(alpha=2, beta=4, num_classes=1000, in_channels=3, merge="nearest")
_RESNEXT_32x4d = dict(block="grouped", cardinality=32, base_width=4)
for _name, _arch in {
    "bl_resnet50": dict(depth=50, block="bottleneck", cardinality=1, base_width=64),
    "bl_resnet101": dict(depth=101, block="bottleneck", cardinality=1, base_width=64),
    "bl_resnet152": dict(depth=152, block="bottleneck", cardinality=1, base_width=64),
    "bl_resnext50_32x4d": dict(depth=50, **_RESNEXT_32x4d),
    "bl_resnext101_32x4d": dict(depth=101, **_RESNEXT_32x4d),
    "bl_resnext101_64x4d": dict(depth=101, block="grouped", cardinality=64, base_width=4),
    "bl_seresnext50_32x4d": dict(depth=50, **dict(_RESNEXT_32x4d, block="se")),
    "bl_seresnext101_32x4d": dict(depth=101, **dict(_RESNEXT_32x4d, block="se")),
}.items():
    register_model(_name, bl_resnet, **_arch, **_BL_COMMON)

for _name, _arch in {
    "resnet50": dict(depth=50, block="bottleneck", cardinality=1, base_width=64),
    "resnet101": dict(depth=101, block="bottleneck", cardinality=1, base_width=64),
    "resnext50_32x4d": dict(depth=50, **_RESNEXT_32x4d),
}.items():
    register_model(_name, resnet, **_arch, num_classes=1000, in_channels=3)


def load_official_checkpoint(
    model: nn.Module, src: str | os.PathLike | Mapping[str, torch.Tensor]
) -> nn.Module:
    """Load an official BigLittleNet checkpoint (or any state_dict with its keys) into ``model``.

    ``src`` is a file path or a state_dict. The official training script's wrapping is
    accepted: a ``{"state_dict": ...}`` dict and ``module.`` prefixes from DataParallel/DDP.
    Files are read with ``torch.load(weights_only=True)``: no pickled code runs.

    Raises:
        UserError: a missing checkpoint, or one naming missing/unexpected keys or
            mismatched shapes.
    """
    if isinstance(src, str | os.PathLike):
        path = os.fspath(src)
        if not os.path.isfile(path):
            raise UserError(f"checkpoint {path} does not exist")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # corrupt file or pickled objects that are not tensors
            # Never pass on PyTorch's advice to re-run with weights_only=False: that would
            # run whatever code the file holds.
            reason = next((x.strip() for x in str(e).splitlines()
                           if x.strip() and "weights_only" not in x), type(e).__name__)
            raise UserError(f"cannot read checkpoint {path}: {reason}") from e
        where = path
    else:
        state, where = src, "state_dict"
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise UserError(f"{where}: expected a state_dict (mapping of tensors), got {type(state)}")
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected),
                            ("shape mismatch", wrong)):
            if keys:
                shown = ", ".join(keys[:5]) + (f" ... (+{len(keys) - 5})" if len(keys) > 5 else "")
                parts.append(f"{label} keys: {shown}")
        raise UserError(
            f"{where} does not fit {type(model).__name__}: " + "; ".join(parts)
            + ". Build the model with the same depth/cardinality/alpha/beta as the checkpoint."
        )
    model.load_state_dict(state, strict=True)
    return model
