"""Flat-start monophone GMM-HMM training and forced alignment (Kaldi's ``train_mono.sh``).

Kaldi's GMM code comes from the ``kaldi-hmm-gmm`` wheel: :class:`HmmTopology`, the monophone
``ContextDependency``, ``TransitionModel`` (transition-ids, pdfs, the MLE update of
transition probabilities), ``AmDiagGmm`` (likelihoods, Gaussian splitting) and
``AccumAmDiagGmm`` + ``mle_am_diag_gmm_update``. Its graph compiler and aligner
(``TrainingGraphCompiler``, ``align_utterance_wrapper``) take OpenFst objects that the
kaldifst wheel's FSTs are not accepted as (kaldi-hmm-gmm 1.1.4 with kaldifst 1.8.3: a type
error, and importing kaldifst first hangs), so the alignment graph and its Viterbi search
are done here in numpy: per utterance, the transcript's phones (each word's first
pronunciation) with optional silence before, between and after words (probability 0.5,
as Kaldi's ``L.fst``), searched exactly (no beam, so no beam failures: an utterance fails
only when it has fewer frames than its shortest path). Scores: 0.1 x acoustic
log-likelihood + log transition probabilities (Kaldi's ``--acoustic-scale=0.1``;
self-loop scaling is not applied).

Schedule (``train_mono.sh``): one Gaussian per pdf from the global mean and variance;
equal alignment (each state of the transcript's phone sequence, with silence at both ends
when there are frames for it, gets an equal share of the frames); ``num_iters`` EM
iterations, realigning on ``realign_iters``, mixing up by ``(totgauss - pdfs) /
max_iter_inc`` Gaussians per iteration (``split_by_count``, power 0.25). The wheel perturbs
split Gaussians with a random generator that Python cannot seed, so runs that mix up
(``totgauss`` above the pdf count) differ slightly from run to run; without splitting,
training and alignment are repeatable.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from blspeech.errors import UserError
from blspeech.gmm.lexicon import SILENCE
from blspeech.gmm.topology import PhoneHmm, phone_hmms, topology_text

#: Kaldi train_mono.sh's realignment iterations for its 40 iterations.
KALDI_REALIGN_ITERS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 16, 18, 20, 23, 26, 29, 32,
                       35, 38)
ACOUSTIC_SCALE = 0.1
_LOG_HALF = math.log(0.5)


def import_khg() -> Any:
    """The ``kaldi_hmm_gmm`` module, or a :class:`UserError` saying how to install it."""
    if "kaldifst" in sys.modules and "kaldi_hmm_gmm" not in sys.modules:
        # Importing it now would hang (see load_kaldi_hmm_gmm_first).
        raise UserError("kaldifst was imported before kaldi_hmm_gmm, and kaldi-hmm-gmm 1.1.4 "
                        "then hangs on import; import blspeech.gmm (or kaldi_hmm_gmm) first, "
                        "or run the aligner in its own process ('blspeech align-gmm')")
    try:
        import kaldi_hmm_gmm
    except ImportError as e:
        raise UserError(f"the GMM aligner needs the gmm extra (pip install -e '.[gmm]'): {e}"
                        ) from e
    return kaldi_hmm_gmm


@dataclass
class GmmModel:
    """A trained monophone system: phones (``phones[i - 1]`` has id ``i``), the wheel's
    topology, transition model and acoustic model, and each phone's HMM tables."""

    phones: list[str]
    topo: Any
    trans_model: Any
    am: Any
    hmms: dict[int, PhoneHmm]

    @property
    def num_pdfs(self) -> int:
        return int(self.trans_model.num_pdfs)

    def phone_id(self, phone: str) -> int:
        return self.phones.index(phone) + 1


@dataclass
class Alignment:
    """One utterance's alignment: a transition-id and a pdf per frame."""

    tids: np.ndarray
    pdfs: np.ndarray
    score: float

    def phones(self, model: GmmModel) -> list[int]:
        """Phone ids of the alignment's frames."""
        tm = model.trans_model
        return [tm.transition_id_to_phone(int(t)) for t in self.tids]


@dataclass
class _Graph:
    pdf: np.ndarray          # (N,) pdf of each node
    start: np.ndarray        # (N,) log start weights (-inf: not a start node)
    src: np.ndarray          # (N, K) incoming arcs' source nodes
    tid: np.ndarray          # (N, K) their transition-ids
    w: np.ndarray            # (N, K) their log weights (-inf: padding)
    end_src: np.ndarray      # arcs to the end: source nodes, tids, weights
    end_tid: np.ndarray
    end_w: np.ndarray


@dataclass
class _Segment:
    phone: int
    optional: bool


def _segments(model: GmmModel, prons: Sequence[Sequence[str]]) -> list[_Segment]:
    sil = model.phone_id(SILENCE)
    segs = [_Segment(sil, True)]
    for pron in prons:
        segs += [_Segment(model.phone_id(p), False) for p in pron]
        segs.append(_Segment(sil, True))
    return segs


def build_graph(model: GmmModel, prons: Sequence[Sequence[str]]) -> _Graph:
    """The utterance's HMM: nodes are (phone position, emitting state)."""
    segs = _segments(model, prons)
    offset, pdf = [], []
    for seg in segs:
        offset.append(len(pdf))
        pdf += model.hmms[seg.phone].pdfs
    n = len(pdf)

    def entries(k: int) -> list[tuple[int, float]]:
        """Nodes entered when segment ``k`` begins (-1: the end), with their weights."""
        if k == len(segs):
            return [(-1, 0.0)]
        if segs[k].optional:
            return [(offset[k], _LOG_HALF)] + [(d, w + _LOG_HALF) for d, w in entries(k + 1)]
        return [(offset[k], 0.0)]

    log_probs = np.asarray(model.trans_model.log_probs, dtype=np.float64)
    incoming: list[list[tuple[int, int, float]]] = [[] for _ in range(n)]
    ends: list[tuple[int, int, float]] = []
    for k, seg in enumerate(segs):
        hmm = model.hmms[seg.phone]
        for s, arcs in enumerate(hmm.arcs):
            node = offset[k] + s
            for dst, tid in arcs:
                lp = float(log_probs[tid])
                targets = [(offset[k] + dst, 0.0)] if dst < hmm.num_states else entries(k + 1)
                for d, w in targets:
                    (ends if d < 0 else incoming[d]).append((node, tid, lp + w))
    width = max(1, max(len(a) for a in incoming))
    src = np.zeros((n, width), dtype=np.int64)
    tid = np.zeros((n, width), dtype=np.int64)
    w = np.full((n, width), -np.inf)
    for d, arcs in enumerate(incoming):
        for j, (s, t, lw) in enumerate(arcs):
            src[d, j], tid[d, j], w[d, j] = s, t, lw
    start = np.full(n, -np.inf)
    for d, lw in entries(0):
        start[d] = lw
    e = np.array(ends, dtype=np.float64).reshape(-1, 3)
    return _Graph(np.asarray(pdf), start, src, tid, w, e[:, 0].astype(np.int64),
                  e[:, 1].astype(np.int64), e[:, 2])


def pdf_log_likelihoods(model: GmmModel, feats: np.ndarray, pdfs: np.ndarray,
                        gmms: Sequence[Any] | None = None) -> np.ndarray:
    """``(T, len(pdfs))`` log-likelihoods of the frames under each pdf's GMM."""
    out = np.empty((len(feats), len(pdfs)))
    for j, p in enumerate(pdfs):
        g = gmms[p] if gmms is not None else model.am.get_pdf(int(p))
        comp = np.asarray(g.log_likelihoods_matrix(feats), dtype=np.float64)
        m = comp.max(axis=1, keepdims=True)
        out[:, j] = (m + np.log(np.exp(comp - m).sum(axis=1, keepdims=True)))[:, 0]
    return out


def viterbi(model: GmmModel, graph: _Graph, feats: np.ndarray,
            gmms: Sequence[Any] | None = None) -> Alignment | None:
    """The best path's alignment, or None when no path fits the frames."""
    updfs, inv = np.unique(graph.pdf, return_inverse=True)
    ll = ACOUSTIC_SCALE * pdf_log_likelihoods(model, feats, updfs, gmms)[:, inv]  # (T, N)
    frames, n = ll.shape
    back = np.zeros((frames, n), dtype=np.int64)
    delta = graph.start + ll[0]
    for t in range(1, frames):
        cand = delta[graph.src] + graph.w                  # (N, K)
        best = cand.argmax(axis=1)
        back[t] = best
        delta = cand[np.arange(n), best] + ll[t]
    final = delta[graph.end_src] + graph.end_w
    if not len(final) or not np.isfinite(final.max()):
        return None
    j = int(final.argmax())
    node, tids = int(graph.end_src[j]), [int(graph.end_tid[j])]
    for t in range(frames - 1, 0, -1):
        k = back[t, node]
        tids.append(int(graph.tid[node, k]))
        node = int(graph.src[node, k])
    tids.reverse()
    arr = np.asarray(tids, dtype=np.int32)
    tm = model.trans_model
    pdfs = np.asarray([tm.transition_id_to_pdf(int(t)) for t in arr], dtype=np.int32)
    return Alignment(arr, pdfs, float(final[j]))


def equal_alignment(model: GmmModel, prons: Sequence[Sequence[str]],
                    frames: int) -> Alignment | None:
    """Kaldi's ``align-equal-compiled`` for a linear path: each state of the phone sequence
    (with silence at both ends when the frames allow) gets an equal share of the frames."""
    sil = model.phone_id(SILENCE)
    inner = [model.phone_id(p) for pron in prons for p in pron]
    for phones in ([sil, *inner, sil], inner):
        # (phone, state) chain: state s leaves by its arc to s + 1 (every topology has one).
        chain = [(p, s) for p in phones for s in range(model.hmms[p].num_states)]
        if chain and len(chain) <= frames:
            break
    else:
        return None
    counts = np.full(len(chain), frames // len(chain))
    counts[: frames % len(chain)] += 1
    tids: list[int] = []
    for (p, s), c in zip(chain, counts, strict=True):
        arcs = dict(model.hmms[p].arcs[s])
        tids += [arcs[s]] * (int(c) - 1) + [arcs[s + 1]]
    arr = np.asarray(tids, dtype=np.int32)
    tm = model.trans_model
    return Alignment(arr, np.asarray([tm.transition_id_to_pdf(int(t)) for t in arr],
                                     dtype=np.int32), 0.0)


def init_model(phones: Sequence[str], feats: Mapping[str, np.ndarray]) -> GmmModel:
    """``gmm-init-mono``: every pdf a single Gaussian with the global mean and variance."""
    khg = import_khg()
    topo = khg.HmmTopology()
    topo.read(topology_text(len(phones), silence=(phones.index(SILENCE) + 1,)))
    ctx = khg.monophone_context_dependency(list(range(1, len(phones) + 1)),
                                           topo.get_phone_to_num_pdf_classes())
    tm = khg.TransitionModel(ctx, topo)
    x = np.concatenate(list(feats.values())).astype(np.float64)
    mean, var = x.mean(axis=0), np.maximum(x.var(axis=0), 1e-3)
    proto = khg.DiagGmm(1, x.shape[1])
    proto.set_weights(np.ones(1, dtype=np.float32))
    proto.set_invvars_and_means((1.0 / var)[None].astype(np.float32),
                                mean[None].astype(np.float32))
    proto.compute_gconsts()
    am = khg.AmDiagGmm()
    am.init(proto, tm.num_pdfs)
    return GmmModel(list(phones), topo, tm, am, phone_hmms(tm, topo))


def _update(model: GmmModel, feats: Mapping[str, np.ndarray], alis: Mapping[str, Alignment],
            num_gauss: int, min_occupancy: float, power: float = 0.25) -> float:
    """One EM update from Viterbi alignments (``gmm-acc-stats-ali`` + ``gmm-est``),
    mixing up to ``num_gauss``; returns the average log-likelihood per frame."""
    khg = import_khg()
    flags = int(khg.GmmUpdateFlags.kGmmAll.value)
    acc = khg.AccumAmDiagGmm()
    acc.init(model.am, flags)
    tm = model.trans_model
    tstats = np.zeros(len(tm.init_stats()))
    like = frames = 0.0
    for utt, ali in alis.items():
        x = feats[utt]
        for t, pdf in enumerate(ali.pdfs):
            like += acc.accumulate_for_gmm(model.am, x[t], int(pdf), 1.0)
        tstats += np.bincount(ali.tids, minlength=len(tstats))[: len(tstats)]
        frames += len(ali.pdfs)
    occs = np.array([float(np.sum(acc.get_acc(i).occupancy)) for i in range(model.num_pdfs)],
                    dtype=np.float32)
    khg.mle_am_diag_gmm_update(khg.MleDiagGmmOptions(min_gaussian_occupancy=min_occupancy),
                               acc, flags, model.am)
    tm.mle_update(tstats, khg.MleTransitionUpdateConfig())
    if num_gauss > model.am.num_gauss:
        model.am.split_by_count(occs, num_gauss, 0.01, power, 20.0)
    model.am.compute_gconsts()
    return like / max(frames, 1.0)


@dataclass
class TrainResult:
    """A trained model, its last alignments and the utterances it could not align."""

    model: GmmModel
    alignments: dict[str, Alignment]
    skipped: dict[str, str] = field(default_factory=dict)
    log_like: list[float] = field(default_factory=list)


def transcripts_to_prons(texts: Mapping[str, str], lexicon: Mapping[str, list[tuple[str, ...]]]
                         ) -> tuple[dict[str, list[tuple[str, ...]]], dict[str, str]]:
    """Each utterance's words' first pronunciations; utterances with a word the lexicon
    lacks go to the second dict (``utt -> reason``)."""
    prons: dict[str, list[tuple[str, ...]]] = {}
    skipped: dict[str, str] = {}
    for utt, text in texts.items():
        words = text.split()
        oov = [w for w in words if w not in lexicon]
        if oov:
            skipped[utt] = f"no pronunciation for {', '.join(sorted(set(oov)))}"
        elif not words:
            skipped[utt] = "empty transcript"
        else:
            prons[utt] = [lexicon[w][0] for w in words]
    return prons, skipped


def _warn(utt: str, reason: str) -> None:
    warnings.warn(f"utterance {utt}: {reason}; skipped (listed in skipped.txt)", stacklevel=3)


#: What forked alignment workers read (set before the pool forks: Kaldi's objects cannot be
#: pickled, but a forked child has a copy of the parent's memory).
_JOB: dict[str, Any] = {}
_CHUNK = 4  # utterances per task: progress updates often, little pickling overhead


def _align_one(utt: str) -> tuple[str, Alignment | None, str]:
    model, feats, prons, gmms = (_JOB[k] for k in ("model", "feats", "prons", "gmms"))
    ali = viterbi(model, build_graph(model, prons[utt]), feats[utt], gmms)
    reason = "" if ali is not None else (
        f"no alignment: its {len(feats[utt])} frames are too few for its "
        f"{sum(len(p) for p in prons[utt])} phones")
    return utt, ali, reason


def _align_chunk(utts: Sequence[str]) -> list[tuple[str, Alignment | None, str]]:
    return [_align_one(u) for u in utts]


def align_all(model: GmmModel, feats: Mapping[str, np.ndarray],
              prons: Mapping[str, Sequence[Sequence[str]]],
              progress: Callable[[int], None] | None = None, nj: int = 1
              ) -> tuple[dict[str, Alignment], dict[str, str]]:
    """Viterbi alignments of every utterance, and the ones without a path (``utt ->
    reason``); ``nj > 1`` aligns in that many forked processes (same results)."""
    import multiprocessing

    utts = sorted(prons, key=str.encode)
    _JOB.update(model=model, feats=feats, prons=prons,
                gmms=[model.am.get_pdf(i) for i in range(model.num_pdfs)])
    out: dict[str, Alignment] = {}
    failed: dict[str, str] = {}
    chunks = [utts[i:i + _CHUNK] for i in range(0, len(utts), _CHUNK)]
    try:
        if nj > 1 and len(chunks) > 1:
            with multiprocessing.get_context("fork").Pool(min(nj, len(chunks))) as pool:
                results = list(_progress(pool.imap(_align_chunk, chunks), progress))
        else:
            results = list(_progress(map(_align_chunk, chunks), progress))
    finally:
        _JOB.clear()
    for chunk in results:
        for utt, ali, reason in chunk:
            if ali is None:
                failed[utt] = reason
            else:
                out[utt] = ali
    return out, failed


def _progress(chunks, progress: Callable[[int], None] | None):
    for chunk in chunks:
        if progress is not None:
            progress(len(chunk))
        yield chunk


def train_mono(feats: Mapping[str, np.ndarray], prons: Mapping[str, Sequence[Sequence[str]]],
               phones: Sequence[str], *, num_iters: int = 40, totgauss: int = 1000,
               max_iter_inc: int | None = None, realign_iters: Sequence[int] | None = None,
               progress: Callable[[int], None] | None = None, nj: int = 1) -> TrainResult:
    """Flat-start monophone training (see the module docstring for the schedule).

    ``max_iter_inc`` defaults to 3/4 of ``num_iters`` (Kaldi: 30 of 40) and
    ``realign_iters`` to Kaldi's list scaled to ``num_iters``. ``progress(n)`` is called
    with the utterances processed (``num_iters + 1`` passes, realignments included);
    ``nj`` processes align (the EM accumulation stays in this one).
    """
    if num_iters < 1:
        raise UserError(f"num_iters must be at least 1, not {num_iters}")
    max_iter_inc = max_iter_inc if max_iter_inc is not None else max(1, num_iters * 3 // 4)
    if realign_iters is None:
        realign_iters = sorted({max(1, round(i * num_iters / 40)) for i in KALDI_REALIGN_ITERS})
    model = init_model(phones, feats)
    skipped: dict[str, str] = {}
    alis: dict[str, Alignment] = {}
    for utt in sorted(prons, key=str.encode):
        ali = equal_alignment(model, prons[utt], len(feats[utt]))
        if ali is None:
            skipped[utt] = (f"no alignment: its {len(feats[utt])} frames are too few for its "
                            f"{sum(len(p) for p in prons[utt])} phones")
        else:
            alis[utt] = ali
        if progress is not None:
            progress(1)
    if not alis:
        raise UserError("no utterance could be aligned (see the messages above)")
    num_gauss = model.num_pdfs
    inc = max(0, (totgauss - num_gauss) // max_iter_inc)
    result = TrainResult(model, alis, skipped)
    # Kaldi: the first update (from the equal alignment) keeps Gaussians with a count >= 3.
    result.log_like.append(_update(model, feats, alis, num_gauss, 3.0))
    for it in range(1, num_iters):
        if it in realign_iters:
            alis, failed = align_all(model, feats, {u: prons[u] for u in alis}, progress,
                                   nj)
            skipped.update(failed)
            result.alignments = alis
        elif progress is not None:
            progress(len(alis))
        if it <= max_iter_inc:
            num_gauss = min(totgauss, num_gauss + inc)
        result.log_like.append(_update(model, feats, alis, num_gauss, 10.0))
    # The final model's alignments (Kaldi aligns again with final.mdl in align_si.sh).
    alis, failed = align_all(model, feats, {u: prons[u] for u in alis}, progress,
                                   nj)
    skipped.update(failed)
    result.alignments = alis
    for utt in sorted(skipped, key=str.encode):
        _warn(utt, skipped[utt])
    return result


def write_alignments(out_dir: str | os.PathLike, model: GmmModel,
                     alignments: Mapping[str, Alignment], skipped: Mapping[str, str]) -> dict:
    """``ali.ark/ali.scp`` (transition-ids), ``pdf.ark/pdf.scp`` (pdf-ids, what
    ``blspeech train --train-ali scp:DIR/pdf.scp`` reads), ``num_pdfs`` (for
    ``--set head.num_pdfs=N``) and ``skipped.txt`` (``utt reason`` lines) in ``out_dir``."""
    from blspeech.io.fileio import atomic_write
    from blspeech.io.kaldi import write_int_vectors

    out = os.fspath(out_dir)
    os.makedirs(out, exist_ok=True)
    order = sorted(alignments, key=str.encode)
    write_int_vectors(os.path.join(out, "ali.ark"), os.path.join(out, "ali.scp"),
                      [(u, alignments[u].tids) for u in order])
    write_int_vectors(os.path.join(out, "pdf.ark"), os.path.join(out, "pdf.scp"),
                      [(u, alignments[u].pdfs) for u in order])
    with atomic_write(os.path.join(out, "num_pdfs")) as f:
        f.write(f"{model.num_pdfs}\n")
    with atomic_write(os.path.join(out, "skipped.txt")) as f:
        f.writelines(f"{u} {skipped[u]}\n" for u in sorted(skipped, key=str.encode))
    return {"dir": out, "pdf": os.path.join(out, "pdf.scp"), "num_pdfs": model.num_pdfs,
            "aligned": len(order), "skipped": len(skipped),
            "frames": int(sum(len(alignments[u].pdfs) for u in order))}


__all__ = ["ACOUSTIC_SCALE", "KALDI_REALIGN_ITERS", "Alignment", "GmmModel", "TrainResult",
           "align_all", "build_graph", "equal_alignment", "import_khg", "init_model",
           "train_mono", "transcripts_to_prons", "viterbi", "write_alignments"]
