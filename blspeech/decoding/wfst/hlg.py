"""An HLG decoding graph for hybrid models whose targets are a monophone HMM's pdfs.

``HLG = H o min(det(L o G))``: what Kaldi's HCLG is for a monophone system (no context, so
no C), built with kaldifst from the files ``blspeech align-gmm`` writes to ``EXP/lang``:

* **H** -- each phone's HMM over its pdfs (``hmm.txt``: ``phone pdf ...``, one line a
  phone, states in order) at the *model's* frame rate. The hybrid head predicts the
  aligner's pdf every ``subsampling`` feature frames (40 ms for the mini encoders), so a
  short phone may show only some of its states: a phone may be entered at any of its
  states, moves forward (silence: to any of its states), may stay (self-loops) and leave
  from any state. Entering a phone outputs it. Input labels are pdf + 1 (0 is epsilon),
  as :class:`kaldi_decoder.DecodableCtc` reads column ``label - 1``. Transitions cost
  nothing: the log-likelihoods decide (Kaldi's ``--transition-scale`` is small too).
* **L** -- the pronunciations of ``lexicon.txt`` (``word phone ...``) of the LM's words, with
  optional silence between words (cost ``-ln silence_prob`` each time) and Kaldi's
  disambiguation symbols.
* **G** -- the ARPA word n-gram (kaldilm), as for the CTC graph.

``H o LG`` is not determinized: a phone repeated across a word boundary reads the same as
one longer phone, so the composition is not functional (Kaldi removes self-loops before
determinizing and adds them back; a monophone graph of a small LM is small enough to
search as composed). Words of the LM without a pronunciation are left out with a warning.
The graph dir holds ``HLG.fst``, ``words.txt``, ``tokens.txt`` (``pdf0 .. pdfN-1`` then the
disambiguation symbols) and ``graph.json`` (kind ``hybrid``).

Example:
    >>> make_hlg("exp/mono/lang", "data/lm/3gram.arpa", "exp/mono/graph")  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from blspeech.decoding.lexicon_lm import check_spellings
from blspeech.decoding.wfst.graph import (
    HLG_FILE,
    GraphInfo,
    build_graph,
    disambiguate_prons,
    import_wfst,
    lm_words,
    loop_lexicon_fst,
    read_symbols,
    word_symbols,
)
from blspeech.errors import UserError

HMM_FILE = "hmm.txt"
LEXICON_FILE = "lexicon.txt"
PHONES_FILE = "phones.txt"
SILENCE = "SIL"


def read_hmms(path: str | os.PathLike) -> dict[str, list[int]]:
    """``hmm.txt`` (``phone pdf ...`` lines) -> ``{phone: [pdf of each state]}``."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"{path} not found; it is written by 'blspeech align-gmm' (EXP/lang)")
    out: dict[str, list[int]] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 2 or not all(p.isdigit() for p in parts[1:]) or parts[0] in out:
                raise UserError(f"{path} line {n}: expected 'phone pdf ...' once per phone, "
                                f"got {line.strip()!r}")
            out[parts[0]] = [int(p) for p in parts[1:]]
    return out


def read_prons(path: str | os.PathLike) -> dict[str, list[list[str]]]:
    """Kaldi's ``lexicon.txt`` (``word phone ...``) -> ``{word: [pronunciation, ...]}``."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"{path} not found; it is written by 'blspeech align-gmm' (EXP/lang)")
    out: dict[str, list[list[str]]] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if len(parts) == 1:
                raise UserError(f"{path} line {n}: word {parts[0]!r} has no phones")
            if parts:
                out.setdefault(parts[0], []).append(parts[1:])
    return out


def hmm_topology(hmms: Sequence[Sequence[int]], silence: Sequence[int], num_pdfs: int,
                 num_disambig: int) -> Any:
    """H: phone ``i + 1``'s states have the pdfs ``hmms[i]``; the phones in ``silence``
    (ids) are ergodic. Disambiguation self-loops at the start state map input
    ``num_pdfs + 1 + k`` to output ``len(hmms) + 1 + k`` (L's ``#k``)."""
    import kaldifst

    h = kaldifst.StdVectorFst()
    start = h.add_state()
    h.start = start
    h.set_final(start, 0.0)
    for phone, pdfs in enumerate(hmms, 1):
        states = [h.add_state() for _ in pdfs]
        for j, (state, pdf) in enumerate(zip(states, pdfs, strict=True)):
            h.add_arc(start, kaldifst.StdArc(pdf + 1, phone, 0.0, state))
            h.add_arc(state, kaldifst.StdArc(0, 0, 0.0, start))
            targets = range(len(pdfs)) if phone in silence else range(j, len(pdfs))
            for k in targets:
                h.add_arc(state, kaldifst.StdArc(pdfs[k] + 1, 0, 0.0, states[k]))
    for k in range(num_disambig):
        h.add_arc(start, kaldifst.StdArc(num_pdfs + 1 + k, len(hmms) + 1 + k, 0.0, start))
    return h


def make_hlg(lang_dir: str | os.PathLike, arpa: str | os.PathLike,
             graph_dir: str | os.PathLike, *, max_order: int | None = None,
             silence_prob: float = 0.5) -> GraphInfo:
    """Build ``HLG.fst``, ``words.txt``, ``tokens.txt`` and ``graph.json`` in ``graph_dir``
    from ``lang_dir`` (``phones.txt``, ``lexicon.txt``, ``hmm.txt`` of ``blspeech
    align-gmm``) and the ARPA LM; ``silence_prob``: of a silence between two words."""
    import_wfst()
    if not 0 < silence_prob < 1:
        raise UserError(f"silence_prob must be between 0 and 1, got {silence_prob}")
    lang, arpa = os.fspath(lang_dir), os.fspath(arpa)
    phones = read_symbols(os.path.join(lang, PHONES_FILE))[1:]  # without <eps>
    phone_ids = {p: i for i, p in enumerate(phones, 1)}
    hmm_table = read_hmms(os.path.join(lang, HMM_FILE))
    missing = [p for p in phones if p not in hmm_table]
    if missing:
        raise UserError(f"{os.path.join(lang, HMM_FILE)} has no HMM for the phones "
                        f"{' '.join(missing)} of {os.path.join(lang, PHONES_FILE)}")
    num_pdfs = 1 + max(pdf for p in phones for pdf in hmm_table[p])
    words, order = lm_words(arpa, max_order)
    prons, skipped = _lm_prons(read_prons(os.path.join(lang, LEXICON_FILE)), words, phone_ids)
    check_spellings(len({w for w, _ in prons}), len(words), skipped, arpa)
    disambig = disambiguate_prons([p for _, p in prons])
    num_disambig = max(disambig) + 1
    symbols = word_symbols(words)
    ids = {w: i for i, w in enumerate(symbols)}
    lex = loop_lexicon_fst([(ids[w], p) for w, p in prons], disambig, len(phones) + 1,
                           ids["#0"], silence=phone_ids.get(SILENCE),
                           silence_cost=-math.log(silence_prob))
    topo = hmm_topology([hmm_table[p] for p in phones],
                        [phone_ids[SILENCE]] if SILENCE in phone_ids else [], num_pdfs,
                        num_disambig)
    info = GraphInfo(arpa=arpa, order=order, vocab_size=num_pdfs,
                     words=len({w for w, _ in prons}), disambig=num_disambig, tlg_states=0,
                     tlg_arcs=0, skipped=skipped, kind="hybrid")
    return build_graph(graph_dir, info, symbols, lex, topo,
                       [f"pdf{i}" for i in range(num_pdfs)], HLG_FILE, determinize=False)


def _lm_prons(lexicon: Mapping[str, list[list[str]]], words: Sequence[str],
              phone_ids: Mapping[str, int]) -> tuple[list[tuple[str, list[int]]], list[str]]:
    """The LM words' pronunciations as phone ids, and the words that have none."""
    prons: list[tuple[str, list[int]]] = []
    skipped: list[str] = []
    for word in words:
        known = [[phone_ids[p] for p in pron] for pron in lexicon.get(word, [])
                 if all(p in phone_ids for p in pron)]
        if known:
            prons += [(word, pron) for pron in known]
        else:
            skipped.append(word)
    return prons, skipped


__all__ = ["HMM_FILE", "hmm_topology", "make_hlg", "read_hmms", "read_prons"]
