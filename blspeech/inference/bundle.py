"""Bundle files: one file with everything needed to run a trained acoustic model elsewhere.

A bundle file holds the front-end settings (:class:`~blspeech.frontend.features.LogMel`
options), the CMVN statistics, the tokenizer and text normalizer, the model config and
weights, and the decoding settings. :func:`make_bundle` writes one from a ``blspeech train``
checkpoint; :func:`load_bundle` reads it into a :class:`~blspeech.inference.model.Bundle`,
the same object :func:`~blspeech.inference.model.load_acoustic_model` makes of a
checkpoint::

    >>> import blspeech
    >>> asr = blspeech.load_bundle("exp/bl_resnet_am_mini/final.bundle")   # doctest: +SKIP
    >>> asr.transcribe("call.wav")                                          # doctest: +SKIP
    'please hold the line'
    >>> feats, frames = asr.features(torch.from_numpy(samples))             # doctest: +SKIP
    >>> enc, enc_lengths = asr.encode(feats, frames)  # (B, T', D) # doctest: +SKIP

The file is a ``torch.save`` archive of tensors and plain Python values only, read with
``torch.load(weights_only=True)``: loading one runs no code from it. A file that is not a
bundle (another torch file, a checkpoint, something corrupt or truncated) is rejected with
one message naming it. A loaded bundle keeps its BatchNorms unfolded, so it can be
fine-tuned.

Long recordings (over ``chunk_frames`` feature frames, 20 s by default) go through the
model in overlapping chunks sized by its receptive field (:mod:`blspeech.inference.chunked`),
which gives the same outputs as one pass with memory that does not grow with the length;
the Conformer, whose attention sees the whole recording, always runs in one pass.

Decoding follows the model's head: greedy CTC for CTC models, the token-loop Viterbi
search for hybrid models of the token topology (with the prior scale and insertion penalty
stored at bundling time). Hybrid models over a Kaldi tree's pdfs have no tokenizer here:
``Bundle.transcribe`` refuses them, ``Bundle.log_probs`` still works.
"""

from __future__ import annotations

import io
import os
import time
import warnings
from collections.abc import Mapping
from typing import Any

import torch

from blspeech.errors import UserError
from blspeech.inference.model import Bundle, bundle_from_entries, load_acoustic_model
from blspeech.io.checkpoint import load_checkpoint, load_reason, refused_objects

#: The ``format`` entry that marks a file as a bundle, and the layout version.
FORMAT = "blspeech-bundle"
VERSION = 1
SUFFIX = ".bundle"


def make_bundle(checkpoint: str | os.PathLike, out: str | os.PathLike, *,
                frontend: Mapping[str, Any] | None = None, prior_scale: float | None = None,
                insertion_penalty: float | None = None) -> dict[str, Any]:
    """Write a bundle from a ``blspeech train`` checkpoint (atomically); returns a summary.

    ``frontend`` (LogMel options) is needed only when the checkpoint records none (models
    trained on features made outside blspeech). ``prior_scale`` / ``insertion_penalty``
    set the Viterbi search of token-topology hybrid models (defaults 1.0 and 0.0).
    """
    from blspeech.frontend.features import LogMel
    from blspeech.io.fileio import atomic_write

    path = os.fspath(checkpoint)
    am = load_acoustic_model(path, fuse_bn=False)  # validates the checkpoint
    fe = dict(frontend) if frontend is not None else dict(am.frontend_config)
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
        "cmvn": {"mode": am.cmvn_mode, "stats": am.cmvn_stats, "norm_vars": am.norm_vars},
        "tokenizer": ckpt["tokenizer"], "normalizer": ckpt["normalizer"],
        "decoding": decoding,
        "source": {"checkpoint": os.path.abspath(path), "created": time.strftime(
            "%Y-%m-%dT%H:%M:%S%z"), "epoch": ckpt.get("epoch"), "metrics": ckpt.get("metrics")},
    }
    bundle_from_entries(entries, os.fspath(out))  # it must load before it is written
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
    return bundle_from_entries(entries, path, decoding=entries.get("decoding") or {},
                               device=device)


__all__ = ["Bundle", "load_bundle", "make_bundle"]
