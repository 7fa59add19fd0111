"""Subword vocabularies trained on the training sentences, offline, with sentencepiece.

A translation model reads and writes subwords: frequent words whole, rare ones
in pieces (``"Fahrradfahrer"`` -> ``"▁Fahrrad" "fahrer"``), so that no word of
a test sentence is unknown and the output layer stays small. The unigram model
of sentencepiece is trained here on the training split only (never on
validation or test text), and the trained model, a few hundred kilobytes, is
kept whole in the run's ``transform.json`` so ``translate`` and ``evaluate``
cut text exactly as training did.

Ids 0-3 are fixed: padding, unknown, begin and end of sentence.

Example:
    >>> vocab = SubwordVocabulary.train(["a man rides a bike", "a dog runs"], 40)
    >>> ids = vocab.encode("a dog rides")  # a list of piece ids, no BOS/EOS
    >>> vocab.decode(ids)
    'a dog rides'
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Sequence
from typing import Any

PAD, UNK, BOS, EOS = 0, 1, 2, 3
MAX_VOCAB_SIZE = 8000
MIN_VOCAB_SIZE = 100
CHARACTER_ROOM = 4 + 60  # beyond one piece per character: the special ids and some merges

__all__ = ["BOS", "EOS", "PAD", "UNK", "SubwordVocabulary", "choose_vocab_size"]


def choose_vocab_size(sentences: Sequence[str]) -> int:
    """The subword vocabulary size for a training side: half its distinct words, within
    [MIN_VOCAB_SIZE, MAX_VOCAB_SIZE], and room for every distinct character besides.

    Half keeps words seen often whole and splits the long tail; 8,000 is where the
    output layer's cost starts to dominate a small model's training step on a CPU.
    Each character is a piece of its own (Korean text has hundreds of syllables).
    """
    words = {word for sentence in sentences for word in re.findall(r"\w+", sentence.lower())}
    size = max(MIN_VOCAB_SIZE, min(MAX_VOCAB_SIZE, len(words) // 2))
    return max(size, min(MAX_VOCAB_SIZE, len(_characters(sentences)) + CHARACTER_ROOM))


def _characters(sentences: Sequence[str]) -> set[str]:
    return {ch for sentence in sentences for ch in sentence if not ch.isspace()}


class SubwordVocabulary:
    """A trained sentencepiece model: text <-> piece ids.

    Args:
        model_proto: The serialised sentencepiece model.
    """

    def __init__(self, model_proto: bytes) -> None:
        import sentencepiece

        self.model_proto = bytes(model_proto)
        self.processor = sentencepiece.SentencePieceProcessor(model_proto=self.model_proto)

    @classmethod
    def train(cls, sentences: Sequence[str], vocab_size: int) -> SubwordVocabulary:
        """Train a unigram model on `sentences` (one per item).

        Args:
            sentences: The training side's sentences.
            vocab_size: Pieces wanted, the four special ids included; fewer where the
                text cannot fill them (small data).

        Raises:
            ValueError: `sentences` is empty or `vocab_size` is below 8.
        """
        import sentencepiece

        if not sentences:
            raise ValueError(
                "Received an invalid value for argument `sentences`, expected at least one "
                "sentence, got none"
            )
        if not isinstance(vocab_size, int) or vocab_size < 8:
            raise ValueError(
                "Received an invalid value for argument `vocab_size`, expected an integer >= 8, "
                f"got {vocab_size!r}"
            )
        characters = len(_characters(sentences))
        model = io.BytesIO()
        try:
            sentencepiece.SentencePieceTrainer.train(
                sentence_iterator=iter(sentences), model_writer=model, vocab_size=vocab_size,
                model_type="unigram", hard_vocab_limit=False,
                # every character a piece where they fit, else the rarest 0.05% as unknown
                character_coverage=1.0 if characters + 4 < vocab_size else 0.9995,
                pad_id=PAD, unk_id=UNK, bos_id=BOS, eos_id=EOS, num_threads=1, minloglevel=2,
                # one fixed seed order: the same sentences give the same vocabulary
                shuffle_input_sentence=False,
            )  # fmt: skip
        except RuntimeError as error:  # sentencepiece's own one-line reason
            raise ValueError(
                f"Received an invalid value for argument `vocab_size`, expected room for the "
                f"text's {characters:,} distinct characters (or 0 to choose from the data), got "
                f"{vocab_size}: {str(error).splitlines()[0]}"
            ) from None
        return cls(model.getvalue())

    def __len__(self) -> int:
        return self.processor.get_piece_size()

    def encode(self, text: str) -> list[int]:
        """Piece ids of `text`, without BOS or EOS."""
        return self.processor.encode(text)

    def pieces(self, text: str) -> list[str]:
        """The pieces of `text` as strings (for pictures and debugging)."""
        return self.processor.encode(text, out_type=str)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of piece ids; padding, BOS and EOS are dropped (unknown shows as ``⁇``)."""
        return self.processor.decode([int(i) for i in ids if int(i) not in (PAD, BOS, EOS)])

    def piece(self, token_id: int) -> str:
        return self.processor.id_to_piece(int(token_id))

    def to_dict(self) -> dict[str, Any]:
        return {"sentencepiece": base64.b64encode(self.model_proto).decode("ascii")}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> SubwordVocabulary:
        """Rebuild from :meth:`to_dict`'s output.

        Raises:
            ValueError: The state holds no readable sentencepiece model.
        """
        encoded = state.get("sentencepiece") if isinstance(state, dict) else None
        if not isinstance(encoded, str) or not encoded:  # b"" would load as no model at all
            raise ValueError("a subword vocabulary needs its 'sentencepiece' model (base64)")
        try:
            return cls(base64.b64decode(encoded, validate=True))
        except Exception as error:  # sentencepiece raises RuntimeError/OSError variants
            raise ValueError(f"the subword model does not load: {error}") from None
