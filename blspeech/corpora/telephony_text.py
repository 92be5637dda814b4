"""Text of the telephony corpus: template sentences and Asterisk's prompt transcripts.

Two sources of telephone-domain sentences:

* **Templates** (``data/telephony/templates.txt``, our own writing) whose ``{slots}`` are
  filled from word lists in the same folder (names, companies, streets, ...) or by the
  generators below (phone numbers, dates, times, money, account and order numbers),
  which write every number out as the words a person would say.
* **Asterisk's prompts** (Debian ``asterisk-core-sounds-en`` and ``-wav``): 568 real
  recordings by one speaker with a transcript each. The transcripts are written for
  people, not recognizers, so :func:`clean_prompt_text` expands digits and key names
  (``press 1`` -> ``press one``, ``*`` -> ``star``), drops stage directions
  (``[beep]``, ``(simple tone sound plays)``) and rejects what cannot be transcribed
  with certainty (acronyms like ``PBX``, multi-digit numbers, web addresses).

Every sentence ends up as a :class:`Sentence`: the transcript (``text``: lower-case words
``[a-z']``, no digits or punctuation) and the same words for a synthesizer (``spoken``),
where a spelled letter is upper case. That matters for the letter ``a`` only: both
synthesizers say the lower-case word as the article ("uh").

Example:
    >>> s = make_sentence("your code is B 4 A", "example")
    >>> s.text, s.spoken
    ('your code is b four a', 'your code is B four A')
    >>> clean_prompt_text("vm-reachoper", "press 0 to reach an operator")
    ('press 0 to reach an operator', '')
    >>> clean_prompt_text("spy-sip", "SIP")
    (None, 'acronym with an unknown spoken form')
"""

from __future__ import annotations

import gzip
import os
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from blspeech.corpora.number_words import (
    digit_words,
    expand_numbers,
    money_words,
    number_to_words,
    ordinal_words,
    pair_words,
    time_words,
    year_words,
)
from blspeech.errors import UserError
from blspeech.text.tokenizers import TextNormalizer

#: Templates and word lists shipped with the repository (``data/telephony``).
DEFAULT_TEXT_DIR = Path(__file__).resolve().parents[2] / "data" / "telephony"
#: Where Debian's ``asterisk-core-sounds-en-wav`` installs the recordings.
ASTERISK_SOUND_DIR = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
#: Where Debian's ``asterisk-core-sounds-en`` installs their transcripts.
ASTERISK_TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august",
          "september", "october", "november", "december")
# Letters in spoken codes; I, O and Q are left out, as real order and booking codes do,
# because they are confused with one, zero and O.
CODE_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")
_SYMBOLS = {"*": " star ", "#": " pound ", "@": " at ", "&": " and ", "+": " plus ",
            "=": " equals ", "\u2019": "'"}
_PUNCTUATION = TextNormalizer(case="keep", remove_punctuation=True)


@dataclass(frozen=True)
class Sentence:
    """One sentence: transcript, the words a synthesizer reads, and where it came from."""

    text: str
    spoken: str
    source: str


def spoken_words(raw: str) -> list[str]:
    """Normalized words of ``raw`` with spelled letters kept upper case.

    Numbers become words (:func:`~blspeech.corpora.number_words.expand_numbers`), phone keys
    and symbols become their names, punctuation goes (apostrophes inside words stay),
    everything else is lower-cased. Raises ValueError when a word is left that is not
    made of ``a-z`` and inner apostrophes.
    """
    text = expand_numbers(raw)
    for symbol, word in _SYMBOLS.items():
        text = text.replace(symbol, word)
    words = []
    for word in _PUNCTUATION(text).split():
        if not (len(word) == 1 and "A" <= word <= "Z"):
            word = word.lower()
        if not _WORD.fullmatch(word.lower()):
            raise UserError(f"cannot normalize {raw!r}: {word!r} is not a plain word")
        words.append(word)
    return words


def normalize_transcript(raw: str) -> str:
    """Transcript form of ``raw``: lower-case words, numbers spelled out, no punctuation.

    Example:
        >>> normalize_transcript("Press 1 for Sales, or # to exit.")
        'press one for sales or pound to exit'
    """
    return " ".join(w.lower() for w in spoken_words(raw))


def make_sentence(raw: str, source: str) -> Sentence:
    """A :class:`Sentence` from raw text (see :func:`spoken_words`)."""
    words = spoken_words(raw)
    if not words:
        raise UserError(f"{source}: empty sentence {raw!r}")
    return Sentence(" ".join(w.lower() for w in words), " ".join(words), source)


# --- template slots filled by code ---------------------------------------------------------


def _digit_string(rng: random.Random, n: int, first: str = "0123456789") -> str:
    return rng.choice(first) + "".join(rng.choice("0123456789") for _ in range(n - 1))


def _read_digits(rng: random.Random, digits: str) -> str:
    # Americans say "oh" for zero in phone numbers about as often as "zero".
    return digit_words(digits, zero=rng.choice(("zero", "oh")))


def _phone7(rng: random.Random) -> str:
    zero = rng.choice(("zero", "oh"))
    return " ".join(digit_words(g, zero) for g in (_digit_string(rng, 3, "23456789"),
                                                   _digit_string(rng, 4)))


def _phone(rng: random.Random) -> str:
    if rng.random() < 0.25:
        return _phone7(rng)
    zero = rng.choice(("zero", "oh"))
    groups = (_digit_string(rng, 3, "23456789"), _digit_string(rng, 3, "23456789"),
              _digit_string(rng, 4))
    return " ".join(digit_words(g, zero) for g in groups)


def _extension(rng: random.Random) -> str:
    digits = _digit_string(rng, rng.choice((3, 4)), "123456789")
    # Short extensions are often said in pairs ("two forty five").
    return pair_words(int(digits)) if rng.random() < 0.3 else _read_digits(rng, digits)


def _letters_and_digits(rng: random.Random, letters: int, digits: int, mix: bool) -> str:
    chars = [rng.choice(CODE_LETTERS) for _ in range(letters)]
    chars += [rng.choice("0123456789") for _ in range(digits)]
    if mix:
        rng.shuffle(chars)
    zero = rng.choice(("zero", "oh"))
    return " ".join(digit_words(c, zero) if c.isdigit() else c for c in chars)


def _money(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.15:
        return money_words(0, rng.randint(1, 99))
    dollars = int(10 ** rng.uniform(0, 3.5))  # one dollar to a few thousand, log-uniform
    cents = 0 if rng.random() < 0.4 else rng.randint(1, 99)
    return money_words(dollars, cents)


def _minutes(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.1:
        return rng.choice(("an hour", "half an hour", "an hour and a half", "a minute",
                           "a few minutes", "two hours"))
    n = rng.choice((2, 3, 4, 5, 5, 10, 10, 15, 15, 20, 25, 30, 40, 45)) if kind < 0.7 \
        else rng.randint(2, 59)
    return f"{number_to_words(n)} minutes"


def _time(rng: random.Random) -> str:
    hour = rng.choice(range(6, 22)) if rng.random() < 0.9 else rng.randint(0, 23)
    minute = rng.choice((0, 0, 15, 30, 30, 45)) if rng.random() < 0.6 \
        else rng.choice(range(0, 60, 5)) if rng.random() < 0.7 else rng.randint(0, 59)
    return time_words(hour, minute, rng.choice(("ampm", "ampm", "oclock", "plain")))


def _day(rng: random.Random) -> str:
    return ordinal_words(rng.randint(1, 28) if rng.random() < 0.9 else rng.randint(29, 31))


def _date(rng: random.Random) -> str:
    month, day = rng.choice(MONTHS), _day(rng)
    return rng.choice((f"{month} {day}", f"the {day} of {month}",
                       f"{rng.choice(WEEKDAYS)} {month} {day}",
                       f"{rng.choice(WEEKDAYS)} the {day}"))


def _relative_day(rng: random.Random) -> str:
    return rng.choice(("today", "tomorrow", "tomorrow morning", "this afternoon",
                       "this evening", f"next {rng.choice(WEEKDAYS)}",
                       f"on {rng.choice(WEEKDAYS)}", f"{rng.choice(WEEKDAYS)} morning",
                       f"{rng.choice(WEEKDAYS)} afternoon"))


def _percent(rng: random.Random) -> str:
    if rng.random() < 0.2:
        return f"{number_to_words(rng.randint(0, 19))} point {number_to_words(rng.randint(1, 9))}" \
               " percent"
    return f"{number_to_words(rng.choice((5, 10, 15, 20, 25, 30, 50, rng.randint(1, 99))))} percent"


def _gate(rng: random.Random) -> str:
    return f"{rng.choice(CODE_LETTERS[:8])} {number_to_words(rng.randint(1, 40))}"


#: Slots filled by code: name -> function of a random generator.
GENERATORS: dict[str, Callable[[random.Random], str]] = {
    "weekday": lambda rng: rng.choice(WEEKDAYS),
    "month": lambda rng: rng.choice(MONTHS),
    "day": _day,
    "date": _date,
    "year": lambda rng: year_words(rng.randint(1940, 2030)),
    "relative_day": _relative_day,
    "time": _time,
    "minutes": _minutes,
    "digit": lambda rng: number_to_words(rng.randint(0, 9)),
    "digits": lambda rng: _read_digits(rng, _digit_string(rng, rng.randint(3, 8))),
    "pin": lambda rng: _read_digits(rng, _digit_string(rng, 4)),
    "last_four": lambda rng: _read_digits(rng, _digit_string(rng, 4)),
    "zip": lambda rng: _read_digits(rng, _digit_string(rng, 5)),
    "phone": _phone,
    "phone7": _phone7,
    "extension": _extension,
    "account": lambda rng: _read_digits(rng, _digit_string(rng, rng.randint(8, 10))),
    "order": lambda rng: _letters_and_digits(rng, rng.choice((1, 2)), rng.choice((5, 6)),
                                             mix=False),
    "code": lambda rng: _letters_and_digits(rng, 3, 3, mix=True),
    "money": _money,
    "count": lambda rng: number_to_words(rng.randint(2, 12)),
    "number": lambda rng: number_to_words(rng.randint(1, 99)),
    "percent": _percent,
    "flight": lambda rng: pair_words(rng.randint(10, 2999)),
    "gate": _gate,
    "room": lambda rng: pair_words(rng.randint(101, 1299)),
    "house_number": lambda rng: pair_words(rng.randint(1, 9999)),
}


def _spelled_name(rng: random.Random, names: list[str]) -> str:
    """A name and its spelling, as callers spell their names: 'smith S M I T H'."""
    name = rng.choice(names)
    return f"{name} " + " ".join(c.upper() for c in name if c.isalpha())


#: Slots filled by code that read word lists: name -> (list, function of rng and list).
LIST_GENERATORS: dict[str, tuple[str, Callable[[random.Random, list[str]], str]]] = {
    "spelled_name": ("last_name", _spelled_name),
}

_SLOT = re.compile(r"\{([a-z_0-9]+)\}")


def read_lines(path: str | os.PathLike) -> list[str]:
    """Non-empty lines of a text file, without ``#`` comment lines."""
    with open(path, encoding="utf-8") as f:
        return [s for s in (line.strip() for line in f) if s and not s.startswith("#")]


class SentenceGenerator:
    """Fills the templates of ``text_dir`` with word lists and generators.

    All templates and lists are read and checked when the generator is made: an unknown
    slot or a word that does not normalize is reported with its file and line.

    Example:
        >>> gen = SentenceGenerator()
        >>> s = gen.sentence(random.Random(1))
        >>> s.text == normalize_transcript(s.text) and s.source.startswith("template:")
        True
    """

    def __init__(self, text_dir: str | os.PathLike = DEFAULT_TEXT_DIR):
        text_dir = Path(text_dir)
        template_file = text_dir / "templates.txt"
        if not template_file.is_file():
            raise UserError(f"{template_file}: template file not found (the sentence "
                            f"templates live in the repository's data/telephony folder)")
        self.templates = read_lines(template_file)
        self.lists: dict[str, list[str]] = {}
        for i, template in enumerate(self.templates):
            for slot in _SLOT.findall(template):
                name = LIST_GENERATORS[slot][0] if slot in LIST_GENERATORS else slot
                if slot in GENERATORS or name in self.lists:
                    continue
                path = text_dir / f"{name}.txt"
                if not path.is_file():
                    raise UserError(f"{template_file}: template {template!r} uses slot "
                                    f"{{{slot}}}, which is neither a generator nor a word "
                                    f"list {path}")
                self.lists[name] = read_lines(path)
                for word in self.lists[name]:
                    try:
                        spoken_words(word)
                    except ValueError as e:
                        raise UserError(f"{path}: {e}") from e
            try:
                spoken_words(_SLOT.sub("", template))
            except ValueError as e:
                raise UserError(f"{template_file}: template {i}: {e}") from e

    def fill(self, template: str, rng: random.Random) -> str:
        """One random filling of ``template`` (raw text, spelled letters upper case)."""
        def slot(m: re.Match) -> str:
            name = m[1]
            if name in GENERATORS:
                return GENERATORS[name](rng)
            if name in LIST_GENERATORS:
                list_name, make = LIST_GENERATORS[name]
                return make(rng, self.lists[list_name])
            return rng.choice(self.lists[name])
        return _SLOT.sub(slot, template)

    def sentence(self, rng: random.Random) -> Sentence:
        """A random template (all equally likely), randomly filled."""
        i = rng.randrange(len(self.templates))
        return make_sentence(self.fill(self.templates[i], rng), f"template:{i}")

    def vocabulary(self, samples: int = 3000) -> set[str]:
        """Words of ``samples`` sentences made with a fixed seed (the usual words)."""
        rng = random.Random(0)
        return {w for _ in range(samples) for w in self.sentence(rng).text.split()}

    def unique_sentences(self, n: int, rng: random.Random, forbidden: Iterable[str] = (),
                         reject: Callable[[str], bool] | None = None) -> list[Sentence]:
        """``n`` sentences with distinct transcripts, none in ``forbidden`` or ``reject``-ed."""
        taken = set(forbidden)
        out: list[Sentence] = []
        tries = 0
        while len(out) < n:
            tries += 1
            if tries > 100 * n + 1000:
                raise UserError(f"could only make {len(out)} of {n} distinct sentences from "
                                f"the templates; ask for fewer utterances")
            s = self.sentence(rng)
            if s.text not in taken and not (reject and reject(s.text)):
                taken.add(s.text)
                out.append(s)
        return out


# --- Asterisk prompts ----------------------------------------------------------------------


@dataclass(frozen=True)
class Prompt:
    """One recorded Asterisk prompt that can be transcribed with certainty."""

    key: str          # the transcript file's name for it, e.g. "digits/5", "vm-options"
    path: str         # its wav file (8 kHz, 16-bit)
    raw: str          # the transcript as the package writes it
    sentence: Sentence
    duration: float   # seconds
    pieces: tuple[str, ...] = ()  # its sentences, normalized ("login incorrect", ...)

    @property
    def text(self) -> str:
        return self.sentence.text


#: Spelling mistakes in the package's transcripts (the recordings say the right word).
PROMPT_TYPOS = {"exclaimation": "exclamation", "umute": "unmute", "fourtieth": "fortieth",
                "thru": "through", "represenatives": "representatives",
                "indentified": "identified", "witheld": "withheld"}
# "re-record", "un-identified": one word, as the same words are written elsewhere.
_JOINED_PREFIX = re.compile(r"\b(de|re|un)-(?=[a-z])")
_NON_SPEECH = re.compile(r"^\s*(\[[^\]]*\]|<[^>]*>|\([^)]*\))\s*$")
_NOTES = re.compile(r"\[[^\]]*\]|<[^>]*>|\([^)]*\)")
_ACRONYM = re.compile(r"\b[A-Z][A-Z0-9.]*[A-Z]\b")
_WEB = re.compile(r"[a-z]\.[a-z]", re.IGNORECASE)
_BIG_NUMBER = re.compile(r"\d\d|\d[.,]\d")


def clean_prompt_text(key: str, raw: str) -> tuple[str | None, str]:
    """``(raw text ready for make_sentence, '')``, or ``(None, why it is unusable)``.

    Unusable: non-speech (``[ascending tones]``, ``(1 second of silence)``), acronyms
    whose spoken form is unknown (``PBX`` may be said as letters or as a word), numbers
    of more than one digit (``1234`` as a quantity or digit by digit?) and web
    addresses. ``A.M.`` and ``P.M.`` become spelled letters; bracketed notes inside a
    sentence (``at [@]``) are dropped.
    """
    if _NON_SPEECH.match(raw) or not raw.strip():
        return None, "not speech"
    text = raw.replace("A.M.", "A M").replace("P.M.", "P M")
    text = _NOTES.sub(" ", text)
    if _ACRONYM.search(text.replace("A M", "").replace("P M", "")):
        return None, "acronym with an unknown spoken form"
    if _BIG_NUMBER.search(text):
        return None, "number of several digits with an unknown spoken form"
    if _WEB.search(text):
        return None, "web address"
    # Lower-case all but the spelled letters; the letters/ folder spells single letters.
    words = text.split()
    if key.startswith("letters/") and len(words) == 1 and len(words[0]) == 1:
        text = words[0].upper()
    else:
        text = " ".join(w if w in ("A", "P") and i + 1 < len(words) and words[i + 1] == "M"
                        else w.lower() for i, w in enumerate(words))
    text = re.sub(r"[a-z]+", lambda m: PROMPT_TYPOS.get(m[0], m[0]), text)
    text = _JOINED_PREFIX.sub(r"\1", text)
    try:
        if not spoken_words(text):
            return None, "not speech"
    except ValueError:
        return None, "cannot be normalized"
    return text, ""


def sentence_pieces(text: str) -> tuple[str, ...]:
    """The normalized sentences of a text, split at ``. ? ! ; :``.

    Example:
        >>> sentence_pieces("Login incorrect.  Please enter your agent number.")
        ('login incorrect', 'please enter your agent number')
    """
    pieces = (normalize_transcript(p) for p in re.split(r"[.?!;:]", text))
    return tuple(p for p in pieces if p)


def contains_phrase(text: str, phrase: str) -> bool:
    """Is ``phrase`` a run of whole words of ``text``?

    Example:
        >>> contains_phrase("please try again later", "try again"), contains_phrase("tryst", "try")
        (True, False)
    """
    return f" {phrase} " in f" {text} "


def read_prompt_transcripts(path: str | os.PathLike = ASTERISK_TRANSCRIPTS) -> dict[str, str]:
    """``{key: transcript}`` from ``core-sounds-en.txt(.gz)`` (``key: text`` lines)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: Asterisk prompt transcripts not found; install them with "
                        "'apt-get install asterisk-core-sounds-en'")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        entries = {}
        for line in f:
            if not line.strip() or line.startswith(";") or ":" not in line:
                continue
            key, _, text = line.partition(":")
            entries.setdefault(key.strip(), text.strip())
    return entries


def load_prompts(sound_dir: str | os.PathLike = ASTERISK_SOUND_DIR,
                 transcripts: str | os.PathLike = ASTERISK_TRANSCRIPTS,
                 max_seconds: float = 20.0) -> tuple[list[Prompt], dict[str, str]]:
    """Usable Asterisk prompts (sorted by key) and ``{key: why}`` for the others.

    A prompt is usable when it has both a recording and a transcript that
    :func:`clean_prompt_text` accepts, and lasts at most ``max_seconds`` (the few long
    menus would dominate a small training batch).
    """
    sound_dir = Path(sound_dir)
    if not sound_dir.is_dir():
        raise UserError(f"{sound_dir}: Asterisk recordings not found; install them with "
                        "'apt-get install asterisk-core-sounds-en-wav'")
    texts = read_prompt_transcripts(transcripts)
    wavs = {str(p.relative_to(sound_dir).with_suffix("")): p
            for p in sound_dir.rglob("*.wav")}
    prompts, excluded = [], {}
    for key in sorted(set(texts) | set(wavs)):
        if key not in wavs:
            excluded[key] = "no recording"
            continue
        if key not in texts:
            excluded[key] = "no transcript"
            continue
        cleaned, why = clean_prompt_text(key, texts[key])
        if cleaned is None:
            excluded[key] = why
            continue
        info = sf.info(str(wavs[key]))
        if info.duration > max_seconds:
            excluded[key] = f"longer than {max_seconds:g} s"
            continue
        prompts.append(Prompt(key, str(wavs[key]), texts[key],
                              make_sentence(cleaned, f"asterisk:{key}"), info.duration,
                              sentence_pieces(cleaned)))
    return prompts, excluded
