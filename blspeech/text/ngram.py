"""Word n-gram language models in ARPA format (interpolated Kneser-Ney), for LM decoding.

Estimated in memory from transcripts, which suits the small text sets of recipes; for
large corpora use KenLM's ``lmplz`` or SRILM and pass their ARPA file instead.

Example:
    >>> lm = train_ngram(["call me now", "call me later"], order=3)
    >>> write_arpa(lm, "lm.arpa")  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from blspeech.errors import UserError
from blspeech.io.fileio import atomic_write

BOS, EOS, UNK = "<s>", "</s>", "<unk>"


@dataclass
class NgramLM:
    """``probs[n][ngram] = log10 p`` and ``backoffs[n][ngram] = log10 backoff`` per order."""

    order: int
    probs: list[dict[tuple[str, ...], float]]
    backoffs: list[dict[tuple[str, ...], float]]

    def logprob(self, word: str, context: tuple[str, ...]) -> float:
        """log10 p(word | context) with back-off (unknown words map to ``<unk>``)."""
        context = context[-(self.order - 1):] if self.order > 1 else ()
        backoff = 0.0
        while True:
            gram = (*context, word)
            table = self.probs[len(gram) - 1]
            if gram in table:
                return backoff + table[gram]
            if not context:
                return backoff + self.probs[0].get((UNK,), -99.0)
            backoff += self.backoffs[len(context) - 1].get(context, 0.0)
            context = context[1:]


def train_ngram(sentences: Iterable[str], order: int = 3, discount: float = 0.75) -> NgramLM:
    """Interpolated Kneser-Ney n-gram model from whitespace-tokenized sentences.

    The highest order uses discounted counts, lower orders continuation counts (how many
    distinct words precede an n-gram); each level interpolates with the one below, and the
    interpolation weights become the ARPA back-off weights. ``<unk>`` gets the unigram
    mass that the discount frees at the lowest level.
    """
    if order < 1:
        raise UserError(f"order must be >= 1, got {order}")
    if not 0.0 < discount < 1.0:
        raise UserError(f"discount must be in (0, 1), got {discount}")
    counts: list[Counter] = [Counter() for _ in range(order)]
    for sentence in sentences:
        words = [BOS, *sentence.split(), EOS]
        for n in range(1, order + 1):
            # <s> is context only: it never occurs as a predicted (unigram) word.
            for i in range(1 if n == 1 else 0, len(words) - n + 1):
                counts[n - 1][tuple(words[i:i + n])] += 1
    if not counts[0]:
        raise UserError("cannot estimate a language model from empty text")
    # Lower orders use continuation counts: distinct left extensions of each n-gram.
    adjusted: list[Counter] = [Counter() for _ in range(order)]
    adjusted[order - 1] = counts[order - 1]
    for n in range(order - 1, 0, -1):
        for gram in counts[n]:
            adjusted[n - 1][gram[1:]] += 1
        for gram, c in counts[n - 1].items():
            if gram[0] == BOS:  # n-grams at sentence start have no left extension
                adjusted[n - 1][gram] = c
    probs: list[dict] = [dict() for _ in range(order)]
    backoffs: list[dict] = [dict() for _ in range(order)]
    # Unigrams: discounted continuation counts plus a uniform share of the freed mass.
    uni = dict(adjusted[0])
    total = sum(uni.values())
    vocab = len(uni) + 1  # + <unk>
    freed = discount * len(uni) / total
    lower: dict[tuple[str, ...], float] = {}
    for gram, c in uni.items():
        lower[gram] = max(c - discount, 0.0) / total + freed / vocab
    lower[(UNK,)] = freed / vocab
    probs[0] = {g: math.log10(p) for g, p in lower.items()}
    probs[0][(BOS,)] = -99.0
    for n in range(2, order + 1):
        by_context: dict[tuple[str, ...], dict[tuple[str, ...], int]] = defaultdict(dict)
        for gram, c in adjusted[n - 1].items():
            by_context[gram[:-1]][gram] = c
        current: dict[tuple[str, ...], float] = {}
        for context, grams in by_context.items():
            ctx_total = sum(grams.values())
            gamma = discount * len(grams) / ctx_total
            for gram, c in grams.items():
                # Every seen n-gram's suffix was seen one order lower (it is a left
                # extension of it), so the lower-order probability is in the table.
                current[gram] = (c - discount) / ctx_total + gamma * lower[gram[1:]]
            backoffs[n - 2][context] = math.log10(gamma)
        probs[n - 1] = {g: math.log10(p) for g, p in current.items()}
        lower = current
    return NgramLM(order, probs, backoffs)


def write_arpa(lm: NgramLM, path: str | os.PathLike) -> None:
    """Write the model as an ARPA file (atomically)."""
    with atomic_write(path) as f:
        f.write("\n\\data\\\n")
        for n in range(1, lm.order + 1):
            f.write(f"ngram {n}={len(lm.probs[n - 1])}\n")
        for n in range(1, lm.order + 1):
            f.write(f"\n\\{n}-grams:\n")
            for gram in sorted(lm.probs[n - 1]):
                line = f"{lm.probs[n - 1][gram]:.6f}\t{' '.join(gram)}"
                if n < lm.order and gram in lm.backoffs[n - 1]:
                    line += f"\t{lm.backoffs[n - 1][gram]:.6f}"
                f.write(line + "\n")
        f.write("\n\\end\\\n")
