"""Decoding: greedy search and beam search, batched, over any step function.

A decoder generates one token at a time, feeding back the token it chose. Both
searches here drive a ``step`` function and know nothing of the model:

    step(tokens, state) -> (log_probs, state, attention)
        tokens     (rows,)            the previous token of each row
        log_probs  (rows, vocab)      log P(next token | row so far, source)
        attention  (rows, source) or None: what the step read, for pictures

Greedy search keeps one hypothesis per sentence and takes the likeliest next
token. Beam search keeps ``beam_size`` hypotheses per sentence (rows
``sentence * beam_size + k``), extends each by every token, and keeps the
``beam_size`` best sums of log-probabilities; a finished hypothesis (it chose
EOS) stays in the beam unchanged. The winner is the best score divided by
``length ** length_penalty`` (0: raw sums, which favour short outputs; 1: the
mean log-probability per token). Every sentence stops at its own
``max_lengths`` (EOS is forced at the last step, at the model's probability of
it), so a model that never says EOS still ends.

With ``beam_size=1`` beam search is greedy search (the tests hold them equal).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

__all__ = ["Hypotheses", "beam_search", "greedy_search"]

Step = Callable[[Tensor, Any], tuple[Tensor, Any, "Tensor | None"]]
Reorder = Callable[[Any, Tensor], Any]  # (state, rows (new_rows,)) -> the state of those rows


class Hypotheses(NamedTuple):
    """The chosen output of each sentence."""

    tokens: list[list[int]]  # generated ids, EOS and what follows it removed
    scores: list[float]  # sum of log-probabilities, the EOS step included
    attention: list[Tensor | None]  # (generated + 1, source) per sentence: each step's weights


def greedy_search(step: Step, state: Any, max_lengths: Tensor, *, bos: int, eos: int) -> Hypotheses:
    """The likeliest next token at every step, for every sentence of a batch at once.

    Args:
        step: The decoder step (see the module docstring).
        state: The decoder's state for the batch's rows.
        max_lengths: ``(batch,)`` most tokens per sentence, EOS included (>= 1).
        bos, eos: Begin- and end-of-sentence ids.

    Returns:
        :class:`Hypotheses`.
    """
    batch = len(max_lengths)
    tokens = torch.full((batch,), bos, dtype=torch.long)
    finished = torch.zeros(batch, dtype=torch.bool)
    scores = torch.zeros(batch, dtype=torch.float64)
    chosen, weights = [], []
    for t in range(int(max_lengths.max())):
        log_probs, state, attention = step(tokens, state)  # (batch, vocab)
        log_probs = _force_end(log_probs.detach().cpu(), t + 1 >= max_lengths, eos)
        best, tokens = log_probs.max(dim=-1)  # (batch,)
        tokens = torch.where(finished, eos, tokens)
        scores += torch.where(finished, 0.0, best.double())
        chosen.append(tokens)
        weights.append(None if attention is None else attention.detach().cpu())
        finished |= tokens == eos
        if bool(finished.all()):
            break
    history = torch.stack(chosen, dim=1)  # (batch, steps)
    attention = torch.stack(weights, dim=1) if weights[0] is not None else None
    return _hypotheses(history, scores, attention, eos)


def beam_search(
    step: Step,
    state: Any,
    reorder: Reorder,
    max_lengths: Tensor,
    *,
    bos: int,
    eos: int,
    beam_size: int = 5,
    length_penalty: float = 1.0,
) -> Hypotheses:
    """The best of ``beam_size`` hypotheses kept per sentence, for a whole batch at once.

    Args:
        step: The decoder step (see the module docstring).
        state: The decoder's state for the batch's rows (one row per sentence).
        reorder: ``reorder(state, rows)``: the state of rows ``rows`` of ``state``
            (rows repeat when a hypothesis has several continuations in the beam).
        max_lengths: ``(batch,)`` most tokens per sentence, EOS included (>= 1).
        bos, eos: Begin- and end-of-sentence ids.
        beam_size: Hypotheses kept per sentence (>= 1).
        length_penalty: The winner maximises ``score / length ** length_penalty``.

    Returns:
        :class:`Hypotheses`.

    Raises:
        ValueError: ``beam_size`` is not a positive integer.
    """
    if isinstance(beam_size, bool) or not isinstance(beam_size, int) or beam_size < 1:
        raise ValueError(
            "Received an invalid value for argument `beam_size`, expected a positive integer, "
            f"got {beam_size!r}"
        )
    batch, k = len(max_lengths), beam_size
    state = reorder(state, torch.arange(batch).repeat_interleave(k))  # (batch * k) rows
    tokens = torch.full((batch * k,), bos, dtype=torch.long)
    scores = torch.full((batch, k), -torch.inf, dtype=torch.float64)
    scores[:, 0] = 0.0  # one live hypothesis at the start, not k copies of it
    finished = torch.zeros(batch, k, dtype=torch.bool)
    lengths = torch.zeros(batch, k, dtype=torch.float64)
    chosen, parents, weights = [], [], []
    for t in range(int(max_lengths.max())):
        log_probs, state, attention = step(tokens, state)  # (batch * k, vocab)
        vocab = log_probs.size(-1)
        log_probs = log_probs.detach().cpu().double().view(batch, k, vocab)
        log_probs = _force_end(log_probs, t + 1 >= max_lengths, eos)
        # A finished hypothesis continues only with EOS, at no cost: it keeps its score.
        done = torch.full((vocab,), -torch.inf, dtype=torch.float64)
        done[eos] = 0.0
        log_probs = torch.where(finished.unsqueeze(-1), done, log_probs)
        candidates = (scores.unsqueeze(-1) + log_probs).view(batch, k * vocab)
        scores, index = candidates.topk(k, dim=-1)  # (batch, k)
        parent, tokens_bk = index // vocab, index % vocab
        was_finished = finished.gather(1, parent)
        lengths = lengths.gather(1, parent) + (~was_finished).double()
        finished = was_finished | (tokens_bk == eos)
        chosen.append(tokens_bk)
        parents.append(parent)
        if attention is not None:
            weights.append(attention.detach().cpu().view(batch, k, -1))
        rows = (torch.arange(batch).unsqueeze(1) * k + parent).view(-1)  # (batch * k,)
        state = reorder(state, rows)
        tokens = tokens_bk.reshape(-1)
        if bool(finished.all()):
            break
    normalised = scores / lengths.clamp(min=1.0) ** length_penalty
    best = normalised.argmax(dim=-1)  # (batch,)
    history, attention = _backtrack(chosen, parents, weights, best)
    return _hypotheses(history, scores.gather(1, best.unsqueeze(1)).squeeze(1), attention, eos)


def _force_end(log_probs: Tensor, at_limit: Tensor, eos: int) -> Tensor:
    """Only EOS for the sentences at their last allowed step (``at_limit``: (batch,)), at
    the model's own log-probability of it (as fairseq does): a cut hypothesis is not
    scored better than one the model ended itself."""
    if not bool(at_limit.any()):
        return log_probs
    only_eos = torch.full_like(log_probs, -torch.inf)
    only_eos[..., eos] = log_probs[..., eos]
    shape = (-1,) + (1,) * (log_probs.dim() - 1)
    return torch.where(at_limit.view(shape), only_eos, log_probs)


def _backtrack(
    chosen: list[Tensor], parents: list[Tensor], weights: list[Tensor], best: Tensor
) -> tuple[Tensor, Tensor | None]:
    """The winning hypothesis' tokens ``(batch, steps)`` and attention ``(batch, steps,
    source)``, followed back from the last step through each step's parent beam."""
    batch = len(best)
    rows = torch.arange(batch)
    beam = best.clone()
    tokens, attention = [], []
    for t in range(len(chosen) - 1, -1, -1):
        tokens.append(chosen[t][rows, beam])
        parent = parents[t][rows, beam]
        if weights:
            attention.append(weights[t][rows, parent])  # read by the parent to choose it
        beam = parent
    history = torch.stack(tokens[::-1], dim=1)
    return history, torch.stack(attention[::-1], dim=1) if weights else None


def _hypotheses(history: Tensor, scores: Tensor, attention: Tensor | None, eos: int) -> Hypotheses:
    tokens, maps = [], []
    for b, row in enumerate(history.tolist()):
        end = row.index(eos) if eos in row else len(row)
        tokens.append(row[:end])
        maps.append(None if attention is None else attention[b, : end + 1])
    return Hypotheses(tokens, [float(s) for s in scores], maps)
