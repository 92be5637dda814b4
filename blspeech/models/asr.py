"""Acoustic models: an encoder from the registry plus an output head.

:class:`CTCModel` puts a CTC head (linear + log-softmax, blank id 0) on any encoder with
the ``forward(feats, lengths) -> (out, out_lengths)`` / ``output_size()`` interface. Its
``config`` is a plain dict (the encoder's registry config and the vocabulary size), so a
checkpoint rebuilds it with :func:`acoustic_model_from_config`.

Example:
    >>> import torch
    >>> from blspeech.models import build_model
    >>> am = CTCModel(build_model("bl_resnet_am_tiny"), vocab_size=30)
    >>> log_probs, lengths = am(torch.randn(2, 80, 40), torch.tensor([80, 61]))
    >>> log_probs.shape, lengths.tolist()
    (torch.Size([2, 20, 30]), [20, 16])
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .registry import build_model_from_config


class CTCModel(nn.Module):
    """Encoder + CTC head. ``forward`` returns per-frame log-probabilities and lengths."""

    def __init__(self, encoder: nn.Module, vocab_size: int) -> None:
        super().__init__()
        if vocab_size < 2:
            raise ValueError(f"a CTC vocabulary needs the blank and at least one token, "
                             f"got vocab_size={vocab_size}")
        self.encoder = encoder
        self.head = nn.Linear(encoder.output_size(), vocab_size)
        self.vocab_size = vocab_size
        self.blank_id = 0

    @property
    def config(self) -> dict[str, Any]:
        return {"head": "ctc", "vocab_size": self.vocab_size,
                "encoder": dict(self.encoder.config)}

    @property
    def time_subsampling(self) -> int:
        return int(self.encoder.time_subsampling)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        out, out_lengths = self.encoder(feats, lengths)
        return F.log_softmax(self.head(out).float(), dim=-1), out_lengths

    def loss(self, log_probs: torch.Tensor, out_lengths: torch.Tensor,
             targets: torch.Tensor, target_lengths: torch.Tensor) -> torch.Tensor:
        """CTC loss summed over the batch (divide by what the trainer normalizes by).

        ``targets`` is (B, S) padded or 1-D concatenated, as :func:`F.ctc_loss` accepts.
        Utterances whose targets cannot fit their frames give ``inf``: check lengths first
        (see :func:`too_long_for_ctc`).
        """
        return F.ctc_loss(log_probs.transpose(0, 1), targets, out_lengths, target_lengths,
                          blank=self.blank_id, reduction="sum", zero_infinity=False)


def too_long_for_ctc(targets: list[list[int]], frames: torch.Tensor) -> list[int]:
    """Indices of utterances whose token sequence needs more frames than they have.

    CTC needs one frame per token plus one blank between each pair of equal neighbours.
    """
    bad = []
    for i, seq in enumerate(targets):
        need = len(seq) + sum(a == b for a, b in zip(seq, seq[1:], strict=False))
        if need > int(frames[i]):
            bad.append(i)
    return bad


def acoustic_model_from_config(config: dict[str, Any]) -> nn.Module:
    """Rebuild an acoustic model from ``model.config`` (as stored in checkpoints)."""
    head = config.get("head")
    if head != "ctc":
        raise ValueError(f"unknown acoustic-model head {head!r} in config; expected 'ctc'")
    return CTCModel(build_model_from_config(config["encoder"]), int(config["vocab_size"]))
