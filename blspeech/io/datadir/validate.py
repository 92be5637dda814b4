"""Validation of a data dir, reporting every problem (like Kaldi's validate_data_dir.sh)."""

from __future__ import annotations

import os

from blspeech.io.audio import END_TOLERANCE_S
from blspeech.io.datadir.core import (
    RECO_TABLES,
    REQUIRED,
    SPK_TABLES,
    TABLES,
    UTT_TABLES,
    DataDir,
    FileChecks,
    Problem,
    c_sorted,
    check_value,
    parse_number,
    parse_segment,
    per_utterance,
)
from blspeech.io.kaldi.pipes import commands_allowed, commands_off

#: Tables whose ``cmd |`` entries are run when read (and refused when commands are off).
COMMAND_TABLES = ("wav.scp", "feats.scp", "cmvn.scp", "vad.scp")

# --- validation ----------------------------------------------------------------------------


def validate_data_dir(path: str | os.PathLike, *, check_files: bool = True,
                      allow_commands: bool | None = None) -> list[Problem]:
    """Every problem of a Kaldi data dir, errors and warnings, sorted by file and line.

    Checks (like Kaldi's ``utils/validate_data_dir.sh``, but reporting all of them):
    required files (wav.scp, text, utt2spk); lines that are not UTF-8, empty, duplicate
    or out of C-locale order; malformed values (segments times, durations, frame
    counts, ...); utterance ids of text / utt2spk / feats.scp / utt2dur / ... against
    the utterances (segments keys, else wav.scp keys) in both directions; utt2spk vs
    spk2utt; speakers of cmvn.scp / spk2gender; segments whose recording is unknown or
    that end past the recording (reco2dur); recordings no segment uses (warning); audio
    files and feature archives that do not exist (``check_files``), commands of wav.scp
    pipes that are not installed (warning); command entries (``... |``) of wav.scp,
    feats.scp, cmvn.scp and vad.scp when commands are disabled (``allow_commands=False``
    or ``BLSPEECH_NO_WAVSCP_COMMANDS=1``: reading them would fail); and Kaldi's
    speaker-prefix convention (warning). Relative paths in wav.scp and feats.scp are
    taken from the current directory, as Kaldi does. An id missing from a table is
    reported at the line that defines it (``wav.scp:3: utt 'x': missing from text``).

    Example:
        >>> [str(p) for p in validate_data_dir("data/train")]     # doctest: +SKIP
        ["data/train/segments:3: utt 'rec1-003': end time 1.2 is not after start time 1.5"]
    """
    return check_data_dir(DataDir.load(path, strict=False), check_files=check_files,
                          allow_commands=allow_commands)


def check_data_dir(d: DataDir, *, check_files: bool = True,
                   allow_commands: bool | None = None) -> list[Problem]:
    """Every problem of a loaded data dir (see :func:`validate_data_dir`)."""
    problems: list[Problem] = []
    segs = d.has("segments")

    def kind_of(name: str) -> str:
        if name in SPK_TABLES or name == "spk2utt":
            return "spk"
        if name in RECO_TABLES or (name == "wav.scp" and segs):
            return "reco"
        return "utt"

    def add(name: str, key: str | None, message: str, level: str = "error", *,
            line: int | None = None, kind: str | None = None) -> None:
        if line is None and key is not None:
            line = d.line(name, key)
        problems.append(Problem(d.file(name), line, key, message, level, kind or kind_of(name)))

    for name in REQUIRED:
        if not d.has(name):
            add(name, None, "required file is missing")
    if d.has("utt2spk") and not d.has("spk2utt"):
        add("spk2utt", None, f"file is missing; regenerate it with 'blspeech fix-data-dir "
            f"{d.path}'", "warning")

    for name, found in d.line_problems.items():
        for p in found:
            add(name, p.key, p.message, line=p.line)

    files = FileChecks(check_files)
    commands_ok = commands_allowed(allow_commands)
    for name, entries in d.tables.items():
        for e in entries.values():
            message = check_value(name, e.value)
            if message:
                add(name, e.key, message)
            elif name == "text" and not e.value.strip():
                add(name, e.key, "empty transcript", "warning")
            elif (not commands_ok and name in COMMAND_TABLES
                  and e.value.rstrip().endswith("|")):
                add(name, e.key, commands_off(e.value.rstrip()[:-1].strip()))
            elif (found := files.check(name, e.value)) is not None:
                add(name, e.key, found[1], found[0])

    utts = _validate_utterances(d, add)
    _validate_speakers(d, utts, add)
    _validate_recordings(d, add)
    return sorted(problems, key=lambda p: (TABLES.index(os.path.basename(p.file))
                                           if os.path.basename(p.file) in TABLES else 99,
                                           p.line or 0))


def _validate_utterances(d: DataDir, add) -> set[str]:
    """Every per-utterance table has the utterances of the first one (``utt_source``);
    returns those utterance ids."""
    source = d.utt_source
    utts = set(d.tables[source]) if source else set()
    for name in UTT_TABLES:
        if source is None or not d.has(name) or name == source:
            continue
        keys = d.tables[name]
        for key in keys:
            if key not in utts:
                add(name, key, f"not an utterance of {source} (utterance ids are the keys "
                    f"of {source})")
        for utt in c_sorted(utts - set(keys)):
            add(source, utt, f"missing from {name}", kind="utt")
    return utts


def _validate_speakers(d: DataDir, utts: set[str], add) -> None:
    if not d.has("utt2spk"):
        return
    utt2spk = {u: v.split()[0] for u, v in d.values("utt2spk").items() if len(v.split()) == 1}
    spk_first_utt: dict[str, str] = {}
    for utt in c_sorted(utt2spk):
        spk_first_utt.setdefault(utt2spk[utt], utt)

    if d.has("spk2utt"):
        listed: dict[str, str] = {}
        for spk, e in d.tables["spk2utt"].items():
            for utt in e.value.split():
                if utt in listed:
                    add("spk2utt", utt, f"listed twice (under {listed[utt]!r} and {spk!r})",
                        line=e.line, kind="utt")
                    continue
                listed[utt] = spk
                if utt not in d.tables["utt2spk"]:
                    add("spk2utt", utt, f"listed under speaker {spk!r} but not in utt2spk",
                        line=e.line, kind="utt")
                elif utt in utt2spk and utt2spk[utt] != spk:
                    add("spk2utt", utt, f"listed under speaker {spk!r} but utt2spk says "
                        f"{utt2spk[utt]!r}", line=e.line, kind="utt")
        for utt in c_sorted(set(utt2spk) - set(listed)):
            add("utt2spk", utt, f"speaker {utt2spk[utt]!r}: utterance is not listed in spk2utt")

    speakers = set(spk_first_utt)
    for name in SPK_TABLES:
        if not d.has(name):
            continue
        if per_utterance(d, name):
            for utt in c_sorted(utts - set(d.tables[name])):
                add(d.utt_source, utt, f"missing from {name}", kind="utt")
            continue
        for spk in d.tables[name]:
            if spk not in speakers:
                add(name, spk, "not a speaker of utt2spk")
        for spk in c_sorted(speakers - set(d.tables[name])):
            if d.line("spk2utt", spk) is not None:
                add("spk2utt", spk, f"missing from {name}")
            else:
                add("utt2spk", spk, f"missing from {name}", line=d.line("utt2spk",
                    spk_first_utt[spk]), kind="spk")

    # Kaldi's convention: sorting utt2spk by utterance must also sort it by speaker
    # (speaker id as a prefix of the utterance id); many Kaldi scripts rely on it.
    by_utt = [(u, utt2spk[u]) for u in c_sorted(utt2spk)]
    by_spk = sorted(by_utt, key=lambda us: (us[1].encode(), us[0].encode()))
    for (utt, spk), expected in zip(by_utt, by_spk, strict=True):
        if (utt, spk) != expected:
            add("utt2spk", utt, f"speaker {spk!r}: utterances sorted by id are not grouped by "
                "speaker (Kaldi expects the speaker id as the prefix of the utterance id, e.g. "
                f"{spk}-{utt}); some Kaldi tools need this", "warning")
            break


def _validate_recordings(d: DataDir, add) -> None:
    if not d.has("wav.scp"):
        if d.has("segments"):
            for utt, e in d.tables["segments"].items():
                add("segments", utt, "segments need wav.scp for their recordings", line=e.line)
                break
        return
    recos = set(d.tables["wav.scp"])
    for name in RECO_TABLES:
        if not d.has(name):
            continue
        for reco in d.tables[name]:
            if reco not in recos:
                add(name, reco, "not a recording of wav.scp")
        for reco in c_sorted(recos - set(d.tables[name])):
            add("wav.scp", reco, f"missing from {name}")
    if not d.has("segments"):
        return
    durations = {r: parse_number(v) for r, v in d.values("reco2dur").items()}
    used = set()
    for utt, e in d.tables["segments"].items():
        fields = e.value.split()
        if not fields:
            continue
        reco = fields[0]
        used.add(reco)
        if reco not in recos:
            add("segments", utt, f"recording {reco!r} is not in wav.scp")
            continue
        try:
            _, _, end = parse_segment(e.value)
        except ValueError:
            continue  # reported with the line's value
        total = durations.get(reco)
        if total is not None and end > total + END_TOLERANCE_S:
            add("segments", utt, f"ends at {fields[2]} s, past the end of recording {reco!r} "
                f"({total:g} s in reco2dur)")
    for reco in c_sorted(recos - used):
        add("wav.scp", reco, "recording is not used by any segment (fix-data-dir drops it)",
            "warning")
