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
everything else; a command entry then fails with a clear error instead of running.

Optional files of the data dir are honoured: ``segments`` (``utt rec start end`` in
seconds; the utterance is ``rec[start:end]``, an end past the recording by more than
:data:`END_TOLERANCE_S` is an error) and ``reco2file_and_channel`` (``rec file A|B|1|2``;
A/1 means the first channel, B/2 the second). Samples are float32 in [-1, 1] (16-bit
PCM ``x / 32768``); :class:`blspeech.features.LogMel` scales them back to Kaldi's int16
range.

Example:
    >>> reader = AudioReader("data/train", sample_rate=16000)        # doctest: +SKIP
    >>> audio = reader.read(reader.utterance_ids[0])  # 1-D float32   # doctest: +SKIP
    >>> audio, rate = read_audio("sox x.wav -t wav - speed 0.9 |")   # doctest: +SKIP
"""

from __future__ import annotations

import io
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from .errors import UserError
from .kaldi import read_table

#: Environment variable that, set to a non-empty value other than ``0``, disables commands.
NO_COMMANDS_ENV = "BLSPEECH_NO_WAVSCP_COMMANDS"
#: Audio shorter than one analysis frame cannot give a single feature frame.
MIN_DURATION_S = 0.025
#: A segment may end this much past its recording (one 10 ms frame of rounding) and is
#: then clipped; anything later is an error.
END_TOLERANCE_S = 0.01
_STDERR_TAIL = 500


class AudioError(UserError):
    """Audio that cannot be read or used; the message names the file, line and utterance."""


def commands_allowed(allow_commands: bool | None = None) -> bool:
    """May ``wav.scp`` commands run? The env switch first, then ``allow_commands`` (None: yes)."""
    if os.environ.get(NO_COMMANDS_ENV, "") not in ("", "0"):
        return False
    return True if allow_commands is None else bool(allow_commands)


def is_command(spec: str) -> bool:
    """True for a Kaldi pipe entry (``cmd ... |``)."""
    return spec.rstrip().endswith("|")


class _ReadFailure(Exception):
    """Internal: why a spec could not be read; callers add the location."""


_INT16_SCALE = np.float32(1.0 / 32768.0)


def _decode(source, what: str) -> tuple[np.ndarray, int]:
    try:
        with sf.SoundFile(source) as f:
            if f.subtype == "PCM_16":
                # Same values as libsndfile's float read (x / 32768, exact), in half the time.
                ints = f.read(dtype="int16", always_2d=True)
                audio = np.multiply(ints, _INT16_SCALE, dtype=np.float32)
            else:
                audio = f.read(dtype="float32", always_2d=True)
            rate = f.samplerate
    except Exception as e:  # libsndfile reports corrupt/unknown formats as assorted errors
        raise _ReadFailure(f"cannot read {what}: {_short(e)}") from None
    return audio, int(rate)


def _short(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[-1] if lines else type(e).__name__


def _run_command(spec: str, allow_commands: bool) -> bytes:
    command = spec.rstrip()[:-1].strip()
    if not commands_allowed(allow_commands):
        raise _ReadFailure(
            f"wav.scp commands are disabled (allow_commands=False, --no-wavscp-commands or "
            f"{NO_COMMANDS_ENV}=1); not running: {command}")
    proc = subprocess.run(command, shell=True, stdin=subprocess.DEVNULL, capture_output=True)
    # The end of stderr on one line ("a; b"): messages stay one line (CLI, bad_utts.txt).
    lines = [ln.strip() for ln in proc.stderr.decode(errors="replace").splitlines()]
    tail = "; ".join(ln for ln in lines if ln)[-_STDERR_TAIL:]
    if proc.returncode != 0:
        raise _ReadFailure(f"command failed with exit code {proc.returncode}: {command}"
                           + (f": {tail}" if tail else ""))
    if not proc.stdout:
        raise _ReadFailure(f"command wrote no audio: {command}" + (f": {tail}" if tail else ""))
    return proc.stdout


def _load(spec: str, allow_commands: bool, start_s: float | None = None,
          end_s: float | None = None) -> tuple[np.ndarray, int, float]:
    """(samples x channels, rate, full duration in s) of a path or command, maybe a slice."""
    if is_command(spec):
        audio, rate = _decode(io.BytesIO(_run_command(spec, allow_commands)),
                              "the command's output as audio")
        return audio, rate, len(audio) / rate
    if not os.path.isfile(spec):
        raise _ReadFailure(f"cannot read {spec}: file not found")
    if start_s is None:
        audio, rate = _decode(spec, spec)
        return audio, rate, len(audio) / rate
    # A segment of a file: seek instead of decoding the whole (maybe hour-long) recording.
    try:
        with sf.SoundFile(spec) as f:
            rate, frames = f.samplerate, f.frames
            first, last = _segment_bounds(start_s, end_s, rate, frames)
            f.seek(first)
            audio = f.read(last - first, dtype="float32", always_2d=True)
    except (_ReadFailure, _SegmentPastEnd):
        raise
    except Exception as e:
        raise _ReadFailure(f"cannot read {spec}: {_short(e)}") from None
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
        raise AudioError(f"{spec}: {e}") from None
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
            except (ValueError, IndexError):
                raise AudioError(f"{where}: expected 'utt recording start end', got "
                                 f"{entry.value!r}") from None
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
                raise _ReadFailure(f"cannot read {utt.spec}: {_short(e)}") from None
        except _ReadFailure as e:
            raise AudioError(f"{utt.where}: {e}") from None

    def source(self, utt_id: str) -> str:
        """What an utterance is read from: the wav.scp value, channel and segment times."""
        utt = self._utts[utt_id]
        times = "" if utt.start is None else f" [{utt.start!r}, {utt.end!r}]"
        return f"{utt.spec} (channel {utt.channel}){times}"

    def where(self, utt_id: str) -> str:
        """``file:line: utt 'id'``: where an utterance is defined, for error messages."""
        return self._utts[utt_id].where

    def _load(self, utt: _Utterance) -> tuple[np.ndarray, int]:
        if not is_command(utt.spec):
            try:
                audio, rate, _ = _load(utt.spec, self.allow_commands, utt.start, utt.end)
            except _SegmentPastEnd as e:
                raise _ReadFailure(_past_end(utt, e.args[0])) from None
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
            raise _ReadFailure(_past_end(utt, e.args[0])) from None
        return audio[first:last].copy(), rate

    def read(self, utt_id: str) -> np.ndarray:
        """Mono float32 samples of one utterance at :attr:`sample_rate`."""
        try:
            utt = self._utts[utt_id]
        except KeyError:
            raise AudioError(f"utterance {utt_id!r} is not in {self.data_dir}") from None
        target = self.sample_rate
        try:
            audio, rate = self._load(utt)
            audio, rate = _fix_rate(_channel(audio, utt.channel), rate, target, self.resample)
            _check_length(audio, rate)
        except _ReadFailure as e:
            raise AudioError(f"{utt.where}: {e}") from None
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
