"""Kaldi text tables (``wav.scp``, ``text``, ``utt2spk``, ...): ``key value`` lines, sorted by
key in C-locale (byte) order, read with their line numbers for error messages."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from blspeech.errors import UserError
from blspeech.io.fileio import atomic_write


class KaldiFormatError(UserError):
    """A Kaldi table or archive that cannot be read; the message names file, line and key."""


@dataclass(frozen=True)
class TableEntry:
    """One ``key value`` line of a text table; ``line`` is 1-based."""

    key: str
    value: str
    line: int


# --- text tables ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LineProblem:
    """A problem found while scanning a table: 1-based line, key (None if unknown), text.

    ``message`` does not repeat the key; callers add it in their own format.
    """

    line: int
    key: str | None
    message: str
    kind: str  # "encoding" | "empty" | "duplicate" | "unsorted" | "no-value"


def scan_lines(path: str | os.PathLike) -> tuple[dict[str, TableEntry], list[LineProblem]]:
    """Read a table leniently: every entry (first of duplicates) and every line problem.

    Lines are split at the first run of whitespace (space or tab), as Kaldi does; the
    value keeps inner whitespace. Problems: lines that are not UTF-8, empty lines,
    duplicate keys (the first one is kept) and keys out of C-locale order. Values are
    not checked (empty values are kept as ``""``).

    Raises :class:`KaldiFormatError` only when the file cannot be read at all.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError as e:
        raise KaldiFormatError(f"{path}: file not found") from e
    except OSError as e:
        raise KaldiFormatError(f"{path}: cannot read: {e.strerror or e}") from e
    entries: dict[str, TableEntry] = {}
    problems: list[LineProblem] = []
    previous: bytes | None = None
    # split(b"\n"), not splitlines(): a form feed or U+2028 inside a transcript must not
    # shift every later line number.
    raw_lines = data.split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()
    for lineno, raw in enumerate(raw_lines, 1):
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError as e:
            problems.append(LineProblem(lineno, None, f"not UTF-8 text ({e.reason} at column "
                                        f"{e.start + 1})", "encoding"))
            continue
        if not line:
            problems.append(LineProblem(lineno, None, "empty line", "empty"))
            continue
        parts = line.split(None, 1)
        key, value = parts[0], (parts[1] if len(parts) > 1 else "")
        if key in entries:
            problems.append(LineProblem(lineno, key, f"duplicate key (first on line "
                                        f"{entries[key].line})", "duplicate"))
            continue
        encoded = key.encode()
        if previous is not None and encoded < previous:
            problems.append(LineProblem(
                lineno, key, f"not sorted (comes after {previous.decode()!r}); sort with "
                "'LC_ALL=C sort' or 'blspeech fix-data-dir'", "unsorted"))
        entries[key] = TableEntry(key, value, lineno)
        previous = encoded
    return entries, problems


def read_table(path: str | os.PathLike, *, check_sorted: bool = True,
               allow_empty_value: bool = False) -> dict[str, TableEntry]:
    """Read a ``key value`` text table, keeping the line number of each entry.

    Raises :class:`KaldiFormatError` on the first malformed, duplicate or (with
    ``check_sorted``) unsorted line; use :func:`scan_table` to collect every problem.

    Example:
        >>> utt2spk = read_table("data/train/utt2spk")            # doctest: +SKIP
        >>> utt2spk["spk0-utt000"].value, utt2spk["spk0-utt000"].line   # doctest: +SKIP
        ('spk0', 1)
    """
    entries, problems = scan_table(path, allow_empty_value=allow_empty_value,
                                   check_sorted=check_sorted)
    if problems:
        raise KaldiFormatError(problems[0])
    return entries


def scan_table(path: str | os.PathLike, *, allow_empty_value: bool = False,
               check_sorted: bool = True) -> tuple[dict[str, TableEntry], list[str]]:
    """Read a table and list every problem as ``file:line: message`` strings.

    Example:
        >>> entries, problems = scan_table("data/train/text")  # doctest: +SKIP
        >>> problems                                            # doctest: +SKIP
        ["data/train/text:4: duplicate key 'utt3' (first on line 3)"]
    """
    path = os.fspath(path)
    entries, found = scan_lines(path)
    problems = [p for p in found if check_sorted or p.kind != "unsorted"]
    if not allow_empty_value:
        problems += [LineProblem(e.line, e.key, "has no value", "no-value")
                     for e in entries.values() if e.value == ""]
        problems.sort(key=lambda p: p.line)
    return entries, [f"{path}:{p.line}: {'' if p.key is None else f'key {p.key!r}: '}{p.message}"
                     for p in problems]


def write_table(path: str | os.PathLike, items: Iterable[tuple[str, str]] | Mapping[str, str],
                *, sort: bool = True) -> None:
    """Write ``key value`` lines atomically (temp file + rename), sorted by key by default.

    Keys must be non-empty without whitespace; values must be one line. An empty value
    writes the key alone.

    Example:
        >>> write_table("data/train/utt2spk", {"spk0-utt1": "spk0"})   # doctest: +SKIP
    """
    text = format_table(items, sort=sort, name=os.fspath(path))
    with atomic_write(path, "w") as f:
        f.write(text)


def format_table(items: Iterable[tuple[str, str]] | Mapping[str, str], *, sort: bool = True,
                 name: str = "table") -> str:
    """The text of a table as :func:`write_table` writes it (checked, C-locale sorted).

    Example:
        >>> format_table({"b": "2", "a": "1 x"})
        'a 1 x\\nb 2\\n'
    """
    pairs = [(k, str(v)) for k, v in (items.items() if isinstance(items, Mapping) else items)]
    for key, value in pairs:
        if not isinstance(key, str) or key.split() != [key]:
            raise UserError(f"{name}: invalid table key {key!r} (must be non-empty and "
                            "without whitespace)")
        if "\n" in value or "\r" in value:
            raise UserError(f"{name}: value for {key!r} contains a line break")
    if sort:
        pairs.sort(key=lambda kv: kv[0].encode())
    return "".join(f"{key} {value}\n" if value != "" else f"{key}\n" for key, value in pairs)
