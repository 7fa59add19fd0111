"""The ``translate`` run task: a sentence in one language to a sentence in another.

Pairs come from two line-aligned files or one tab-separated file
(:mod:`rnnkit.toolkit.translation.data`); validation and test data from their
own files or held out by distinct target sentence. A subword vocabulary per
language is trained on the training pairs (:mod:`~rnnkit.toolkit.translation.subwords`)
and kept in ``transform.json``. The model is an encoder-decoder with attention
(:class:`~rnnkit.toolkit.translation.model.TranslationModel`), trained with
teacher forcing and label smoothing, scored by decoding (greedy and beam search)
with sacreBLEU's BLEU and chrF and with BLEU on lowercased word tokens, against
the baseline of copying the source sentence.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pandas as pd
from torch import nn

from rnnkit.toolkit.config import RunConfig
from rnnkit.toolkit.tasks.base import Task, TaskData
from rnnkit.toolkit.translation.data import (
    SentencePairs,
    TranslationDataset,
    collate_translation,
    read_pairs,
    read_parallel,
    read_sentences,
    split_by_target,
)
from rnnkit.toolkit.translation.scores import corpus_scores, sacre_bleu
from rnnkit.toolkit.translation.subwords import SubwordVocabulary, choose_vocab_size

__all__ = ["TranslateTask", "TranslationTransform", "translate_sentences"]

BEAM_SIZE = 5  # beside greedy search, when a run is scored
MAX_TRAIN_PIECES = 100  # longer training pairs are left out: one would set a batch's width
DECODE_BATCH = 64  # sentences decoded at once


class TranslationTransform:
    """The two subword vocabularies fitted on the training pairs."""

    def __init__(self, source: SubwordVocabulary, target: SubwordVocabulary) -> None:
        self.source = source
        self.target = target

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source.to_dict(), "target": self.target.to_dict()}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> TranslationTransform:
        return cls(
            SubwordVocabulary.from_dict(state["source"]),
            SubwordVocabulary.from_dict(state["target"]),
        )


class TranslateTask(Task):
    """Sentence pairs -> subwords -> encoder-decoder with attention; BLEU and chrF."""

    name = "translate"

    def prepare(self, config: RunConfig) -> TaskData:
        data = config.data
        pairs = self._read(data.path, data.target_path, data)
        description = []
        # A held-out part without its own file is held out of `path`, by target sentence.
        val_fraction = 0.0 if data.val_path else data.val_fraction
        test_fraction = 0.0 if data.test_path else data.test_fraction
        train, parts = pairs, {}
        if val_fraction or test_fraction:
            train_i, val_i, test_i = split_by_target(pairs, val_fraction, test_fraction)
            train = pairs.subset(train_i)
            parts = {name: pairs.subset(i) for name, i in (("val", val_i), ("test", test_i)) if i}
            description.append(
                f"  held out of {data.path} by distinct target sentence: {len(val_i):,} "
                f"validation and {len(test_i):,} test pairs (no held-out target is a training one)"
            )
        for split in ("val", "test"):
            path = getattr(data, f"{split}_path")
            if path:
                parts[split] = self._read(path, getattr(data, f"{split}_target_path"), data)
        sizes = {
            side: data.max_vocab or choose_vocab_size(getattr(train, f"{side}s"))
            for side in ("source", "target")
        }
        transform = TranslationTransform(
            SubwordVocabulary.train(train.sources, sizes["source"]),
            SubwordVocabulary.train(train.targets, sizes["target"]),
        )
        train_set = TranslationDataset(train, transform.source, transform.target)
        kept = [
            i for i, (source, target) in enumerate(train_set.items)
            if max(len(source), len(target)) <= MAX_TRAIN_PIECES
        ]  # fmt: skip
        warnings = []
        if len(kept) < len(train_set):
            warnings.append(
                f"warning: {len(train_set) - len(kept):,} training pairs longer than "
                f"{MAX_TRAIN_PIECES} subwords are left out of training"
            )
            train_set = TranslationDataset(train.subset(kept), transform.source, transform.target)
        held_out = {
            split: TranslationDataset(part, transform.source, transform.target)
            for split, part in parts.items()
        }
        model_config = config.model.to_model_config(self.name, **self.model_sizes(transform))
        description = [
            f"data: {data.path}: {len(train_set):,} training pairs, "
            f"{len(held_out.get('val', [])):,} validation, {len(held_out.get('test', [])):,} test",
            *description,
            f"  subwords (sentencepiece unigram, trained on the training pairs): "
            f"{len(transform.source):,} source, {len(transform.target):,} target"
            + (
                ""
                if data.max_vocab
                else " (data.max_vocab = 0: chosen from each side's words and characters)"
            ),
        ]
        return TaskData(
            train=train_set,
            val=held_out.get("val"),
            test=held_out.get("test"),
            collate_fn=collate_translation,
            model_config=model_config,
            transform=transform,
            description=description,
            warnings=warnings,
        )

    @staticmethod
    def _read(path: str, target_path: str, data: Any) -> SentencePairs:
        if target_path:
            return read_parallel(path, target_path, limit=data.limit)
        return read_pairs(path, data.columns, limit=data.limit)

    def transform_from_dict(self, state: dict[str, Any]) -> TranslationTransform:
        return TranslationTransform.from_dict(state)

    def model_sizes(self, transform: TranslationTransform) -> dict[str, int]:
        if not isinstance(transform, TranslationTransform):
            raise ValueError("a translation transform has a source and a target vocabulary")
        return {"vocab_size": len(transform.source), "num_outputs": len(transform.target)}

    def collate_fn(self, transform: Any) -> Callable[[list[Any]], Any]:
        return collate_translation

    def dataset(self, config, transform, path):
        pairs = read_pairs(path, config.data.columns)
        return TranslationDataset(pairs, transform.source, transform.target)

    def score(self, model, dataset, transform, baseline):
        sources, references = dataset.pairs.sources, dataset.pairs.targets
        results: dict[str, Any] = {"sentences": len(references)}
        frame = None
        for name, beam in (("greedy", 1), ("beam", BEAM_SIZE)):
            hypotheses = translate_sentences(model, transform, sources, beam_size=beam)
            results[name] = {"beam_size": beam, **corpus_scores(hypotheses, references)}
            if name == "beam":
                frame = pd.DataFrame(
                    {"source": sources, "reference": references, "translation": hypotheses}
                )
        results["copy"] = {"bleu": sacre_bleu(sources, references)[0]}
        return results, frame

    def predict(self, model, transform, path):
        sources = read_pairs(path, (0, 1)).sources if _has_tabs(path) else read_sentences(path)
        return pd.DataFrame(
            {"source": sources, "translation": translate_sentences(model, transform, sources)}
        )

    def report(self, results):
        lines = [f"{results['sentences']:,} sentences:"]
        for name in ("greedy", "beam"):
            scores = results[name]
            words = scores["word_bleu"]
            lines.append(
                f"  {name} (beam {scores['beam_size']}): BLEU {scores['bleu']:.2f}, chrF "
                f"{scores['chrf']:.2f}"
                + ("" if words is None else f", BLEU on lowercased spaCy words {words:.2f}")
            )
        lines.append(f"  (copying the source sentence: BLEU {results['copy']['bleu']:.2f})")
        lines.append(f"  sacreBLEU {results['beam']['bleu_signature']}")
        return lines


def translate_sentences(
    model: nn.Module,
    transform: TranslationTransform,
    sentences: list[str],
    *,
    beam_size: int = BEAM_SIZE,
    attention: list | None = None,
) -> list[str]:
    """Translate sentences in batches (sorted by length, so little padding), in order.

    Args:
        model: A trained :class:`~rnnkit.toolkit.translation.model.TranslationModel`.
        transform: The run's subword vocabularies.
        sentences: Source sentences.
        beam_size: 1 for greedy search.
        attention: If a list is given, each sentence's ``(source pieces, target pieces,
            weights (target + 1, source))`` is appended to it, in input order.

    Returns:
        One translation per sentence.
    """
    device = next(model.parameters()).device
    encoded = [transform.source.encode(s) for s in sentences]
    order = sorted(range(len(sentences)), key=lambda i: len(encoded[i]))
    translations: list[str] = [""] * len(sentences)
    maps: list[Any] = [None] * len(sentences)
    for start in range(0, len(order), DECODE_BATCH):
        rows = order[start : start + DECODE_BATCH]
        batch = collate_translation([(encoded[i], [0]) for i in rows])
        found = model.translate(batch.source.to(device), batch.source_lengths, beam_size=beam_size)
        for row, tokens, weights in zip(rows, found.tokens, found.attention, strict=True):
            translations[row] = transform.target.decode(tokens)
            maps[row] = (encoded[row], tokens, weights)
    if attention is not None:
        for ids, tokens, weights in maps:
            attention.append(
                ([transform.source.piece(i) for i in ids],
                 [transform.target.piece(i) for i in tokens] + ["</s>"],
                 weights[:, : len(ids)])
            )  # fmt: skip
    return translations


def _has_tabs(path: str | os.PathLike[str]) -> bool:
    """Whether `path` holds tab-separated pairs rather than one sentence per line."""
    from rnnkit.toolkit.data.files import read_text

    return "\t" in read_text(path)
