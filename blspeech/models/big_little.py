"""The Big-Little module (bL-Net, Chen et al., ICLR 2019): one class for speech and vision.

A Big branch (``blocks - 1`` full-width residual blocks, the first strided by
``big_stride``) runs at reduced resolution; a Little branch (``max(1, blocks // beta - 1)``
blocks at ``out_channels / alpha`` channels) runs at full resolution and is expanded back to
full width by a 1x1 conv + BN. The Big output is upsampled to the Little output's exact
size, the two are added, and one full-width fusion block (carrying the module's own
stride) mixes them.

Vision uses ``big_stride=(2, 2)``. Speech uses ``big_stride=(2, 1)`` on (freq, time) maps so
the Big branch saves compute on frequency while the time resolution that CTC and
frame-level targets need is untouched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from blspeech.errors import UserError
from blspeech.models.blocks import Stride, make_stage, pair

MERGE_MODES = ("nearest", "bilinear")


class BigLittleModule(nn.Module):
    """Big-Little module.

    Args:
        in_channels: input channels.
        out_channels: output channels (the Big branch's width).
        blocks: depth budget; Big gets ``blocks - 1`` blocks, fusion 1, Little
            ``max(1, blocks // beta - 1)``. Must be at least 2.
        alpha: the Little branch has ``out_channels // alpha`` channels.
        beta: divides the Little branch's depth.
        stride: stride of the fusion block (the module's output stride), per axis.
        big_stride: stride of the Big branch's first block, per axis.
        block: ``basic``, ``bottleneck``, ``grouped`` (ResNeXt) or ``se``.
        cardinality, base_width: grouped-bottleneck settings; for grouped blocks the Little
            branch uses ``base_width * alpha`` and ``cardinality // alpha``.
        merge: how the Big output is resized to the Little output: ``nearest`` (official)
            or ``bilinear``.

    Example:
        >>> m = BigLittleModule(32, 64, blocks=3, big_stride=(2, 1), block="basic")
        >>> m(torch.randn(2, 32, 41, 157)).shape  # (batch, channels, freq, time)
        torch.Size([2, 64, 41, 157])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        blocks: int,
        alpha: int = 2,
        beta: int = 4,
        stride: Stride = 1,
        big_stride: Stride = (2, 2),
        block: str = "bottleneck",
        cardinality: int = 1,
        base_width: int = 64,
        merge: str = "nearest",
    ) -> None:
        super().__init__()
        if blocks < 2:
            raise UserError(f"a Big-Little module needs blocks >= 2 (Big + fusion), got {blocks}")
        if alpha < 1 or out_channels % alpha:
            raise UserError(f"alpha={alpha} must divide out_channels={out_channels}")
        if beta < 1:
            raise UserError(f"beta must be >= 1, got {beta}")
        if merge not in MERGE_MODES:
            raise UserError(f"unknown merge mode {merge!r}; choose one of {MERGE_MODES}")
        self.merge = merge
        little_channels = out_channels // alpha
        little_card, little_width = cardinality, base_width
        if cardinality > 1:
            if cardinality % alpha:
                raise UserError(f"alpha={alpha} must divide cardinality={cardinality}")
            little_card, little_width = cardinality // alpha, base_width * alpha
        self.big = make_stage(
            block, in_channels, out_channels, blocks - 1, pair(big_stride), last_relu=False,
            cardinality=cardinality, base_width=base_width,
        )
        self.little = make_stage(
            block, in_channels, little_channels, max(1, blocks // beta - 1),
            cardinality=little_card, base_width=little_width,
        )
        self.little_e = nn.Sequential(
            nn.Conv2d(little_channels, out_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.fusion = make_stage(
            block, out_channels, out_channels, 1, pair(stride),
            cardinality=cardinality, base_width=base_width,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        little = self.little_e(self.little(x))
        add_upsampled_(little, self.big(x), self.merge)
        return self.fusion(torch.relu_(little))


def add_upsampled_(little: torch.Tensor, big: torch.Tensor, mode: str = "nearest"
                   ) -> torch.Tensor:
    """``little += interpolate(big, size=little.shape[2:], mode=mode)``, in place.

    For nearest merges where each axis of ``little`` is exactly 1x or 2x that of ``big``
    (even sizes), upsampling only repeats elements, so ``big`` is added through a broadcast
    view and the upsampled copy is never built; the result is bit-identical to
    ``F.interpolate``. Other sizes (odd maps) go through ``F.interpolate``.
    """
    (b, c, h, w), (lh, lw) = big.shape, little.shape[2:]
    if (h, w) == (lh, lw):
        return little.add_(big)
    fh, fw = lh // h, lw // w
    if mode == "nearest" and fh in (1, 2) and fw in (1, 2) and (lh, lw) == (fh * h, fw * w):
        little.view(b, c, h, fh, w, fw).add_(big.view(b, c, h, 1, w, 1))
        return little
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    return little.add_(F.interpolate(big, size=(lh, lw), mode=mode, **kwargs))
