"""Kaldi ark/scp archives of float matrices and int vectors, byte-compatible with Kaldi.

An scp line ``key path.ark:OFFSET`` points at the byte just after the ark's ``key `` prefix
(the ``\\0B`` binary marker), which is where Kaldi (and :func:`read_matrix`) starts reading.
Binary float/double matrices and int vectors are parsed here (strictly: a short read is an
error, never a silently short matrix); compressed and text matrices go to ``kaldi-io``.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO, Any

import numpy as np

from blspeech.errors import UserError
from blspeech.io.fileio import atomic_write
from blspeech.io.kaldi import pipes
from blspeech.io.kaldi.tables import KaldiFormatError, read_table, write_table

with contextlib.redirect_stderr(io.StringIO()):
    # kaldi-io prints a KALDI_ROOT warning on import that means nothing to our users.
    import kaldi_io


# --- writing archives ---------------------------------------------------------------------


def write_matrices(ark_path: str | os.PathLike, scp_path: str | os.PathLike | None,
                   items: Iterable[tuple[str, np.ndarray]] | Mapping[str, np.ndarray], *,
                   append: bool = False) -> dict[str, str]:
    """Write float matrices to a binary ark (and an scp with byte offsets).

    float64 matrices are stored as doubles (``DM``, as Kaldi's CMVN stats), everything
    else as float32 (``FM``). Returns ``{key: "ark_path:offset"}``. The ark is written to
    a temp name and renamed at the end, so a crash never leaves a half-written archive
    under the final name; ``append=True`` extends an existing ark in place instead (for
    resumable jobs) and cuts it back to its old size if writing fails.

    Example:
        >>> write_matrices("feats.ark", "feats.scp", {"utt1": np.zeros((3, 2))})  # doctest: +SKIP
        {'utt1': 'feats.ark:5'}
    """
    return _write_ark(ark_path, scp_path, items, _matrix_bytes, append)


def write_int_vectors(ark_path: str | os.PathLike, scp_path: str | os.PathLike | None,
                      items: Iterable[tuple[str, np.ndarray]] | Mapping[str, np.ndarray], *,
                      append: bool = False) -> dict[str, str]:
    """Write int32 vectors (e.g. alignments) to a binary ark (and scp); see write_matrices.

    Example:
        >>> write_int_vectors("ali.ark", None, {"utt1": np.array([1, 1, 2])})  # doctest: +SKIP
    """
    return _write_ark(ark_path, scp_path, items, _int_vector_bytes, append)


def write_matrix(path: str | os.PathLike, mat: np.ndarray) -> None:
    """One binary matrix without a key, as Kaldi writes single-matrix files (e.g. the
    ``global_cmvn`` of ``compute-cmvn-stats``); read it back with :func:`read_matrix`."""
    with atomic_write(path, "wb") as f:
        f.write(_matrix_bytes(os.fspath(path), mat))


def matrix_record(key: str, mat: np.ndarray) -> bytes:
    """One binary archive entry, ``key`` + space + matrix, as Kaldi writes it to a stream
    (``ark:-``); concatenated records are an archive.

    Example:
        >>> rec = matrix_record("u1", np.zeros((1, 2), np.float32))
        >>> rec[:9], len(rec)   # key, binary marker, float matrix, rows and cols, 2 floats
        (b'u1 \\x00BFM \\x04', 26)
    """
    return _check_key(key) + b" " + _matrix_bytes(key, mat)


def _matrix_bytes(key: str, mat: Any) -> bytes:
    mat = np.asarray(mat)
    if mat.ndim != 2:
        raise ValueError(f"{key}: a Kaldi matrix must be 2-D, got shape {mat.shape}")
    if mat.dtype.kind not in "fiub":
        raise ValueError(f"{key}: cannot store dtype {mat.dtype} in a Kaldi matrix")
    double = mat.dtype == np.float64
    data = np.ascontiguousarray(mat, dtype="<f8" if double else "<f4")
    header = b"\0B" + (b"DM " if double else b"FM ")
    header += b"\4" + np.int32(mat.shape[0]).astype("<i4").tobytes()
    header += b"\4" + np.int32(mat.shape[1]).astype("<i4").tobytes()
    return header + data.tobytes()


def _int_vector_bytes(key: str, vec: Any) -> bytes:
    vec = np.asarray(vec)
    if vec.ndim != 1:
        raise ValueError(f"{key}: an int vector must be 1-D, got shape {vec.shape}")
    if vec.size and vec.dtype.kind not in "iub":
        raise ValueError(f"{key}: an int vector needs integer values, got dtype {vec.dtype}")
    info = np.iinfo(np.int32)
    if vec.size and (vec.min() < info.min or vec.max() > info.max):
        raise ValueError(f"{key}: values do not fit in int32")
    # Kaldi stores each element as (size byte 4, int32); one buffer instead of a loop.
    rec = np.empty(len(vec), dtype=[("size", "i1"), ("value", "<i4")])
    rec["size"], rec["value"] = 4, vec
    return b"\0B\4" + np.int32(len(vec)).astype("<i4").tobytes() + rec.tobytes()


def _check_key(key: Any) -> bytes:
    if not isinstance(key, str) or key.split() != [key]:
        raise UserError(f"invalid archive key {key!r} (must be non-empty, no whitespace)")
    return key.encode()


def _write_ark(ark_path, scp_path, items, to_bytes: Callable[[str, Any], bytes],
               append: bool) -> dict[str, str]:
    ark_path = os.fspath(ark_path)
    if isinstance(items, Mapping):
        items = items.items()
    offsets: dict[str, str] = {}
    if append:
        f_ctx = open(ark_path, "ab")  # position is the end of the file ('ab' seeks there)
    else:
        f_ctx = atomic_write(ark_path, "wb")
    with f_ctx as f:
        start_size = f.tell()
        try:
            for key, value in items:
                key_bytes = _check_key(key)
                if key in offsets:
                    raise UserError(f"duplicate archive key {key!r}")
                payload = to_bytes(key, value)
                f.write(key_bytes + b" ")
                # Kaldi's scp offset points past "key ", at the binary marker.
                offsets[key] = f"{ark_path}:{f.tell()}"
                f.write(payload)
        except BaseException:
            if append:  # leave the ark as it was, not with half an entry at its end
                f.flush()
                f.truncate(start_size)
            raise
    if scp_path is not None:
        existing: dict[str, str] = {}
        if append and os.path.exists(scp_path):
            existing = {k: e.value for k, e in read_table(scp_path, check_sorted=False).items()}
        write_table(scp_path, {**existing, **offsets})
    return offsets


# --- reading archives ---------------------------------------------------------------------

_RXSPEC = re.compile(r"^(?P<path>.*?):(?P<offset>\d+)(?:\[(?P<range>[^\]]*)\])?$")
_WHOLE_RANGE = re.compile(r"^(?P<path>.*?)\[(?P<range>[^\]]*)\]$")


class _Prefixed:
    """A read-only stream that returns ``head`` before the rest of ``fd`` (for kaldi-io)."""

    def __init__(self, head: bytes, fd: IO[bytes]):
        self._head, self._fd = head, fd

    def read(self, n: int = -1) -> bytes:
        if not self._head:
            return self._fd.read(n)
        if n is None or n < 0:
            out, self._head = self._head + self._fd.read(), b""
            return out
        out, self._head = self._head[:n], self._head[n:]
        return out + (self._fd.read(n - len(out)) if len(out) < n else b"")

    def readline(self) -> bytes:
        if b"\n" in self._head:
            i = self._head.index(b"\n") + 1
            out, self._head = self._head[:i], self._head[i:]
            return out
        out, self._head = self._head, b""
        return out + self._fd.readline()


class _Short(Exception):
    """Fewer bytes than the value's header promised (a truncated archive)."""


class _NotData(Exception):
    """The bytes at the read position do not start a value (wrong offset, not an archive)."""


def _read_exact(fd: IO[bytes], n: int, what: str) -> bytes:
    data = fd.read(n)
    if len(data) != n:
        raise _Short(f"expected {n} bytes of {what}, got {len(data)}")
    return data


def _read_matrix_value(fd: IO[bytes]) -> np.ndarray:
    head = fd.read(2)
    if len(head) < 2:
        raise _Short("no matrix data" if not head else "expected a matrix, got 1 byte")
    if head == b" [":  # text matrix (" [ 1 2 ... ]"), rare: let kaldi-io parse it
        try:
            return np.array(kaldi_io.read_mat(_Prefixed(head, fd)))
        except (AssertionError, UnicodeDecodeError) as e:  # kaldi-io's reactions to non-text
            raise _NotData("it starts like a text matrix but is not one") from e
    if head != b"\0B":
        raise _NotData(f"it holds bytes {head!r}, not a binary '\\0B' or text ' [' matrix")
    kind = _read_exact(fd, 3, "matrix header")
    if kind not in (b"FM ", b"DM "):
        if kind in (b"CM ", b"CM2", b"CM3"):
            return _read_compressed(fd, kind)
        raise UserError(f"unknown matrix type {kind!r} (expected 'FM ', 'DM ' or 'CM ')")
    dims = np.frombuffer(_read_exact(fd, 10, "matrix header"), dtype=[
        ("s1", "i1"), ("rows", "<i4"), ("s2", "i1"), ("cols", "<i4")])[0]
    rows, cols = int(dims["rows"]), int(dims["cols"])
    if dims["s1"] != 4 or dims["s2"] != 4 or rows < 0 or cols < 0:
        raise UserError(f"corrupt matrix header (rows={rows}, cols={cols})")
    dtype = np.dtype("<f4" if kind == b"FM " else "<f8")
    data = _read_exact(fd, rows * cols * dtype.itemsize, f"a {rows}x{cols} matrix")
    # bytearray -> a writable array that owns its memory (np.frombuffer(bytes) is read-only)
    return np.frombuffer(bytearray(data), dtype=dtype).reshape(rows, cols).astype(
        dtype.newbyteorder("="), copy=False)


def _read_compressed(fd: IO[bytes], kind: bytes) -> np.ndarray:
    """Kaldi's CompressedMatrix (``copy-feats --compress``, kaldiio's compression_method):
    a global min and range, then uint8 data with per-column percentile headers (``CM``),
    or plain uint16 (``CM2``) or uint8 (``CM3``) steps of the range, as float32."""
    if kind != b"CM " and _read_exact(fd, 1, "matrix header") != b" ":  # token 'CM2 '
        raise UserError(f"corrupt compressed-matrix header after {kind!r}")
    head = np.frombuffer(_read_exact(fd, 16, "compressed-matrix header"),
                         dtype=[("min", "<f4"), ("range", "<f4"), ("rows", "<i4"),
                                ("cols", "<i4")])[0]
    lo, span = float(head["min"]), float(head["range"])
    rows, cols = int(head["rows"]), int(head["cols"])
    if rows < 0 or cols < 0:
        raise UserError(f"corrupt compressed-matrix header (rows={rows}, cols={cols})")
    if kind != b"CM ":
        dtype, top = ("<u2", 65535.0) if kind == b"CM2" else ("u1", 255.0)
        n = rows * cols * np.dtype(dtype).itemsize
        data = np.frombuffer(_read_exact(fd, n, f"a {rows}x{cols} matrix"), dtype=dtype)
        return (lo + span * data.astype(np.float32) / top).astype(np.float32).reshape(rows, cols)
    percentiles = np.frombuffer(_read_exact(fd, 8 * cols, "column headers"), dtype="<u2")
    p = (lo + span * percentiles.reshape(cols, 4).astype(np.float32) / 65535.0)
    data = np.frombuffer(_read_exact(fd, rows * cols, f"a {rows}x{cols} matrix"),
                         dtype="u1").reshape(cols, rows).astype(np.float32)
    p0, p25, p75, p100 = (p[:, i:i + 1] for i in range(4))
    out = np.where(data <= 64, p0 + (p25 - p0) * data / 64.0,
                   np.where(data <= 192, p25 + (p75 - p25) * (data - 64) / 128.0,
                            p75 + (p100 - p75) * (data - 192) / 63.0))
    return np.ascontiguousarray(out.T, dtype=np.float32)


def _read_int_vector_value(fd: IO[bytes]) -> np.ndarray:
    head = fd.read(2)
    if len(head) < 2:
        raise _Short("no vector data" if not head else "expected a vector, got 1 byte")
    if head != b"\0B":  # text: "1 2 3\n"
        try:
            return np.array(kaldi_io.read_vec_int(_Prefixed(head, fd)), dtype=np.int32)
        except (UnicodeDecodeError, ValueError) as e:
            raise _NotData(f"it holds bytes {head!r}, not a binary or text int vector"
                           ) from e
    size_byte = _read_exact(fd, 1, "vector header")
    if size_byte != b"\4":
        raise UserError(f"not an int32 vector (element size byte {size_byte!r})")
    n = int(np.frombuffer(_read_exact(fd, 4, "vector header"), dtype="<i4")[0])
    if n < 0:
        raise UserError(f"corrupt vector header (size {n})")
    rec = np.frombuffer(_read_exact(fd, 5 * n, f"an int vector of {n}"),
                        dtype=[("size", "i1"), ("value", "<i4")])
    if n and (rec["size"] != 4).any():
        raise UserError("not an int32 vector (element size byte is not 4)")
    return rec["value"].astype(np.int32)


def _parse_range(spec: str, shape: tuple[int, ...]) -> tuple[slice, ...]:
    """Kaldi's ``[r1:r2]`` / ``[r1:r2,c1:c2]`` (inclusive ends; empty means all)."""
    parts = spec.split(",")
    if len(parts) > len(shape) or not parts:
        raise UserError(f"bad range [{spec}]")
    slices = []
    for part, size in zip(parts, shape[:len(parts)], strict=True):
        lo_s, sep, hi_s = part.partition(":")
        if not sep:
            raise UserError(f"bad range [{spec}] (expected first:last)")
        lo = int(lo_s) if lo_s.strip() else 0
        hi = int(hi_s) if hi_s.strip() else size - 1
        if not 0 <= lo <= hi < size:
            raise UserError(f"range [{spec}] is outside a {'x'.join(map(str, shape))} matrix")
        slices.append(slice(lo, hi + 1))
    return tuple(slices)


class _CommandsOff(KaldiFormatError):
    """A command that was not run; its message already names it."""


class _Watchdog:
    """Kills a command when one read of its output waits longer than ``timeout`` seconds."""

    def __init__(self, proc: subprocess.Popen, timeout: float):
        self.proc, self.timeout, self.fired = proc, timeout, False
        self.waiting_since: float | None = None
        self._stop = threading.Event()
        threading.Thread(target=self._watch, daemon=True).start()

    def read(self, n: int = -1) -> bytes:
        return self._wait(self.proc.stdout.read, n)

    def readline(self) -> bytes:
        return self._wait(self.proc.stdout.readline)

    def seekable(self) -> bool:
        return False

    def _wait(self, read: Callable, *args: Any) -> bytes:
        # Timed per read, not in total: a long archive that keeps flowing is fine.
        self.waiting_since = time.monotonic()
        try:
            return read(*args)
        finally:
            self.waiting_since = None

    def _watch(self) -> None:
        while not self._stop.wait(min(0.1, self.timeout)):
            since = self.waiting_since
            if since is not None and time.monotonic() - since > self.timeout:
                self.fired = True
                pipes.kill(self.proc)
                return

    def stop(self) -> None:
        self._stop.set()


@contextlib.contextmanager
def _pipe(cmd: str) -> Iterator[IO[bytes]]:
    """stdout of ``cmd`` (shell); a non-zero exit raises with the tail of its stderr.

    Refused when commands are disabled (:func:`pipes.commands_allowed`); with
    ``BLSPEECH_PIPE_TIMEOUT`` set, a read that waits that long kills the command.
    """
    if not pipes.commands_allowed():
        raise _CommandsOff(pipes.commands_off(cmd))
    timeout = pipes.pipe_timeout()
    with tempfile.TemporaryFile() as err:
        proc = pipes.start(cmd, timeout, stdout=subprocess.PIPE, stderr=err)
        watchdog = _Watchdog(proc, timeout) if timeout is not None else None

        def failure() -> KaldiFormatError:
            if watchdog is not None and watchdog.fired:
                return KaldiFormatError(f"command '{cmd}' timed out after {timeout:g} s "
                                        f"({pipes.PIPE_TIMEOUT_ENV}) and was killed")
            err.seek(0)
            tail = err.read().decode(errors="replace").strip().splitlines()[-3:]
            detail = f": {' / '.join(tail)}" if tail else ""
            return KaldiFormatError(f"command '{cmd}' failed with exit code "
                                    f"{proc.returncode}{detail}")

        try:
            yield watchdog or proc.stdout
        except GeneratorExit:  # the reader stopped early; the rest of the output is unwanted
            pipes.kill(proc)
            proc.stdout.close()
            proc.wait()
            raise
        except BaseException as e:
            # Bad data is usually the symptom of a failed command: report the command.
            proc.stdout.close()
            try:
                proc.wait(timeout=1)
            except subprocess.TimeoutExpired as e:
                pipes.kill(proc)
                proc.wait()
                raise e from e
            if proc.returncode != 0:
                raise failure() from e
            raise
        finally:
            if watchdog is not None:
                watchdog.stop()
        proc.stdout.close()
        if proc.wait() != 0:
            raise failure()


def _read_rxspec(rxspec: str, read_value: Callable[[IO[bytes]], np.ndarray],
                 what: str) -> np.ndarray:
    rxspec = rxspec.strip()
    m = None
    try:
        if rxspec.endswith("|"):
            with _pipe(rxspec[:-1].strip()) as fd:
                value = read_value(fd)
                fd.read()  # drain so the command can finish and report its status
            return value
        m = _RXSPEC.match(rxspec)
        whole = None if m else _WHOLE_RANGE.match(rxspec)
        path = m["path"] if m else whole["path"] if whole else rxspec
        with open(path, "rb") as fd:
            if m:
                fd.seek(int(m["offset"]))
            value = read_value(fd)
        spec = (m or whole)["range"] if (m or whole) else None
        return value[_parse_range(spec, value.shape)] if spec else value
    except _CommandsOff:
        raise
    except KaldiFormatError as e:
        raise KaldiFormatError(f"cannot read {what} {rxspec}: {e}") from e
    except _NotData as e:
        raise KaldiFormatError(f"cannot read {what} {rxspec}: "
                               f"{_not_data(e, what, rxspec, m)}") from e
    except _Short as e:
        raise KaldiFormatError(f"cannot read {what} {rxspec}: truncated data: {e}") from e
    except FileNotFoundError as e:
        raise KaldiFormatError(f"cannot read {what} {rxspec}: {e.filename}: file not found"
                               ) from e
    except Exception as e:  # corrupt data surfaces as assorted errors, kaldi-io's included
        raise KaldiFormatError(f"cannot read {what} {rxspec}: {_describe(e)}") from e


def read_matrix(rxspec: str) -> np.ndarray:
    """One matrix from ``path.ark:OFFSET`` (an scp value, seeked to), ``path.mat`` or ``cmd |``.

    Kaldi's row/column ranges are honoured: ``feats.ark:42[10:19]`` is rows 10..19
    (inclusive), ``feats.ark:42[0:9,0:12]`` also columns 0..12.

    Example:
        >>> read_matrix("exp/feats.ark:13").shape             # doctest: +SKIP
        (312, 80)
    """
    return _read_rxspec(rxspec, _read_matrix_value, "matrix")


def read_int_vector(rxspec: str) -> np.ndarray:
    """One int32 vector from ``path.ark:OFFSET``, a file, or ``cmd |``."""
    return _read_rxspec(rxspec, _read_int_vector_value, "int vector")


class ScpReader:
    """Random access to the entries of an scp file: each lookup is one seek and one read.

    Archive files stay open between lookups (at most ``max_open`` at a time), so reading
    a subset of keys in any order touches only those entries. Not for sharing across
    processes: open one reader per DataLoader worker.

    Example:
        >>> with ScpReader("data/train/feats.scp") as feats:     # doctest: +SKIP
        ...     mat = feats["spk0-utt003"]
    """

    def __init__(self, scp_path: str | os.PathLike, kind: str = "matrix", max_open: int = 16):
        if kind not in ("matrix", "int_vector"):
            raise ValueError(f"kind must be 'matrix' or 'int_vector', got {kind!r}")
        self.path = os.fspath(scp_path)
        self.entries = read_table(self.path, check_sorted=False)
        self._read_value = _read_matrix_value if kind == "matrix" else _read_int_vector_value
        self._what = kind.replace("_", " ")
        self._files: OrderedDict[str, IO[bytes]] = OrderedDict()
        self._max_open = max_open

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, key: object) -> bool:
        return key in self.entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def keys(self) -> list[str]:
        return list(self.entries)

    def __getitem__(self, key: str) -> np.ndarray:
        entry = self.entries.get(key)
        if entry is None:
            raise KaldiFormatError(f"{self.path}: no entry for key {key!r}")
        try:
            return self._read(entry.value)
        except KaldiFormatError as e:
            raise KaldiFormatError(f"{self.path}:{entry.line}: key {key!r}: {e}") from e

    def _read(self, rxspec: str) -> np.ndarray:
        m = _RXSPEC.match(rxspec.strip())
        if not m:  # a pipe or a whole file: nothing to keep open
            return _read_rxspec(rxspec, self._read_value, self._what)
        try:
            fd = self._open(m["path"])
            fd.seek(int(m["offset"]))
            value = self._read_value(fd)
            return value[_parse_range(m["range"], value.shape)] if m["range"] else value
        except _Short as e:
            raise KaldiFormatError(f"cannot read {self._what} {rxspec}: truncated data: {e}"
                                   ) from e
        except _NotData as e:
            raise KaldiFormatError(f"cannot read {self._what} {rxspec}: "
                                   f"{_not_data(e, self._what, rxspec, m)}") from e
        except FileNotFoundError as e:
            raise KaldiFormatError(f"cannot read {self._what} {rxspec}: {m['path']}: "
                                   "file not found") from e
        except Exception as e:
            raise KaldiFormatError(f"cannot read {self._what} {rxspec}: {_describe(e)}"
                                   ) from e

    def _open(self, path: str) -> IO[bytes]:
        fd = self._files.pop(path, None)
        if fd is None:
            fd = open(path, "rb")
            if len(self._files) >= self._max_open:
                self._files.popitem(last=False)[1].close()
        self._files[path] = fd  # most recently used last
        return fd

    def close(self) -> None:
        while self._files:
            self._files.popitem()[1].close()

    def __enter__(self) -> ScpReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_matrices(rspecifier: str, keys: Iterable[str] | None = None
                  ) -> Iterator[tuple[str, np.ndarray]]:
    """Iterate ``(key, matrix)`` from ``scp:file.scp``, ``ark:file.ark``, ``ark:cmd |``, ``ark:-``.

    scp entries are read by seeking to their offsets; with ``keys`` only those entries
    are read, in the order given (random access). For an ark, ``keys`` filters a
    sequential read (archive order). Unlike kaldi-io's scp reader, an unreadable entry
    raises :class:`KaldiFormatError` naming the scp line and key instead of being skipped;
    a truncated ark names the file and the last good key.

    Example:
        >>> dict(read_matrices("scp:data/train/feats.scp", keys=["utt9", "utt2"]))  # doctest: +SKIP
    """
    yield from _read_archive(rspecifier, "matrix", keys)


def read_int_vectors(rspecifier: str, keys: Iterable[str] | None = None
                     ) -> Iterator[tuple[str, np.ndarray]]:
    """Iterate ``(key, int vector)`` from ``scp:...`` or ``ark:...`` (alignments)."""
    yield from _read_archive(rspecifier, "int_vector", keys)


def _split_rspecifier(rspecifier: str) -> tuple[str, str]:
    kind, sep, target = rspecifier.partition(":")
    options = kind.split(",")
    if not sep or options[0] not in ("scp", "ark") or not target.strip():
        raise KaldiFormatError(f"{rspecifier!r}: expected 'scp:FILE', 'ark:FILE', "
                               "'ark:CMD |' or 'ark:-'")
    return options[0], target.strip()


def _read_archive(rspecifier: str, kind: str, keys: Iterable[str] | None):
    form, target = _split_rspecifier(rspecifier)
    if form == "scp":
        with ScpReader(target, kind) as reader:
            for key in (reader.keys() if keys is None else keys):
                yield key, reader[key]
        return
    wanted = None if keys is None else set(keys)
    read_value = _read_matrix_value if kind == "matrix" else _read_int_vector_value
    if target.endswith("|"):
        with _pipe(target[:-1].strip()) as fd:
            yield from _iter_ark(fd, target, read_value, wanted)
            fd.read()
    elif target == "-":
        yield from _iter_ark(sys.stdin.buffer, "stdin", read_value, wanted)
    else:
        try:
            fd = open(target, "rb")
        except OSError as e:
            reason = "file not found" if isinstance(e, FileNotFoundError) else e.strerror
            raise KaldiFormatError(f"archive {target}: {reason}") from e
        with fd:
            yield from _iter_ark(fd, target, read_value, wanted)


def _read_key(fd: IO[bytes]) -> tuple[bytes, bool]:
    """The next key (leading whitespace skipped) and whether the space after it was seen."""
    key = bytearray()
    while True:
        c = fd.read(1)
        if not c:
            return bytes(key), False
        if c in b" \t\n\r":
            if key:
                return bytes(key), c == b" "
            continue
        key += c


def _iter_ark(fd: IO[bytes], name: str, read_value: Callable, wanted: set[str] | None):
    last_good = None
    while True:
        where = f" at byte {fd.tell()}" if fd.seekable() else ""
        key_bytes, spaced = _read_key(fd)
        if not key_bytes:
            return
        key = key_bytes.decode("utf-8", errors="replace")
        after = f"after last good key {last_good!r}" if last_good else "in its first entry"
        try:
            if not spaced:
                raise _Short("the archive ends inside a key")
            value = read_value(fd)
        except Exception as e:
            reason = "truncated" if isinstance(e, _Short) else "corrupt"
            raise KaldiFormatError(f"{name}: {reason} archive{where}, entry {key!r} {after}: "
                                   f"{e if isinstance(e, (_Short, _NotData)) else _describe(e)}"
                                   ) from e
        last_good = key
        if wanted is None or key in wanted:
            yield key, value


def _not_data(e: _NotData, what: str, rxspec: str, m: re.Match | None) -> str:
    if m is None:
        source = "the command's output" if rxspec.endswith("|") else "the file"
        return f"{source} is not a Kaldi {what} ({e})"
    # An offset into the middle of an archive: the bytes there are data, not a header.
    return (f"no {what} starts at byte {m['offset']} of {m['path']} ({e}); the scp offset "
            "is wrong or the archive was rewritten after the scp: recompute the features")


def _describe(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__
