"""Inference-time folding of BatchNorm into the convolution that feeds it.

In eval mode a BatchNorm is a per-channel affine map ``y = (x - mean) * g / sqrt(var + eps)
+ b``; when ``x`` is a convolution's output the map folds into the convolution's weight and
bias, which removes one full read/write pass over every feature map. The results are the same
up to float rounding (the fold itself is computed in float64).

:func:`fuse` finds the conv/BN pairs with one mechanism, a table of ``(conv_attr, bn_attr)``
pairs per module class (:data:`FUSE_PAIRS`), plus a scan of every ``nn.Sequential`` for a
``Conv2d`` directly followed by a ``BatchNorm2d`` (the avg-pool/conv/BN shortcuts and the
Little branch's ``little_e``), or a ``Conv1d`` by a ``BatchNorm1d`` (1-D speech encoders).
Classes of other code (for instance torchvision's ResNet, which :func:`fuse` knows when
torchvision is loaded) can be added with :func:`register_fuse_pairs`.

Example:
    >>> import torch
    >>> from blspeech.models import build_model, fuse
    >>> model = build_model("bl_resnet50").eval()
    >>> fast = fuse(model, channels_last=True)
    >>> x = torch.randn(1, 3, 64, 64)
    >>> bool((fast(x) - model(x)).abs().max() < 1e-3)
    True
"""

from __future__ import annotations

import copy
import sys

import torch
from torch import nn

from blspeech.models.big_little import BigLittleModule
from blspeech.models.blocks import BasicBlock, Bottleneck, MaskedBatchNorm1d, MaskedBatchNorm2d

Pairs = tuple[tuple[str, str], ...]

_BLOCK_PAIRS: Pairs = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))

#: ``(conv_attr, bn_attr)`` pairs, per module class, where ``forward`` applies the BN directly
#: to the conv's output and uses the conv's output nowhere else. Missing attributes are
#: skipped (a BasicBlock has no ``conv3``). Model modules add their own classes with
#: :func:`register_fuse_pairs` (the vision backbones do), so this module knows no models.
FUSE_PAIRS: dict[type[nn.Module], Pairs] = {
    BasicBlock: _BLOCK_PAIRS,
    Bottleneck: _BLOCK_PAIRS,
    BigLittleModule: (),  # its conv/BN pair is the Sequential ``little_e``
}


def register_fuse_pairs(cls: type[nn.Module], pairs: Pairs) -> None:
    """Declare that in ``cls.forward`` each ``pairs`` BN directly follows its conv."""
    FUSE_PAIRS[cls] = tuple((str(c), str(b)) for c, b in pairs)


def _register_torchvision() -> None:
    # torchvision's ResNet uses the same names; register it only if it is already loaded
    # (a torchvision model cannot be passed in otherwise), so fuse never imports it.
    tv = sys.modules.get("torchvision.models.resnet")
    if tv is None:
        return
    for name, pairs in (("BasicBlock", _BLOCK_PAIRS), ("Bottleneck", _BLOCK_PAIRS),
                        ("ResNet", (("conv1", "bn1"),))):
        cls = getattr(tv, name, None)
        if isinstance(cls, type) and cls not in FUSE_PAIRS:
            FUSE_PAIRS[cls] = pairs


@torch.no_grad()
def fold_bn(conv: nn.Conv1d | nn.Conv2d, bn: nn.BatchNorm1d | nn.BatchNorm2d) -> None:
    """Fold eval-mode ``bn`` into ``conv`` in place (``conv`` gets a bias)."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm without running statistics")
    if conv.out_channels != bn.num_features:
        raise ValueError(
            f"conv has {conv.out_channels} output channels, its BN {bn.num_features}"
        )
    w = conv.weight.double()
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    shift = -bn.running_mean.double() * scale
    if bn.weight is not None:
        scale = scale * bn.weight.double()
        shift = shift * bn.weight.double()
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    if conv.bias is not None:
        shift = shift + conv.bias.double() * scale
    dtype = conv.weight.dtype
    conv.weight.copy_((w * scale.view(-1, *[1] * (w.dim() - 1))).to(dtype))
    conv.bias = nn.Parameter(shift.to(dtype=dtype, device=conv.weight.device),
                             requires_grad=False)


# Masked BatchNorms (speech encoders) compute plain BatchNorm in eval mode.
_FOLDABLE = ((nn.Conv2d, nn.BatchNorm2d), (nn.Conv1d, nn.BatchNorm1d),
             (nn.Conv2d, MaskedBatchNorm2d), (nn.Conv1d, MaskedBatchNorm1d))


def _foldable(conv: nn.Module | None, bn: nn.Module | None) -> bool:
    return (
        (type(conv), type(bn)) in _FOLDABLE
        and bn.track_running_stats
        and conv.out_channels == bn.num_features
    )


def _fuse_module(module: nn.Module) -> int:
    """Fold every conv/BN pair directly inside ``module``; returns how many were folded."""
    folded = 0
    if type(module) is nn.Sequential:  # a subclass might not chain its children
        names = list(module._modules)
        for cname, bname in zip(names, names[1:], strict=False):
            conv, bn = module._modules[cname], module._modules[bname]
            if _foldable(conv, bn):
                fold_bn(conv, bn)
                module._modules[bname] = nn.Identity()
                folded += 1
    for cname, bname in FUSE_PAIRS.get(type(module), ()):
        conv, bn = getattr(module, cname, None), getattr(module, bname, None)
        if _foldable(conv, bn):
            fold_bn(conv, bn)
            setattr(module, bname, nn.Identity())
            folded += 1
    return folded


def fuse(model: nn.Module, *, channels_last: bool = False) -> nn.Module:
    """Return an eval-mode inference copy of ``model`` with BatchNorms folded into convs.

    ``model`` itself is not modified. Every BN that directly follows a conv (per
    :data:`FUSE_PAIRS` and the ``nn.Sequential`` scan) becomes ``nn.Identity`` and its conv
    gets the equivalent weight and bias; outputs match the eval-mode original up to float
    ``channels_last=True`` stores the weights in channels-last (NHWC) memory format, which
    oneDNN runs faster on CPU; activations then stay NHWC (NCHW inputs are accepted: the
    first conv converts them). The copy is for inference: its parameters do not require
    gradients.
    """
    _register_torchvision()
    fused = copy.deepcopy(model).eval()
    for module in list(fused.modules()):
        _fuse_module(module)
    for p in fused.parameters():
        p.requires_grad_(False)
    if channels_last:
        fused = fused.to(memory_format=torch.channels_last)
    return fused
