"""Translation data: reading pairs, splitting by target, batching, subword vocabularies,
and the scores (BLEU worked out by hand, sacreBLEU's own functions)."""

from __future__ import annotations

import base64
import gzip
import math
import re

import pytest
import sacrebleu
import torch

from rnnkit.toolkit.data.batching import IGNORE_INDEX
from rnnkit.toolkit.data.errors import DataError
from rnnkit.toolkit.translation.data import (
    SentencePairs,
    collate_translation,
    read_pairs,
    read_parallel,
    split_by_target,
)
from rnnkit.toolkit.translation.scores import chrf, corpus_scores, sacre_bleu, word_bleu
from rnnkit.toolkit.translation.subwords import (
    BOS,
    EOS,
    MAX_VOCAB_SIZE,
    MIN_VOCAB_SIZE,
    PAD,
    UNK,
    SubwordVocabulary,
    choose_vocab_size,
)

GERMAN = ["Ein Mann fährt Fahrrad.", "Zwei Hunde spielen im Schnee.", "Eine Frau liest."]
ENGLISH = ["A man rides a bike.", "Two dogs play in the snow.", "A woman reads."]


def write(path, text: str, *, compress: bool = False):
    data = text.encode("utf-8")
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def lines(sentences: list[str]) -> str:
    return "".join(f"{sentence}\n" for sentence in sentences)


@pytest.mark.parametrize(
    ("source_gz", "target_gz"),
    [(False, False), (True, True), (True, False)],
    ids=["plain", "gzip", "mixed"],
)
def test_read_parallel_pairs_line_k_with_line_k(tmp_path, source_gz, target_gz):
    source = write(tmp_path / "train.de", lines(GERMAN), compress=source_gz)
    # Windows line endings and spaces around a sentence are not part of it.
    target = write(tmp_path / "train.en", "\r\n".join(f" {s} " for s in ENGLISH),
                   compress=target_gz)  # fmt: skip
    assert read_parallel(source, target) == SentencePairs(GERMAN, ENGLISH)
    assert read_parallel(source, target, limit=2) == SentencePairs(GERMAN[:2], ENGLISH[:2])


def test_read_parallel_refuses_files_of_different_lengths(tmp_path):
    source = write(tmp_path / "train.de", lines(GERMAN))
    target = write(tmp_path / "train.en", lines(ENGLISH[:2]))
    expected = (
        f"{source}: expected as many lines as {target} (line k translates line k), got 3 against 2"
    )
    with pytest.raises(DataError, match=re.escape(expected)):
        read_parallel(source, target)


@pytest.mark.parametrize("blank", ["", "   ", "\t"], ids=["empty", "spaces", "tab"])
def test_read_parallel_refuses_an_empty_line_with_its_number(tmp_path, blank):
    source = write(tmp_path / "train.de", lines(GERMAN))
    target = write(tmp_path / "train.en", lines([ENGLISH[0], blank, ENGLISH[2]]))
    expected = f"{target}: line 2: expected a sentence on every line, got an empty line"
    with pytest.raises(DataError, match=re.escape(expected)) as caught:
        read_parallel(source, target)
    assert caught.value.line == 2


def test_a_line_separator_inside_a_sentence_does_not_split_it(tmp_path):
    # U+2028 and NEL are line breaks to str.splitlines but not to a line-aligned corpus:
    # splitting on them would shift every later pair by one.
    source = write(tmp_path / "train.de", lines(["Ein\u2028Mann", "Zwei\x85Hunde", GERMAN[2]]))
    target = write(tmp_path / "train.en", lines(ENGLISH))
    pairs = read_parallel(source, target)
    assert pairs.sources == ["Ein\u2028Mann", "Zwei\x85Hunde", GERMAN[2]]
    tabbed = write(tmp_path / "pairs.tsv", "Ein\u2028Mann\tA man\nZwei Hunde\tTwo dogs\n")
    assert read_pairs(tabbed).sources == ["Ein\u2028Mann", "Zwei Hunde"]


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_undecodable_bytes_are_refused_with_line_and_offset(tmp_path, compress):
    data = b"Ein Mann.\nZwei \xff Hunde.\n"
    path = tmp_path / "train.de"
    path.write_bytes(gzip.compress(data) if compress else data)
    target = write(tmp_path / "train.en", lines(ENGLISH[:2]))
    # The offset is in the decompressed text for a gzip file.
    expected = f"{path}: line 2: expected UTF-8 text, got byte(s) 0xff at byte offset 15"
    with pytest.raises(DataError, match=re.escape(expected)):
        read_parallel(path, target)


@pytest.mark.parametrize("damage", ["truncated", "bad checksum"])
def test_a_damaged_gzip_file_is_refused(tmp_path, damage):
    data = bytearray(gzip.compress(lines(GERMAN).encode()))
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:
        data[-8] ^= 0xFF  # the CRC-32 of the uncompressed data
    path = tmp_path / "train.de.gz"
    path.write_bytes(bytes(data))
    target = write(tmp_path / "train.en", lines(ENGLISH))
    with pytest.raises(DataError, match=re.escape(f"{path}: expected a readable gzip file, got ")):
        read_parallel(path, target)


def test_missing_and_empty_files_are_refused(tmp_path):
    target = write(tmp_path / "train.en", lines(ENGLISH))
    with pytest.raises(DataError, match="expected an existing file, got no file at this path"):
        read_parallel(tmp_path / "missing.de", target)
    empty = write(tmp_path / "empty.de", "")
    with pytest.raises(DataError, match=r"expected text, got an empty file \(0 bytes\)"):
        read_parallel(empty, target)


TATOEBA = (
    "Hello.\t안녕하세요.\tCC-BY 2.0 (France) Attribution: tatoeba.org #373330\n"
    "Thank you.\t감사합니다.\tCC-BY 2.0 (France) Attribution: tatoeba.org #327225\n"
)


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_read_pairs_takes_the_chosen_columns(tmp_path, compress):
    path = write(tmp_path / "kor.txt", TATOEBA, compress=compress)
    assert read_pairs(path) == SentencePairs(
        ["Hello.", "Thank you."], ["안녕하세요.", "감사합니다."]
    )
    assert read_pairs(path, (1, 0)) == SentencePairs(
        ["안녕하세요.", "감사합니다."], ["Hello.", "Thank you."]
    )
    assert read_pairs(path, (1, 0), limit=1) == SentencePairs(["안녕하세요."], ["Hello."])
    assert read_pairs(path, (2, 0)).sources[1].endswith("#327225")


def test_read_pairs_refuses_a_line_with_too_few_columns(tmp_path):
    path = write(tmp_path / "pairs.tsv", "Hello.\tHallo.\tx\nThank you.\tDanke.\n")
    read_pairs(path, (0, 1))  # two columns are enough for these
    expected = (
        f"{path}: line 2: expected at least 3 tab-separated columns (data.columns = [0, 2]), got 2"
    )
    with pytest.raises(DataError, match=re.escape(expected)) as caught:
        read_pairs(path, (0, 2))
    assert caught.value.line == 2


@pytest.mark.parametrize(("text", "column"), [("Hi.\t \n", 1), ("\tHallo.\n", 0)])
def test_read_pairs_refuses_an_empty_sentence_naming_its_column(tmp_path, text, column):
    path = write(tmp_path / "pairs.tsv", "Hello.\tHallo.\n" + text)
    expected = f"{path}: line 2: expected a sentence in column {column}, got none"
    with pytest.raises(DataError, match=re.escape(expected)):
        read_pairs(path)


def tatoeba_like_pairs() -> SentencePairs:
    """20 targets, some with several sources (as Tatoeba's English with its Korean)."""
    sources, targets = [], []
    for t in range(20):
        for s in range(1 + t % 3):
            sources.append(f"source {t}.{s}")
            targets.append(f"target {t}")
    return SentencePairs(sources, targets)


def test_split_by_target_keeps_each_target_in_one_part():
    pairs = tatoeba_like_pairs()
    train, val, test = split_by_target(pairs, 0.2, 0.1, seed=3)
    assert sorted(train + val + test) == list(range(len(pairs.targets)))  # each index once
    for part in (train, val, test):
        assert part == sorted(part)  # file order
    targets = [{pairs.targets[i] for i in part} for part in (train, val, test)]
    assert [len(t) for t in targets] == [14, 4, 2]  # of 20 distinct targets
    assert not (targets[0] & targets[1] or targets[0] & targets[2] or targets[1] & targets[2])
    # Every pair of a target goes with it.
    for part, names in zip((train, val, test), targets, strict=True):
        assert part == [i for i, target in enumerate(pairs.targets) if target in names]


def test_split_by_target_is_deterministic_for_a_seed():
    pairs = tatoeba_like_pairs()
    assert split_by_target(pairs, 0.2, 0.1, seed=3) == split_by_target(pairs, 0.2, 0.1, seed=3)
    assert split_by_target(pairs, 0.2, 0.1, seed=3) != split_by_target(pairs, 0.2, 0.1, seed=4)
    # Shares of the 20 distinct targets, rounded: 4.6 -> 5 and 3.4 -> 3.
    train, val, test = split_by_target(pairs, 0.23, 0.17)
    assert [len({pairs.targets[i] for i in part}) for part in (train, val, test)] == [12, 5, 3]
    train, val, test = split_by_target(pairs, 0.0, 0.0)
    assert (val, test) == ([], [])
    assert train == list(range(len(pairs.targets)))


def test_collate_translation_pads_and_places_bos_and_eos():
    batch = collate_translation([([5, 6, 7], [8, 9]), ([5], [10])])
    assert batch.source.tolist() == [[5, 6, 7], [5, PAD, PAD]]  # (batch, S)
    assert batch.source_lengths.tolist() == [3, 1]
    assert batch.target_in.tolist() == [[BOS, 8, 9], [BOS, 10, PAD]]  # BOS + target
    assert batch.target_out.tolist() == [[8, 9, EOS], [10, EOS, IGNORE_INDEX]]  # target + EOS
    assert (PAD, BOS, EOS, IGNORE_INDEX) == (0, 2, 3, -100)  # the doctest's numbers
    for tensor in batch:
        assert tensor.dtype == torch.long


def test_collate_translation_gives_an_empty_source_one_step_and_an_empty_target_eos():
    batch = collate_translation([([], []), ([4, 5], [6])])
    assert batch.source.tolist() == [[EOS, PAD], [4, 5]]
    assert batch.source_lengths.tolist() == [1, 2]
    assert batch.target_in.tolist() == [[BOS, PAD], [BOS, 6]]
    assert batch.target_out.tolist() == [[EOS, IGNORE_INDEX], [6, EOS]]
    # The decoder's input at step t is the word scored at step t - 1.
    real = batch.target_out != IGNORE_INDEX
    assert bool((real == (batch.target_in != PAD)).all())
    assert (
        batch.target_in[:, 1:][real[:, 1:]].tolist()
        == batch.target_out[:, :-1][real[:, 1:]].tolist()
    )


CORPUS = [
    "a man rides a bike down the street",
    "two dogs play in the snow",
    "a woman reads a book in the park",
    "the children are playing football",
    "a man and a woman walk their dog",
    "two men ride bikes in the park",
    "the dog runs after a ball",
    "a girl plays with her dogs in the snow",
]


@pytest.fixture(scope="module")
def vocab() -> SubwordVocabulary:
    return SubwordVocabulary.train(CORPUS, 60)


def test_subword_vocabulary_round_trips_its_training_sentences(vocab):
    assert 8 < len(vocab) <= 60
    assert [vocab.piece(i) for i in (PAD, UNK, BOS, EOS)] == ["<pad>", "<unk>", "<s>", "</s>"]
    for sentence in CORPUS:
        ids = vocab.encode(sentence)
        assert all(4 <= i < len(vocab) for i in ids)  # no special id, nothing unknown
        assert vocab.decode(ids) == sentence
        assert vocab.decode([BOS, *ids, EOS, PAD]) == sentence  # specials are dropped
        assert "".join(vocab.pieces(sentence)).replace("▁", " ").strip() == sentence


def test_an_unseen_character_is_unknown(vocab):
    assert UNK in vocab.encode("a zebra")  # "z" is in no training sentence


def test_subword_vocabulary_round_trips_through_a_dict(vocab):
    state = vocab.to_dict()
    again = SubwordVocabulary.from_dict(state)
    assert len(again) == len(vocab)
    for text in [*CORPUS, "the women walk their bikes", "a zebra"]:
        assert again.encode(text) == vocab.encode(text)
    assert again.to_dict() == state


def test_training_twice_gives_the_same_vocabulary(vocab):
    assert SubwordVocabulary.train(CORPUS, 60).to_dict() == vocab.to_dict()


@pytest.mark.parametrize(
    ("state", "match"),
    [
        ({}, r"needs its 'sentencepiece' model \(base64\)"),
        ("model", r"needs its 'sentencepiece' model"),
        ({"sentencepiece": 5}, r"needs its 'sentencepiece' model"),
        ({"sentencepiece": ""}, r"needs its 'sentencepiece' model"),
        ({"sentencepiece": "not base64!"}, r"the subword model does not load: "),
        ({"sentencepiece": base64.b64encode(b"garbage").decode()}, r"does not load: "),
    ],
    ids=["empty dict", "a string", "a number", "empty model", "not base64", "not a model"],
)
def test_from_dict_refuses_what_holds_no_model(state, match):
    with pytest.raises(ValueError, match=match):
        SubwordVocabulary.from_dict(state)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sentences": [], "vocab_size": 40}, r"argument `sentences`, expected at least one"),
        ({"sentences": CORPUS, "vocab_size": 7}, r"argument `vocab_size`, .* got 7"),
        ({"sentences": CORPUS, "vocab_size": 40.0}, r"argument `vocab_size`, .* got 40.0"),
    ],
)
def test_train_refuses_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SubwordVocabulary.train(**kwargs)


def test_choose_vocab_size_is_half_the_distinct_words_within_bounds():
    def words(n: int) -> list[str]:
        return [" ".join(f"w{i}" for i in range(start, min(n, start + 50)))
                for start in range(0, n, 50)]  # fmt: skip

    assert choose_vocab_size([]) == MIN_VOCAB_SIZE == 100
    assert choose_vocab_size(words(150)) == MIN_VOCAB_SIZE
    assert choose_vocab_size(words(1000)) == 500
    assert choose_vocab_size(words(1001)) == 500
    assert choose_vocab_size(words(40_000)) == MAX_VOCAB_SIZE == 8000
    # Words, lowercased: case and punctuation do not make new ones.
    assert choose_vocab_size([s.upper() + "!" for s in words(1000)] + words(1000)) == 500


# BLEU by hand. spaCy's tokens, lowercased:
#   hyp 1  the cat sat on the mat .        ref 1  the cat is on the mat .
#   hyp 2  a dog runs in the park          ref 2  the dog runs in the big park .
#   hyp 3  the the cat                     ref 3  the cat
# Matching n-grams, each clipped to its count in the reference, over hypothesis n-grams:
#   1-grams  6/7 (the x2, cat, on, mat, .)  5/6 (dog runs in the park)  2/3 (the once, cat)
#   2-grams  4/6 (the cat, on the, the mat, mat .)  3/5 (dog runs, runs in, in the)  1/2
#   3-grams  2/5 (on the mat, the mat .)  2/4 (dog runs in, runs in the)  0/1
#   4-grams  1/4 (on the mat .)  1/3 (dog runs in the)  0/0
HYPOTHESES = ["The cat sat on the mat.", "A dog runs in the park", "The the cat"]
REFERENCES = ["The cat is on the mat.", "The dog runs in the big park.", "the cat"]


def test_word_bleu_is_the_bleu_worked_out_by_hand():
    precisions = [(6 + 5 + 2) / (7 + 6 + 3), (4 + 3 + 1) / (6 + 5 + 2), (2 + 2) / (5 + 4 + 1),
                  (1 + 1) / (4 + 3)]  # fmt: skip
    hypothesis_length, reference_length = 7 + 6 + 3, 7 + 8 + 2
    brevity = math.exp(1 - reference_length / hypothesis_length)  # shorter: penalised
    expected = 100 * brevity * math.exp(sum(math.log(p) for p in precisions) / 4)
    assert word_bleu(HYPOTHESES, REFERENCES) == pytest.approx(expected, rel=1e-9)
    assert expected == pytest.approx(45.93, abs=0.01)


def test_word_bleu_is_zero_without_a_matching_4_gram():
    # No smoothing, as bentrevett's notebooks: one empty precision makes the score 0.
    assert word_bleu(["the cat sat down"], ["the cat sat on the mat"]) == 0.0


TRANSLATIONS = [
    "A man is riding his bike down the street.",
    "Two dogs are playing in the snow",
    "A woman reads a book.",
]
GOLD = [
    "A man rides a bike down the street.",
    "Two dogs play in the snow.",
    "A woman is reading a book in the park.",
]


def test_sacre_bleu_and_chrf_are_sacrebleus_own_scores():
    bleu, signature = sacre_bleu(TRANSLATIONS, GOLD)
    assert bleu == sacrebleu.corpus_bleu(TRANSLATIONS, [GOLD]).score
    assert 0 < bleu < 100
    assert signature.startswith("nrefs:1|case:mixed|") and "tok:13a" in signature
    score, signature = chrf(TRANSLATIONS, GOLD)
    assert score == sacrebleu.corpus_chrf(TRANSLATIONS, [GOLD]).score
    assert 0 < score < 100
    assert signature.startswith("nrefs:1|case:mixed|") and "nc:6" in signature


def test_a_perfect_translation_scores_100():
    scores = corpus_scores(GOLD, GOLD)
    assert scores["bleu"] == pytest.approx(100)
    assert scores["chrf"] == pytest.approx(100)
    assert scores["word_bleu"] == pytest.approx(100)
    assert scores["bleu_signature"] == sacre_bleu(GOLD, GOLD)[1]
    assert scores["chrf_signature"] == chrf(GOLD, GOLD)[1]
    assert word_bleu(HYPOTHESES, HYPOTHESES) == pytest.approx(100)
