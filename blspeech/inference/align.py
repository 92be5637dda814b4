"""CTC forced alignment of a data dir's transcripts with a trained acoustic model.

Each transcript is normalized and tokenized as in training, then aligned to the model's
log-probabilities with ``torchaudio.functional.forced_align`` (the single best CTC path
that spells exactly that token sequence). Outputs in ``out_dir``:

* ``ali.ark`` + ``ali.scp``: per utterance one token id per encoder output frame (blank
  0), Kaldi int vectors (``copy-int-vector``, :func:`blspeech.io.kaldi.read_int_vectors`);
* ``ctm``: word times (``utt 1 start duration word``), a word lasting from the first frame
  of its first token to the last frame of its last token;
* ``unaligned.txt``: utterances that could not be aligned and why (a transcript with
  more tokens than the model has frames for it), also reported with a warning;
* with ``hybrid_targets``: ``pdf.ark`` + ``pdf.scp``, the alignments turned into frame
  targets of a hybrid head in the token topology
  (:func:`blspeech.data.alignments.ctc_path_to_pdfs`), and ``topology`` (``num_pdfs``,
  ``ali_subsampling``: the model's time subsampling), for ``blspeech train`` with
  ``head.type hybrid``.

Example:
    >>> s = align_data_dir("exp/ctc/best.pt", "data/train", "exp/ctc/ali")  # doctest: +SKIP
    >>> s["aligned"], s["unaligned"]                                          # doctest: +SKIP
    (998, 2)
"""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Any

import numpy as np
import torch

from blspeech.errors import UserError
from blspeech.inference.model import Bundle, load_acoustic_model


def token_spans(path: list[int], blank: int = 0) -> list[tuple[int, int, int]]:
    """``(token, first frame, last frame)`` of each token occurrence in a CTC path.

    Example:
        >>> token_spans([0, 5, 5, 0, 5, 7, 7, 0])
        [(5, 1, 2), (5, 4, 4), (7, 5, 6)]
    """
    spans: list[tuple[int, int, int]] = []
    prev = blank
    for t, tok in enumerate(path):
        if tok != blank:
            if tok == prev:
                spans[-1] = (tok, spans[-1][1], t)
            else:
                spans.append((tok, t, t))
        prev = tok
    return spans


def align_utterance(log_probs: torch.Tensor, targets: list[int], blank: int = 0
                    ) -> tuple[list[int], float] | None:
    """Best CTC path ``(T,)`` through ``targets`` and its log-probability; None if the
    transcript needs more frames than there are.

    Example:
        >>> lp = torch.log_softmax(torch.randn(6, 4), dim=-1)
        >>> path, score = align_utterance(lp, [2, 2, 3])
        >>> len(path), [t for t, *_ in token_spans(path)]
        (6, [2, 2, 3])
        >>> align_utterance(lp[:3], [2, 2, 3]) is None   # needs a blank between the 2s
        True
    """
    import torchaudio.functional as AF

    frames = log_probs.shape[0]
    need = len(targets) + sum(a == b for a, b in zip(targets, targets[1:], strict=False))
    if need > frames:
        return None
    lp = log_probs.detach().float().cpu()
    if not targets:  # nothing to say: all blank
        return [blank] * frames, float(lp[:, blank].sum())
    path, scores = AF.forced_align(lp[None], torch.tensor([targets], dtype=torch.int32),
                                   blank=blank)
    return path[0].tolist(), float(scores[0].sum())


def align_data_dir(checkpoint: str | os.PathLike | Bundle,
                   data_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                   max_frames: int = 20000, num_workers: int = 0, device: str = "cpu",
                   allow_wavscp_commands: bool | None = None, progress: bool = True,
                   hybrid_targets: bool = False) -> dict[str, Any]:
    """Force-align every transcript of ``data_dir``; write ``ali.ark/.scp``, ``ctm`` and
    ``unaligned.txt`` (see the module notes) to ``out_dir``.

    Outputs are written atomically after all utterances are aligned. Returns a summary:
    ``utterances``, ``aligned``, ``unaligned`` (count), ``frames``, ``avg_logprob``
    (per frame, over aligned utterances) and the output paths.
    """
    bundle = (checkpoint if isinstance(checkpoint, Bundle)
              else load_acoustic_model(checkpoint, device))
    if bundle.is_hybrid:
        raise UserError(f"{bundle.path} is a hybrid model; forced alignment needs a CTC model")
    data_dir, out_dir = os.fspath(data_dir), os.fspath(out_dir)
    if not os.path.isfile(os.path.join(data_dir, "text")):
        raise UserError(f"{os.path.join(data_dir, 'text')} not found: alignment needs "
                        "transcripts")
    ds = bundle.dataset(data_dir, transcripts=True,
                        allow_wavscp_commands=allow_wavscp_commands)
    alis, ctm, unaligned, total_score, total_frames = _align_all(
        bundle, ds, max_frames=max_frames, num_workers=num_workers, progress=progress,
        desc="align")
    scp, bad_path = _write_alignments(out_dir, alis, ctm, unaligned, len(ds))
    targets = None
    if hybrid_targets:
        from blspeech.data.alignments import write_hybrid_targets

        order = sorted(alis, key=str.encode)
        targets = write_hybrid_targets(out_dir, {u: alis[u] for u in order},
                                       bundle.tokenizer.vocab_size,
                                       int(getattr(bundle.model, "time_subsampling", 1)))
    return {"utterances": len(ds), "aligned": len(alis), "unaligned": len(unaligned),
            "frames": total_frames,
            "avg_logprob": round(total_score / total_frames, 4) if total_frames else None,
            "ali": scp, "ctm": os.path.join(out_dir, "ctm"),
            "unaligned_list": bad_path if unaligned else None, "hybrid_targets": targets}


def _align_all(bundle: Bundle, ds: Any, **batching: Any
               ) -> tuple[dict[str, np.ndarray], dict[str, list[str]], dict[str, str],
                          float, int]:
    """Every utterance's token path and CTM lines, the unaligned ones with the reason, and
    the total log-probability and frames of the aligned ones."""
    from blspeech.decoding.ctc import format_ctm, word_times

    tok, norm = bundle.tokenizer, bundle.normalizer
    pieces = tok.tokens
    alis: dict[str, np.ndarray] = {}
    ctm: dict[str, list[str]] = {}
    unaligned: dict[str, str] = {}
    total_score, total_frames = 0.0, 0
    for batch, log_probs, out_lengths in bundle.batches(ds, **batching):
        log_probs = log_probs.cpu()
        for i, (utt, text) in enumerate(zip(batch["utts"], batch["texts"], strict=True)):
            frames = int(out_lengths[i])
            targets = tok.encode(norm(text or ""))
            result = align_utterance(log_probs[i, :frames], targets, tok.blank_id)
            if result is None:
                unaligned[utt] = (f"{len(targets)} tokens need more than the {frames} output "
                                  f"frames of {int(batch['lengths'][i])} feature frames")
                continue
            path, score = result
            alis[utt] = np.asarray(path, dtype=np.int32)
            total_score += score
            total_frames += frames
            spans = token_spans(path, tok.blank_id)
            words = word_times([pieces[t] for t, _, _ in spans], [s for _, s, _ in spans],
                               bundle.frame_seconds, end_frames=[e for _, _, e in spans])
            ctm[utt] = format_ctm(utt, words)
    return alis, ctm, unaligned, total_score, total_frames


def _write_alignments(out_dir: str, alis: dict[str, np.ndarray], ctm: dict[str, list[str]],
                      unaligned: dict[str, str], total: int) -> tuple[str, str]:
    """``ali.ark/.scp``, ``ctm`` and ``unaligned.txt`` (removed when every utterance was
    aligned), each atomically; warns naming the unaligned utterances. Returns the scp and
    the unaligned list's paths."""
    from blspeech.io.fileio import atomic_write
    from blspeech.io.kaldi import write_int_vectors

    os.makedirs(out_dir, exist_ok=True)
    ark, scp = os.path.join(out_dir, "ali.ark"), os.path.join(out_dir, "ali.scp")
    order = sorted(alis, key=str.encode)
    write_int_vectors(ark, scp, [(utt, alis[utt]) for utt in order])
    with atomic_write(os.path.join(out_dir, "ctm")) as f:
        for utt in order:
            f.writelines(line + "\n" for line in ctm[utt])
    bad_path = os.path.join(out_dir, "unaligned.txt")
    if unaligned:
        with atomic_write(bad_path) as f:
            for utt in sorted(unaligned, key=str.encode):
                f.write(f"{utt} {unaligned[utt]}\n")
        shown = ", ".join(sorted(unaligned)[:5]) + (", ..." if len(unaligned) > 5 else "")
        warnings.warn(f"{len(unaligned)} of {total} utterances could not be aligned (their "
                      f"transcripts are too long for the audio), listed in {bad_path}: "
                      f"{shown}", stacklevel=3)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(bad_path)  # from an earlier run; this one aligned everything
    return scp, bad_path

__all__ = ["align_data_dir", "align_utterance", "token_spans"]
