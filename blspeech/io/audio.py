"""Audio input for Kaldi data dirs: ``wav.scp`` paths and commands, segments, channels.

A ``wav.scp`` value is either a file path (wav, flac or NIST SPHERE, read with
``soundfile``) or, as in Kaldi, a shell command ending in ``|`` whose standard output is
one audio file::

    rec1 /corpus/rec1.wav
    rec2 sox /corpus/rec2.wav -t wav - speed 0.9 |
    rec3 sph2pipe -f wav -p -c 1 /corpus/rec3.sph |

Security: such commands are executed with the shell (``/bin/sh``), exactly as Kaldi does,
so a ``wav.scp`` from an untrusted source can run anything with your permissions. Turn
command execution off with ``allow_commands=False`` (CLI: ``--no-wavscp-commands``) or by
setting the environment variable ``BLSPEECH_NO_WAVSCP_COMMANDS=1``, which wins over
everything else; a command entry then fails with a clear error instead of running. The
same switch covers every command blspeech reads from: ``feats.scp`` and ``cmvn.scp``
entries and rspecifiers such as ``ark:gunzip -c ali.gz |`` (see
:mod:`blspeech.io.kaldi.pipes`).

Timeout: commands may run as long as they like unless ``BLSPEECH_PIPE_TIMEOUT=SECONDS`` is
set; then a ``wav.scp`` command that has not finished after that many seconds, or a
``feats.scp``/``ark:... |`` command whose reader has waited that long for its next bytes,
is killed (with everything it started) and the utterance fails with an error naming it.

Files are checked for truncation: a wav or SPHERE file whose header promises more samples
than the file holds (a copy cut short) is an error, not silently half the audio.

Optional files of the data dir are honoured: ``segments`` (``utt rec start end`` in
seconds; the utterance is ``rec[start:end]``, an end past the recording by more than
:data:`END_TOLERANCE_S` is an error) and ``reco2file_and_channel`` (``rec file A|B|1|2``;
A/1 means the first channel, B/2 the second). Samples are float32 in [-1, 1] (16-bit
PCM ``x / 32768``); :class:`blspeech.frontend.features.LogMel` scales them back to Kaldi's int16
range.

Example:
    >>> reader = AudioReader("data/train", sample_rate=16000)        # doctest: +SKIP
    >>> audio = reader.read(reader.utterance_ids[0])  # 1-D float32   # doctest: +SKIP
    >>> audio, rate = read_audio("sox x.wav -t wav - speed 0.9 |")   # doctest: +SKIP
"""

from __future__ import annotations

import io
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from blspeech.errors import UserError
from blspeech.io.kaldi import read_table
from blspeech.io.kaldi.pipes import NO_COMMANDS_ENV as NO_COMMANDS_ENV
from blspeech.io.kaldi.pipes import PIPE_TIMEOUT_ENV as PIPE_TIMEOUT_ENV
from blspeech.io.kaldi.pipes import commands_allowed as commands_allowed
from blspeech.io.kaldi.pipes import commands_off, kill, pipe_timeout, start

#: Audio shorter than one analysis frame cannot give a single feature frame.
MIN_DURATION_S = 0.025
#: A segment may end this much past its recording (one 10 ms frame of rounding) and is
#: then clipped; anything later is an error.
END_TOLERANCE_S = 0.01
_STDERR_TAIL = 500


class AudioError(UserError):
    """Audio that cannot be read or used; the message names the file, line and utterance."""


def is_command(spec: str) -> bool:
    """True for a Kaldi pipe entry (``cmd ... |``)."""
    return spec.rstrip().endswith("|")


class _ReadFailure(Exception):
    """Internal: why a spec could not be read; callers add the location."""


_INT16_SCALE = np.float32(1.0 / 32768.0)


def _decode(source, what: str) -> tuple[np.ndarray, int]:
    try:
        with sf.SoundFile(source) as f:
            if isinstance(source, str):
                _check_complete(f, source)
            if f.subtype == "PCM_16":
                # Same values as libsndfile's float read (x / 32768, exact), in half the time.
                ints = f.read(dtype="int16", always_2d=True)
                audio = np.multiply(ints, _INT16_SCALE, dtype=np.float32)
            else:
                audio = f.read(dtype="float32", always_2d=True)
            rate = f.samplerate
    except _ReadFailure:
        raise
    except Exception as e:  # libsndfile reports corrupt/unknown formats as assorted errors
        raise _ReadFailure(f"cannot read {what}: {_short(e)}") from e
    return audio, int(rate)


def _short(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    # soundfile names an in-memory source "<_io.BytesIO object at 0x...>": say nothing.
    return re.sub(r"^Error opening <[^>]*>: ", "", lines[-1]) if lines else type(e).__name__


_WAV_DATA = re.compile(r"^data : (\d+) \(should be \d+\)$", re.M)
_WAV_ALIGN = re.compile(r"^\s*Block Align\s*: (\d+)$", re.M)
_SPHERE_COUNT = re.compile(rb"\bsample_count -i (\d+)")


def _header_frames(f: sf.SoundFile, path: str) -> int | None:
    """Samples per channel the header of a wav or SPHERE file promises, if it says."""
    if f.format == "WAV":
        # libsndfile quietly shortens a data chunk that runs past the end of the file;
        # only its log keeps what the header said.
        data, align = _WAV_DATA.search(f.extra_info), _WAV_ALIGN.search(f.extra_info)
        size = int(data[1]) if data else None
        # 0 and 0xFFFFFFFF are "length unknown" (a stream recorded without seeking back).
        if size in (None, 0, 0xFFFFFFFF) or not align or not int(align[1]):
            return None
        return size // int(align[1])
    if f.format == "NIST":
        with open(path, "rb") as raw:
            m = _SPHERE_COUNT.search(raw.read(1024))
        return int(m[1]) if m else None
    return None


def _check_complete(f: sf.SoundFile, path: str) -> None:
    promised = _header_frames(f, path)
    if promised is not None and promised > f.frames:
        raise _ReadFailure(f"cannot read {path}: truncated: header says {promised} samples, "
                           f"file has {f.frames}; copy or convert the file again")


def _run_command(spec: str, allow_commands: bool) -> bytes:
    command = spec.rstrip()[:-1].strip()
    if not commands_allowed(allow_commands):
        raise _ReadFailure(f"wav.scp {commands_off(command)}")
    timeout = pipe_timeout()
    proc = start(command, timeout, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                 stderr=subprocess.PIPE)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as e:
        kill(proc)
        proc.communicate()
        raise _ReadFailure(f"command timed out after {timeout:g} s ({PIPE_TIMEOUT_ENV}) and "
                           f"was killed: {command}") from e
    except BaseException:  # e.g. Ctrl-C: do not leave the command running
        kill(proc)
        proc.wait()
        raise
    # The end of stderr on one line ("a; b"): messages stay one line (CLI, bad_utts.txt).
    lines = [ln.strip() for ln in stderr.decode(errors="replace").splitlines()]
    tail = "; ".join(ln for ln in lines if ln)[-_STDERR_TAIL:]
    if proc.returncode != 0:
        raise _ReadFailure(f"command failed with exit code {proc.returncode}: {command}"
                           + (f": {tail}" if tail else ""))
    if not stdout:
        raise _ReadFailure(f"command wrote no audio: {command}" + (f": {tail}" if tail else ""))
    return stdout


def _load(spec: str, allow_commands: bool, start_s: float | None = None,
          end_s: float | None = None) -> tuple[np.ndarray, int, float]:
    """(samples x channels, rate, full duration in s) of a path or command, maybe a slice."""
    if is_command(spec):
        command = spec.rstrip()[:-1].strip()
        audio, rate = _decode(io.BytesIO(_run_command(spec, allow_commands)),
                              f"the command's output as audio (command: {command})")
        return audio, rate, len(audio) / rate
    if not os.path.isfile(spec):
        raise _ReadFailure(f"cannot read {spec}: file not found")
    if start_s is None:
        audio, rate = _decode(spec, spec)
        return audio, rate, len(audio) / rate
    # A segment of a file: seek instead of decoding the whole (maybe hour-long) recording.
    try:
        with sf.SoundFile(spec) as f:
            _check_complete(f, spec)
            rate, frames = f.samplerate, f.frames
            first, last = _segment_bounds(start_s, end_s, rate, frames)
            f.seek(first)
            audio = f.read(last - first, dtype="float32", always_2d=True)
    except (_ReadFailure, _SegmentPastEnd):
        raise
    except Exception as e:
        raise _ReadFailure(f"cannot read {spec}: {_short(e)}") from e
    return audio, rate, frames / rate


class _SegmentPastEnd(Exception):
    pass


def _segment_bounds(start_s: float, end_s: float, rate: int, frames: int) -> tuple[int, int]:
    if end_s > frames / rate + END_TOLERANCE_S:
        raise _SegmentPastEnd(frames / rate)
    first = min(int(round(start_s * rate)), frames)
    return first, min(int(round(end_s * rate)), frames)


def _channel(audio: np.ndarray, channel: int) -> np.ndarray:
    if channel >= audio.shape[1]:
        raise _ReadFailure(f"channel {channel} requested (counting from 0) but the audio has "
                           f"{audio.shape[1]} channel(s)")
    return np.ascontiguousarray(audio[:, channel])


def _fix_rate(audio: np.ndarray, rate: int, sample_rate: int | None,
              resample: bool) -> tuple[np.ndarray, int]:
    if sample_rate is None or rate == sample_rate:
        return audio, rate
    if not resample:
        raise _ReadFailure(f"sample rate is {rate} Hz but {sample_rate} Hz is required "
                           f"(resample=False / --no-resample)")
    import torch
    import torchaudio.functional

    out = torchaudio.functional.resample(torch.from_numpy(audio), rate, sample_rate)
    return out.numpy().astype(np.float32, copy=False), sample_rate


def _check_length(audio: np.ndarray, rate: int) -> None:
    if len(audio) == 0:
        raise _ReadFailure("empty audio (0 samples)")
    if len(audio) < int(rate * MIN_DURATION_S):
        raise _ReadFailure(f"audio too short: {len(audio)} samples ({1000 * len(audio) / rate:.1f}"
                           f" ms at {rate} Hz) is less than one {1000 * MIN_DURATION_S:g} ms frame")


def read_audio(path_or_command: str, sample_rate: int | None = None, *, resample: bool = True,
               allow_commands: bool = True, channel: int = 0) -> tuple[np.ndarray, int]:
    """Read one file or ``wav.scp`` command: ``(mono float32 samples, rate)``.

    With ``sample_rate`` set, other rates are resampled (or, with ``resample=False``, are an
    error). ``channel`` picks one channel of a multi-channel file (0 = first).

    Example:
        >>> audio, rate = read_audio("x.flac", 16000)                         # doctest: +SKIP
        >>> audio, rate = read_audio("sph2pipe -f wav -p -c 1 x.sph |")       # doctest: +SKIP
    """
    spec = os.fspath(path_or_command)
    try:
        audio, rate, _ = _load(spec, allow_commands)
        audio, rate = _fix_rate(_channel(audio, channel), rate, sample_rate, resample)
        _check_length(audio, rate)
    except _ReadFailure as e:
        raise AudioError(f"{spec}: {e}") from e
    return audio, rate


@dataclass(frozen=True)
class _Utterance:
    recording: str
    spec: str
    channel: int
    start: float | None
    end: float | None
    where: str  # "file:line: utt 'id'" for messages


class AudioReader:
    """Utterance audio of a Kaldi data dir (``wav.scp`` + optional ``segments``).

    ``sample_rate=None`` keeps the files' rate; then all utterances must share the rate of
    the first one (in sorted order), which :attr:`sample_rate` reports. ``allow_commands``
    defaults to running ``wav.scp`` commands unless ``BLSPEECH_NO_WAVSCP_COMMANDS`` is set.
    ``channel`` is used for recordings that ``reco2file_and_channel`` does not list.

    Example:
        >>> reader = AudioReader("data/train", 16000)                  # doctest: +SKIP
        >>> for utt in reader.utterance_ids:                            # doctest: +SKIP
        ...     samples = reader.read(utt)
    """

    def __init__(self, data_dir: str | os.PathLike, sample_rate: int | None = None, *,
                 resample: bool = True, allow_commands: bool | None = None,
                 channel: int = 0) -> None:
        self.data_dir = Path(data_dir)
        self._rate = sample_rate
        self.resample = resample
        self.allow_commands = commands_allowed(allow_commands)
        self.channel = channel
        self._utts = self._index()
        self.utterance_ids: list[str] = sorted(self._utts, key=str.encode)
        self._cache: tuple[str, np.ndarray, int] | None = None  # last command recording

    def _index(self) -> dict[str, _Utterance]:
        wav_scp = self.data_dir / "wav.scp"
        if not wav_scp.is_file():
            raise AudioError(f"{wav_scp}: file not found (a data dir needs wav.scp)")
        wavs = read_table(wav_scp, check_sorted=False)
        channels = {rec: self.channel for rec in wavs}
        r2fc = self.data_dir / "reco2file_and_channel"
        if r2fc.is_file():
            for rec, entry in read_table(r2fc, check_sorted=False).items():
                channels[rec] = _parse_channel(entry.value, f"{r2fc}:{entry.line}")
        segments = self.data_dir / "segments"
        if not segments.is_file():
            return {utt: _Utterance(utt, e.value, channels[utt], None, None,
                                    f"{wav_scp}:{e.line}: utt {utt!r}")
                    for utt, e in wavs.items()}
        utts = {}
        for utt, entry in read_table(segments, check_sorted=False).items():
            where = f"{segments}:{entry.line}: utt {utt!r}"
            fields = entry.value.split()
            try:
                rec, start, end = fields[0], float(fields[1]), float(fields[2])
                if len(fields) != 3:
                    raise ValueError
            except (ValueError, IndexError) as e:
                raise AudioError(f"{where}: expected 'utt recording start end', got "
                                 f"{entry.value!r}") from e
            if rec not in wavs:
                raise AudioError(f"{where}: recording {rec!r} is not in {wav_scp}")
            if not 0 <= start < end:
                raise AudioError(f"{where}: bad segment times {start} {end} "
                                 "(need 0 <= start < end)")
            utts[utt] = _Utterance(rec, wavs[rec].value, channels[rec], start, end, where)
        return utts

    @property
    def sample_rate(self) -> int:
        """The rate of :meth:`read`'s output (the first utterance's if none was given)."""
        if self._rate is None:
            if not self.utterance_ids:
                raise AudioError(f"{self.data_dir / 'wav.scp'}: no utterances")
            self._rate = self.native_rate(self.utterance_ids[0])
        return self._rate

    def native_rate(self, utt_id: str) -> int:
        """The sample rate an utterance's audio has before any resampling.

        Cheap for files (header only); a command entry is run (and its output cached).
        """
        utt = self._utts[utt_id]
        try:
            if is_command(utt.spec):
                return self._load(utt)[1]
            if not os.path.isfile(utt.spec):
                raise _ReadFailure(f"cannot read {utt.spec}: file not found")
            try:
                return int(sf.info(utt.spec).samplerate)
            except Exception as e:
                raise _ReadFailure(f"cannot read {utt.spec}: {_short(e)}") from e
        except _ReadFailure as e:
            raise AudioError(f"{utt.where}: {e}") from e

    def source(self, utt_id: str) -> str:
        """What an utterance is read from: the wav.scp value, channel and segment times."""
        utt = self._utts[utt_id]
        times = "" if utt.start is None else f" [{utt.start!r}, {utt.end!r}]"
        return f"{utt.spec} (channel {utt.channel}){times}"

    def file_stamp(self, utt_id: str) -> tuple[int, int] | None:
        """``(size, mtime_ns)`` of an utterance's audio file; None for a command or a
        missing file. A file replaced in place changes it (cached features can tell)."""
        spec = self._utts[utt_id].spec
        if is_command(spec):
            return None
        try:
            st = os.stat(spec)
        except OSError:
            return None
        return st.st_size, st.st_mtime_ns

    def where(self, utt_id: str) -> str:
        """``file:line: utt 'id'``: where an utterance is defined, for error messages."""
        return self._utts[utt_id].where

    def _load(self, utt: _Utterance) -> tuple[np.ndarray, int]:
        if not is_command(utt.spec):
            try:
                audio, rate, _ = _load(utt.spec, self.allow_commands, utt.start, utt.end)
            except _SegmentPastEnd as e:
                raise _ReadFailure(_past_end(utt, e.args[0])) from e
            return audio, rate
        # A command runs once for consecutive reads of its recording (several segments, or
        # native_rate() then read()); files are cheap to reopen and are not cached.
        if self._cache is None or self._cache[0] != utt.recording:
            self._cache = None
            audio, rate, _ = _load(utt.spec, self.allow_commands)
            self._cache = (utt.recording, audio, rate)
        _, audio, rate = self._cache
        if utt.start is None:
            return audio.copy(), rate  # callers own what read() returns; the cache stays intact
        try:
            first, last = _segment_bounds(utt.start, utt.end, rate, len(audio))
        except _SegmentPastEnd as e:
            raise _ReadFailure(_past_end(utt, e.args[0])) from e
        return audio[first:last].copy(), rate

    def read(self, utt_id: str) -> np.ndarray:
        """Mono float32 samples of one utterance at :attr:`sample_rate`."""
        try:
            utt = self._utts[utt_id]
        except KeyError as e:
            raise AudioError(f"utterance {utt_id!r} is not in {self.data_dir}") from e
        target = self.sample_rate
        try:
            audio, rate = self._load(utt)
            audio, rate = _fix_rate(_channel(audio, utt.channel), rate, target, self.resample)
            _check_length(audio, rate)
        except _ReadFailure as e:
            raise AudioError(f"{utt.where}: {e}") from e
        return audio


def _past_end(utt: _Utterance, duration: float) -> str:
    return (f"segment {utt.start:g}-{utt.end:g} s ends past the end of recording "
            f"{utt.recording!r} ({duration:.3f} s long)")


def _parse_channel(value: str, where: str) -> int:
    fields = value.split()
    code = fields[-1].upper() if len(fields) == 2 else ""
    if code in ("A", "1"):
        return 0
    if code in ("B", "2"):
        return 1
    raise AudioError(f"{where}: expected 'recording file A|B|1|2', got {value!r}")
