"""Chunked inference over long recordings: the outputs of one full-utterance pass, in pieces.

A convolutional encoder's output frame depends on a fixed window of input frames around it
(its receptive field, :func:`receptive_field`). :func:`chunked_forward` cuts the time axis
into chunks of ``chunk_frames`` central frames, feeds each with enough real context on both
sides to cover that window, and keeps only the central output frames: the result equals
``model(feats[None], lengths)`` on the whole recording (up to float rounding; bit for bit on
the CPU in our checks), while memory holds one chunk's activations at a time, whatever the
recording's length. :func:`iter_chunked` yields the outputs chunk by chunk, for callers that
do not want even those to accumulate.

At the recording's true start and end a chunk simply stops there, so the encoder pads it
with the same zeros as the full pass does. Chunks start on a multiple of the encoder's time
subsampling, so every stride-2 layer samples the same frames as in the full pass (output
frame ``t`` is computed around input frame ``s * t``).

Features can be computed whole (60 minutes of 40 log-mel bins at 100 frames/s are 8.6 MB,
a fraction of one default chunk's working set, about 45 MB for resnet_am_mini) or a chunk at
a time from the waveform with :class:`LogMelFrames`, which gives the same frames as the full
waveform's features (``benchmarks/long_audio.py`` measures both ways of inference).

The Conformer's self-attention looks at the whole utterance: no chunking reproduces its
full-utterance output, and :func:`receptive_field` (so :func:`chunked_forward`) refuses it.

Example:
    >>> import torch
    >>> from blspeech.models import build_model
    >>> from blspeech.models.asr import CTCModel
    >>> model = CTCModel(build_model("resnet_am_tiny"), vocab_size=30).eval()
    >>> feats = torch.randn(1001, 40)
    >>> out, frames = chunked_forward(model, feats, chunk_frames=200)
    >>> with torch.inference_mode():
    ...     full, lengths = model(feats[None], torch.tensor([1001]))
    >>> out.shape, frames, bool((out - full[0]).abs().max() < 1e-4)
    (torch.Size([251, 30]), 251, True)
"""

from __future__ import annotations

import copy
import math
import weakref
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch
from torch import nn

from blspeech.errors import UserError
from blspeech.models.rel_attention import uses_self_attention

#: Central frames per chunk, at least: 20 s at a 10 ms frame shift.
DEFAULT_CHUNK_FRAMES = 2000
#: Default chunks are at least this many times the context they read on both sides, so
#: context costs at most 1/4 more work (QuartzNet's fields are 6-14 s wide).
CONTEXT_SHARE = 4
#: The longest probe :func:`receptive_field` runs before calling a field unbounded.
MAX_PROBE_FRAMES = 1 << 15

_FIELDS: weakref.WeakKeyDictionary[nn.Module, tuple[int, int]] = weakref.WeakKeyDictionary()


class FrameSource(Protocol):
    """Features that can be read a slice of frames at a time, as ``(n, F)`` tensors."""

    def __len__(self) -> int: ...

    def __getitem__(self, frames: slice) -> torch.Tensor: ...


class Chunk(NamedTuple):
    """One model call: input frames ``[start, end)``; output frames ``[keep_start, keep_end)``
    (indices of the full pass's output) are kept."""

    start: int
    end: int
    keep_start: int
    keep_end: int


def _encoder(model: nn.Module) -> nn.Module:
    # An acoustic model's head is per-frame (linear + log-softmax): only the encoder mixes
    # frames, and its outputs (unlike log-probabilities) suit the probe below.
    return getattr(model, "encoder", model)


def _subsampling(model: nn.Module) -> int:
    return int(getattr(model, "time_subsampling", 1))


def _refuse_global(encoder: nn.Module) -> None:
    if uses_self_attention(encoder):
        raise UserError(f"{type(encoder).__name__} uses self-attention over the whole "
                        "utterance, so chunked inference cannot equal full-utterance "
                        "inference; run it on the whole recording or on segments cut at pauses")


def receptive_field(model: nn.Module, *, max_frames: int = MAX_PROBE_FRAMES,
                    feature_dim: int | None = None) -> tuple[int, int]:
    """``(left, right)``: output frame ``t`` depends on input frames ``s*t - left`` to
    ``s*t + right`` (``s`` the model's ``time_subsampling``) and on no others.

    Measured, not derived: a copy of the encoder gets every weight set to ``1 / fan_in``
    (BatchNorms to identity, biases to zero), so that on an all-ones input every activation
    is positive and every partial derivative non-negative: the gradient of output frame
    ``t`` with respect to the input is then non-zero exactly on the input frames that some
    path through the network connects to it (nothing can cancel). This follows the real
    graph (residual branches, Big-Little merges, 'same' padding, strides) without a table of
    layer rules. Perturbing the model's own weights instead could miss paths whose weights
    happen to be zero: a fresh ResNet's last BN in each block has gamma 0, which hides every
    residual branch and would underestimate the field. Gradients are reset to 0/1 after each
    convolution so that deep stacks of wide kernels do not underflow. The probe runs on the
    CPU whatever the model's device (a few seconds for the swbd presets, once per model).

    ``feature_dim`` is the encoder's input size, for encoders that do not record it. The
    result is cached per encoder. Raises UserError for self-attention (Conformer) and
    for fields that reach beyond a ``max_frames`` probe (global pooling, e.g. squeeze-and-
    excitation over time), where chunked inference cannot equal full inference.

    Example:
        >>> from blspeech.models import build_model
        >>> receptive_field(build_model("resnet_am_tiny"))  # 3 + 4 x (16 convs x 1)
        (67, 67)
        >>> receptive_field(build_model("conformer_tiny"))
        Traceback (most recent call last):
        ...
        blspeech.errors.UserError: ConformerEncoder uses self-attention over the whole ...
    """
    encoder = _encoder(model)
    _refuse_global(encoder)
    if encoder in _FIELDS:
        return _FIELDS[encoder]
    s = _subsampling(model)
    dim = _input_dim(encoder) if feature_dim is None else int(feature_dim)
    probe = _positive_copy(encoder)
    frames = 256
    while True:
        field = _probe(probe, frames, s, dim)
        if field is not None:
            break
        if frames >= max_frames:
            raise UserError(f"{type(encoder).__name__}: an output frame depends on input "
                            f"frames more than {frames // 2} frames away (global pooling or "
                            "attention?), so chunked inference cannot equal full-utterance "
                            "inference")
        frames = min(frames * 4, max_frames)
    _FIELDS[encoder] = field
    return field


def _positive_copy(encoder: nn.Module) -> nn.Module:
    """The probe network: float32, eval mode, positive averaging weights, identity BNs."""
    # On the CPU: cuDNN may pick FFT or Winograd convolutions, whose rounding leaves tiny
    # non-zeros where the exact result is 0, which would widen the measured field.
    probe = copy.deepcopy(encoder).eval().float().cpu()
    with torch.no_grad():
        for module in probe.modules():
            for name, p in module.named_parameters(recurse=False):
                if name == "bias":
                    p.zero_()
                else:
                    p.fill_(1.0 / max(1, p[0].numel()) if p.dim() > 1 else 1.0)
                p.requires_grad_(False)
            if isinstance(module, nn.modules.batchnorm._BatchNorm) \
                    and module.running_mean is not None:
                module.running_mean.zero_()
                module.running_var.fill_(1.0)
            if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Linear):
                module.register_forward_hook(_binarize_grad)
    return probe


def _binarize_grad(_module: nn.Module, _inputs: Any, out: torch.Tensor) -> None:
    # Only where a gradient is non-zero matters; keeping its size at 1 avoids underflow.
    if out.requires_grad:
        out.register_hook(lambda g: g.ne(0).to(g.dtype))


def _probe(probe: nn.Module, frames: int, s: int, dim: int) -> tuple[int, int] | None:
    """Field measured on ``frames`` input frames, or None if it reaches the probe's ends."""
    x = torch.ones(1, frames, dim, requires_grad=True)
    left = right = 0
    with torch.enable_grad():
        out, _ = probe(x, torch.tensor([frames]))
        # Two neighbouring output frames, in case the field depends on the frame's parity.
        centre = out.shape[1] // 2
        for t in range(centre, min(centre + 2, out.shape[1])):
            (grad,) = torch.autograd.grad(out[0, t].sum(), x, retain_graph=True)
            hit = grad[0].ne(0).any(dim=-1).nonzero().flatten()
            if len(hit) == 0:
                raise UserError(f"{type(probe).__name__}: output frame {t} depends on no "
                                "input frame; cannot measure its receptive field")
            lo, hi = int(hit[0]), int(hit[-1])
            if lo == 0 or hi == frames - 1:
                return None
            left, right = max(left, s * t - lo), max(right, hi - s * t)
    return left, right


def _input_dim(encoder: nn.Module) -> int:
    config = getattr(encoder, "config", None)  # registry models record their feature size
    if isinstance(config, dict) and "num_mel_bins" in config:
        return int(config["num_mel_bins"])
    first = next((m for m in encoder.modules() if isinstance(m, nn.Conv1d | nn.Conv2d)), None)
    if isinstance(first, nn.Conv1d):  # 1-D encoders convolve features as channels
        return int(first.in_channels)
    raise UserError(f"cannot tell how many features {type(encoder).__name__} takes; pass "
                    "feature_dim to receptive_field")


def default_chunk_frames(context: tuple[int, int], subsampling: int) -> int:
    """:data:`DEFAULT_CHUNK_FRAMES`, or :data:`CONTEXT_SHARE` times the context if longer,
    as a multiple of ``subsampling``.

    Example:
        >>> default_chunk_frames((67, 67), 4), default_chunk_frames((614, 614), 2)
        (2000, 4912)
    """
    frames = max(DEFAULT_CHUNK_FRAMES, CONTEXT_SHARE * (context[0] + context[1]))
    return math.ceil(frames / subsampling) * subsampling


def plan_chunks(num_frames: int, chunk_frames: int, context: tuple[int, int],
                subsampling: int) -> list[Chunk]:
    """The model calls that cover ``num_frames`` input frames, ``chunk_frames`` central
    frames each, with ``context = (left, right)`` frames of receptive field.

    Left context is rounded up to a multiple of ``subsampling`` so that every chunk starts
    on the full pass's subsampling grid; right context is exact.

    Example:
        >>> plan_chunks(1001, 400, (35, 35), 4)  # doctest: +NORMALIZE_WHITESPACE
        [Chunk(start=0, end=432, keep_start=0, keep_end=100),
         Chunk(start=364, end=832, keep_start=100, keep_end=200),
         Chunk(start=764, end=1001, keep_start=200, keep_end=251)]
    """
    if chunk_frames <= 0 or chunk_frames % subsampling:
        raise UserError(f"chunk_frames must be a positive multiple of the model's time "
                        f"subsampling ({subsampling}), got {chunk_frames}")
    left, right = context
    if left < 0 or right < 0:
        raise UserError(f"context must be two frame counts >= 0, got {context}")
    left = math.ceil(left / subsampling) * subsampling
    chunks = []
    for first in range(0, num_frames, chunk_frames):
        last = min(first + chunk_frames, num_frames)
        keep_start, keep_end = first // subsampling, math.ceil(last / subsampling)
        # The last kept output frame is computed around input frame s * (keep_end - 1).
        end = min(num_frames, subsampling * (keep_end - 1) + right + 1)
        chunks.append(Chunk(max(0, first - left), end, keep_start, keep_end))
    return chunks


def _as_source(feats: torch.Tensor | FrameSource) -> torch.Tensor | FrameSource:
    if isinstance(feats, np.ndarray):
        feats = torch.from_numpy(feats)
    if isinstance(feats, torch.Tensor):
        if feats.dim() == 3:
            if feats.shape[0] != 1:
                raise UserError(f"chunked inference takes one recording, (T, F) or (1, T, F) "
                                f"features; got a batch of {feats.shape[0]}")
            feats = feats[0]
        if feats.dim() != 2:
            raise UserError(f"features must be (T, F) or (1, T, F), got shape "
                            f"{tuple(feats.shape)}")
    elif not (hasattr(feats, "__len__") and hasattr(feats, "__getitem__")):
        raise UserError(f"features must be a tensor or a frame source (len() and slicing), "
                        f"got {type(feats).__name__}")
    return feats


def iter_chunked(model: nn.Module, feats: torch.Tensor | FrameSource, *,
                 chunk_frames: int | None = None, device: str | torch.device | None = None,
                 context: tuple[int, int] | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """``(first_frame, outputs)`` pieces of the full pass's outputs, in order.

    For callers that consume outputs as they come (a greedy decoder, a writer), so that not
    even the outputs accumulate. Arguments as for :func:`chunked_forward`.
    """
    source = _as_source(feats)
    total = len(source)
    if total <= 0:
        raise UserError("no feature frames to run the model on")
    if model.training:
        raise UserError("chunked inference needs the model in eval mode (model.eval()): "
                        "dropout and batch statistics differ from chunk to chunk")
    params = next(model.parameters(), None)
    here = params.device if params is not None else torch.device("cpu")
    device = here if device is None else torch.device(device)
    if device.type != here.type or device.index not in (None, here.index):
        raise UserError(f"the model is on {here}, not {device}; move it there first "
                        f"(model.to({str(device)!r}))")
    dtype = params.dtype if params is not None and params.is_floating_point() \
        else torch.float32
    s = _subsampling(model)
    if context is None:
        context = receptive_field(model)
    if chunk_frames is None:
        chunk_frames = default_chunk_frames(context, s)
    for chunk in plan_chunks(total, chunk_frames, context, s):
        x = torch.as_tensor(source[chunk.start:chunk.end])
        x = x.to(device=device, dtype=dtype, non_blocking=True)[None]
        with torch.inference_mode():
            out, lengths = model(x, torch.tensor([x.shape[1]], device=device))
        offset = chunk.start // s
        if chunk.keep_end - offset > int(lengths[0]):
            raise RuntimeError(f"the model gave {int(lengths[0])} output frames for "
                               f"{x.shape[1]} input frames, not ceil(T / {s})")
        yield chunk.keep_start, out[0, chunk.keep_start - offset:chunk.keep_end - offset]


def chunked_forward(model: nn.Module, feats: torch.Tensor | FrameSource, *,
                    chunk_frames: int | None = None,
                    device: str | torch.device | None = None,
                    out_device: str | torch.device | None = None,
                    context: tuple[int, int] | None = None) -> tuple[torch.Tensor, int]:
    """Run ``model`` over one long recording chunk by chunk; ``(outputs (T', V), T')``.

    The outputs equal ``model(feats[None], torch.tensor([T]))[0]`` up to float rounding.

    Args:
        model: an encoder or acoustic model (``model(feats, lengths) -> (out, lengths)``)
            in eval mode, whose receptive field is bounded (see :func:`receptive_field`).
        feats: ``(T, F)`` or ``(1, T, F)`` features, or a :class:`FrameSource` such as
            :class:`LogMelFrames` (only one chunk's features are then ever in memory).
        chunk_frames: central input frames per model call, a multiple of the model's time
            subsampling. Each call also reads the receptive field on both sides, so longer
            chunks waste less work and shorter ones need less memory. Default:
            :func:`default_chunk_frames`.
        device: where the model runs (default: where its parameters are; it must be there).
        out_device: where the outputs are gathered (default: ``device``).
        context: ``(left, right)`` frames to use instead of :func:`receptive_field`'s.
    """
    source = _as_source(feats)
    out: torch.Tensor | None = None
    filled = 0
    for first, piece in iter_chunked(model, source, chunk_frames=chunk_frames, device=device,
                                     context=context):
        if out is None:
            frames = math.ceil(len(source) / _subsampling(model))
            out = piece.new_empty((frames, *piece.shape[1:]),
                                  device=out_device if out_device is not None else piece.device)
        out[first:first + len(piece)] = piece
        filled = first + len(piece)
    if out is None or filled != len(out):
        raise RuntimeError(f"chunks covered {filled} output frames, not ceil(T / s)")
    return out, filled


def chunked_log_probs(model_or_bundle: Any, feats: torch.Tensor | FrameSource, *,
                      chunk_frames: int | None = None,
                      out_device: str | torch.device | None = None) -> tuple[torch.Tensor, int]:
    """Float32 log-probabilities ``(T', V)`` and ``T'`` of one long recording.

    ``model_or_bundle`` is an acoustic model or an object with ``.model`` and ``.device``
    (a :class:`~blspeech.inference.model.Bundle`). A bundle's global
    CMVN is applied to each chunk's features as ``log_probs`` applies it to a batch (it is
    per frame, so chunking does not change it); with per-speaker or per-utterance CMVN,
    pass features already normalized.
    """
    model = getattr(model_or_bundle, "model", model_or_bundle)
    device = getattr(model_or_bundle, "device", None)
    source = _as_source(feats)
    normalize = _bundle_cmvn(model_or_bundle)
    if normalize is not None:
        source = _Mapped(source, normalize)
    out, frames = chunked_forward(model, source, chunk_frames=chunk_frames, device=device,
                                  out_device=out_device)
    return out.float(), frames


def _bundle_cmvn(bundle: Any) -> Callable[[torch.Tensor], torch.Tensor] | None:
    # A Bundle keeps its global CMVN as a blspeech.frontend.features.CMVN.
    cmvn = getattr(bundle, "cmvn", None)
    if cmvn is None:
        return None
    return lambda x: cmvn(x.to(cmvn.mean.device))


class _Mapped:
    """A frame source whose slices go through ``fn``."""

    def __init__(self, source: torch.Tensor | FrameSource,
                 fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.source, self.fn = source, fn

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, frames: slice) -> torch.Tensor:
        return self.fn(torch.as_tensor(self.source[frames]).float())


class LogMelFrames:
    """The log-mel features of a long waveform, computed only for the frames asked for.

    ``LogMelFrames(wave, frontend)[a:b]`` equals ``frontend(wave)[0][0, a:b]`` (up to float
    rounding): with Kaldi's ``snip_edges`` framing, frame ``k`` reads samples ``[k * shift,
    k * shift + win)`` only, so slicing the samples first gives the same frames. ``wave`` is
    anything 1-D with ``len()`` and slicing (a tensor, a numpy array, an ``np.memmap`` of a
    raw file, which then stays on disk); samples in [-1, 1] at the front-end's rate.
    With ``dither`` the features are random, chunked or not: use ``dither=0`` to compare.

    Example:
        >>> import torch
        >>> from blspeech.frontend.features import LogMel
        >>> fbank = LogMel(sample_rate=8000, num_mel_bins=40)
        >>> wave = torch.randn(80000) * 0.1
        >>> frames = LogMelFrames(wave, fbank)
        >>> full = fbank(wave)[0][0]
        >>> len(frames), bool((frames[500:700] - full[500:700]).abs().max() < 1e-4)
        (998, True)
    """

    def __init__(self, wave: Any, frontend: Any) -> None:
        if not frontend.config()["snip_edges"]:
            raise UserError("LogMelFrames needs a front-end with snip_edges=True (frames "
                            "that read only their own samples); compute the features whole")
        if not hasattr(wave, "__len__") or not hasattr(wave, "__getitem__"):
            raise UserError(f"wave must be a 1-D array of samples, got {type(wave).__name__}")
        self.wave, self.frontend = wave, frontend

    def __len__(self) -> int:
        return int(self.frontend.num_frames(len(self.wave)))

    @property
    def feature_dim(self) -> int:
        return int(self.frontend.feature_dim)

    def __getitem__(self, frames: slice) -> torch.Tensor:
        if not isinstance(frames, slice):
            raise TypeError("LogMelFrames takes slices of frames, e.g. frames[100:300]")
        start, stop, step = frames.indices(len(self))
        if step != 1:
            raise ValueError("LogMelFrames slices must be contiguous (step 1)")
        if stop <= start:
            return torch.zeros(0, self.feature_dim)
        shift, win = self.frontend.shift, self.frontend.win
        samples = self.wave[start * shift:(stop - 1) * shift + win]
        return self.frontend.compute([torch.as_tensor(samples)])[0]


__all__ = ["DEFAULT_CHUNK_FRAMES", "Chunk", "FrameSource", "LogMelFrames", "chunked_forward",
           "chunked_log_probs", "default_chunk_frames", "iter_chunked", "plan_chunks",
           "receptive_field"]
