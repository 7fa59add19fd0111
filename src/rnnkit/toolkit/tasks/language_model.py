"""The ``language-model`` run task: the next character of plain text.

The text is split at its end into train, validation and test parts, cut into
chunks of ``lookback`` characters ``(batch, window)`` and read by a
``LanguageModel``, scored against character frequencies (add-one unigram);
``rnnkit generate`` samples text from it one character at a time.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

from rnnkit.toolkit.arguments import is_real
from rnnkit.toolkit.config import RunConfig
from rnnkit.toolkit.data import DataError, Vocabulary, chunk, read_text
from rnnkit.toolkit.forecast_defaults import DEFAULT_LOOKBACK
from rnnkit.toolkit.tasks.base import Task, TaskData, TextTransform
from rnnkit.toolkit.tasks.common import _held_out_sizes, _percent
from rnnkit.toolkit.tasks.running import _batches

__all__ = ["LanguageModelTask"]


class LanguageModelTask(Task):
    """The next character of plain text; generates text one character at a time."""

    name = "language-model"

    def check_baseline(self, transform: TextTransform, baseline: dict[str, Any]) -> None:
        probs = baseline.get("unigram_log_probs")
        if not isinstance(probs, list) or len(probs) != len(transform.vocab):
            raise ValueError(
                f"unigram_log_probs is not a list of {len(transform.vocab)} numbers, one per "
                "vocabulary entry"
            )
        if not all(p is None or is_real(p) for p in probs):
            raise ValueError("unigram_log_probs holds something other than numbers")

    def prepare(self, config: RunConfig) -> TaskData:
        data = config.data
        text = read_text(data.path)[: data.limit or None]
        n = len(text)
        test_chars, val_chars = _held_out_sizes(
            n, 0.0 if data.val_path else data.val_fraction,
            0.0 if data.test_path else data.test_fraction, data.path, "characters",
        )  # fmt: skip
        train_text = text[: n - test_chars - val_chars]
        val_text = text[n - test_chars - val_chars : n - test_chars]
        test_text = text[n - test_chars :]
        vocab = Vocabulary.build([train_text])
        transform = TextTransform(vocab, None)
        lookback = _text_lookback(data.lookback)
        train = self._chunks(vocab, train_text, lookback, data.path, "training part")

        def held_out(part: str, path: str, what: str) -> TensorDataset | None:
            if path:
                part_text = read_text(path)[: data.limit or None]
                return self._chunks(vocab, part_text, lookback, path, "file")
            if not part:
                return None
            return self._chunks(vocab, part, lookback, data.path, what)

        val = held_out(val_text, data.val_path, "validation part")
        test = held_out(test_text, data.test_path, "test part")
        model_config = config.model.to_model_config(self.name, **self.model_sizes(transform))
        counts = Counter(train_text)
        total = len(train_text) + len(vocab) - 2  # add-one smoothing over the real characters
        unigram = [
            math.log((counts.get(token, 0) + 1) / total) if i >= 2 else None
            for i, token in enumerate(vocab.tokens)
        ]
        description = [
            f"data: {data.path}: {len(train_text):,} characters train, {len(val_text):,} "
            f"validation, {len(test_text):,} test; {len(vocab) - 2} distinct characters",
            f"  chunks of {lookback} characters: {len(train):,} train",
        ]
        return TaskData(
            train=train,
            val=val,
            test=test,
            collate_fn=None,
            model_config=model_config,
            transform=transform,
            baseline={"unigram_log_probs": unigram},
            description=description,
            derived={"data.lookback": lookback} if data.lookback == "auto" else {},
        )

    def transform_from_dict(self, state: dict[str, Any]) -> TextTransform:
        return TextTransform.from_dict(state)

    def model_sizes(self, transform: TextTransform) -> dict[str, int]:
        if transform.labels is not None or transform.chars is not None:
            raise ValueError("a language model's transform has no labels and no characters")
        return {"vocab_size": len(transform.vocab), "num_outputs": len(transform.vocab)}

    def dataset(self, config, transform, path):
        return self._chunks(
            transform.vocab,
            read_text(path),
            _text_lookback(config.data.lookback),
            os.fspath(path),
            "file",
        )

    @staticmethod
    def _chunks(vocab: Vocabulary, text: str, length: int, source: str, what: str):
        if len(text) < length + 1:
            raise DataError(
                source,
                f"expected more than data.lookback = {length} characters in the {what}, "
                f"got {len(text)}",
            )
        inputs, targets = chunk(vocab.encode(text), length)  # (batch, length) each
        return TensorDataset(inputs, targets)

    def score(self, model, dataset, transform, baseline):
        loss_sum = correct = count = 0.0
        unigram = torch.tensor(
            [math.nan if p is None else p for p in baseline["unigram_log_probs"]],
            dtype=torch.float64,
        )
        baseline_sum = 0.0
        for (_, targets), logits in _batches(model, dataset, None):
            flat = targets.reshape(-1)
            loss_sum += float(
                nn.functional.cross_entropy(
                    logits.reshape(-1, logits.size(-1)).double(), flat, reduction="sum"
                )
            )
            correct += int((logits.argmax(dim=-1) == targets).sum())
            count += flat.numel()
            # <unk> (an unseen character) has no unigram probability: score it as the rarest.
            log_probs = unigram[flat]
            baseline_sum -= float(torch.nan_to_num(log_probs, nan=float(unigram[2:].min())).sum())
        loss = loss_sum / count
        results = {
            "characters": int(count),
            "model": {
                "loss": loss,
                "perplexity": math.exp(loss),
                "accuracy": correct / count,
            },
            "unigram": {"loss": baseline_sum / count, "perplexity": math.exp(baseline_sum / count)},
        }
        return results, None

    def predict(self, model, transform, path):
        raise ValueError(
            "task 'language-model' predicts no file: rnnkit generate RUN_DIR writes text"
        )

    def report(self, results):
        model, unigram = results["model"], results["unigram"]
        return [
            f"{results['characters']:,} characters:",
            f"  loss {model['loss']:.3f} nats/char, perplexity {model['perplexity']:.2f}, "
            f"next-character accuracy {_percent(model['accuracy'])}",
            f"  (character frequencies alone: loss {unigram['loss']:.3f}, "
            f"perplexity {unigram['perplexity']:.2f})",
        ]

    def encode_prompt(self, transform: TextTransform, prompt: str) -> list[int]:
        """Character ids of `prompt`; characters never seen in training are refused.

        Raises:
            ValueError: `prompt` is empty or holds unseen characters.
        """
        if not prompt:
            raise ValueError("Received an invalid value for --prompt, expected text, got ''")
        unseen = sorted({c for c in prompt if c not in transform.vocab})
        if unseen:
            raise ValueError(
                f"Received an invalid value for --prompt, expected characters of the training "
                f"text, got unseen {''.join(unseen)!r}"
            )
        return transform.vocab.encode(prompt)

    def default_prompt(self, transform: TextTransform) -> str:
        """A newline if the text has one (the start of a paragraph), else its commonest char."""
        return "\n" if "\n" in transform.vocab else transform.vocab.tokens[2]


def _text_lookback(lookback: int | str) -> int:
    """Characters per language-model chunk: "auto" is the forecast's default of 100."""
    return DEFAULT_LOOKBACK if lookback == "auto" else lookback
