"""Kneser-Ney n-gram estimation and ARPA output."""

from __future__ import annotations

import random

import pytest

from blspeech.text.ngram import BOS, EOS, UNK, train_ngram, write_arpa


def _sentences(n=60, seed=0):
    rng = random.Random(seed)
    words = "call me at five one two three hold please".split()
    return [" ".join(rng.choice(words) for _ in range(rng.randint(1, 7))) for _ in range(n)]


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_every_context_is_a_distribution(order):
    lm = train_ngram(_sentences(), order)
    vocab = [g[0] for g in lm.probs[0] if g[0] != BOS]
    assert UNK in vocab and EOS in vocab
    contexts = [()] + [g for n in range(order - 1) for g in lm.probs[n] if g[-1] != EOS]
    for ctx in contexts:
        total = sum(10 ** lm.logprob(w, ctx) for w in vocab)
        assert total == pytest.approx(1.0, abs=1e-9), ctx


def test_seen_bigram_beats_unseen_and_arpa_file(tmp_path):
    lm = train_ngram(["call me now", "call me later", "hold please"], order=2)
    assert lm.logprob("me", ("call",)) > lm.logprob("please", ("call",))
    path = tmp_path / "lm.arpa"
    write_arpa(lm, path)
    text = path.read_text()
    header = text.split("\\1-grams:")[0]
    assert "ngram 1=" in header and "ngram 2=" in header
    n_bigrams = int(header.split("ngram 2=")[1].split()[0])
    body = text.split("\\2-grams:")[1].split("\\end\\")[0].strip().splitlines()
    assert len(body) == n_bigrams
    with pytest.raises(ValueError, match="empty"):
        train_ngram([], 2)
