"""The HMM-hybrid head's frame targets: Kaldi alignments, state priors, the token topology.

**Targets.** A hybrid model (:class:`~blspeech.models.asr.HybridModel`) is trained with
frame-level cross-entropy against one HMM state (Kaldi pdf-id) per frame, read from an
int-vector archive: the output of ``ali-to-pdf``, or a pipe that produces it::

    ark:gunzip -c exp/tri4_ali/ali.*.gz | ali-to-pdf exp/tri4_ali/final.mdl ark:- ark:- |

Kaldi alignments have one label per feature frame (``ali_subsampling=1``); alignments
made at a lower frame rate (``blspeech align`` labels the CTC model's output frames, e.g.
every 4th feature frame) give their rate as ``ali_subsampling``. :func:`read_alignments`
checks that an utterance's alignment covers its ``ceil(T / ali_subsampling)`` frames
(``T`` feature frames, up to ``tolerance`` frames; shorter ones repeat their last label),
and :func:`frame_targets` picks, for each encoder output frame ``t`` (time subsampling
``s``), the label at the centre of the feature frames it covers: feature frame
``t * s + s // 2``.

**Priors.** :func:`log_priors` counts the training targets per pdf (at the encoder's
output rate, the frames the loss sees), as Kaldi's nnet1 ``analyze-counts`` does. As in
nnet1's ``PdfPrior``, a pdf rarer than ``prior_floor`` (1e-10 of the frames; in practice:
never seen) gets the log prior :data:`UNSEEN_LOG_PRIOR` = ``sqrt(FLT_MAX)``, so its
log-likelihood is about ``-1.8e19``: the decoder never picks it, and the value stays
finite (no NaN from ``inf - inf``).

**Token topology.** Without a Kaldi GMM system, targets can come from a CTC model's
forced alignment (``blspeech align --hybrid-targets``, :func:`write_hybrid_targets`): each
token ``k`` of the CTC vocabulary becomes a two-pdf HMM, pdf ``2k - 1`` on its first frame
and ``2k`` on the frames after it (until the next token starts), and pdf 0 is the silence
before the first and after the last token. This is Kaldi's chain topology (a different pdf
for the first frame and the self-loop), so repeated tokens stay distinguishable without a
blank. Such a model decodes with :func:`blspeech.decoding.hybrid.viterbi_token_loop`.

Example:
    >>> ctc_path_to_pdfs([0, 0, 3, 0, 3, 3, 0, 5, 0, 0])
    array([0, 0, 5, 6, 5, 6, 6, 9, 0, 0], dtype=int32)
    >>> frame_targets(np.array([7, 7, 8, 8, 9, 9, 9]), out_frames=2, subsampling=4)
    array([8, 9], dtype=int32)
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from blspeech.errors import UserError

#: The log prior of a pdf rarer than the prior floor (e.g. never in the alignments): the
#: value itself, not its log. Kaldi nnet1, src/nnet/nnet-pdf-prior.cc, PdfPrior::PdfPrior
#: (used by ``nnet-forward --class-frame-counts``): ``if (rel_freq(i) < opts.prior_floor)
#: log_priors(i) = sqrt(FLT_MAX);`` "which disables DNN output when decoding". (nnet3
#: needs no such rule: its priors are average softmax outputs, never zero.)
UNSEEN_LOG_PRIOR = float(np.sqrt(np.float32(np.finfo(np.float32).max)))

#: ``nnet-forward --prior-floor``'s default (``PdfPriorOptions::prior_floor``).
PRIOR_FLOOR = 1e-10


# --- alignments ----------------------------------------------------------------------------


def read_alignments(rspecifier: str, utts: Sequence[str], num_frames: Sequence[int], *,
                    ali_subsampling: int = 1, tolerance: int = 2, num_pdfs: int | None = None,
                    where: str = "") -> tuple[dict[str, np.ndarray], list[str]]:
    """Read ``rspecifier``'s alignments of ``utts`` and fit them to the features.

    Returns ``(alignments, missing)``: each alignment has exactly ``ceil(T /
    ali_subsampling)`` labels (``T`` from ``num_frames``); ``missing`` lists utterances
    without one (Kaldi's trainers skip those). Raises :class:`UserError` naming the
    utterance when a length differs by more than ``tolerance`` or a label is negative or
    not below ``num_pdfs``.
    """
    from blspeech.io.kaldi import KaldiFormatError, read_int_vectors

    wanted = dict(zip(utts, num_frames, strict=True))
    found: dict[str, np.ndarray] = {}
    label = f"{where}: " if where else ""
    try:
        for utt, ali in read_int_vectors(rspecifier):
            if utt in wanted:
                found[utt] = np.asarray(ali, dtype=np.int32)
    except KaldiFormatError as e:
        raise UserError(f"{label}cannot read alignments {rspecifier}: {e}") from e
    if not found:
        raise UserError(f"{label}alignments {rspecifier} hold none of the {len(wanted)} "
                        "utterances of the data dir; check that they were made for it")
    out: dict[str, np.ndarray] = {}
    for utt, ali in found.items():
        frames = wanted[utt]
        want = -(-frames // ali_subsampling)
        if abs(len(ali) - want) > tolerance:
            rate = (f" at 1/{ali_subsampling} of the feature rate"
                    if ali_subsampling > 1 else "")
            raise UserError(
                f"{label}utterance {utt!r}: its alignment has {len(ali)} frames but its "
                f"{frames} feature frames need {want}{rate} (tolerance {tolerance}); align "
                "with the same features, or set head.ali_subsampling to the aligner's "
                "frame subsampling")
        if len(ali) and ali.min() < 0:
            raise UserError(f"{label}utterance {utt!r}: negative pdf-id {int(ali.min())} in "
                            f"{rspecifier}; pass pdf-ids (ali-to-pdf), not transition-ids")
        if num_pdfs is not None and len(ali) and ali.max() >= num_pdfs:
            raise UserError(f"{label}utterance {utt!r}: pdf-id {int(ali.max())} but the model "
                            f"has {num_pdfs} pdfs (head.num_pdfs); set it to the tree's "
                            "num-pdfs ('tree-info tree')")
        if len(ali) < want:  # a frame or two short: the last state continues
            ali = np.concatenate([ali, np.full(want - len(ali), ali[-1] if len(ali) else 0,
                                               dtype=np.int32)])
        out[utt] = ali[:want]
    missing = [u for u in utts if u not in out]
    return out, missing


def alignment_summary(alignments: Mapping[str, np.ndarray], missing: Sequence[str],
                      what: str) -> dict[str, Any]:
    """Counts for logs; warns once about utterances without an alignment."""
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        warnings.warn(f"{what}: {len(missing)} utterance(s) have no alignment and are left "
                      f"out: {shown}", stacklevel=2)
    return {"utterances": len(alignments), "missing": len(missing),
            "frames": int(sum(len(a) for a in alignments.values()))}


def frame_targets(ali: np.ndarray, out_frames: int, subsampling: int,
                  ali_subsampling: int = 1) -> np.ndarray:
    """The label of each of ``out_frames`` encoder frames: the alignment at the centre
    feature frame ``t * subsampling + subsampling // 2`` of output frame ``t``."""
    centre = np.arange(out_frames) * subsampling + subsampling // 2
    idx = np.minimum(centre // ali_subsampling, len(ali) - 1)
    return np.asarray(ali, dtype=np.int32)[idx]


def log_priors(targets: Sequence[np.ndarray], num_pdfs: int,
               prior_floor: float = PRIOR_FLOOR) -> torch.Tensor:
    """Log relative frequency of each pdf in ``targets``, as Kaldi nnet1's ``PdfPrior``:
    ``log(freq + 1e-20)``, and :data:`UNSEEN_LOG_PRIOR` where ``freq < prior_floor``.

    Example:
        >>> log_priors([np.array([0, 0, 1]), np.array([1])], 3).exp()[:2]
        tensor([0.5000, 0.5000])
    """
    counts = np.zeros(num_pdfs, dtype=np.float64)
    for t in targets:
        counts += np.bincount(t, minlength=num_pdfs)[:num_pdfs]
    total = counts.sum()
    if total <= 0:
        raise ValueError("no frames to estimate priors from")
    freq = counts / total
    logp = np.where(freq < prior_floor, UNSEEN_LOG_PRIOR, np.log(freq + 1e-20))
    return torch.from_numpy(logp.astype(np.float32))


# --- the token topology --------------------------------------------------------------------


def token_topology_pdfs(vocab_size: int) -> int:
    """Number of pdfs of the token topology for a CTC vocabulary (blank included)."""
    return 2 * (vocab_size - 1) + 1


def ctc_path_to_pdfs(path: Sequence[int], blank: int = 0) -> np.ndarray:
    """Token-topology pdfs of a CTC best path (see the module notes).

    A token occupies the frames from its first non-blank frame up to the next token's
    (blank frames in between continue it); blanks before the first and after the last
    token are silence (pdf 0).
    """
    path = np.asarray(path, dtype=np.int64)
    out = np.zeros(len(path), dtype=np.int32)
    current, last_token_end = 0, -1
    prev = blank
    for t, tok in enumerate(path.tolist()):
        if tok != blank:
            last_token_end = t
            if tok != prev:  # a new occurrence starts
                current = tok
                out[t] = 2 * tok - 1
                prev = tok
                continue
            out[t] = 2 * tok
        elif current:
            out[t] = 2 * current
        prev = tok
    out[last_token_end + 1:] = 0
    return out


def write_hybrid_targets(out_dir: str | os.PathLike, paths: Mapping[str, Sequence[int]],
                         vocab_size: int, ali_subsampling: int) -> dict[str, Any]:
    """Write token-topology targets of CTC paths: ``pdf.ark``/``pdf.scp`` and ``topology``.

    ``topology`` (``key value`` lines) records ``num_pdfs``, ``topology token`` and
    ``ali_subsampling``, the values the hybrid training config needs.
    """
    from blspeech.io.fileio import atomic_write
    from blspeech.io.kaldi import write_int_vectors

    out = os.fspath(out_dir)
    order = sorted(paths, key=str.encode)
    write_int_vectors(os.path.join(out, "pdf.ark"), os.path.join(out, "pdf.scp"),
                      [(u, ctc_path_to_pdfs(paths[u])) for u in order])
    num_pdfs = token_topology_pdfs(vocab_size)
    with atomic_write(os.path.join(out, "topology")) as f:
        f.write(f"topology token\nnum_pdfs {num_pdfs}\nali_subsampling {ali_subsampling}\n")
    return {"pdf": os.path.join(out, "pdf.scp"), "num_pdfs": num_pdfs,
            "ali_subsampling": ali_subsampling}


def read_topology(path: str | os.PathLike) -> dict[str, Any]:
    """The ``topology`` file of :func:`write_hybrid_targets` as a dict (ints as ints)."""
    from blspeech.io.kaldi import read_table

    table = read_table(path, check_sorted=False)
    try:
        out: dict[str, Any] = {k: int(e.value) if e.value.isdigit() else e.value
                               for k, e in table.items()}
        if out.get("topology") != "token" or not isinstance(out.get("num_pdfs"), int) \
                or not isinstance(out.get("ali_subsampling"), int):
            raise ValueError
    except ValueError as e:
        raise UserError(f"{os.fspath(path)}: expected 'topology token', 'num_pdfs N' and "
                        "'ali_subsampling N' lines (from blspeech align --hybrid-targets)"
                        ) from e
    return out


__all__ = ["PRIOR_FLOOR", "UNSEEN_LOG_PRIOR", "alignment_summary", "ctc_path_to_pdfs",
           "frame_targets", "log_priors", "read_alignments", "read_topology",
           "token_topology_pdfs", "write_hybrid_targets"]
