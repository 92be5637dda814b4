"""Switchboard data preparation from the LDC releases, as Kaldi's ``egs/swbd/s5c`` does it.

Two Kaldi data dirs, one per function:

* :func:`prepare_swbd`: the training set, Switchboard-1 Release 2 audio (LDC97S62,
  ``swb1_d1/data/sw02001.sph`` ...) with the Mississippi State (ms98) word transcripts
  (``swb_ms98_transcriptions/20/2001/sw2001A-ms98-a-trans.text`` ...), like Kaldi's
  ``local/swbd1_data_prep.sh`` and ``local/swbd1_map_words.pl``;
* :func:`prepare_eval2000`: the Hub5'00 evaluation set, audio LDC2002S09
  (``hub5e_00/english/en_4156.sph`` ...) and references LDC2002T43 (the ``.stm`` and
  ``.glm`` of ``2000_hub5_eng_eval_tr/reference/``), like ``local/eval2000_data_prep.sh``.

Each conversation side is one recording (``sw02001-A``, ``sw02001-B``) and one speaker,
as in Kaldi; ``reco2file_and_channel`` says which channel of the two-channel SPHERE file
a recording is (blspeech's audio reader honours it for files and commands alike), so
``wav.scp`` names the file once per side without picking a channel itself. Files that
libsndfile reads (SPHERE 16-bit PCM, u-law, a-law) are listed by path; shorten-compressed
files, which is how LDC ships Switchboard, need LDC's ``sph2pipe`` and are listed as
``sph2pipe -f wav -p FILE |`` (:func:`wav_scp_entry`). ``reco2dur`` comes from the
SPHERE headers, so segments that end past the audio are caught here, not in training.

Transcripts are normalized for a BPE/CTC model (:func:`normalize_swbd_words`,
:func:`normalize_stm_words`): lower case, noise and laughter tags removed, partial words
kept with their hyphen. The eval2000 scoring references (``stm``, with Kaldi's two fixes,
and ``glm``) are copied into the data dir for the scorer.

Example:
    >>> summary = prepare_swbd("/corpora/LDC97S62", "/corpora/swb_ms98_transcriptions",
    ...                        "data/train")                              # doctest: +SKIP
    >>> sorted(summary)[:4]                                                # doctest: +SKIP
    ['audio_without_transcripts', 'conversations', 'dropped_empty', 'hours']
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from blspeech.errors import UserError
from blspeech.io.datadir import DataDir
from blspeech.io.datadir.core import c_sorted, format_seconds
from blspeech.io.fileio import atomic_write

#: Where Kaldi's ``tools/Makefile`` (``make sph2pipe``) and its installers put sph2pipe.
KALDI_SPH2PIPE = ("tools/sph2pipe_v2.5/sph2pipe", "tools/sph2pipe/sph2pipe",
                  "tools/sph2pipe-2.5/sph2pipe")
#: How to get sph2pipe, for error messages.
SPH2PIPE_HELP = ("build LDC's sph2pipe (cd $KALDI_ROOT/tools && make sph2pipe) and set "
                 "KALDI_ROOT, or put a sph2pipe binary on PATH")
#: ms98 tags of non-speech events: removed from the text (Kaldi keeps the last three as
#: words with noise phones; a BPE/CTC model has no use for them).
SWBD_NOISE_TAGS = ("[silence]", "[noise]", "[vocalized-noise]", "[laughter]")
#: A segment may end this far past its audio and is clipped to it (Kaldi's
#: ``extract-segments --max-overshoot``); later ends are dropped with a warning.
MAX_OVERSHOOT_S = 0.5
#: stm transcript of segments that are not scored (left out of the data dir).
IGNORE_SEGMENT = "IGNORE_TIME_SEGMENT_IN_SCORING"
_MS98_ID = re.compile(r"^sw(\d{4,5})([AB])-ms98-a-\d+$", re.IGNORECASE)
_EXAMPLES = 5


# --- SPHERE files ---------------------------------------------------------------------------


def sphere_header(path: str | os.PathLike) -> dict[str, str | int | float]:
    """The fields of a NIST SPHERE header: ``{name: value}``.

    The header is ``NIST_1A``, its size in bytes (usually 1024), then ``name -i INT``,
    ``name -r REAL`` or ``name -sN TEXT`` lines up to ``end_head``. ``-i`` values are
    ints, ``-r`` floats, ``-sN`` strings (the rest of the line: the declared length is
    not enforced, LDC headers do not always get it right). Raises :class:`UserError`
    naming the file for anything else (not SPHERE, truncated, malformed).

    Example:
        >>> import tempfile
        >>> head = b"NIST_1A\\n   1024\\nchannel_count -i 2\\nsample_coding -s3 pcm\\nend_head\\n"
        >>> with tempfile.NamedTemporaryFile(suffix=".sph") as f:
        ...     _ = f.write(head.ljust(1024) + bytes(8))
        ...     f.flush()
        ...     sphere_header(f.name)
        {'channel_count': 2, 'sample_coding': 'pcm'}
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            start = f.read(1024)
            if not start.startswith(b"NIST_1A\n"):
                raise UserError(f"{path}: not a NIST SPHERE file (it does not start with "
                                "'NIST_1A')")
            size_line = start[8:].split(b"\n", 1)[0].strip()
            if not size_line.isdigit() or not 16 <= int(size_line) <= 1 << 20:
                raise UserError(f"{path}: bad SPHERE header size {size_line[:20]!r} on line 2")
            size = int(size_line)
            head = start + f.read(max(0, size - len(start)))
    except OSError as e:
        raise UserError(f"{path}: cannot read: {e.strerror or e}") from e
    if len(head) < size:
        raise UserError(f"{path}: truncated SPHERE header ({len(head)} of {size} bytes)")
    lines = head[:size].decode("latin-1").split("\n")
    fields: dict[str, str | int | float] = {}
    for number, line in enumerate(lines[2:], 3):
        line = line.strip()
        if line == "end_head":
            return fields
        if not line or line.startswith(";"):
            continue
        parts = line.split(None, 2)
        try:
            name, kind, value = parts[0], parts[1], (parts[2] if len(parts) > 2 else "")
            if kind == "-i":
                fields[name] = int(value)
            elif kind == "-r":
                fields[name] = float(value)
            elif re.fullmatch(r"-s\d+", kind):
                fields[name] = value
            else:
                raise ValueError
        except (ValueError, IndexError) as e:
            raise UserError(f"{path}: SPHERE header line {number}: expected 'NAME -i|-r|-sN "
                            f"VALUE', got {line[:60]!r}") from e
    raise UserError(f"{path}: truncated SPHERE header (no 'end_head' in its {size} bytes)")


def is_shorten(header: dict) -> bool:
    """Is the audio shorten-compressed (``sample_coding`` ``...,embedded-shorten-v2.00``)?

    Example:
        >>> is_shorten({"sample_coding": "ulaw,embedded-shorten-v2.00"})
        True
        >>> is_shorten({"sample_coding": "pcm"}), is_shorten({})
        (False, False)
    """
    return "embedded-shorten" in str(header.get("sample_coding", "")).lower()


def find_sph2pipe(kaldi_root: str | None = None) -> str | None:
    """The sph2pipe program: on ``PATH``, else where Kaldi builds it, else None.

    ``kaldi_root`` defaults to the ``KALDI_ROOT`` environment variable; Kaldi's
    ``make sph2pipe`` leaves the binary in ``tools/sph2pipe_v2.5/`` (newer installers in
    ``tools/sph2pipe/``), see :data:`KALDI_SPH2PIPE`.

    Example:
        >>> find_sph2pipe("/opt/kaldi")                          # doctest: +SKIP
        '/opt/kaldi/tools/sph2pipe_v2.5/sph2pipe'
    """
    found = shutil.which("sph2pipe")
    if found:
        return os.path.abspath(found)
    root = kaldi_root if kaldi_root is not None else os.environ.get("KALDI_ROOT")
    for relative in KALDI_SPH2PIPE if root else ():
        candidate = os.path.join(root, relative)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return os.path.abspath(candidate)
    return None


def wav_scp_entry(sph_path: str | os.PathLike, sph2pipe: str | None) -> str:
    """The ``wav.scp`` value of a SPHERE file: its path, or a ``sph2pipe`` command.

    Files libsndfile reads (16-bit PCM, u-law, a-law) are listed by (absolute) path.
    Shorten-compressed files, and the few headers libsndfile rejects, become
    ``"{sph2pipe} -f wav -p {path} |"``: 16-bit PCM wav with both channels, the channel
    being picked later by ``reco2file_and_channel``. Without ``sph2pipe`` such a file is
    a :class:`UserError` that names it and says how to get the program.

    Example:
        >>> wav_scp_entry("/corpora/LDC97S62/swb1_d1/data/sw02001.sph",
        ...               "/opt/kaldi/tools/sph2pipe_v2.5/sph2pipe")    # doctest: +SKIP
        '/opt/kaldi/tools/sph2pipe_v2.5/sph2pipe -f wav -p /corpora/.../sw02001.sph |'
    """
    path = os.path.abspath(os.fspath(sph_path))
    header = sphere_header(path)
    if is_shorten(header):
        why = (f"is shorten-compressed ({header['sample_coding']}), which libsndfile cannot "
               "decode")
    else:
        try:
            sf.info(path)
            return path
        except Exception as e:  # noqa: BLE001 - libsndfile reports assorted errors
            why = (f"has a SPHERE header libsndfile rejects (sample_coding "
                   f"{header.get('sample_coding', '?')!r}: {str(e).strip() or type(e).__name__})")
    if sph2pipe is None:
        raise UserError(f"{path}: the audio {why}; sph2pipe is needed: {SPH2PIPE_HELP}")
    return f"{shlex.quote(sph2pipe)} -f wav -p {shlex.quote(path)} |"


# --- transcripts ----------------------------------------------------------------------------

# Kaldi's swbd1_map_words.pl, rule by rule, in its order (case-insensitive).
_LAUGHTER_WORD = re.compile(r"^\[laughter-(.+)\](-?)$", re.IGNORECASE)
_MISPRONOUNCED = re.compile(r"^\[(.+)/.+\](-?)$")
_PARTIAL_START = re.compile(r"^-?\[[^\[\]]+\](.+)$")
_PARTIAL_END = re.compile(r"^(.+)\[[^\[\]]+\]-?$")
_PARTIAL_BROKEN = re.compile(r"^([^\[\]]+)\[.+\]$")
_COINAGE = re.compile(r"^\{(.+)\}$")
_PARTIAL_MIDDLE = re.compile(r"([a-z'])\[[^\[\]]+\]([a-z'])", re.IGNORECASE)
_INDEX = re.compile(r"_\d")
_ANGLE_TAG = re.compile(r"<[^<>]*>")
_ALNUM = re.compile(r"[a-z0-9]", re.IGNORECASE)


def _map_swbd_word(word: str) -> str:
    word = _LAUGHTER_WORD.sub(r"\1\2", word)
    word = _MISPRONOUNCED.sub(r"\1\2", word)
    word = _PARTIAL_START.sub(r"-\1", word)
    word = _PARTIAL_END.sub(r"\1-", word)
    word = _PARTIAL_BROKEN.sub(r"\1-", word)
    word = _COINAGE.sub(r"\1", word)
    word = _PARTIAL_MIDDLE.sub(r"\1-\2", word)
    return _INDEX.sub("", word)


def normalize_swbd_words(words: list[str]) -> list[str]:
    """The ms98 words of one segment as training text: Kaldi's mapping, minus noise tags.

    Rules (Kaldi's ``swbd1_data_prep.sh`` and ``swbd1_map_words.pl``, in that order):

    * angle-bracket tags (``<b_aside>``, ``<e_aside>``, ...) are removed;
    * a word said laughing is the word: ``[laughter-yes]`` -> ``yes``;
    * a mispronunciation ``[spoken/intended]`` keeps what was said (Kaldi's rule: the
      acoustics match it): ``[it'n/isn't]`` -> ``it'n``;
    * a partial word loses its unspoken bracketed part and keeps the hyphen where the
      word was cut: ``th[e]-`` -> ``th-``, ``-[th]at`` -> ``-at`` (``[th]at`` too),
      ``ammu[n]it-`` -> ``ammu-it-`` (what Kaldi's buggy last rule meant to do), the
      corpus's malformed ``ex[specially]-/especially]`` -> ``ex-`` (Kaldi: ``ex``);
    * a coinage loses its braces: ``{yuppie}`` -> ``yuppie``;
    * a word index goes: ``them_1`` -> ``them``, ``them_1's`` -> ``them's``;
    * non-speech tags (:data:`SWBD_NOISE_TAGS` and any other ``[...]`` left) and tokens
      without a letter or digit are dropped; Kaldi keeps ``[noise]``, ``[laughter]``
      and ``[vocalized-noise]`` as words, which a BPE/CTC model would only learn to
      emit;
    * everything is lower case. Hesitations (``uh``, ``um``, ``uh-huh``) are words and
      stay.

    Example:
        >>> normalize_swbd_words("[silence] uh i th[e]- the [noise] car".split())
        ['uh', 'i', 'th-', 'the', 'car']
        >>> normalize_swbd_words("<b_aside> [laughter-yes] [laughter] -[th]at <e_aside>".split())
        ['yes', '-at']
        >>> normalize_swbd_words("[it'n/isn't] {yuppie} them_1's [vocalized-noise]".split())
        ["it'n", 'yuppie', "them's"]
        >>> normalize_swbd_words("[lem[guini]-/linguini] ammu[n]it- [laughter-abou[t]-]".split())
        ['lem-', 'ammu-it-', 'abou-']
        >>> normalize_swbd_words(["[noise]"])
        []
    """
    out = []
    for word in words:
        word = _ANGLE_TAG.sub("", word)
        if not word or word.lower() in SWBD_NOISE_TAGS:
            continue
        word = _map_swbd_word(word).lower()
        if word.startswith("[") and word.endswith("]"):
            continue  # a tag no rule turned into a word
        if _ALNUM.search(word):
            out.append(word)
    return out


_ALTERNATION = re.compile(r"\{([^{}]*)\}")


def normalize_stm_words(words: list[str]) -> list[str]:
    """The words of one stm segment as model text (what was said, lower case).

    Rules for the Hub5'00 reference (the stm itself is kept for scoring):

    * ``<B_ASIDE>``, ``<E_ASIDE>`` and other angle-bracket tags are removed;
    * ``%`` words (``(%HESITATION)``, the GLM's hesitation token) are dropped;
    * parentheses marking optionally deletable words are removed, the word stays:
      ``(UH)`` -> ``uh``, ``(TH-)`` -> ``th-``, also Kaldi's ``((`` typo;
    * an alternation ``{A / B}`` keeps its first alternative;
    * ``[...]`` tags and tokens without a letter or digit are dropped; all lower case.

    Example:
        >>> normalize_stm_words("<B_ASIDE> WELL (%HESITATION) (TH-) THE ((UH) CAR".split())
        ['well', 'th-', 'the', 'uh', 'car']
        >>> normalize_stm_words("I'M { GONNA / GOING TO } GO <E_ASIDE>".split())
        ["i'm", 'gonna', 'go']
    """
    text = _ANGLE_TAG.sub(" ", " ".join(words))
    text = _ALTERNATION.sub(lambda m: m[1].split("/")[0], text)
    out = []
    for word in text.split():
        word = word.strip("()").lower()
        if word.startswith("%") or (word.startswith("[") and word.endswith("]")):
            continue
        if _ALNUM.search(word):
            out.append(word)
    return out


def fix_stm_line(line: str) -> str:
    """An stm line with Kaldi's fixes for hubscr: ``((`` -> ``(``, no aside markers.

    Kaldi's ``eval2000_data_prep.sh`` replaces the first ``((`` of a line only; every one
    is replaced here.

    Example:
        >>> fix_stm_line("en_4156 A en_4156_A 1.0 2.0 <O,en,F,en-F> <B_ASIDE> ((UH) OK")
        'en_4156 A en_4156_A 1.0 2.0 <O,en,F,en-F>  (UH) OK'
    """
    return re.sub(r"<[BE]_ASIDE>", "", line.replace("((", "("))


# --- data dirs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Segment:
    utt: str
    rec: str
    start: float
    end: float
    text: str
    where: str  # file:line


def _centiseconds(t: float) -> int:
    """Kaldi's ``int(100*t+0.5)`` of the utterance ids."""
    return int(100 * t + 0.5)


def _utt_id(rec: str, start: float, end: float) -> str:
    """``sw02001-A_000098-001156``: recording, start and end in centiseconds (Kaldi's)."""
    return f"{rec}_{_centiseconds(start):06d}-{_centiseconds(end):06d}"


def _find(root: Path, match) -> list[Path]:
    """Files under ``root`` (links followed) whose lower-case name ``match`` accepts."""
    found = []
    for directory, _, files in os.walk(root, followlinks=True):
        found += [Path(directory) / f for f in files if match(f.lower())]
    return sorted(found, key=lambda p: str(p).encode())


def _need_dir(path: str | os.PathLike, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: no such directory ({what})")
    return path


def _examples(items: Iterable[str]) -> str:
    items = list(items)
    more = f", ... ({len(items)} in all)" if len(items) > _EXAMPLES else ""
    return ", ".join(items[:_EXAMPLES]) + more


def _sph_files(root: Path, what: str) -> dict[str, Path]:
    """``{name without .sph: path}`` of every ``*.sph`` under ``root`` (any case)."""
    files = _find(root, lambda name: name.endswith(".sph"))
    if not files:
        raise UserError(f"{root}: no .sph files found under it ({what})")
    by_name: dict[str, Path] = {}
    duplicates = []
    for path in files:
        name = path.name[:-4]
        if name in by_name:
            duplicates.append(str(path))
            continue
        by_name[name] = path
    if duplicates:
        warnings.warn(f"{root}: {len(duplicates)} .sph files have the name of an earlier one "
                      f"and are not used: {_examples(duplicates)}", stacklevel=3)
    return by_name


def _read_lines(path: Path) -> Iterator[tuple[int, str]]:
    try:
        with open(path, encoding="utf-8") as f:
            yield from enumerate(f, 1)
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    except OSError as e:
        raise UserError(f"{path}: cannot read: {e.strerror or e}") from e


def _times(fields: list[str], where: str, what: str) -> tuple[float, float]:
    try:
        start, end = float(fields[0]), float(fields[1])
    except (ValueError, IndexError) as e:
        raise UserError(f"{where}: expected {what}, got times {' '.join(fields[:2])!r}") from e
    if not (0 <= start < float("inf") and 0 <= end < float("inf")):
        raise UserError(f"{where}: times must be finite and >= 0, got {start} {end}")
    if end < start:
        raise UserError(f"{where}: end time {fields[1]} is before start time {fields[0]}; "
                        "fix or delete the line")
    return start, end


def _read_ms98(path: Path) -> Iterator[tuple[str, str, float, float, list[str], str]]:
    """``(conversation, side, start, end, words, file:line)`` of each ms98 line."""
    for number, line in _read_lines(path):
        where = f"{path}:{number}"
        fields = line.split()
        if not fields:
            continue
        m = _MS98_ID.match(fields[0])
        if m is None or len(fields) < 3:
            raise UserError(f"{where}: expected 'swNNNNS-ms98-a-NNNN START END WORDS...', got "
                            f"{line.strip()[:80]!r}")
        start, end = _times(fields[1:3], where, "'swNNNNS-ms98-a-NNNN START END WORDS...'")
        yield f"sw{int(m[1]):05d}", m[2].upper(), start, end, fields[3:], where


def _duration(header: dict) -> float | None:
    count, rate = header.get("sample_count"), header.get("sample_rate")
    if isinstance(count, int) and isinstance(rate, int) and count > 0 and rate > 0:
        return count / rate
    return None


class _Recordings:
    """wav.scp values, channels and durations of the SPHERE files a data dir uses."""

    def __init__(self, sph2pipe: str | None):
        self.sph2pipe = sph2pipe
        self.headers: dict[Path, dict] = {}
        self.entries: dict[Path, str] = {}

    def add(self, path: Path, side: str, rec: str) -> None:
        if path not in self.headers:
            self.headers[path] = sphere_header(path)
            self.entries[path] = wav_scp_entry(path, self.sph2pipe)
        channels = self.headers[path].get("channel_count")
        if side in ("B", "2") and isinstance(channels, int) and channels < 2:
            raise UserError(f"{path}: recording {rec} is side {side} but the file has "
                            f"{channels} channel")

    def duration(self, path: Path) -> float | None:
        return _duration(self.headers[path])

    def shorten(self) -> int:
        return sum(is_shorten(h) for h in self.headers.values())


def _fit(segments: list[_Segment], durations: dict[str, float | None]) -> tuple[
        list[_Segment], list[str]]:
    """Segments clipped to their recording (overshoot <= MAX_OVERSHOOT_S), and the dropped."""
    kept, dropped = [], []
    for s in segments:
        total = durations.get(s.rec)
        if total is None or s.end <= total:
            kept.append(s)
        elif s.end - total <= MAX_OVERSHOOT_S and s.start < total:
            kept.append(_Segment(s.utt, s.rec, s.start, total, s.text, s.where))
        else:
            dropped.append(f"{s.where} ({s.start:g}-{s.end:g} s, audio {total:g} s)")
    return kept, dropped


def _unique(segments: list[_Segment]) -> tuple[list[_Segment], list[str]]:
    seen: dict[str, _Segment] = {}
    repeated = []
    for s in segments:
        if s.utt in seen:
            repeated.append(f"{s.where} ({s.utt}, first at {seen[s.utt].where})")
        else:
            seen[s.utt] = s
    return list(seen.values()), repeated


def _write_datadir(out_dir: str | os.PathLike, segments: list[_Segment],
                   recordings: dict[str, tuple[str, str, str]],
                   durations: dict[str, float | None]) -> DataDir:
    """Save the data dir: ``recordings`` is ``{rec: (wav.scp value, file id, channel)}``."""
    d = DataDir(path=os.fspath(out_dir))
    d.set_table("wav.scp", {r: v[0] for r, v in recordings.items()})
    d.set_table("reco2file_and_channel", {r: f"{v[1]} {v[2]}" for r, v in recordings.items()})
    if all(durations.get(r) is not None for r in recordings):
        d.set_table("reco2dur", {r: format_seconds(durations[r]) for r in recordings})
    d.set_table("segments", {s.utt: f"{s.rec} {format_seconds(s.start)} "
                             f"{format_seconds(s.end)}" for s in segments})
    d.set_table("text", {s.utt: s.text for s in segments})
    d.set_table("utt2spk", {s.utt: s.rec for s in segments})  # speaker = conversation side
    os.makedirs(out_dir, exist_ok=True)
    d.save(out_dir)
    return d


def _warn(count_what: str, items: list[str], what_happened: str) -> None:
    if items:
        warnings.warn(f"{len(items)} {count_what} {what_happened}: {_examples(items)}",
                      stacklevel=3)


def _hours(segments: list[_Segment]) -> float:
    return round(sum(s.end - s.start for s in segments) / 3600, 3)


def _ms98_segments(transcripts: Sequence[Path], audio: Mapping[str, Path]
                   ) -> tuple[list[_Segment], set[str], list[str], list[str]]:
    """The segments of the ms98 transcripts with words and audio; the conversations
    without audio, and where the lines without words or time are."""
    segments, no_audio, empty, zero = [], set(), [], []
    for path in transcripts:
        for conv, side, start, end, raw, where in _read_ms98(path):
            if conv not in audio:
                no_audio.add(conv)
                continue
            text = normalize_swbd_words(raw)
            if not text:
                empty.append(where)
                continue
            start_cs, end_cs = _centiseconds(start), _centiseconds(end)
            if end_cs <= start_cs:
                zero.append(where)
                continue
            rec = f"{conv}-{side}"
            segments.append(_Segment(_utt_id(rec, start, end), rec, start_cs / 100,
                                     end_cs / 100, " ".join(text), where))
    return segments, no_audio, empty, zero


def prepare_swbd(swbd_dir: str | os.PathLike, ms98_dir: str | os.PathLike,
                 out_dir: str | os.PathLike) -> dict:
    """Write the Switchboard-1 training data dir; returns a summary (JSON-ready).

    ``swbd_dir`` holds LDC97S62 (every ``*.sph`` under it, any case, is used:
    ``swb1_d1/data/sw02001.sph`` ...), ``ms98_dir`` the ms98 transcripts (every
    ``*-trans.text`` under it). Each line ``sw2001A-ms98-a-0001 0.000000 0.977625 WORDS``
    becomes utterance ``sw02001-A_000000-000098`` of recording and speaker
    ``sw02001-A`` (times in the id and in ``segments`` are Kaldi's rounded
    centiseconds), with :func:`normalize_swbd_words` text; utterances left without
    words are dropped. Tables: ``wav.scp``, ``reco2file_and_channel``
    (``sw02001-A sw02001 A``), ``reco2dur`` (from the headers), ``segments``, ``text``,
    ``utt2spk``, ``spk2utt``, sorted in C order and written atomically.

    Warned about and skipped, like Kaldi: transcripts of conversations without audio,
    segments that end more than :data:`MAX_OVERSHOOT_S` past the audio (smaller
    overshoots are clipped), empty segments and repeated utterance ids. Errors
    (:class:`UserError`): missing dirs, no audio, no transcripts, a malformed line or
    an end before its start (file:line), a shorten file with no sph2pipe.

    Example:
        >>> prepare_swbd("LDC97S62", "swb_ms98_transcriptions", "data/train")  # doctest: +SKIP
        {'out_dir': 'data/train', 'conversations': ..., 'recordings': ..., ...}
    """
    swbd = _need_dir(swbd_dir, "the Switchboard-1 audio, LDC97S62")
    ms98 = _need_dir(ms98_dir, "the ms98 transcripts, swb_ms98_transcriptions")
    audio = {name.lower(): path for name, path in
             _sph_files(swbd, "expected LDC97S62's swb1_d*/data/sw0NNNN.sph").items()}
    transcripts = _find(ms98, lambda name: name.endswith("-trans.text"))
    if not transcripts:
        raise UserError(f"{ms98}: no *-trans.text files found under it (expected the ms98 "
                        "transcripts: 20/2001/sw2001A-ms98-a-trans.text ...)")

    segments, no_audio, empty, zero = _ms98_segments(transcripts, audio)
    if not segments:
        why = (f"none of the {len(no_audio)} transcribed conversations has audio there "
               f"({_examples(sorted(no_audio))})" if no_audio else "no line has words")
        raise UserError(f"{ms98}: no usable transcript for the audio under {swbd}: {why}")
    segments, repeated = _unique(segments)
    # Headers in C order of the recordings: the first unreadable file is reported.
    recordings = _Recordings(find_sph2pipe())
    conv_path = {}
    for rec in c_sorted({s.rec for s in segments}):
        conv, side = rec.split("-")
        conv_path[rec] = audio[conv]
        recordings.add(audio[conv], side, rec)
    durations = {rec: recordings.duration(path) for rec, path in conv_path.items()}
    segments, past_end = _fit(segments, durations)
    _warn("transcribed conversations", sorted(no_audio), f"have no audio under {swbd} and "
          "were skipped")
    _warn("segments", past_end, f"end more than {MAX_OVERSHOOT_S:g} s past their audio and "
          "were skipped")
    _warn("segments", zero, "are shorter than 10 ms and were skipped")
    _warn("utterance ids", repeated, "repeat an earlier one and were skipped")

    used = {s.rec for s in segments}
    table = {rec: (recordings.entries[path], *rec.split("-")) for rec, path in conv_path.items()
             if rec in used}
    _write_datadir(out_dir, segments, table, durations)
    conversations = {rec.split("-")[0] for rec in table}
    return {
        "out_dir": os.fspath(out_dir), "conversations": len(conversations),
        "recordings": len(table), "speakers": len(table), "utterances": len(segments),
        "words": sum(len(s.text.split()) for s in segments), "hours": _hours(segments),
        "sph_files": len(audio), "shorten_files": recordings.shorten(),
        "transcript_files": len(transcripts), "dropped_empty": len(empty),
        "skipped_no_audio_conversations": len(no_audio), "skipped_past_end": len(past_end),
        "skipped_too_short": len(zero), "skipped_repeated_ids": len(repeated),
        "audio_without_transcripts": len(set(audio) - conversations),
    }


def _one_file(root: Path, suffix: str, what: str) -> Path:
    found = _find(root, lambda name: name.endswith(suffix))
    if len(found) != 1:
        listed = f": {_examples(str(p) for p in found)}" if found else ""
        raise UserError(f"{root}: expected exactly one *{suffix} file under it ({what}), found "
                        f"{len(found)}{listed}; pass the directory that holds the right one")
    return found[0]


def _stm_label(field: str) -> bool:
    return (field.startswith("<") and field.endswith(">")
            and field.upper() not in ("<B_ASIDE>", "<E_ASIDE>"))


def _read_stm(path: Path) -> Iterator[tuple[str, str, float, float, list[str], str]]:
    """``(file id, channel, start, end, words, file:line)`` of each stm segment."""
    for number, line in _read_lines(path):
        where = f"{path}:{number}"
        fields = line.split()
        if not fields or line.lstrip().startswith(";;"):
            continue
        if len(fields) < 5 or fields[1].upper() not in ("A", "B", "1", "2"):
            raise UserError(f"{where}: expected 'FILE CHANNEL SPEAKER START END [<LABELS>] "
                            f"WORDS...' with channel A or B, got {line.strip()[:80]!r}")
        start, end = _times(fields[3:5], where, "'FILE CHANNEL SPEAKER START END ...'")
        words = fields[5:]
        if words and _stm_label(words[0]):
            words = words[1:]
        yield fields[0], fields[1].upper(), start, end, words, where


def prepare_eval2000(audio_dir: str | os.PathLike, transcript_dir: str | os.PathLike,
                     out_dir: str | os.PathLike) -> dict:
    """Write the Hub5'00 (eval2000) data dir with its ``stm`` and ``glm``; returns a summary.

    ``audio_dir`` holds LDC2002S09 (every ``*.sph`` under it: ``hub5e_00/english/en_4156.sph``
    ...), ``transcript_dir`` LDC2002T43 with exactly one ``*.stm`` and one ``*.glm`` under
    it (``2000_hub5_eng_eval_tr/reference/hub5e00.english.000405.stm`` and
    ``en20000405_hub5.glm``). Each stm line ``en_4156 A en_4156_A 301.85 302.48
    <O,en,F,en-F> WORDS`` becomes utterance ``en_4156-A_030185-030248`` of recording and
    speaker ``en_4156-A`` (``reco2file_and_channel``: ``en_4156-A en_4156 A``, the stm's
    file and channel, so CTMs map back to the stm), segment times as in the stm, text by
    :func:`normalize_stm_words`. Lines reading :data:`IGNORE_SEGMENT` are left out;
    segments whose text is empty after normalization (a lone ``(%HESITATION)``) are kept
    with an empty text, since the scorer expects a hypothesis for every stm segment.
    Utterance ids round the times to centiseconds (Kaldi truncates ``$4*100``, which
    makes 0.29 s ``000028``). Kaldi takes the segment times from the ``.pem`` file of
    LDC2002S09, widened by 0.1 s; here they are the stm's, which the scorer aligns to.
    ``stm`` (fixed by :func:`fix_stm_line`) and ``glm`` are copied to ``out_dir``.

    Errors (:class:`UserError`): missing dirs, no audio, not exactly one stm or glm, a
    malformed stm line or an end before its start (file:line), stm files with no audio,
    shorten audio with no sph2pipe.

    Example:
        >>> prepare_eval2000("LDC2002S09", "LDC2002T43", "data/eval2000")  # doctest: +SKIP
        {'out_dir': 'data/eval2000', 'conversations': 40, 'recordings': 80, ...}
    """
    audio_root = _need_dir(audio_dir, "the Hub5'00 audio, LDC2002S09")
    ref_root = _need_dir(transcript_dir, "the Hub5'00 transcripts, LDC2002T43")
    audio = _sph_files(audio_root, "expected LDC2002S09's hub5e_00/english/*.sph")
    stm = _one_file(ref_root, ".stm", "the reference, hub5e00.english.000405.stm")
    glm = _one_file(ref_root, ".glm", "the scoring rules, en20000405_hub5.glm")

    segments, ignored, zero, no_audio, empty = [], 0, [], {}, 0
    for file_id, channel, start, end, words, where in _read_stm(stm):
        if words == [IGNORE_SEGMENT]:
            ignored += 1
            continue
        if file_id not in audio:
            no_audio.setdefault(file_id, where)
            continue
        if end <= start:
            zero.append(where)
            continue
        text = normalize_stm_words(words)
        empty += not text
        rec = f"{file_id}-{channel}"
        segments.append(_Segment(_utt_id(rec, start, end), rec, start, end, " ".join(text),
                                 where))
    if no_audio:
        first = next(iter(no_audio.values()))
        raise UserError(f"{first}: {len(no_audio)} stm file ids have no .sph under "
                        f"{audio_root}: {_examples(sorted(no_audio))}; a partial test set "
                        "gives scores that compare with nothing")
    if not segments:
        raise UserError(f"{stm}: no scored segments")
    segments, repeated = _unique(segments)
    recordings = _Recordings(find_sph2pipe())
    file_of = {}
    for rec in c_sorted({s.rec for s in segments}):
        file_id, channel = rec.rsplit("-", 1)
        file_of[rec] = (file_id, channel)
        recordings.add(audio[file_id], channel, rec)
    durations = {rec: recordings.duration(audio[f]) for rec, (f, _) in file_of.items()}
    segments, past_end = _fit(segments, durations)
    _warn("stm segments", past_end, f"end more than {MAX_OVERSHOOT_S:g} s past their audio "
          "and were skipped")
    _warn("stm segments", zero, "have no duration and were skipped")
    _warn("utterance ids", repeated, "repeat an earlier one and were skipped")

    used = {s.rec for s in segments}
    table = {rec: (recordings.entries[audio[f]], f, ch) for rec, (f, ch) in file_of.items()
             if rec in used}
    _write_datadir(out_dir, segments, table, durations)
    with atomic_write(Path(out_dir) / "stm") as f:
        for _, line in _read_lines(stm):
            f.write(fix_stm_line(line.rstrip("\r\n")) + "\n")
    with atomic_write(Path(out_dir) / "glm", "wb") as f, open(glm, "rb") as source:
        shutil.copyfileobj(source, f)
    return {
        "out_dir": os.fspath(out_dir), "conversations": len({f for f, _ in file_of.values()}),
        "recordings": len(table), "speakers": len(table), "utterances": len(segments),
        "words": sum(len(s.text.split()) for s in segments), "hours": _hours(segments),
        "sph_files": len(audio), "shorten_files": recordings.shorten(),
        "stm": str(stm), "glm": str(glm), "ignored_segments": ignored,
        "empty_text": empty, "skipped_past_end": len(past_end),
        "skipped_zero_length": len(zero), "skipped_repeated_ids": len(repeated),
    }
