"""Word and character error rates that match NIST sclite, count for count.

:func:`score` aligns each reference utterance with its hypothesis and sums correct words,
substitutions, deletions and insertions over the corpus, per speaker and per utterance.
The numbers are those of ``sclite -r ref.trn trn -h hyp.trn trn -s`` (``-c`` for
characters), S/D/I split included, which the tests check against the real binary.

How sclite aligns (found by running it on many thousands of random pairs, see
``tests/test_score.py``): a dynamic program with weighted costs, correct 0, substitution 4,
insertion 3, deletion 3, then a walk back from the ends of both sentences that, at each
step, takes the diagonal move (correct or substitution) if it is one of the cheapest, else
an insertion, else a deletion. The weights matter: ``a b`` against ``b a`` is one deletion
and one insertion (cost 6), not two substitutions (cost 8), and among equal-cost alignments
the tie-breaking can even change the total: ``b b b b a b a a b`` against ``a a a b b a``
is 5 deletions and 2 insertions for sclite (7 errors) while a unit-cost edit distance, as
in jiwer or Kaldi's ``compute-wer``, finds 6. So the totals here can differ from jiwer's.

Conventions, as sclite (trn format) unless said otherwise:

* Words compare case-sensitively, as with ``sclite -s`` and Kaldi (plain sclite folds case).
* ``unit="char"`` is ``sclite -c`` (with ``-e utf-8`` for non-ASCII text): each
  utterance's words are joined *without* spaces and aligned character by character, so a
  space is never an error (``ab cd`` vs ``abcd`` is correct) and a hyphen is a character.
  ``-c NOASCII`` (ASCII words stay whole) and ``-c DH`` (hyphens deleted) are not offered.
  :func:`jiwer_cer` gives jiwer's CER instead (the spaces between words count as
  characters, every edit costs 1); ``blspeech score --cer`` reports both.
* A sentence error is an utterance with any error; an empty reference against an empty
  hypothesis is correct. Error rates are percentages of the reference words and are None
  ("UNDEF" in sclite) when there are no reference words.
* A reference utterance with no hypothesis is scored as an empty hypothesis (all deletions)
  and a warning names it. sclite silently leaves such utterances out, Kaldi's
  ``compute-wer --mode=all`` counts them as we do; a recognizer that drops an utterance
  should not look better for it.
* A hypothesis utterance that is not in the reference is an error, as in sclite.

Example:
    >>> r = score({"u1": "a b c", "u2": "a b"}, {"u1": "a x c d", "u2": "b a"})
    >>> r.substitutions, r.deletions, r.insertions, r.ref_words, round(r.wer, 2)
    (1, 1, 2, 5, 80.0)
    >>> r.utterances[1].alignment
    [('D', 'a', None), ('C', 'b', 'b'), ('I', None, 'a')]
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import UserError

__all__ = ["Counts", "ScoreResult", "UtteranceScore", "align", "jiwer_cer", "read_text",
           "read_utt2spk", "score"]

#: sclite's default alignment weights (its ``-w`` option is not offered here).
CORRECT_COST, SUB_COST, INS_COST, DEL_COST = 0, 4, 3, 3

#: One alignment step: ``(op, ref, hyp)``, op in C/S/D/I; ref is None for I, hyp for D.
Step = tuple[str, str | None, str | None]


def align(ref: Sequence[str], hyp: Sequence[str]) -> list[Step]:
    """Align two token sequences exactly as sclite does (weights and tie-breaking).

    Example:
        >>> align(["a", "b"], ["b", "a"])
        [('D', 'a', None), ('C', 'b', 'b'), ('I', None, 'a')]
        >>> align(["a", "b", "c"], ["a", "x", "c", "d"])
        [('C', 'a', 'a'), ('S', 'b', 'x'), ('C', 'c', 'c'), ('I', None, 'd')]
    """
    n, m = len(ref), len(hyp)
    # cost[i][j]: cheapest alignment of ref[:i] with hyp[:j]. Plain Python beats numpy
    # here: sentences are short and a row depends on its own left neighbour.
    prev = [j * INS_COST for j in range(m + 1)]
    cost = [prev]
    for i in range(1, n + 1):
        r = ref[i - 1]
        row = [i * DEL_COST]
        left = row[0]
        for j in range(1, m + 1):
            best = prev[j - 1] + (CORRECT_COST if hyp[j - 1] == r else SUB_COST)
            up = prev[j] + DEL_COST
            if up < best:
                best = up
            left += INS_COST
            if left < best:
                best = left
            row.append(best)
            left = best
        cost.append(row)
        prev = row
    # Walk back; on ties sclite prefers the diagonal, then an insertion, then a deletion.
    steps: list[Step] = []
    i, j = n, m
    while i or j:
        here = cost[i][j]
        if i and j:
            same = ref[i - 1] == hyp[j - 1]
            if here == cost[i - 1][j - 1] + (CORRECT_COST if same else SUB_COST):
                steps.append(("C" if same else "S", ref[i - 1], hyp[j - 1]))
                i, j = i - 1, j - 1
                continue
        if j and here == cost[i][j - 1] + INS_COST:
            steps.append(("I", None, hyp[j - 1]))
            j -= 1
        else:
            steps.append(("D", ref[i - 1], None))
            i -= 1
    steps.reverse()
    return steps


def _percent(part: int, whole: int) -> float | None:
    return 100.0 * part / whole if whole else None


@dataclass
class Counts:
    """Error counts of a set of utterances (the corpus, one speaker or one utterance).

    ``ref_words`` counts reference tokens: words, or characters when scoring characters.
    """

    ref_words: int = 0
    correct: int = 0
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    sentences: int = 0
    sentence_errors: int = 0

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float | None:
        """Error rate in percent of the reference tokens; None without reference tokens."""
        return _percent(self.errors, self.ref_words)

    @property
    def ser(self) -> float | None:
        """Sentence error rate in percent; None without sentences."""
        return _percent(self.sentence_errors, self.sentences)

    def add(self, other: Counts) -> None:
        self.ref_words += other.ref_words
        self.correct += other.correct
        self.substitutions += other.substitutions
        self.deletions += other.deletions
        self.insertions += other.insertions
        self.sentences += other.sentences
        self.sentence_errors += other.sentence_errors

    def to_dict(self, unit: str = "word") -> dict[str, Any]:
        """Plain numbers for JSON; ``ref_chars``/``cer`` instead of ``ref_words``/``wer``
        when ``unit="char"``."""
        name = "words" if unit == "word" else "chars"
        rate = "wer" if unit == "word" else "cer"
        return {rate: self.wer, f"ref_{name}": self.ref_words, "correct": self.correct,
                "substitutions": self.substitutions, "deletions": self.deletions,
                "insertions": self.insertions, "errors": self.errors,
                "sentences": self.sentences, "sentence_errors": self.sentence_errors,
                "ser": self.ser}


@dataclass
class UtteranceScore(Counts):
    """One utterance: its counts, speaker (None without utt2spk) and alignment."""

    utt: str = ""
    speaker: str | None = None
    alignment: list[Step] = field(default_factory=list)
    missing: bool = False  # no hypothesis: scored as an empty one

    def to_dict(self, unit: str = "word") -> dict[str, Any]:
        return {"utt": self.utt, "speaker": self.speaker, "missing": self.missing,
                **super().to_dict(unit), "alignment": [list(s) for s in self.alignment]}


@dataclass
class ScoreResult(Counts):
    """Corpus totals (the inherited counts) with per-speaker and per-utterance detail.

    ``per_speaker`` is empty without utt2spk; ``warnings`` are human-readable lines
    (missing hypotheses); ``substitution_pairs``/``inserted``/``deleted`` count the
    confusions over all utterances.
    """

    unit: str = "word"
    per_speaker: dict[str, Counts] = field(default_factory=dict)
    utterances: list[UtteranceScore] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    substitution_pairs: Counter = field(default_factory=Counter)
    inserted: Counter = field(default_factory=Counter)
    deleted: Counter = field(default_factory=Counter)

    def totals(self) -> Counts:
        """The corpus totals alone, as a plain :class:`Counts`."""
        return Counts(self.ref_words, self.correct, self.substitutions, self.deletions,
                      self.insertions, self.sentences, self.sentence_errors)

    def confusions(self, top: int | None = 10) -> dict[str, list]:
        """The most frequent errors, most frequent first (ties in token order).

        Example:
            >>> score({"u": "a b a"}, {"u": "x b"}).confusions()
            {'substitutions': [('a', 'x', 1)], 'insertions': [], 'deletions': [('a', 1)]}
        """
        def most(counter: Counter) -> list:
            return sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:top]

        return {"substitutions": [(r, h, c) for (r, h), c in most(self.substitution_pairs)],
                "insertions": most(self.inserted), "deletions": most(self.deleted)}

    def to_dict(self, unit: str | None = None, *, details: bool = False,
                top: int | None = 10) -> dict[str, Any]:
        """Totals, ``per_speaker``, ``confusions``, ``missing``; ``utterances`` if details."""
        unit = unit or self.unit
        out = super().to_dict(unit)
        out["per_speaker"] = {s: c.to_dict(unit) for s, c in self.per_speaker.items()}
        out["confusions"] = {k: [list(x) for x in v] for k, v in self.confusions(top).items()}
        out["missing"] = list(self.missing)
        if details:
            out["utterances"] = [u.to_dict(unit) for u in self.utterances]
        return out


def _tokens(text: Sequence[str] | str, unit: str) -> list[str]:
    words = text.split() if isinstance(text, str) else list(text)
    # sclite -c: the characters of the words, spaces removed.
    return list("".join(words)) if unit == "char" else words


def score(refs: Mapping[str, Sequence[str] | str], hyps: Mapping[str, Sequence[str] | str],
          *, utt2spk: Mapping[str, str] | None = None, unit: str = "word") -> ScoreResult:
    """Score hypotheses against references, utterance ids as keys, in reference order.

    Transcripts are word lists or strings (split on whitespace). ``unit="char"`` scores
    characters as ``sclite -c`` does (see the module docstring). With ``utt2spk`` every
    reference utterance needs a speaker and ``per_speaker`` is filled (sorted by speaker).

    Raises UserError for a hypothesis id that is not in the references, a reference
    id without speaker in ``utt2spk`` and an unknown ``unit``.

    Example:
        >>> r = score({"s1-u1": "a b", "s2-u1": "c"}, {"s1-u1": "a b"},
        ...           utt2spk={"s1-u1": "s1", "s2-u1": "s2"})
        >>> r.deletions, r.sentence_errors, r.per_speaker["s2"].deletions, r.missing
        (1, 1, 1, ['s2-u1'])
        >>> score({"u": "ab cd"}, {"u": "abcd"}, unit="char").errors
        0
    """
    if unit not in ("word", "char"):
        raise UserError(f"unit must be 'word' or 'char', got {unit!r}")
    unknown = [u for u in hyps if u not in refs]
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise UserError(f"hypothesis utterance {unknown[0]!r}{more} is not in the reference; "
                        "score against the matching reference set")
    if utt2spk is not None:
        nospk = [u for u in refs if u not in utt2spk]
        if nospk:
            more = f" (and {len(nospk) - 1} more)" if len(nospk) > 1 else ""
            raise UserError(f"reference utterance {nospk[0]!r}{more} has no speaker in "
                            "utt2spk")
    result = ScoreResult(unit=unit)
    speakers: dict[str, Counts] = {}
    for utt, ref_text in refs.items():
        missing = utt not in hyps
        ref = _tokens(ref_text, unit)
        hyp = [] if missing else _tokens(hyps[utt], unit)
        steps = align(ref, hyp)
        ops = Counter(op for op, _, _ in steps)
        u = UtteranceScore(ref_words=len(ref), correct=ops["C"], substitutions=ops["S"],
                           deletions=ops["D"], insertions=ops["I"], sentences=1,
                           utt=utt, speaker=None if utt2spk is None else utt2spk[utt],
                           alignment=steps, missing=missing)
        u.sentence_errors = int(u.errors > 0)
        result.add(u)
        result.utterances.append(u)
        if u.speaker is not None:
            speakers.setdefault(u.speaker, Counts()).add(u)
        if missing:
            result.missing.append(utt)
        for op, r, h in steps:
            if op == "S":
                result.substitution_pairs[r, h] += 1
            elif op == "I":
                result.inserted[h] += 1
            elif op == "D":
                result.deleted[r] += 1
    result.per_speaker = dict(sorted(speakers.items()))
    if result.missing:
        shown = ", ".join(result.missing[:5]) + (", ..." if len(result.missing) > 5 else "")
        result.warnings.append(
            f"{len(result.missing)} of {len(refs)} reference utterances have no hypothesis "
            f"and count as all deletions: {shown}")
    return result


def jiwer_cer(refs: Mapping[str, Sequence[str] | str],
              hyps: Mapping[str, Sequence[str] | str]) -> float | None:
    """Character error rate as jiwer computes it, in percent (``100 * jiwer.cer(...)``).

    Unlike sclite ``-c`` the single spaces between words are characters too and every
    edit costs 1. Missing hypotheses count as empty; unknown hypothesis ids are an error.
    None when the references have no characters.

    Example:
        >>> jiwer_cer({"u": "ab cd"}, {"u": "abcd"})   # one deleted space of 5 characters
        20.0
    """
    unknown = [u for u in hyps if u not in refs]
    if unknown:
        raise UserError(f"hypothesis utterance {unknown[0]!r} is not in the reference")
    errors = total = 0
    for utt, ref_text in refs.items():
        ref = " ".join(_tokens(ref_text, "word"))
        hyp = " ".join(_tokens(hyps.get(utt, ""), "word"))
        errors += _levenshtein(ref, hyp)
        total += len(ref)
    return _percent(errors, total)


def _levenshtein(a: Sequence[str], b: Sequence[str]) -> int:
    """Unit-cost edit distance (only the total is needed, so tie-breaking is moot)."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        row = [i]
        for j, y in enumerate(b, 1):
            row.append(min(prev[j - 1] + (x != y), prev[j] + 1, row[j - 1] + 1))
        prev = row
    return prev[-1]


def read_text(path: str | os.PathLike) -> dict[str, list[str]]:
    """A Kaldi ``text`` file: ``utt-id word word ...`` lines, in file order.

    An id alone is an empty transcript. Duplicate ids, empty lines and non-UTF-8 lines are
    UserErrors naming file and line; the file need not be sorted (decoder output).

    Example:
        >>> read_text("data/test/text")["spk1-utt1"]  # doctest: +SKIP
        ['call', 'me', 'at', 'five']
    """
    from .kaldi import read_table

    table = read_table(path, check_sorted=False, allow_empty_value=True)
    return {key: entry.value.split() for key, entry in table.items()}


def read_utt2spk(path: str | os.PathLike) -> dict[str, str]:
    """A Kaldi ``utt2spk`` file (``utt-id speaker`` lines) as a dict.

    Example:
        >>> read_utt2spk("data/test/utt2spk")["spk1-utt1"]  # doctest: +SKIP
        'spk1'
    """
    from .kaldi import read_table

    table = read_table(path, check_sorted=False)
    for entry in table.values():
        if len(entry.value.split()) != 1:
            raise UserError(f"{os.fspath(path)}:{entry.line}: expected 'utt-id speaker', "
                            f"got {entry.key} {entry.value}")
    return {key: entry.value for key, entry in table.items()}
