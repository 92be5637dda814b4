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

Optional words, fragments and alternations (sclite ``-D``, ``-F`` and ``{ a / b }``, as Hub5
scoring uses them; see :func:`align`): with ``optional=True`` a word written ``(uh)`` may be
deleted at no error, counting as a correct reference word whether it is deleted or matched;
with ``fragments=True`` a word ending (or starting) with ``-`` matches any word it begins
(ends) with; an :class:`Alternation` token is matched by any one of its choices, and only the
words of the choice taken count as reference words (``@``, sclite's empty word, counts
nothing). So ``ref_words`` is counted from the alignment (correct + substituted + deleted),
which is the number of reference tokens when there are none of these.

Example:
    >>> r = score({"u1": "a b c", "u2": "a b"}, {"u1": "a x c d", "u2": "b a"})
    >>> r.substitutions, r.deletions, r.insertions, r.ref_words, round(r.wer, 2)
    (1, 1, 2, 5, 80.0)
    >>> r.utterances[1].alignment
    [('D', 'a', None), ('C', 'b', 'b'), ('I', None, 'a')]
"""

from __future__ import annotations

import os
import struct
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from blspeech.errors import UserError

__all__ = ["Alternation", "Counts", "ScoreResult", "UtteranceScore", "align", "jiwer_cer",
           "jiwer_measures",
           "parse_alternation", "read_text", "read_utt2spk", "score", "summarize",
           "utterance_score"]

#: sclite's default alignment weights (its ``-w`` option is not offered here).
CORRECT_COST, SUB_COST, INS_COST, DEL_COST = 0, 4, 3, 3

#: One alignment step: ``(op, ref, hyp)``, op in C/S/D/I; ref is None for I, hyp for D.
#: An optional word left out is correct with an empty partner, ``('C', '(uh)', '')``, as is an
#: inserted optional hypothesis word, ``('C', '', '(uh)')`` (sclite counts both correct).
Step = tuple[str, str | None, str | None]


@dataclass(frozen=True)
class Alternation:
    """One position that any one of ``choices`` fills: sclite's ``{ a / b c / @ }``.

    Each choice is a tuple of words; ``@`` is sclite's empty word (nothing to match).

    Example:
        >>> align(["a", Alternation((("b",), ("c", "d")))], ["a", "c", "d"])
        [('C', 'a', 'a'), ('C', 'c', 'c'), ('C', 'd', 'd')]
    """

    choices: tuple[tuple[str, ...], ...]

    def __str__(self) -> str:
        return "{ " + " / ".join(" ".join(c) for c in self.choices) + " }"


#: A transcript token: a word or an alternation.
Token = str | Alternation


def parse_alternation(text: str) -> Alternation:
    """sclite's reading of an alternation token ``{a / b c / @}`` (braces included).

    Choices are split at ``/`` and at whitespace; an empty choice is dropped, as sclite
    drops it (``{ a / }`` is just ``a``). Nested braces and an alternation with no word are
    UserErrors (sclite fails on them).

    Example:
        >>> parse_alternation("{HE IS / HE HAS}")
        Alternation(choices=(('HE', 'IS'), ('HE', 'HAS')))
        >>> parse_alternation("{ a / }").choices
        (('a',),)
    """
    if not (text.startswith("{") and "}" in text):
        raise UserError(f"not an alternation: {text!r}; expected '{{ a / b }}'")
    inner = text[1:text.rindex("}")]
    if "{" in inner or "}" in inner:
        raise UserError(f"nested alternation {text!r} is not supported")
    choices = tuple(tuple(c.split()) for c in inner.split("/"))
    choices = tuple(c for c in choices if c)
    if not choices:
        raise UserError(f"alternation {text!r} has no word (sclite cannot score it either)")
    return Alternation(choices)


def align(ref: Sequence[Token], hyp: Sequence[Token], *, optional: bool = False,
          fragments: bool = False) -> list[Step]:
    """Align two token sequences exactly as sclite does (weights and tie-breaking).

    Plain words take the fast path below. ``optional`` (sclite ``-D``), ``fragments``
    (sclite ``-F``) and :class:`Alternation` tokens take sclite's network alignment
    (:func:`_align_network`), which gives the same steps on plain words.

    Example:
        >>> align(["a", "b"], ["b", "a"])
        [('D', 'a', None), ('C', 'b', 'b'), ('I', None, 'a')]
        >>> align(["a", "b", "c"], ["a", "x", "c", "d"])
        [('C', 'a', 'a'), ('S', 'b', 'x'), ('C', 'c', 'c'), ('I', None, 'd')]
        >>> align(["a", "(uh)", "th-", "b"], ["a", "the", "b"], optional=True, fragments=True)
        [('C', 'a', 'a'), ('C', '(uh)', ''), ('C', 'th-', 'the'), ('C', 'b', 'b')]
    """
    if optional or fragments or any(isinstance(t, Alternation) for t in (*ref, *hyp)):
        return _align_network(ref, hyp, optional=optional, fragments=fragments)
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


# --- sclite's network alignment (optional words, fragments, alternations) -------------------
#
# A port of sclite's net_dp.c and word.c (NIST SCTK), checked against the installed sclite
# (2.10) in tests/test_hub5.py. Each side is a network of word arcs; arc 0 is the empty head that
# sclite adds, and each arc lists its predecessor arcs in sclite's order (an alternation's
# choices in written order), because on equal costs the first predecessor wins.

_F32 = struct.Struct("<f")


def f32(x: float) -> float:
    """``x`` rounded to a C float: sclite adds its costs and reads STM times in single
    precision."""
    return _F32.unpack(_F32.pack(x))[0]


#: sclite's costs (word.c): the empty word '@' is inserted or deleted for 0.001, an
#: optional word deleted for 2, '@' against '@' costs 1.
_NULL_COST, _OPT_DEL_COST, _NULL_SUB_COST = f32(0.001), 2.0, 1.0


@dataclass(frozen=True)
class _Word:
    value: str          # as written, parentheses kept: shown in the alignment
    inner: str          # what is compared: the value without the parentheses of (uh)
    optional: bool
    fragment: bool

    @property
    def null(self) -> bool:
        return self.value == "@"


def _word(text: str, optional: bool, fragments: bool) -> _Word:
    # sclite's new_WORD drops one trailing '*' (its mark for a misspelling).
    if len(text) > 1 and text.endswith("*"):
        text = text[:-1]
    opt = optional and len(text) >= 2 and text[0] == "(" and text[-1] == ")"
    inner = text[1:-1] if opt else text
    frag = fragments and (text.endswith("-") or text.startswith("-")
                          or (opt and text[-2] == "-"))
    return _Word(text, inner, opt, frag)


def _same(w1: _Word, w2: _Word) -> bool:
    """sclite's equal_WORD2: fragments match the words they begin (or end) with."""
    if w1.fragment or w2.fragment:
        # Byte-wise, as the C code (lengths and prefixes are in bytes).
        a, b = w1.inner.encode(), w2.inner.encode()
        la, lb = len(a), len(b)
        if a[:1] == b"-" and la > 1:
            return lb >= la - 1 and a[1:la] == b[lb - (la - 1):][:la - 1]
        if a[-1:] == b"-" and la > 1:
            return a[:la - 1] == b[:la - 1]
        if b[:1] == b"-" and lb > 1:
            return la >= lb - 1 and a[la - (lb - 1):][:lb - 1] == b[1:lb]
        if b[-1:] == b"-" and lb > 1:
            return a[:lb - 1] == b[:lb - 1]
    return w1.inner == w2.inner


def _cost(w1: _Word | None, w2: _Word | None) -> float:
    """sclite's wwd_WORD: the cost of aligning ``w1`` (ref) with ``w2`` (hyp), None = gap."""
    if (w2 is None and w1 is not None and w1.null) or (w1 is None and w2 is not None
                                                        and w2.null):
        return _NULL_COST
    if w1 is None:
        return _OPT_DEL_COST if w2.optional else INS_COST
    if w2 is None:
        return _OPT_DEL_COST if w1.optional else DEL_COST
    if w1.null and w2.null:
        return _NULL_SUB_COST
    return CORRECT_COST if _same(w1, w2) else SUB_COST


def _network(tokens: Sequence[Token], optional: bool, fragments: bool
             ) -> tuple[list[_Word | None], list[list[int]], list[int]]:
    """Arcs (0: the empty head), each arc's predecessors, and the final arcs, in sclite's
    order."""
    arcs: list[_Word | None] = [None]
    preds: list[list[int]] = [[]]
    ends = [0]
    for token in tokens:
        choices = token.choices if isinstance(token, Alternation) else ((token,),)
        new_ends = []
        for choice in choices:
            last = ends
            for text in choice:
                arcs.append(_word(text, optional, fragments))
                preds.append(last)
                last = [len(arcs) - 1]
            if last is not ends:  # sclite drops an empty choice
                new_ends.append(last[0])
        if new_ends:
            ends = new_ends
    return arcs, preds, ends


def _align_network(ref: Sequence[Token], hyp: Sequence[Token], *, optional: bool,
                   fragments: bool) -> list[Step]:
    """sclite's Network_dpalign: dynamic programming over the arcs of two word networks.

    cost[a][b] is the cheapest alignment ending with ref arc ``a`` and hyp arc ``b``;
    among predecessors the first cheapest wins, and a cell prefers the diagonal, then an
    insertion, then a deletion, as sclite does.
    """
    ra, rp, rend = _network(ref, optional, fragments)
    ha, hp, hend = _network(hyp, optional, fragments)
    cost, back = _network_dp(ra, rp, ha, hp)
    a, b = rend[0], hend[0]
    for p in rend:  # the first cheapest pair of final arcs
        for q in hend:
            if cost[p][q] < cost[a][b]:
                a, b = p, q
    return _trace_back(back, ra, ha, a, b)


def _network_dp(ra: Sequence[Any], rp: Sequence[Sequence[int]], ha: Sequence[Any],
                hp: Sequence[Sequence[int]]
                ) -> tuple[list[list[float]], list[list[tuple[int, int]]]]:
    """The cost and back-pointer tables of :func:`_align_network` (arcs ``ra``/``ha``,
    their predecessors ``rp``/``hp``)."""
    # Costs are small integers unless an '@' is around; then add in single precision as
    # sclite does, so that ties fall the same way.
    exact = not any(w is not None and w.null for w in (*ra, *ha))

    def add(x: float, y: float) -> float:
        return x + y if exact else f32(x + y)

    na, nb = len(ra), len(ha)
    cost = [[0.0] * nb for _ in range(na)]
    back = [[(-1, -1)] * nb for _ in range(na)]
    for b in range(1, nb):
        pb = min(hp[b], key=lambda p: cost[0][p])  # min() keeps the first of equals
        cost[0][b] = add(cost[0][pb], _cost(None, ha[b]))
        back[0][b] = (0, pb)
    for a in range(1, na):
        pa = min(rp[a], key=lambda p: cost[p][0])
        cost[a][0] = add(cost[pa][0], _cost(ra[a], None))
        back[a][0] = (pa, 0)
    for a in range(1, na):
        wa, row, preds_a = ra[a], cost[a], rp[a]
        del_cost = _cost(wa, None)
        for b in range(1, nb):
            wb, preds_b = ha[b], hp[b]
            ib = min(preds_b, key=row.__getitem__)
            da = min(preds_a, key=lambda p: cost[p][b])
            sa, sb = preds_a[0], preds_b[0]
            best = cost[sa][sb]
            for p in preds_a:
                for q in preds_b:
                    if cost[p][q] < best:
                        best, sa, sb = cost[p][q], p, q
            sub = add(best, _cost(wa, wb))
            dele = add(cost[da][b], del_cost)
            ins = add(row[ib], _cost(None, wb))
            if sub <= dele and sub <= ins:
                row[b], back[a][b] = sub, (sa, sb)
            elif dele < ins:
                row[b], back[a][b] = dele, (da, b)
            else:
                row[b], back[a][b] = ins, (a, ib)
    return cost, back


def _trace_back(back: Sequence[Sequence[tuple[int, int]]], ra: Sequence[Any],
                ha: Sequence[Any], a: int, b: int) -> list[Step]:
    """The alignment steps from the final arcs ``(a, b)`` back to the start."""
    steps: list[Step] = []
    while a > 0 or b > 0:
        pa, pb = back[a][b]
        if a == pa:  # insertion
            w = ha[b]
            if not w.null:
                # An inserted optional hypothesis word counts as correct in sclite.
                steps.append(("C", "", w.value) if w.optional else ("I", None, w.value))
        elif b == pb:  # deletion
            w = ra[a]
            if not w.null:
                steps.append(("C", w.value, "") if w.optional else ("D", w.value, None))
        elif not (ra[a].null and ha[b].null):
            r, h = ra[a], ha[b]
            steps.append(("C" if _same(r, h) else "S", r.value, h.value))
        a, b = pa, pb
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


def _tokens(text: Sequence[Token] | str, unit: str) -> list[Token]:
    words = text.split() if isinstance(text, str) else list(text)
    if unit == "char":
        if any(isinstance(w, Alternation) for w in words):
            raise UserError("alternations cannot be scored by character (sclite -c splits "
                            "words, not alternatives)")
        # sclite -c: the characters of the words, spaces removed.
        return list("".join(words))
    return words


def score(refs: Mapping[str, Sequence[Token] | str],
          hyps: Mapping[str, Sequence[Token] | str], *,
          utt2spk: Mapping[str, str] | None = None, unit: str = "word",
          optional: bool = False, fragments: bool = False) -> ScoreResult:
    """Score hypotheses against references, utterance ids as keys, in reference order.

    Transcripts are word lists or strings (split on whitespace). ``unit="char"`` scores
    characters as ``sclite -c`` does (see the module docstring). With ``utt2spk`` every
    reference utterance needs a speaker and ``per_speaker`` is filled (sorted by speaker).
    ``optional`` and ``fragments`` are sclite's ``-D`` and ``-F`` (see :func:`align`); word
    lists may hold :class:`Alternation` tokens.

    Raises UserError for a hypothesis id that is not in the references, a reference
    id without speaker in ``utt2spk`` and an unknown ``unit``.

    Example:
        >>> r = score({"s1-u1": "a b", "s2-u1": "c"}, {"s1-u1": "a b"},
        ...           utt2spk={"s1-u1": "s1", "s2-u1": "s2"})
        >>> r.deletions, r.sentence_errors, r.per_speaker["s2"].deletions, r.missing
        (1, 1, 1, ['s2-u1'])
        >>> score({"u": "ab cd"}, {"u": "abcd"}, unit="char").errors
        0
        >>> r = score({"u": "a (uh) b"}, {"u": "a b"}, optional=True)
        >>> r.errors, r.correct, r.ref_words
        (0, 3, 3)
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
    utterances = []
    for utt, ref_text in refs.items():
        missing = utt not in hyps
        ref = _tokens(ref_text, unit)
        hyp = [] if missing else _tokens(hyps[utt], unit)
        steps = align(ref, hyp, optional=optional, fragments=fragments)
        utterances.append(utterance_score(
            steps, utt=utt, speaker=None if utt2spk is None else utt2spk[utt],
            missing=missing))
    return summarize(utterances, unit=unit)


def utterance_score(steps: list[Step], *, utt: str = "", speaker: str | None = None,
                    missing: bool = False) -> UtteranceScore:
    """The counts of one aligned utterance (an :func:`align` result).

    Reference words are counted from the alignment: correct + substituted + deleted, which
    is the number of reference tokens unless alternations or optional words are involved.

    Example:
        >>> u = utterance_score(align(["a", "b"], ["a"]), utt="u1")
        >>> u.ref_words, u.deletions, u.sentence_errors
        (2, 1, 1)
    """
    ops = Counter(op for op, _, _ in steps)
    u = UtteranceScore(ref_words=ops["C"] + ops["S"] + ops["D"], correct=ops["C"],
                       substitutions=ops["S"], deletions=ops["D"], insertions=ops["I"],
                       sentences=1, utt=utt, speaker=speaker, alignment=steps,
                       missing=missing)
    u.sentence_errors = int(u.errors > 0)
    return u


def summarize(utterances: Iterable[UtteranceScore], *, unit: str = "word") -> ScoreResult:
    """Corpus totals, per-speaker counts and confusions of scored utterances, in order.

    Example:
        >>> r = summarize([utterance_score(align(["a"], ["b"]), utt="u", speaker="s")])
        >>> r.substitutions, r.per_speaker["s"].substitutions, r.confusions()["substitutions"]
        (1, 1, [('a', 'b', 1)])
    """
    result = ScoreResult(unit=unit)
    speakers: dict[str, Counts] = {}
    for u in utterances:
        result.add(u)
        result.utterances.append(u)
        if u.speaker is not None:
            speakers.setdefault(u.speaker, Counts()).add(u)
        if u.missing:
            result.missing.append(u.utt)
        for op, r, h in u.alignment:
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
            f"{len(result.missing)} of {len(result.utterances)} reference utterances have no "
            f"hypothesis and count as all deletions: {shown}")
    return result


def _jiwer_pairs(refs: Mapping[str, Sequence[str] | str],
                 hyps: Mapping[str, Sequence[str] | str]) -> tuple[list[str], list[str]]:
    """Reference and hypothesis strings in reference order (a missing hypothesis is empty)."""
    unknown = [u for u in hyps if u not in refs]
    if unknown:
        raise UserError(f"hypothesis utterance {unknown[0]!r} is not in the reference")
    utts = list(refs)
    return ([" ".join(_tokens(refs[u], "word")) for u in utts],
            [" ".join(_tokens(hyps.get(u, ""), "word")) for u in utts])


def jiwer_measures(refs: Mapping[str, Sequence[str] | str],
                   hyps: Mapping[str, Sequence[str] | str]) -> dict[str, float | int]:
    """jiwer's own word measures (``jiwer.process_words``), for comparison with numbers
    from Hugging Face-style evaluations: ``wer``, ``mer``, ``wil`` in percent, and
    ``hits``, ``substitutions``, ``deletions``, ``insertions``.

    jiwer aligns words by plain Levenshtein distance with unit costs; sclite (:func:`score`)
    uses its own costs and tie-breaking and knows optionally deletable words, fragments
    and alternations. The totals agree on plain transcripts, the S/D/I split can differ.

    Example:
        >>> m = jiwer_measures({"u": "a b c"}, {"u": "a x c d"})
        >>> m["wer"], m["substitutions"], m["insertions"]
        (66.66666666666666, 1, 1)
    """
    import jiwer

    ref, hyp = _jiwer_pairs(refs, hyps)
    out = jiwer.process_words(ref, hyp)
    return {"wer": 100.0 * out.wer, "mer": 100.0 * out.mer, "wil": 100.0 * out.wil,
            "hits": out.hits, "substitutions": out.substitutions,
            "deletions": out.deletions, "insertions": out.insertions}


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
    import jiwer

    ref, hyp = _jiwer_pairs(refs, hyps)
    if not any(ref):
        return None
    return 100.0 * float(jiwer.cer(ref, hyp))


def read_text(path: str | os.PathLike) -> dict[str, list[str]]:
    """A Kaldi ``text`` file: ``utt-id word word ...`` lines, in file order.

    An id alone is an empty transcript. Duplicate ids, empty lines and non-UTF-8 lines are
    UserErrors naming file and line; the file need not be sorted (decoder output).

    Example:
        >>> read_text("data/test/text")["spk1-utt1"]  # doctest: +SKIP
        ['call', 'me', 'at', 'five']
    """
    from blspeech.io.kaldi import read_table

    table = read_table(path, check_sorted=False, allow_empty_value=True)
    return {key: entry.value.split() for key, entry in table.items()}


def read_utt2spk(path: str | os.PathLike) -> dict[str, str]:
    """A Kaldi ``utt2spk`` file (``utt-id speaker`` lines) as a dict.

    Example:
        >>> read_utt2spk("data/test/utt2spk")["spk1-utt1"]  # doctest: +SKIP
        'spk1'
    """
    from blspeech.io.kaldi import read_table

    table = read_table(path, check_sorted=False)
    for entry in table.values():
        if len(entry.value.split()) != 1:
            raise UserError(f"{os.fspath(path)}:{entry.line}: expected 'utt-id speaker', "
                            f"got {entry.key} {entry.value}")
    return {key: entry.value for key, entry in table.items()}
