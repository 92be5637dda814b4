"""The :class:`DataDir` object: the tables of one Kaldi data directory, and :class:`Problem`."""

from __future__ import annotations

import contextlib
import math
import os
import re
import shlex
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

from blspeech.errors import UserError
from blspeech.io.fileio import atomic_write
from blspeech.io.kaldi import KaldiFormatError, LineProblem, TableEntry, format_table, scan_lines

#: Files that must exist in every data dir.
REQUIRED = ("wav.scp", "text", "utt2spk")
#: Tables keyed by utterance id (besides ``segments``, and ``wav.scp`` without segments).
UTT_TABLES = ("text", "utt2spk", "feats.scp", "vad.scp", "utt2dur", "utt2num_frames",
              "utt2uniq", "utt2lang")
#: Tables keyed by speaker id (``spk2utt`` is derived from ``utt2spk`` and handled apart).
SPK_TABLES = ("cmvn.scp", "spk2gender")
#: Tables keyed by recording id (besides ``wav.scp``).
RECO_TABLES = ("reco2file_and_channel", "reco2dur")
#: Every table this module knows, in the order problems are reported.
TABLES = ("wav.scp", "segments", "reco2file_and_channel", "reco2dur", "text", "utt2spk",
          "spk2utt", "spk2gender", "feats.scp", "cmvn.scp", "vad.scp", "utt2dur",
          "utt2num_frames", "utt2uniq", "utt2lang")
#: Small non-table files that travel with a data dir verbatim.
COPIED_FILES = ("frame_shift",)
#: The front-end settings that ``feats.scp``'s features were computed with (written by
#: ``blspeech compute-feats``; training and inference read them).
FEATS_CONF = os.path.join("conf", "fbank.yaml")
#: Tables that describe features of the audio and are stale after speed perturbation.
FEATURE_TABLES = ("feats.scp", "cmvn.scp", "vad.scp", "utt2num_frames")

BACKUP_DIR = ".backup"
_ARK_OFFSET = re.compile(r"^(.*?):\d+(?:\[[^\]]*\])?$")


@dataclass(frozen=True)
class Problem:
    """One problem in a data dir: where (file, 1-based line or None), which id, what.

    ``utt`` is the id the problem is about; ``id_kind`` says whether it is an utterance
    (``utt``), speaker (``spk``) or recording (``reco``) id. ``level`` is ``error`` or
    ``warning``.

    Example:
        >>> print(Problem("data/train/text", 12, "x", "missing from utt2spk"))
        data/train/text:12: utt 'x': missing from utt2spk
    """

    file: str
    line: int | None
    utt: str | None
    message: str
    level: str = "error"
    id_kind: str = "utt"

    @property
    def key(self) -> str | None:
        return self.utt

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        tag = "warning: " if self.level == "warning" else ""
        who = "" if self.utt is None else f"{self.id_kind} {self.utt!r}: "
        return f"{where}: {tag}{who}{self.message}"

    def to_dict(self) -> dict:
        return asdict(self)


def c_sorted(keys: Iterable[str]) -> list[str]:
    """Sorted in C-locale (byte) order, as ``LC_ALL=C sort``."""
    return sorted(keys, key=str.encode)


def format_seconds(x: float) -> str:
    """Seconds with at most 4 decimals and no trailing zeros: 1.5, 0.9111, 3."""
    return (f"{x:.4f}".rstrip("0").rstrip(".")) or "0"


def parse_number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_segment(value: str) -> tuple[str, float, float]:
    """``RECO START END`` -> (reco, start, end); ValueError with a readable reason."""
    fields = value.split()
    if len(fields) != 3:
        raise UserError(f"expected 'RECORDING START END', got {value!r}")
    reco, start_s, end_s = fields
    start, end = parse_number(start_s), parse_number(end_s)
    if start is None:
        raise UserError(f"start time {start_s!r} is not a number")
    if end is None:
        raise UserError(f"end time {end_s!r} is not a number")
    if start < 0 or end < 0:
        raise UserError(f"negative time (start {start_s}, end {end_s})")
    if end <= start:
        raise UserError(f"end time {end_s} is not after start time {start_s}")
    return reco, start, end


def check_value(name: str, value: str) -> str | None:
    """Why the value of one line of table ``name`` is malformed, or None."""
    fields = value.split()
    if name == "text":
        return None  # any transcript, even empty (a warning elsewhere)
    if not fields:
        return "line has no value"
    if name in ("utt2spk", "utt2uniq", "utt2lang") and len(fields) != 1:
        return f"expected one id after the utterance id, got {len(fields)} fields: {value!r}"
    if name == "spk2gender" and (len(fields) != 1 or fields[0] not in ("m", "f")):
        return f"expected gender 'm' or 'f', got {value!r}"
    if name == "segments":
        try:
            parse_segment(value)
        except ValueError as e:
            return str(e)
    if name == "reco2file_and_channel" and len(fields) != 2:
        return f"expected 'FILE CHANNEL', got {value!r}"
    if name in ("utt2dur", "reco2dur"):
        seconds = parse_number(fields[0]) if len(fields) == 1 else None
        if seconds is None:
            return f"duration {value!r} is not a number"
        if seconds <= 0:
            return f"duration {value} must be > 0"
    if name == "utt2num_frames":
        if len(fields) != 1 or not fields[0].isdigit():
            return f"frame count {value!r} is not a whole number"
        if int(fields[0]) <= 0:
            return f"frame count {value} must be > 0"
    return None


class FileChecks:
    """Existence checks of the files a table points to (cached: arks repeat)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._exists: dict[str, bool] = {}

    def _is_file(self, path: str) -> bool:
        if path not in self._exists:
            self._exists[path] = os.path.isfile(path)
        return self._exists[path]

    def check(self, name: str, value: str) -> tuple[str, str] | None:
        """(level, message) for a missing file or command, else None."""
        value = value.strip()
        if not self.enabled or not value:
            return None
        if name == "wav.scp":
            if value.endswith("|"):
                return self._check_command(value[:-1])
            if not self._is_file(value):
                return "error", f"audio file not found: {value}"
        elif name in ("feats.scp", "cmvn.scp", "vad.scp") and not value.endswith("|"):
            m = _ARK_OFFSET.match(value)
            path = m[1] if m else value
            if not self._is_file(path):
                return "error", f"archive not found: {path}"
        return None

    def _check_command(self, command: str) -> tuple[str, str] | None:
        try:
            words = shlex.split(command)
        except ValueError as e:
            return "error", f"cannot parse the command ({e}): {command}"
        if not words:
            return "error", "empty command before '|'"
        program = words[0]
        if "=" in program:  # FOO=bar cmd ...: not worth parsing further
            return None
        found = os.access(program, os.X_OK) if "/" in program else shutil.which(program)
        if not found:
            return "warning", f"command {program!r} is not installed or not on PATH"
        return None


class DataDir:
    """A Kaldi data dir in memory: every table keyed by id, with the line each came from.

    ``tables[name][key]`` is a :class:`~blspeech.io.kaldi.TableEntry` (line 0 for entries
    made in memory). Load with :meth:`load`, write with :meth:`save`.

    Example:
        >>> d = DataDir.load("data/train")                      # doctest: +SKIP
        >>> d.utterances()[:2], d.speaker("spk0-utt000")         # doctest: +SKIP
        (['spk0-utt000', 'spk0-utt002'], 'spk0')
        >>> d.segment("rec1-0001")                               # doctest: +SKIP
        ('rec1', 0.5, 2.25)
    """

    def __init__(self, tables: Mapping[str, Mapping[str, TableEntry]] | None = None, *,
                 path: str | None = None, extra: Mapping[str, bytes] | None = None):
        self.path = path
        self.tables: dict[str, dict[str, TableEntry]] = {
            name: dict(entries) for name, entries in (tables or {}).items()}
        self.extra: dict[str, bytes] = dict(extra or {})
        #: Problems found while reading each file (duplicates, unsorted, empty lines, ...).
        self.line_problems: dict[str, list[LineProblem]] = {}

    # --- loading and saving ----------------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike, *, strict: bool = True) -> DataDir:
        """Read every known table that exists in ``path``.

        ``strict`` (default) raises :class:`KaldiFormatError` on the first undecodable,
        empty or duplicate line (unsorted lines are accepted: :meth:`save` sorts);
        ``strict=False`` keeps going (the first of duplicate keys wins) and records the
        problems in :attr:`line_problems`, as validation and fixing need.
        """
        path = os.fspath(path)
        if not os.path.isdir(path):
            raise UserError(f"{path}: no such data directory")
        d = cls(path=path)
        for name in TABLES:
            file = os.path.join(path, name)
            if os.path.isfile(file):
                d.tables[name], problems = scan_lines(file)
                if problems:
                    d.line_problems[name] = problems
        for name in COPIED_FILES:
            file = os.path.join(path, name)
            if os.path.isfile(file):
                with open(file, "rb") as f:
                    d.extra[name] = f.read()
        if strict:
            for name, problems in d.line_problems.items():
                bad = [p for p in problems if p.kind != "unsorted"]
                if bad:
                    who = "" if bad[0].key is None else f"key {bad[0].key!r}: "
                    raise KaldiFormatError(
                        f"{d.file(name)}:{bad[0].line}: {who}{bad[0].message} (run 'blspeech "
                        f"validate-data-dir {path}' to list every problem, 'blspeech "
                        f"fix-data-dir {path}' to repair)")
            if not any(d.has(n) for n in ("wav.scp", "segments", "utt2spk", "text")):
                raise UserError(f"{path}: not a Kaldi data dir (no wav.scp, segments, utt2spk "
                                "or text)")
        return d

    def save(self, path: str | os.PathLike) -> None:
        """Write every table sorted (C locale), ``spk2utt`` regenerated from ``utt2spk``.

        All files are staged as temp files in ``path`` and renamed only after every one
        is complete; files of known tables this object lacks are then removed, so the
        directory never mixes old and new tables (a stale ``feats.scp``, say).
        """
        path = os.fspath(path)
        contents: dict[str, str | bytes] = {}
        for name in TABLES:
            if name not in self.tables or (name == "spk2utt" and self.has("utt2spk")):
                continue
            contents[name] = format_table(
                ((e.key, e.value) for e in self.tables[name].values()),
                name=os.path.join(path, name))
        if self.has("utt2spk"):
            contents["spk2utt"] = format_table(
                {spk: " ".join(utts) for spk, utts in self.spk2utt().items()},
                name=os.path.join(path, "spk2utt"))
        contents.update(self.extra)
        stale = [n for n in TABLES + COPIED_FILES if n not in contents]
        _write_files(path, contents, stale)

    # --- access ----------------------------------------------------------------------------

    def has(self, name: str) -> bool:
        return name in self.tables

    def file(self, name: str) -> str:
        """Path of table ``name`` in this dir, as messages show it."""
        return os.path.join(self.path or ".", name)

    def values(self, name: str) -> dict[str, str]:
        """``{key: value}`` of a table (empty if the table is absent)."""
        return {k: e.value for k, e in self.tables.get(name, {}).items()}

    def get(self, name: str, key: str, default: str | None = None) -> str | None:
        entry = self.tables.get(name, {}).get(key)
        return default if entry is None else entry.value

    def line(self, name: str, key: str) -> int | None:
        """1-based line of ``key`` in table ``name`` (None if absent or made in memory)."""
        entry = self.tables.get(name, {}).get(key)
        return entry.line if entry is not None and entry.line > 0 else None

    def where(self, name: str, key: str) -> str:
        """``dir/name:line`` of a key, for messages."""
        line = self.line(name, key)
        return self.file(name) if line is None else f"{self.file(name)}:{line}"

    def set_table(self, name: str, items: Mapping[str, str] | Iterable[tuple[str, str]]) -> None:
        """Replace a table with new ``key -> value`` items (no line numbers)."""
        pairs = items.items() if isinstance(items, Mapping) else items
        self.tables[name] = {k: TableEntry(k, v, 0) for k, v in pairs}

    @property
    def utt_source(self) -> str | None:
        """The table whose keys are the utterances: segments, else wav.scp (else utt2spk)."""
        for name in ("segments", "wav.scp", "utt2spk", "text"):
            if self.has(name):
                return name
        return None

    def utterances(self) -> list[str]:
        """Utterance ids, C-sorted."""
        source = self.utt_source
        return c_sorted(self.tables[source]) if source else []

    def __len__(self) -> int:
        source = self.utt_source
        return len(self.tables[source]) if source else 0

    def __contains__(self, utt: object) -> bool:
        source = self.utt_source
        return source is not None and utt in self.tables[source]

    def __repr__(self) -> str:
        return (f"DataDir({self.path!r}: {len(self)} utterances, {len(self.speakers())} "
                f"speakers, tables {sorted(self.tables)})")

    def _value(self, name: str, key: str, what: str) -> str:
        if name not in self.tables:
            raise UserError(f"{self.file(name)}: file not found (needed for the {what} of "
                            f"{key!r})")
        entry = self.tables[name].get(key)
        if entry is None:
            raise UserError(f"{self.file(name)}: no line for {key!r}")
        return entry.value

    def speaker(self, utt: str) -> str:
        """Speaker of an utterance (from utt2spk)."""
        value = self._value("utt2spk", utt, "speaker").split()
        if len(value) != 1:
            raise KaldiFormatError(f"{self.where('utt2spk', utt)}: utt {utt!r}: expected one "
                                   "speaker id")
        return value[0]

    def speakers(self) -> list[str]:
        """Speaker ids (C-sorted) of utt2spk, or of spk2utt without utt2spk."""
        if self.has("utt2spk"):
            return c_sorted({v.split()[0] for v in self.values("utt2spk").values()
                              if v.split()})
        return c_sorted(self.tables.get("spk2utt", {}))

    def spk2utt(self) -> dict[str, list[str]]:
        """``{speaker: [utterances]}`` derived from utt2spk (both levels C-sorted)."""
        out: dict[str, list[str]] = {}
        for utt in c_sorted(self.tables.get("utt2spk", {})):
            fields = self.tables["utt2spk"][utt].value.split()
            if fields:
                out.setdefault(fields[0], []).append(utt)
        return {spk: out[spk] for spk in c_sorted(out)}

    def recordings(self) -> list[str]:
        """Recording ids (keys of wav.scp), C-sorted."""
        return c_sorted(self.tables.get("wav.scp", {}))

    def recording(self, utt: str) -> str:
        """The recording an utterance comes from (itself when there are no segments)."""
        return self.segment(utt)[0] if self.has("segments") else utt

    def segment(self, utt: str) -> tuple[str, float, float]:
        """``(recording, start, end)`` of a segment, in seconds."""
        value = self._value("segments", utt, "segment")
        try:
            return parse_segment(value)
        except ValueError as e:
            raise KaldiFormatError(f"{self.where('segments', utt)}: utt {utt!r}: {e}") from e

    def segments(self) -> dict[str, tuple[str, float, float]]:
        """Every segment as ``{utt: (recording, start, end)}`` (empty without segments)."""
        return {utt: self.segment(utt) for utt in self.tables.get("segments", {})}

    def text(self, utt: str) -> str:
        return self._value("text", utt, "transcript")

    def wav(self, reco: str) -> str:
        """The wav.scp entry (path or ``cmd |``) of a recording."""
        return self._value("wav.scp", reco, "audio")

    def duration(self, utt: str) -> float | None:
        """Seconds from utt2dur, or None when utt2dur is absent."""
        if not self.has("utt2dur"):
            return None
        value = self._value("utt2dur", utt, "duration")
        seconds = parse_number(value)
        if seconds is None:
            raise KaldiFormatError(f"{self.where('utt2dur', utt)}: utt {utt!r}: duration "
                                   f"{value!r} is not a number")
        return seconds

    def num_frames(self, utt: str) -> int | None:
        """Frame count from utt2num_frames, or None when it is absent."""
        if not self.has("utt2num_frames"):
            return None
        value = self._value("utt2num_frames", utt, "frame count")
        if not value.isdigit():
            raise KaldiFormatError(f"{self.where('utt2num_frames', utt)}: utt {utt!r}: frame "
                                   f"count {value!r} is not a whole number")
        return int(value)

    # --- derived directories ---------------------------------------------------------------

    def subset(self, utts: Iterable[str]) -> DataDir:
        """A new DataDir with only ``utts``; recordings and speakers follow them."""
        keep = set(utts) & set(self.tables.get(self.utt_source or "", {}))
        segs = self.has("segments")
        recos = {self.recording(u) for u in keep} if segs else keep
        spks = {self.speaker(u) for u in keep} if self.has("utt2spk") else set()
        out = DataDir(path=None, extra=self.extra)
        for name, entries in self.tables.items():
            if name == "spk2utt":
                continue  # regenerated on save
            if name in UTT_TABLES or name == "segments" or (name == "wav.scp" and not segs):
                wanted = keep
            elif name in SPK_TABLES:
                wanted = keep if per_utterance(self, name) else spks
            else:
                wanted = recos
            out.tables[name] = {k: e for k, e in entries.items() if k in wanted}
        return out


def per_utterance(d: DataDir, name: str) -> bool:
    """Whether a speaker table (cmvn.scp) is keyed by utterance (per-utterance CMVN)."""
    keys = set(d.tables.get(name, {}))
    utts = set(d.tables.get(d.utt_source or "", {}))
    return bool(keys) and keys <= utts and not keys <= set(d.speakers())


def _write_files(path: str, contents: Mapping[str, str | bytes], remove: Sequence[str]) -> None:
    """Stage every file, then rename them all: an error while writing changes nothing."""
    with contextlib.ExitStack() as stack:
        for name, data in contents.items():
            mode = "wb" if isinstance(data, bytes) else "w"
            stack.enter_context(atomic_write(os.path.join(path, name), mode)).write(data)
    # Only after every new file is in place: drop tables the new dir does not have.
    for name in remove:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(path, name))
