"""A small fake Switchboard corpus in the LDC layouts, for the data preparation tests.

:func:`make_fake_swbd` writes, under ``root``:

* ``LDC97S62/swb1_d1/data/sw02001.sph`` (16-bit PCM), ``sw02002.sph`` (u-law) and
  ``LDC97S62/swb1_d2/data/sw02003.SPH`` (16-bit PCM, upper-case suffix): two-channel
  8 kHz NIST SPHERE files in which espeak-ng reads the transcripts, channel A and B
  taking turns (the other channel is quiet);
* ``swb_ms98_transcriptions/20/200N/sw200NS-ms98-a-trans.text`` with the timings of
  those turns, ``[silence]`` lines in the gaps and the ms98 markup (``[noise]``,
  ``[laughter-yes]``, ``th[e]-``, ``-[th]at``, ``{yuppie}``, ``[it'n/isn't]``,
  ``<b_aside>``, ``them_1``, ``uh``), plus files the preparation must ignore
  (``*-word.text``, ``sw-ms98-dict.text``);
* ``LDC2002S09/hub5e_00/english/{en_4156,sw_4390}.sph`` and
  ``LDC2002T43/2000_hub5_eng_eval_tr/reference/hub5e00.english.000405.stm`` (upper case
  with ``<O,en,F,en-F>`` labels, ``(%HESITATION)``, ``(TH-)``, ``<B_ASIDE>``, a ``((``
  and an ``IGNORE_TIME_SEGMENT_IN_SCORING`` line, like the real one) and
  ``en20000405_hub5.glm`` in NIST's GLM syntax (``csrfilt.sh`` accepts it).

Every turn's times are whole centiseconds plus 2 ms (so Kaldi's rounding in the utterance
ids is unambiguous) and the audio of each turn lies inside its segment. The
:class:`FakeCorpus` returned lists the turns with the text the preparation should
produce, written by hand here, and the samples of every file.

Helpers write the SPHERE variants the tests need: :func:`write_fake_shorten` (a header
claiming shorten compression, PCM inside), :func:`write_ldc_ulaw` (a u-law header
libsndfile rejects) and :func:`write_stand_in_sph2pipe`.
"""

from __future__ import annotations

import io
import subprocess
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import soundfile as sf

from blspeech.corpora.synth import resample

RATE = 8000
VOICES = {"A": "en-us", "B": "en-us+f3"}


@dataclass(frozen=True)
class Turn:
    """One transcribed segment: file id, side, times, source markup, expected text."""

    conv: str          # sw02001, en_4156
    side: str          # A or B
    start: float
    end: float
    markup: str        # the words as the transcript file has them
    text: str          # what the data dir's text should say ("" if dropped / empty)
    spoken: str = ""   # what espeak-ng reads (nothing for noise-only lines)

    @property
    def utt(self) -> str:
        rec = f"{self.conv}-{self.side}"
        return f"{rec}_{int(100 * self.start + 0.5):06d}-{int(100 * self.end + 0.5):06d}"


@dataclass
class FakeCorpus:
    """Paths of the fake corpus and what was put into it."""

    swbd_dir: Path
    ms98_dir: Path
    eval_audio_dir: Path
    eval_transcript_dir: Path
    stm: Path
    glm: Path
    #: sph path of each file id (sw02001, en_4156, ...).
    sph: dict[str, Path] = field(default_factory=dict)
    #: float32 samples (frames x 2) of each file id, as written (u-law: before coding).
    audio: dict[str, np.ndarray] = field(default_factory=dict)
    #: Turns of Switchboard (ms98) and of eval2000 (stm), in file order.
    swbd_turns: list[Turn] = field(default_factory=list)
    eval_turns: list[Turn] = field(default_factory=list)


# (side, ms98 markup, expected text, spoken); "" spoken = a non-speech line, no audio.
SWBD_SCRIPT = {
    "sw02001": [
        ("A", "[noise] uh i th[e]- the car [laughter-yes]", "uh i th- the car yes",
         "uh i th the car yes"),
        ("B", "<b_aside> well {yuppie} people like -[th]at <e_aside>",
         "well yuppie people like -at", "well yuppie people like at"),
        ("A", "[noise]", "", ""),
        ("B", "[it'n/isn't] them_1 [vocalized-noise] um", "it'n them um", "it'n them um"),
    ],
    "sw02002": [
        ("A", "hello this is [laughter] my first call", "hello this is my first call",
         "hello this is my first call"),
        ("B", "oh okay uh-huh", "oh okay uh-huh", "oh okay uh huh"),
    ],
    "sw02003": [
        ("B", "we went to the lake", "we went to the lake", "we went to the lake"),
        ("A", "that sounds nice", "that sounds nice", "that sounds nice"),
    ],
}
SWBD_FILES = {"sw02001": ("swb1_d1/data/sw02001.sph", "PCM_16"),
              "sw02002": ("swb1_d1/data/sw02002.sph", "ULAW"),
              "sw02003": ("swb1_d2/data/sw02003.SPH", "PCM_16")}

# (side, stm words, expected text, spoken); IGNORE lines have no audio.
EVAL_SCRIPT = {
    "en_4156": [
        ("A", "OH YEAH", "oh yeah", "oh yeah"),
        ("B", "(%HESITATION) I'M GONNA GO HOME", "i'm gonna go home", "um i'm gonna go home"),
        ("A", "<B_ASIDE> ((UH) WELL (TH-) THE CAR <E_ASIDE>", "uh well th- the car",
         "uh well th the car"),
    ],
    "sw_4390": [
        ("A", "IT IS RAINING AGAIN", "it is raining again", "it is raining again"),
        ("B", "IGNORE_TIME_SEGMENT_IN_SCORING", "", ""),
        ("B", "(%HESITATION)", "", "um"),
    ],
}
EVAL_LABELS = {("en_4156", "A"): "<O,en,F,en-F>", ("en_4156", "B"): "<O,en,M,en-M>",
               ("sw_4390", "A"): "<O,sw,M,sw-M>", ("sw_4390", "B"): "<O,sw,F,sw-F>"}

STM_HEADER = """\
;; CATEGORY "0" "" ""
;; LABEL "O" "Overall" "Overall"
;;
;; CATEGORY "1" "Hub5 00 Test Subsets" ""
;; LABEL "en" "CallHome" "CallHome English"
;; LABEL "sw" "Switchboard" "Switchboard"
;;
;; CATEGORY "2" "Sex" ""
;; LABEL "F" "Female" "Female speakers"
;; LABEL "M" "Male" "Male speakers"
"""

GLM = """\
;;
;;  File:  en20000405_hub5.glm (a fake for tests, in the real one's format)
;;  Desc:  Hub-5 English evaluation: hesitations, contractions and alternate spellings
;;
* name "en20000405_hub5.glm"
* desc "Fake Hub-5 2000 English GLM for the blspeech tests"
* format = 'NIST1'
* max_nrules = '5000'
* copy_no_hit = 'T'
* case_sensitive = 'F'

;; Hesitation mappings
AH      =>  %HESITATION / [ ] __ [ ]
ER      =>  %HESITATION / [ ] __ [ ]
UH      =>  %HESITATION / [ ] __ [ ]
UM      =>  %HESITATION / [ ] __ [ ]

;; Contractions and reduced forms
I'M     =>  {I'M / I AM} / [ ] __ [ ]
GONNA   =>  {GONNA / GOING TO} / [ ] __ [ ]
WANNA   =>  {WANNA / WANT TO} / [ ] __ [ ]
IT'S    =>  {IT'S / IT IS} / [ ] __ [ ]

;; Alternate spellings
OKAY    =>  {OKAY / OK} / [ ] __ [ ]
UH-HUH  =>  {UH-HUH / UHHUH} / [ ] __ [ ]
"""


@cache
def speak(text: str, voice: str) -> np.ndarray:
    """espeak-ng reading ``text``: float32 mono at 8 kHz (cached per process)."""
    wav = subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "--stdout", text],
                         check=True, capture_output=True).stdout
    audio, rate = sf.read(io.BytesIO(wav), dtype="float32")
    return resample(audio, rate, RATE) * np.float32(0.8)


def _lay_out(conv: str, script: list[tuple[str, str, str, str]],
             rng: np.random.Generator) -> tuple[list[Turn], np.ndarray]:
    """Turns one after another (0.2 s pads, 0.4 s gaps) and the two-channel audio."""
    turns, pieces, t = [], [], 0.5
    for side, markup, text, spoken in script:
        speech = speak(spoken, VOICES[side]) if spoken else np.zeros(int(0.6 * RATE), np.float32)
        start = t
        end = round(start + 0.2 + len(speech) / RATE + 0.2, 2)
        turns.append(Turn(conv, side, start + 0.002, end + 0.002, markup, text, spoken))
        pieces.append((side, int(round((start + 0.2) * RATE)), speech))
        t = round(end + 0.4, 2)
    audio = rng.normal(0, 3e-4, (int((t + 0.3) * RATE), 2)).astype(np.float32)
    for side, offset, speech in pieces:
        audio[offset:offset + len(speech), "AB".index(side)] += speech
    return turns, np.clip(audio, -1, 32767 / 32768)


def _int16(audio: np.ndarray) -> np.ndarray:
    return np.round(audio * 32768).clip(-32768, 32767).astype(np.int16)


def _pcm16(audio: np.ndarray) -> np.ndarray:
    """Float samples as a PCM_16 file holds them (x / 32768 on reading), in float32."""
    return (_int16(audio) / np.float32(32768)).astype(np.float32)


def _ms98_lines(conv: str, side: str, turns: list[Turn], total: float) -> list[str]:
    """One side's ms98 lines: its turns and ``[silence]`` in between, numbered."""
    spans, t = [], 0.0
    for turn in (x for x in turns if x.side == side):
        if turn.start > t:
            spans.append((t, turn.start, "[silence]"))
        spans.append((turn.start, turn.end, turn.markup))
        t = turn.end
    spans.append((t, total, "[silence]"))
    name = f"sw{conv[3:]}{side}-ms98-a"
    return [f"{name}-{i:04d} {a:.6f} {b:.6f} {words}\n"
            for i, (a, b, words) in enumerate(spans, 1)]


def write_sphere(path: Path, audio: np.ndarray, subtype: str = "PCM_16") -> None:
    """Two-channel 8 kHz NIST SPHERE (``subtype`` PCM_16 or ULAW) via libsndfile."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if subtype == "PCM_16":
        # Integers: libsndfile writes floats times 32767 but reads them back over 32768.
        audio = _int16(audio)
    with open(path, "wb") as f:  # a file object: libsndfile would not take the .SPH name
        sf.write(f, audio, RATE, format="NIST", subtype=subtype)


def make_fake_swbd(root: str | Path, *, seed: int = 0) -> FakeCorpus:
    """Write the fake LDC97S62 + ms98 and LDC2002S09 + LDC2002T43 under ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    ref = root / "LDC2002T43/2000_hub5_eng_eval_tr/reference"
    corpus = FakeCorpus(swbd_dir=root / "LDC97S62", ms98_dir=root / "swb_ms98_transcriptions",
                        eval_audio_dir=root / "LDC2002S09", eval_transcript_dir=root / "LDC2002T43",
                        stm=ref / "hub5e00.english.000405.stm", glm=ref / "en20000405_hub5.glm")
    for conv, script in SWBD_SCRIPT.items():
        turns, audio = _lay_out(conv, script, rng)
        relative, subtype = SWBD_FILES[conv]
        path = corpus.swbd_dir / relative
        write_sphere(path, audio, subtype)
        corpus.sph[conv] = path
        corpus.audio[conv] = _pcm16(audio) if subtype == "PCM_16" else audio
        corpus.swbd_turns += turns
        folder = corpus.ms98_dir / "20" / conv[3:]
        folder.mkdir(parents=True, exist_ok=True)
        for side in "AB":
            lines = _ms98_lines(conv, side, turns, len(audio) / RATE)
            (folder / f"sw{conv[3:]}{side}-ms98-a-trans.text").write_text("".join(lines))
            # Word alignments sit next to the transcripts; the preparation ignores them.
            (folder / f"sw{conv[3:]}{side}-ms98-a-word.text").write_text(
                f"sw{conv[3:]}{side}-ms98-a-0001 0.000000 0.500000 [silence]\n")
    (corpus.ms98_dir / "sw-ms98-dict.text").write_text("car\nlake\n")
    (corpus.swbd_dir / "swb1_d1/doc").mkdir(parents=True, exist_ok=True)

    stm_lines = []
    for conv, script in EVAL_SCRIPT.items():
        turns, audio = _lay_out(conv, script, rng)
        path = corpus.eval_audio_dir / "hub5e_00/english" / f"{conv}.sph"
        write_sphere(path, audio)
        corpus.sph[conv] = path
        corpus.audio[conv] = _pcm16(audio)
        corpus.eval_turns += turns
        stm_lines += [(t.conv, t.side, t.start, f"{t.conv} {t.side} {t.conv}_{t.side} "
                       f"{t.start:.2f} {t.end:.2f} {EVAL_LABELS[t.conv, t.side]} {t.markup}\n")
                      for t in turns]
    ref.mkdir(parents=True, exist_ok=True)
    # The stm is sorted by file, channel and start time, as NIST's are.
    corpus.stm.write_text(STM_HEADER + "".join(x[-1] for x in sorted(stm_lines)))
    corpus.glm.write_text(GLM)
    # The eval turns' times are what the stm says (two decimals).
    corpus.eval_turns = [Turn(t.conv, t.side, float(f"{t.start:.2f}"), float(f"{t.end:.2f}"),
                              t.markup, t.text, t.spoken) for t in corpus.eval_turns]
    return corpus


# --- SPHERE variants ------------------------------------------------------------------------

SHORTEN_CODING = "pcm,embedded-shorten-v2.00"


def _rewrite_header(path: Path, replace: dict[str, str]) -> None:
    """Replace (or add) header lines by field name: ``{'sample_coding': 'sample_coding
    -s3 pcm'}``."""
    data = path.read_bytes()
    size = int(data[8:].split(b"\n", 1)[0])
    lines = data[:size].split(b"end_head\n")[0].decode().splitlines()
    names = {line.split()[0] for line in lines[2:] if line.split()}
    lines = [replace.get(line.split()[0], line) if line.split() else line for line in lines]
    lines += [line for name, line in replace.items() if name not in names]
    head = ("\n".join(lines) + "\nend_head\n").encode()
    assert len(head) <= size, "header too long"
    path.write_bytes(head.ljust(size, b" ") + data[size:])


def write_fake_shorten(path: str | Path, audio: np.ndarray, coding: str = SHORTEN_CODING) -> Path:
    """A SPHERE file whose header says shorten (``sample_coding -s26 ...``), PCM inside.

    The body is not shorten: only the header matters for detection, and the stand-in
    sph2pipe of :func:`write_stand_in_sph2pipe` decodes it as the PCM it is.
    """
    path = Path(path)
    write_sphere(path, audio)
    _rewrite_header(path, {"sample_coding": f"sample_coding -s{len(coding)} {coding}"})
    return path


def write_ldc_ulaw(path: str | Path, audio: np.ndarray) -> Path:
    """An uncompressed u-law SPHERE file with a byte-order field libsndfile rejects.

    ``sample_n_bytes -i 1`` with ``sample_byte_format -s2 01``, as some LDC headers
    have: libsndfile 1.2 refuses to open it, sph2pipe does not care.
    """
    path = Path(path)
    write_sphere(path, audio, "ULAW")
    _rewrite_header(path, {"sample_n_bytes": "sample_n_bytes -i 1",
                           "sample_byte_format": "sample_byte_format -s2 01"})
    return path


STAND_IN = '''\
#!{python}
# Stands in for LDC's sph2pipe in the tests only: it makes the program found (detection)
# and lets the wav.scp command run. It knows "-f wav -p FILE" for uncompressed SPHERE and
# for swbd_fake's files whose header claims shorten over PCM; it decodes no real shorten.
import io
import sys

import soundfile as sf

args = sys.argv[1:]
if len(args) != 4 or args[:3] != ["-f", "wav", "-p"]:
    sys.exit("stand-in sph2pipe: only -f wav -p FILE, got " + " ".join(args))
data = open(args[3], "rb").read()
head, body = data[:1024], data[1024:]
shorten = b"-s26 {shorten}"
head = head.replace(shorten, b"-s3 pcm".ljust(len(shorten)))
if b"ulaw" in head:  # write_ldc_ulaw's byte order, which libsndfile refuses
    head = head.replace(b"sample_byte_format -s2 01", b"sample_byte_format -s1 1 ")
audio, rate = sf.read(io.BytesIO(head + body), dtype="int16")
out = io.BytesIO()
sf.write(out, audio, rate, format="WAV", subtype="PCM_16")
sys.stdout.buffer.write(out.getvalue())
'''


def write_stand_in_sph2pipe(bin_dir: str | Path) -> Path:
    """An executable ``bin_dir/sph2pipe`` standing in for LDC's program (tests only)."""
    path = Path(bin_dir) / "sph2pipe"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(STAND_IN.format(python=sys.executable, shorten=SHORTEN_CODING))
    path.chmod(0o755)
    return path
