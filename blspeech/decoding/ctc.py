"""CTC search over log-probabilities: best path, prefix beam search, word timings, CTM.

Search takes log-probabilities ``(T, V)`` with blank id 0 and returns :class:`Hypothesis`
objects holding token ids, the frame at which each token was emitted (for word times)
and the score:

* :func:`greedy` / :func:`greedy_batch` -- best path (the batch version is vectorized);
* :func:`prefix_beam_search` -- CTC prefix beam search without a language model.

The lexicon + LM search is :mod:`blspeech.decoding.lexicon_lm`; running a model over a data dir is
:mod:`blspeech.inference.decode`.

Example:
    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> lp = torch.log_softmax(torch.randn(50, 8) * 10, dim=-1)  # peaky, like trained CTC
    >>> greedy(lp).tokens == prefix_beam_search(lp, beam=4)[0].tokens
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from blspeech.errors import UserError


@dataclass
class Hypothesis:
    """A decoded utterance: token ids, their emission frames, score, and (LM search) words."""

    tokens: list[int]
    frames: list[int] = field(default_factory=list)  # emission frame of each token
    score: float = 0.0  # log-probability (of the best path for greedy, of the prefix for beam)
    words: list[str] | None = None  # lexicon words (LM search); None: spell from the tokens
    #: each word's (first frame, end frame) where the search knows them without tokens
    #: (WFST search over an HMM's pdfs)
    spans: list[tuple[int, int]] | None = None


def greedy(log_probs: torch.Tensor, blank: int = 0) -> Hypothesis:
    """Best path: argmax per frame, collapse repeats, drop blanks."""
    best = log_probs.argmax(dim=-1)
    score = float(log_probs.gather(-1, best[:, None]).sum())
    tokens, frames, prev = [], [], blank
    for t, tok in enumerate(best.tolist()):
        if tok != blank and tok != prev:
            tokens.append(tok)
            frames.append(t)
        prev = tok
    return Hypothesis(tokens, frames, score)


def greedy_batch(log_probs: torch.Tensor, lengths: torch.Tensor, blank: int = 0
                 ) -> list[Hypothesis]:
    """:func:`greedy` over a padded batch ``(B, T, V)``, vectorized (on the tensors' device).

    Example:
        >>> lp = torch.log_softmax(torch.randn(2, 30, 5) * 5, dim=-1)
        >>> lengths = torch.tensor([30, 17])
        >>> hyps = greedy_batch(lp, lengths)
        >>> hyps[1].tokens == greedy(lp[1, :17]).tokens
        True
    """
    if log_probs.shape[1] == 0:
        return [Hypothesis([], [], 0.0) for _ in range(log_probs.shape[0])]
    best = log_probs.argmax(dim=-1)  # (B, T)
    lengths = lengths.to(best.device)
    valid = torch.arange(best.shape[1], device=best.device)[None] < lengths[:, None]
    frame_scores = log_probs.gather(-1, best[..., None]).squeeze(-1).double()
    scores = frame_scores.masked_fill(~valid, 0.0).sum(dim=1)
    prev = torch.nn.functional.pad(best[:, :-1], (1, 0), value=blank)
    emit = valid & (best != blank) & (best != prev)
    best, emit, scores = best.cpu(), emit.cpu(), scores.cpu().tolist()
    out = []
    for i in range(best.shape[0]):
        frames = emit[i].nonzero().squeeze(1)
        out.append(Hypothesis(best[i, frames].tolist(), frames.tolist(), scores[i]))
    return out


def _logadd(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    m = max(a, b)
    return m + math.log(math.exp(a - m) + math.exp(b - m))


def _merger(table: dict[tuple[int, ...], list]):
    """``add(prefix, pb, pnb, frames)``: sum probabilities of paths reaching one prefix."""

    def add(prefix: tuple[int, ...], pb: float, pnb: float, frames: tuple[int, ...]) -> None:
        old = table.get(prefix)
        if old is None:
            table[prefix] = [pb, pnb, frames]
        else:
            old[0], old[1] = _logadd(old[0], pb), _logadd(old[1], pnb)

    return add


def prefix_beam_search(log_probs: torch.Tensor, beam: int = 8, blank: int = 0,
                       token_prune: int | None = 16, nbest: int = 1) -> list[Hypothesis]:
    """CTC prefix beam search (no language model).

    Each prefix keeps two log-probabilities: of all paths that end in blank and of all
    that end in its last token, so different alignments of one text are summed. With
    ``token_prune`` keeps
    only the most likely tokens of each frame (``None``: all). On the peaky posteriors of
    a trained CTC model, ``beam=1`` gives the greedy result; on flat posteriors the two can
    differ, because a prefix sums the probability of all its alignments.
    """
    if beam < 1:
        raise UserError(f"beam must be >= 1, got {beam}")
    lp = log_probs.float().cpu()
    n_tokens = lp.shape[-1]
    k = n_tokens if token_prune is None else min(token_prune, n_tokens)
    # prefix -> (log p ending in blank, log p ending in non-blank, frames of its tokens)
    beams: dict[tuple[int, ...], tuple[float, float, tuple[int, ...]]] = {(): (0.0, -math.inf, ())}
    for t in range(lp.shape[0]):
        frame = lp[t]
        candidates = frame.topk(k).indices.tolist() if k < n_tokens else range(n_tokens)
        nxt: dict[tuple[int, ...], list] = {}
        add = _merger(nxt)
        for prefix, (pb, pnb, frames) in beams.items():
            total = _logadd(pb, pnb)
            last = prefix[-1] if prefix else None
            for tok in candidates:
                p = float(frame[tok])
                if tok == blank:
                    add(prefix, total + p, -math.inf, frames)
                elif tok == last:
                    add(prefix, -math.inf, pnb + p, frames)  # repeat collapses
                    add(prefix + (tok,), -math.inf, pb + p, frames + (t,))  # blank between
                else:
                    add(prefix + (tok,), -math.inf, total + p, frames + (t,))
        ranked = sorted(nxt.items(), key=lambda kv: _logadd(kv[1][0], kv[1][1]), reverse=True)
        beams = {p: (v[0], v[1], v[2]) for p, v in ranked[:beam]}
    ranked = sorted(beams.items(), key=lambda kv: _logadd(kv[1][0], kv[1][1]), reverse=True)
    return [Hypothesis(list(p), list(v[2]), _logadd(v[0], v[1])) for p, v in ranked[:nbest]]


def word_times(tokens: Sequence[str], frames: Sequence[int], frame_seconds: float,
               word_start: str = "\u2581", end_frames: Sequence[int] | None = None
               ) -> list[tuple[str, float, float]]:
    """``(word, start, duration)`` from emitted token pieces and their frames.

    A word starts at a piece beginning with ``▁`` and lasts until its last piece's frame
    (plus one frame); with ``end_frames`` (the last frame of each piece, as a forced
    alignment knows it) until its last piece's end frame. Blanks are not in ``tokens``.

    Example:
        >>> word_times(["\u2581a", "b", "\u2581c"], [0, 2, 5], 0.25)
        [('ab', 0.0, 0.75), ('c', 1.25, 0.25)]
    """
    ends = frames if end_frames is None else end_frames
    words: list[list] = []
    for piece, frame, end in zip(tokens, frames, ends, strict=True):
        if piece.startswith(word_start) or not words:
            words.append([piece.lstrip(word_start), frame, end])
        else:
            words[-1][0] += piece
            words[-1][2] = end
    out = []
    for text, first, last in words:
        if text:
            out.append((text, first * frame_seconds, (last - first + 1) * frame_seconds))
    return out


def format_ctm(utt: str, words: Sequence[tuple[str, float, float]], channel: str = "1"
               ) -> list[str]:
    """CTM lines ``utt channel start duration word`` (times in seconds, 2 decimals)."""
    return [f"{utt} {channel} {start:.2f} {dur:.2f} {word}" for word, start, dur in words]


def hypothesis_words(hyp: Hypothesis, tokenizer: Any) -> list[str]:
    """The words of a hypothesis: the lexicon words of an LM search, else the detokenized
    token pieces."""
    if hyp.words is not None:
        return list(hyp.words)
    return tokenizer.decode(hyp.tokens).split()


def hypothesis_ctm(utt: str, hyp: Hypothesis, tokenizer: Any, frame_seconds: float
                   ) -> list[str]:
    """CTM lines of one hypothesis; word times come from its tokens' emission frames (or
    from its word ``spans``)."""
    if hyp.spans is not None and hyp.words is not None:
        return format_ctm(utt, [(w, start * frame_seconds, (end - start) * frame_seconds)
                                for w, (start, end) in zip(hyp.words, hyp.spans, strict=True)])
    tokens = tokenizer.tokens
    words = word_times([tokens[t] for t in hyp.tokens], hyp.frames, frame_seconds)
    if hyp.words is not None and len(hyp.words) == len(words):
        # The lexicon's spelling of a word is the tokenizer's, so the pieces group into
        # the same words; name them as the LM search did.
        words = [(w, start, dur) for w, (_, start, dur) in zip(hyp.words, words, strict=True)]
    return format_ctm(utt, words)


__all__ = ["Hypothesis", "format_ctm", "greedy", "greedy_batch", "hypothesis_ctm",
           "hypothesis_words", "prefix_beam_search", "word_times"]
