"""Lexicon + word n-gram LM beam search for CTC models (flashlight's decoder via torchaudio).

:class:`LexiconLMDecoder` wraps ``torchaudio.models.decoder.ctc_decoder`` (flashlight-text's
``LexiconDecoder`` with KenLM reading an ARPA file). Its search walks a trie of word
spellings; every hypothesis is a sequence of lexicon words scored by the acoustic
log-probabilities plus ``lm_weight`` x the LM's log10 probability plus ``word_score`` per
word.

**Word boundaries.** Flashlight completes a word when its last spelling token is
consumed and then sits at the trie root, where the only token it can repeat is the
silence token. Our tokenizers mark word *starts* (``▁``) instead, so spellings are built
so that this works:

* Character tokenizers have ``▁`` as a token of its own (``▁ h e l l o``). The spelling of
  a word is its letters followed by ``▁`` (``h e l l o ▁``): the ``▁`` that starts the
  next word ends this one, and ``▁`` is the silence token, so the root may repeat it
  (CTC repeats of ``▁`` and a leading ``▁`` are exact). The last word has no following
  ``▁``: one extra frame where only ``▁`` is possible (log-probability 0) is appended to
  each utterance, which ends it without adding any acoustic score.
* BPE tokenizers fuse ``▁`` into the first piece of each word (``▁he llo``), so the
  spelling is the tokenizer's own pieces and word boundaries are implicit: a new word
  can only begin with a ``▁`` piece. The silence token is an extra column that the model
  never emits. Limitation (flashlight's): when a word's *last* piece is emitted on two
  consecutive frames without a blank, the second frame must be explained as a blank, which
  costs that frame's ``log p(blank) - log p(piece)``; trained CTC models rarely emit a
  piece twice in a row, and all hypotheses ending in that piece pay the same.

KenLM refuses unigram-only ARPA files: use order 2 or more (``blspeech train-lm``).
Without an LM (``lm=None``) the search is constrained to the lexicon's words only, each
scored by ``word_score``: the lexicon's own contribution, measured apart from the LM's.

Example:
    >>> dec = LexiconLMDecoder(tokenizer, "data/lm/3gram.arpa", beam=32)  # doctest: +SKIP
    >>> dec.decode(log_probs).words                                        # doctest: +SKIP
    ['call', 'me', 'now']
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from typing import IO, Any

import torch

from blspeech.errors import UserError

WORD_START = "\u2581"
#: Log-probability of columns/frames the search must never use (finite: no inf arithmetic).
NEVER = -1e9
_LM_SPECIALS = ("<s>", "</s>", "<unk>")


def _open_text(path: str) -> IO[str]:
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def read_arpa_vocabulary(path: str | os.PathLike) -> tuple[list[str], int]:
    """The words (unigrams without ``<s> </s> <unk>``) and the order of an ARPA file.

    Example:
        >>> words, order = read_arpa_vocabulary("data/lm/3gram.arpa")   # doctest: +SKIP
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"language model {path} not found")
    counts: dict[int, int] = {}
    words: list[str] = []
    section = None
    try:
        with _open_text(path) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                if line.startswith("\\"):
                    section = line
                    if section == "\\2-grams:":  # the unigrams are all we read
                        break
                    continue
                if section == "\\data\\":
                    m = re.fullmatch(r"ngram\s+(\d+)\s*=\s*(\d+)", line)
                    if m:
                        counts[int(m.group(1))] = int(m.group(2))
                elif section == "\\1-grams:":
                    parts = line.split()
                    if len(parts) >= 2 and parts[1] not in _LM_SPECIALS:
                        words.append(parts[1])
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read language model {path}: {e}") from e
    if not counts:
        raise UserError(f"{path} is not an ARPA language model (no \\data\\ section with "
                        "'ngram N=count' lines)")
    return words, max(counts)


def read_lexicon(path: str | os.PathLike) -> dict[str, list[list[str]]]:
    """``word [piece ...]`` lines -> ``{word: [spelling, ...]}`` (empty: spell it yourself).

    A line holding only a word asks for the tokenizer's spelling of it; several lines for
    one word give alternative spellings.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"lexicon {path} not found")
    lexicon: dict[str, list[list[str]]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            spellings = lexicon.setdefault(parts[0], [])
            if len(parts) > 1:
                spellings.append(parts[1:])
    if not lexicon:
        raise UserError(f"lexicon {path} is empty")
    return lexicon


def check_spellings(spelled: int, total: int, skipped: Sequence[str], source: str) -> None:
    """The lexicon's one rule for words the tokens cannot spell: left out with a warning
    naming them, and a UserError when none is left (LM search and WFST graph alike)."""
    if not spelled:
        raise UserError(f"none of the {total} words of {source} can be spelled with the "
                        "model's tokens; was the LM trained on text normalized like the "
                        "model's transcripts ('blspeech train-lm --tokenizer-dir')?")
    if skipped:
        shown = ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        warnings.warn(f"{len(skipped)} of {total} words of {source} cannot be spelled with "
                      f"the model's tokens and are left out: {shown}", stacklevel=3)


def build_spellings(tokenizer: Any, lexicon: dict[str, list[list[str]]]
                    ) -> tuple[dict[str, list[list[str]]], bool, list[str]]:
    """Flashlight spellings for every word, whether ``▁`` ends words, and skipped words.

    Words that need ``<unk>`` (characters the tokenizer does not know) or pieces that are
    not tokens are skipped: the model could never spell them.
    """
    tokens = tokenizer.tokens
    known = set(tokens)
    unk = tokens[tokenizer.unk_id]
    spelled: dict[str, list[list[str]]] = {}
    for word, given in lexicon.items():
        ids = None if given else tokenizer.spell(word)
        spellings = given or ([[tokens[i] for i in ids]] if ids else [])
        spelled[word] = [s for s in spellings if s and unk not in s and known.issuperset(s)]
    # '▁' is a token of its own in every spelling (character tokenizers): it can end words.
    marker = WORD_START in known and all(s[0] == WORD_START and len(s) > 1
                                         for ss in spelled.values() for s in ss)
    out: dict[str, list[list[str]]] = {}
    for word, spellings in spelled.items():
        if marker:
            spellings = [[*s[1:], WORD_START] for s in spellings]
        unique = list(dict.fromkeys(tuple(s) for s in spellings))
        if unique:
            out[word] = [list(s) for s in unique]
    skipped = [w for w in lexicon if w not in out]
    return out, marker, skipped


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[IO[str]]:
    """Collect what C++ code (KenLM) prints on file descriptor 2 instead of showing it."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield capture
        finally:
            os.dup2(saved, 2)
            os.close(saved)


class LexiconLMDecoder:
    """CTC beam search over lexicon words with an ARPA n-gram LM (see the module notes).

    Args:
        tokenizer: the model's tokenizer (its token list is the model's output layout).
        lm: ARPA file (order >= 2); None: no LM, words of ``lexicon`` in any order.
        lexicon: optional ``word [piece ...]`` file; default: the LM's unigrams, each
            spelled by ``tokenizer``.
        sil_token: a token of the model that is silence between words (a phone set's
            silence phone); default: ``▁`` where it ends words, else a column never emitted.
        beam: hypotheses kept per frame.
        lm_weight: weight of the LM's log10 probabilities.
        word_score: added per word (positive favours more words).
        token_prune: tokens considered per frame (None: all).
        beam_threshold: drop hypotheses this far below the best one.
    """

    def __init__(self, tokenizer: Any, lm: str | os.PathLike | None, *,
                 lexicon: str | os.PathLike | None = None, beam: int = 32,
                 lm_weight: float = 2.0, word_score: float = 0.0,
                 token_prune: int | None = None, beam_threshold: float = 50.0,
                 sil_token: str | None = None) -> None:
        if lm is None and lexicon is None:
            raise UserError("lexicon search needs an ARPA LM, a lexicon, or both")
        if lm is not None:
            lm = os.fspath(lm)
            vocab, order = read_arpa_vocabulary(lm)
            if order < 2:
                raise UserError(f"{lm} is a unigram model; KenLM (used for LM decoding) needs "
                                "order 2 or more: 'blspeech train-lm TEXT OUT.arpa --order 3'")
        if lexicon is not None:
            entries = read_lexicon(lexicon)
            source = os.fspath(lexicon)
        else:
            entries = {w: [] for w in vocab}
            source = f"the unigrams of {lm}"
        spellings, self.marker_mode, skipped = build_spellings(tokenizer, entries)
        check_spellings(len(spellings), len(entries), skipped, source)
        self.words = sorted(spellings)
        self.tokenizer = tokenizer
        self.vocab_size = tokenizer.vocab_size
        tokens = list(tokenizer.tokens)
        if sil_token is not None:
            if sil_token not in tokens:
                raise UserError(f"silence token {sil_token!r} is not one of the model's tokens")
            self.sil_token = sil_token
        elif self.marker_mode:
            self.sil_token = WORD_START
        else:
            self.sil_token = "<sil>"
            while self.sil_token in tokens:
                self.sil_token = "<" + self.sil_token + ">"
            tokens.append(self.sil_token)
        self._num_columns = len(tokens)
        self._marker_id = tokens.index(WORD_START) if self.marker_mode else -1
        self._decoder = self._build(tokens, spellings, lm, beam, lm_weight, word_score,
                                    token_prune, beam_threshold)

    def _build(self, tokens: list[str], spellings: dict[str, list[list[str]]], lm: str | None,
               beam: int, lm_weight: float, word_score: float, token_prune: int | None,
               beam_threshold: float) -> Any:
        try:
            from torchaudio.models.decoder import ctc_decoder
        except ImportError as e:  # flashlight-text missing
            raise UserError(f"LM decoding needs flashlight-text (pip install "
                            f"flashlight-text==0.0.7): {e}") from e
        if beam < 1:
            raise UserError(f"beam must be >= 1, got {beam}")
        with tempfile.TemporaryDirectory() as tmp:
            lexicon_path = os.path.join(tmp, "lexicon.txt")
            with open(lexicon_path, "w", encoding="utf-8") as f:
                for word in self.words:
                    for spelling in spellings[word]:
                        f.write(f"{word}\t{' '.join(spelling)}\n")
            with _quiet_stderr() as err:
                try:
                    return ctc_decoder(
                        lexicon=lexicon_path, tokens=tokens, lm=lm, nbest=1, beam_size=beam,
                        beam_size_token=min(token_prune or len(tokens), len(tokens)),
                        beam_threshold=beam_threshold, lm_weight=lm_weight,
                        word_score=word_score, blank_token=tokens[0],
                        sil_token=self.sil_token, unk_word="<unk>")
                except (RuntimeError, ValueError) as e:
                    err.seek(0)
                    lines = [x for x in (str(e) + "\n" + err.read()).splitlines() if x.strip()]
                    # KenLM's message: a source location line, then what is wrong.
                    reason = next((x for x in lines[1:] if "Loading the LM" not in x),
                                  lines[0] if lines else type(e).__name__)
                    raise UserError(f"cannot load language model {lm}: {reason.strip()}"
                                    ) from e

    def decode(self, log_probs: torch.Tensor) -> Any:
        """One utterance's ``(T, V)`` log-probabilities ->
        :class:`~blspeech.decoding.ctc.Hypothesis` with ``words`` set and token frames for
        word times."""
        from blspeech.decoding.ctc import Hypothesis

        lp = log_probs.detach().float().cpu()
        if lp.dim() != 2 or lp.shape[1] != self.vocab_size:
            raise ValueError(f"expected log-probabilities (T, {self.vocab_size}), got "
                             f"{tuple(lp.shape)}")
        frames = lp.shape[0]
        extra = 1 if self.marker_mode else 0
        emissions = torch.full((frames + extra, self._num_columns), NEVER)
        emissions[:frames, : self.vocab_size] = lp
        if self.marker_mode:
            emissions[frames, self._marker_id] = 0.0  # ends the last word
        emissions = emissions.contiguous()
        results = self._decoder.decoder.decode(emissions.data_ptr(), emissions.shape[0],
                                               emissions.shape[1])
        if not results:
            return Hypothesis([], [], -float("inf"), [])
        best = results[0]
        # The path has one token per frame, after the start state and before the end one.
        path = list(best.tokens)[1: frames + 1]
        tokens, times, prev = [], [], 0
        for t, tok in enumerate(path):
            if tok != 0 and tok != prev and tok < self.vocab_size:
                tokens.append(int(tok))
                times.append(t)
            prev = tok
        words = [self._decoder.word_dict.get_entry(w) for w in best.words if w >= 0]
        return Hypothesis(tokens, times, float(best.score), words)

    def decode_batch(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[Any]:
        """:meth:`decode` for each utterance of a padded batch ``(B, T, V)``."""
        lp = log_probs.detach().float().cpu()
        return [self.decode(lp[i, : int(n)]) for i, n in enumerate(lengths.tolist())]


__all__ = ["LexiconLMDecoder", "build_spellings", "check_spellings", "read_arpa_vocabulary",
           "read_lexicon"]
