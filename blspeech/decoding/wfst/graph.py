"""A token-level TLG decoding graph for CTC models, built with kaldifst and kaldilm.

``TLG = T o min(det(L o G))``, determinized again after the composition with ``T``:

* **T** -- the CTC topology over the tokenizer's pieces (blank id 0): a state per token
  (state 0: "after a blank"); from every state an arc per token ``j`` to state ``j``.
  Entering a token's state from another state outputs the token; its self-loop (the token
  repeated on consecutive frames) and every blank output nothing, so a piece spelled
  twice in a row needs a blank between its two emissions, as in CTC. Every state is final.
  Input labels are token id + 1 because label 0 is epsilon in OpenFst and Kaldi's
  decoders; :class:`kaldi_decoder.DecodableCtc` reads column ``label - 1``.
* **L** -- each word spelled with the tokenizer's own pieces (``tokenizer.encode(word)``),
  so the lexicon holds every word of the LM whether or not the word is itself a piece.
  Spellings that are a prefix of another word's, or shared by several words, end in a
  disambiguation symbol ``#1, #2, ...`` (Kaldi's ``add_lex_disambig.pl``) so that ``L o G``
  can be determinized; ``#0`` passes ``G``'s backoff arcs through.
* **G** -- the ARPA word n-gram (all of its orders) as an FST (``kaldilm.arpa2fst`` with
  ``#0`` on backoff arcs; ``<s>``/``</s>`` become epsilons). Costs are -ln probabilities.

After the last determinization the disambiguation symbols on ``TLG``'s input side become
epsilons (Kaldi's ``fstrmsymbols``) and the graph is minimized. The graph dir holds
``TLG.fst`` (OpenFst binary), ``words.txt`` (``word id``), ``tokens.txt`` (``token id``:
the tokenizer's list, then the disambiguation symbols) and ``graph.json`` (what it was built
from, sizes, words that could not be spelled).

The standard topology has V^2 arcs (V tokens): fine for the few hundred pieces of a BPE
model (128 pieces: 16k arcs), heavy beyond a few thousand.

Example:
    >>> info = make_graph(tokenizer, "data/lm/3gram.arpa", "data/graph_bpe128")  # doctest: +SKIP
    >>> info.words, info.tlg_states                                             # doctest: +SKIP
    (1190, 61234)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from blspeech.decoding.lexicon_lm import check_spellings, read_arpa_vocabulary
from blspeech.errors import UserError

TLG_FILE = "TLG.fst"
HLG_FILE = "HLG.fst"
WORDS_FILE = "words.txt"
TOKENS_FILE = "tokens.txt"
INFO_FILE = "graph.json"
#: ARPA symbols that are no lexicon words; ``<unk>`` stays in words.txt (G may use it) but
#: has no spelling, so no path through L reaches it.
_SPECIALS = ("<s>", "</s>", "<unk>")


def load_kaldi_hmm_gmm_first() -> None:
    """Import kaldi_hmm_gmm (when installed) before anything loads kaldifst: kaldi-hmm-gmm
    1.1.4 hangs on import once kaldifst 1.8.3 is loaded (each wheel brings its own
    OpenFst), while the other order works. Call it before importing kaldifst or
    kaldi_decoder."""
    try:
        import kaldi_hmm_gmm  # noqa: F401
    except ImportError:
        pass


def import_wfst() -> tuple[Any, Any]:
    """``(kaldifst, kaldilm)``, or a :class:`UserError` saying how to install them."""
    load_kaldi_hmm_gmm_first()
    try:
        import kaldifst
        import kaldilm
    except ImportError as e:
        raise UserError(f"WFST decoding needs the wfst extra (pip install -e '.[wfst]': "
                        f"kaldifst, kaldilm, kaldi-decoder): {e}") from e
    return kaldifst, kaldilm


@dataclass
class GraphInfo:
    """What a graph dir was built from, and its sizes (``graph.json``)."""

    arpa: str
    order: int
    vocab_size: int  # the tokenizer's tokens, blank included
    words: int  # lexicon words (spelled with the tokenizer's pieces)
    disambig: int  # disambiguation symbols #0..#K (K+1 of them)
    tlg_states: int  # of the graph (TLG.fst or HLG.fst)
    tlg_arcs: int
    skipped: list[str] = field(default_factory=list)  # LM words the lexicon cannot spell
    kind: str = "ctc"  # ctc: TLG over CTC tokens; hybrid: HLG over an HMM's pdfs

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1) + "\n"


def spell_words(tokenizer: Any, words: Iterable[str]) -> tuple[dict[str, list[int]], list[str]]:
    """Each word's piece ids (``Tokenizer.spell``) and the words it cannot spell."""
    spelled: dict[str, list[int]] = {}
    skipped: list[str] = []
    for word in words:
        ids = tokenizer.spell(word)
        if ids is None:
            skipped.append(word)
        else:
            spelled[word] = ids
    return spelled, skipped


def disambiguate(spellings: dict[str, list[int]]) -> dict[str, int]:
    """``word -> k``: the word's spelling ends in ``#k`` (0: needs none).

    As Kaldi's ``add_lex_disambig.pl``: a spelling that is a proper prefix of another, or
    that several words share, gets ``#1``, ``#2``, ... (a different one per word sharing
    it), so that no two words' input sequences are identical or one a prefix of the other.
    """
    words = sorted(spellings)
    return dict(zip(words, disambiguate_prons([spellings[w] for w in words]), strict=True))


def disambiguate_prons(prons: Sequence[Sequence[int]]) -> list[int]:
    """:func:`disambiguate` for a list of spellings (several may belong to one word): the
    ``k`` of ``#k`` that each must end in, in order."""
    counts = Counter(tuple(s) for s in prons)
    prefixes = {tuple(s[:i]) for s in prons for i in range(1, len(s))}
    used: dict[tuple[int, ...], int] = defaultdict(int)
    out = []
    for pron in prons:
        s = tuple(pron)
        if counts[s] > 1 or s in prefixes:
            used[s] += 1
            out.append(used[s])
        else:
            out.append(0)
    return out


def _fst_size(fst: Any) -> tuple[int, int]:
    return fst.num_states, sum(fst.num_arcs(s) for s in range(fst.num_states))


def _mapped(fst: Any, arc_fn: Callable[[int, int, float], tuple[int, int, float]]) -> Any:
    """A copy of ``fst`` with every arc's ``(ilabel, olabel, weight)`` replaced by
    ``arc_fn`` of them (kaldifst has no mutable arc iterator in Python)."""
    import kaldifst

    out = kaldifst.StdVectorFst()
    for _ in range(fst.num_states):
        out.add_state()
    out.start = fst.start
    for s in range(fst.num_states):
        final = fst.final(s).value
        if final != float("inf"):
            out.set_final(s, final)
        for arc in kaldifst.ArcIterator(fst, s):
            i, o, w = arc_fn(arc.ilabel, arc.olabel, arc.weight.value)
            out.add_arc(s, kaldifst.StdArc(i, o, w, arc.nextstate))
    return out


def ctc_topology(vocab_size: int, num_disambig: int = 0) -> Any:
    """T: the CTC topology over ``vocab_size`` tokens (blank 0), input labels token + 1,
    output labels the token (blank: epsilon), with ``num_disambig`` disambiguation
    self-loops per state (input ``vocab_size + k + 1``, output ``vocab_size + k``)."""
    import kaldifst

    t = kaldifst.StdVectorFst()
    for _ in range(vocab_size):
        t.add_state()
    t.start = 0
    for i in range(vocab_size):
        t.set_final(i, 0.0)
        for j in range(vocab_size):
            # Staying in j (j == i) is the repeat of the token just output: no output.
            t.add_arc(i, kaldifst.StdArc(j + 1, 0 if j == i else j, 0.0, j))
        for k in range(num_disambig):
            t.add_arc(i, kaldifst.StdArc(vocab_size + k + 1, vocab_size + k, 0.0, i))
    return t


def lexicon_fst(spellings: dict[str, list[int]], disambig: dict[str, int],
                word_ids: dict[str, int], vocab_size: int) -> Any:
    """L: token pieces (then ``#k``) -> word, one loop per word from the start state; the
    token ``#0`` self-loop passes ``G``'s backoff ``#0`` through."""
    words = sorted(spellings)
    return loop_lexicon_fst([(word_ids[w], spellings[w]) for w in words],
                            [disambig[w] for w in words], vocab_size, word_ids["#0"])


def loop_lexicon_fst(prons: Sequence[tuple[int, Sequence[int]]], disambig: Sequence[int],
                     first_disambig: int, word_backoff: int, silence: int | None = None,
                     silence_cost: float = 0.0) -> Any:
    """L with one loop per ``(word id, input labels)`` pronunciation from the start state,
    each ending in ``#k`` (input ``first_disambig + k``) where ``disambig`` says; an input
    ``#0`` self-loop passes ``G``'s backoff (output ``word_backoff``) through. ``silence``:
    an input label that may occur between words (and at either end) at ``silence_cost``
    each time, outputting nothing: Kaldi's optional silence."""
    import kaldifst

    lex = kaldifst.StdVectorFst()
    start = lex.add_state()
    lex.start = start
    lex.set_final(start, 0.0)
    for (word, pron), k in zip(prons, disambig, strict=True):
        labels = [*pron, first_disambig + k] if k else list(pron)
        state = start
        for n, label in enumerate(labels):
            nxt = start if n == len(labels) - 1 else lex.add_state()
            lex.add_arc(state, kaldifst.StdArc(label, word if n == 0 else 0, 0.0, nxt))
            state = nxt
    if silence is not None:
        lex.add_arc(start, kaldifst.StdArc(silence, 0, silence_cost, start))
    kaldifst.add_self_loops(lex, isyms=[first_disambig], osyms=[word_backoff])
    return lex


def _write_symbols(path: str, symbols: Sequence[str]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(f"{s} {i}\n" for i, s in enumerate(symbols))


def read_symbols(path: str | os.PathLike) -> list[str]:
    """``symbol id`` lines (ids 0..N-1 in order) -> the symbols."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"{path} not found; build the graph with 'blspeech mkgraph'")
    out: list[str] = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) != len(out):
                raise UserError(f"{path} line {n}: expected 'symbol {len(out)}', got "
                                f"{line.strip()!r}")
            out.append(parts[0])
    return out


def _compile_g(arpa: str, words_txt: str, order: int, out: str) -> None:
    """``kaldilm.arpa2fst`` in a child process: Kaldi's error handling in the wheel aborts
    the process on a malformed ARPA file, and its log lines go to stderr."""
    code = ("import sys, kaldilm; kaldilm.arpa2fst(sys.argv[1], output_fst=sys.argv[2], "
            "disambig_symbol='#0', read_symbol_table=sys.argv[3], max_order=int(sys.argv[4]))")
    proc = subprocess.run([sys.executable, "-c", code, arpa, out, words_txt, str(order)],
                          capture_output=True, text=True, errors="replace", check=False)
    if proc.returncode != 0 or not os.path.isfile(out):
        lines = [x.strip() for x in proc.stderr.splitlines() if x.strip()]
        # Kaldi's messages: '[E] line 6 [foo bar]: Invalid n-gram data line'
        errors = [x for x in lines if x.startswith("[E]")]
        reason = (errors[0][3:].strip() if errors else
                  (lines[-1] if lines else f"exit status {proc.returncode}"))
        raise UserError(f"cannot convert language model {arpa} to an FST: {reason}")


def lm_words(arpa: str, max_order: int | None = None) -> tuple[list[str], int]:
    """The ARPA file's words (without ``<s> </s> <unk>``), sorted, and the order to use."""
    vocab, order = read_arpa_vocabulary(arpa)
    if max_order is not None:
        if max_order < 1:
            raise UserError(f"max_order must be >= 1, got {max_order}")
        order = min(order, max_order)
    return sorted(set(vocab) - set(_SPECIALS)), order


def word_symbols(words: Sequence[str]) -> list[str]:
    """words.txt as Kaldi lays it out: ``<eps>``, the words, then ``<unk> #0 <s> </s>``."""
    return ["<eps>", *words, "<unk>", "#0", "<s>", "</s>"]


def make_graph(tokenizer: Any, arpa: str | os.PathLike, graph_dir: str | os.PathLike, *,
               max_order: int | None = None) -> GraphInfo:
    """Build ``TLG.fst``, ``words.txt``, ``tokens.txt`` and ``graph.json`` in ``graph_dir``.

    The lexicon is the ARPA file's unigrams (without ``<s> </s> <unk>``), each spelled with
    ``tokenizer``'s pieces; words the pieces cannot spell (they would need ``<unk>``) are
    left out with a warning and listed in ``graph.json``. ``max_order`` limits the n-gram
    order used (default: the ARPA file's).
    """
    import_wfst()
    arpa = os.fspath(arpa)
    words, order = lm_words(arpa, max_order)
    spellings, skipped = spell_words(tokenizer, words)
    check_spellings(len(spellings), len(words), skipped, arpa)
    disambig = disambiguate(spellings)
    num_disambig = max(disambig.values()) + 1  # #0 (G's backoff) .. #K
    tokens = list(tokenizer.tokens)
    symbols = word_symbols(words)
    lex = lexicon_fst(spellings, disambig, {w: i for i, w in enumerate(symbols)}, len(tokens))
    info = GraphInfo(arpa=arpa, order=order, vocab_size=len(tokens), words=len(spellings),
                     disambig=num_disambig, tlg_states=0, tlg_arcs=0, skipped=skipped)
    return build_graph(graph_dir, info, symbols, lex,
                       ctc_topology(len(tokens), num_disambig), tokens, TLG_FILE)


def build_graph(graph_dir: str | os.PathLike, info: GraphInfo, symbols: Sequence[str],
                lex: Any, topo: Any, inputs: Sequence[str], fst_name: str, *,
                determinize: bool = True) -> GraphInfo:
    """``topo o min(det(lex o G))`` (G from ``info.arpa``) into ``graph_dir/fst_name``, with
    words.txt (``symbols``), tokens.txt (``inputs`` then ``#0..#K``) and graph.json.

    ``topo``'s input labels are ``inputs``' index + 1, then the disambiguation symbols,
    which become epsilons. ``determinize``: determinize and minimize the composition too
    (a CTC topology); an HMM topology with self-loops is left as composed (it is not
    functional: a phone repeated across a word boundary reads as one longer phone).
    """
    kaldifst, _ = import_wfst()
    graph_dir = os.fspath(graph_dir)
    num_inputs = len(inputs)
    os.makedirs(graph_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=graph_dir) as tmp:
        words_txt = os.path.join(tmp, WORDS_FILE)
        _write_symbols(words_txt, symbols)
        g_path = os.path.join(tmp, "G.fst")
        _compile_g(info.arpa, words_txt, info.order, g_path)
        g = kaldifst.StdVectorFst.read(g_path)
        kaldifst.arcsort(g, sort_type="ilabel")

        kaldifst.arcsort(lex, sort_type="olabel")
        lg = _vector(kaldifst, kaldifst.compose(lex, g))
        kaldifst.determinize_star(lg, use_log=True)
        kaldifst.minimize_encoded(lg)
        kaldifst.arcsort(lg, sort_type="ilabel")

        kaldifst.arcsort(topo, sort_type="olabel")
        graph = _vector(kaldifst, kaldifst.compose(topo, lg))
        if determinize:
            kaldifst.determinize_star(graph, use_log=True)
        # Disambiguation symbols (inputs above the last real one) become epsilons.
        graph = _mapped(graph, lambda i, o, w: (0 if i > num_inputs else i, o, w))
        if determinize:
            kaldifst.minimize_encoded(graph)
        kaldifst.arcsort(graph, sort_type="ilabel")
        info.tlg_states, info.tlg_arcs = _fst_size(graph)
        if info.tlg_states == 0:
            raise UserError(f"the graph of {info.arpa} is empty: no word sequence of the LM "
                            "can be spelled with the lexicon")
        graph.write(os.path.join(tmp, fst_name))
        _write_symbols(os.path.join(tmp, TOKENS_FILE),
                       [*inputs, *(f"#{k}" for k in range(info.disambig))])
        with open(os.path.join(tmp, INFO_FILE), "w", encoding="utf-8") as f:
            f.write(info.to_json())
        # Replace the files only when all are written: a failure keeps an older graph whole.
        for name in (fst_name, WORDS_FILE, TOKENS_FILE, INFO_FILE):
            os.replace(os.path.join(tmp, name), os.path.join(graph_dir, name))
    return info


def _vector(kaldifst: Any, fst: Any) -> Any:
    """``fst`` as a StdVectorFst (compose returns a mutable FST of another class)."""
    if isinstance(fst, kaldifst.StdVectorFst):
        return fst
    return kaldifst.StdVectorFst(fst)


__all__ = ["GraphInfo", "build_graph", "ctc_topology", "disambiguate", "disambiguate_prons",
           "import_wfst", "lexicon_fst", "lm_words", "load_kaldi_hmm_gmm_first",
           "loop_lexicon_fst", "make_graph", "read_symbols", "spell_words", "word_symbols"]
