"""How good translations are: BLEU and chrF with sacreBLEU, and BLEU on word tokens.

- ``bleu`` and ``chrf``: sacreBLEU's corpus scores on the detokenised text, cased,
  with sacreBLEU's own tokeniser (13a): the figures to share, with their
  signatures, which say exactly how they were computed.
- ``word_bleu``: 4-gram corpus BLEU on lowercased spaCy word tokens, one
  reference, no smoothing: the way bentrevett/pytorch-seq2seq computes the
  figures it publishes for Multi30k (torchtext's ``bleu_score``), for comparing
  with them. ``spacy.blank(lang)`` tokenisers need no model download. sacreBLEU
  with ``tokenize="none"`` on the space-joined tokens computes the same formula
  (clipped n-gram precisions, their geometric mean, the brevity penalty).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

__all__ = ["chrf", "corpus_scores", "has_spacy", "sacre_bleu", "word_bleu", "word_tokens"]


def sacre_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> tuple[float, str]:
    """Cased corpus BLEU (0-100) and its sacreBLEU signature."""
    from sacrebleu.metrics import BLEU

    metric = BLEU(force=True)  # force: no warning about outputs that end in " ."
    return metric.corpus_score(list(hypotheses), [list(references)]).score, str(
        metric.get_signature()
    )


def chrf(hypotheses: Sequence[str], references: Sequence[str]) -> tuple[float, str]:
    """Corpus chrF (0-100) and its sacreBLEU signature."""
    from sacrebleu.metrics import CHRF

    metric = CHRF()
    return metric.corpus_score(list(hypotheses), [list(references)]).score, str(
        metric.get_signature()
    )


@cache
def _tokenizer(language: str) -> Any:
    import spacy

    return spacy.blank(language).tokenizer


def word_tokens(text: str, language: str = "en") -> list[str]:
    """Lowercased spaCy word tokens of `text` (``spacy.blank(language)``'s tokeniser)."""
    return [token.text.lower() for token in _tokenizer(language)(text) if not token.is_space]


def word_bleu(hypotheses: Sequence[str], references: Sequence[str], language: str = "en") -> float:
    """4-gram corpus BLEU (0-100) on lowercased spaCy word tokens, as bentrevett's notebooks."""
    from sacrebleu.metrics import BLEU

    def joined(texts: Sequence[str]) -> list[str]:
        return [" ".join(word_tokens(text, language)) for text in texts]

    metric = BLEU(tokenize="none", smooth_method="none", force=True)
    return metric.corpus_score(joined(hypotheses), [joined(references)]).score


def has_spacy() -> bool:
    """Whether spaCy is installed (``pip install 'rnnkit[translate]'``)."""
    import importlib.util

    return importlib.util.find_spec("spacy") is not None


def corpus_scores(
    hypotheses: Sequence[str], references: Sequence[str], language: str = "en"
) -> dict[str, Any]:
    """Every score above, with signatures: ``bleu``, ``chrf``, ``word_bleu`` (None without
    spaCy) and the ``bleu_signature`` / ``chrf_signature`` strings."""
    bleu, bleu_signature = sacre_bleu(hypotheses, references)
    chrf_score, chrf_signature = chrf(hypotheses, references)
    return {
        "bleu": bleu,
        "chrf": chrf_score,
        "word_bleu": word_bleu(hypotheses, references, language) if has_spacy() else None,
        "bleu_signature": bleu_signature,
        "chrf_signature": chrf_signature,
    }
