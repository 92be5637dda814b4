"""Lexicon (+ word n-gram LM) beam search for hybrid models over a monophone HMM's pdfs.

The flashlight counterpart of the HLG graph (:mod:`blspeech.decoding.wfst.hlg`), built from
the same ``EXP/lang`` of ``blspeech align-gmm`` (``phones.txt``, ``hmm.txt``,
``lexicon.txt``): each frame's phone score is the best of its HMM states' scaled
log-likelihoods (the Viterbi choice of state, transitions free as in the graph), and
:class:`~blspeech.decoding.lexicon_lm.LexiconLMDecoder` searches the lexicon's
pronunciations with the ARPA LM, the silence phone between words. Its CTC collapse is a
phone-level HMM without a blank: the blank column is never emitted, repeats of a phone
are one phone.

**Word ends.** Flashlight completes a word on the first frame of its last token and
cannot repeat that token afterwards (a CTC model would emit blanks there), which would
squeeze every word's last phone into one frame. So each phone ``P`` but silence has a
word-final twin ``P_end`` with ``P``'s scores, and each pronunciation ``... P`` is
searched as ``... P_end`` (the last phone one frame long) and ``... P P_end`` (longer).
The twins also keep a phone that ends one word apart from the same phone starting the
next (``next tuesday``: ``S T_end T UW``), and mark where each word ends for the CTM.

Without an LM the search still needs the lexicon: a phone model has no words of its own,
so this is the hybrid head's "no LM" decoding, what greedy decoding is for the CTC head.

Example:
    >>> dec = HybridLexiconDecoder("exp/gmm/lang", "data/lm/3gram.arpa",
    ...                            num_pdfs=122)                   # doctest: +SKIP
    >>> dec.decode_batch(log_likelihoods, lengths)[0].words          # doctest: +SKIP
    ['call', 'me', 'now']
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence

import torch

from blspeech.decoding.ctc import Hypothesis
from blspeech.decoding.lexicon_lm import (
    NEVER,
    LexiconLMDecoder,
    check_spellings,
    read_arpa_vocabulary,
)
from blspeech.decoding.wfst.graph import read_symbols
from blspeech.decoding.wfst.hlg import (
    HMM_FILE,
    LEXICON_FILE,
    PHONES_FILE,
    SILENCE,
    read_hmms,
    read_prons,
)
from blspeech.errors import UserError

BLANK = "<blank>"
#: the word-final twin of a phone: ``AH`` -> ``AH_end``
WORD_END = "_end"


class PhoneSet:
    """The phones as the token set :class:`LexiconLMDecoder` reads: column 0 a blank that
    is never emitted, the phones in ``phones.txt`` order, then the word-final twins of
    every phone but silence (see the module notes)."""

    def __init__(self, phones: Sequence[str]) -> None:
        self.twinned = [p for p in phones if p != SILENCE]
        self.tokens = [BLANK, *phones, *(p + WORD_END for p in self.twinned)]
        self.vocab_size = len(self.tokens)
        self.unk_id = 0  # no spelling may use the blank
        self.num_phones = len(phones)
        #: each token's phone column: the twins read their phone's
        self.source = torch.tensor([*range(1 + len(phones)),
                                    *(1 + phones.index(p) for p in self.twinned)])

    def spell(self, word: str) -> None:
        return None  # words come with pronunciations

    @staticmethod
    def spellings(pron: Sequence[str]) -> list[list[str]]:
        """A pronunciation's two spellings: its last phone one frame long, or longer."""
        *first, last = pron
        return [[*first, last + WORD_END], [*pron, last + WORD_END]]


class HybridLexiconDecoder:
    """Lexicon (+ LM) search over the phone scores of a hybrid model's pdfs.

    The words searched are the LM's unigrams that have a pronunciation (as in the HLG
    graph: the aligner's lexicon also holds the held-out sets' words, which a decoder must
    not know); without an LM, every word of ``lexicon.txt``. ``lm_weight=0`` searches the
    LM's words without its scores.

    Args:
        lang_dir: ``EXP/lang`` of ``blspeech align-gmm``.
        lm: ARPA file (order >= 2), or None for the lexicon alone.
        num_pdfs: the model's output size (checked against ``hmm.txt``).
        beam, lm_weight, word_score, beam_threshold: as for
            :class:`~blspeech.decoding.lexicon_lm.LexiconLMDecoder`.
    """

    def __init__(self, lang_dir: str | os.PathLike, lm: str | os.PathLike | None, *,
                 num_pdfs: int, beam: int = 32, lm_weight: float = 2.0,
                 word_score: float = 0.0, beam_threshold: float = 50.0) -> None:
        lang = os.fspath(lang_dir)
        phones = read_symbols(os.path.join(lang, PHONES_FILE))[1:]  # without <eps>
        hmms = read_hmms(os.path.join(lang, HMM_FILE))
        self.pdf_phone = self._pdf_phones(phones, hmms, num_pdfs, lang)
        self.phones = PhoneSet(phones)
        lexicon = os.path.join(lang, LEXICON_FILE)
        self.prons = read_prons(lexicon)
        if lm is None:
            words = sorted(self.prons)
        else:
            vocabulary = read_arpa_vocabulary(lm)[0]
            words = sorted(set(vocabulary) & set(self.prons))
            check_spellings(len(words), len(vocabulary),
                            [w for w in vocabulary if w not in self.prons], os.fspath(lm))
        with tempfile.TemporaryDirectory() as tmp:
            # The lexicon's entries for the searched words only (held-out words of the
            # aligner's lexicon stay out, as in the HLG graph).
            searched = os.path.join(tmp, LEXICON_FILE)
            with open(searched, "w", encoding="utf-8") as f:
                f.writelines(f"{w} {' '.join(spelling)}\n" for w in words
                             for p in self.prons[w] for spelling in PhoneSet.spellings(p))
            self._search = LexiconLMDecoder(
                self.phones, lm, lexicon=searched, beam=beam, lm_weight=lm_weight,
                word_score=word_score, beam_threshold=beam_threshold,
                sil_token=SILENCE if SILENCE in phones else None)

    @staticmethod
    def _pdf_phones(phones: Sequence[str], hmms: dict[str, list[int]], num_pdfs: int,
                    lang: str) -> torch.Tensor:
        """Each pdf's phone column (1 + index in ``phones``)."""
        owner = torch.full((num_pdfs,), -1, dtype=torch.long)
        for column, phone in enumerate(phones, 1):
            for pdf in hmms.get(phone, []):
                if not 0 <= pdf < num_pdfs:
                    raise UserError(f"{os.path.join(lang, HMM_FILE)}: phone {phone} has pdf "
                                    f"{pdf}, but the model has {num_pdfs} pdfs: is this the "
                                    "lang dir of the alignments the model was trained on?")
                owner[pdf] = column
        orphans = (owner < 0).nonzero().flatten().tolist()
        if orphans:
            raise UserError(f"{os.path.join(lang, HMM_FILE)} gives no phone for the model's "
                            f"pdfs {orphans[:5]}: is this the lang dir of the alignments "
                            "the model was trained on?")
        return owner

    def phone_scores(self, log_likelihoods: torch.Tensor) -> torch.Tensor:
        """``(T, num_pdfs)`` -> ``(T, tokens)``: each phone's best state (its twin's too),
        the blank never."""
        ll = log_likelihoods.float()
        out = torch.full((ll.shape[0], 1 + self.phones.num_phones), NEVER)
        index = self.pdf_phone.expand(ll.shape[0], -1)
        out = out.scatter_reduce(1, index, ll, reduce="amax", include_self=False)
        return out[:, self.phones.source]

    def decode(self, log_likelihoods: torch.Tensor) -> Hypothesis:
        """One utterance's scaled log-likelihoods ``(T, num_pdfs)`` -> its words and their
        frame spans (phone tokens, silence included, in ``tokens``)."""
        hyp = self._search.decode(self.phone_scores(log_likelihoods))
        hyp.spans = self._word_spans(hyp, log_likelihoods.shape[0])
        return hyp

    def decode_batch(self, log_likelihoods: torch.Tensor, lengths: torch.Tensor
                     ) -> list[Hypothesis]:
        """:meth:`decode` for each utterance of a padded batch ``(B, T, num_pdfs)``."""
        ll = log_likelihoods.detach().cpu()
        return [self.decode(ll[i, : int(n)]) for i, n in enumerate(lengths.tolist())]

    def _word_spans(self, hyp: Hypothesis, frames: int) -> list[tuple[int, int]]:
        """Each word's (first, end) frame: from its first phone after the previous word or
        silence to the end of its word-final twin (a token lasts until the next starts)."""
        ends = [*hyp.frames[1:], frames]
        first_twin = 1 + self.phones.num_phones
        silence = self.phones.tokens.index(SILENCE) if SILENCE in self.phones.tokens else -1
        spans: list[tuple[int, int]] = []
        start = None
        for token, begin, end in zip(hyp.tokens, hyp.frames, ends, strict=True):
            if token == silence:
                continue
            start = begin if start is None else start
            if token >= first_twin:
                spans.append((start, end))
                start = None
        if len(spans) != len(hyp.words or []):  # a path of the lexicon ends each word so
            raise RuntimeError(f"{len(spans)} word ends in the phone path of the words "
                               f"{hyp.words}")
        return spans


__all__ = ["HybridLexiconDecoder", "PhoneSet"]
