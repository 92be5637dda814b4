"""Synthetic telephone speech: espeak-ng and flite voices through an 8 kHz phone channel.

A :class:`Voice` is one synthesizer voice (espeak-ng language + variant such as
``en-us+m3``, or a flite voice such as ``awb``) and is one speaker of the corpus. A
:class:`SynthJob` says what one utterance reads, how fast and at what pitch, and how the
:class:`Channel` degrades it; :func:`run_job` makes the wav file. The channel imitates a
narrow-band telephone line like Switchboard's: resampling to 8 kHz, an optional 300-3400
Hz band-pass, a random level, low-level noise at a random SNR and optional G.711 mu-law
companding, all deterministic given the job's seed.

Files are written to a temp name and renamed, so a wav file that exists is complete; file
names carry :func:`job_digest`, so changing any setting makes a new file rather than
reusing a stale one.

Example:
    >>> v = Voice("espeak", "en-us", "m3")
    >>> v.speaker, v.engine_voice
    ('es_en_us_m3', 'en-us+m3')
    >>> job = SynthJob("es_en_us_m3-tr00001", v, "press one", 1.0, 50, Channel(), 7, "x.wav")
    >>> len(job_digest(job))
    12
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
import os
import subprocess
from dataclasses import asdict, dataclass, field

import numpy as np
import soundfile as sf

from blspeech.errors import UserError

#: Bump when the audio processing changes, so old files are not taken for new ones.
PIPELINE_VERSION = 1
SAMPLE_RATE = 8000
_PEAK_LIMIT = 10 ** (-1 / 20)  # -1 dB full scale

ESPEAK_LANGUAGES = ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan",
                    "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "croak")
#: Whispered speech is hard even for people on a phone: two voices are plenty.
WHISPER_LANGUAGES = ("en", "en-us")
#: flite voices and their speakers' genders (kal and kal16 are one diphone voice at 8 and
#: 16 kHz, which after the channel differ only a little).
FLITE_VOICES = {"awb": "m", "rms": "m", "slt": "f", "kal16": "m", "kal": "m"}
#: How each engine must be given the spelled letter "a": both read the word "a" as the
#: article ("uh") and the capital "A" too; these spellings come out as "ay".
LETTER_A = {"espeak": "eh", "flite": "ay"}


@dataclass(frozen=True)
class Voice:
    """One synthesizer voice, which is one speaker of the corpus."""

    engine: str        # "espeak" or "flite"
    name: str          # espeak-ng language voice ("en-us") or flite voice ("awb")
    variant: str = ""  # espeak-ng variant ("m3", "f2", "croak", "whisper")

    def __post_init__(self) -> None:
        if self.engine not in LETTER_A:
            raise UserError(f"unknown engine {self.engine!r}")

    @property
    def speaker(self) -> str:
        """Speaker id: ``[a-z0-9_]`` only, so ``spk-...`` utterance ids sort by speaker."""
        prefix = "es" if self.engine == "espeak" else "fl"
        parts = [prefix, self.name, self.variant] if self.variant else [prefix, self.name]
        return "_".join(parts).replace("-", "_")

    @property
    def engine_voice(self) -> str:
        """The voice as the engine's command line names it."""
        return f"{self.name}+{self.variant}" if self.variant else self.name

    @property
    def gender(self) -> str:
        if self.engine == "flite":
            return FLITE_VOICES.get(self.name, "m")
        return "f" if self.variant.startswith("f") else "m"


def all_voices() -> list[Voice]:
    """Every voice the corpus may use, sorted by speaker id."""
    voices = [Voice("espeak", lang, var) for lang in ESPEAK_LANGUAGES for var in ESPEAK_VARIANTS]
    voices += [Voice("espeak", lang, "whisper") for lang in WHISPER_LANGUAGES]
    voices += [Voice("flite", name) for name in FLITE_VOICES]
    return sorted(voices, key=lambda v: v.speaker)


def voice_for_speaker(speaker: str) -> Voice:
    """The voice of a speaker id made by :attr:`Voice.speaker`."""
    for voice in all_voices():
        if voice.speaker == speaker:
            return voice
    raise UserError(f"unknown synthetic speaker {speaker!r}; known: "
                    f"{', '.join(v.speaker for v in all_voices())}")


@dataclass(frozen=True)
class Channel:
    """The simulated telephone line. Ranges are drawn per utterance from its seed."""

    sample_rate: int = SAMPLE_RATE
    bandpass: tuple[float, float] | None = (300.0, 3400.0)  # Hz; None: full band
    snr_db: tuple[float, float] | None = (25.0, 40.0)       # noise SNR range; None: silent
    level_db: tuple[float, float] = (-30.0, -20.0)          # speech RMS in dB full scale
    mulaw: bool = True                                      # G.711 mu-law round trip
    pad_s: tuple[float, float] = (0.05, 0.3)                # silence added at both ends


@dataclass(frozen=True)
class SynthJob:
    """One synthetic utterance: who says what, how, over which channel, into which file."""

    utt: str
    voice: Voice
    spoken: str         # words for the synthesizer (an upper-case "A" is the letter)
    rate: float         # speaking rate, 1.0 = a typical telephone pace
    pitch: int          # espeak-ng pitch 0-99 (flite keeps its voice's own pitch)
    channel: Channel
    seed: int
    path: str = field(default="", compare=False)


def job_digest(job: SynthJob) -> str:
    """12 hex digits that change with anything that changes the audio."""
    state = {k: v for k, v in asdict(job).items() if k not in ("utt", "path")}
    state["version"] = PIPELINE_VERSION
    return hashlib.sha1(repr(sorted(state.items())).encode()).hexdigest()[:12]


def engine_text(spoken: str, engine: str) -> str:
    """The words an engine must read to say ``spoken`` (see :data:`LETTER_A`).

    Example:
        >>> engine_text("nine A m", "espeak"), engine_text("code A B", "flite")
        ('nine eh m', 'code ay b')
    """
    return " ".join(LETTER_A[engine] if w == "A" else w.lower() for w in spoken.split())


def _run(command: list[str], what: str) -> bytes:
    try:
        proc = subprocess.run(command, capture_output=True, stdin=subprocess.DEVNULL)
    except FileNotFoundError as e:
        package = "espeak-ng" if command[0] == "espeak-ng" else command[0]
        raise UserError(f"{command[0]} is not installed: apt-get install {package}") from e
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:]
        raise UserError(f"{what}: {command[0]} failed with exit code {proc.returncode}"
                        + (f": {tail[0]}" if tail else ""))
    return proc.stdout


def synthesize(job: SynthJob) -> tuple[np.ndarray, int]:
    """The synthesizer's raw output for a job: float32 mono samples and their rate."""
    text = engine_text(job.spoken, job.voice.engine)
    what = f"utterance {job.utt}"
    if job.voice.engine == "espeak":
        wpm = int(round(165 * job.rate))
        data = _run(["espeak-ng", "-v", job.voice.engine_voice, "-s", str(wpm),
                     "-p", str(job.pitch), "--stdout", text], what)
    else:
        # flite writes a seekable file; a temp file next to the output keeps it on one disk.
        tmp = f"{job.path}.{os.getpid()}.flite.wav"
        try:
            _run(["flite", "-voice", job.voice.name, "--setf",
                  f"duration_stretch={1.0 / job.rate:.3f}", "-t", text, "-o", tmp], what)
            with open(tmp, "rb") as f:
                data = f.read()
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    try:
        audio, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as e:  # libsndfile reports bad data as assorted errors
        raise UserError(f"{what}: the synthesizer wrote no readable audio ({e})") from e
    if len(audio) == 0:
        raise UserError(f"{what}: the synthesizer wrote no samples for {text!r}")
    return audio.mean(axis=1), int(rate)


@functools.lru_cache(maxsize=8)
def _resampling_table(up: int, down: int, zeros: int) -> tuple[np.ndarray, np.ndarray]:
    """Filter taps for each of the ``up`` phases of an ``up/down`` resampler, and offsets."""
    cutoff = 0.95 * min(1.0, up / down)   # relative to the input's Nyquist frequency
    half = int(np.ceil(zeros / cutoff))   # filter half-width in input samples
    offsets = np.arange(-half + 1, half + 1)
    d = (np.arange(up) / up)[:, None] - offsets[None, :]
    window = 0.5 * (1 + np.cos(np.pi * np.clip(d / half, -1, 1)))
    return cutoff * np.sinc(cutoff * d) * window, offsets


def resample(x: np.ndarray, src: int, dst: int, zeros: int = 16) -> np.ndarray:
    """Band-limited resampling by windowed-sinc interpolation (any ratio of whole rates).

    Each output sample is a Hann-windowed sinc sum over ``zeros`` zero crossings on each
    side; the cutoff is 0.95 of the lower Nyquist frequency, so nothing above 3.8 kHz
    aliases into 8 kHz output. The taps of each output phase are computed once.

    Example:
        >>> t = np.arange(22050) / 22050
        >>> y = resample(np.sin(2 * np.pi * 1000 * t), 22050, 8000)
        >>> len(y), round(float(np.abs(np.fft.rfft(y)).argmax()))   # 1 Hz bins: 1000 Hz
        (8000, 1000)
    """
    x = np.asarray(x, dtype=np.float64)
    if src == dst:
        return x.astype(np.float32)
    g = math.gcd(src, dst)
    up, down = dst // g, src // g
    table, offsets = _resampling_table(up, down, zeros)
    half = len(offsets) // 2
    n_out = len(x) * up // down
    padded = np.concatenate([np.zeros(half), x, np.zeros(half + 1)])
    out = np.empty(n_out)
    for start in range(0, n_out, 8192):  # blocks keep the gathered matrix small
        n = np.arange(start, min(start + 8192, n_out))
        base, phase = np.divmod(n * down, up)
        out[start:start + len(n)] = np.einsum(
            "ij,ij->i", padded[base[:, None] + offsets[None, :] + half], table[phase])
    return out.astype(np.float32)


def bandpass_taps(low: float, high: float, rate: int, taps: int = 129) -> np.ndarray:
    """Linear-phase FIR band-pass (Hamming-windowed sinc), unit gain at 1 kHz."""
    n = np.arange(taps) - (taps - 1) / 2
    h = (2 * high / rate * np.sinc(2 * high / rate * n)
         - 2 * low / rate * np.sinc(2 * low / rate * n)) * np.hamming(taps)
    gain = abs(np.sum(h * np.exp(-2j * np.pi * 1000 / rate * n)))
    return h / gain


def mulaw_round_trip(x: np.ndarray, mu: int = 255) -> np.ndarray:
    """Encode to 8-bit mu-law and decode again, as a G.711 telephone line does."""
    y = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    q = np.round(y * 127) / 127
    return np.sign(q) * np.expm1(np.abs(q) * np.log1p(mu)) / mu


def telephone_channel(audio: np.ndarray, rate: int, channel: Channel, seed: int) -> np.ndarray:
    """The synthesizer output as heard over ``channel``: int16 samples at its rate."""
    rng = np.random.default_rng(seed)
    x = resample(audio - np.mean(audio), rate, channel.sample_rate).astype(np.float64)
    pads = (rng.uniform(*channel.pad_s, size=2) * channel.sample_rate).astype(int)
    x = np.concatenate([np.zeros(pads[0]), x, np.zeros(pads[1])])
    rms = np.sqrt(np.mean(x**2)) or 1.0
    x *= 10 ** (rng.uniform(*channel.level_db) / 20) / rms
    if channel.snr_db is not None:
        speech_rms = np.sqrt(np.mean(x**2))
        snr = rng.uniform(*channel.snr_db)
        x += rng.standard_normal(len(x)) * speech_rms / 10 ** (snr / 20)
    if channel.bandpass is not None:
        x = np.convolve(x, bandpass_taps(*channel.bandpass, channel.sample_rate), mode="same")
    # Speech peaks 20 dB and more above its RMS: turn a loud utterance down rather than
    # clip it (a phone's automatic gain control does the same).
    peak = np.max(np.abs(x)) if len(x) else 0.0
    if peak > _PEAK_LIMIT:
        x *= _PEAK_LIMIT / peak
    if channel.mulaw:
        x = mulaw_round_trip(np.clip(x, -1.0, 1.0))
    return np.round(np.clip(x, -1.0, 32767 / 32768) * 32768).astype(np.int16)


def write_wav(path: str, samples: np.ndarray, rate: int) -> None:
    """16-bit PCM wav, written to a temp name and renamed (an existing file is complete)."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        sf.write(tmp, samples, rate, subtype="PCM_16", format="WAV")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def run_job(job: SynthJob) -> tuple[str, float]:
    """Make the job's wav file unless it exists; ``(utt, duration in seconds)``."""
    if not os.path.exists(job.path):
        os.makedirs(os.path.dirname(job.path) or ".", exist_ok=True)
        audio, rate = synthesize(job)
        write_wav(job.path, telephone_channel(audio, rate, job.channel, job.seed),
                  job.channel.sample_rate)
    return job.utt, sf.info(job.path).duration
