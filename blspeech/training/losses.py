"""The training losses of the two heads, summed over a batch so that a step can normalize
by utterances or frames counted over all its batches and ranks (see
:mod:`blspeech.training.trainer`): CTC (:func:`ctc_loss_sum`) and the hybrid head's frame
cross-entropy (:func:`hybrid_loss_sum`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from blspeech.data.alignments import frame_targets


def ctc_loss_sum(log_probs: torch.Tensor, out_lengths: torch.Tensor,
                 targets: Sequence[Sequence[int]], loss_norm: str = "utterance", blank: int = 0
                 ) -> tuple[torch.Tensor, int, torch.Tensor | None, list[int]]:
    """Summed CTC loss of a batch, leaving out utterances too long for their frames.

    Returns ``(loss_sum, count, per_utterance, skipped)``: ``count`` is the number of
    utterances used (``loss_norm='utterance'``) or their output frames (``'frame'``),
    ``per_utterance`` the losses of the utterances used (None if none), ``skipped`` the
    batch indices left out. When nothing is left the sum is a zero that still reaches
    every parameter, so DDP's gradient sync runs on every rank.

    Example:
        >>> lp = torch.randn(2, 5, 4).log_softmax(-1)
        >>> s, n, per, skipped = ctc_loss_sum(lp, torch.tensor([5, 2]), [[1, 2], [3, 3, 3]])
        >>> n, skipped, per.shape
        (1, [1], torch.Size([1]))
    """
    from blspeech.models.asr import too_long_for_ctc

    # One device-to-host copy of the lengths, not one per utterance.
    bad = set(too_long_for_ctc([list(t) for t in targets], out_lengths.cpu()))
    keep = [i for i in range(len(targets)) if i not in bad]
    if not keep:
        return log_probs.sum() * 0.0, 0, None, sorted(bad)
    idx = torch.tensor(keep, device=log_probs.device)
    lens = out_lengths.to(log_probs.device).index_select(0, idx)
    ys = torch.tensor([t for i in keep for t in targets[i]], dtype=torch.long,
                      device=log_probs.device)
    ylens = torch.tensor([len(targets[i]) for i in keep], dtype=torch.long)
    # Per utterance (not CTCModel.loss's sum) to name the utterances of a non-finite loss.
    per = F.ctc_loss(log_probs.index_select(0, idx).transpose(0, 1), ys, lens, ylens,
                     blank=blank, reduction="none", zero_infinity=False)
    count = len(keep) if loss_norm == "utterance" else int(lens.sum())
    return per.sum(), count, per, sorted(bad)


def hybrid_loss_sum(log_probs: torch.Tensor, out_lengths: torch.Tensor,
                    alignments: Sequence[np.ndarray], subsampling: int, *,
                    ali_subsampling: int = 1, label_smoothing: float = 0.0,
                    loss_norm: str = "frame") -> tuple[torch.Tensor, int, torch.Tensor, int]:
    """Frame cross-entropy of a batch summed over frames and utterances.

    Returns ``(loss_sum, count, per_utterance, correct)``: ``count`` is the number of
    frames (``loss_norm='frame'``) or utterances, ``correct`` the frames whose most likely
    pdf is the target (frame accuracy = correct / frames).
    """
    lens = out_lengths.cpu().tolist()
    b, t_max = log_probs.shape[:2]
    tgt = np.full((b, t_max), -100, dtype=np.int64)
    for i, (ali, n) in enumerate(zip(alignments, lens, strict=True)):
        tgt[i, :n] = frame_targets(ali, n, subsampling, ali_subsampling)
    target = torch.from_numpy(tgt).to(log_probs.device)
    # log_probs are normalized already, so cross_entropy's log_softmax leaves them as is.
    per_frame = F.cross_entropy(log_probs.transpose(1, 2), target, ignore_index=-100,
                                label_smoothing=label_smoothing, reduction="none")
    per = per_frame.sum(dim=1)
    valid = target != -100
    correct = int(((log_probs.argmax(-1) == target) & valid).sum())
    count = int(valid.sum()) if loss_norm == "frame" else b
    return per.sum(), count, per, correct


__all__ = ["ctc_loss_sum", "hybrid_loss_sum"]
