"""Atomic file writes: readers see the old file or the complete new one, never half."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from typing import IO, Any

from blspeech.errors import UserError


def _umask() -> int:
    # /proc first: setting the umask to read it races with threads creating files.
    with contextlib.suppress(OSError, ValueError, StopIteration):
        with open("/proc/self/status") as f:
            return int(next(line for line in f if line.startswith("Umask:")).split()[1], 8)
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def _default_mode(path: str) -> int:
    """Permission bits a plain ``open(path, 'w')`` would give (keep an existing file's)."""
    try:
        return os.stat(path).st_mode & 0o777
    except OSError:
        return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temp file next to ``path``; rename it over ``path`` only if the block succeeds.

    Readers never see a half-written file, and a failure (exception, Ctrl-C) leaves the
    old file, if any, untouched.

    Example:
        >>> with atomic_write("data/train/text") as f:   # doctest: +SKIP
        ...     f.write("utt1 hello world\\n")
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        kwargs = {"encoding": "utf-8", "newline": "\n"} if "b" not in mode else {}
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _default_mode(path))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def disk_full_is_user_error(path: str | os.PathLike, then: str) -> Iterator[None]:
    """ENOSPC/EDQUOT while writing ``path``: one line for the user (ending with ``then``,
    what happens after freeing space), not a traceback. Other errors pass unchanged. Use it
    around :func:`atomic_write` writers, so nothing half-written is left behind."""
    try:
        yield
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise UserError(f"{os.fspath(path)}: cannot write, the disk is full ({e.strerror}); "
                        f"free some space (or raise the quota) and run again: {then}"
                        ) from e
