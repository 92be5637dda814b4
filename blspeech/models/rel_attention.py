"""Multi-head self-attention with relative positional encoding (Transformer-XL style).

torchaudio's Conformer attends with :class:`torch.nn.MultiheadAttention` and has no
positional information at all: its convolution module is the only thing that knows the
order of frames. ESPnet (``RelPositionMultiHeadedAttention``) and icefall give the
Conformer the relative positional encoding of Transformer-XL (Dai et al., 2019, section
3.3), which :class:`RelPositionMultiheadAttention` implements: for query frame ``i`` and
key frame ``j`` the score is

    ``((q_i + u) . k_j + (q_i + v) . W_p p(i - j)) / sqrt(d_head)``

with ``p(r)`` the sinusoidal embedding of the relative position ``r`` (from ``T - 1`` down
to ``-(T - 1)``), ``W_p`` a linear map without bias and ``u``, ``v`` learned per-head
biases. It takes and returns what ``nn.MultiheadAttention`` does for ``(T, B, D)`` inputs
(``key_padding_mask`` True at padded keys), so it replaces the attention of each
torchaudio ``ConformerLayer`` as it is.

Example:
    >>> attn = RelPositionMultiheadAttention(embed_dim=16, num_heads=2)
    >>> x = torch.randn(5, 3, 16)                    # (T, B, D)
    >>> out, _ = attn(x, x, x, key_padding_mask=torch.zeros(3, 5, dtype=torch.bool))
    >>> out.shape
    torch.Size([5, 3, 16])
"""

from __future__ import annotations

import math

import torch
from torch import nn

from blspeech.errors import UserError


def relative_positions(length: int, dim: int, device: torch.device | None = None,
                       dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Sinusoidal embeddings ``(2 * length - 1, dim)`` of the relative positions
    ``length - 1, ..., 0, ..., -(length - 1)`` (that order)."""
    positions = torch.arange(length - 1, -length, -1, device=device, dtype=torch.float32)
    freqs = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32)
                      * (-math.log(10000.0) / dim))
    angles = positions[:, None] * freqs[None, :]
    pe = torch.zeros(positions.shape[0], dim, device=device)
    pe[:, 0::2] = torch.sin(angles)
    pe[:, 1::2] = torch.cos(angles[:, : dim // 2])
    return pe.to(dtype)


class RelPositionMultiheadAttention(nn.Module):
    """Self-attention with Transformer-XL relative positions (see the module notes).

    Args:
        embed_dim: model width ``D`` (a multiple of ``num_heads``).
        num_heads: attention heads.
        dropout: dropout on the attention weights.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise UserError(f"d_model {embed_dim} is not a multiple of num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.linear_q = nn.Linear(embed_dim, embed_dim)
        self.linear_k = nn.Linear(embed_dim, embed_dim)
        self.linear_v = nn.Linear(embed_dim, embed_dim)
        self.linear_out = nn.Linear(embed_dim, embed_dim)
        self.linear_pos = nn.Linear(embed_dim, embed_dim, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(num_heads, self.head_dim))
        self.pos_bias_v = nn.Parameter(torch.zeros(num_heads, self.head_dim))
        nn.init.xavier_uniform_(self.pos_bias_u)
        nn.init.xavier_uniform_(self.pos_bias_v)
        self.dropout = nn.Dropout(dropout)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """``(T, B, D)`` -> ``(B, H, T, d_head)``."""
        t, b, _ = x.shape
        return x.reshape(t, b, self.num_heads, self.head_dim).permute(1, 2, 0, 3)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = False
                ) -> tuple[torch.Tensor, None]:
        """Self-attention over ``(T, B, D)`` (``query``, ``key`` and ``value`` are the same
        tensor in a Conformer layer); returns ``(output (T, B, D), None)``."""
        t, b, d = query.shape
        q = self._heads(self.linear_q(query))
        k = self._heads(self.linear_k(key))
        v = self._heads(self.linear_v(value))
        pos = relative_positions(t, d, query.device, query.dtype)
        p = self.linear_pos(pos).reshape(2 * t - 1, self.num_heads, self.head_dim)
        content = torch.matmul(q + self.pos_bias_u[:, None], k.transpose(-2, -1))
        position = torch.einsum("bhid,rhd->bhir", q + self.pos_bias_v[:, None], p)
        # Column r of `position` is relative position t - 1 - r; key j of query i is at
        # relative position i - j: column t - 1 - i + j.
        steps = torch.arange(t, device=query.device)
        index = (t - 1 - steps[:, None] + steps[None, :]).expand(b, self.num_heads, t, t)
        scores = (content + position.gather(-1, index)) / math.sqrt(self.head_dim)
        if key_padding_mask is not None:
            scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
        weights = self.dropout(torch.softmax(scores, dim=-1))
        out = torch.matmul(weights, v).permute(2, 0, 1, 3).reshape(t, b, d)
        return self.linear_out(out), None


def uses_self_attention(module: nn.Module) -> bool:
    """Whether any layer of ``module`` attends over the whole sequence (its outputs then
    depend on every frame: no chunked or streaming equivalent)."""
    return any(isinstance(m, nn.MultiheadAttention | RelPositionMultiheadAttention)
               for m in module.modules())


__all__ = ["RelPositionMultiheadAttention", "relative_positions", "uses_self_attention"]
