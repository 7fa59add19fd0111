"""Attention: which source steps each decoder step reads, and what it reads there.

For decoder outputs ``q_t`` and encoder outputs ``m_s`` (the "memory"),

    score(t, s) = v . tanh(W_k m_s + W_q q_t + b)        "additive" (Bahdanau et al. 2015)
    score(t, s) = q_t . (W_k m_s)                         "multiplicative" (Luong et al. 2015)
    a(t, .)     = softmax over the source's valid steps of score(t, .)
    context_t   = sum_s a(t, s) m_s

Padding is never attended: its scores are -inf before the softmax, so a
sentence padded longer gets exactly the same weights. ``W_k m_s`` does not
depend on the decoder step, so :meth:`Attention.keys` computes it once per
sentence and every step reuses it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnkit.toolkit.arguments import invalid_argument

ATTENTIONS = ("additive", "multiplicative")

__all__ = ["ATTENTIONS", "Attention"]


class Attention(nn.Module):
    """Masked additive or multiplicative attention over a memory.

    Args:
        kind: "additive" or "multiplicative".
        query_size: Features of a decoder output ``q_t``.
        memory_size: Features of an encoder output ``m_s``.
        attention_size: Width of the additive score's hidden layer (additive only).

    Shape:
        - keys(memory): memory ``(batch, source, memory_size)`` -> ``(batch, source, K)``
          (``K`` = attention_size, or query_size for multiplicative).
        - forward(query, keys, memory, mask): query ``(batch, target, query_size)``,
          mask ``(batch, source)`` True on real steps -> context
          ``(batch, target, memory_size)`` and weights ``(batch, target, source)``.

    Example:
        >>> attention = Attention("additive", 8, 12, 16)
        >>> memory, mask = torch.randn(2, 5, 12), torch.tensor([[1] * 5, [1] * 3 + [0] * 2]).bool()
        >>> context, weights = attention(torch.randn(2, 4, 8), attention.keys(memory), memory, mask)
        >>> context.shape, weights[1, :, 3:].abs().sum().item()  # padding gets no weight
        (torch.Size([2, 4, 12]), 0.0)
    """

    def __init__(self, kind: str, query_size: int, memory_size: int, attention_size: int) -> None:
        super().__init__()
        if kind not in ATTENTIONS:
            raise invalid_argument("attention", f"one of {ATTENTIONS}", kind)
        self.kind = kind
        if kind == "additive":
            self.key = nn.Linear(memory_size, attention_size, bias=False)
            self.query = nn.Linear(query_size, attention_size)
            self.score = nn.Linear(attention_size, 1, bias=False)
        else:
            self.key = nn.Linear(memory_size, query_size, bias=False)

    def keys(self, memory: Tensor) -> Tensor:
        """``W_k m_s`` for every source step, once per sentence."""
        return self.key(memory)

    def forward(
        self, query: Tensor, keys: Tensor, memory: Tensor, mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        if self.kind == "additive":
            hidden = torch.tanh(keys.unsqueeze(1) + self.query(query).unsqueeze(2))  # (B, T, S, K)
            scores = self.score(hidden).squeeze(-1)  # (batch, target, source)
        else:
            scores = torch.bmm(query, keys.transpose(1, 2))  # (batch, target, source)
        scores = scores.masked_fill(~mask.unsqueeze(1), -torch.inf)
        weights = torch.softmax(scores, dim=-1)  # (batch, target, source)
        return torch.bmm(weights, memory), weights

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"
