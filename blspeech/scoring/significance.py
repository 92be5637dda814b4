"""Is recognizer A significantly better than B on the same test set? NIST's MAPSSWE test.

:func:`mapsswe` is the matched-pairs sentence-segment word error test as NIST SCTK's
``sc_stats -t mapsswe`` computes it (its mtchprs.c and statdist.c), on the alignments of
:func:`blspeech.scoring.wer.align`, which are sclite's; ``tests/test_significance.py`` checks it
against the real ``sclite -o sgml`` + ``sc_stats``.

How sc_stats does it:

* Both systems' alignments of an utterance are walked together, reference word by
  reference word (insertions are stepped over, and mark an error). The utterance is cut
  into segments at runs of ``min_good`` (2) reference words that *both* systems got right.
  A segment spans from the ``min_good`` correct words before its first error through the
  ``min_good`` correct words after its last one (clipped at the utterance's start; the
  utterance's end, or insertions after its last word, close an open segment), so errors
  never straddle two segments and the counts of different segments are close to
  independent. (sc_stats's re-synchronization for references with alternations is not
  needed: both alignments here have the same plain reference words.)
* Each segment's errors (substitutions, deletions, insertions: every step that is not
  correct) are counted for A and for B; a segment where both are error-free is dropped.
* With ``d`` the per-segment differences ``errors_A - errors_B`` over all ``n`` segments:
  ``mean = sum(d) / n``, ``variance = sum((d - mean)**2) / (n - 1)`` and
  ``Z = mean / sqrt(variance / n)``, a two-tailed test against the standard normal.
  sc_stats sets Z to 0 when the variance is 0, even for a nonzero mean (every segment
  with the same difference; one segment), and so do we.
* A difference is significant at the 5% level when ``|Z| > 1.960``; the system with fewer
  errors (the sign of the mean) wins.

Differences from sc_stats, on purpose: the p-value here is the exact two-tailed normal
one, ``erfc(|Z| / sqrt(2))``; sc_stats's unified report looks up ``|Z|`` in a table with
steps of 0.01 (rounding ``|Z|`` down), so it prints a slightly larger p. With no segment
at all (both systems make no error) sc_stats crashes; here mean and Z are 0 and p is 1.

Example:
    >>> refs = {f"u{k}": "the cat sat on the mat today" for k in range(8)}
    >>> a = {u: "the cat sat on the mat today" for u in refs}
    >>> b = {u: "a cat sat in the mat to day" for u in refs}
    >>> r = mapsswe(refs, a, b)
    >>> r.segments, r.segment_errors[:3], round(r.z, 3), r.verdict()
    (24, ((0, 1), (0, 1), (0, 2)), -13.565, 'A better')
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from blspeech.errors import UserError
from blspeech.scoring.wer import align, summarize, utterance_score

__all__ = ["MapssweResult", "mapsswe"]


@dataclass(frozen=True)
class MapssweResult:
    """The outcome of :func:`mapsswe`; ``mean`` and ``z`` are negative when A has fewer
    errors.

    ``segment_errors`` lists each segment's ``(errors of A, errors of B)``; ``wer_a`` and
    ``wer_b`` are the corpus WERs in percent (None without reference words).
    """

    segments: int
    sentences: int
    segment_errors: tuple[tuple[int, int], ...]
    mean: float
    variance: float
    z: float
    p_value: float
    min_good: int
    wer_a: float | None
    wer_b: float | None

    @property
    def std_dev(self) -> float:
        return math.sqrt(self.variance)

    def significant(self, alpha: float = 0.05) -> bool:
        """True when ``|z|`` exceeds the two-tailed critical value at ``alpha``.

        The critical value is rounded to 3 decimals as in SCTK's table, so at 0.05 this is
        sc_stats's ``|Z| > 1.960`` (a ``|z|`` in (1.95996, 1.960] has ``p < 0.05`` and is
        still not significant, as for sc_stats).
        """
        if not 0.0 < alpha < 1.0:
            raise UserError(f"alpha must be between 0 and 1, got {alpha}")
        critical = round(statistics.NormalDist().inv_cdf(1.0 - alpha / 2.0), 3)
        return abs(self.z) > critical

    def verdict(self, alpha: float = 0.05) -> str:
        """'A better', 'B better' or 'no significant difference' at level ``alpha``."""
        if not self.significant(alpha):
            return "no significant difference"
        return "A better" if self.mean < 0 else "B better"

    def to_dict(self, alpha: float = 0.05) -> dict:
        """Plain numbers for JSON (segment counts left out; the verdict at ``alpha``)."""
        return {"wer_a": self.wer_a, "wer_b": self.wer_b, "sentences": self.sentences,
                "segments": self.segments, "min_good": self.min_good, "mean": self.mean,
                "variance": self.variance, "std_dev": self.std_dev, "z": self.z,
                "p_value": self.p_value, "alpha": alpha, "verdict": self.verdict(alpha)}


def _segment_errors(ops_a: Sequence[str], ops_b: Sequence[str], min_good: int
                    ) -> list[tuple[int, int]]:
    """sc_stats's segmentation of one utterance: ``(errors A, errors B)`` per segment.

    ``ops_a``/``ops_b`` are the two alignments' op letters (C, S, D, I). Positions are
    alignment steps, so a segment's error count includes its insertions.
    """
    na, nb = len(ops_a), len(ops_b)
    i = j = 0
    last_a = last_b = 0      # where the latest run of words both got right ends
    state, good = "clean", 0  # clean: no error since the last segment; error; good-run
    out: list[tuple[int, int]] = []

    def close(end_a: int, end_b: int) -> None:
        # The segment starts min_good - 1 steps before the end of the run that precedes
        # its errors (so with that step, min_good correct words) and ends at end_a/end_b.
        ea = sum(op != "C" for op in ops_a[max(0, last_a - min_good + 1):end_a + 1])
        eb = sum(op != "C" for op in ops_b[max(0, last_b - min_good + 1):end_b + 1])
        if ea or eb:  # sc_stats warns about and drops an error-free segment
            out.append((ea, eb))

    while i < na:  # to the end of A's alignment; B's trailing insertions come after
        while i < na and ops_a[i] == "I":
            i, state = i + 1, "error"
        while j < nb and ops_b[j] == "I":
            j, state = j + 1, "error"
        both = i < na and j < nb and ops_a[i] == "C" and ops_b[j] == "C"
        if state == "clean":
            if both:
                last_a, last_b = i, j
            else:
                state = "error"
        elif both:
            good = 1 if state == "error" else good + 1
            if good == min_good:
                close(i, j)
                last_a, last_b, state = i, j, "clean"
            else:
                state = "good-run"
        else:
            state = "error"
        i, j = min(i + 1, na), min(j + 1, nb)
    if state != "clean" or j < nb:  # the end closes the open segment, B's last insertions
        close(na - 1, nb - 1)
    return out


def _words(text: Sequence[str] | str) -> list[str]:
    return text.split() if isinstance(text, str) else list(text)


def _check_ids(refs: Mapping, hyps: Mapping, name: str) -> None:
    missing = [u for u in refs if u not in hyps]
    extra = [u for u in hyps if u not in refs]
    for ids, what in ((missing, f"has no hypothesis in {name}"),
                      (extra, f"of {name} is not in the reference")):
        if ids:
            more = f" (and {len(ids) - 1} more)" if len(ids) > 1 else ""
            raise UserError(f"utterance {ids[0]!r}{more} {what}; both systems must be "
                            "scored on the same utterances as the reference")


def mapsswe(refs: Mapping[str, Sequence[str] | str], hyp_a: Mapping[str, Sequence[str] | str],
            hyp_b: Mapping[str, Sequence[str] | str], *, min_good: int = 2) -> MapssweResult:
    """NIST's matched-pairs sentence-segment word error test of system A against B.

    Transcripts are word strings (or word lists) keyed by utterance id; both hypothesis
    sets must cover exactly the reference utterances (a missing or extra one is a
    UserError naming it). Words compare case-sensitively, as in :func:`blspeech.scoring.wer.score`.
    ``min_good`` is the number of words both systems got right that bound a segment
    (sc_stats always uses 2). See the module docstring for the test itself.

    Example:
        >>> r = mapsswe({"u1": "a b c d e f", "u2": "a b c"},
        ...             {"u1": "a x c d e f", "u2": "a b c"},
        ...             {"u1": "a b c d y f", "u2": "a c"})
        >>> r.segment_errors, round(r.z, 3), round(r.p_value, 3), r.verdict()
        (((1, 0), (0, 1), (0, 1)), -0.5, 0.617, 'no significant difference')
    """
    if min_good < 1:
        raise UserError(f"min_good must be 1 or more, got {min_good}")
    _check_ids(refs, hyp_a, "system A")
    _check_ids(refs, hyp_b, "system B")
    errors: list[tuple[int, int]] = []
    scored_a, scored_b = [], []
    for utt, ref_text in refs.items():
        ref = _words(ref_text)
        steps_a, steps_b = align(ref, _words(hyp_a[utt])), align(ref, _words(hyp_b[utt]))
        scored_a.append(utterance_score(steps_a, utt=utt))
        scored_b.append(utterance_score(steps_b, utt=utt))
        errors += _segment_errors([s[0] for s in steps_a], [s[0] for s in steps_b], min_good)
    n = len(errors)
    diffs = [a - b for a, b in errors]
    mean = sum(diffs) / n if n else 0.0
    squares = sum((d - mean) ** 2 for d in diffs)
    # sc_stats: Z is 0 (and p 1) whenever the differences do not vary.
    variance = squares / (n - 1) if squares else 0.0
    z = mean / math.sqrt(variance / n) if squares else 0.0
    return MapssweResult(
        segments=n, sentences=len(refs), segment_errors=tuple(errors), mean=mean,
        variance=variance, z=z, p_value=math.erfc(abs(z) / math.sqrt(2.0)),
        min_good=min_good, wer_a=summarize(scored_a).wer, wer_b=summarize(scored_b).wer)
