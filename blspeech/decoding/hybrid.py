"""Decoding hybrid models trained on the token topology (:mod:`blspeech.data.alignments`).

:func:`viterbi_token_loop` finds the best state sequence through a free loop of token HMMs,
with a token insertion penalty and no lexicon or LM: the hybrid counterpart of greedy CTC
decoding, so it compares the two heads on equal terms. Hybrid models over a GMM's pdfs
decode with an HLG graph (:mod:`blspeech.decoding.wfst`) or the lexicon search of
:mod:`blspeech.decoding.hybrid_lm`.
"""

from __future__ import annotations

import math

import torch


def viterbi_token_loop(log_likes: torch.Tensor, insertion_penalty: float = 0.0
                       ) -> tuple[list[int], list[int]]:
    """Best path through a free loop of token HMMs; ``(tokens, first frames)``.

    ``log_likes`` is ``(T, 2V - 1)``: per-frame log-likelihoods of the token topology's
    pdfs. Each token entered costs ``insertion_penalty`` (higher: fewer, longer tokens).
    Exact Viterbi in ``O(T x V)``: every first-frame state has the same best predecessor,
    the best state of the previous frame.

    Example:
        >>> ll = torch.full((5, 5), -9.0)   # V = 3: silence, tokens 1 and 2
        >>> for t, pdf in enumerate([0, 1, 2, 1, 3]):
        ...     ll[t, pdf] = 0.0
        >>> viterbi_token_loop(ll)          # token 1 twice (its first-frame pdf again), then 2
        ([1, 1, 2], [1, 3, 4])
    """
    ll = log_likes.detach().float().cpu()
    frames, pdfs = ll.shape
    if pdfs % 2 == 0:
        raise ValueError(f"the token topology has an odd number of pdfs, got {pdfs}")
    if frames == 0:
        return [], []
    first_ll, rest_ll, sil_ll = ll[:, 1::2], ll[:, 2::2], ll[:, 0]
    sil = sil_ll[0].clone()
    first = first_ll[0] - insertion_penalty
    rest = torch.full_like(first, -math.inf)
    best_prev = torch.zeros(frames, dtype=torch.long)   # argmax state of frame t - 1
    rest_from_first = torch.zeros(frames, first.numel(), dtype=torch.bool)
    v = first.numel()
    for t in range(1, frames):
        # State order for the argmax: 0 silence, 1..v first frames, v+1..2v later frames.
        stacked = torch.cat([sil.view(1), first, rest])
        best, arg = stacked.max(0)
        best_prev[t] = arg
        from_first = first > rest
        rest_from_first[t] = from_first
        rest = torch.where(from_first, first, rest) + rest_ll[t]
        first = best - insertion_penalty + first_ll[t]
        sil = best + sil_ll[t]
    state = int(torch.cat([sil.view(1), first, rest]).argmax())
    tokens: list[int] = []
    starts: list[int] = []
    for t in range(frames - 1, -1, -1):
        if 1 <= state <= v:            # the first frame of token `state`
            tokens.append(state)
            starts.append(t)
            state = int(best_prev[t]) if t else 0
        elif state > v:                # a later frame of token state - v
            k = state - v - 1
            state = k + 1 if bool(rest_from_first[t, k]) else state
        else:
            state = int(best_prev[t]) if t else 0
    return tokens[::-1], starts[::-1]


__all__ = ["viterbi_token_loop"]
