"""Export a bundle's acoustic model to TorchScript or ONNX, with a dynamic time axis.

:func:`export_bundle` (``blspeech export BUNDLE --format torchscript|onnx --output PATH``)
writes one self-contained file that runs without blspeech:

* ``torchscript``: waveform in, log-probabilities out. The front-end
  (:class:`~blspeech.frontend.features.LogMel`), the CMVN of the bundle and the model
  (encoder + head) in one ``torch.jit`` module; only ``torch`` is needed to run it::

      m = torch.jit.load("model.pt")
      log_probs, out_lengths = m(wave, wave_lengths)

  ``wave``: float32 ``(B, N)`` samples in [-1, 1] at the bundle's sample rate (rows padded
  with anything: samples past ``wave_lengths`` are ignored); ``wave_lengths``: int64
  ``(B,)``. Needs ``N`` >= one analysis window (25 ms by default).

* ``onnx``: features in, log-probabilities out: CMVN and the model (not the front-end:
  it is Kaldi's ``compute-fbank-feats``, :meth:`Bundle.features`)::

      sess = onnxruntime.InferenceSession("model.onnx")
      log_probs, out_lengths = sess.run(None, {"feats": feats, "lengths": lengths})

  ``feats``: float32 ``(B, T, F)`` log-mel features *before* CMVN (as
  :meth:`Bundle.features` gives them); ``lengths``: int64 ``(B,)`` valid frames.

* ``sherpa-onnx``: a directory for sherpa-onnx's offline recognizer (the ``onnx`` file as a
  WeNet CTC model, ``tokens.txt`` and the feature settings): :func:`export_sherpa_onnx`.

Both files give ``log_probs`` float32 ``(B, T', V)`` (CTC token log-probabilities, or hybrid pdf
log-posteriors: what :meth:`Bundle.log_probs` returns) and ``out_lengths`` int64 ``(B,)``;
``T'`` is ``T`` over the encoder's time subsampling (rounded up), frames past
``out_lengths`` are zero. ``B`` and ``T`` (``N``) are dynamic. One difference to eager
calls: the time axis follows the input's size, not its longest row (eager
:meth:`Bundle.features` and the Conformer trim to the longest row); equal when the longest
row fills the input.

Encoders: all of blspeech's (``resnet_am*``, ``bl_resnet_am*`` Big-Little, ``quartznet*``,
``conformer*``), CTC and hybrid heads. Both files are CPU graphs (float32).

What export needed, and why:

* **Padding masks.** Encoders zero the padded frames of every convolution's input with
  forward pre-hooks (:class:`~blspeech.models.speech.PaddingMask`) that look the mask up
  in a dict keyed by the input's length and skip masking when no row is padded. Under
  ``torch.jit.trace`` lengths are tensors (dict lookups miss: no masking at all) and under
  ``torch.export`` they are symbols; the skip is a Python branch on data. The masks now have
  a static mode (:func:`~blspeech.models.speech.make_exportable`, applied to a copy): one
  eager pass records each convolution's subsampling level, then every forward builds the
  mask ``arange(T_in) < ceil(lengths / 2**level)`` with tensor ops only (once per level)
  and always applies it. Multiplying unpadded rows by ones changes no number, so outputs
  equal eager mode.
* **Conformer.** Eager mode slices its output to the longest utterance
  (``int(lengths.max())``, baked into a trace as a constant) and torchaudio's ``Conformer``
  builds its attention mask with ``.item()``; in static mode the layers run on all
  ``ceil(T / 4)`` frames with a key-padding mask as long as the input.
* **Front-end.** ``LogMel`` on the CPU loops over rows in Python (``tolist()``); the export
  frames the padded batch with ``unfold`` and a validity mask and reuses ``LogMel``'s
  per-frame arithmetic (which now takes the frame count from ``x.shape[0]``, not
  ``len(x)``, which a trace would freeze).
* **Exporters.** TorchScript: ``torch.jit.trace`` then ``torch.jit.freeze`` (scripting
  would need the hooks and much of the models' Python rewritten in TorchScript's subset);
  the Python decisions left in a trace are fixed per model (the masks' levels, the
  Big-Little merge's upsampling path, chosen from frequency sizes, the CPU mel matmuls).
  ONNX: the ``torch.export``-based exporter (``dynamo=True``, needs ``onnxscript``); the
  older TorchScript-based one (``dynamo=False``) mis-exports the Big-Little merge (an
  in-place add into a view: log-probs off by ~0.1) and freezes the Conformer's attention
  shapes (fails on any other length).
* BatchNorms are folded into their convolutions (:func:`blspeech.models.fuse`).

Every export is checked before the file is written: the saved model is reloaded (TorchScript
with ``torch.jit.load``, ONNX with onnxruntime) and run on inputs of other lengths and batch
sizes than the ones traced, against the eager bundle; ``max_abs_diff`` in the summary is the
largest log-probability difference seen: float32 rounding (folded BatchNorms, other
kernels), 1e-6 to 3e-5 on the tiny test models, up to 8e-5 on larger ones with random
BN statistics whose log-probs reach -80. More than ``CHECK_TOLERANCE`` (plus 1e-5 of the
largest log-probability magnitude) fails the export.

Example:
    >>> summary = export_bundle("final.bundle", "final.onnx", "onnx")    # doctest: +SKIP
    >>> summary["max_abs_diff"] < 1e-4                                   # doctest: +SKIP
    True
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from blspeech.errors import UserError
from blspeech.frontend.features import Normalize

FORMATS = ("torchscript", "onnx", "sherpa-onnx")
#: Encoder classes (``blspeech.models.speech``) export supports.
SUPPORTED_ENCODERS = ("ResNetAM", "QuartzNet", "ConformerEncoder")
#: File suffixes that imply a format when none is given.
SUFFIXES = {".onnx": "onnx", ".pt": "torchscript", ".ts": "torchscript",
            ".torchscript": "torchscript", ".jit": "torchscript"}
#: ONNX opset of the exported files.
OPSET = 20
#: Largest log-probability difference to the eager model the export check accepts.
CHECK_TOLERANCE = 1e-3

#: Inputs and outputs of each format: (name, dtype, shape).
SIGNATURES: dict[str, dict[str, list[tuple[str, str, str]]]] = {
    "torchscript": {
        "inputs": [("wave", "float32", "(B, N)"), ("wave_lengths", "int64", "(B,)")],
        "outputs": [("log_probs", "float32", "(B, T', V)"), ("out_lengths", "int64", "(B,)")],
    },
    "onnx": {
        "inputs": [("feats", "float32", "(B, T, F)"), ("lengths", "int64", "(B,)")],
        "outputs": [("log_probs", "float32", "(B, T', V)"), ("out_lengths", "int64", "(B,)")],
    },
}


# --- export-friendly modules ----------------------------------------------------------------


class FeatsToLogProbs(nn.Module):
    """``(feats (B, T, F), lengths) -> (log_probs (B, T', V), out_lengths)``: CMVN + model."""

    def __init__(self, normalize: Normalize, model: nn.Module) -> None:
        super().__init__()
        self.normalize = normalize
        self.model = model

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        log_probs, out_lengths = self.model(self.normalize(feats, lengths), lengths)
        return log_probs.float(), out_lengths


class WaveFrontend(nn.Module):
    """:class:`~blspeech.frontend.features.LogMel` on a padded batch with tensor ops only.

    ``(wave (B, N), lengths) -> (feats (B, T, F), frames)`` where ``T`` is the frame count
    of ``N`` samples (eager ``LogMel`` gives the longest row's count) and frames past a
    row's ``frames`` are 0; the per-frame arithmetic is ``LogMel``'s own.
    """

    def __init__(self, logmel: nn.Module) -> None:
        super().__init__()
        self.logmel = copy.deepcopy(logmel).cpu().eval()

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        lm = self.logmel
        wave = wave.float()
        n = wave.shape[1]
        lengths = lengths.long().clamp(max=n)
        frames = lm.num_frames(lengths)
        if lm.config()["snip_edges"]:
            strided = wave.unfold(1, lm.win, lm.shift)  # (B, T, win), T from N
            t = strided.shape[1]
        else:
            t = (n + lm.shift // 2) // lm.shift
            strided = lm._reflected_frames(wave, lengths, t)
        valid = torch.arange(t, device=wave.device)[None, :] < frames[:, None]
        feats = lm._chunk_to_feats(strided[valid], None)  # the valid frames, copied
        out = wave.new_zeros((wave.shape[0], t, lm.feature_dim))
        out[valid] = feats
        return out, frames


class WaveToLogProbs(nn.Module):
    """``(wave (B, N), wave_lengths) -> (log_probs, out_lengths)``: front-end + CMVN + model."""

    def __init__(self, frontend: WaveFrontend, feats_model: FeatsToLogProbs) -> None:
        super().__init__()
        self.frontend = frontend
        self.feats_model = feats_model

    def forward(self, wave: torch.Tensor, wave_lengths: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        feats, frames = self.frontend(wave, wave_lengths)
        return self.feats_model(feats, frames)


def exportable_model(bundle: Any, *, waveform: bool) -> nn.Module:
    """The bundle's pipeline as one export-ready CPU module (the bundle is not changed).

    ``waveform=True``: :class:`WaveToLogProbs` (front-end, CMVN, model), else
    :class:`FeatsToLogProbs` (CMVN, model). BatchNorms are folded and the encoder's padding
    masks are static (:func:`~blspeech.models.speech.make_exportable`).
    """
    from blspeech.models import fuse
    from blspeech.models.speech import make_exportable

    encoder = bundle.model.encoder
    name = type(encoder).__name__
    if name not in SUPPORTED_ENCODERS:
        raise UserError(f"{bundle.path}: export supports the {', '.join(SUPPORTED_ENCODERS)} "
                        f"encoders, not {name}")
    model = fuse(copy.deepcopy(bundle.model).cpu().eval())
    make_exportable(model.encoder, _feature_dim(bundle))
    cmvn = None if bundle.cmvn is None else copy.deepcopy(bundle.cmvn).cpu()
    feats_model = FeatsToLogProbs(Normalize(bundle.cmvn_mode, cmvn, bundle.norm_vars),
                                  model).eval()
    if not waveform:
        return feats_model
    return WaveToLogProbs(WaveFrontend(bundle.frontend), feats_model).eval()


def _feature_dim(bundle: Any) -> int:
    return int(bundle.frontend.feature_dim)


# --- inputs for tracing and checking --------------------------------------------------------


def _example_feats(bundle: Any, frames: list[int], total: int | None = None, seed: int = 0
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    t = total if total is not None else max(frames)
    feats = torch.randn(len(frames), t, _feature_dim(bundle), generator=g) * 2.0 + 8.0
    return feats, torch.tensor(frames, dtype=torch.long)


def _example_wave(bundle: Any, seconds: list[float], seed: int = 0
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = [max(1, round(s * bundle.sample_rate)) for s in seconds]
    wave = torch.randn(len(lengths), max(lengths), generator=g) * 0.1
    return wave.clamp(-1, 1), torch.tensor(lengths, dtype=torch.long)


def _eager_feats(bundle: Any, feats: torch.Tensor, lengths: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    out, out_lengths = bundle.log_probs(feats, lengths)
    return out.cpu(), out_lengths.cpu()


def _eager_wave(bundle: Any, wave: torch.Tensor, lengths: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    feats, frames = bundle.features(wave, lengths)
    return _eager_feats(bundle, feats, frames)


#: Check inputs: other batch sizes and lengths than the traced example (2 rows, padded).
_CHECK_FRAMES = ([37], [150, 149, 20], [9, 64])
_CHECK_SECONDS = ([0.37], [1.53, 1.2, 0.21], [0.12, 0.61])


# --- the exporters --------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No tracer / deprecation warnings and no exporter progress lines on stdout."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        yield


def _torchscript_bytes(module: nn.Module, example: tuple[torch.Tensor, ...]) -> bytes:
    with _quiet(), torch.no_grad():
        traced = torch.jit.trace(module, example, check_trace=False)
        traced = torch.jit.freeze(traced.eval())
        buf = io.BytesIO()
        torch.jit.save(traced, buf)
    return buf.getvalue()


def _run_torchscript(data: bytes) -> Any:
    with _quiet():
        loaded = torch.jit.load(io.BytesIO(data), map_location="cpu")

    def run(*inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            out, lengths = loaded(*inputs)
        return out, lengths

    return run


def _require_onnx() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
        import onnxscript  # noqa: F401  (torch.onnx's exporter needs it)
    except ImportError as e:
        raise UserError(f"ONNX export needs the packages onnx, onnxscript and onnxruntime "
                        f"({e.name or e} is missing): pip install 'blspeech[export]'") from None
    return onnx, onnxruntime


def _onnx_bytes(module: nn.Module, example: tuple[torch.Tensor, ...]) -> bytes:
    onnx, _ = _require_onnx()
    dyn = torch.export.Dim.DYNAMIC
    with _quiet(), torch.no_grad():
        program = torch.onnx.export(
            module, example, None, dynamo=True, verbose=False, opset_version=OPSET,
            input_names=["feats", "lengths"], output_names=["log_probs", "out_lengths"],
            dynamic_shapes={"feats": {0: dyn, 1: dyn}, "lengths": {0: dyn}})
    proto = program.model_proto
    _name_dims(proto)
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def _name_dims(proto: Any) -> None:
    """Give the symbolic input/output dims readable names (batch, time, frames)."""
    names: dict[str, str] = {}
    for value, dims in ((proto.graph.input[0], ("batch", "time", None)),
                        (proto.graph.output[0], ("batch", "frames", None))):
        for dim, name in zip(value.type.tensor_type.shape.dim, dims, strict=False):
            if name and dim.dim_param:
                names.setdefault(dim.dim_param, name)
    for value in (*proto.graph.input, *proto.graph.output, *proto.graph.value_info):
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in names:
                dim.dim_param = names[dim.dim_param]


def _run_onnx(data: bytes) -> Any:
    _, ort = _require_onnx()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    sess = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])

    def run(feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out, out_lengths = sess.run(None, {"feats": feats.numpy(), "lengths": lengths.numpy()})
        return torch.from_numpy(out), torch.from_numpy(out_lengths)

    return run


def _check(run: Any, eager: Any, cases: list[tuple[torch.Tensor, torch.Tensor]],
           what: str) -> float:
    """Largest |exported - eager| over ``cases``; raises if shapes or lengths differ."""
    worst, limit = 0.0, CHECK_TOLERANCE
    for inputs in cases:
        want, want_lengths = eager(*inputs)
        got, got_lengths = run(*inputs)
        if got.shape != want.shape or not torch.equal(got_lengths.long(), want_lengths):
            raise UserError(f"the exported {what} model gives shape {tuple(got.shape)}, "
                            f"lengths {got_lengths.tolist()} where the bundle gives "
                            f"{tuple(want.shape)}, {want_lengths.tolist()}")
        if got.numel():
            worst = max(worst, float((got - want).abs().max()))
            limit = max(limit, CHECK_TOLERANCE + 1e-5 * float(want.abs().max()))
    if not worst <= limit:  # also catches NaN
        raise UserError(f"the exported {what} model differs from the bundle by {worst:.3g} "
                        f"(more than {limit:.3g}) on inputs of other lengths")
    return worst


def _check_writable(output: str) -> None:
    """Fail early (before a slow export) when ``output`` cannot be written."""
    if os.path.isdir(output):
        raise UserError(f"output {output} is a directory; give a file name")
    directory = os.path.dirname(os.path.abspath(output))
    try:
        os.makedirs(directory, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".blspeech-export.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UserError(f"cannot write {output}: {e.strerror or e}") from None


def resolve_format(format: str | None, output: str | os.PathLike) -> str:
    """``format`` checked, or the one ``output``'s suffix implies."""
    if format is None:
        suffix = os.path.splitext(os.fspath(output))[1].lower()
        if suffix not in SUFFIXES:
            raise UserError(f"cannot tell the format from {os.fspath(output)!r}; pass "
                            f"--format {' or '.join(FORMATS)}")
        return SUFFIXES[suffix]
    if format not in FORMATS:
        raise UserError(f"unknown format {format!r}; choose {' or '.join(FORMATS)}")
    return format


def export_bundle(bundle: str | os.PathLike | Any, output: str | os.PathLike,
                  format: str | None = None, *, check: bool = True) -> dict[str, Any]:
    """Export ``bundle`` (a path or a loaded :class:`~blspeech.inference.model.Bundle`) to
    ``output``.

    ``format``: ``torchscript`` (waveform in) or ``onnx`` (features in); None picks it from
    ``output``'s suffix (``.onnx``; ``.pt``, ``.ts``). ``sherpa-onnx`` writes a directory
    instead (:func:`export_sherpa_onnx`). The file is written atomically, after
    the exported model was reloaded and compared with the bundle on inputs of other lengths
    (``check``). Returns a summary: output, format, bytes, seconds (export) and
    check_seconds, the model's encoder, head and sizes, inputs, outputs and max_abs_diff.
    Raises :class:`UserError` for a missing or foreign bundle, an unknown format, an
    unwritable output and missing ONNX packages.
    """
    from blspeech.inference.bundle import Bundle, load_bundle
    from blspeech.io.fileio import atomic_write

    output = os.fspath(output)
    fmt = resolve_format(format, output)
    if fmt == "sherpa-onnx":
        return export_sherpa_onnx(bundle, output, check=check)
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle)
    if fmt == "onnx":
        _require_onnx()
    _check_writable(output)
    start = time.perf_counter()
    if fmt == "torchscript":
        module = exportable_model(bundle, waveform=True)
        example = _example_wave(bundle, [1.0, 0.6])
        data = _torchscript_bytes(module, example)
        cases = [_example_wave(bundle, s, seed=i + 1) for i, s in enumerate(_CHECK_SECONDS)]
        run, eager = (_run_torchscript(data) if check else None), _eager_wave
    else:
        module = exportable_model(bundle, waveform=False)
        example = _example_feats(bundle, [101, 57])
        data = _onnx_bytes(module, example)
        cases = [_example_feats(bundle, f, seed=i + 1) for i, f in enumerate(_CHECK_FRAMES)]
        run, eager = (_run_onnx(data) if check else None), _eager_feats
    seconds = time.perf_counter() - start
    diff = None
    if check:
        diff = _check(run, lambda *x: eager(bundle, *x), cases, fmt)
    check_seconds = time.perf_counter() - start - seconds
    try:
        with atomic_write(output, "wb") as f:
            f.write(data)
    except OSError as e:
        raise UserError(f"cannot write {output}: {e.strerror or e}") from None
    sig = SIGNATURES[fmt]
    return {
        "output": output, "format": fmt, "bytes": len(data), "seconds": round(seconds, 2),
        "check_seconds": round(check_seconds, 2),
        "encoder": bundle.model.config["encoder"]["name"], "head": bundle.model.config["head"],
        "sample_rate": bundle.sample_rate, "feature_dim": _feature_dim(bundle),
        "outputs_per_frame": int(bundle.model.head.out_features),
        "time_subsampling": int(bundle.model.time_subsampling),
        "inputs": [f"{n} {d} {s}" for n, d, s in sig["inputs"]],
        "outputs": [f"{n} {d} {s}" for n, d, s in sig["outputs"]],
        "max_abs_diff": diff,
    }


# --- sherpa-onnx ----------------------------------------------------------------------------

#: The sherpa-onnx offline CTC model type the export writes (see :func:`export_sherpa_onnx`).
SHERPA_MODEL_TYPE = "wenet_ctc"
#: Front-end settings sherpa-onnx's feature extractor has fixed (kaldi-native-fbank's
#: defaults; its Python ``FeatureExtractorConfig`` cannot change them) and the values a
#: bundle must have for them. ``scale`` 32768: the wenet model type makes sherpa-onnx scale
#: samples in [-1, 1] to the int16 range, as :class:`~blspeech.frontend.features.LogMel`.
SHERPA_FIXED_FRONTEND = {"frame_length_ms": 25.0, "frame_shift_ms": 10.0, "window": "povey",
                         "preemphasis": 0.97, "remove_dc_offset": True, "use_energy": False,
                         "scale": 32768.0}
#: Files of a sherpa-onnx export directory.
SHERPA_FILES = ("model.onnx", "tokens.txt", "sherpa-onnx.json")


def sherpa_feature_config(bundle: Any) -> dict[str, Any]:
    """Keyword arguments of ``sherpa_onnx.FeatureExtractorConfig`` that reproduce the
    bundle's front-end; raises :class:`UserError` when sherpa-onnx cannot express it.

    Dither is 0 (a bundle computes features without it); ``normalize_samples`` False: the
    wenet model type sets it anyway (samples times 32768, as the bundle's ``scale``).
    """
    cfg = bundle.frontend.config()
    bad = [f"{k} {cfg[k]!r} (sherpa-onnx: {v!r})" for k, v in SHERPA_FIXED_FRONTEND.items()
           if cfg[k] != v]
    if bad:
        raise UserError(f"{bundle.path}: sherpa-onnx cannot compute this bundle's features: "
                        f"its front-end has {', '.join(bad)}, which sherpa-onnx's feature "
                        "extractor cannot change; use --format onnx (features in) instead")
    return {"sampling_rate": int(cfg["sample_rate"]), "feature_dim": int(cfg["num_mel_bins"]),
            "low_freq": float(cfg["low_freq"]), "high_freq": float(cfg["high_freq"]),
            "dither": 0.0, "normalize_samples": False, "snip_edges": bool(cfg["snip_edges"])}


def _sherpa_tokens(bundle: Any) -> str:
    """``tokens.txt`` as sherpa-onnx reads it: ``symbol id`` per line; ``<blank>`` at 0 is
    its CTC blank (it looks for ``<blk>``, ``<eps>``, then ``<blank>``), a leading ``▁``
    becomes a space and the symbols of a hypothesis are concatenated into its text."""
    import re

    tokens = bundle.tokenizer.tokens
    problems = []
    if tokens[bundle.tokenizer.blank_id] != "<blank>" or bundle.tokenizer.blank_id != 0:
        problems.append("the blank is not '<blank>' at id 0")
    for i, tok in enumerate(tokens):
        if not tok or any(c.isspace() for c in tok):
            problems.append(f"token {i} {tok!r} is empty or holds white space")
        elif tok in ("<blk>", "<eps>", "SIL"):  # sherpa-onnx would take it as blank / drop it
            problems.append(f"token {i} is {tok!r}, a name sherpa-onnx reserves")
        elif 3 <= i <= 258 and re.fullmatch(r"<0x[0-9A-F]{2}>", tok):  # read as a byte
            problems.append(f"token {i} {tok!r} looks like a byte-fallback piece")
    if problems:
        raise UserError(f"{bundle.path}: sherpa-onnx cannot read this bundle's tokens: "
                        f"{problems[0]}")
    return "".join(f"{tok} {i}\n" for i, tok in enumerate(tokens))


def _sherpa_metadata(bundle: Any, feat_config: dict[str, Any]) -> dict[str, str]:
    """ONNX metadata_props: what the wenet CTC model type reads (``vocab_size``,
    ``subsampling_factor``) and, for people and tools, the front-end to use."""
    meta = {"model_type": SHERPA_MODEL_TYPE,
            "vocab_size": str(int(bundle.model.head.out_features)),
            "subsampling_factor": str(int(bundle.model.time_subsampling)),
            "comment": "blspeech CTC model: log-mel features (before CMVN) in, token "
                       "log-probabilities out; CMVN is in the graph",
            "encoder": str(bundle.model.config["encoder"]["name"]),
            "cmvn": str(bundle.cmvn_mode)}
    meta.update({k: str(v).lower() if isinstance(v, bool) else str(v)
                 for k, v in feat_config.items()})
    return meta


def _check_output_dir(output: str) -> None:
    if os.path.exists(output) and not os.path.isdir(output):
        raise UserError(f"output {output} is a file; sherpa-onnx export writes a directory "
                        f"({', '.join(SHERPA_FILES)})")
    # Probe the directory itself if it exists, else its parent: a failed export leaves no
    # empty output directory behind.
    target = output if os.path.isdir(output) else os.path.dirname(os.path.abspath(output))
    _check_writable(os.path.join(target, SHERPA_FILES[0]))


def export_sherpa_onnx(bundle: str | os.PathLike | Any, output: str | os.PathLike, *,
                       check: bool = True) -> dict[str, Any]:
    """Write a model directory that sherpa-onnx's offline recognizer runs as a WeNet CTC
    model (``blspeech export BUNDLE --format sherpa-onnx --output DIR``).

    ``DIR/model.onnx``: the ``onnx`` export (log-mel features before CMVN in, CMVN and the
    model in the graph, log-probabilities out) with the metadata the wenet model type reads
    (``vocab_size``, ``subsampling_factor``) and the front-end settings; ``DIR/tokens.txt``
    (:func:`_sherpa_tokens`); ``DIR/sherpa-onnx.json``: ``model_type`` and ``feat_config``,
    the ``sherpa_onnx.FeatureExtractorConfig`` arguments that give the bundle's features.

    Why the WeNet CTC type: of sherpa-onnx's offline CTC types it is the one whose front-end
    equals the bundle's (Kaldi's fbank with samples scaled to the int16 range, no feature
    normalization by sherpa-onnx), and its model interface is the ``onnx`` export's:
    ``(feats (N, T, C) float32, lengths int64) -> (log_probs (N, T', V), lengths int64)``.
    NeMo CTC computes librosa-style features (Hann window, no DC removal, 0 Hz low
    frequency) and may normalize them per utterance; zipformer CTC feeds samples in
    [-1, 1], whose log-mels differ from the bundle's by a constant except where Kaldi's
    log floor is hit (digital silence).

    What sherpa-onnx cannot express: a bundle whose front-end has other frame length or
    shift, window, pre-emphasis, DC removal, energy or sample scale than Kaldi's defaults
    (:data:`SHERPA_FIXED_FRONTEND`), a hybrid head (pdf posteriors need a Kaldi graph) and
    token sets it would misread (:func:`_sherpa_tokens`): each gives a :class:`UserError`.
    The settings sherpa-onnx can change (sample rate, mel bins, low and high frequency,
    snip_edges) must be passed to it: its ``OfflineRecognizer.from_wenet_ctc`` shortcut
    leaves ``high_freq`` at -400 Hz and ``snip_edges`` off, which differ from blspeech's
    defaults (0, Nyquist; on), so build the recognizer from ``sherpa-onnx.json`` (README).
    Remaining differences: sherpa-onnx dithers its input (Gaussian noise of about one
    16-bit step, whatever its ``dither`` setting says; measured with sherpa-onnx 1.13.8 and
    2.0.1), which bundles do not: digital silence gives log-mels near 4 instead of Kaldi's
    floor of -15.9 and quiet mel bins move by up to ~0.5, so frames where two tokens are
    nearly tied can decode differently (README, ``tests/test_sherpa_onnx.py``). It decodes
    a whole recording at once where a bundle with ``chunk_frames`` splits long ones, and it
    writes ``<unk>`` where sentencepiece writes `` ⁇ ``.

    Returns the ``onnx`` summary with output, format, files and feat_config. The check
    (``check``) compares the ONNX model with the bundle as :func:`export_bundle` does.
    """
    from blspeech.inference.bundle import Bundle, load_bundle
    from blspeech.io.fileio import atomic_write

    output = os.fspath(output)
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle)
    if bundle.is_hybrid or bundle.tokenizer is None:
        raise UserError(f"{bundle.path}: sherpa-onnx runs CTC models over tokens; this "
                        "bundle's hybrid head gives Kaldi pdf posteriors, which need a Kaldi "
                        "decoding graph: use --format onnx and decode them with one")
    feat_config = sherpa_feature_config(bundle)
    tokens = _sherpa_tokens(bundle)
    _require_onnx()
    _check_output_dir(output)
    with tempfile.TemporaryDirectory() as tmp:
        summary = export_bundle(bundle, os.path.join(tmp, "model.onnx"), "onnx", check=check)
        onnx, _ = _require_onnx()
        proto = onnx.load(os.path.join(tmp, "model.onnx"))
    del proto.metadata_props[:]
    for key, value in _sherpa_metadata(bundle, feat_config).items():
        proto.metadata_props.add(key=key, value=value)
    data = proto.SerializeToString()
    settings = {"model_type": SHERPA_MODEL_TYPE, "feat_config": feat_config}
    try:
        os.makedirs(output, exist_ok=True)
        with atomic_write(os.path.join(output, "model.onnx"), "wb") as f:
            f.write(data)
        with atomic_write(os.path.join(output, "tokens.txt")) as f:
            f.write(tokens)
        with atomic_write(os.path.join(output, "sherpa-onnx.json")) as f:
            f.write(json.dumps(settings, indent=2) + "\n")
    except OSError as e:
        raise UserError(f"cannot write {output}: {e.strerror or e}") from None
    summary.update(output=output, format="sherpa-onnx", bytes=len(data),
                   files=[os.path.join(output, n) for n in SHERPA_FILES],
                   model_type=SHERPA_MODEL_TYPE, feat_config=feat_config)
    return summary


__all__ = ["FORMATS", "FeatsToLogProbs", "SUPPORTED_ENCODERS", "WaveFrontend",
           "WaveToLogProbs", "export_bundle", "export_sherpa_onnx", "exportable_model",
           "resolve_format", "sherpa_feature_config"]
