"""Feature extraction for Kaldi data dirs: log mel features and CMVN statistics.

:func:`compute_feats` is ``steps/make_fbank.sh`` in one function: ``nj`` parallel jobs,
each over a contiguous slice of the sorted utterances, write
``OUT/raw_fbank.JOB.ark`` + ``.scp`` (binary Kaldi float matrices); only when every job
has succeeded are ``DIR/feats.scp``, ``DIR/utt2num_frames``, ``DIR/utt2dur`` and
``DIR/conf/fbank.yaml`` (the front-end settings, so later stages compute the same
features) written. A finished job leaves ``OUT/raw_fbank.JOB.done``; a re-run with the
same settings and utterances skips it, and a killed job's temp files are replaced.

:func:`compute_cmvn` accumulates Kaldi CMVN statistics from ``feats.scp``: per speaker
or per utterance into ``DIR/cmvn.ark`` + ``DIR/cmvn.scp`` (keyed by speaker or utterance,
as Kaldi's ``compute-cmvn-stats --spk2utt``), or globally into ``DIR/global_cmvn``, a single
binary Kaldi matrix without a key, exactly what ``compute-cmvn-stats scp:feats.scp
global_cmvn`` writes (read it with :func:`blspeech.io.kaldi.read_matrix`).

Example:
    >>> summary = compute_feats("data/train", nj=4)                     # doctest: +SKIP
    >>> compute_cmvn("data/train", mode="speaker")                      # doctest: +SKIP
    PosixPath('data/train/cmvn.scp')
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import multiprocessing as mp
import os
import queue as queue_module
import threading
import time
import traceback
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from blspeech.errors import UserError
from blspeech.frontend.features import LogMel, merge_config
from blspeech.io.audio import AudioError, AudioReader, commands_allowed
from blspeech.io.datadir import FEATS_CONF
from blspeech.io.fileio import atomic_write, disk_full_is_user_error
from blspeech.io.kaldi import (
    ScpReader,
    cmvn_stats,
    read_table,
    write_matrices,
    write_matrix,
    write_table,
)

FBANK_CONF = FEATS_CONF
#: Utterances are read and computed in groups of about this many frames (one LogMel call).
GROUP_FRAMES = 512
_MARKER_VERSION = 2  # 2: the key includes the audio files' sizes and mtimes


def load_frontend_config(config: Mapping[str, Any] | str | os.PathLike | None) -> dict[str, Any]:
    """A front-end config as a dict: given as one, or read from a YAML file (None: empty)."""
    if config is None:
        return {}
    if isinstance(config, Mapping):
        return dict(config)
    try:
        with open(config, encoding="utf-8") as f:
            loaded = yaml.safe_load(f) or {}
    except FileNotFoundError as e:
        raise UserError(f"{config}: front-end config file not found") from e
    except yaml.YAMLError as e:
        raise UserError(f"{config}: not valid YAML: {e}") from e
    if not isinstance(loaded, dict):
        raise UserError(f"{config}: expected a mapping of LogMel options, e.g. 'num_mel_bins: 40'")
    return loaded


def compute_feats(data_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, *,
                  nj: int = 1, frontend_config: Mapping[str, Any] | str | os.PathLike | None = None,
                  skip_bad: bool = False, allow_commands: bool = True, resample: bool = True,
                  sample_rate: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Compute log mel features for every utterance of a data dir (see the module docstring).

    ``frontend_config`` holds :class:`~blspeech.frontend.features.LogMel` options (dict or
    YAML file); ``sample_rate`` overrides its rate, and when neither gives one the first utterance's
    native rate is used. Other rates are resampled unless ``resample=False`` (then they are
    errors). Bad utterances (unreadable, empty or too short audio, failing commands,
    non-finite features, segments past the end) raise :class:`UserError` naming file, line
    and utterance, and no ``feats.scp`` is written; with ``skip_bad`` they are left out and
    listed with the reason in ``OUT/bad_utts.txt``. ``out_dir`` defaults to ``DIR/data``.

    Returns a summary dict: ``utterances`` (written), ``bad``, ``frames``, ``jobs``,
    ``jobs_skipped`` (already complete), ``seconds``, ``feats_scp``, ``config``.

    Example:
        >>> compute_feats("data/train", nj=2, frontend_config={"num_mel_bins": 40},
        ...               skip_bad=True)                                 # doctest: +SKIP
        {'utterances': 998, 'bad': 2, ...}
    """
    started = time.perf_counter()
    data_dir = Path(data_dir)
    out_dir = Path(out_dir) if out_dir is not None else data_dir / "data"
    _backup_outputs(data_dir)
    allow = commands_allowed(allow_commands)
    reader = AudioReader(data_dir, None, resample=resample, allow_commands=allow)
    utts = reader.utterance_ids
    if not utts:
        raise UserError(f"{data_dir / 'wav.scp'}: no utterances")
    cfg = _feats_config(frontend_config, sample_rate, reader, skip_bad)
    out_dir = out_dir.resolve()
    with _disk_full_is_user_error(out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
        _claim_out_dir(out_dir, data_dir)
    jobs = _plan_jobs(reader, out_dir, data_dir, nj, cfg, resample, allow, skip_bad)
    pending = [job for job in jobs if _read_marker(out_dir, job["index"], job["key"]) is None]

    from tqdm import tqdm

    done_before = sum(len(job["utts"]) for job in jobs if job not in pending)
    with tqdm(total=len(utts), initial=done_before, unit="utt", desc="compute-feats",
              disable=None if progress else True, leave=False) as bar:
        errors = _run_jobs(pending, bar.update)
    if errors:
        first = min(errors)
        more = f" ({len(errors) - 1} more job(s) failed too)" if len(errors) > 1 else ""
        raise UserError(f"{errors[first]}{more}" + ("" if skip_bad else
                        "; fix the input or pass --skip-bad to leave bad utterances out"))

    markers = [_read_marker(out_dir, job["index"], job["key"]) for job in jobs]
    if any(m is None for m in markers):  # pragma: no cover - a job exited without its marker
        raise UserError(f"{out_dir}: a job finished without its outputs; run again")
    bad = [tuple(b) for m in markers for b in m["bad"]]
    if bad and not skip_bad:
        # Jobs finished earlier with --skip-bad; without it the first bad utterance is an error.
        raise UserError(f"{bad[0][1]}; fix the input or pass --skip-bad to leave bad "
                        "utterances out")
    return _finish(data_dir, out_dir, jobs, markers, bad, cfg, len(jobs) - len(pending),
                   started)


def _feats_config(frontend_config: Mapping[str, Any] | str | os.PathLike | None,
                  sample_rate: int | None, reader: AudioReader, skip_bad: bool
                  ) -> dict[str, Any]:
    """The full LogMel config: the given options over the defaults, the rate from
    ``sample_rate``, the options or else the first readable utterance."""
    given = load_frontend_config(frontend_config)
    cfg = merge_config(LogMel().config(), given)
    if sample_rate is not None:
        cfg["sample_rate"] = int(sample_rate)
    elif "sample_rate" not in given:
        try:
            cfg["sample_rate"] = _probe_rate(reader, skip_bad)
        except AudioError as e:
            raise UserError(f"{e}; fix the input, or give the rate (--sample-rate) and pass "
                            "--skip-bad to leave bad utterances out") from e
    try:
        return LogMel(**cfg).config()  # validates and normalises types
    except TypeError as e:
        raise UserError(f"bad front-end config: {e}") from e


def _plan_jobs(reader: AudioReader, out_dir: Path, data_dir: Path, nj: int,
               cfg: Mapping[str, Any], resample: bool, allow: bool, skip_bad: bool
               ) -> list[dict[str, Any]]:
    """``nj`` contiguous shards of the utterances, each with the key that says whether an
    earlier run already computed it (the config and every input file's identity)."""
    utts = reader.utterance_ids
    nj = max(1, min(int(nj), len(utts)))
    bounds = np.linspace(0, len(utts), nj + 1).round().astype(int)
    _remove_jobs_beyond(out_dir, nj)
    jobs = []
    for j in range(nj):
        shard = utts[bounds[j]:bounds[j + 1]]
        # A file replaced in place keeps its wav.scp line: its size and mtime change the key.
        key = _job_key(cfg, resample, allow,
                       [(u, reader.source(u), reader.file_stamp(u)) for u in shard])
        jobs.append(dict(index=j + 1, utts=shard, key=key, data_dir=str(data_dir),
                         out_dir=str(out_dir), config=cfg, resample=resample,
                         allow_commands=allow, skip_bad=skip_bad))
    return jobs


def _probe_rate(reader: AudioReader, skip_bad: bool) -> int:
    """Native rate of the first readable utterance (unreadable ones fail later, in the jobs)."""
    first_error: AudioError | None = None
    for utt in reader.utterance_ids[:50 if skip_bad else 1]:
        try:
            return reader.native_rate(utt)
        except AudioError as e:
            first_error = first_error or e
    raise first_error or UserError("no utterances")


def _claim_out_dir(out_dir: Path, data_dir: Path) -> None:
    # Job files have fixed names (raw_fbank.JOB.ark), so two data dirs sharing an out dir
    # would overwrite each other's archives under the other's feats.scp: refuse instead.
    owner_file = out_dir / ".data_dir"
    owner = str(data_dir.resolve())
    if owner_file.exists() and owner_file.read_text().strip() != owner:
        raise UserError(f"{out_dir} holds the features of {owner_file.read_text().strip()}; "
                        f"give {data_dir} its own --out-dir (or delete {owner_file} if that "
                        "data dir was moved here)")
    if not owner_file.exists():
        with atomic_write(owner_file) as f:
            f.write(owner + "\n")


def _remove_jobs_beyond(out_dir: Path, nj: int) -> None:
    """Drop a previous run's outputs of jobs this run does not have (it had a larger nj)."""
    for path in out_dir.glob("raw_fbank.*.*"):
        index = path.name.split(".")[1]
        if index.isdigit() and int(index) > nj:
            path.unlink()


def _backup_outputs(data_dir: Path) -> None:
    # Like Kaldi's make_fbank.sh: move stale outputs away first, so a failed run never leaves
    # a feats.scp that does not match the data dir.
    for name in ("feats.scp", "utt2num_frames"):
        path = data_dir / name
        if path.exists():
            (data_dir / ".backup").mkdir(exist_ok=True)
            os.replace(path, data_dir / ".backup" / name)


def _job_key(cfg: dict, resample: bool, allow: bool, sources: list[tuple]) -> str:
    text = json.dumps([_MARKER_VERSION, cfg, resample, allow, sources], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _disk_full_is_user_error(path: str | os.PathLike) -> contextlib.AbstractContextManager:
    return disk_full_is_user_error(path, "finished jobs are kept")


def _paths(out_dir: str | Path, index: int) -> tuple[Path, Path, Path]:
    out_dir = Path(out_dir)
    return tuple(out_dir / f"raw_fbank.{index}.{ext}" for ext in ("ark", "scp", "done"))


def _read_marker(out_dir: Path, index: int, key: str) -> dict | None:
    """A job's marker if it is complete and was made with the same settings and inputs."""
    ark, scp, done = _paths(out_dir, index)
    try:
        marker = json.loads(done.read_text())
        ok = (marker.get("key") == key and scp.is_file()
              and ark.is_file() and ark.stat().st_size == marker.get("ark_bytes"))
    except (OSError, ValueError):
        return None
    return marker if ok else None


def _run_jobs(jobs: list[dict], update: Callable[[int], Any]) -> dict[int, str]:
    """Run jobs: the first in this process, the others in forked workers; errors by job."""
    if not jobs:
        return {}
    pool = _Workers(jobs[1:], update) if len(jobs) > 1 else None
    errors: dict[int, str] = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # like every worker: nj single-threaded jobs share the cores
    try:
        def local_update(n: int) -> None:
            update(n)
            if pool is not None:
                pool.poll(block=False)

        try:
            _run_job(jobs[0], local_update)
        except UserError as e:
            errors[jobs[0]["index"]] = str(e)
        if pool is not None:
            errors.update(pool.wait())
    finally:
        torch.set_num_threads(threads)
        if pool is not None:
            pool.close()
    return errors


class _Workers:
    """Forked worker processes, one per job, reporting progress and results on a queue."""

    def __init__(self, jobs: list[dict], update: Callable[[int], Any]) -> None:
        # fork starts a worker in milliseconds (spawn re-imports torch, about a second each).
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        self.update = update
        self.messages = ctx.Queue()
        self.procs = {job["index"]: ctx.Process(target=_worker, args=(job, self.messages),
                                                daemon=True) for job in jobs}
        self.unresolved = set(self.procs)
        self.errors: dict[int, str] = {}
        self.crash: str | None = None
        self._dead_seen: set[int] = set()
        for proc in self.procs.values():
            proc.start()

    def poll(self, block: bool) -> None:
        """Handle the messages that are there (or wait up to 0.2 s for one)."""
        while self.unresolved:
            try:
                kind, index, payload = self.messages.get(block, 0.2)
            except queue_module.Empty:
                if block:
                    self._check_dead()
                return
            if kind == "progress":
                self.update(payload)
                continue
            self.unresolved.discard(index)
            if kind == "error":
                self.errors[index] = payload
            elif kind == "crash":
                self.crash = self.crash or f"feature job {index} failed:\n{payload}"

    def _check_dead(self) -> None:
        for index in list(self.unresolved):
            if self.procs[index].exitcode is not None:
                if index in self._dead_seen:  # gone, and nothing came after a grace period
                    self.errors[index] = (f"feature job {index} died (exit code "
                                          f"{self.procs[index].exitcode}); run again to resume")
                    self.unresolved.discard(index)
                self._dead_seen.add(index)

    def wait(self) -> dict[int, str]:
        while self.unresolved:
            self.poll(block=True)
        if self.crash:
            raise RuntimeError(self.crash)
        return self.errors

    def close(self) -> None:
        if self.unresolved:  # interrupted or failed: stop the rest (finished jobs are kept)
            for proc in self.procs.values():
                if proc.is_alive():
                    proc.terminate()
            for proc in self.procs.values():
                proc.join()
        else:
            # Every worker has reported; reap them in the background instead of waiting the
            # few milliseconds each takes to tear down its copy of this process.
            threading.Thread(target=lambda: [p.join() for p in self.procs.values()],
                             daemon=True).start()
        self.messages.close()


def _worker(job: dict, messages) -> None:
    _die_with_parent()
    torch.set_num_threads(1)  # nj processes share the cores; one thread each
    try:
        _run_job(job, lambda n: messages.put(("progress", job["index"], n)))
        messages.put(("done", job["index"], None))
    except UserError as e:
        messages.put(("error", job["index"], str(e)))
    except BaseException:  # a bug, not bad input: the parent shows the traceback
        messages.put(("crash", job["index"], traceback.format_exc()))


def _die_with_parent() -> None:
    """Linux: get SIGTERM when the parent dies (e.g. a killed compute-feats), not linger."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _run_job(job: dict, update: Callable[[int], Any]) -> None:
    """Compute one shard: ark + scp (temp names until complete), then the marker."""
    ark, scp, done = _paths(job["out_dir"], job["index"])
    with contextlib.suppress(FileNotFoundError):
        done.unlink()
    for stale in (ark, scp, done):  # temp files of a killed run (see fileio.atomic_write)
        for tmp in glob.glob(glob.escape(str(stale.parent / f".{stale.name}.")) + "*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    cfg = job["config"]
    reader = AudioReader(job["data_dir"], cfg["sample_rate"], resample=job["resample"],
                         allow_commands=job["allow_commands"])
    fbank = LogMel(**cfg)
    frames: dict[str, int] = {}
    durations: dict[str, float] = {}
    bad: list[tuple[str, str]] = []

    def bad_utt(utt: str, message: str) -> None:
        if not job["skip_bad"]:
            raise UserError(message)
        bad.append((utt, message))

    def features() -> Iterator[tuple[str, np.ndarray]]:
        for group in _groups(job["utts"], reader, fbank, bad_utt, update):
            names, waves = zip(*group, strict=True)
            with torch.inference_mode():
                if cfg["dither"] > 0:
                    # Noise seeded by utterance id: the same features whatever nj is.
                    flat = torch.cat([fbank.compute_flat(
                        [torch.from_numpy(w)],
                        generator=torch.Generator().manual_seed(zlib.crc32(u.encode())))[0]
                        for u, w in group])
                    counts = [int(fbank.num_frames(len(w))) for w in waves]
                else:
                    flat, counts = fbank.compute_flat([torch.from_numpy(w) for w in waves])
            # Log energies are bounded, so the sum is finite exactly when every value is.
            finite = bool(torch.isfinite(flat.sum()))
            feats = torch.split(flat, counts)
            for utt, wave, mat in zip(names, waves, feats, strict=True):
                if not finite and not bool(torch.isfinite(mat).all()):
                    bad_utt(utt, f"{reader.where(utt)}: features are NaN or infinite (the "
                            "audio has NaN/inf samples)")
                    continue
                frames[utt] = len(mat)
                durations[utt] = len(wave) / cfg["sample_rate"]
                yield utt, mat.numpy()

    with _disk_full_is_user_error(ark):
        write_matrices(ark, scp, features())
        marker = {"key": job["key"], "ark_bytes": ark.stat().st_size, "frames": frames,
                  "durations": durations, "bad": bad}
        with atomic_write(done) as f:
            json.dump(marker, f)


def _groups(utts: list[str], reader: AudioReader, fbank: LogMel, bad_utt, update
            ) -> Iterator[list[tuple[str, np.ndarray]]]:
    """Readable utterances in groups of about GROUP_FRAMES frames (one LogMel call each)."""
    group: list[tuple[str, np.ndarray]] = []
    size = 0
    for utt in utts:
        try:
            wave = reader.read(utt)
        except AudioError as e:
            bad_utt(utt, str(e))
            update(1)
            continue
        group.append((utt, wave))
        size += len(wave) // fbank.shift
        if size >= GROUP_FRAMES:
            yield group
            update(len(group))
            group, size = [], 0
    if group:
        yield group
        update(len(group))


def _finish(data_dir: Path, out_dir: Path, jobs: list[dict], markers: list[dict],
            bad: list[tuple[str, str]], cfg: dict, skipped: int, started: float
            ) -> dict[str, Any]:
    frames = {u: n for m in markers for u, n in m["frames"].items()}
    if not frames:
        raise UserError(f"{data_dir}: no utterance could be processed; see "
                        f"{out_dir / 'bad_utts.txt'}")
    bad_file = out_dir / "bad_utts.txt"
    with _disk_full_is_user_error(bad_file):
        if bad:
            write_table(bad_file, [(utt, reason) for utt, reason in bad])
        elif bad_file.exists():
            bad_file.unlink()
    scp: dict[str, str] = {}
    for job in jobs:
        scp.update((k, e.value) for k, e in read_table(_paths(out_dir, job["index"])[1]).items())
    durations = {u: d for m in markers for u, d in m["durations"].items()}
    with _disk_full_is_user_error(data_dir):
        write_table(data_dir / "utt2num_frames", {u: str(n) for u, n in frames.items()})
        write_table(data_dir / "utt2dur", {u: f"{d:.4f}" for u, d in durations.items()})
        with atomic_write(data_dir / FBANK_CONF) as f:
            yaml.safe_dump(cfg, f, sort_keys=False)
        write_table(data_dir / "feats.scp", scp)  # last: its presence means all is there
    return {"utterances": len(scp), "bad": len(bad), "frames": sum(frames.values()),
            "jobs": len(jobs), "jobs_skipped": skipped,
            "seconds": round(time.perf_counter() - started, 3),
            "feats_scp": str(data_dir / "feats.scp"),
            "bad_utts": str(bad_file) if bad else None, "config": cfg}


# --- CMVN ---------------------------------------------------------------------------------

CMVN_MODES = ("global", "speaker", "utterance")


def compute_cmvn(data_dir: str | os.PathLike, mode: str = "global") -> Path:
    """Accumulate CMVN statistics over ``DIR/feats.scp``; returns the file written.

    ``global``: ``DIR/global_cmvn``, one keyless binary Kaldi matrix (2 x (dim+1), float64),
    like ``compute-cmvn-stats scp:feats.scp global_cmvn``. ``speaker``: ``DIR/cmvn.ark`` and
    ``DIR/cmvn.scp`` keyed by speaker (via ``utt2spk``). ``utterance``: the same keyed by
    utterance. Read them with :func:`blspeech.io.kaldi.read_matrix` /
    :func:`blspeech.frontend.features.load_cmvn_stats`.

    Example:
        >>> stats = read_matrix(str(compute_cmvn("data/train")))         # doctest: +SKIP
    """
    if mode not in CMVN_MODES:
        raise UserError(f"CMVN mode must be one of {', '.join(CMVN_MODES)}, got {mode!r}")
    data_dir = Path(data_dir)
    feats_scp = data_dir / "feats.scp"
    if not feats_scp.is_file():
        raise UserError(f"{feats_scp}: file not found; run 'blspeech compute-feats "
                        f"{data_dir}' first")
    with ScpReader(feats_scp) as reader:
        feats = _finite_feats(reader)
        if mode == "global":
            stats = cmvn_stats(mat for _, mat in feats)
            path = data_dir / "global_cmvn"
            write_matrix(path, stats)  # no key: a plain matrix file, as Kaldi writes it
            return path
        return _keyed_cmvn(data_dir, mode, feats)


def _finite_feats(reader: ScpReader) -> Iterator[tuple[str, np.ndarray]]:
    """``(utt, matrix)`` of an scp; NaN or inf is an error, not statistics that poison
    every later normalisation."""
    for utt in reader.keys():
        mat = reader[utt]
        if not np.isfinite(mat).all():
            bad = int((~np.isfinite(mat)).any(axis=1).sum())
            raise UserError(f"{reader.path}:{reader.entries[utt].line}: utt {utt!r}: features "
                            f"contain NaN or inf in {bad} of {len(mat)} frames; recompute "
                            "them or remove the utterance (no CMVN statistics written)")
        yield utt, mat


def _keyed_cmvn(data_dir: Path, mode: str, feats: Iterator[tuple[str, np.ndarray]]) -> Path:
    utt2spk = {}
    if mode == "speaker":
        utt2spk = {u: e.value for u, e in read_table(data_dir / "utt2spk").items()}
    sums: dict[str, np.ndarray] = {}
    for utt, mat in feats:
        if mode == "speaker" and utt not in utt2spk:
            raise UserError(f"{data_dir / 'utt2spk'}: utterance {utt!r} of feats.scp has no "
                            "speaker")
        key = utt2spk.get(utt, utt)
        stats = cmvn_stats([mat])
        sums[key] = sums[key] + stats if key in sums else stats
    path = data_dir / "cmvn.scp"
    write_matrices((data_dir / "cmvn.ark").resolve(), path,
                   sorted(sums.items(), key=lambda kv: kv[0].encode()))
    return path
