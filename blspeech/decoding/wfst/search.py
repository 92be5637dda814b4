"""Decoding CTC log-probabilities with a TLG graph and Kaldi's decoders (kaldi-decoder).

:class:`WfstDecoder` reads a graph dir (:func:`blspeech.decoding.wfst.graph.make_graph`)
and searches each utterance's ``(T, V)`` log-probabilities with Kaldi's ``FasterDecoder``
(``decoder="faster"``: beam and max-active pruning, 1-best) or ``LatticeSimpleDecoder``
(``decoder="lattice"``: lattice beam, no max-active; its 1-best is the same search
without the max-active limit, slower). The cost of a path is
``graph cost - acoustic_scale x log-probabilities``: the graph cost is the LM's -ln
probability, so ``1 / acoustic_scale`` is the LM weight of Kaldi's 1-best scoring; tune
``acoustic_scale`` (and ``word_penalty``, added to the graph cost of every word) on a dev
set.

The 1-best path has one input label per frame (token id + 1): the tokens and their first
frames come from collapsing it as CTC does, the words from its output labels, so word
times for the CTM follow from the tokens' frames (a word starts at its ``▁`` piece).

**No final state.** When the search ends with no hypothesis in a final state of the
graph (pruned away, or too few frames for any word sequence), the best partial path is
returned as Kaldi's decoders do, its hypothesis has ``reached_final=False``,
:attr:`WfstDecoder.partial` lists it, and :meth:`WfstDecoder.decode` warns naming the
utterance when given its name (:func:`blspeech.inference.decode.decode_data_dir` warns
once for all such utterances of a data dir and lists them in its summary).

Example:
    >>> dec = WfstDecoder("data/graph_bpe128", tokenizer, acoustic_scale=1.0)  # doctest: +SKIP
    >>> dec.decode(log_probs, utt="utt1").words                                 # doctest: +SKIP
    ['call', 'me', 'now']
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from blspeech.decoding.ctc import Hypothesis
from blspeech.decoding.wfst.graph import (
    HLG_FILE,
    INFO_FILE,
    TLG_FILE,
    TOKENS_FILE,
    WORDS_FILE,
    import_wfst,
    read_symbols,
)
from blspeech.errors import UserError

DECODERS = ("faster", "lattice")


@dataclass
class WfstHypothesis(Hypothesis):
    """A :class:`Hypothesis` that says whether the search ended in a final state."""

    reached_final: bool = True


def _check_search_options(acoustic_scale: float, beam: float, lattice_beam: float,
                          max_active: int, min_active: int) -> None:
    if not acoustic_scale > 0:
        raise UserError(f"acoustic_scale must be > 0, got {acoustic_scale}")
    if not beam > 0 or not lattice_beam > 0:
        raise UserError(f"beam and lattice_beam must be > 0, got {beam}, {lattice_beam}")
    if max_active < 1 or min_active < 0:
        raise UserError(f"max_active must be >= 1 and min_active >= 0, got {max_active}, "
                        f"{min_active}")


def _read_graph(kaldifst: Any, path: str) -> Any:
    """The decoding graph at ``path``, or one clear error."""
    if not os.path.isfile(path):
        raise UserError(f"{path} not found; build the graph with 'blspeech mkgraph'")
    try:
        fst = kaldifst.StdVectorFst.read(path)
    except Exception as e:
        raise UserError(f"cannot read {path}: {e}") from e
    if fst is None or fst.num_states == 0:
        raise UserError(f"{path} is not an OpenFst graph or is empty; rebuild it with "
                        "'blspeech mkgraph'")
    return fst


class WfstDecoder:
    """1-best WFST search of CTC log-probabilities over a TLG graph dir, or of a hybrid
    model's pdf log-likelihoods over an HLG graph dir (:mod:`blspeech.decoding.wfst.hlg`).

    Args:
        graph_dir: dir with ``TLG.fst`` or ``HLG.fst``, ``words.txt``, ``tokens.txt``
            (``blspeech mkgraph``).
        tokenizer: a CTC model's tokenizer; its tokens must be the graph's (checked).
            None: trust the graph's ``tokens.txt``.
        num_pdfs: a hybrid model's pdfs; the graph must be an HLG over as many (checked).
        acoustic_scale: weight of the log-probabilities against the graph's -ln costs.
        beam: search beam (cost units of the scaled scores).
        max_active: most hypotheses kept per frame (``faster`` only).
        min_active: fewest hypotheses kept per frame (``faster`` only).
        lattice_beam: lattice beam (``lattice`` only).
        word_penalty: cost added per word (positive: fewer words).
        decoder: ``faster`` (FasterDecoder) or ``lattice`` (LatticeSimpleDecoder).
    """

    def __init__(self, graph_dir: str | os.PathLike, tokenizer: Any = None, *,
                 num_pdfs: int | None = None, acoustic_scale: float = 1.0, beam: float = 16.0,
                 max_active: int = 7000,
                 min_active: int = 200, lattice_beam: float = 8.0, word_penalty: float = 0.0,
                 decoder: str = "faster") -> None:
        kaldifst, _ = import_wfst()
        try:
            import kaldi_decoder
        except ImportError as e:
            raise UserError(f"WFST decoding needs kaldi-decoder (pip install -e '.[wfst]'): "
                            f"{e}") from e
        self._kd = kaldi_decoder
        if decoder not in DECODERS:
            raise UserError(f"decoder must be one of {', '.join(DECODERS)}, got {decoder!r}")
        _check_search_options(acoustic_scale, beam, lattice_beam, max_active, min_active)
        graph_dir = os.fspath(graph_dir)
        self.graph_dir = graph_dir
        self.words = read_symbols(os.path.join(graph_dir, WORDS_FILE))
        graph_tokens = read_symbols(os.path.join(graph_dir, TOKENS_FILE))
        # tokens.txt: the tokenizer's tokens, then the disambiguation symbols #0..#K.
        self.vocab_size = len(graph_tokens)
        while self.vocab_size and _is_disambig(graph_tokens[self.vocab_size - 1]):
            self.vocab_size -= 1
        self.tokens = graph_tokens[: self.vocab_size]
        self.hybrid = _graph_kind(graph_dir) == "hybrid"
        self._check_model(tokenizer, num_pdfs)
        fst = _read_graph(kaldifst, os.path.join(graph_dir,
                                                 HLG_FILE if self.hybrid else TLG_FILE))
        if word_penalty:
            from blspeech.decoding.wfst.graph import _mapped

            fst = _mapped(fst, lambda i, o, w: (i, o, w + word_penalty if o else w))
        self._fst = fst  # the decoder keeps a reference to it: keep it alive
        self.acoustic_scale = float(acoustic_scale)
        self.word_penalty = float(word_penalty)
        self.decoder = decoder
        if decoder == "faster":
            opts = kaldi_decoder.FasterDecoderOptions(beam=beam, max_active=max_active,
                                                      min_active=min_active)
            self._decoder = kaldi_decoder.FasterDecoder(fst, opts)
        else:
            cfg = kaldi_decoder.LatticeSimpleDecoderConfig(beam=beam, lattice_beam=lattice_beam)
            self._decoder = kaldi_decoder.LatticeSimpleDecoder(fst, cfg)
        #: utterances (or ``#index`` when unnamed) whose search reached no final state
        self.partial: list[str] = []
        self._count = 0

    def _check_model(self, tokenizer: Any, num_pdfs: int | None) -> None:
        """The graph must be of this model's kind and output layout."""
        graph_dir = self.graph_dir
        if self.hybrid != (num_pdfs is not None):
            built, used = ("a hybrid model's pdfs", "a CTC model") if self.hybrid else (
                "a CTC model's tokens", "a hybrid model")
            raise UserError(f"{graph_dir} was built for {built}; it cannot decode {used}: "
                            "build a graph for this model with 'blspeech mkgraph'")
        if num_pdfs is not None and num_pdfs != self.vocab_size:
            raise UserError(f"{graph_dir} was built for {self.vocab_size} pdfs, the model has "
                            f"{num_pdfs}; build the graph from the aligner that made the "
                            "model's targets")
        if tokenizer is not None and list(tokenizer.tokens) != self.tokens:
            raise UserError(f"{graph_dir} was built for other tokens than the model's "
                            f"({self.vocab_size} graph tokens, {len(tokenizer.tokens)} model "
                            "tokens or a different order); rebuild it with 'blspeech mkgraph' "
                            "and the model's tokenizer dir")

    def decode(self, log_probs: torch.Tensor, utt: str | None = None) -> WfstHypothesis:
        """One utterance's ``(T, V)`` log-probabilities -> its 1-best
        :class:`WfstHypothesis` (words, tokens and their first frames, score)."""
        self._count += 1
        name = utt if utt is not None else f"#{self._count}"
        lp = log_probs.detach().float().cpu()
        if lp.dim() != 2 or lp.shape[1] != self.vocab_size:
            raise ValueError(f"expected log-probabilities (T, {self.vocab_size}), got "
                             f"{tuple(lp.shape)}")
        if lp.shape[0] == 0:
            return WfstHypothesis([], [], 0.0, [])
        feats = (lp * self.acoustic_scale).numpy()
        decodable = self._kd.DecodableCtc(feats)
        if self.decoder == "faster":
            self._decoder.decode(decodable)
            reached = bool(self._decoder.reached_final())
        else:
            self._decoder.decode(decodable)
            reached = math.isfinite(self._decoder.final_relative_cost())
        ok, best = self._decoder.get_best_path(use_final_probs=reached)
        if not ok:
            self.partial.append(name)
            if utt is not None:
                warnings.warn(f"utterance {name}: the WFST search kept no hypothesis at all "
                              "(beam too small?); its hypothesis is empty", stacklevel=2)
            return WfstHypothesis([], [], -math.inf, [], reached_final=False)
        import kaldifst

        ok, ilabels, olabels, weight = kaldifst.get_linear_symbol_sequence(best)
        spans = _word_spans(best, len(ilabels)) if self.hybrid else None
        if not reached:
            self.partial.append(name)
        if not reached and utt is not None:
            warnings.warn(f"utterance {name}: the WFST search reached no final state of the "
                          "graph (too few frames for the words, or the beam pruned them "
                          "all); using the best partial path", stacklevel=2)
        tokens, frames, prev = [], [], 0
        for t, label in enumerate([] if self.hybrid else ilabels):
            tok = label - 1
            if tok != 0 and tok != prev:
                tokens.append(tok)
                frames.append(t)
            prev = tok
        words = [self.words[o] for o in olabels]
        score = -(weight.value1 + weight.value2)
        return WfstHypothesis(tokens, frames, score, words, spans, reached_final=reached)

    def decode_batch(self, log_probs: torch.Tensor, lengths: torch.Tensor,
                     utts: list[str] | None = None) -> list[WfstHypothesis]:
        """:meth:`decode` for each utterance of a padded batch ``(B, T, V)``."""
        lp = log_probs.detach().float().cpu()
        names = utts if utts is not None else [None] * lp.shape[0]
        return [self.decode(lp[i, : int(n)], names[i])
                for i, n in enumerate(lengths.tolist())]


def _graph_kind(graph_dir: str) -> str:
    """``graph.json``'s kind (graphs from before there were hybrid graphs: ``ctc``)."""
    import json

    path = os.path.join(graph_dir, INFO_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            return str(json.load(f).get("kind", "ctc"))
    except FileNotFoundError:
        return "ctc"
    except (ValueError, AttributeError) as e:
        raise UserError(f"{path} is not a graph.json of 'blspeech mkgraph': {e}") from e


def _word_spans(path: Any, num_frames: int) -> list[tuple[int, int]]:
    """Each output word's (first frame, end frame) on a linear best path: a word starts at
    the frame of the arc that outputs it (or the next frame with input) and ends where the
    next word starts (the last word: at the last frame)."""
    # The wheel iterates no Lattice arcs from Python; its text form lists them.
    arcs = {}
    for line in path.to_str().splitlines():
        f = line.split()
        if len(f) >= 4:
            arcs[int(f[0])] = (int(f[1]), int(f[2]), int(f[3]))
    starts, t, state = [], 0, path.start
    for _ in range(len(arcs)):
        if state not in arcs:
            break
        state, ilabel, olabel = arcs[state]
        if olabel:
            starts.append(t)
        if ilabel:
            t += 1
    ends = [*starts[1:], num_frames]
    return [(min(s, num_frames), e) for s, e in zip(starts, ends, strict=True)]


def _is_disambig(token: str) -> bool:
    return token.startswith("#") and token[1:].isdigit()


__all__ = ["DECODERS", "WfstDecoder", "WfstHypothesis"]
