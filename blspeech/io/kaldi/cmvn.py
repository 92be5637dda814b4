"""CMVN statistics in Kaldi's layout (as ``compute-cmvn-stats`` writes them)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from blspeech.errors import UserError

# --- CMVN statistics in Kaldi's layout ----------------------------------------------------


def cmvn_stats(feats: Iterable[np.ndarray], dim: int | None = None) -> np.ndarray:
    """Accumulate Kaldi CMVN stats: a 2 x (dim+1) float64 matrix.

    Row 0 holds per-dimension sums and the frame count in the last column; row 1 holds
    per-dimension sums of squares (last column 0), exactly as ``compute-cmvn-stats``.
    Written with :func:`write_matrices` it is a double (``DM``) matrix, as in Kaldi.

    Example:
        >>> cmvn_stats([np.ones((2, 3))]).tolist()
        [[2.0, 2.0, 2.0, 2.0], [2.0, 2.0, 2.0, 0.0]]
    """
    stats = None if dim is None else np.zeros((2, dim + 1))
    for mat in feats:
        mat = np.asarray(mat, dtype=np.float64)
        if mat.ndim != 2:
            raise UserError(f"features must be 2-D (frames x dim), got shape {mat.shape}")
        if stats is None:
            stats = np.zeros((2, mat.shape[1] + 1))
        if mat.shape[1] != stats.shape[1] - 1:
            raise UserError(f"feature dim {mat.shape[1]} != stats dim {stats.shape[1] - 1}")
        stats[0, :-1] += mat.sum(axis=0)
        stats[1, :-1] += np.square(mat).sum(axis=0)
        stats[0, -1] += mat.shape[0]
    if stats is None:
        raise UserError("no features to accumulate CMVN statistics from")
    return stats


def cmvn_from_stats(stats: np.ndarray, floor: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation per dimension from Kaldi CMVN stats.

    Example:
        >>> mean, std = cmvn_from_stats(cmvn_stats([np.array([[1.0], [3.0]])]))
        >>> float(mean[0]), float(std[0])
        (2.0, 1.0)
    """
    stats = np.asarray(stats, dtype=np.float64)
    if stats.ndim != 2 or stats.shape[0] != 2 or stats.shape[1] < 2:
        raise UserError(f"CMVN stats must be 2 x (dim+1), got shape {stats.shape}")
    count = stats[0, -1]
    if count <= 0:
        raise UserError("CMVN statistics have a zero frame count")
    mean = stats[0, :-1] / count
    var = np.maximum(stats[1, :-1] / count - mean**2, floor)
    return mean, np.sqrt(var)
