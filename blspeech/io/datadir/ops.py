"""Operations on data dirs: fix, subset, combine and speed-perturb (Kaldi's utils/ scripts)."""

from __future__ import annotations

import contextlib
import math
import os
import random
import shlex
import shutil
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

from blspeech.errors import UserError
from blspeech.io.audio import END_TOLERANCE_S
from blspeech.io.datadir.core import (
    BACKUP_DIR,
    COPIED_FILES,
    FEATS_CONF,
    FEATURE_TABLES,
    RECO_TABLES,
    SPK_TABLES,
    TABLES,
    UTT_TABLES,
    DataDir,
    FileChecks,
    c_sorted,
    check_value,
    format_seconds,
    parse_number,
    parse_segment,
    per_utterance,
)
from blspeech.io.kaldi import KaldiFormatError, TableEntry

# --- fix -----------------------------------------------------------------------------------


def _valid_entries(d: DataDir, files: FileChecks, dropped_lines: Counter[str]
                   ) -> dict[str, dict[str, TableEntry]]:
    """Every table but spk2utt without its malformed lines (counted in ``dropped_lines``)
    and without segments that end past their recording."""
    tables: dict[str, dict[str, TableEntry]] = {}
    for name, entries in d.tables.items():
        if name == "spk2utt":
            continue
        good = {}
        for key, e in entries.items():
            found = files.check(name, e.value)
            if check_value(name, e.value) or (found and found[0] == "error"):
                dropped_lines[name] += 1
            else:
                good[key] = e
        tables[name] = good
    if "segments" in tables:  # segments past their recording's end cannot be cut out of it
        durations = {r: float(e.value) for r, e in tables.get("reco2dur", {}).items()}
        for utt, e in list(tables["segments"].items()):
            reco, _, end = parse_segment(e.value)
            if reco in durations and end > durations[reco] + END_TOLERANCE_S:
                del tables["segments"][utt]
                dropped_lines["segments"] += 1
    return tables


def _consistent_utterances(d: DataDir, tables: dict[str, dict[str, TableEntry]]) -> set[str]:
    """The utterances in every utterance table whose recording is in every recording
    table and whose speaker is in every speaker table."""
    segs = "segments" in tables

    def reco_of(utt: str) -> str:
        return tables["segments"][utt].value.split()[0] if segs else utt

    spk_of = {u: e.value.split()[0] for u, e in tables["utt2spk"].items()}
    utts = set(tables["segments" if segs else "wav.scp"])
    recos = set(tables["wav.scp"]).intersection(*(tables[n] for n in RECO_TABLES if n in tables))
    speaker_tables = [n for n in SPK_TABLES if n in tables]
    while True:  # dropping speakers drops utterances drops recordings ...: to a fixed point
        kept = utts.intersection(*(tables[n] for n in UTT_TABLES if n in tables))
        kept = {u for u in kept if reco_of(u) in recos}
        for name in speaker_tables:
            per_utt = per_utterance(d, name)
            kept = {u for u in kept if (u if per_utt else spk_of[u]) in tables[name]}
        if kept == utts:
            return utts
        utts = kept


def fix_data_dir(path: str | os.PathLike, *, check_files: bool = True) -> dict:
    """Repair a data dir in place, like Kaldi's ``utils/fix_data_dir.sh``.

    Sorts every table, drops duplicate keys (keeping the first), empty or undecodable
    lines and lines with malformed values (bad segment times, durations, missing audio
    files with ``check_files``, ...); keeps only utterances present in every
    utterance-keyed table, whose recording is in every recording table and whose
    speaker is in every speaker table; drops recordings no utterance uses; regenerates
    spk2utt. The old files are copied to ``path/.backup/`` first. Refuses (UserError,
    nothing changed) when it would drop every utterance.

    Returns what changed: counts before/after, the dropped ids and dropped lines per file.

    Example:
        >>> report = fix_data_dir("data/train")                  # doctest: +SKIP
        >>> report["utterances"], report["dropped_lines"]        # doctest: +SKIP
        ({'before': 6, 'after': 5}, {'text': 1, 'segments': 1})
    """
    d = DataDir.load(path, strict=False)
    path = d.path
    if not d.has("utt2spk") or not d.has("wav.scp"):
        missing = [n for n in ("wav.scp", "utt2spk") if not d.has(n)]
        raise UserError(f"{path}: cannot fix a data dir without {' and '.join(missing)}")
    before = {"utterances": set(d.tables[d.utt_source]), "speakers": set(d.speakers()),
              "recordings": set(d.tables["wav.scp"])}

    dropped_lines: Counter[str] = Counter()
    for name, found in d.line_problems.items():
        dropped_lines[name] += sum(p.kind != "unsorted" for p in found)
    resorted = c_sorted(name for name, found in d.line_problems.items()
                         if any(p.kind == "unsorted" for p in found))

    tables = _valid_entries(d, FileChecks(check_files), dropped_lines)
    utts = _consistent_utterances(d, tables)
    if not utts and before["utterances"]:
        raise UserError(f"{path}: fixing would drop all {len(before['utterances'])} utterances; "
                        f"nothing was changed. See 'blspeech validate-data-dir {path}'.")

    fixed = DataDir(tables, path=path, extra=d.extra).subset(utts)
    used_recos, speakers = set(fixed.recordings()), set(fixed.speakers())

    backup = os.path.join(path, BACKUP_DIR)
    os.makedirs(backup, exist_ok=True)
    for name in (*TABLES, *COPIED_FILES):
        if os.path.isfile(os.path.join(path, name)):
            shutil.copy2(os.path.join(path, name), os.path.join(backup, name))
    fixed.save(path)

    after = {"utterances": utts, "speakers": speakers, "recordings": used_recos}
    report: dict = {"dir": path, "backup": backup}
    for what in ("utterances", "speakers", "recordings"):
        report[what] = {"before": len(before[what]), "after": len(after[what])}
    for what in ("utterances", "speakers", "recordings"):
        report[f"dropped_{what}"] = c_sorted(before[what] - after[what])
    report["dropped_lines"] = {n: c for n, c in sorted(dropped_lines.items()) if c}
    report["resorted"] = resorted
    return report


# --- subset and combine --------------------------------------------------------------------


def _check_distinct(dst: str, *srcs: str) -> None:
    for src in srcs:
        if os.path.realpath(dst) == os.path.realpath(src):
            raise UserError(f"the output dir {dst} is also an input; choose another output dir")


def subset_data_dir(src: str | os.PathLike, dst: str | os.PathLike, *,
                    utt_list: Iterable[str] | None = None,
                    speakers: Iterable[str] | None = None, first: int | None = None,
                    last: int | None = None, num: int | None = None, seed: int = 0) -> dict:
    """Copy part of a data dir, like Kaldi's ``utils/subset_data_dir.sh``.

    Give exactly one of: ``utt_list`` (utterance ids; unknown ids are listed in the
    report's ``missing``), ``speakers`` (all their utterances), ``first`` / ``last`` (N
    utterances in sorted order) or ``num`` (N random utterances; the same ``seed`` gives
    the same subset). Segments, recordings and speaker tables follow the utterances.

    Example:
        >>> subset_data_dir("data/train", "data/train_2k", num=2000, seed=1)  # doctest: +SKIP
        {'src': 'data/train', 'dst': 'data/train_2k', 'utterances': 2000, ...}
    """
    src, dst = os.fspath(src), os.fspath(dst)
    given = [name for name, v in (("utt_list", utt_list), ("speakers", speakers),
                                  ("first", first), ("last", last), ("num", num))
             if v is not None]
    if len(given) != 1:
        raise UserError("give exactly one of utt_list, speakers, first, last, num "
                        f"(got {', '.join(given) or 'none'})")
    _check_distinct(dst, src)
    d = DataDir.load(src)
    utts = d.utterances()
    missing: list[str] = []
    if utt_list is not None or speakers is not None:
        wanted = list(utt_list if utt_list is not None else speakers)
        if utt_list is not None:
            known = set(utts)
        else:
            known = set(d.speakers())
        missing = [x for x in wanted if x not in known]
        what = "utterance" if utt_list is not None else "speaker"
        if len(missing) == len(wanted):
            raise UserError(f"none of the {len(wanted)} {what} ids given is in {src}"
                            + (f" (first: {wanted[0]!r})" if wanted else ""))
        wanted_set = set(wanted)
        chosen = wanted_set if utt_list is not None else \
            {u for u in utts if d.speaker(u) in wanted_set}
    else:
        n = first if first is not None else last if last is not None else num
        if not isinstance(n, int) or n <= 0:
            raise UserError(f"the number of utterances must be a positive integer, got {n!r}")
        if n > len(utts):
            raise UserError(f"cannot take {n} utterances from {src}: it has {len(utts)}")
        if first is not None:
            chosen = set(utts[:n])
        elif last is not None:
            chosen = set(utts[-n:])
        else:
            chosen = set(random.Random(seed).sample(utts, n))
    sub = d.subset(chosen)
    sub.save(dst)
    return {"src": src, "dst": dst, "utterances": len(sub), "speakers": len(sub.speakers()),
            "recordings": len(sub.recordings()), "missing": missing}


def _with_whole_segments(d: DataDir) -> DataDir:
    """A copy with ``segments`` covering each whole recording (for combining)."""
    out = DataDir(d.tables, path=d.path, extra=d.extra)
    durations = {**d.values("reco2dur"), **d.values("utt2dur")}
    segments = {}
    for utt in d.utterances():
        seconds = parse_number(durations.get(utt, ""))
        if seconds is None:
            wav = d.get("wav.scp", utt, "").strip()
            if wav.endswith("|") or not os.path.isfile(wav):
                raise UserError(f"{d.path} has no segments and no utt2dur, and the duration of "
                                f"{utt!r} cannot be read from {wav!r}; add utt2dur to combine "
                                "it with data dirs that have segments")
            import soundfile

            seconds = soundfile.info(wav).duration
        segments[utt] = f"{utt} 0 {format_seconds(seconds)}"
    out.set_table("segments", segments)
    return out


def _with_own_uniq(d: DataDir) -> DataDir:
    """A copy whose ``utt2uniq`` maps every utterance to itself."""
    out = DataDir(d.tables, path=d.path, extra=d.extra)
    out.set_table("utt2uniq", {utt: utt for utt in d.utterances()})
    return out


def _feats_conf(dirs: Sequence[DataDir], warnings: list[str]) -> bytes | None:
    """The front-end settings shared by every source's features.

    ``b""`` when no source records them; None (features dropped, with a warning) when
    they differ or only some sources record them: one feats.scp must be one front-end.
    """
    confs = {}
    for x in dirs:
        file = os.path.join(x.path or ".", FEATS_CONF)
        confs[x.path] = open(file, "rb").read() if os.path.isfile(file) else b""
    if len(set(confs.values())) == 1:
        return next(iter(confs.values()))
    warnings.append(f"the features of {', '.join(map(str, confs))} were computed with "
                    f"different front-end settings ({FEATS_CONF}); feats.scp dropped: "
                    "compute features for the combined dir")
    return None


def _merge_table(name: str, dirs: Sequence[DataDir]
                 ) -> tuple[dict[str, TableEntry], str | None]:
    """Table ``name`` of every source in one, or the speaker conflict that drops it. An
    utterance in two sources, or a recording with two different entries, is an error."""
    merged: dict[str, TableEntry] = {}
    origin: dict[str, DataDir] = {}
    for x in dirs:
        for key, e in x.tables[name].items():
            if key not in merged:
                merged[key], origin[key] = TableEntry(key, e.value, 0), x
                continue
            first_at, now_at = origin[key].where(name, key), x.where(name, key)
            if name in UTT_TABLES or name == "segments" or (
                    name == "wav.scp" and not x.has("segments")):
                raise UserError(f"utterance {key!r} is in two sources: {first_at} and "
                                f"{now_at}; rename one copy (e.g. 'blspeech "
                                "perturb-speed' prefixes ids) before combining")
            if merged[key].value == e.value:
                continue
            if name in SPK_TABLES:
                return merged, f"speaker {key!r} differs in {first_at} and {now_at}"
            raise UserError(f"recording {key!r} differs in {first_at} and {now_at}; "
                            "give the recordings distinct ids before combining")
    return merged, None


def combine_data_dirs(dst: str | os.PathLike, srcs: Sequence[str | os.PathLike]) -> dict:
    """Union of data dirs, like Kaldi's ``utils/combine_data.sh``.

    Utterance ids must be unique across the sources (a UserError names both places);
    a recording id may repeat only with the same wav.scp entry. Tables present in only
    some sources are dropped with a warning in the report (``dropped_files`` maps each
    to the sources that lack it), as are speaker tables that disagree for a shared
    speaker. When only some sources have ``segments``, the others get whole-recording
    segments (durations from utt2dur or the audio file); when only some have
    ``utt2uniq``, the others' utterances map to themselves. ``feats.scp`` is kept only
    when every source's features come from the same front-end (``conf/fbank.yaml``,
    copied along).

    Example:
        >>> combine_data_dirs("data/all", ["data/a", "data/b"])["warnings"]  # doctest: +SKIP
        ['feats.scp is missing in data/b; dropped']
    """
    dst = os.fspath(dst)
    srcs = [os.fspath(s) for s in srcs]
    if not srcs:
        raise UserError("combine needs at least one source data dir")
    _check_distinct(dst, *srcs)
    dirs = [DataDir.load(s) for s in srcs]
    warnings: list[str] = []
    if any(x.has("segments") for x in dirs):
        plain = [x.path for x in dirs if not x.has("segments")]
        if plain:
            warnings.append(f"made whole-recording segments for {', '.join(plain)}")
        dirs = [x if x.has("segments") else _with_whole_segments(x) for x in dirs]

    if any(x.has("utt2uniq") for x in dirs):
        # As Kaldi's combine_data.sh: an utterance without a recorded origin is its own.
        dirs = [x if x.has("utt2uniq") else _with_own_uniq(x) for x in dirs]

    names = [n for n in TABLES if n != "spk2utt" and any(x.has(n) for x in dirs)]
    dropped: dict[str, list[str]] = {}
    out = DataDir(path=dst)
    for name in names:
        lacking = [x.path for x in dirs if not x.has(name)]
        if lacking:
            dropped[name] = lacking
            warnings.append(f"{name} is missing in {', '.join(lacking)}; dropped")
            continue
        merged, conflict = _merge_table(name, dirs)
        if conflict:
            dropped[name] = []
            warnings.append(f"{name} dropped: {conflict} (recompute it for the combined dir)")
            continue
        out.tables[name] = merged
    for name in COPIED_FILES:
        contents = {x.extra.get(name) for x in dirs}
        if len(contents) == 1 and None not in contents:
            out.extra[name] = contents.pop()
        elif any(x.extra.get(name) is not None for x in dirs):
            warnings.append(f"{name} is missing or differs between sources; dropped")
    if "feats.scp" in out.tables:
        feats_conf = _feats_conf(dirs, warnings)
        if feats_conf is None:
            del out.tables["feats.scp"]
            out.tables.pop("utt2num_frames", None)
            dropped["feats.scp"] = []
        elif feats_conf:
            out.extra[FEATS_CONF] = feats_conf
    with contextlib.suppress(FileNotFoundError):
        if FEATS_CONF not in out.extra:
            os.unlink(os.path.join(dst, FEATS_CONF))  # an earlier combination's
    out.save(dst)
    return {"dst": dst, "sources": srcs, "utterances": len(out), "speakers": len(out.speakers()),
            "recordings": len(out.recordings()), "dropped_files": dropped,
            "warnings": warnings}


# --- speed perturbation --------------------------------------------------------------------


def speed_prefix(factor: float) -> str:
    """The id prefix of a speed-perturbed copy, as Kaldi writes it: ``sp0.9-``, ``sp1.0-``.

    Example:
        >>> speed_prefix(0.9), speed_prefix(1)
        ('sp0.9-', 'sp1.0-')
    """
    return f"sp{float(factor)}-"


def speed_command(wav_entry: str, factor: float) -> str:
    """A wav.scp entry that plays ``wav_entry`` at ``factor`` times the speed (sox).

    ``-R``: sox's dither noise (added when it writes 16-bit output) starts from the same
    seed every run, so features of the perturbed audio are the same every run.

    Example:
        >>> speed_command("a b.wav", 0.9)
        "sox -R 'a b.wav' -t wav - speed 0.9 |"
        >>> speed_command("flac -dc a.flac |", 1.1)
        'flac -dc a.flac | sox -R -t wav - -t wav - speed 1.1 |'
    """
    entry = wav_entry.strip()
    if entry.endswith("|"):
        return f"{entry} sox -R -t wav - -t wav - speed {float(factor)} |"
    return f"sox -R {shlex.quote(entry)} -t wav - speed {float(factor)} |"


def _speed_factors(factors: Sequence[float]) -> list[float]:
    factors = [float(f) for f in factors]
    if not factors:
        raise UserError("give at least one speed factor")
    bad = [f for f in factors if not math.isfinite(f) or f <= 0]
    if bad:
        raise UserError(f"speed factors must be positive numbers, got {bad[0]}")
    if len({speed_prefix(f) for f in factors}) != len(factors):
        raise UserError(f"speed factors repeat: {factors}")
    return factors


def perturb_speed(src: str | os.PathLike, dst: str | os.PathLike,
                  factors: Sequence[float] = (0.9, 1.0, 1.1)) -> dict:
    """Speed-perturbed copies of a data dir, like Kaldi's ``perturb_data_dir_speed_3way.sh``.

    Each factor's copy prefixes utterance, speaker and recording ids with ``sp{factor}-``;
    its audio is a sox pipe (the 1.0 copy keeps the original entry); segment times,
    utt2dur and reco2dur are divided by the factor; utt2uniq maps every copy to its
    original utterance; feats.scp, cmvn.scp, vad.scp and utt2num_frames are dropped
    (recompute them). Output is sorted.

    Example:
        >>> perturb_speed("data/train", "data/train_sp")["utterances"]   # doctest: +SKIP
        360
    """
    src, dst = os.fspath(src), os.fspath(dst)
    factors = _speed_factors(factors)
    _check_distinct(dst, src)
    d = DataDir.load(src)
    for name in ("wav.scp", "utt2spk"):
        if not d.has(name):
            raise UserError(f"{d.file(name)}: file not found (needed to perturb)")
    segs = d.segments() if d.has("segments") else {}
    for utt in d.utterances():
        d.speaker(utt)  # fail early, with the line, on a malformed utt2spk
    reco2file = {r: v.split() for r, v in d.values("reco2file_and_channel").items()}
    out: dict[str, dict[str, str]] = defaultdict(dict)

    values = {name: d.values(name) for name in d.tables}

    def scaled(table: str, key: str, factor: float) -> str:
        value = values[table][key]
        seconds = parse_number(value)
        if seconds is None:
            raise KaldiFormatError(f"{d.where(table, key)}: {key!r}: {value!r} is not a number")
        return value if factor == 1.0 else format_seconds(seconds / factor)

    for factor in factors:
        p = speed_prefix(factor)
        for reco, entry in values["wav.scp"].items():
            out["wav.scp"][p + reco] = entry if factor == 1.0 else speed_command(entry, factor)
        for reco in d.tables.get("reco2dur", {}):
            out["reco2dur"][p + reco] = scaled("reco2dur", reco, factor)
        for reco, fields in reco2file.items():
            if len(fields) != 2:
                raise KaldiFormatError(f"{d.where('reco2file_and_channel', reco)}: expected "
                                       "'FILE CHANNEL'")
            out["reco2file_and_channel"][p + reco] = f"{p}{fields[0]} {fields[1]}"
        for utt, (reco, start, end) in segs.items():
            times = (" ".join(values["segments"][utt].split()[1:]) if factor == 1.0 else
                     f"{format_seconds(start / factor)} {format_seconds(end / factor)}")
            out["segments"][p + utt] = f"{p}{reco} {times}"
        for utt in d.tables["utt2spk"]:
            out["utt2spk"][p + utt] = p + d.speaker(utt)
            out["utt2uniq"][p + utt] = values.get("utt2uniq", {}).get(utt) or utt
        for name in ("text", "utt2lang"):
            for utt, value in values.get(name, {}).items():
                out[name][p + utt] = value
        for utt in d.tables.get("utt2dur", {}):
            out["utt2dur"][p + utt] = scaled("utt2dur", utt, factor)
        for spk, value in values.get("spk2gender", {}).items():
            out["spk2gender"][p + spk] = value
    result = DataDir(path=dst, extra=d.extra)
    for name, items in out.items():
        result.set_table(name, items)
    result.save(dst)
    return {"src": src, "dst": dst, "factors": factors, "utterances": len(result),
            "speakers": len(result.speakers()), "recordings": len(result.recordings()),
            "dropped_files": [n for n in FEATURE_TABLES if d.has(n)]}
