"""Index arithmetic on the packed layout: which row is which step of which sequence.

Step ``t`` owns rows ``offsets[t] : offsets[t] + batch_sizes[t]``, and row
``offsets[t] + n`` belongs to sequence ``n`` (sequences sorted longest first).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def step_offsets(batch_sizes: Sequence[int], device: torch.device) -> tuple[Tensor, Tensor]:
    """Per packed row, its step and its position in the batch.

    Returns:
        ``(offsets, step, row)``: offsets ``(L + 1,)`` of each step's first
        row; ``step`` and ``row`` ``(R,)`` the step and batch position of each row.
    """
    sizes = torch.tensor(batch_sizes, device=device)
    offsets = torch.zeros(len(batch_sizes) + 1, dtype=torch.long, device=device)
    offsets[1:] = torch.cumsum(sizes, 0)
    step = torch.repeat_interleave(torch.arange(len(batch_sizes), device=device), sizes)
    row = torch.arange(int(offsets[-1]), device=device) - offsets[step]
    return offsets, step, row


def last_step_rows(batch_sizes: Sequence[int], device: torch.device) -> Tensor:
    """Packed row index of each sequence's last step, in batch order ``(N,)``."""
    sizes = torch.tensor(batch_sizes, device=device)
    offsets = torch.cumsum(sizes, 0) - sizes
    batch = torch.arange(batch_sizes[0], device=device)
    lengths = (sizes[None, :] > batch[:, None]).sum(1)  # (N,)
    return offsets[lengths - 1] + batch


def previous_state_rows(batch_sizes: Sequence[int], reverse: bool, device: torch.device) -> Tensor:
    """For each packed row, the row holding its previous state in ``cat([out, h0])``.

    The previous state of step ``t`` is step ``t - 1`` (``t + 1`` in reverse)
    for the sequences that ran there, and ``h0`` (row ``R + n``) for those that
    start at ``t``.
    """
    offsets, step, row = step_offsets(batch_sizes, device)
    total = int(offsets[-1])
    from_h0 = total + row
    if not reverse:
        from_out = offsets[(step - 1).clamp(min=0)] + row
        return torch.where(step == 0, from_h0, from_out)
    sizes_next = torch.tensor([*batch_sizes[1:], 0], device=device)[step]
    from_out = offsets[step + 1] + row
    return torch.where(row < sizes_next, from_out, from_h0)
