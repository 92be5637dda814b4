"""Speech encoders: the ResNet acoustic model, its Big-Little version, and two peers.

Every encoder follows the interface ESPnet and icefall encoders use::

    out, out_lengths = encoder(feats, lengths)   # feats (B, T, F), lengths (B,)
    out.shape == (B, T', encoder.output_size())

where ``T'`` is ``T`` divided (rounding up) by the encoder's ``time_subsampling`` (for the
Conformer: the longest ``out_lengths``). Positions past ``out_lengths`` are zero, and an
utterance's output does not depend on the padding of its batch, in eval or train mode
(:class:`PaddingMask`: convolutions see zeros past an utterance's end, BatchNorm batch
statistics and squeeze-excitation averages cover valid frames only). In train mode the
output still depends on the batch's other utterances, through BN batch statistics.

* :class:`ResNetAM` with ``big_little=False`` is the paper's baseline: a 2-D ResNet over
  log-mel (freq, time) maps whose stages downsample frequency only. With
  ``big_little=True`` its stages are :class:`~blspeech.models.BigLittleModule` with the Big
  branch at half *frequency* resolution (``big_stride=(2, 1)``): time resolution is never
  reduced by the bL modules; time subsampling is an explicit choice of the stem.
* :class:`QuartzNet`: 1-D time-channel-separable convolutions in the style of NeMo's
  QuartzNet (our own code).
* :class:`ConformerEncoder`: torchaudio's Conformer behind a 2-D convolutional subsampling
  front.

Example:
    >>> import torch
    >>> from blspeech.models import build_model
    >>> enc = build_model("bl_resnet_am_tiny", num_mel_bins=40)
    >>> out, lens = enc(torch.randn(2, 101, 40), torch.tensor([101, 57]))
    >>> out.shape, lens.tolist()
    (torch.Size([2, 26, 64]), [26, 15])
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from blspeech.errors import UserError
from blspeech.models.big_little import BigLittleModule
from blspeech.models.blocks import (
    MaskedBatchNorm1d,
    MaskedBatchNorm2d,
    SqueezeExcite,
    init_weights,
    make_stage,
    masked_batch_norm,
)
from blspeech.models.bn_fold import register_fuse_pairs
from blspeech.models.registry import register_model
from blspeech.models.rel_attention import RelPositionMultiheadAttention

TIME_SUBSAMPLING = (1, 2, 4)


def subsampled_lengths(lengths: torch.Tensor, factor: int) -> torch.Tensor:
    """Frames after ``log2(factor)`` stride-2 convolutions with 'same' padding: ceil(L / 2)
    at each step."""
    for _ in range(factor.bit_length() - 1):
        lengths = torch.div(lengths + 1, 2, rounding_mode="floor")
    return lengths


def _zero_padding(out: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    mask = torch.arange(out.shape[1], device=out.device)[None, :] < lengths[:, None]
    return out * mask.unsqueeze(-1).to(out.dtype)


class PaddingMask:
    """Keeps the padded time steps of a batch out of every layer of ``module`` that mixes
    time steps, during a forward pass.

    * Convolutions: one forward pre-hook per ``Conv1d``/``Conv2d`` zeroes the padded time
      steps of its input, so it sees zeros past an utterance's end exactly as it would see
      its own zero padding if the utterance were alone (without this, BN shifts and biases
      make padded frames non-zero and they leak into the last valid frames layer by layer).
    * BatchNorm: each ``BatchNorm1d``/``BatchNorm2d`` is swapped for a
      :class:`~blspeech.models.blocks.MaskedBatchNorm1d` / ``2d`` holding the same parameters
      and buffers (state_dicts are unchanged): in train mode its batch statistics, and the
      running statistics it updates, cover valid time steps only.
    * :class:`~blspeech.models.blocks.SqueezeExcite` averages over valid time steps only.

    So an utterance's valid outputs, and the BN running statistics, do not depend on how
    much padding its batch adds, in train and eval mode (dropout aside). ``time_dim`` is the
    time axis of those layers' inputs. Costs nothing when no utterance is padded: every
    layer then runs its plain computation.

    Eager mode finds a layer's mask by its input's length (a dict lookup keyed by Python
    ints, skipped when nothing is padded). That does not survive tracing or export, where
    lengths are symbolic and the skip would be decided once for all inputs:
    :func:`make_exportable` switches the masks to *static* mode, in which each masked layer
    knows its time-subsampling level (recorded once, :meth:`record_levels`) and always
    multiplies by ``arange(T_in) < ceil(lengths / 2**level)``, built from tensor ops only.
    Both modes give the same numbers (an unpadded row is multiplied by ones). Static mode is
    for inference: there BN uses its running statistics and needs no mask.
    """

    #: The attribute each masked layer holds its subsampling level in (static mode).
    LEVEL_ATTR = "_padding_mask_level"

    def __init__(self, module: nn.Module, time_dim: int = -1) -> None:
        self.time_dim = time_dim
        self.static = False
        self._masks: dict[int, torch.Tensor] = {}
        self._shaped: dict[tuple[int, int, torch.dtype], torch.Tensor] = {}
        self._size_level: dict[int, int] = {}
        self._level_lengths: list[torch.Tensor] = []
        self._static_masks: dict[tuple[int, int, torch.dtype], torch.Tensor] = {}
        self._recording = False
        for parent in list(module.modules()):
            for name, child in list(parent.named_children()):
                if type(child) in (nn.BatchNorm1d, nn.BatchNorm2d):
                    setattr(parent, name, masked_batch_norm(child))
        for m in module.modules():
            if isinstance(m, nn.Conv1d | nn.Conv2d):
                m.register_forward_pre_hook(self._hook)
            elif isinstance(m, MaskedBatchNorm1d | MaskedBatchNorm2d | SqueezeExcite):
                m.time_mask = self.mask

    def _hook(self, module: nn.Module, inputs: tuple[torch.Tensor]) -> tuple[torch.Tensor] | None:
        mask = self.mask(module, inputs[0])
        return None if mask is None else (inputs[0] * mask,)

    def mask(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
        """``module``'s mask for its input ``x`` (:data:`~blspeech.models.blocks.TimeMask`):
        1 at valid time steps, shaped to broadcast against ``x``; None if none is padding."""
        if self.static:
            return self._static_mask(module, x)
        size = x.shape[self.time_dim]
        mask = self._masks.get(size)
        if mask is None:
            return None
        if self._recording:
            setattr(module, self.LEVEL_ATTR, self._size_level[size])
        key = (size, x.dim(), x.dtype)
        shaped = self._shaped.get(key)
        if shaped is None:  # once per batch, not once per layer
            shape = [1] * x.dim()
            shape[0], shape[self.time_dim] = mask.shape
            shaped = self._shaped[key] = mask.view(shape).to(x.dtype)
        return shaped

    def _static_mask(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
        level = getattr(module, self.LEVEL_ATTR, None)
        if level is None or not self._level_lengths:
            return None
        key = (level, x.dim(), x.dtype)
        mask = self._static_masks.get(key)
        if mask is None:  # the first layer at this level builds it (a smaller graph)
            lengths = self._level_lengths[level]
            steps = torch.arange(x.shape[self.time_dim], device=x.device)
            mask = (steps[None, :] < lengths[:, None]).to(x.dtype)  # (B, T_in)
            time_dim = self.time_dim % x.dim()
            for d in range(1, x.dim()):  # (B, 1, .., T_in, .., 1) to broadcast over x
                if d != time_dim:
                    mask = mask.unsqueeze(d)
            self._static_masks[key] = mask
        return mask

    @contextlib.contextmanager
    def __call__(self, lengths: torch.Tensor, frames: int, max_factor: int
                 ) -> Iterator[None]:
        """Masks for ``frames`` input steps and each stride-2 subsampling of them."""
        if self.static:
            self._level_lengths = [lengths]
            for _ in range(max_factor.bit_length() - 1):
                lengths = torch.div(lengths + 1, 2, rounding_mode="floor")
                self._level_lengths.append(lengths)
        elif int(lengths.min()) < frames:
            for level in range(max_factor.bit_length()):
                steps = torch.arange(frames, device=lengths.device)
                self._masks[frames] = steps[None, :] < lengths[:, None]
                self._size_level[frames] = level
                frames, lengths = (frames + 1) // 2, torch.div(lengths + 1, 2,
                                                               rounding_mode="floor")
        try:
            yield
        finally:
            self._masks.clear()
            self._shaped.clear()
            self._size_level.clear()
            self._level_lengths = []
            self._static_masks.clear()

    @contextlib.contextmanager
    def record_levels(self) -> Iterator[None]:
        """Within this block, an eager forward pass over a padded batch stores each masked
        layer's subsampling level on it (see :data:`LEVEL_ATTR`)."""
        self._recording = True
        try:
            yield
        finally:
            self._recording = False


def padding_masks(encoder: nn.Module) -> list[PaddingMask]:
    """The :class:`PaddingMask` objects of ``encoder`` and its submodules."""
    return [v for m in encoder.modules() for v in vars(m).values()
            if isinstance(v, PaddingMask)]


def make_exportable(encoder: nn.Module, feature_dim: int) -> nn.Module:
    """Prepare ``encoder`` (in place; pass a copy) for ``torch.jit.trace`` / ONNX export.

    Its :class:`PaddingMask` objects switch to static mode: one eager forward pass over a
    padded dummy batch records each masked layer's time-subsampling level, then every
    forward masks with tensor ops only (no Python branch on lengths, no dict keyed by
    lengths). The :class:`ConformerEncoder` also stops trimming its output to the longest
    utterance (a data-dependent slice): it keeps ``ceil(T / 4)`` frames, those past an
    utterance's length are zero. Outputs are otherwise those of eager mode.
    """
    masks = padding_masks(encoder)
    factor = int(getattr(encoder, "time_subsampling", 1))
    frames = 16 * factor + 1  # levels of distinct lengths (T, ceil(T / 2), ...), all > 1
    was_training = encoder.training
    encoder.eval()
    with contextlib.ExitStack() as stack, torch.no_grad():
        for mask in masks:
            mask.static = False
            stack.enter_context(mask.record_levels())
        device = next(encoder.parameters()).device
        encoder(torch.zeros(2, frames, feature_dim, device=device),
                torch.tensor([frames, frames // 2], device=device))
    for mask in masks:
        mask.static = True
    encoder.train(was_training)
    return encoder


def _check_subsampling(factor: int) -> None:
    if factor not in TIME_SUBSAMPLING:
        raise UserError(f"time_subsampling must be one of {TIME_SUBSAMPLING}, got {factor}")


class ResNetAM(nn.Module):
    """2-D ResNet acoustic model over (freq, time) log-mel maps, optionally Big-Little.

    Args:
        num_mel_bins: input feature dimension (40 or 80 are usual).
        widths, blocks: channels and residual blocks of each stage.
        freq_strides: frequency stride of each stage (time stride is always 1).
        block: ``basic``, ``bottleneck``, ``grouped`` or ``se``.
        stem_channels: channels of the two 3x3 stem convolutions.
        time_subsampling: 1, 2 or 4, done by the stem's time strides.
        output_dim: size of the per-frame output (a linear projection of channels x freq).
        big_little: use Big-Little modules for the first ``bl_stages`` stages.
        alpha, beta, merge: Big-Little settings (see :class:`BigLittleModule`).
        cardinality, base_width: grouped-bottleneck settings.
        dropout: dropout before the output projection.
    """

    def __init__(
        self,
        num_mel_bins: int = 40,
        widths: Sequence[int] = (32, 64, 128, 256),
        blocks: Sequence[int] = (2, 2, 2, 2),
        freq_strides: Sequence[int] = (1, 2, 2, 2),
        block: str = "basic",
        stem_channels: int = 32,
        time_subsampling: int = 4,
        output_dim: int = 256,
        big_little: bool = False,
        alpha: int = 2,
        beta: int = 4,
        bl_stages: int = 3,
        merge: str = "nearest",
        cardinality: int = 1,
        base_width: int = 64,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        _check_subsampling(time_subsampling)
        if not len(widths) == len(blocks) == len(freq_strides):
            raise UserError("widths, blocks and freq_strides need one entry per stage, got "
                            f"{len(widths)}, {len(blocks)} and {len(freq_strides)}")
        self.time_subsampling = time_subsampling
        t1, t2 = {1: (1, 1), 2: (2, 1), 4: (2, 2)}[time_subsampling]
        self.stem = nn.Sequential(
            nn.Conv2d(1, stem_channels, 3, stride=(1, t1), padding=1, bias=False),
            nn.BatchNorm2d(stem_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(stem_channels, stem_channels, 3, stride=(1, t2), padding=1, bias=False),
            nn.BatchNorm2d(stem_channels),
            nn.ReLU(inplace=True),
        )
        if big_little and freq_strides[0] != 1:
            raise UserError("a Big-Little ResNetAM needs freq_strides[0] == 1")
        stages: list[nn.Module] = []
        cin, freq = stem_channels, num_mel_bins
        grouped = dict(cardinality=cardinality, base_width=base_width)
        n_bl = min(bl_stages, len(widths)) if big_little else 0
        for i, (width, n, fs) in enumerate(zip(widths, blocks, freq_strides, strict=True)):
            if i < n_bl:
                # As in the official bL-ResNet: a bL stage's Little branch runs at the
                # resolution of the baseline's stage i and its fusion block applies the
                # stride of the baseline's stage i + 1 (when that stage is bL too).
                stride = freq_strides[i + 1] if i + 1 < n_bl else 1
                stages.append(BigLittleModule(
                    cin, width, n, alpha=alpha, beta=beta, stride=(stride, 1),
                    big_stride=(2, 1), block=block, merge=merge, **grouped))
            else:
                stride = fs
                stages.append(make_stage(block, cin, width, n, stride=(fs, 1), **grouped))
            cin = width
            freq = math.ceil(freq / stride)  # a stride-s 3x3 conv with padding 1
        self.stages = nn.Sequential(*stages)
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(cin * freq, output_dim)
        self._output_dim = output_dim
        init_weights(self)
        self._padding_mask = PaddingMask(self, time_dim=-1)

    def output_size(self) -> int:
        return self._output_dim

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        with self._padding_mask(lengths, feats.shape[1], self.time_subsampling):
            x = self.stages(self.stem(feats.transpose(1, 2).unsqueeze(1)))  # (B, C, F', T')
        b, c, f, t = x.shape
        x = x.permute(0, 3, 1, 2).reshape(b, t, c * f)
        out_lengths = subsampled_lengths(lengths, self.time_subsampling)
        return _zero_padding(self.proj(self.dropout(x)), out_lengths), out_lengths


class _TCSConv(nn.Sequential):
    """Time-channel separable conv: depthwise (k) over time, then pointwise, then BN."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv1d(cin, cin, kernel, stride=stride, padding=kernel // 2, groups=cin,
                      bias=False),
            nn.Conv1d(cin, cout, 1, bias=False),
            nn.BatchNorm1d(cout),
        )


# Its forward is Sequential's, so its pointwise conv's output goes straight to the BN.
register_fuse_pairs(_TCSConv, (("1", "2"),))


class _QuartzBlock(nn.Module):
    """``repeats`` TCS sub-blocks; the residual (1x1 conv + BN) joins before the last ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, repeats: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            _TCSConv(cin if i == 0 else cout, cout, kernel) for i in range(repeats))
        self.residual = nn.Sequential(nn.Conv1d(cin, cout, 1, bias=False), nn.BatchNorm1d(cout))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for i, layer in enumerate(self.layers):
            out = layer(out)
            if i == len(self.layers) - 1:
                out = out + self.residual(x)
            out = self.dropout(torch.relu(out))
        return out


class QuartzNet(nn.Module):
    """1-D time-channel-separable convolutional encoder in the style of NeMo's QuartzNet.

    A strided TCS stem (time subsampling), one :class:`_QuartzBlock` per entry of
    ``channels``/``kernels``, then a wide TCS layer and a 1x1 layer to ``output_dim``.
    """

    def __init__(
        self,
        num_mel_bins: int = 40,
        stem_channels: int = 128,
        stem_kernel: int = 33,
        channels: Sequence[int] = (128, 128, 192, 192, 256),
        kernels: Sequence[int] = (33, 39, 51, 63, 75),
        repeats: int = 3,
        final_kernel: int = 87,
        output_dim: int = 256,
        time_subsampling: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        _check_subsampling(time_subsampling)
        if len(channels) != len(kernels):
            raise UserError("channels and kernels need one entry per block")
        if any(k % 2 == 0 for k in (stem_kernel, final_kernel, *kernels)):
            raise UserError("QuartzNet kernel sizes must be odd (symmetric padding)")
        self.time_subsampling = time_subsampling
        self.stem = nn.Sequential(
            _TCSConv(num_mel_bins, stem_channels, stem_kernel, stride=time_subsampling),
            nn.ReLU(inplace=True))
        blocks, cin = [], stem_channels
        for cout, k in zip(channels, kernels, strict=True):
            blocks.append(_QuartzBlock(cin, cout, k, repeats, dropout))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.final = nn.Sequential(
            _TCSConv(cin, cin, final_kernel), nn.ReLU(inplace=True),
            nn.Conv1d(cin, output_dim, 1, bias=False), nn.BatchNorm1d(output_dim),
            nn.ReLU(inplace=True))
        self._output_dim = output_dim
        init_weights(self, zero_last_bn=False)
        self._padding_mask = PaddingMask(self, time_dim=-1)

    def output_size(self) -> int:
        return self._output_dim

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        with self._padding_mask(lengths, feats.shape[1], self.time_subsampling):
            x = self.final(self.blocks(self.stem(feats.transpose(1, 2))))  # (B, D, T')
        # A stride-s conv with odd kernel k and padding k // 2 gives ceil(L / s) frames.
        out_lengths = torch.div(lengths + self.time_subsampling - 1, self.time_subsampling,
                                rounding_mode="floor")
        return _zero_padding(x.transpose(1, 2), out_lengths), out_lengths


class ConformerEncoder(nn.Module):
    """torchaudio's Conformer behind a 2-D convolutional subsampling front (ESPnet style).

    The front is two 3x3 convolutions (stride 2 in time and frequency for
    ``time_subsampling=4``; the second with stride 1 for 2), ReLU, then a linear layer to
    ``d_model``. ``pos_enc="rel"`` (default) gives every layer's self-attention relative
    positional encoding as ESPnet and icefall do
    (:class:`~blspeech.models.rel_attention.RelPositionMultiheadAttention`); ``"none"`` keeps
    torchaudio's attention, which knows no positions.
    """

    def __init__(
        self,
        num_mel_bins: int = 40,
        d_model: int = 144,
        num_heads: int = 4,
        ffn_dim: int = 576,
        num_layers: int = 6,
        conv_kernel: int = 31,
        subsampling_channels: int = 144,
        time_subsampling: int = 4,
        dropout: float = 0.1,
        pos_enc: str = "rel",
    ) -> None:
        super().__init__()
        from torchaudio.models import Conformer

        if pos_enc not in ("rel", "none"):
            raise UserError(f"pos_enc must be 'rel' or 'none', got {pos_enc!r}")
        if time_subsampling not in (2, 4):
            raise UserError(f"ConformerEncoder supports time_subsampling 2 or 4, "
                            f"got {time_subsampling}")
        self.time_subsampling = time_subsampling
        s2 = 2 if time_subsampling == 4 else 1
        c = subsampling_channels
        self.subsample = nn.Sequential(
            nn.Conv2d(1, c, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, stride=(s2, 2), padding=1), nn.ReLU(inplace=True))
        freq = math.ceil(math.ceil(num_mel_bins / 2) / 2)
        self.proj = nn.Linear(c * freq, d_model)
        self.conformer = Conformer(input_dim=d_model, num_heads=num_heads, ffn_dim=ffn_dim,
                                   num_layers=num_layers, depthwise_conv_kernel_size=conv_kernel,
                                   dropout=dropout)
        if pos_enc == "rel":
            for layer in self.conformer.conformer_layers:
                layer.self_attn = RelPositionMultiheadAttention(d_model, num_heads, dropout)
        self._output_dim = d_model
        self._front_mask = PaddingMask(self.subsample, time_dim=-2)
        self._conformer_mask = PaddingMask(self.conformer, time_dim=-1)

    def output_size(self) -> int:
        return self._output_dim

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        with self._front_mask(lengths, feats.shape[1], self.time_subsampling):
            x = self.subsample(feats.unsqueeze(1))  # (B, C, T', F')
        b, c, t, f = x.shape
        x = self.proj(x.permute(0, 2, 1, 3).reshape(b, t, c * f))
        out_lengths = subsampled_lengths(lengths, self.time_subsampling).clamp(min=1)
        if self._conformer_mask.static:
            # Export (see make_exportable): no slice to the longest utterance, whose size
            # is data; torchaudio's forward builds its attention mask with .item(), so its
            # layers run here with a mask as long as x.
            padding = (torch.arange(x.shape[1], device=x.device)[None, :]
                       >= out_lengths[:, None])
            with self._conformer_mask(out_lengths, x.shape[1], 1):
                out = x.transpose(0, 1)
                for layer in self.conformer.conformer_layers:
                    out = layer(out, padding)
                out = out.transpose(0, 1)
            return _zero_padding(out, out_lengths), out_lengths
        # torchaudio's Conformer wants no frames past the longest utterance.
        x = x[:, : int(out_lengths.max())]
        with self._conformer_mask(out_lengths, x.shape[1], 1):
            out, out_lengths = self.conformer(x, out_lengths)
        return _zero_padding(out, out_lengths), out_lengths


def resnet_am(**kwargs: Any) -> ResNetAM:
    return ResNetAM(**kwargs)


def quartznet(**kwargs: Any) -> QuartzNet:
    return QuartzNet(**kwargs)


def conformer(**kwargs: Any) -> ConformerEncoder:
    return ConformerEncoder(**kwargs)


# Size presets. "tiny": tests; "mini": the telephony_mini demo; "small": a few hours of
# speech on a CPU or one GPU; "swbd": Switchboard-300h size. The bL model of a preset
# differs from its baseline only in big_little=True (same widths, depths, stem and
# projection).
_RESNET_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(widths=[16, 32, 48, 64], blocks=[2, 2, 2, 2], stem_channels=16, output_dim=64),
    # bL in all four stages and a Little branch of a quarter of the width (alpha 4, the
    # paper uses 2): 0.62x the baseline's FLOPs. These layers are so narrow that per-layer
    # work, not FLOPs, sets the CPU time, and alpha 4 narrows the gap between the two
    # (telephony_mini README, "Training speed").
    "mini": dict(widths=[24, 32, 48, 64], blocks=[3, 3, 3, 2], stem_channels=16,
                 output_dim=128, bl_stages=4, alpha=4),
    "small": dict(widths=[32, 64, 96, 128], blocks=[3, 3, 3, 2], stem_channels=32,
                  output_dim=256),
    "swbd": dict(widths=[64, 128, 256, 512], blocks=[4, 6, 8, 3], stem_channels=64,
                 output_dim=1024),
}
_RESNET_COMMON = dict(num_mel_bins=40, freq_strides=[1, 2, 2, 2], block="basic",
                      time_subsampling=4, alpha=2, beta=4, bl_stages=3, merge="nearest",
                      cardinality=1, base_width=64, dropout=0.1)
_QUARTZ_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(stem_channels=32, channels=[32, 32, 48], kernels=[11, 13, 15], repeats=2,
                 final_kernel=17, output_dim=64),
    "mini": dict(stem_channels=96, channels=[96, 96, 128, 128, 160],
                 kernels=[33, 39, 51, 63, 75], repeats=2, final_kernel=87, output_dim=192),
    "small": dict(stem_channels=128, channels=[128, 128, 192, 192, 256],
                  kernels=[33, 39, 51, 63, 75], repeats=3, final_kernel=87, output_dim=256),
    "swbd": dict(stem_channels=256, channels=[256, 256, 256, 512, 512],
                 kernels=[33, 39, 51, 63, 75], repeats=5, final_kernel=87, output_dim=1024),
}
_CONFORMER_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(d_model=64, num_heads=2, ffn_dim=128, num_layers=2, conv_kernel=15,
                 subsampling_channels=32),
    "mini": dict(d_model=96, num_heads=4, ffn_dim=384, num_layers=4, conv_kernel=15,
                 subsampling_channels=64),
    "small": dict(d_model=144, num_heads=4, ffn_dim=576, num_layers=6, conv_kernel=31,
                  subsampling_channels=144),
    "swbd": dict(d_model=256, num_heads=4, ffn_dim=1024, num_layers=16, conv_kernel=31,
                 subsampling_channels=256),
}

for _preset, _cfg in _RESNET_PRESETS.items():
    register_model(f"resnet_am_{_preset}", resnet_am, **{**_RESNET_COMMON, **_cfg},
                   big_little=False)
    register_model(f"bl_resnet_am_{_preset}", resnet_am, **{**_RESNET_COMMON, **_cfg},
                   big_little=True)
for _preset, _cfg in _QUARTZ_PRESETS.items():
    register_model(f"quartznet_{_preset}", quartznet, num_mel_bins=40, stem_kernel=33,
                   time_subsampling=2, dropout=0.1, **_cfg)
for _preset, _cfg in _CONFORMER_PRESETS.items():
    register_model(f"conformer_{_preset}", conformer, num_mel_bins=40, time_subsampling=4,
                   dropout=0.1, pos_enc="rel", **_cfg)
# The preset-less names are the "small" presets.
register_model("resnet_am", resnet_am, **_RESNET_COMMON, **_RESNET_PRESETS["small"],
               big_little=False)
register_model("bl_resnet_am", resnet_am, **_RESNET_COMMON, **_RESNET_PRESETS["small"],
               big_little=True)
