"""Hub5 scoring (Switchboard / CallHome, eval2000) as Kaldi and NIST score it, in Python.

Kaldi's ``egs/swbd/s5c/local/score_sclite.sh`` filters the hypothesis CTM, then runs NIST's
``hubscr.pl``, which sorts the STM and CTM, rewrites both with the GLM through
``csrfilt.sh -dh`` and scores them with ``sclite -F -D`` (eval2000 also by subset: file ids
``sw_`` are Switchboard, ``en_`` CallHome). :func:`score_hub5` does the same steps:

1. :func:`filter_hyp_words` drops noise tags, ``<unk>``, hesitations and word fragments
   from the hypotheses: the reference has hesitations and fragments as optional words, so
   recognizing them gains nothing while a wrong one costs an insertion.
2. :class:`Glm` is csrfilt: the GLM's ``LHS => RHS / LEFT __ RIGHT`` rules rewrite the
   upper-cased text (rfilter1's rules, first matching rule at each character, in file order),
   hyphens between letters become spaces (``-dh``), ``(a b)`` becomes ``(a) (b)``. The STM
   text is rewritten as a whole, the CTM word by word; a CTM word that turns into several
   words shares its duration, an alternation ``{HE IS / HE HAS}`` becomes sclite's
   ``<ALT_BEGIN>`` lines.
3. :func:`assign_ctm_to_segments`: within a file and channel, segments in time order take
   the hypothesis words, in time order, whose midpoint is before the segment's end (so a
   word between two segments goes to the later one and the last segment takes the rest);
   the end time is compared in single precision, as sclite reads it. A segment reading
   ``IGNORE_TIME_SEGMENT_IN_SCORING`` takes its words out of the scoring.
4. Each segment is aligned with :func:`blspeech.scoring.wer.align` (sclite's network alignment,
   case-insensitive): a word in parentheses may be deleted at no error (a correct word,
   deleted or not), a fragment ``th-`` matches any word starting ``th``, an alternation
   matches any of its choices.

Everything above was checked against the real SCTK tools (``tests/test_hub5.py``: csrfilt's
output line for line, sclite's counts on handmade and random cases).

Example:
    >>> results = score_hub5("data/eval2000/stm", "exp/decode/eval2000.ctm",
    ...                      "data/eval2000/glm")                          # doctest: +SKIP
    >>> {name: round(r.wer, 1) for name, r in results.items()}             # doctest: +SKIP
    {'all': 18.2, 'swbd': 12.4, 'callhm': 23.9}
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from blspeech.errors import UserError
from blspeech.scoring.wer import (
    Alternation,
    ScoreResult,
    Token,
    align,
    f32,
    parse_alternation,
    summarize,
    utterance_score,
)

__all__ = ["CtmAlternation", "CtmWord", "DEFAULT_SUBSETS", "Glm", "GlmRule",
           "KALDI_HESITATIONS", "KALDI_NOISE", "StmSegment", "assign_ctm_to_segments",
           "ctm_from_utterance_ctm", "filter_hyp_words", "read_ctm", "read_stm", "score_hub5",
           "split_tokens"]

#: eval2000's parts by file id, as Kaldi scores them (``grep '^en_'`` ...).
DEFAULT_SUBSETS: dict[str, str] = {"swbd": r"^sw_", "callhm": r"^en_"}

#: What Kaldi's swbd ``score_sclite.sh`` removes from the CTM as hesitations (the words that
#: the Hub5 GLM maps to %HESITATION), plus %HESITATION itself.
KALDI_HESITATIONS = ("uh", "um", "eh", "mm", "hm", "ah", "huh", "ha", "er", "oof", "hee",
                     "ach", "eee", "ew", "%hesitation")

#: Noise and unknown-word tags Kaldi removes from the CTM before scoring.
KALDI_NOISE = ("[noise]", "[laughter]", "[vocalized-noise]", "<unk>")

IGNORE_SEGMENT = "ignore_time_segment_in_scoring"
_ALT_MARKS = ("<alt_begin>", "<alt>", "<alt_end>")
# C's isspace() and Perl's \s in the C locale: ASCII whitespace only.
_C_SPACE = " \t\n\v\f\r"
_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_SPACES = re.compile(r"[ \t\n\v\f\r]+")


def _split(text: str) -> list[str]:
    """Whitespace-separated fields, whitespace as the C tools see it (ASCII only)."""
    return [f for f in _SPACES.split(text) if f]


def _lower(text: str) -> str:
    # sclite folds case byte by byte in the C locale: ASCII letters only.
    return text.translate(_ASCII_LOWER)


def _number(text: str, what: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise UserError(f"{where}: {what} {text!r} is not a number")
    return value


def _lines(path: str | os.PathLike) -> list[tuple[int, str]]:
    """(line number, text) of a UTF-8 file; UserError naming the file and line otherwise."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError as e:
        raise UserError(f"{path}: file not found") from e
    except OSError as e:
        raise UserError(f"{path}: cannot read: {e.strerror or e}") from e
    out = []
    for n, raw in enumerate(data.split(b"\n"), 1):
        try:
            out.append((n, raw.decode("utf-8")))
        except UnicodeDecodeError as e:
            raise UserError(f"{path}:{n}: not UTF-8 text ({e.reason} at column "
                            f"{e.start + 1})") from e
    if out and out[-1][1] == "":
        out.pop()
    return out


def _is_comment(line: str) -> bool:
    return line.lstrip().startswith(";;")


# --- STM ------------------------------------------------------------------------------------


def split_tokens(text: str, where: str = "") -> list[str]:
    """sclite's tokens of a transcript: words, and ``{ ... }`` alternations kept whole.

    Example:
        >>> split_tokens("i {HE IS / HE HAS} (uh) here")
        ['i', '{HE IS / HE HAS}', '(uh)', 'here']
    """
    tokens, i, n = [], 0, len(text)
    while i < n:
        if text[i] in _C_SPACE:
            i += 1
            continue
        if text[i] == "{":
            j = text.find("}", i)
            if j < 0:
                at = f"{where}: " if where else ""
                raise UserError(f"{at}alternation {text[i:]!r} has no closing '}}'")
            tokens.append(text[i:j + 1])
            i = j + 1
        else:
            j = i
            while j < n and text[j] not in _C_SPACE:
                j += 1
            tokens.append(text[i:j])
            i = j
    return tokens


@dataclass(frozen=True)
class StmSegment:
    """One reference segment: ``file channel speaker start end [<label>] text``."""

    file: str
    channel: str
    speaker: str
    start: float
    end: float
    text: str = ""
    label: str | None = None
    where: str = ""  # file:line, for messages

    @property
    def ignored(self) -> bool:
        """A segment that sclite leaves out (``IGNORE_TIME_SEGMENT_IN_SCORING``)."""
        return IGNORE_SEGMENT in self.text.lower()

    def tokens(self) -> list[Token]:
        """The words and alternations sclite aligns: case-folded, alternations parsed."""
        out: list[Token] = []
        for token in split_tokens(_lower(self.text), self.where):
            if token.startswith("{"):
                try:
                    out.append(parse_alternation(token))
                except UserError as e:
                    raise UserError(f"{self.where}: {e}") from e
            else:
                out.append(token)
        return out


def _stm_fields(fields: list[str], where: str) -> StmSegment:
    if len(fields) < 5:
        raise UserError(f"{where}: expected 'file channel speaker start end [<label>] words', "
                        f"got {len(fields)} field(s)")
    start = _number(fields[3], "start time", where)
    end = _number(fields[4], "end time", where)
    if end < start:
        raise UserError(f"{where}: end time {fields[4]} is before start time {fields[3]}")
    rest = fields[5:]
    label = None
    if rest and re.fullmatch(r"<\S+>", rest[0]):
        label, rest = rest[0], rest[1:]
    return StmSegment(fields[0], fields[1], fields[2], start, end, " ".join(rest), label,
                      where)


def read_stm(path: str | os.PathLike) -> list[StmSegment]:
    """The segments of an STM file, in file order; ``;;`` comments and blank lines skipped.

    Errors (UserError naming file:line): fewer than 5 fields, times that are not numbers,
    an end before the start.

    Example:
        >>> segs = read_stm("data/eval2000/stm")                       # doctest: +SKIP
        >>> segs[0].file, segs[0].channel, segs[0].label, segs[0].text  # doctest: +SKIP
        ('en_4156', 'A', '<O,en,F,en-F>', 'oh yeah (%hesitation)')
    """
    path = os.fspath(path)
    return [_stm_fields(_split(line), f"{path}:{n}") for n, line in _lines(path)
            if line.strip() and not _is_comment(line)]


# --- CTM ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CtmWord:
    """One hypothesis word: ``file channel start duration word [confidence]``."""

    file: str
    channel: str
    start: float
    duration: float
    word: str
    confidence: str | None = None
    where: str = ""

    @property
    def midpoint(self) -> float:
        return self.start + self.duration / 2.0


@dataclass(frozen=True)
class CtmAlternation:
    """Alternative word sequences at one place of a CTM (sclite's ``<ALT_BEGIN>`` lines).

    A choice may be empty: sclite reads it as its empty word ``@``.
    """

    file: str
    channel: str
    choices: tuple[tuple[CtmWord, ...], ...]
    where: str = ""

    @property
    def start(self) -> float:
        return min((w.start for c in self.choices for w in c), default=0.0)

    @property
    def midpoint(self) -> float:
        # sclite: the largest midpoint of its words (0 if it has none).
        return max((w.midpoint for c in self.choices for w in c), default=0.0)


CtmEntry = CtmWord | CtmAlternation


def _parse_ctm(lines: Iterable[tuple[str, str]]) -> list[CtmEntry]:
    """CTM entries from (where, line) pairs; ``<ALT_BEGIN>`` groups become alternations."""
    out: list[CtmEntry] = []
    group: list[list[CtmWord]] | None = None
    group_where = ""
    for where, line in lines:
        fields = _split(line)
        if not fields or _is_comment(line):
            continue
        if len(fields) not in (5, 6):
            raise UserError(f"{where}: expected 'file channel start duration word "
                            f"[confidence]', got {len(fields)} field(s)")
        mark = fields[4].lower()
        if mark in _ALT_MARKS:
            if mark == "<alt_begin>":
                if group is not None:
                    raise UserError(f"{where}: <ALT_BEGIN> inside an alternation")
                group, group_where = [[]], where
            elif group is None:
                raise UserError(f"{where}: {fields[4]} without <ALT_BEGIN>")
            elif mark == "<alt>":
                group.append([])
            else:
                out.append(CtmAlternation(fields[0], fields[1],
                                          tuple(tuple(c) for c in group), group_where))
                group = None
            continue
        word = CtmWord(fields[0], fields[1], _number(fields[2], "start time", where),
                       _number(fields[3], "duration", where), fields[4],
                       fields[5] if len(fields) == 6 else None, where)
        if group is not None:
            group[-1].append(word)
        else:
            out.append(word)
    if group is not None:
        raise UserError(f"{group_where}: <ALT_BEGIN> without <ALT_END>")
    return out


def read_ctm(path: str | os.PathLike) -> list[CtmEntry]:
    """The entries of a CTM file in file order: :class:`CtmWord` per line, and
    :class:`CtmAlternation` for ``<ALT_BEGIN>`` ... ``<ALT>`` ... ``<ALT_END>`` groups (as
    csrfilt writes them). ``;;`` comments and blank lines are skipped.

    Errors (UserError naming file:line): not 5 or 6 fields, times that are not numbers,
    unbalanced alternation markers.

    Example:
        >>> read_ctm("exp/decode/eval2000.ctm")[0]                    # doctest: +SKIP
        CtmWord(file='en_4156', channel='A', start=301.86, duration=0.2, word='oh', ...)
    """
    path = os.fspath(path)
    return _parse_ctm((f"{path}:{n}", line) for n, line in _lines(path))


def filter_hyp_words(words: Iterable[CtmEntry], *, noise: Sequence[str] = KALDI_NOISE,
                     hesitations: Sequence[str] = KALDI_HESITATIONS,
                     fragments: bool = True) -> list[CtmEntry]:
    """Kaldi's clean-up of a Hub5 hypothesis: drop noise tags, ``<unk>``, hesitations and
    (with ``fragments``) words ending in ``-``; case-insensitive, alternations kept.

    Kaldi greps CTM lines (``[NOISE|LAUGHTER|VOCALIZED-NOISE]``, ``<UNK>``, `` UH$`` ...,
    ``-$``); this compares whole words, so a real word such as "laughter" stays, and a
    confidence column does not stop a hesitation or fragment from being dropped.

    Example:
        >>> ws = [CtmWord("f", "A", 0, 1, w) for w in ["[noise]", "UH", "so", "th-", "<unk>"]]
        >>> [w.word for w in filter_hyp_words(ws)]
        ['so']
    """
    drop = {_lower(w) for w in (*noise, *hesitations)}
    out = []
    for w in words:
        if isinstance(w, CtmWord):
            low = _lower(w.word)
            if low in drop or (fragments and low.endswith("-")):
                continue
        out.append(w)
    return out


# --- Kaldi per-utterance CTM to file CTM ---------------------------------------------------


def _table(source: str | os.PathLike | Mapping, fields: int, what: str
           ) -> dict[str, tuple[list[str], str]]:
    """A Kaldi table as key -> (value fields, where), from a file or a mapping."""
    if isinstance(source, Mapping):
        out = {}
        for key, value in source.items():
            parts = _split(value) if isinstance(value, str) else [str(v) for v in value]
            if len(parts) != fields:
                raise UserError(f"{what} entry {key!r}: expected {fields} values, got "
                                f"{value!r}")
            out[key] = (parts, f"{what} entry {key!r}")
        return out
    from blspeech.io.kaldi.tables import read_table

    path = os.fspath(source)
    out = {}
    for key, entry in read_table(path, check_sorted=False).items():
        parts = _split(entry.value)
        if len(parts) != fields:
            raise UserError(f"{path}:{entry.line}: expected {fields + 1} fields in {what}, "
                            f"got {entry.key} {entry.value}")
        out[key] = (parts, f"{path}:{entry.line}")
    return out


def _not_an_utterance(where: str, utt: str, segments: str | os.PathLike | Mapping,
                      files: Mapping[str, tuple[list[str], str]]) -> UserError:
    # The usual mistake: a file-level CTM (e.g. Kaldi's, or already converted) given with
    # --data-dir, which expects blspeech decode's per-utterance one. Say which is which.
    form = "a per-utterance CTM ('utt 1 start duration word [confidence]', as blspeech " \
           "decode writes it)"
    if utt in files or any(parts[0] == utt for parts, _ in files.values()):
        return UserError(f"{where}: {utt!r} is a recording, not an utterance: this looks like "
                         "a file-level CTM ('file channel start duration word'); score it "
                         f"without --data-dir, or give {form}")
    name = "segments" if isinstance(segments, Mapping) else os.fspath(segments)
    return UserError(f"{where}: utterance {utt!r} is not in {name}; converting needs {form} "
                     "decoded from that data dir")


def ctm_from_utterance_ctm(utt_ctm_lines: Iterable[str],
                           segments: str | os.PathLike | Mapping,
                           reco2file_and_channel: str | os.PathLike | Mapping,
                           *, name: str = "CTM", warnings: list[str] | None = None
                           ) -> list[str]:
    """File CTM lines from a per-utterance CTM, as Kaldi's ``utils/convert_ctm.pl``.

    ``utt 1 start duration word [conf]`` (times from the utterance start, as ``blspeech
    decode`` writes them) becomes ``file channel start duration word [conf]`` with the
    start moved by the utterance's ``segments`` start and both times printed with 2
    decimals. ``segments`` (``utt reco start end``) and ``reco2file_and_channel`` (``reco
    file channel``) are paths or mappings to those fields. A word ending more than 10 ms
    after its segment is kept, with a line in ``warnings``. ``name`` names the CTM in
    messages (``name:line``).

    Errors (UserError): a malformed CTM line, an utterance missing from ``segments``, a
    recording missing from ``reco2file_and_channel``.

    Example:
        >>> ctm_from_utterance_ctm(["utt 1 8.0 1.0 word 0.5"], {"utt": "reco 10.0 20.0"},
        ...                        {"reco": "file A"})
        ['file A 18.00 1.00 word 0.5']
    """
    segs = _table(segments, 3, "segments")
    files = _table(reco2file_and_channel, 2, "reco2file_and_channel")
    out = []
    for n, line in enumerate(utt_ctm_lines, 1):
        where = f"{name}:{n}"
        fields = _split(line)
        if not fields or _is_comment(line):
            continue
        if len(fields) not in (5, 6):
            raise UserError(f"{where}: expected 'utt channel start duration word "
                            f"[confidence]', got {line.strip()!r}")
        utt, _, start, dur, word = fields[:5]
        if utt not in segs:
            raise _not_an_utterance(where, utt, segments, files)
        (reco, seg_start, seg_end), seg_where = segs[utt]
        if reco not in files:
            raise UserError(f"{seg_where}: recording {reco!r} is not in "
                            "reco2file_and_channel")
        (file_id, channel), _ = files[reco]
        begin = _number(start, "start time", where) + _number(seg_start, "segment start",
                                                              seg_where)
        length = _number(dur, "duration", where)
        conf = f" {fields[5]}" if len(fields) == 6 else ""
        new = f"{file_id} {channel} {begin:.2f} {length:.2f} {word}{conf}"
        end = _number(seg_end, "segment end", seg_where)
        # convert_ctm.pl's check, on the printed times.
        if float(f"{begin:.2f}") + float(f"{length:.2f}") > end + 0.01 and warnings is not None:
            warnings.append(f"{where}: word ends after its segment: {new}")
        out.append(new)
    return out


# --- GLM (csrfilt.sh / rfilter1) -----------------------------------------------------------


@dataclass(frozen=True)
class GlmRule:
    """``lhs => rhs / left __ right`` (contexts may be empty), from line ``line``."""

    lhs: str
    rhs: str
    left: str = ""
    right: str = ""
    line: int = 0


def _strip_bounds(text: str, s: int, e: int) -> tuple[int, int]:
    # rfilter1 drops one pair of [] or "" around a field (so it can hold edge spaces).
    if s <= e and ((text[s] == "[" and text[e] == "]") or (text[s] == '"' and text[e] == '"')):
        return s + 1, e - 1
    return s, e


def _last_nonspace(text: str) -> int:
    e = len(text) - 1
    while e >= 0 and text[e] in _C_SPACE:
        e -= 1
    return e


def _parse_rule(text: str, where: str, n: int) -> GlmRule:
    """rfilter1's r_process_data_line (grules2.c), quirks included."""
    ieq = text.find("=>")
    if ieq < 0:
        raise UserError(f"{where}: expected 'LHS => RHS [/ LEFT __ RIGHT]' (no '=>')")
    ictx, islot = text.rfind("/"), -1
    if ictx >= 0:
        # The last '/' starts the context unless it sits inside [...] (pointer comparison
        # in C: a missing bracket is NULL, below any position).
        if text.find("]", ictx) < text.find("[", ictx):
            ictx = -1
        else:
            islot = text.find("_", ictx)
    s = 0
    while s < len(text) and text[s] in _C_SPACE:
        s += 1
    lhs = ""
    if s < ieq:
        e = ieq - 1
        while e > s and text[e] in _C_SPACE:
            e -= 1
        s, e = _strip_bounds(text, s, e)
        lhs = text[s:e + 1]
    s = ieq
    if ictx < 0:
        e = _last_nonspace(text)
    else:
        e = ictx - 1
        while e > s and text[e] in _C_SPACE:
            e -= 1
    rhs = _after_marker(text, s, e)
    left = right = ""
    if ictx >= 0 and islot >= 0:
        s, e = ictx, islot - 1
        while e > s and text[e] in _C_SPACE:
            e -= 1
        left = _after_marker(text, s, e)
        right = _after_marker(text, islot, _last_nonspace(text))
    if not lhs:
        raise UserError(f"{where}: empty left-hand side (the rule could never apply)")
    return GlmRule(lhs, rhs, left, right, n)


def _after_marker(text: str, s: int, e: int) -> str:
    """``text[s:e + 1]`` without its first token (the marker: '=>', '/' or '__') and the
    blanks around the rest, as grules2.c scans it; '' when nothing follows the marker."""
    while s < e and text[s] not in _C_SPACE:
        s += 1
    if s >= e:
        return ""
    while text[s] in _C_SPACE:
        s += 1
    s, e = _strip_bounds(text, s, e)
    return text[s:e + 1]


def _aux_value(text: str) -> str | None:
    # sstok2(line, "\"'"): from after the first quote to before the next quote of either kind.
    m = re.search(r"[\"']([^\"']*)", text)
    return None if m is None else m.group(1)


class _RuleSet:
    """The rules one input type sees, and rfilter1's rewriting with them."""

    def __init__(self, lines: list[tuple[int, str]], path: str):
        self.name = self.desc = ""
        self.format, self.copy_no_hit, self.case_sensitive, max_rules = "NIST1", True, True, 400
        self.rules: list[GlmRule] = []
        if not lines:
            raise UserError(f"{path}: the GLM is empty")
        # rfilter1 takes the comment marker from the first line: its leading printable,
        # non-space characters (';;'). That line is never a rule.
        flag = re.match(r"[!-~]*", lines[0][1]).group(0)
        for n, raw in lines[1:]:
            where = f"{path}:{n}"
            text = raw.rstrip(_C_SPACE)
            if not text or (flag and text.startswith(flag)):
                continue
            if text.startswith("*"):
                value = _aux_value(text)
                if value is None:
                    raise UserError(f"{where}: header line has no quoted value; write "
                                    "* keyword = 'value'")
                key = text.upper()
                if "NAME" in key:
                    self.name = value
                if "DESC" in key:
                    self.desc = value
                if "FORMAT" in key:
                    self.format = value
                if "MAX_NRULES" in key:
                    max_rules = int(re.match(r"\s*([+-]?\d*)", value).group(1) or 0)
                if "COPY_NO_HIT" in key:
                    self.copy_no_hit = value.upper() in ("T", "YES", "TRUE")
                if "CASE_SENSITIVE" in key:
                    self.case_sensitive = value.upper() in ("T", "YES", "TRUE")
                continue
            if flag and flag in text:
                text = text[:text.index(flag)] + " " * (len(text) - text.index(flag))
            if not text.strip(_C_SPACE):
                raise UserError(f"{where}: a comment must start the line (rfilter1 rejects "
                                "a line that is blank before its comment)")
            if len(self.rules) >= max_rules:
                raise UserError(f"{where}: more rules than max_nrules = {max_rules}; raise "
                                "max_nrules in the GLM header")
            self.rules.append(_parse_rule(text, where, n))
        if self.format != "NIST1":
            raise UserError(f"{path}: format {self.format!r} is not supported; rfilter1 "
                            "applies only format = 'NIST1'")
        self._rhs = [r.rhs for r in self.rules]
        flags = 0 if self.case_sensitive else re.IGNORECASE | re.ASCII
        fold = self._fold
        # rfilter1 indexes the rules by their first character and, at each position, tries
        # that character's rules in file order; the first whose text and contexts match
        # fires. One regex per first character keeps that order (an alternation tries its
        # branches in order) and its speed.
        groups: dict[str, list[str]] = {}
        for k, r in enumerate(self.rules):
            left = f"(?<={re.escape(r.left)})" if r.left else ""
            right = f"(?={re.escape(r.right)})" if r.right else ""
            groups.setdefault(fold(r.lhs[0]), []).append(
                f"(?P<r{k}>{left}{re.escape(r.lhs)}{right})")
        self._by_key = {key: re.compile("|".join(parts), flags) for key, parts in groups.items()}
        self._starts = re.compile("[" + "".join(re.escape(k) for k in groups) + "]", flags) \
            if groups else None

    def _fold(self, ch: str) -> str:
        return ch if self.case_sensitive else ch.translate(_ASCII_UPPER)

    def rewrite(self, text: str) -> str:
        """rfilter1's apply_rules2: scan left to right; where a rule matches (its contexts
        checked on the input), write its right-hand side and skip its left-hand side;
        copy (or, without copy_no_hit, drop) the other characters."""
        out, pos, at = [], 0, 0
        while self._starts is not None:
            cand = self._starts.search(text, at)
            if cand is None:
                break
            i = cand.start()
            m = self._by_key[self._fold(text[i])].match(text, i)
            if m is None:
                at = i + 1
                continue
            if self.copy_no_hit:
                out.append(text[pos:i])
            out.append(self._rhs[int(m.lastgroup[1:])])
            pos = at = m.end()
        if self.copy_no_hit:
            out.append(text[pos:])
        return "".join(out)


# Perl's \s in csrfilt's regexes: ASCII whitespace.
_WS = "[ \t\n\r\f\v]"
_NWS = "[^() \t\n\r\f\v]"
_OPT_SPLIT = re.compile(rf"(\({_WS}+{_NWS}+{_WS}+)({_NWS}+)")
_OPT_GROUP = re.compile(rf"{_WS}\([^()]+\)")


def _check_parens(text: str, where: str) -> None:
    """csrfilt's validateOptDelTags: every '(' closes with ')' before the next '('."""
    t = " " + text.replace("(", "( ").replace(")", " )") + " "
    t = t.replace("(", "   (").replace(")", ")  ", 1)
    if re.search(r"[()]", _OPT_GROUP.sub("", t)):
        at = f"{where}: " if where else ""
        raise UserError(f"{at}unbalanced or nested parentheses in {text.strip()!r}; csrfilt "
                        "only takes '(word ...)' groups")


class Glm:
    """A NIST global mapping file, applied as ``csrfilt.sh -dh`` applies it.

    :meth:`read` parses the rules for both kinds of input (``;; INPUT_DEPENDENT_APPLICATION
    = "regex"`` sections apply where the regex matches ``stm``/``ref`` or ``ctm``/``hyp``).
    Errors (UserError naming file:line): a data line without ``=>``, an empty left-hand
    side, a header line without a quoted value, more rules than ``max_nrules``, a format
    other than NIST1, a comment that does not start its line.

    Example:
        >>> glm = Glm.from_text(";; demo\\n* case_sensitive = 'F'\\n"
        ...                     "UH => %HESITATION / [ ] __ [ ]\\n"
        ...                     "[HE'S] => [{HE IS / HE HAS}] / [ ] __ [ ]\\n")
        >>> glm.apply(["uh", "he's", "x-ray"], side="ref")
        ['%HESITATION', '{HE IS / HE HAS}', 'X', 'RAY']
    """

    def __init__(self, lines: list[tuple[int, str]], path: str = "GLM"):
        self.path = path
        self._sets = {"ref": self._ruleset(lines, "stm", "ref"),
                      "hyp": self._ruleset(lines, "ctm", "hyp")}

    def _ruleset(self, lines: list[tuple[int, str]], input_type: str, purpose: str
                 ) -> _RuleSet:
        kept, applies = [], True
        for n, text in lines:
            m = re.match(r';;\s+INPUT_DEPENDENT_APPLICATION\s*=\s*"([^"]*)"', text)
            if m:
                try:
                    exp = re.compile(m.group(1).lower())
                except re.error as e:
                    raise UserError(f"{self.path}:{n}: bad INPUT_DEPENDENT_APPLICATION "
                                    f"regex: {e}") from e
                applies = bool(exp.search(input_type) or exp.search(purpose))
            if applies:
                kept.append((n, text))
        return _RuleSet(kept, self.path)

    @classmethod
    def read(cls, path: str | os.PathLike) -> Glm:
        """Parse a GLM file (UTF-8)."""
        return cls(_lines(path), os.fspath(path))

    @classmethod
    def from_text(cls, text: str, path: str = "GLM") -> Glm:
        """Parse GLM text (for tests and examples)."""
        return cls(list(enumerate(text.split("\n"), 1)), path)

    def rules(self, side: str = "ref") -> list[GlmRule]:
        """The rules that apply to the reference (STM) or hypothesis (CTM) side."""
        return list(self._side(side).rules)

    def _side(self, side: str) -> _RuleSet:
        if side not in self._sets:
            raise UserError(f"side must be 'ref' or 'hyp', got {side!r}")
        return self._sets[side]

    def filter_text(self, text: str, side: str, where: str = "") -> str:
        """csrfilt's transcript filter on one line's text: upper-case, GLM rules, ``-dh``
        hyphen splitting, ``(a b)`` -> ``(a) (b)``; returns the text single-spaced.

        For ``side="ref"`` ``text`` is an STM line's words; for ``"hyp"`` one CTM word.
        Parentheses must pair up (csrfilt refuses the file otherwise).
        """
        rules = self._side(side)
        if side == "ref":
            # csrfilt cuts the STM text with its leading separator and trailing pad space.
            words = _split(text)
            text = " " + " ".join(words) + " " if words else " "
        _check_parens(text, where)
        t = text.translate(_ASCII_UPPER).replace("(", "( ").replace(")", " )")
        t = rules.rewrite(" " + t + " \n")
        t = re.sub(r"([^( ])-(?=[^) ])", r"\1 ", t)  # -dh
        while True:  # ( a b ) -> ( a ) ( b ), one at a time as csrfilt's loop does
            t, n = _OPT_SPLIT.subn(r"\1) ( \2", t, count=1)
            if not n:
                break
        t = re.sub(r"^ ", "", t, count=1)
        t = re.sub(r" $", "", t, count=1)
        t = re.sub(rf"\({_WS}+", "(", t)
        t = re.sub(rf"{_WS}+\)", ")", t)
        return _squeeze(t)

    def apply(self, words: Sequence[str] | str, side: str = "ref") -> list[str]:
        """The tokens sclite would see after csrfilt: words, ``{A / B C}`` alternations.

        ``side="ref"`` filters the words as one STM text; ``"hyp"`` filters each word on
        its own, as csrfilt does for a CTM (so a rule spanning two words never applies).
        """
        words = _split(words) if isinstance(words, str) else list(words)
        if side == "ref":
            return split_tokens(self.filter_text(" ".join(words), "ref"))
        self._side(side)
        out: list[str] = []
        for word in words:
            for entry in self._expand_ctm(["f", "c", "0", "1"], word, None, ""):
                if isinstance(entry, CtmAlternation):
                    out.append("{" + " / ".join(" ".join(w.word for w in c)
                                                for c in entry.choices) + "}")
                else:
                    out.append(entry.word)
        return out

    def _expand_ctm(self, head: list[str], word: str, conf: str | None, where: str,
                    warnings: list[str] | None = None) -> list[CtmEntry]:
        """csrfilt's CTM output for one line (its Perl, quirks included), parsed."""
        text = self.filter_text(word, "hyp", where)
        if not text and conf is not None and warnings is not None:
            warnings.append(f"{where}: the GLM deletes {word!r}; as csrfilt does, its "
                            f"confidence {conf!r} is scored as the word")
        lines = _ctm_out_lines(head, text, conf, where)
        return _parse_ctm((where, line) for line in lines)

    def filter_ctm_lines(self, lines: Iterable[str], path: str = "CTM") -> list[str]:
        """``csrfilt.sh -dh -i ctm -t hyp GLM`` on CTM lines: the output lines.

        ``;;`` comments pass unchanged, blank lines vanish. Known csrfilt quirk, kept: a
        word the GLM deletes on a line with a confidence leaves the confidence as its word.
        """
        out = []
        for n, line in enumerate(lines, 1):
            where = f"{path}:{n}"
            if line.startswith(";;"):
                out.append(line.rstrip("\n"))
                continue
            fields = _split(line)
            if not fields:
                continue
            if len(fields) not in (5, 6):
                raise UserError(f"{where}: expected 'file channel start duration word "
                                f"[confidence]', got {len(fields)} field(s)")
            if fields[2:4] != ["*", "*"]:  # csrfilt's own <ALT> lines carry no times
                _number(fields[2], "start time", where)
                _number(fields[3], "duration", where)
            text = self.filter_text(fields[4], "hyp", where)
            out += _ctm_out_lines(fields[:4], text, fields[5] if len(fields) == 6 else None,
                                  where)
        return out

    def filter_stm_lines(self, lines: Iterable[str], path: str = "STM") -> list[str]:
        """``csrfilt.sh -dh -i stm -t ref GLM`` on STM lines: the output lines."""
        out = []
        for n, line in enumerate(lines, 1):
            if line.startswith(";;"):
                out.append(line.rstrip("\n"))
                continue
            if not line.strip():
                continue
            fields = _split(line)
            seg = _stm_fields(fields, f"{path}:{n}")
            text = self.filter_text(seg.text, "ref", seg.where)
            out.append(" ".join([*fields[:5 + (seg.label is not None)], *_split(text)]))
        return out

    def filter_stm(self, segments: Iterable[StmSegment]) -> list[StmSegment]:
        """The segments with their text filtered as csrfilt filters an STM."""
        return [replace(s, text=self.filter_text(s.text, "ref", s.where)) for s in segments]

    def filter_ctm(self, entries: Iterable[CtmEntry], warnings: list[str] | None = None
                   ) -> list[CtmEntry]:
        """The CTM entries filtered as csrfilt filters a CTM (see :meth:`filter_ctm_lines`);
        words inside an existing alternation are filtered too."""
        out: list[CtmEntry] = []
        for e in entries:
            if isinstance(e, CtmAlternation):
                choices = []
                for choice in e.choices:
                    words: list[CtmWord] = []
                    for w in choice:
                        for x in self._word(w, warnings):
                            if isinstance(x, CtmAlternation):
                                raise UserError(f"{w.where}: the GLM makes an alternation "
                                                "inside an alternation")
                            words.append(x)
                    choices.append(tuple(words))
                out.append(replace(e, choices=tuple(choices)))
            else:
                out += self._word(e, warnings)
        return out

    def _word(self, w: CtmWord, warnings: list[str] | None) -> list[CtmEntry]:
        head = [w.file, w.channel, repr(w.start), repr(w.duration)]
        return self._expand_ctm(head, w.word, w.confidence, w.where, warnings)


def _squeeze(text: str) -> str:
    # csrfilt's last step: strip and single-space (spaces and tabs).
    return re.sub(r"[ \t]+", " ", text.replace("\n", " ")).strip(" \t")


def _perl_split_slash(data: str) -> list[str]:
    # Perl's split(/\//, $data): no fields for an empty string, trailing empties dropped.
    if data == "":
        return []
    parts = data.split("/")
    while parts and parts[-1] == "":
        parts.pop()
    return parts


def _ctm_out_lines(head: list[str], text: str, conf: str | None, where: str) -> list[str]:
    """csrfilt's CTM re-assembly (the Perl here-document in csrfilt.sh) for one line."""
    fields = [*head, *_split(text), *([conf] if conf is not None else [])]
    line = re.sub(r"([{}])", r" \1 ", " ".join(fields))
    ll = _split(line)
    if len(ll) == 5:
        return [_squeeze(line)]
    if ll and re.fullmatch(r"[0-9.\-]*", ll[-1]):
        limit, cf = len(ll) - 2, ll[-1]
    else:
        limit, cf = len(ll) - 1, ""
    count = limit - 4 + 1
    stop = 4 + count if count >= 0 else len(ll) + count
    data = " ".join(ll[4:max(4, stop)])
    rest = ll[:4] + ll[max(4, stop):]
    sets = _perl_split_slash(data)
    out = []
    if len(sets) > 1:
        out.append(f"{rest[0]} {rest[1]} * * <ALT_BEGIN>")
    for k, s in enumerate(sets):
        words = _split(re.sub(r"[{}]", "", s))
        if not words:
            raise UserError(f"{where}: the GLM gives an empty alternative for this word "
                            "(csrfilt dies on it: division by zero)")
        dur = float(rest[3]) / len(words)
        for i, w in enumerate(words):
            out.append(_squeeze(f"{rest[0]} {rest[1]} {float(rest[2]) + dur * i:.3f} "
                                f"{dur:.3f} {w} {cf}"))
        if len(sets) > 1 and k != len(sets) - 1:
            out.append(f"{rest[0]} {rest[1]} * * <ALT>")
    if len(sets) > 1:
        out.append(f"{rest[0]} {rest[1]} * * <ALT_END>")
    return out


# --- segment assignment and scoring ---------------------------------------------------------


def _key(file: str, channel: str) -> tuple[str, str]:
    return _lower(file), _lower(channel)


def assign_ctm_to_segments(segments: Sequence[StmSegment], ctm: Iterable[CtmEntry], *,
                           sort: bool = True) -> list[list[CtmEntry]]:
    """The hypothesis entries of each segment (same order as ``segments``), as sclite
    assigns them.

    Per file and channel (case-insensitive), segments sorted by start time take the
    entries in time order: each segment takes entries while their midpoint is before its
    end time (read in single precision, as sclite does), the last segment takes the rest.
    Words between segments thus go to the next one. Segments marked
    ``IGNORE_TIME_SEGMENT_IN_SCORING`` take words too (which are then not scored). An
    entry whose file and channel have no segment is a UserError (sclite stops there too).
    With ``sort=False`` the entries keep their order within a channel: sclite reads them
    in file order, and hubscr sorts them before csrfilt splits words, so
    :func:`score_hub5` sorts first and passes the GLM's output unsorted.

    Example:
        >>> segs = [StmSegment("f", "A", "s", 0, 2, "a"), StmSegment("f", "A", "s", 3, 5, "b")]
        >>> words = [CtmWord("f", "A", t, 0.2, w) for t, w in [(0.5, "a"), (2.5, "x"),
        ...                                                    (3.5, "b"), (9, "y")]]
        >>> [[w.word for w in ws] for ws in assign_ctm_to_segments(segs, words)]
        [['a'], ['x', 'b', 'y']]
    """
    by_channel: dict[tuple[str, str], list[int]] = {}
    for i, s in enumerate(segments):
        by_channel.setdefault(_key(s.file, s.channel), []).append(i)
    words: dict[tuple[str, str], list[CtmEntry]] = {}
    for e in ctm:
        key = _key(e.file, e.channel)
        if key not in by_channel:
            raise UserError(f"{e.where or 'CTM'}: file {e.file!r} channel {e.channel!r} has "
                            "no segment in the STM; score against the matching STM")
        words.setdefault(key, []).append(e)
    out: list[list[CtmEntry]] = [[] for _ in segments]
    for key, idx in by_channel.items():
        order = sorted(idx, key=lambda i: segments[i].start)
        entries = words.get(key, [])
        if sort:
            entries = sorted(entries, key=lambda e: e.start)  # stable, as hubscr's sort
        pos = 0
        for k, i in enumerate(order):
            if k == len(order) - 1:
                end = len(entries)
            else:
                end, limit = pos, f32(segments[i].end)
                while end < len(entries) and entries[end].midpoint < limit:
                    end += 1
            out[i] = entries[pos:end]
            pos = end
    return out


def _hyp_tokens(entries: Sequence[CtmEntry]) -> list[Token]:
    out: list[Token] = []
    for e in entries:
        if isinstance(e, CtmAlternation):
            # sclite puts its empty word '@' in an empty choice of a CTM alternation.
            out.append(Alternation(tuple(tuple(_lower(w.word) for w in c) or ("@",)
                                         for c in e.choices)))
        else:
            out.append(_lower(e.word))
    return out


def score_hub5(stm_path: str | os.PathLike, ctm_path: str | os.PathLike,
               glm_path: str | os.PathLike | None = None,
               subsets: Mapping[str, str] | None = None, *, hyp_filter: bool = True,
               ctm_lines: Sequence[str] | None = None) -> dict[str, ScoreResult]:
    """Score a CTM against an STM as Kaldi's swbd ``score_sclite.sh`` + ``hubscr.pl`` do.

    Returns ``{"all": ..., subset: ...}`` :class:`~blspeech.scoring.wer.ScoreResult`'s (counts,
    per-speaker counts, per-segment alignments). A subset holds the segments and words
    whose file id matches its regex (``re.search``), default :data:`DEFAULT_SUBSETS`; a
    subset matching no segment is left out. ``hyp_filter`` applies
    :func:`filter_hyp_words` first; without ``glm_path`` no GLM is applied (plain ``sclite
    -F -D``). ``ctm_lines`` are the CTM's lines when they are not in ``ctm_path`` (which
    then only names them in messages). Notes (subsets left out, ignored segments, csrfilt
    quirks that applied) are in ``results["all"].warnings``.

    Errors (UserError): unreadable or malformed files (file:line), CTM words of a file and
    channel the STM does not have, a bad subset regex.

    Example:
        >>> r = score_hub5("data/eval2000/stm", "eval2000.ctm", "data/eval2000/glm")
        ...                                                            # doctest: +SKIP
        >>> r["swbd"].wer, r["swbd"].ref_words                          # doctest: +SKIP
        (12.4, 21594)
    """
    notes: list[str] = []
    segments = read_stm(stm_path)
    if ctm_lines is None:
        ctm = read_ctm(ctm_path)
    else:
        name = os.fspath(ctm_path)
        ctm = _parse_ctm((f"{name}:{n}", line) for n, line in enumerate(ctm_lines, 1))
    if hyp_filter:
        ctm = filter_hyp_words(ctm)
    # hubscr sorts both files by file, channel and start time (stable) before csrfilt.
    segments = sorted(segments, key=lambda s: (s.file, s.channel, s.start))
    ctm = sorted(ctm, key=lambda e: (e.file, e.channel, e.start))
    if glm_path is not None:
        glm = Glm.read(glm_path)
        segments = glm.filter_stm(segments)
        ctm = glm.filter_ctm(ctm, notes)
    assigned = assign_ctm_to_segments(segments, ctm, sort=False)
    names: dict[str, int] = {}
    scored = []
    ignored = ignored_words = 0
    for seg, entries in zip(segments, assigned, strict=True):
        if seg.ignored:
            ignored += 1
            ignored_words += sum(1 for e in entries if isinstance(e, CtmWord))
            continue
        name = f"{seg.file}_{seg.channel}_{seg.start:.2f}_{seg.end:.2f}"
        names[name] = names.get(name, 0) + 1
        if names[name] > 1:
            name += f"#{names[name]}"
        steps = align(seg.tokens(), _hyp_tokens(entries), optional=True, fragments=True)
        scored.append((seg, utterance_score(steps, utt=name, speaker=seg.speaker)))
    if ignored:
        notes.append(f"{ignored} segment(s) marked IGNORE_TIME_SEGMENT_IN_SCORING left out, "
                     f"with the {ignored_words} hypothesis word(s) in them")
    results = {"all": summarize(u for _, u in scored)}
    for sub, regex in (DEFAULT_SUBSETS if subsets is None else subsets).items():
        try:
            pattern = re.compile(regex)
        except re.error as e:
            raise UserError(f"subset {sub!r}: bad regex {regex!r}: {e}") from e
        chosen = [u for seg, u in scored if pattern.search(seg.file)]
        if chosen:
            results[sub] = summarize(chosen)
        else:
            notes.append(f"subset {sub!r} ({regex}) matches no segment; left out")
    results["all"].warnings += notes
    return results
