"""Bundles: one file with everything needed to run a trained acoustic model elsewhere.

A bundle holds the front-end settings (:class:`~blspeech.frontend.features.LogMel` options), the
CMVN statistics, the tokenizer and text normalizer, the model config and weights, and the
decoding settings. :func:`make_bundle` writes one from a ``blspeech train`` checkpoint;
:func:`load_bundle` reads it into a :class:`Bundle`::

    >>> import blspeech
    >>> asr = blspeech.load_bundle("exp/bl_resnet_am_mini/final.bundle")   # doctest: +SKIP
    >>> asr.transcribe("call.wav")                                          # doctest: +SKIP
    'please hold the line'
    >>> feats, frames = asr.features(torch.from_numpy(samples))             # doctest: +SKIP
    >>> enc, enc_lengths = asr.encode(feats, frames)  # (B, T', D) # doctest: +SKIP

The file is a ``torch.save`` archive of tensors and plain Python values only, read with
``torch.load(weights_only=True)``: loading one runs no code from it. A file that is not a
bundle (another torch file, a checkpoint, something corrupt or truncated) is rejected with
one message naming it.

Long recordings (over ``chunk_frames`` feature frames, 20 s by default) go through the
model in overlapping chunks sized by its receptive field (:mod:`blspeech.inference.chunked`), which
gives the same outputs as one pass with memory that does not grow with the length; the
Conformer, whose attention sees the whole recording, always runs in one pass.

Decoding follows the model's head: greedy CTC for CTC models, the token-loop Viterbi
search for hybrid models of the token topology (with the prior scale and insertion penalty
stored at bundling time). Hybrid models over a Kaldi tree's pdfs have no tokenizer here:
:meth:`Bundle.transcribe` refuses them, :meth:`Bundle.log_probs` still works.
"""

from __future__ import annotations

import io
import os
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from blspeech.errors import UserError
from blspeech.io.checkpoint import load_reason, refused_objects
from blspeech.models.rel_attention import uses_self_attention

#: The ``format`` entry that marks a file as a bundle, and the layout version.
FORMAT = "blspeech-bundle"
VERSION = 1
SUFFIX = ".bundle"


class Normalize(torch.nn.Module):
    """CMVN of a bundle: the training data's global statistics (``cmvn``), nothing
    (``mode`` none), or each utterance's own statistics (models trained with per-speaker or
    per-utterance CMVN: a speaker's stats are not known for one recording). Tensor ops
    only, so :mod:`blspeech.inference.export` traces it as it is."""

    def __init__(self, mode: str, cmvn: torch.nn.Module | None, norm_vars: bool) -> None:
        super().__init__()
        self.mode = mode
        self.cmvn = cmvn
        self.norm_vars = bool(norm_vars)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.cmvn is not None:
            return self.cmvn(feats, lengths)
        valid = torch.arange(feats.shape[1], device=feats.device)[None] < lengths[:, None]
        if self.mode == "none":
            return feats * valid[..., None]
        w = valid[..., None].to(feats.dtype)
        n = w.sum(1, keepdim=True).clamp(min=1)
        mean = (feats * w).sum(1, keepdim=True) / n
        out = feats - mean
        if self.norm_vars:
            var = ((out * w) ** 2).sum(1, keepdim=True) / n
            out = out / var.clamp(min=1e-20).sqrt()
        return out * w


@dataclass
class Word:
    """A recognized word with its time in the audio (seconds)."""

    word: str
    start: float
    duration: float


class Bundle:
    """A loaded bundle: ``frontend``, ``cmvn``, ``model``, ``tokenizer``, ``normalizer``.

    ``model`` is the acoustic model (:class:`~blspeech.models.asr.CTCModel` or
    ``HybridModel``) in eval mode with its trained modules (BatchNorm not folded, so it can
    be fine-tuned); ``model.encoder`` is the bare encoder. ``frontend`` is a
    :class:`~blspeech.frontend.features.LogMel` (dither off), ``cmvn`` a
    :class:`~blspeech.frontend.features.CMVN` with the training data's global statistics or None.
    """

    def __init__(self, entries: Mapping[str, Any], path: str = "",
                 device: str | torch.device = "cpu") -> None:
        from blspeech.devices import resolve_device
        from blspeech.frontend.features import CMVN, LogMel
        from blspeech.models.asr import acoustic_model_from_config
        from blspeech.text.tokenizers import TextNormalizer, tokenizer_from_dict

        self.path = path
        self.device = resolve_device(device)
        self.entries = dict(entries)
        self.model = acoustic_model_from_config(dict(entries["model_config"]))
        self.model.load_state_dict(entries["model"])
        self.model.eval().to(self.device)
        frontend = dict(entries["frontend"], dither=0.0)  # deterministic features
        self.frontend = LogMel(**frontend).eval().to(self.device)
        cmvn = entries["cmvn"]
        self.cmvn_mode = cmvn["mode"]
        self.cmvn = None
        if cmvn["mode"] == "global":
            self.cmvn = CMVN.from_stats(cmvn["stats"].numpy(), norm_vars=cmvn["norm_vars"])
            self.cmvn.to(self.device)
        self.norm_vars = bool(cmvn.get("norm_vars", True))
        self._normalize = Normalize(self.cmvn_mode, self.cmvn, self.norm_vars)
        tok = entries.get("tokenizer")
        self.tokenizer = None if tok is None else tokenizer_from_dict(tok)
        norm = entries.get("normalizer")
        self.normalizer = None if norm is None else TextNormalizer(**norm)
        self.decoding = dict(entries.get("decoding") or {})
        #: Recordings longer than this many feature frames run in chunks (None: never).
        self.chunk_frames: int | None = None if self._attends_globally() else 2000

    @property
    def global_cmvn(self) -> torch.nn.Module | None:
        """The training data's global CMVN (as on a loaded checkpoint), or None."""
        return self.cmvn

    def _attends_globally(self) -> bool:
        return uses_self_attention(self.model)

    def __repr__(self) -> str:
        enc = self.model.config["encoder"]["name"]
        return (f"Bundle({self.path!r}, encoder={enc}, head={self.model.config['head']}, "
                f"sample_rate={self.sample_rate})")

    @property
    def sample_rate(self) -> int:
        return int(self.frontend.sample_rate)

    @property
    def is_hybrid(self) -> bool:
        return self.model.config["head"] == "hybrid"

    @property
    def frame_seconds(self) -> float:
        """Seconds per model output frame."""
        return self.frontend.config()["frame_shift_ms"] / 1000.0 * self.model.time_subsampling

    # -- the pipeline, one step at a time

    def features(self, audio: torch.Tensor, lengths: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel features of ``audio`` (``(N,)`` or ``(B, N)`` float samples in [-1, 1] at
        :attr:`sample_rate`) as in training: ``(B, T, F)`` and frames per row."""
        audio = torch.as_tensor(audio, dtype=torch.float32, device=self.device)
        if audio.dim() == 1:
            audio = audio[None]
        if lengths is None:
            lengths = torch.full((audio.shape[0],), audio.shape[1], dtype=torch.long)
        with torch.inference_mode():
            return self.frontend(audio, lengths.to(self.device))

    def normalize(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """CMVN as in training (see :class:`Normalize`). Padded frames stay 0."""
        return self._normalize(feats.to(self.device), lengths.to(self.device))

    def encode(self, feats: torch.Tensor, lengths: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder outputs ``(B, T', D)`` and lengths for log-mel ``feats`` as
        :meth:`features` makes them (CMVN is applied here)."""
        with torch.inference_mode():
            return self.model.encoder(self.normalize(feats, lengths), lengths.to(self.device))

    def log_probs(self, feats: torch.Tensor, lengths: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """The head's per-frame log-probabilities (CTC tokens or hybrid pdf posteriors)."""
        with torch.inference_mode():
            out, out_lengths = self.model(self.normalize(feats, lengths),
                                          lengths.to(self.device))
        return out.float(), out_lengths

    # -- transcription

    def _decode(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[Any]:
        from blspeech.decoding.ctc import greedy_batch
        from blspeech.inference.decode import viterbi_searcher

        if self.tokenizer is None:
            raise UserError(f"{self.path}: a hybrid model over Kaldi pdfs has no tokenizer; "
                            "decode its log_probs with a Kaldi graph")
        if not self.is_hybrid:
            return greedy_batch(log_probs.cpu(), lengths.cpu())
        search = viterbi_searcher(self.model, float(self.decoding.get("insertion_penalty", 0.0)),
                                  float(self.decoding.get("prior_scale", 1.0)))
        return search(log_probs, lengths)

    def _load_audio(self, item: Any, sample_rate: int | None) -> torch.Tensor:
        if isinstance(item, str | os.PathLike):
            from blspeech.io.audio import read_audio

            audio, _ = read_audio(os.fspath(item), self.sample_rate, allow_commands=False)
            return torch.from_numpy(np.asarray(audio, dtype=np.float32))
        audio = torch.as_tensor(np.asarray(item, dtype=np.float32))
        if audio.dim() != 1:
            raise UserError(f"audio must be one channel of samples (1-D), got shape "
                            f"{tuple(audio.shape)}")
        rate = self.sample_rate if sample_rate is None else int(sample_rate)
        if rate != self.sample_rate:
            import torchaudio.functional as AF

            audio = AF.resample(audio, rate, self.sample_rate)
        return audio

    def transcribe_words(self, audio: Any, sample_rate: int | None = None
                         ) -> list[list[Word]]:
        """Words with times for each input (see :meth:`transcribe` for the inputs)."""
        from blspeech.decoding.ctc import hypothesis_words, word_times

        items = list(audio) if isinstance(audio, list | tuple) else [audio]
        waves = [self._load_audio(x, sample_rate) for x in items]
        out = []
        for wave in waves:  # one at a time: recordings differ in length
            feats, frames = self.features(wave)
            if int(frames[0]) == 0:
                out.append([])
                continue
            if self.chunk_frames is not None and int(frames[0]) > self.chunk_frames:
                from blspeech.inference.chunked import chunked_forward

                # Features are small (40 floats per 10 ms); the model's activations are what
                # chunking keeps flat. (chunked_forward runs without gradients itself.)
                lp, n = chunked_forward(self.model, self.normalize(feats, frames)[0],
                                        chunk_frames=self.chunk_frames)
                log_probs, lengths = lp.float()[None], torch.tensor([n])
            else:
                log_probs, lengths = self.log_probs(feats, frames)
            hyp = self._decode(log_probs, lengths)[0]
            pieces = self.tokenizer.tokens
            words = word_times([pieces[t] for t in hyp.tokens], hyp.frames,
                               self.frame_seconds)
            spelled = hypothesis_words(hyp, self.tokenizer)
            if len(words) != len(spelled):  # tokenizer spelled differently: no times
                out.append([Word(w, 0.0, 0.0) for w in spelled])
            else:
                out.append([Word(w, round(s, 3), round(d, 3)) for (w, s, d) in words])
        return out

    def transcribe(self, audio: Any, sample_rate: int | None = None) -> str | list[str]:
        """Transcribe one recording or a list of them.

        ``audio``: a file path (wav, flac, SPHERE, ...; resampled to :attr:`sample_rate`),
        or 1-D float samples in [-1, 1] (numpy or tensor) at ``sample_rate`` (default: the
        bundle's), or a list of these (then a list of strings is returned).
        """
        words = self.transcribe_words(audio, sample_rate)
        texts = [" ".join(w.word for w in ws) for ws in words]
        return texts if isinstance(audio, list | tuple) else texts[0]


# --- writing and reading ---------------------------------------------------------------------


def make_bundle(checkpoint: str | os.PathLike, out: str | os.PathLike, *,
                frontend: Mapping[str, Any] | None = None, prior_scale: float | None = None,
                insertion_penalty: float | None = None) -> dict[str, Any]:
    """Write a bundle from a ``blspeech train`` checkpoint (atomically); returns a summary.

    ``frontend`` (LogMel options) is needed only when the checkpoint records none (models
    trained on features made outside blspeech). ``prior_scale`` / ``insertion_penalty``
    set the Viterbi search of token-topology hybrid models (defaults 1.0 and 0.0).
    """
    from blspeech.frontend.features import LogMel
    from blspeech.inference.model import load_acoustic_model
    from blspeech.io.checkpoint import load_checkpoint
    from blspeech.io.fileio import atomic_write

    path = os.fspath(checkpoint)
    am = load_acoustic_model(path, fuse_bn=False)  # validates the checkpoint
    fe = dict(frontend) if frontend is not None else dict(am.frontend)
    if not fe or "sample_rate" not in fe:
        raise UserError(f"{path} records no front-end with a sample rate (its features were "
                        "made outside blspeech); pass the LogMel settings, e.g. "
                        "--frontend data/train/conf/fbank.yaml")
    try:
        fe = LogMel(**fe).config()
    except (TypeError, ValueError) as e:
        raise UserError(f"bad front-end settings: {e}") from e
    if am.feature_dim is not None and LogMel(**fe).feature_dim != am.feature_dim:
        raise UserError(f"the front-end gives {LogMel(**fe).feature_dim} features but the "
                        f"model takes {am.feature_dim}")
    if (prior_scale is not None or insertion_penalty is not None) and not am.is_hybrid:
        raise UserError("--prior-scale and --insertion-penalty are for hybrid models")
    ckpt = load_checkpoint(path)
    decoding: dict[str, Any] = {"method": "viterbi" if am.is_hybrid else "greedy"}
    if am.is_hybrid:
        decoding.update(prior_scale=1.0 if prior_scale is None else float(prior_scale),
                        insertion_penalty=0.0 if insertion_penalty is None
                        else float(insertion_penalty))
    entries = {
        "format": FORMAT, "version": VERSION,
        "model_config": ckpt["model_config"], "model": ckpt["model"], "frontend": fe,
        "cmvn": {"mode": am.cmvn, "stats": am.cmvn_stats, "norm_vars": am.norm_vars},
        "tokenizer": ckpt["tokenizer"], "normalizer": ckpt["normalizer"],
        "decoding": decoding,
        "source": {"checkpoint": os.path.abspath(path), "created": time.strftime(
            "%Y-%m-%dT%H:%M:%S%z"), "epoch": ckpt.get("epoch"), "metrics": ckpt.get("metrics")},
    }
    Bundle(entries, path=os.fspath(out))  # it must load before it is written
    buf = io.BytesIO()
    torch.save(entries, buf)
    out = os.fspath(out)
    if os.path.dirname(out):
        os.makedirs(os.path.dirname(out), exist_ok=True)
    with atomic_write(out, "wb") as f:
        f.write(buf.getvalue())
    return {"bundle": out, "bytes": len(buf.getvalue()),
            "encoder": ckpt["model_config"]["encoder"]["name"],
            "head": ckpt["model_config"]["head"], "sample_rate": fe["sample_rate"],
            "decoding": decoding}


_REQUIRED = ("model_config", "model", "frontend", "cmvn", "tokenizer", "normalizer")


def load_bundle(path: str | os.PathLike, device: str | torch.device = "cpu") -> Bundle:
    """Read a bundle written by :func:`make_bundle` (``blspeech make-bundle``).

    Safe: ``torch.load(weights_only=True)`` only builds tensors and plain values. Raises
    :class:`UserError` naming the file for a missing, foreign, corrupt or inconsistent one.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"bundle {path} not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols
            entries = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # code or foreign objects, truncated, not a torch file at all
        # Never torch's own advice to load it with weights_only=False (see load_error).
        why = ("it holds Python objects other than tensors and plain values, which may be "
               "unsafe to load; refused (nothing in it was run)" if refused_objects(e)
               else load_reason(e))
        raise UserError(f"{path} is not a readable blspeech bundle: {why}") from e
    if not isinstance(entries, Mapping) or entries.get("format") != FORMAT:
        what = ("a blspeech training checkpoint; make a bundle with 'blspeech make-bundle "
                f"{path} OUT{SUFFIX}'" if isinstance(entries, Mapping)
                and "optimizer" in entries else "not a blspeech bundle")
        raise UserError(f"{path}: {what}")
    if entries.get("version") != VERSION:
        raise UserError(f"{path}: bundle version {entries.get('version')!r}; this blspeech "
                        f"reads version {VERSION}")
    missing = [k for k in _REQUIRED if k not in entries]
    if missing:
        raise UserError(f"{path}: incomplete bundle, no {', '.join(missing)}")
    try:
        return Bundle(entries, path=path, device=device)
    except UserError:
        raise
    except Exception as e:  # weights that do not fit the config, bad settings
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"{path}: inconsistent bundle: {first[:200]}") from e


__all__ = ["Bundle", "Normalize", "Word", "load_bundle", "make_bundle"]
