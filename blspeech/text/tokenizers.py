"""Transcripts and tokens: normalization, character and BPE tokenizers, token lists.

One :class:`TextNormalizer` is stored with every model and applied identically to training
transcripts, references and hypotheses before scoring. Tokenizers reserve id 0 for the
CTC blank (``<blank>``) and id 1 for ``<unk>``; ``▁`` marks word starts (sentencepiece's
convention, used for characters too).

Token lists are written as ``tokens.txt`` with ``token id`` lines (the k2/icefall format).
A tokenizer serializes to a plain dict of strings, ints and bytes (:meth:`to_dict`), so it
can live inside a ``weights_only`` checkpoint and be rebuilt with :func:`tokenizer_from_dict`.

Example:
    >>> norm = TextNormalizer(case="lower", remove_punctuation=True)
    >>> norm("Hello, World!")
    'hello world'
    >>> tok = CharTokenizer.train(["hello world"])
    >>> tok.decode(tok.encode("hello"))
    'hello'
"""

from __future__ import annotations

import os
import re
import tempfile
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from blspeech.errors import UserError
from blspeech.io.fileio import atomic_write

BLANK, UNK, WORD_START = "<blank>", "<unk>", "\u2581"
#: Hesitations as Kaldi's and Hub5's scoring usually drop them.
HESITATIONS = ("uh", "um", "uhm", "er", "ah", "eh", "hm", "hmm", "mm")
_TAG = re.compile(r"\[[^\]\s]*\]|<[^>\s]*>")


@dataclass(frozen=True)
class TextNormalizer:
    """Transcript normalization applied the same way at training and scoring time.

    Args:
        case: ``keep``, ``lower`` or ``upper``.
        remove_punctuation: drop Unicode punctuation except apostrophes inside words
            (``don't`` stays one word).
        unicode_form: Unicode normalization (``NFKC`` folds full-width and ligature forms).
        remove_tags: drop bracketed tokens such as ``[noise]``, ``[laughter]``, ``<unk>``.
        hesitations: words to drop (e.g. ``uh um``), compared after case folding.
    """

    case: str = "keep"
    remove_punctuation: bool = False
    unicode_form: str = "NFKC"
    remove_tags: bool = False
    hesitations: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Compare hesitations the way the text itself is cased.
        folded = tuple(self._fold(h) for h in self.hesitations)
        object.__setattr__(self, "hesitations", folded)
        if self.case not in ("keep", "lower", "upper"):
            raise UserError(f"text normalization case must be keep, lower or upper, "
                            f"got {self.case!r}")

    def _fold(self, word: str) -> str:
        return word.lower() if self.case == "lower" else word.upper() if self.case == "upper" \
            else word

    def __call__(self, text: str) -> str:
        if self.unicode_form:
            text = unicodedata.normalize(self.unicode_form, text)
        if self.remove_tags:
            text = _TAG.sub(" ", text)
        if self.case == "lower":
            text = text.lower()
        elif self.case == "upper":
            text = text.upper()
        if self.remove_punctuation:
            text = "".join(" " if unicodedata.category(c).startswith("P") and c != "'" else c
                           for c in text)
            text = re.sub(r"(^|\s)'+|'+(?=\s|$)", r"\1", text)  # quotes, not apostrophes
        words = text.split()
        if self.hesitations:
            drop = set(self.hesitations)
            words = [w for w in words if w not in drop]
        return " ".join(words)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hesitations"] = list(self.hesitations)  # plain lists survive YAML/JSON/checkpoints
        return d


class Tokenizer:
    """Common interface: ``encode``, ``decode``, ``tokens``, ``vocab_size``, ``blank_id``."""

    blank_id = 0
    unk_id = 1
    kind = "base"

    @property
    def tokens(self) -> list[str]:
        raise NotImplementedError

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def spell(self, word: str) -> list[int] | None:
        """The word's token ids, or None when the model could never emit it: it needs
        ``<unk>`` (characters the tokenizer does not know) or encodes to nothing. The one
        rule every lexicon built from the tokenizer (LM search, WFST graphs) follows."""
        ids = list(self.encode(word))
        if not ids or self.unk_id in ids or self.blank_id in ids:
            return None
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Token ids to text; blanks are ignored (CTC repeats must be collapsed first)."""
        pieces = [self.tokens[i] for i in ids if i != self.blank_id]
        return " ".join("".join(pieces).replace(WORD_START, " ").split())

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def write_tokens(self, path: str | os.PathLike) -> None:
        """Write ``tokens.txt`` (``token id`` per line)."""
        with atomic_write(path) as f:
            for i, tok in enumerate(self.tokens):
                f.write(f"{tok} {i}\n")


class CharTokenizer(Tokenizer):
    """Characters; ``▁`` starts each word. Unknown characters map to ``<unk>``."""

    kind = "char"

    def __init__(self, symbols: Sequence[str]) -> None:
        symbols = list(symbols)
        if symbols[:2] != [BLANK, UNK] or len(set(symbols)) != len(symbols):
            raise UserError("a character token list must start with <blank> <unk> and hold "
                            "no duplicates")
        self._tokens = symbols
        self._index = {s: i for i, s in enumerate(symbols)}

    @classmethod
    def train(cls, texts: Iterable[str]) -> CharTokenizer:
        chars = sorted({c for t in texts for c in t if not c.isspace()})
        return cls([BLANK, UNK, WORD_START, *chars])

    @property
    def tokens(self) -> list[str]:
        return list(self._tokens)

    def encode(self, text: str) -> list[int]:
        ids = []
        for word in text.split():
            ids.append(self._index[WORD_START])
            ids.extend(self._index.get(c, self.unk_id) for c in word)
        return ids

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "tokens": list(self._tokens)}


class BPETokenizer(Tokenizer):
    """sentencepiece BPE with ``<blank>`` at id 0 (sentencepiece's pad) and ``<unk>`` at 1."""

    kind = "bpe"

    def __init__(self, model_proto: bytes) -> None:
        import sentencepiece as spm

        self._proto = bytes(model_proto)
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.LoadFromSerializedProto(self._proto)
        except Exception as e:
            raise UserError(f"not a sentencepiece model: {e}") from e
        if self._sp.pad_id() != 0 or self._sp.unk_id() != 1:
            raise UserError("the sentencepiece model must have pad (blank) id 0 and unk id 1; "
                            "train it with blspeech (BPETokenizer.train)")
        self._tokens = [self._sp.id_to_piece(i) for i in range(self._sp.get_piece_size())]
        self._tokens[0] = BLANK

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, *,
              character_coverage: float = 1.0) -> BPETokenizer:
        """Train on ``texts`` (already normalized); the same input gives the same pieces."""
        import sentencepiece as spm

        lines = [t for t in texts if t.strip()]
        if not lines:
            raise UserError("cannot train a BPE tokenizer on empty text")
        with tempfile.TemporaryDirectory() as tmp:
            corpus = os.path.join(tmp, "text.txt")
            with open(corpus, "w", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
            try:
                spm.SentencePieceTrainer.train(
                    input=corpus, model_prefix=os.path.join(tmp, "bpe"), model_type="bpe",
                    vocab_size=vocab_size, character_coverage=character_coverage,
                    pad_id=0, pad_piece=BLANK, unk_id=1, bos_id=-1, eos_id=-1,
                    num_threads=1, minloglevel=2,
                    hard_vocab_limit=True, split_digits=True)
            except RuntimeError as e:
                raise _bpe_training_error(str(e), vocab_size) from e
            with open(os.path.join(tmp, "bpe.model"), "rb") as f:
                return cls(f.read())

    @property
    def tokens(self) -> list[str]:
        return list(self._tokens)

    def encode(self, text: str) -> list[int]:
        return list(self._sp.encode(text))

    def decode(self, ids: Sequence[int]) -> str:
        return " ".join(self._sp.decode([int(i) for i in ids if i != self.blank_id]).split())

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self._proto}

    def save_model(self, path: str | os.PathLike) -> None:
        """Write the sentencepiece ``.model`` file (usable with sentencepiece directly)."""
        with atomic_write(path, "wb") as f:
            f.write(self._proto)


def _bpe_training_error(message: str, vocab_size: int) -> UserError:
    """sentencepiece's check failure as one line saying which way to change --vocab-size
    (the option of train-tokenizer and of the recipes)."""
    text = (message.strip().splitlines() or [""])[-1]
    too_high = re.search(r"Vocabulary size too high .*<= (\d+)", text)
    if too_high:
        return UserError(f"BPE vocabulary size {vocab_size} is too large for these "
                         f"transcripts (at most {too_high.group(1)} pieces fit); lower "
                         "--vocab-size")
    too_low = re.search(r"smaller than required_chars\. \d+ vs (\d+)", text)
    if too_low:
        return UserError(f"BPE vocabulary size {vocab_size} is too small for these "
                         f"transcripts (their characters need at least {too_low.group(1)}); "
                         "raise --vocab-size")
    text = re.sub(r"^.*\] ", "", text)  # sentencepiece's source location and check
    return UserError(f"BPE training failed (vocab size {vocab_size}): {text}")


def tokenizer_from_dict(d: dict[str, Any]) -> Tokenizer:
    """Inverse of ``Tokenizer.to_dict``."""
    kind = d.get("kind")
    if kind == "char":
        return CharTokenizer(d["tokens"])
    if kind == "bpe":
        return BPETokenizer(d["model"])
    raise UserError(f"unknown tokenizer kind {kind!r}; expected 'char' or 'bpe'")


def train_tokenizer(texts: Iterable[str], kind: str = "bpe", vocab_size: int = 256
                    ) -> Tokenizer:
    """A ``char`` or ``bpe`` tokenizer trained on normalized transcripts."""
    if kind == "char":
        return CharTokenizer.train(texts)
    if kind == "bpe":
        return BPETokenizer.train(texts, vocab_size)
    raise UserError(f"unknown tokenizer kind {kind!r}; expected 'char' or 'bpe'")
