"""Kaldi file formats: text tables, ark/scp archives (via kaldi-io) and CMVN statistics.

Text tables (``wav.scp``, ``text``, ``utt2spk``, ...) are ``key value`` lines sorted by key
in C-locale (byte) order. Archives hold binary float matrices or int vectors after a
``key `` prefix; an scp line ``key path.ark:OFFSET`` points at the byte just after that
prefix, which is where Kaldi (and :func:`read_matrix`) starts reading.

Example:
    >>> write_matrices("feats.ark", "feats.scp", {"utt1": mat1, "utt2": mat2})  # doctest: +SKIP
    >>> for key, mat in read_matrices("scp:feats.scp"): ...                      # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from .errors import UserError

with contextlib.redirect_stderr(io.StringIO()):
    # kaldi-io prints a KALDI_ROOT warning on import that means nothing to our users.
    import kaldi_io


class KaldiFormatError(UserError):
    """A Kaldi table or archive that cannot be read; the message names file, line and key."""


@dataclass(frozen=True)
class TableEntry:
    key: str
    value: str
    line: int


def read_table(path: str | os.PathLike, *, check_sorted: bool = True,
               allow_empty_value: bool = False) -> dict[str, TableEntry]:
    """Read a ``key value`` text table, keeping the line number of each entry.

    Raises :class:`KaldiFormatError` on the first malformed, duplicate or unsorted line (use
    :func:`scan_table` to collect every problem instead).
    """
    entries, problems = scan_table(path, allow_empty_value=allow_empty_value)
    problems = [p for p in problems if check_sorted or "not sorted" not in p]
    if problems:
        raise KaldiFormatError(problems[0])
    return entries


def scan_table(path: str | os.PathLike, *, allow_empty_value: bool = False
               ) -> tuple[dict[str, TableEntry], list[str]]:
    """Read a table and list every problem as ``file:line: message`` strings."""
    path = os.fspath(path)
    entries: dict[str, TableEntry] = {}
    problems: list[str] = []
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise KaldiFormatError(f"{path}: file not found") from None
    except UnicodeDecodeError as e:
        raise KaldiFormatError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    previous = None
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            problems.append(f"{path}:{lineno}: empty line")
            continue
        key, _, value = line.partition(" ")
        key, value = key.split("\t")[0], value.strip()
        if not value and not allow_empty_value:
            problems.append(f"{path}:{lineno}: key {key!r} has no value")
        if key in entries:
            problems.append(f"{path}:{lineno}: duplicate key {key!r} "
                            f"(first on line {entries[key].line})")
            continue
        if previous is not None and key.encode() < previous.encode():
            problems.append(f"{path}:{lineno}: key {key!r} is not sorted (comes after "
                            f"{previous!r}); sort with LC_ALL=C sort or 'blspeech fix-data-dir'")
        entries[key] = TableEntry(key, value, lineno)
        previous = key
    return entries, problems


def write_table(path: str | os.PathLike, items: Iterable[tuple[str, str]] | Mapping[str, str],
                *, sort: bool = True) -> None:
    """Write ``key value`` lines atomically (temp file + rename), sorted by key by default."""
    pairs = list(items.items() if isinstance(items, Mapping) else items)
    if sort:
        pairs.sort(key=lambda kv: kv[0].encode())
    with atomic_write(path, "w") as f:
        for key, value in pairs:
            f.write(f"{key} {value}\n" if value != "" else f"{key}\n")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temp file next to ``path``; rename it over ``path`` only if the block succeeds."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        kwargs = {"encoding": "utf-8"} if "b" not in mode else {}
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# --- archives ----------------------------------------------------------------------------

_OFFSET = re.compile(r"^(.*):(\d+)$")


def write_matrices(ark_path: str | os.PathLike, scp_path: str | os.PathLike | None,
                   items: Iterable[tuple[str, np.ndarray]], *, append: bool = False
                   ) -> dict[str, str]:
    """Write float matrices to a binary ark (and an scp with byte offsets).

    Returns ``{key: "ark_path:offset"}``. The ark is written to a temp name and renamed
    at the end, so a crash never leaves a half-written archive under the final name
    (``append=True`` extends an existing ark in place instead, for resumable jobs).
    """
    return _write_ark(ark_path, scp_path, items, _write_one_matrix, append)


def write_int_vectors(ark_path: str | os.PathLike, scp_path: str | os.PathLike | None,
                      items: Iterable[tuple[str, np.ndarray]]) -> dict[str, str]:
    """Write int32 vectors (e.g. alignments) to a binary ark (and scp)."""
    return _write_ark(ark_path, scp_path, items, _write_one_int_vector, False)


def _write_one_matrix(f: IO[bytes], key: str, mat: np.ndarray) -> None:
    mat = np.asarray(mat)
    if mat.ndim != 2:
        raise ValueError(f"{key}: a Kaldi matrix must be 2-D, got shape {mat.shape}")
    if mat.dtype not in (np.float32, np.float64):
        mat = mat.astype(np.float32)
    kaldi_io.write_mat(f, np.ascontiguousarray(mat), key=key)


def _write_one_int_vector(f: IO[bytes], key: str, vec: np.ndarray) -> None:
    vec = np.asarray(vec)
    if vec.ndim != 1:
        raise ValueError(f"{key}: an int vector must be 1-D, got shape {vec.shape}")
    # One struct write instead of kaldi-io's per-element loop (same bytes).
    f.write(key.encode() + b" \0B\4" + np.int32(len(vec)).tobytes())
    rec = np.empty(len(vec), dtype=[("size", "i1"), ("value", "<i4")])
    rec["size"], rec["value"] = 4, vec.astype(np.int32)
    f.write(rec.tobytes())


def _write_ark(ark_path, scp_path, items, write_one: Callable, append: bool) -> dict[str, str]:
    ark_path = os.fspath(ark_path)
    offsets: dict[str, str] = {}
    if append:
        f_ctx = open(ark_path, "ab")
    else:
        f_ctx = atomic_write(ark_path, "wb")
    with f_ctx as f:
        for key, value in items:
            if not key or " " in key:
                raise ValueError(f"invalid archive key {key!r}")
            start = f.tell()
            write_one(f, key, value)
            # Kaldi's scp offset points past "key ", at the binary marker.
            offsets[key] = f"{ark_path}:{start + len(key.encode()) + 1}"
    if scp_path is not None:
        existing = {}
        if append and os.path.exists(scp_path):
            existing = {k: e.value for k, e in read_table(scp_path, check_sorted=False).items()}
        write_table(scp_path, {**existing, **offsets})
    return offsets


def read_matrix(rxspec: str) -> np.ndarray:
    """One matrix from ``path.ark:OFFSET`` (an scp value), ``path.mat`` or ``cmd |``."""
    try:
        return kaldi_io.read_mat(rxspec)
    except Exception as e:  # truncated/corrupt data surfaces as assorted errors inside kaldi-io
        raise KaldiFormatError(f"cannot read matrix {rxspec}: {_describe(e)}") from None


def read_int_vector(rxspec: str) -> np.ndarray:
    """One int vector from ``path.ark:OFFSET`` or a pipe."""
    try:
        return kaldi_io.read_vec_int(rxspec)
    except Exception as e:
        raise KaldiFormatError(f"cannot read int vector {rxspec}: {_describe(e)}") from None


def read_matrices(rspecifier: str) -> Iterator[tuple[str, np.ndarray]]:
    """Iterate ``(key, matrix)`` from ``scp:file.scp``, ``ark:file.ark`` or ``ark:cmd |``.

    scp entries are read by offset (random access). Unlike kaldi-io's own scp reader,
    an unreadable entry raises :class:`KaldiFormatError` naming the key instead of
    being skipped.
    """
    yield from _read_archive(rspecifier, read_matrix, kaldi_io.read_mat_ark)


def read_int_vectors(rspecifier: str) -> Iterator[tuple[str, np.ndarray]]:
    """Iterate ``(key, int vector)`` from ``scp:...`` or ``ark:...`` (alignments)."""
    yield from _read_archive(rspecifier, read_int_vector, kaldi_io.read_vec_int_ark)


def _read_archive(rspecifier: str, read_one: Callable, read_ark: Callable):
    kind, sep, target = rspecifier.partition(":")
    if not sep or kind.split(",")[0] not in ("scp", "ark"):
        raise KaldiFormatError(f"{rspecifier!r}: expected 'scp:FILE', 'ark:FILE' or 'ark:CMD |'")
    if kind.startswith("scp"):
        for key, entry in read_table(target, check_sorted=False).items():
            try:
                yield key, read_one(entry.value)
            except KaldiFormatError as e:
                raise KaldiFormatError(f"{target}:{entry.line}: {key}: {e}") from None
        return
    if not target.rstrip().endswith("|") and not os.path.isfile(target):
        raise KaldiFormatError(f"archive {target} not found")
    key = None
    try:
        for key, value in read_ark(target):
            yield key, value
    except Exception as e:
        after = f" after key {key!r}" if key else ""
        raise KaldiFormatError(f"{target}: truncated or corrupt archive{after}: "
                               f"{_describe(e)}") from None


def _describe(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


# --- CMVN statistics in Kaldi's layout ----------------------------------------------------


def cmvn_stats(feats: Iterable[np.ndarray], dim: int | None = None) -> np.ndarray:
    """Accumulate Kaldi CMVN stats: a 2 x (dim+1) float64 matrix.

    Row 0 holds per-dimension sums and the frame count in the last column; row 1 holds
    per-dimension sums of squares (last column 0), exactly as ``compute-cmvn-stats``.
    """
    stats = None if dim is None else np.zeros((2, dim + 1))
    for mat in feats:
        mat = np.asarray(mat, dtype=np.float64)
        if stats is None:
            stats = np.zeros((2, mat.shape[1] + 1))
        if mat.shape[1] != stats.shape[1] - 1:
            raise ValueError(f"feature dim {mat.shape[1]} != stats dim {stats.shape[1] - 1}")
        stats[0, :-1] += mat.sum(axis=0)
        stats[1, :-1] += np.square(mat).sum(axis=0)
        stats[0, -1] += mat.shape[0]
    if stats is None:
        raise ValueError("no features to accumulate CMVN statistics from")
    return stats


def cmvn_from_stats(stats: np.ndarray, floor: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation per dimension from Kaldi CMVN stats."""
    stats = np.asarray(stats, dtype=np.float64)
    count = stats[0, -1]
    if count <= 0:
        raise ValueError("CMVN statistics have a zero frame count")
    mean = stats[0, :-1] / count
    var = np.maximum(stats[1, :-1] / count - mean**2, floor)
    return mean, np.sqrt(var)
