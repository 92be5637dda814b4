"""Residual blocks shared by every Big-Little and plain ResNet model.

All strides are 2-D ``(stride_h, stride_w)`` tuples so that speech models can stride
along frequency only (``(2, 1)`` on (freq, time) maps) while vision models use ``(2, 2)``.
Parameter names (``conv1``, ``bn1``, ..., ``downsample``, ``se_layer.fc1``) follow the
official bL-Net release and torchvision, so their state_dicts load without renaming.

Speech encoders feed padded batches through these blocks: their
:class:`~blspeech.models.speech.PaddingMask` swaps each BatchNorm for a
:class:`MaskedBatchNorm2d` / :class:`MaskedBatchNorm1d` and gives those and every
:class:`SqueezeExcite` a ``time_mask`` (:data:`TimeMask`), so that batch statistics and the
squeeze's average cover valid time steps only. Without a ``time_mask`` (vision models, or no
padding in the batch) they compute exactly what their plain counterparts do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from blspeech.errors import UserError

Stride = int | tuple[int, int]

#: ``time_mask(module, x)``: a 0/1 tensor of ``x``'s dtype that broadcasts against ``x``
#: (``(B, 1, .., T)``), 1 at the valid time steps of each utterance; ``None`` when no time
#: step of ``x`` is padding.
TimeMask = Callable[[nn.Module, torch.Tensor], torch.Tensor | None]

BLOCK_TYPES = ("basic", "bottleneck", "grouped", "se")


def pair(value: Stride) -> tuple[int, int]:
    """Return ``value`` as a ``(h, w)`` tuple."""
    if isinstance(value, int):
        return (value, value)
    h, w = value
    return (int(h), int(w))


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation made of 1x1 convolutions (as in the official bL-SEResNeXt).

    With a ``time_mask`` the squeeze averages each utterance over its valid time steps
    only, so its channel weights do not depend on the batch's padding.
    """

    time_mask: TimeMask | None = None

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)  # narrow speech blocks would round to 0
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = None if self.time_mask is None else self.time_mask(self, x)
        if mask is None:
            w = x.mean(dim=(2, 3), keepdim=True)
        else:
            valid = mask.expand_as(x[:, :1]).sum(dim=(2, 3), keepdim=True)  # (B, 1, 1, 1)
            w = (x * mask).sum(dim=(2, 3), keepdim=True) / valid
        w = torch.sigmoid(self.fc2(torch.relu(self.fc1(w))))
        return x * w


def _reduce_dims(x: torch.Tensor) -> tuple[list[int], list[int]]:
    """The dims BatchNorm reduces over (all but channels), and a per-channel view shape."""
    return [0, *range(2, x.dim())], [1, -1] + [1] * (x.dim() - 2)


@torch.no_grad()
def _masked_stats(x: torch.Tensor, mask: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance of ``x`` where ``mask`` is 1, and their count;
    in float32 at least (half-precision inputs under autocast too)."""
    dims, shape = _reduce_dims(x)
    dtype = torch.promote_types(x.dtype, torch.float32)
    count = mask.sum(dtype=dtype) * (x[:, 0].numel() // mask.numel())  # mask: (B, 1, .., T)
    centered = (x * mask).to(dtype)
    mean = centered.sum(dims) / count
    # (x - mean) * mask, in the buffer of x * mask. Operands are per-channel or (B, 1, .., T),
    # never (B, C, 1, T): against channels-last x those are strided and 3-4x slower.
    torch.sub(x, mean.view(shape), out=centered).mul_(mask)
    return mean, centered.square_().sum(dims) / count, count


class _MaskedNorm(torch.autograd.Function):
    """``(x - mean) * invstd * weight + bias`` for batch statistics ``mean``, ``invstd`` of
    the positions where ``mask`` is 1, which the caller computes without autograd: the
    backward pass differentiates through them, as BatchNorm's does. Written out because
    autograd through the masked statistics cost 3-8 times a native BatchNorm per layer (CPU);
    this costs about 1.1 times its forward and 2 times its backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, mask: torch.Tensor, mean: torch.Tensor,
                invstd: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                count: torch.Tensor) -> torch.Tensor:
        _, shape = _reduce_dims(x)
        scale = invstd * weight
        ctx.save_for_backward(x, mask, mean, invstd, weight, count)
        return torch.addcmul((bias - mean * scale).view(shape), x, scale.view(shape)
                             ).to(x.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, mask, mean, invstd, weight, count = ctx.saved_tensors
        dims, shape = _reduce_dims(x)
        grad_bias = grad.sum(dims, dtype=mean.dtype)
        # sum(grad * xhat), with xhat = (x - mean) * invstd
        buf = (grad * x).to(mean.dtype)
        grad_weight = (buf.sum(dims) - mean * grad_bias) * invstd
        # dx = a * grad - mask * (k0 + k1 * x): the direct path, then the paths through the
        # mean and the variance, which only valid positions feed. In buf (fresh buffers
        # cost page faults), with per-channel and (B, 1, .., T) operands (see _masked_stats).
        a = weight * invstd
        k1 = a * invstd * grad_weight / count
        k0 = a * grad_bias / count - mean * k1
        grad_x = torch.addcmul(k0.view(shape), x, k1.view(shape), out=buf).mul_(-mask)
        grad_x = grad_x.addcmul_(grad, a.view(shape)).to(x.dtype)
        return grad_x, None, None, None, grad_weight, grad_bias, None


class _MaskedBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose batch statistics cover only the positions ``time_mask`` marks valid.

    Train mode normalizes with the mean and (biased) variance of the valid positions and
    updates the running statistics with them (unbiased variance, as PyTorch does), so
    neither depends on how much padding the batch carries. Eval mode, and any batch without
    padding, is the plain BatchNorm call: same parameters and buffers, same state_dict.
    """

    time_mask: TimeMask | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch_stats = self.training or self.running_mean is None
        mask = self.time_mask(self, x) if batch_stats and self.time_mask is not None else None
        if mask is None:
            return super().forward(x)
        self._check_input_dim(x)
        mean, var, count = _masked_stats(x, mask)
        if self.training and self.track_running_stats:
            self._update_running_stats(mean, var, count)
        invstd = torch.rsqrt(var + self.eps)
        weight = self.weight if self.weight is not None else torch.ones_like(invstd)
        bias = self.bias if self.bias is not None else torch.zeros_like(invstd)
        return _MaskedNorm.apply(x, mask, mean, invstd, weight, bias, count)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor,
                              count: torch.Tensor) -> None:
        self.num_batches_tracked.add_(1)
        if self.momentum is None:  # cumulative moving average
            momentum = 1.0 / float(self.num_batches_tracked)
        else:
            momentum = self.momentum
        unbiased = var * count / (count - 1).clamp(min=1)
        self.running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
        self.running_var.mul_(1 - momentum).add_(unbiased, alpha=momentum)


class MaskedBatchNorm1d(_MaskedBatchNorm, nn.BatchNorm1d):
    """:class:`torch.nn.BatchNorm1d` over (B, C, T) with masked batch statistics."""


class MaskedBatchNorm2d(_MaskedBatchNorm, nn.BatchNorm2d):
    """:class:`torch.nn.BatchNorm2d` over (B, C, F, T) with masked batch statistics."""


def masked_batch_norm(bn: nn.BatchNorm1d | nn.BatchNorm2d) -> _MaskedBatchNorm:
    """A masked BatchNorm that holds ``bn``'s own parameters and buffers (the same tensors)."""
    cls = MaskedBatchNorm2d if isinstance(bn, nn.BatchNorm2d) else MaskedBatchNorm1d
    masked = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    for name, tensor in [*bn.named_parameters(recurse=False), *bn.named_buffers(recurse=False)]:
        setattr(masked, name, tensor)
    return masked.train(bn.training)


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
        raise UserError(f"unknown shortcut style {style!r}; use 'avgpool' or 'conv'")
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
            raise UserError(
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
        raise UserError(f"unknown block type {block!r}; choose one of {', '.join(BLOCK_TYPES)}")
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
        raise UserError(f"a stage needs at least one block, got {num_blocks}")
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
