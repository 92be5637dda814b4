"""Residual blocks shared by every Big-Little and plain ResNet model.

All strides are 2-D ``(stride_h, stride_w)`` tuples so that speech models can stride
along frequency only (``(2, 1)`` on (freq, time) maps) while vision models use ``(2, 2)``.
Parameter names (``conv1``, ``bn1``, ..., ``downsample``, ``se_layer.fc1``) follow the
official bL-Net release and torchvision, so their state_dicts load without renaming.
"""

from __future__ import annotations

import torch
from torch import nn

Stride = int | tuple[int, int]

BLOCK_TYPES = ("basic", "bottleneck", "grouped", "se")


def pair(value: Stride) -> tuple[int, int]:
    """Return ``value`` as a ``(h, w)`` tuple."""
    if isinstance(value, int):
        return (value, value)
    h, w = value
    return (int(h), int(w))


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation made of 1x1 convolutions (as in the official bL-SEResNeXt)."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)  # narrow speech blocks would round to 0
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = x.mean(dim=(2, 3), keepdim=True)
        w = torch.sigmoid(self.fc2(torch.relu(self.fc1(w))))
        return x * w


def make_shortcut(
    in_channels: int, out_channels: int, stride: Stride = 1, style: str = "avgpool"
) -> nn.Sequential | None:
    """Projection shortcut for a block whose input and output shapes differ.

    ``style="avgpool"`` (bL-Net): 3-wide average pool on each strided axis, then a 1x1 conv
    + BN only when the channel count changes. ``style="conv"`` (torchvision ResNet): a
    strided 1x1 conv + BN. Returns ``None`` for an identity shortcut.
    """
    sh, sw = pair(stride)
    layers: list[nn.Module] = []
    if style == "avgpool":
        if (sh, sw) != (1, 1):
            layers.append(
                nn.AvgPool2d(
                    kernel_size=(3 if sh > 1 else 1, 3 if sw > 1 else 1),
                    stride=(sh, sw),
                    padding=(1 if sh > 1 else 0, 1 if sw > 1 else 0),
                )
            )
        if in_channels != out_channels:
            layers.append(nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False))
            layers.append(nn.BatchNorm2d(out_channels))
    elif style == "conv":
        if (sh, sw) != (1, 1) or in_channels != out_channels:
            layers.append(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=(sh, sw), bias=False)
            )
            layers.append(nn.BatchNorm2d(out_channels))
    else:
        raise ValueError(f"unknown shortcut style {style!r}; use 'avgpool' or 'conv'")
    return nn.Sequential(*layers) if layers else None


class _Residual(nn.Module):
    """Shared forward tail: residual add and the optional final ReLU."""

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        """The BN before the residual add (zero-initialised so blocks start as identity)."""
        return self.bn3 if hasattr(self, "bn3") else self.bn2

    def _finish(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # In-place add/ReLU on fresh intermediates (as torchvision does): autograd-safe,
        # and it saves a full read/write of the block's output at inference.
        if self.se_layer is not None:
            out = self.se_layer(out)
        out += x if self.downsample is None else self.downsample(x)
        return torch.relu_(out) if self.last_relu else out


class BasicBlock(_Residual):
    """Two 3x3 convolutions (ResNet-18/34 style); ``out_channels`` is the block's output width.

    Example:
        >>> block = BasicBlock(32, 64, stride=(2, 1))
        >>> block(torch.randn(1, 32, 40, 11)).shape
        torch.Size([1, 64, 20, 11])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: Stride = 1,
        *,
        se: bool = False,
        last_relu: bool = True,
        shortcut: str = "avgpool",
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(
            in_channels, out_channels, 3, stride=pair(stride), padding=1, bias=False
        )
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = make_shortcut(in_channels, out_channels, stride, shortcut)
        self.se_layer = SqueezeExcite(out_channels) if se else None
        self.last_relu = last_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu_(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self._finish(out, x)


class Bottleneck(_Residual):
    """1x1 -> 3x3 (grouped, carries the stride) -> 1x1 bottleneck; ResNet and ResNeXt.

    The inner width follows the official bL-ResNeXt rule
    ``(out_channels * base_width // 64) // 4 * cardinality``; with ``cardinality=1`` and
    ``base_width=64`` this is the ResNet bottleneck (``out_channels // 4``).

    Example:
        >>> block = Bottleneck(64, 256, stride=2, cardinality=32, base_width=4)
        >>> block(torch.randn(2, 64, 15, 9)).shape
        torch.Size([2, 256, 8, 5])
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: Stride = 1,
        *,
        cardinality: int = 1,
        base_width: int = 64,
        se: bool = False,
        last_relu: bool = True,
        shortcut: str = "avgpool",
    ) -> None:
        super().__init__()
        width = (out_channels * base_width // 64) // self.expansion * cardinality
        if width < cardinality or width % cardinality:
            raise ValueError(
                f"bottleneck width {width} from out_channels={out_channels}, "
                f"base_width={base_width} does not split into {cardinality} groups"
            )
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(
            width, width, 3, stride=pair(stride), padding=1, groups=cardinality, bias=False
        )
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.downsample = make_shortcut(in_channels, out_channels, stride, shortcut)
        self.se_layer = SqueezeExcite(out_channels) if se else None
        self.last_relu = last_relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu_(self.bn1(self.conv1(x)))
        out = torch.relu_(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self._finish(out, x)


def block_factory(block: str) -> tuple[type[nn.Module], dict[str, bool]]:
    """Map a block-type name to its class and fixed options.

    ``basic``: :class:`BasicBlock`; ``bottleneck``: ResNet bottleneck; ``grouped``: ResNeXt
    bottleneck (uses ``cardinality``/``base_width``); ``se``: grouped bottleneck with
    squeeze-excitation.
    """
    table: dict[str, tuple[type[nn.Module], dict[str, bool]]] = {
        "basic": (BasicBlock, {}),
        "bottleneck": (Bottleneck, {}),
        "grouped": (Bottleneck, {}),
        "se": (Bottleneck, {"se": True}),
    }
    if block not in table:
        raise ValueError(f"unknown block type {block!r}; choose one of {', '.join(BLOCK_TYPES)}")
    return table[block]


def make_stage(
    block: str,
    in_channels: int,
    out_channels: int,
    num_blocks: int,
    stride: Stride = 1,
    *,
    last_relu: bool = True,
    cardinality: int = 1,
    base_width: int = 64,
    shortcut: str = "avgpool",
) -> nn.Sequential:
    """``num_blocks`` residual blocks; the first carries ``stride`` and the width change.

    ``last_relu=False`` drops the final ReLU of the last block (the Big branch of a
    Big-Little module is merged before its nonlinearity).
    """
    if num_blocks < 1:
        raise ValueError(f"a stage needs at least one block, got {num_blocks}")
    cls, fixed = block_factory(block)
    extra = dict(fixed, shortcut=shortcut)
    if cls is Bottleneck:
        extra.update(cardinality=cardinality, base_width=base_width)
    layers = []
    for i in range(num_blocks):
        layers.append(
            cls(
                in_channels if i == 0 else out_channels,
                out_channels,
                stride if i == 0 else 1,
                last_relu=last_relu or i < num_blocks - 1,
                **extra,
            )
        )
    return nn.Sequential(*layers)


def init_weights(model: nn.Module, zero_last_bn: bool = True) -> None:
    """Kaiming-normal (fan_out) convs, unit BN, and zero gamma on each block's last BN."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_last_bn:
        for m in model.modules():
            if isinstance(m, _Residual):
                nn.init.zeros_(m.last_bn.weight)
