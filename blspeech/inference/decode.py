"""Decoding a whole data dir with a trained model, by one of the searches below.

Search (:mod:`blspeech.decoding.ctc` for CTC) takes log-probabilities ``(T, V)`` with
blank id 0 and returns :class:`~blspeech.decoding.ctc.Hypothesis` objects holding token
ids, the frame at which each token was emitted (for word times) and the score:

* ``greedy`` / ``greedy_batch`` (:mod:`blspeech.decoding.ctc`) -- best path;
* ``prefix_beam_search`` (:mod:`blspeech.decoding.ctc`) -- CTC prefix beam search;
* :class:`~blspeech.decoding.lexicon_lm.LexiconLMDecoder` -- lexicon-constrained beam search with a
  word n-gram LM (ARPA) through torchaudio's flashlight decoder (``method='lm'``);
* :func:`~blspeech.decoding.hybrid.viterbi_token_loop` -- for hybrid models trained on the token
  topology (``method='viterbi'``): Viterbi over a free token loop on the scaled
  log-likelihoods. Hybrid models over a Kaldi tree's pdfs decode with Kaldi's graphs
  (``blspeech forward ... ark:- | latgen-faster-mapped ...``);
* :class:`~blspeech.decoding.wfst.WfstDecoder` -- Kaldi's decoder (kaldi-decoder wheel) over
  a TLG graph of the tokenizer's pieces and an ARPA LM (``blspeech mkgraph``;
  ``method='wfst'``).

:func:`decode_data_dir` runs a trained model (:func:`load_acoustic_model`) over a Kaldi
data dir and writes ``text``, ``ctm`` and, when the data dir has transcripts, ``wer.json``
and ``wer.txt``.

Example:
    >>> decode_data_dir("exp/ctc/best.pt", "data/test", "exp/ctc/decode_test",
    ...                 method="beam", beam=8)["wer"]              # doctest: +SKIP
    12.5
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

from blspeech.decoding.ctc import (
    Hypothesis,
    greedy_batch,
    hypothesis_ctm,
    hypothesis_words,
    prefix_beam_search,
)
from blspeech.errors import UserError
from blspeech.inference.model import Bundle, load_acoustic_model

METHODS = ("greedy", "beam", "lm", "viterbi", "wfst")
#: Beam widths when none is given: prefix beam search is Python (small beam); the
#: lexicon search runs in C++ and needs room for several spellings per word prefix.
DEFAULT_BEAM = {"beam": 8, "lm": 32, "wfst": 16}


# --- decoding a data dir ------------------------------------------------------------------


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    if not threads:
        yield
        return
    if threads < 1:
        raise UserError(f"threads must be positive, got {threads}")
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def viterbi_searcher(model: torch.nn.Module, insertion_penalty: float, prior_scale: float
                     ) -> Callable[[torch.Tensor, torch.Tensor], list[Hypothesis]]:
    """Batch search for a token-topology hybrid ``model``: its log posteriors ``(B, T, P)``
    and lengths -> one :class:`Hypothesis` per row (token-loop Viterbi on the scaled
    log-likelihoods, see :func:`blspeech.decoding.hybrid.viterbi_token_loop`)."""
    from blspeech.decoding.hybrid import viterbi_token_loop

    def search(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[Hypothesis]:
        ll = model.to_log_likelihoods(log_probs.cpu(), prior_scale)
        hyps = []
        for i, n in enumerate(lengths.tolist()):
            tokens, frames = viterbi_token_loop(ll[i, : int(n)], insertion_penalty)
            hyps.append(Hypothesis(tokens=tokens, frames=frames))
        return hyps
    return search


def _check_method(method: str | None, bundle: Bundle) -> str:
    """The method to use for this model (default: greedy for CTC, viterbi for hybrid)."""
    if method is None:
        method = "viterbi" if bundle.is_hybrid else "greedy"
    if method not in METHODS:
        raise UserError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    over_pdfs = bundle.is_hybrid and bundle.model.topology != "token"
    if over_pdfs and method not in ("wfst", "lm"):
        raise UserError(f"{bundle.path} is a hybrid model over an HMM's pdfs (a GMM system's "
                        "or a Kaldi tree's): decode it with --method wfst and a graph of its "
                        "lexicon ('blspeech mkgraph EXP/lang ARPA GRAPH'), with --method lm "
                        "--lexicon EXP/lang/lexicon.txt, or with Kaldi, e.g. 'blspeech "
                        "forward MODEL DATA ark:- | latgen-faster-mapped ... HCLG.fst ark:- "
                        "ark:lat.ark'")
    if bundle.is_hybrid and not over_pdfs and method not in ("viterbi", "wfst"):
        raise UserError(f"{bundle.path} is a hybrid model of the token topology: method "
                        f"{method!r} does not apply; use viterbi or wfst")
    if not bundle.is_hybrid and method == "viterbi":
        raise UserError(f"{bundle.path} is a CTC model: method 'viterbi' does not apply; use "
                        "greedy, beam, lm or wfst")
    return method


def _on_log_likelihoods(bundle: Bundle, prior_scale: float, decode_batch: Callable
                        ) -> Callable[[torch.Tensor, torch.Tensor], list[Hypothesis]]:
    """A hybrid model's search: ``decode_batch`` reads its pdfs' scaled log-likelihoods."""
    def search(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[Hypothesis]:
        return decode_batch(bundle.model.to_log_likelihoods(log_probs.cpu(), prior_scale),
                            lengths)
    return search


def _searcher(method: str, bundle: Bundle, beam: int, token_prune: int | None,
              lm: str | os.PathLike | None, lexicon: str | os.PathLike | None,
              lm_weight: float, word_score: float, prior_scale: float,
              wfst: Mapping[str, Any] | None = None):
    """``search(log_probs (B, T, V), lengths) -> list[Hypothesis]`` for ``method``."""
    if method == "wfst":
        from blspeech.decoding.wfst import WfstDecoder

        if not bundle.is_hybrid:
            return WfstDecoder(tokenizer=bundle.tokenizer, beam=beam, **(wfst or {})
                               ).decode_batch
        decoder = WfstDecoder(beam=beam, num_pdfs=bundle.model.num_pdfs, **(wfst or {}))
        return _on_log_likelihoods(bundle, prior_scale, decoder.decode_batch)
    if method == "greedy":
        return greedy_batch
    if method == "beam":
        def beam_search(log_probs: torch.Tensor, lengths: torch.Tensor) -> list[Hypothesis]:
            lp = log_probs.cpu()
            return [prefix_beam_search(lp[i, : int(n)], beam=beam, token_prune=token_prune)[0]
                    for i, n in enumerate(lengths.tolist())]
        return beam_search
    if bundle.is_hybrid:
        from blspeech.decoding.hybrid_lm import HybridLexiconDecoder

        if lexicon is None or os.path.basename(lexicon) != "lexicon.txt":
            raise UserError("a hybrid model over an HMM's pdfs decodes with --method lm given "
                            "--lexicon EXP/lang/lexicon.txt of 'blspeech align-gmm' (its "
                            "directory's phones.txt and hmm.txt map the pdfs to phones)")
        phone_decoder = HybridLexiconDecoder(os.path.dirname(os.fspath(lexicon)) or ".", lm,
                                             num_pdfs=bundle.model.num_pdfs, beam=beam,
                                             lm_weight=lm_weight, word_score=word_score)
        return _on_log_likelihoods(bundle, prior_scale, phone_decoder.decode_batch)
    from blspeech.decoding.lexicon_lm import LexiconLMDecoder

    decoder = LexiconLMDecoder(bundle.tokenizer, lm, lexicon=lexicon, beam=beam,
                               lm_weight=lm_weight, word_score=word_score,
                               token_prune=token_prune)
    return decoder.decode_batch


def decode_data_dir(checkpoint: str | os.PathLike | Bundle,
                    data_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                    method: str | None = None, beam: int | None = None,
                    lm: str | os.PathLike | None = None,
                    lexicon: str | os.PathLike | None = None, lm_weight: float = 2.0,
                    word_score: float = 0.0, token_prune: int | None = 16,
                    insertion_penalty: float = 0.0, prior_scale: float = 1.0,
                    graph: str | os.PathLike | None = None, acoustic_scale: float = 1.0,
                    word_penalty: float = 0.0, max_active: int = 7000,
                    max_frames: int = 20000, num_workers: int = 0, threads: int | None = None,
                    device: str = "cpu", allow_wavscp_commands: bool | None = None,
                    progress: bool = True) -> dict[str, Any]:
    """Decode every utterance of ``data_dir`` and write the results to ``out_dir``.

    Features are read as the model was trained (``feats.scp`` or audio, the same CMVN;
    global statistics from the checkpoint) in length-sorted batches of at most
    ``max_frames`` feature frames. ``method``: ``greedy`` (vectorized best path),
    ``beam`` (prefix beam search, ``beam`` default 8) or ``lm`` (lexicon + word n-gram
    LM search over the ARPA file ``lm``, ``beam`` default 32; words from ``lexicon``, a
    file of ``word [piece ...]`` lines, else from the LM's unigrams; ``lm_weight``
    scales the LM's log10 probabilities, ``word_score`` is added per word: tune both on
    a dev set; with ``lexicon`` and no ``lm``, the lexicon's words without an LM; a
    hybrid model over a monophone HMM's pdfs searches its phones, ``lexicon`` being the
    ``EXP/lang/lexicon.txt`` of ``blspeech align-gmm``). ``token_prune`` keeps that many
    most likely tokens per frame in the beam searches (None: all). ``method=None`` picks
    ``greedy`` for a CTC model and ``viterbi`` for a hybrid model of the token topology,
    whose search subtracts ``prior_scale`` x the model's log-priors and charges
    ``insertion_penalty`` per token.
    ``wfst``: Kaldi's FasterDecoder over the TLG graph in ``graph`` (``blspeech mkgraph``;
    ``beam`` default 16, ``max_active``; ``acoustic_scale`` weighs the log-probabilities
    against the LM's -ln costs, ``word_penalty`` is added per word: tune both on a dev
    set); utterances whose search reaches no final state get the best partial path, a
    warning names them and the summary lists them (``no_final_state``).

    Writes, each file atomically and only after every utterance is decoded (an error
    leaves earlier results untouched): ``text`` (``utt word ...``, sorted), ``ctm``
    (``utt 1 start duration word``; times are output frame x frame shift x time
    subsampling) and, when ``data_dir`` has ``text``, ``wer.json`` and ``wer.txt``
    (references and hypotheses both normalized with the checkpoint's normalizer, sclite
    counts). Returns a summary: ``utterances``, ``wer`` (None unscored), ``rtf`` (decode
    seconds / audio seconds), ``seconds`` and more.

    Example:
        >>> s = decode_data_dir("exp/ctc/best.pt", "data/test", "exp/ctc/decode",
        ...                     method="lm", lm="data/lm/3gram.arpa")   # doctest: +SKIP
        >>> s["utterances"], s["wer"], s["rtf"]                           # doctest: +SKIP
        (200, 14.2, 0.031)
    """
    started = time.perf_counter()
    beam = _check_options(method, beam, token_prune, prior_scale, lm, lexicon, graph)
    bundle = (checkpoint if isinstance(checkpoint, Bundle)
              else load_acoustic_model(checkpoint, device))
    method = _check_method(method, bundle)
    # Build the search first: a bad LM or lexicon should fail before minutes of decoding.
    search = (viterbi_searcher(bundle.model, insertion_penalty, prior_scale)
              if method == "viterbi"
              else _searcher(method, bundle, beam, token_prune, lm, lexicon, lm_weight,
                             word_score, prior_scale,
                             {"graph_dir": graph, "acoustic_scale": acoustic_scale,
                              "word_penalty": word_penalty, "max_active": max_active}))
    ds = bundle.dataset(data_dir, allow_wavscp_commands=allow_wavscp_commands)
    with _torch_threads(threads):
        decode_started = time.perf_counter()
        hyps = _search_all(bundle, ds, search, max_frames=max_frames, num_workers=num_workers,
                           progress=progress, desc=f"decode ({method})")
        decode_seconds = time.perf_counter() - decode_started
    # WFST searches that ended in no final state of the graph used their best partial path.
    no_final = sorted(u for u, h in hyps.items() if getattr(h, "reached_final", True) is False)
    if no_final:
        warnings.warn(f"{len(no_final)} utterance(s) reached no final state of the WFST graph "
                      f"(best partial path used): {' '.join(no_final)}", stacklevel=2)
    audio_seconds = sum(ds.lengths) * bundle.frame_shift
    scores = _write_results(bundle, ds, hyps, os.fspath(data_dir), os.fspath(out_dir))
    return {"utterances": len(hyps), "method": method, **scores,
            "rtf": round(decode_seconds / audio_seconds, 4) if audio_seconds else None,
            "seconds": round(time.perf_counter() - started, 3),
            "decode_seconds": round(decode_seconds, 3),
            "audio_seconds": round(audio_seconds, 3),
            "beam": beam if method in DEFAULT_BEAM else None,
            **({"insertion_penalty": insertion_penalty} if method == "viterbi" else {}),
            **({"prior_scale": prior_scale} if bundle.is_hybrid else {}),
            **({"graph": os.fspath(graph), "acoustic_scale": acoustic_scale,
                "word_penalty": word_penalty, "max_active": max_active,
                "no_final_state": no_final} if method == "wfst" else {}),
            "out_dir": os.fspath(out_dir)}


def _check_options(method: str | None, beam: int | None, token_prune: int | None,
                   prior_scale: float, lm: Any, lexicon: Any, graph: Any) -> int:
    """One clear error for options that do not fit together; returns the beam to use."""
    if method is not None and method not in METHODS:
        raise UserError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "lm" and lm is None and lexicon is None:
        raise UserError("method 'lm' needs an ARPA language model (--lm; train one with "
                        "'blspeech train-lm'), a lexicon (--lexicon: its words, no LM), or both")
    if method != "lm" and (lm is not None or lexicon is not None):
        raise UserError(f"--lm and --lexicon are used by method 'lm' only, not {method!r}")
    if (method == "wfst") != (graph is not None):
        raise UserError("method 'wfst' needs a decoding graph (--graph GRAPH_DIR, from "
                        "'blspeech mkgraph')" if method == "wfst" else
                        f"--graph is used by method 'wfst' only, not {method!r}")
    beam = DEFAULT_BEAM.get(method, 1) if beam is None else int(beam)
    if beam < 1:
        raise UserError(f"beam must be >= 1, got {beam}")
    if token_prune is not None and token_prune < 1:
        raise UserError(f"token_prune must be >= 1 or None, got {token_prune}")
    if prior_scale < 0:
        raise UserError(f"prior_scale must be >= 0, got {prior_scale}")
    return beam


def _search_all(bundle: Bundle, ds: Any, search: Callable, **batching: Any
                ) -> dict[str, Hypothesis]:
    """``search`` over the model's log-probabilities of every utterance of ``ds``."""
    hyps: dict[str, Hypothesis] = {}
    for batch, log_probs, out_lengths in bundle.batches(ds, **batching):
        for utt, hyp in zip(batch["utts"], search(log_probs, out_lengths.cpu()), strict=True):
            hyps[utt] = hyp
    return hyps


def _write_results(bundle: Bundle, ds: Any, hyps: Mapping[str, Hypothesis],
                   data_dir: str, out_dir: str) -> dict[str, Any]:
    """Write text, ctm and (with references) wer.json/wer.txt; return the score summary."""
    from blspeech.io.fileio import atomic_write
    from blspeech.io.kaldi import write_table

    tok = bundle.tokenizer
    os.makedirs(out_dir, exist_ok=True)
    texts = {utt: " ".join(hypothesis_words(h, tok)) for utt, h in hyps.items()}
    ctm = []
    for utt in sorted(hyps, key=str.encode):  # Kaldi's C-locale order
        ctm += hypothesis_ctm(utt, hyps[utt], tok, bundle.frame_seconds)
    write_table(os.path.join(out_dir, "text"), texts)
    with atomic_write(os.path.join(out_dir, "ctm")) as f:
        f.writelines(line + "\n" for line in ctm)
    summary: dict[str, Any] = {"wer": None}
    score_files = [os.path.join(out_dir, n) for n in ("wer.json", "wer.txt")]
    if ds.texts is None:
        for path in score_files:  # results of an earlier run would look like this one's
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        return summary
    from blspeech.scoring.wer import score

    norm = bundle.normalizer
    if norm is None:  # a hybrid model trained without a tokenizer: score the text as it is
        from blspeech.text.tokenizers import TextNormalizer

        norm = TextNormalizer()
    refs = {utt: norm(text) for utt, text in zip(ds.utts, ds.texts, strict=True)}
    utt2spk = (dict(zip(ds.utts, ds.speakers, strict=True))
               if os.path.isfile(os.path.join(data_dir, "utt2spk")) else None)
    result = score(refs, {utt: norm(t) for utt, t in texts.items()}, utt2spk=utt2spk)
    for warning in result.warnings:
        warnings.warn(warning, stacklevel=3)
    details = result.to_dict(details=True)
    details.update(ref=os.path.join(data_dir, "text"), hyp=os.path.join(out_dir, "text"),
                   normalizer=norm.to_dict())
    with atomic_write(score_files[0]) as f:
        json.dump(details, f, indent=1)
        f.write("\n")
    with atomic_write(score_files[1]) as f:
        f.write(score_report(result) + "\n")
    summary.update(wer=None if result.wer is None else round(result.wer, 2),
                   errors=result.errors, ref_words=result.ref_words,
                   ser=None if result.ser is None else round(result.ser, 2))
    return summary


def score_report(result: Any, top: int = 10) -> str:
    """A readable WER report (Kaldi's ``%WER`` line, per speaker, top confusions)."""
    def rate(value: float | None) -> str:
        return "UNDEF" if value is None else f"{value:.2f}"

    lines = [f"%WER {rate(result.wer)} [ {result.errors} / {result.ref_words}, "
             f"{result.insertions} ins, {result.deletions} del, {result.substitutions} sub ]",
             f"%SER {rate(result.ser)} [ {result.sentence_errors} / {result.sentences} ]",
             f"Scored {result.sentences} sentences, {len(result.missing)} not present in hyp."]
    if result.per_speaker:
        lines += ["", f"{'speaker':<16} {'#snt':>5} {'#wrd':>6} {'wer':>7}"]
        lines += [f"{spk:<16} {c.sentences:>5} {c.ref_words:>6} {rate(c.wer):>7}"
                  for spk, c in result.per_speaker.items()]
    conf = result.confusions(top)
    lines += ["", "Top substitutions (ref -> hyp):"]
    lines += [f"  {c:>5}  {r} -> {h}" for r, h, c in conf["substitutions"]] or ["  none"]
    for key in ("insertions", "deletions"):
        lines.append(f"Top {key}:")
        lines += [f"  {c:>5}  {w}" for w, c in conf[key]] or ["  none"]
    return "\n".join(lines)


__all__ = ["METHODS", "decode_data_dir", "score_report", "viterbi_searcher"]
