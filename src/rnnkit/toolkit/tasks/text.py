"""The ``classify`` and ``tag`` run tasks: a label per text, a tag per word.

Both read token lists, split one file with a fixed seed unless given separate
validation and test files, and fit a vocabulary and the label classes on the
training part (:class:`_TextTask`). ``classify`` reads ``label text`` lines into
a ``ManyToOneModel`` scored against the majority training label; ``tag`` reads
CoNLL-U (form, UPOS) into a ``TaggingModel`` scored against each word's most
frequent training tag.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pandas as pd

from rnnkit.toolkit.config import RunConfig
from rnnkit.toolkit.data import (
    DataError,
    LabelEncoder,
    Vocabulary,
    collate_classification,
    collate_tagging,
    read_conllu,
    read_label_text,
    tokenize,
)
from rnnkit.toolkit.tasks.base import SequenceDataset, Task, TaskData, TextTransform
from rnnkit.toolkit.tasks.common import (
    _count,
    _lines,
    _percent,
    _split_examples,
    _unknown_label,
    majority_label,
    predict_labels,
    report_labels,
    score_labels,
)
from rnnkit.toolkit.tasks.running import _batches

__all__ = ["ClassifyTask", "TagTask"]


class _TextTask(Task):
    """Shared by classify and tag: files or a seeded split, vocabulary, labels."""

    def _read(self, path: str | os.PathLike[str], lowercase: bool) -> tuple[list, list]:
        """``(token lists, labels-or-tag-lists)`` of a file in the task's format."""
        raise NotImplementedError

    def _labels(self, gold: Sequence[Any]) -> list[Any]:
        """Every label (classify) or tag (tag) in `gold`, to fit the label encoder."""
        raise NotImplementedError

    def _encode_gold(self, labels: LabelEncoder, gold: Any, source: str) -> Any:
        raise NotImplementedError

    def _fit_baseline(self, words: list[list[str]], gold: list[Any]) -> dict[str, Any]:
        raise NotImplementedError

    def prepare(self, config: RunConfig) -> TaskData:
        data = config.data
        words, gold = self._read_limited(data.path, data.lowercase, data.limit)
        parts = _split_examples(
            len(words), data.val_fraction if not data.val_path else 0.0,
            data.test_fraction if not data.test_path else 0.0, data.path,
        )  # fmt: skip
        train_idx, val_idx, test_idx = parts
        train_words = [words[i] for i in train_idx]
        train_gold = [gold[i] for i in train_idx]
        vocab = Vocabulary.build(
            train_words, min_freq=data.min_freq, max_size=data.max_vocab or None
        )
        labels = LabelEncoder.fit(self._labels(train_gold))
        chars = None
        if config.model.char_hidden_size:
            chars = Vocabulary.build([list(w) for sentence in train_words for w in sentence])
        transform = TextTransform(vocab, labels, data.lowercase, chars)
        if len(labels) < 2:
            raise DataError(
                data.path,
                f"expected at least two distinct labels in the training part, got {labels.classes}",
            )

        def make(idx: Sequence[int] | None, path: str, source: str) -> SequenceDataset | None:
            if path:
                part_words, part_gold = self._read_limited(path, transform.lowercase, data.limit)
                return self._dataset(transform, part_words, part_gold, path)
            if not idx:
                return None
            return self._dataset(transform, [words[i] for i in idx], [gold[i] for i in idx], source)

        train = self._dataset(transform, train_words, train_gold, data.path)
        val = make(val_idx, data.val_path, data.path)
        test = make(test_idx, data.test_path, data.path)
        model_config = config.model.to_model_config(self.name, **self.model_sizes(transform))
        description = [
            f"data: {data.path}: {_count(len(train), 'example')} train"
            + (f", {len(val):,} validation" if val is not None else ", no validation")
            + (f", {len(test):,} test" if test is not None else ", no test"),
            f"  vocabulary {len(vocab):,} entries (<pad>, <unk> included), "
            f"{len(labels)} {'labels' if self.name == 'classify' else 'tags'}"
            + ("" if chars is None else f", {len(chars) - 2} distinct characters"),
        ]
        return TaskData(
            train=train,
            val=val,
            test=test,
            collate_fn=self.collate_fn(transform),
            model_config=model_config,
            transform=transform,
            baseline=self._fit_baseline(train_words, train_gold),
            description=description,
        )

    def transform_from_dict(self, state: dict[str, Any]) -> TextTransform:
        return TextTransform.from_dict(state)

    def model_sizes(self, transform: TextTransform) -> dict[str, int]:
        if transform.labels is None:
            raise ValueError(f"a transform without labels cannot be of task {self.name!r}")
        sizes = {"vocab_size": len(transform.vocab), "num_outputs": len(transform.labels)}
        if transform.chars is not None:
            sizes["char_vocab_size"] = len(transform.chars)
        return sizes

    def dataset(
        self, config: RunConfig, transform: TextTransform, path: str | os.PathLike[str]
    ) -> SequenceDataset:
        words, gold = self._read(path, transform.lowercase)
        return self._dataset(transform, words, gold, os.fspath(path))

    def _read_limited(self, path: str, lowercase: bool, limit: int) -> tuple[list, list]:
        words, gold = self._read(path, lowercase)
        return (words[:limit], gold[:limit]) if limit else (words, gold)

    def _dataset(
        self, transform: TextTransform, words: list[list[str]], gold: list[Any], source: str
    ) -> SequenceDataset:
        items = [
            (transform.encode(w), self._encode_gold(transform.labels, g, source))
            for w, g in zip(words, gold, strict=True)
        ]
        return SequenceDataset(items, words, gold)


class ClassifyTask(_TextTask):
    """One label per text: ``label<TAB or space>text`` files."""

    name = "classify"

    def _read(self, path, lowercase):
        tokens, labels = read_label_text(path, lowercase=lowercase)
        return tokens, labels

    def _labels(self, gold):
        return gold

    def _encode_gold(self, labels, gold, source):
        try:
            return labels.encode([gold])[0]
        except ValueError:
            raise _unknown_label(source, "label", gold, labels.classes) from None

    def _fit_baseline(self, words, gold):
        return {"majority": majority_label(gold)}

    def collate_fn(self, transform):
        return collate_classification

    def score(self, model, dataset, transform, baseline):
        results, predicted = score_labels(model, dataset, transform.labels, baseline)
        frame = pd.DataFrame(
            {"text": [" ".join(w) for w in dataset.words], "label": dataset.gold,
             "predicted": predicted}
        )  # fmt: skip
        return results, frame

    def predict(self, model, transform, path):
        texts = _lines(path)
        words = [transform.words(tokenize(text)) for text in texts]
        predicted, probability = predict_labels(model, [transform.encode(w) for w in words],
                                                transform.labels)  # fmt: skip
        return pd.DataFrame({"text": texts, "predicted": predicted, "probability": probability})

    def report(self, results):
        return report_labels(results, _count(results["examples"], "example"))


class TagTask(_TextTask):
    """A tag per word: the UPOS column of CoNLL-U files."""

    name = "tag"

    def check_baseline(self, transform: TextTransform, baseline: dict[str, Any]) -> None:
        if not isinstance(baseline.get("word_tags", {}), dict):
            raise ValueError("word_tags is not a JSON object of word -> tag")

    def _read(self, path, lowercase):
        sentences = read_conllu(path)
        words = [[form.lower() if lowercase else form for form, _ in s] for s in sentences]
        tags = [[tag for _, tag in s] for s in sentences]
        return words, tags

    def _labels(self, gold):
        return [tag for tags in gold for tag in tags]

    def _encode_gold(self, labels, gold, source):
        try:
            return labels.encode(gold)
        except ValueError:
            unknown = next(tag for tag in gold if tag not in labels.classes)
            raise _unknown_label(source, "tag", unknown, labels.classes) from None

    def _fit_baseline(self, words, gold):
        counts: dict[str, Counter[str]] = {}
        overall: Counter[str] = Counter()
        for sentence, tags in zip(words, gold, strict=True):
            for word, tag in zip(sentence, tags, strict=True):
                counts.setdefault(word, Counter())[tag] += 1
                overall[tag] += 1
        return {
            "default": overall.most_common(1)[0][0],
            "word_tags": {word: c.most_common(1)[0][0] for word, c in counts.items()},
        }

    def collate_fn(self, transform):
        return collate_tagging

    def score(self, model, dataset, transform, baseline):
        correct = total = 0
        predicted_tags: list[list[Any]] = []
        collate = self.collate_fn(transform)
        for batch, outputs in _batches(model, dataset, collate):
            predicted = outputs.argmax(dim=-1)  # (batch, max_len)
            scored = batch.targets != -100
            correct += int(((predicted == batch.targets) & scored).sum())
            total += int(scored.sum())
            for row, length in zip(predicted, batch.lengths.tolist(), strict=True):
                predicted_tags.append(transform.labels.decode(row[:length]))
        word_tags, default = baseline.get("word_tags", {}), baseline.get("default")
        baseline_correct = sum(
            word_tags.get(word, default) == tag
            for words, tags in zip(dataset.words, dataset.gold, strict=True)
            for word, tag in zip(words, tags, strict=True)
        )
        results = {
            "sentences": len(dataset),
            "words": total,
            "model": {"accuracy": correct / total if total else math.nan},
            "most_frequent_tag": {"accuracy": baseline_correct / total if total else math.nan},
        }
        rows = [
            (i + 1, j + 1, word, tag, guess)
            for i, (words, tags, guesses) in enumerate(
                zip(dataset.words, dataset.gold, predicted_tags, strict=True)
            )
            for j, (word, tag, guess) in enumerate(zip(words, tags, guesses, strict=True))
        ]
        frame = pd.DataFrame(rows, columns=["sentence", "position", "word", "tag", "predicted"])
        return results, frame

    def predict(self, model, transform, path):
        sentences = [tokenize(text) for text in _lines(path)]
        dataset = [(transform.encode(transform.words(s)), [0] * len(s)) for s in sentences]
        tags: list[list[Any]] = []
        for batch, outputs in _batches(model, dataset, self.collate_fn(transform)):
            predicted = outputs.argmax(dim=-1)  # (batch, max_len)
            tags += [
                transform.labels.decode(row[:length])
                for row, length in zip(predicted, batch.lengths.tolist(), strict=True)
            ]
        records = [
            (i + 1, j + 1, word, tag)
            for i, (words, guesses) in enumerate(zip(sentences, tags, strict=True))
            for j, (word, tag) in enumerate(zip(words, guesses, strict=True))
        ]
        return pd.DataFrame(records, columns=["sentence", "position", "word", "predicted"])

    def report(self, results):
        return [
            f"{_count(results['sentences'], 'sentence')}, {results['words']:,} words:",
            f"  accuracy {_percent(results['model']['accuracy'])} (each word's most frequent "
            f"training tag: {_percent(results['most_frequent_tag']['accuracy'])})",
        ]
