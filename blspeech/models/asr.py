"""Acoustic models: an encoder from the registry plus an output head.

Both heads sit on any encoder with the ``forward(feats, lengths) -> (out, out_lengths)`` /
``output_size()`` interface, and both ``forward`` to per-frame log-probabilities:

* :class:`CTCModel`: a CTC head (linear + log-softmax over tokens, blank id 0).
* :class:`HybridModel`: an HMM-hybrid head (linear + log-softmax over HMM states, Kaldi's
  pdf-ids) with the state log-priors as a buffer, so :meth:`HybridModel.log_likelihoods`
  gives the scaled likelihoods a Kaldi decoder (``latgen-faster-mapped``) expects.

A model's ``config`` is a plain dict (the head, its size and the encoder's registry
config), so a checkpoint rebuilds it with :func:`acoustic_model_from_config`.

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

from blspeech.errors import UserError
from blspeech.models.registry import build_model_from_config


class _EncoderWithHead(nn.Module):
    """An encoder and a linear output layer; ``forward`` gives log-softmax outputs."""

    def __init__(self, encoder: nn.Module, outputs: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.output_size(), outputs)

    @property
    def time_subsampling(self) -> int:
        return int(self.encoder.time_subsampling)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        out, out_lengths = self.encoder(feats, lengths)
        return F.log_softmax(self.head(out).float(), dim=-1), out_lengths


class CTCModel(_EncoderWithHead):
    """Encoder + CTC head. ``forward`` returns per-frame log-probabilities and lengths."""

    def __init__(self, encoder: nn.Module, vocab_size: int) -> None:
        if vocab_size < 2:
            raise UserError(f"a CTC vocabulary needs the blank and at least one token, "
                            f"got vocab_size={vocab_size}")
        super().__init__(encoder, vocab_size)
        self.vocab_size = vocab_size
        self.blank_id = 0

    @property
    def config(self) -> dict[str, Any]:
        return {"head": "ctc", "vocab_size": self.vocab_size,
                "encoder": dict(self.encoder.config)}

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


#: HMM topologies a :class:`HybridModel` may record. ``token``: each token of a CTC
#: vocabulary is a two-pdf HMM (pdf ``2k - 1`` on its first frame, ``2k`` on the frames
#: after), pdf 0 is silence; see :mod:`blspeech.data.alignments`. None: the pdfs are a Kaldi tree's.
TOPOLOGIES = (None, "token")


class HybridModel(_EncoderWithHead):
    """Encoder + HMM-hybrid head: log posteriors over ``num_pdfs`` HMM states per frame.

    ``log_prior`` (a buffer, so it is saved and loaded with the weights) holds the log
    prior of each pdf, estimated from training alignment counts
    (:func:`blspeech.data.alignments.log_priors`); :meth:`log_likelihoods` divides the posteriors
    by the priors, ``log p(x|s) = log p(s|x) - scale * log p(s)`` up to a constant, as
    hybrid decoding needs.

    Example:
        >>> import torch
        >>> from blspeech.models import build_model
        >>> am = HybridModel(build_model("resnet_am_tiny"), num_pdfs=50)
        >>> log_post, lengths = am(torch.randn(1, 40, 40), torch.tensor([40]))
        >>> log_post.shape, bool(torch.allclose(log_post.exp().sum(-1), torch.ones(1, 10)))
        (torch.Size([1, 10, 50]), True)
        >>> ll, _ = am.log_likelihoods(torch.randn(1, 40, 40), torch.tensor([40]))
        >>> ll.shape
        torch.Size([1, 10, 50])
    """

    def __init__(self, encoder: nn.Module, num_pdfs: int, topology: str | None = None
                 ) -> None:
        if num_pdfs < 1:
            raise UserError(f"a hybrid head needs at least one pdf, got num_pdfs={num_pdfs}")
        if topology not in TOPOLOGIES:
            raise UserError(f"unknown topology {topology!r}; expected one of {TOPOLOGIES}")
        if topology == "token" and num_pdfs % 2 == 0:
            raise UserError(f"the token topology has 2 x tokens + 1 pdfs (an odd number), "
                            f"got num_pdfs={num_pdfs}")
        super().__init__(encoder, num_pdfs)
        self.num_pdfs = num_pdfs
        self.topology = topology
        # Uniform until estimated; a log prior of 0 for every pdf leaves posteriors as is.
        self.register_buffer("log_prior", torch.zeros(num_pdfs))

    @property
    def config(self) -> dict[str, Any]:
        return {"head": "hybrid", "num_pdfs": self.num_pdfs, "topology": self.topology,
                "encoder": dict(self.encoder.config)}

    def log_likelihoods(self, feats: torch.Tensor, lengths: torch.Tensor,
                        prior_scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled log-likelihoods ``log_posterior - prior_scale * log_prior`` and lengths."""
        log_post, out_lengths = self(feats, lengths)
        return self.to_log_likelihoods(log_post, prior_scale), out_lengths

    def to_log_likelihoods(self, log_post: torch.Tensor, prior_scale: float = 1.0
                           ) -> torch.Tensor:
        """Log posteriors (as :meth:`forward` returns them) to scaled log-likelihoods."""
        if prior_scale == 0:
            return log_post
        return log_post - prior_scale * self.log_prior.to(log_post)


def acoustic_model_from_config(config: dict[str, Any]) -> nn.Module:
    """Rebuild an acoustic model from ``model.config`` (as stored in checkpoints)."""
    head = config.get("head")
    if head == "ctc":
        return CTCModel(build_model_from_config(config["encoder"]), int(config["vocab_size"]))
    if head == "hybrid":
        return HybridModel(build_model_from_config(config["encoder"]),
                           int(config["num_pdfs"]), config.get("topology"))
    raise UserError(f"unknown acoustic-model head {head!r} in config; expected 'ctc' or "
                    "'hybrid'")
