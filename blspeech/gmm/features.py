"""MFCC + deltas + delta-deltas with per-speaker mean normalization, as Kaldi's
``train_mono.sh`` consumes them (``compute-mfcc-feats``, ``apply-cmvn`` with the default
``--norm-vars=false``, ``add-deltas``): 13 cepstra, 39 dimensions, 25 ms windows every
10 ms with ``snip_edges`` as in ``blspeech compute-feats``, so that an utterance has as many
frames here as in its ``feats.scp`` (the hybrid head's alignments must match those)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
import torchaudio
import torchaudio.compliance.kaldi as kaldi

from blspeech.io.audio import AudioReader
from blspeech.io.datadir.core import DataDir


def mfcc(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """``(T, 13)`` Kaldi MFCCs of float samples in [-1, 1] (no dither: reproducible)."""
    wave = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))[None] * 32768.0
    return kaldi.mfcc(wave, sample_frequency=float(sample_rate), dither=0.0,
                      num_ceps=13, snip_edges=True).numpy()


def add_deltas(feats: np.ndarray) -> np.ndarray:
    """Kaldi's ``add-deltas`` (order 2, window 2): ``(T, 3 * D)``."""
    x = torch.from_numpy(feats).T[None]                    # (1, D, T)
    d1 = torchaudio.functional.compute_deltas(x, win_length=5)
    d2 = torchaudio.functional.compute_deltas(d1, win_length=5)
    return torch.cat([x, d1, d2], dim=1)[0].T.contiguous().numpy()


def gmm_features(data_dir: str | os.PathLike, utts: Sequence[str] | None = None
                 ) -> dict[str, np.ndarray]:
    """``utt -> (T, 39)`` float32 features of a data dir (all utterances by default):
    MFCCs with each speaker's cepstral mean removed (``utt2spk``), then deltas."""
    d = DataDir.load(data_dir)
    reader = AudioReader(data_dir)
    rate = reader.sample_rate
    utts = list(utts) if utts is not None else reader.utterance_ids
    raw = {u: mfcc(reader.read(u), rate) for u in utts}
    by_spk: dict[str, list[str]] = {}
    for u in utts:
        by_spk.setdefault(d.speaker(u), []).append(u)
    out: dict[str, np.ndarray] = {}
    for members in by_spk.values():
        mean = np.concatenate([raw[u] for u in members]).mean(axis=0)
        for u in members:
            out[u] = add_deltas((raw[u] - mean).astype(np.float32)).astype(np.float32)
    return out


__all__ = ["add_deltas", "gmm_features", "mfcc"]
