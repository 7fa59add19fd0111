"""New options: input/output dropout, a character RNN per word, data.limit, TextTransform chars."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from rnnkit.cli import main
from rnnkit.toolkit import rundir
from rnnkit.toolkit.config import ConfigError, ModelSection, load_config
from rnnkit.toolkit.data import LabelEncoder, Vocabulary
from rnnkit.toolkit.models import ModelConfig, RecurrentEncoder, build_model
from rnnkit.toolkit.tasks import TextTransform, get_task
from rnnkit.toolkit.word_embedding import MAX_WORD_CHARS, WordCharEmbedding, spell

BATCH, WINDOW, FEATURES, HIDDEN, VOCAB, CHARS = 3, 5, 4, 6, 10, 8
LENGTHS = torch.tensor([5, 2, 4])  # (batch,): one full, two shorter


def make(**fields) -> torch.nn.Module:
    """A float64 model of `fields` (defaults: regression on FEATURES real inputs)."""
    fields = {"task": "regression", "hidden_size": HIDDEN, **fields}
    if "vocab_size" not in fields:
        fields.setdefault("input_size", FEATURES)
    if fields["task"] in ("classification", "tagging"):
        fields.setdefault("num_outputs", 3)
    torch.manual_seed(0)
    return build_model(ModelConfig(**fields)).double()


def without_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """The same architecture and weights, dropout probabilities 0."""
    config = dataclasses.replace(model.config, input_dropout=0.0, output_dropout=0.0)
    twin = build_model(config).double()
    twin.load_state_dict(model.state_dict(), strict=True)
    return twin


def features(seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(BATCH, WINDOW, FEATURES, generator=generator, dtype=torch.float64)


def spelled_tokens(seed: int = 1, width: int = 4) -> torch.Tensor:
    """``(batch, window, 1 + width)`` rows [word id, char ids...], every word spelled."""
    generator = torch.Generator().manual_seed(seed)
    words = torch.randint(1, VOCAB, (BATCH, WINDOW, 1), generator=generator)
    chars = torch.randint(1, CHARS, (BATCH, WINDOW, width), generator=generator)
    lengths = torch.randint(1, width + 1, (BATCH, WINDOW, 1), generator=generator)
    chars = chars.masked_fill(torch.arange(width) >= lengths, 0)  # trailing padding
    return torch.cat([words, chars], dim=-1)


SPELLED = {"char_vocab_size": CHARS, "char_hidden_size": 3, "char_embedding_dim": 2}

# (name, ModelConfig fields, input, lengths)
KINDS = [
    ("regression", {}, features, None),
    ("regression-packed", {}, features, LENGTHS),
    ("classification-tokens", {"task": "classification", "vocab_size": VOCAB,
                               "pooling": "mean"}, lambda: spelled_tokens()[..., 0], LENGTHS),
    ("tagging-chars", {"task": "tagging", "vocab_size": VOCAB, **SPELLED}, spelled_tokens,
     LENGTHS),
    ("classification-chars", {"task": "classification", "vocab_size": VOCAB,
                              "bidirectional": True, **SPELLED}, spelled_tokens, None),
    ("language-model", {"task": "language_model", "vocab_size": VOCAB},
     lambda: spelled_tokens()[..., 0], LENGTHS),
]  # fmt: skip


# ----------------------------------------------------------------------------- ModelConfig


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"input_dropout": 1}, "argument `input_dropout`, expected a number in [0, 1), got 1"),
        ({"input_dropout": 1.0}, "`input_dropout`, expected a number in [0, 1), got 1.0"),
        ({"output_dropout": -0.1}, "`output_dropout`, expected a number in [0, 1), got -0.1"),
        ({"output_dropout": True}, "`output_dropout`, expected a number in [0, 1), got True"),
        ({"input_dropout": "0.1"}, "`input_dropout`, expected a number in [0, 1), got '0.1'"),
        ({"input_dropout": float("nan")}, "`input_dropout`, expected a number in [0, 1), got nan"),
        ({"char_vocab_size": CHARS, "char_hidden_size": 3},
         "`char_vocab_size`, expected None for real-valued input, got 8"),
        ({"vocab_size": VOCAB, "char_vocab_size": 1, "char_hidden_size": 3},
         "`char_vocab_size`, expected an integer >= 2, got 1"),
        ({"vocab_size": VOCAB, "char_vocab_size": True, "char_hidden_size": 3},
         "`char_vocab_size`, expected an integer >= 2, got True"),
        ({"vocab_size": VOCAB, "char_vocab_size": CHARS},
         "`char_hidden_size`, expected a positive integer, got None"),
        ({"vocab_size": VOCAB, "char_vocab_size": CHARS, "char_hidden_size": 0},
         "`char_hidden_size`, expected a positive integer, got 0"),
        ({"vocab_size": VOCAB, "char_vocab_size": CHARS, "char_hidden_size": 3,
          "char_embedding_dim": 0},
         "`char_embedding_dim`, expected a positive integer or None, got 0"),
        ({"vocab_size": VOCAB, "char_hidden_size": 3},
         "`char_hidden_size`, expected None without char_vocab_size, got 3"),
        ({"vocab_size": VOCAB, "char_embedding_dim": 3},
         "`char_embedding_dim`, expected None without char_vocab_size, got 3"),
        ({"task": "language_model", "vocab_size": VOCAB, "char_vocab_size": CHARS,
          "char_hidden_size": 3},
         "`char_vocab_size`, expected None for task 'language_model'"),
    ],
)  # fmt: skip
def test_config_errors_name_the_argument(fields, match):
    fields = {"task": "tagging", "num_outputs": 3, **fields}
    if "vocab_size" not in fields:
        fields["input_size"] = FEATURES
    if fields["task"] == "language_model":
        del fields["num_outputs"]
    with pytest.raises(ValueError, match=r"^Received an invalid value for argument ") as caught:
        ModelConfig(**fields)
    assert match in str(caught.value)


def test_config_resolves_and_round_trips_the_new_fields():
    config = ModelConfig(task="tagging", vocab_size=VOCAB, num_outputs=3, char_vocab_size=CHARS,
                         char_hidden_size=7, input_dropout=0.25, output_dropout=0.5)  # fmt: skip
    assert config.char_embedding_dim == 7  # None means char_hidden_size
    assert ModelConfig(**dataclasses.asdict(config)) == config
    assert ModelConfig(**json.loads(json.dumps(dataclasses.asdict(config)))) == config
    plain = ModelConfig(task="classification", vocab_size=VOCAB, num_outputs=2)
    assert (plain.input_dropout, plain.output_dropout) == (0.0, 0.0)
    assert (plain.char_vocab_size, plain.char_embedding_dim, plain.char_hidden_size) == (
        None, None, None,
    )  # fmt: skip
    assert ModelConfig(input_size=2, input_dropout=0.999).input_dropout == 0.999


def test_the_dropout_modules_get_the_probabilities():
    model = make(task="tagging", input_dropout=0.25, output_dropout=0.5)
    assert model.encoder.input_dropout.p == 0.25
    assert model.head.dropout.p == 0.5
    model = make(input_dropout=0.1, output_dropout=0.2)
    assert (model.encoder.input_dropout.p, model.head.dropout.p) == (0.1, 0.2)


# ----------------------------------------------------------------------------- dropout


@pytest.mark.parametrize(("name", "fields", "make_input", "lengths"), KINDS,
                         ids=[k[0] for k in KINDS])  # fmt: skip
def test_dropout_is_off_in_eval_and_on_in_training(name, fields, make_input, lengths):
    model = make(**fields, input_dropout=0.4, output_dropout=0.3)
    plain = without_dropout(model).eval()
    x = make_input()
    model.eval()
    first, second = model(x, lengths), model(x, lengths)
    assert torch.equal(first, second)
    torch.testing.assert_close(first, plain(x, lengths), rtol=0, atol=0)
    model.train()
    torch.manual_seed(5)
    a = model(x, lengths)
    b = model(x, lengths)
    assert (a - b).abs().max() > 1e-6, "training passes should drop different units"
    assert (a - plain(x, lengths)).abs().max() > 1e-6


def test_input_dropout_drops_the_rnn_input():
    model = make(input_dropout=0.5).train()
    plain = without_dropout(model).eval()
    x = features()
    torch.manual_seed(11)
    ours = model(x)
    torch.manual_seed(11)
    expected = plain(F.dropout(x, 0.5, training=True))  # the same mask, drawn the same way
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-12)


def test_input_dropout_drops_the_packed_rows():
    model = make(input_dropout=0.5).train()
    plain = without_dropout(model).eval()
    x = features()
    torch.manual_seed(14)
    ours = model(x, LENGTHS)  # shorter sequences: the packed path
    torch.manual_seed(14)
    packed = pack_padded_sequence(x, LENGTHS, batch_first=True, enforce_sorted=False)
    dropped = PackedSequence(F.dropout(packed.data, 0.5, training=True), packed.batch_sizes,
                             packed.sorted_indices, packed.unsorted_indices)  # fmt: skip
    torch.testing.assert_close(ours, plain(dropped), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("which", ["input_dropout", "output_dropout"])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["padded", "packed"])
@pytest.mark.parametrize("spelled", [False, True], ids=["ids", "chars"])
def test_each_dropout_alone_acts_in_training(which, lengths, spelled):
    fields = {"task": "tagging", "vocab_size": VOCAB, which: 0.5}
    if spelled:
        fields.update(SPELLED)
    model = make(**fields)
    x = spelled_tokens() if spelled else spelled_tokens()[..., 0]
    plain = without_dropout(model).eval()
    model.train()
    torch.manual_seed(15)
    assert (model(x, lengths) - plain(x, lengths)).abs().max() > 1e-6
    model.eval()
    torch.testing.assert_close(model(x, lengths), plain(x, lengths), rtol=0, atol=0)


def test_output_dropout_drops_the_features_the_head_reads():
    model = make(task="classification", output_dropout=0.5, pooling="max").train()
    plain = without_dropout(model).eval()
    x = features()
    torch.manual_seed(12)
    ours = model(x)  # (batch, 3)
    torch.manual_seed(12)
    expected = plain.head.linear(F.dropout(plain.features(x), 0.5, training=True))
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-12)


def test_tagging_output_dropout_is_per_step():
    model = make(task="tagging", vocab_size=VOCAB, output_dropout=0.5).train()
    plain = without_dropout(model).eval()
    tokens = spelled_tokens()[..., 0]
    torch.manual_seed(13)
    ours = model(tokens)  # (batch, window, 3)
    torch.manual_seed(13)
    expected = plain.head.linear(F.dropout(plain.encoder(tokens).output, 0.5, training=True))
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- characters


def test_a_char_model_embeds_words_with_their_spelling():
    model = make(task="tagging", vocab_size=VOCAB, embedding_dim=4, **SPELLED)
    embedding = model.encoder.embedding
    assert isinstance(embedding, WordCharEmbedding)
    assert embedding.embedding_dim == 4 + 2 * 3
    assert model.encoder.rnn.input_size == 4 + 2 * 3
    assert embedding.chars.num_embeddings == CHARS and embedding.chars.embedding_dim == 2
    assert embedding.char_rnn.hidden_size == 3 and embedding.char_rnn.bidirectional
    out = model(spelled_tokens(), LENGTHS)
    assert out.shape == (BATCH, WINDOW, 3)


def test_a_char_model_tags_each_sentence_as_if_alone():
    model = make(task="tagging", vocab_size=VOCAB, bidirectional=True, **SPELLED).eval()
    x = spelled_tokens(seed=3)
    together = model(x, LENGTHS)
    for b, length in enumerate(LENGTHS.tolist()):
        alone = model(x[b : b + 1, :length])
        torch.testing.assert_close(together[b, :length], alone[0], rtol=1e-9, atol=1e-9)


def test_unknown_words_are_told_apart_by_spelling():
    model = make(task="classification", vocab_size=VOCAB, **SPELLED).eval()
    a = torch.tensor([[spell(1, [2, 3, 4], 4)]])  # (1 sentence, 1 word, 5): <unk>
    b = torch.tensor([[spell(1, [5, 6], 4)]])
    assert (model(a) - model(b)).abs().max() > 1e-6
    plain = make(task="classification", vocab_size=VOCAB).eval()
    assert torch.equal(plain(a[..., 0]), plain(b[..., 0]))  # without characters: the same


def test_a_char_model_refuses_plain_token_ids():
    model = make(task="tagging", vocab_size=VOCAB, **SPELLED)
    with pytest.raises(ValueError, match=r"argument `x`, expected integer token ids of shape "
                                         r"\(batch, window, 1 \+ chars\), got a torch.int64 "
                                         r"tensor of shape \(3, 5\)"):  # fmt: skip
        model(spelled_tokens()[..., 0])


def test_the_encoder_builds_a_char_embedding_from_keywords():
    encoder = RecurrentEncoder(HIDDEN, vocab_size=VOCAB, embedding_dim=5, char_vocab_size=CHARS,
                               char_hidden_size=4)  # fmt: skip
    assert encoder.embedding.chars.embedding_dim == 4  # defaults to char_hidden_size
    assert encoder.rnn.input_size == 5 + 8


# ----------------------------------------------------------------------------- [model] / [data]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.input_dropout=1"],
         "--set: invalid value for key `model.input_dropout`, expected a number in [0, 1), got 1"),
        (["model.output_dropout=-0.5"],
         "invalid value for key `model.output_dropout`, expected a number in [0, 1), got -0.5"),
        (["model.output_dropout=true"], "key `model.output_dropout`, expected a number in [0, 1)"),
        (["model.char_hidden_size=-1"],
         "key `model.char_hidden_size`, expected a non-negative integer (0 means none), got -1"),
        (["model.char_embedding_dim=2.5"],
         "key `model.char_embedding_dim`, expected a non-negative integer"),
        (["data.limit=-1"],
         "key `data.limit`, expected a non-negative integer (0 means no limit), got -1"),
        (["data.limit=true"], "key `data.limit`, expected a non-negative integer"),
        (["data.limit=5"], "key `data.limit`, expected 0 for task 'forecast'"),
        (["model.char_hidden_size=8"], "key `model.char_hidden_size`, expected 0 for task "
                                       "'forecast'"),
        (["task=classify-series", "data.path=x.ts", "model.char_hidden_size=8"],
         "key `model.char_hidden_size`, expected 0 for task 'classify-series'"),
        (["task=language-model", "data.path=x.txt", "model.char_hidden_size=8"],
         "key `model.char_hidden_size`, expected 0 for task 'language-model'"),
    ],
)  # fmt: skip
def test_run_config_errors(overrides, message):
    with pytest.raises(ConfigError) as caught:
        load_config(None, overrides)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["task=classify-series", "data.path=x.ts"],
        ["task=language-model", "data.path=x.txt"],
        ["task=classify", "data.path=x.txt"],  # no character RNN to size
    ],
    ids=["forecast", "classify-series", "language-model", "classify-without-chars"],
)
def test_char_embedding_dim_without_a_char_rnn_is_refused(overrides):
    # A setting that would change nothing is an error, as ModelConfig makes it one.
    with pytest.raises(ConfigError, match=r"key `model.char_embedding_dim`"):
        load_config(None, [*overrides, "model.char_embedding_dim=8"])


def test_model_section_hands_the_new_options_to_model_config():
    section = ModelSection(hidden_size=8, input_dropout=0.25, output_dropout=0.5)
    config = section.to_model_config("forecast", input_size=4)
    assert (config.input_dropout, config.output_dropout) == (0.25, 0.5)
    assert config.char_vocab_size is None and config.char_hidden_size is None
    spelled = ModelSection(char_hidden_size=6).to_model_config(
        "tag", vocab_size=10, num_outputs=3, char_vocab_size=7
    )
    assert (spelled.char_vocab_size, spelled.char_hidden_size, spelled.char_embedding_dim) == (
        7, 6, 6,
    )  # fmt: skip
    narrow = ModelSection(char_hidden_size=6, char_embedding_dim=3).to_model_config(
        "classify", vocab_size=10, num_outputs=2, char_vocab_size=7
    )
    assert narrow.char_embedding_dim == 3
    assert isinstance(ModelSection(input_dropout=0).input_dropout, float)


def test_new_keys_survive_toml(tmp_path):
    overrides = ["task=tag", "data.path=a.conllu", "data.limit=12", "model.input_dropout=0.2",
                 "model.output_dropout=0.3", "model.char_hidden_size=5",
                 "model.char_embedding_dim=4"]  # fmt: skip
    config = load_config(None, overrides)
    path = tmp_path / "run.toml"
    path.write_text(config.to_toml())
    again = load_config(path)
    assert again == config
    assert (again.data.limit, again.model.char_hidden_size, again.model.char_embedding_dim) == (
        12, 5, 4,
    )  # fmt: skip


# ----------------------------------------------------------------------------- TextTransform


def char_transform() -> TextTransform:
    vocab = Vocabulary.build([["the", "cat", "sat"]])
    chars = Vocabulary.build([list("the cat sat")])
    return TextTransform(vocab, LabelEncoder.fit(["DET", "NOUN"]), False, chars)


def test_encode_without_chars_is_the_word_ids():
    transform = TextTransform(Vocabulary.build([["the", "cat"]]), None)
    assert transform.encode(["the", "dog", "cat"]) == transform.vocab.encode(["the", "dog", "cat"])


def test_encode_with_chars_gives_a_row_per_word():
    transform = char_transform()
    long = "catastrophically" + "hat" * 3  # 25 characters
    words = ["the", "dog", long]
    ids = transform.encode(words)
    assert isinstance(ids, torch.Tensor) and ids.dtype == torch.int64
    assert ids.shape == (3, 1 + MAX_WORD_CHARS)
    vocab, chars = transform.vocab, transform.chars
    expected = [spell(vocab.encode([w])[0], chars.encode(w)) for w in words]
    assert ids.tolist() == expected
    the = ids[0].tolist()
    assert the[0] == vocab.encode(["the"])[0] and the[0] >= 2
    assert the[1:4] == chars.encode("the") and the[4:] == [0] * (MAX_WORD_CHARS - 3)
    dog = ids[1].tolist()
    assert dog[0] == vocab.unk_index  # an unknown word, with its characters
    assert dog[1] == chars.unk_index and dog[2] == chars.encode("o")[0]  # 'd' unseen, 'o' seen
    assert dog[3] == chars.unk_index  # 'g'
    half = MAX_WORD_CHARS // 2
    assert ids[2, 1:].tolist() == chars.encode(long[:half] + long[-half:])


def test_encode_with_chars_of_no_words_keeps_the_row_width():
    ids = char_transform().encode([])
    assert ids.shape == (0, 1 + MAX_WORD_CHARS) and ids.dtype == torch.int64


def test_transform_round_trips_with_chars():
    transform = char_transform()
    state = json.loads(json.dumps(transform.to_dict()))
    assert state["chars"] == transform.chars.to_dict()
    again = TextTransform.from_dict(state)
    assert again.chars.tokens == transform.chars.tokens
    assert again.vocab.tokens == transform.vocab.tokens
    assert again.labels.classes == transform.labels.classes
    assert again.to_dict() == transform.to_dict()
    assert torch.equal(again.encode(["sat", "mat"]), transform.encode(["sat", "mat"]))


def test_transform_round_trips_without_chars():
    transform = TextTransform(Vocabulary.build([["a", "b"]]), None, True)
    state = transform.to_dict()
    assert state["chars"] is None
    assert TextTransform.from_dict(state).chars is None
    del state["chars"]  # a transform.json written before characters existed
    assert TextTransform.from_dict(state).chars is None


# ----------------------------------------------------------------------------- data.limit


def write_reviews(path: Path, count: int, offset: int = 0) -> Path:
    words = {"1": ["good", "great", "fun"], "0": ["bad", "dull", "poor"]}
    lines = []
    for i in range(offset, offset + count):
        label = str(i % 2)
        lines.append(f"{label}\t{words[label][i % 3]} film number{i}")
    path.write_text("\n".join(lines) + "\n")
    return path


LEXICON = [("the", "DET"), ("a", "DET"), ("dog", "NOUN"), ("cat", "NOUN"), ("runs", "VERB"),
           ("sleeps", "VERB"), ("quickly", "ADV")]  # fmt: skip


def write_conllu(path: Path, count: int) -> Path:
    sentences = []
    for i in range(count):
        picks = [LEXICON[i % 2], LEXICON[2 + i % 2], LEXICON[4 + i % 2]] + [LEXICON[6]] * (i % 2)
        if i >= 6:
            picks = [(f"{form}{i}", tag) for form, tag in picks]  # words only later sentences have
        rows = [f"{j}\t{form}\t{form}\t{tag}\t_\t_\t0\t_\t_\t_"
                for j, (form, tag) in enumerate(picks, start=1)]  # fmt: skip
        sentences.append(f"# sent_id = {i}\n" + "\n".join(rows) + "\n")
    path.write_text("\n".join(sentences))
    return path


def first_examples(path: Path, count: int, task: str) -> str:
    """The text of the first `count` examples of a file."""
    text = path.read_text()
    if task == "tag":
        return "\n\n".join(text.split("\n\n")[:count]).rstrip("\n") + "\n"
    if task == "language-model":
        return text[:count]
    return "".join(text.splitlines(keepends=True)[:count])


def same_datasets(a, b) -> None:
    if a is None or b is None:
        assert a is b
        return
    if hasattr(a, "tensors"):
        assert len(a.tensors) == len(b.tensors)
        for x, y in zip(a.tensors, b.tensors, strict=True):
            assert torch.equal(x, y)
        return
    assert a.words == b.words and a.gold == b.gold
    assert [(list(map(int, x)), y) for x, y in a.items] == [
        (list(map(int, x)), y) for x, y in b.items
    ]


@pytest.mark.parametrize("task", ["classify", "tag", "language-model"])
def test_limit_equals_a_file_cut_to_its_first_examples(tmp_path, task):
    limit = {"classify": 5, "tag": 4, "language-model": 90}[task]
    files = {}
    for part, count in (("train", 12), ("dev", 8), ("test", 8)):
        if task == "classify":
            files[part] = write_reviews(tmp_path / f"{part}.txt", count, offset=count)
        elif task == "tag":
            files[part] = write_conllu(tmp_path / f"{part}.conllu", count)
        else:
            text = "the cat sat on the mat. " * 6 + "xyz quick brown fox jumps " * 4
            files[part] = tmp_path / f"{part}.txt"
            files[part].write_text(text[: 100 + 10 * count])
    cut = {part: tmp_path / f"cut-{path.name}" for part, path in files.items()}
    for part, path in files.items():
        cut[part].write_text(first_examples(path, limit, task))
    common = [f"task={task}", "data.lookback=10"]

    def prepared(paths: dict[str, Path], extra: list[str]):
        overrides = [*common, f"data.path={paths['train']}", f"data.val_path={paths['dev']}",
                     f"data.test_path={paths['test']}", *extra]  # fmt: skip
        return get_task(task).prepare(load_config(None, overrides))

    limited, expected = prepared(files, [f"data.limit={limit}"]), prepared(cut, [])
    assert limited.transform.to_dict() == expected.transform.to_dict()
    for part in ("train", "val", "test"):
        same_datasets(getattr(limited, part), getattr(expected, part))
    if task == "language-model":
        assert "x" not in limited.transform.vocab.tokens  # only after the first 90 characters
    else:
        assert (len(limited.train), len(limited.val), len(limited.test)) == (limit,) * 3


@pytest.mark.parametrize("task", ["classify", "tag"])
def test_limit_with_held_out_fractions(tmp_path, task):
    # Without val/test files, the first `limit` examples are split into the three parts.
    if task == "classify":
        path = write_reviews(tmp_path / "train.txt", 40)
    else:
        path = write_conllu(tmp_path / "train.conllu", 40)
    config = load_config(None, [f"task={task}", f"data.path={path}", "data.limit=20",
                                "data.val_fraction=0.2", "data.test_fraction=0.2"])  # fmt: skip
    data = get_task(task).prepare(config)
    assert len(data.train) + len(data.val) + len(data.test) == 20
    assert len(data.val) == len(data.test) == 4


def test_limit_beyond_the_file_keeps_everything(tmp_path):
    path = write_reviews(tmp_path / "train.txt", 6)
    config = load_config(None, ["task=classify", f"data.path={path}", f"data.val_path={path}",
                                f"data.test_path={path}", "data.limit=100"])  # fmt: skip
    data = get_task("classify").prepare(config)
    assert (len(data.train), len(data.val), len(data.test)) == (6, 6, 6)


# ----------------------------------------------------------------------------- a tag run with chars


def test_tag_run_with_a_character_rnn(tmp_path, capsys):
    train = write_conllu(tmp_path / "train.conllu", 16)
    held_out = write_conllu(tmp_path / "held.conllu", 8)
    config = tmp_path / "tag.toml"
    config.write_text(
        f'task = "tag"\n[data]\npath = "{train}"\nval_path = "{held_out}"\n'
        f'test_path = "{held_out}"\n[model]\nhidden_size = 8\n[train]\nepochs = 1\n'
        'batch_size = 8\nlr = 0.01\ndevice = "cpu"\n'
    )
    out = tmp_path / "run"
    code = main(["train", str(config), "--out", str(out), "--set", "model.char_hidden_size=8"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert "(batch, max_len, 1 + chars) word ids, then their characters, packed" in stdout
    assert f"input        (8, 4, {1 + MAX_WORD_CHARS})" in stdout
    distinct = len(set("".join(f for f, _ in LEXICON) + "0123456789"))
    assert f"{distinct} distinct characters" in stdout
    transform = json.loads((out / rundir.TRANSFORM_FILE).read_text())["transform"]
    chars = transform["chars"]["tokens"]
    assert chars[:2] == ["<pad>", "<unk>"] and len(chars) - 2 == distinct
    checkpoint = json.loads((out / rundir.MODEL_DIR / "checkpoint.json").read_text())
    model_config = checkpoint["model_config"]
    assert model_config["char_vocab_size"] == len(chars)
    assert model_config["char_hidden_size"] == model_config["char_embedding_dim"] == 8
    results = json.loads((out / rundir.RESULTS_FILE).read_text())
    assert results["test"]["words"] == sum(3 + i % 2 for i in range(8))
    assert 0 <= results["test"]["model"]["accuracy"] <= 1

    assert main(["evaluate", str(out)]) == 0
    stdout, _ = capsys.readouterr()
    assert f"{results['test']['words']} words" in stdout

    sentences = tmp_path / "sentences.txt"
    sentences.write_text("the dog runs\nzebras sleep extraordinarilylongwordsareokay\n")
    assert main(["predict", str(out), "--data", str(sentences)]) == 0
    stdout, err = capsys.readouterr()
    rows = list(csv.DictReader(stdout.splitlines()))
    assert [r["word"] for r in rows] == ["the", "dog", "runs", "zebras", "sleep",
                                         "extraordinarilylongwordsareokay"]  # fmt: skip
    assert all(r["predicted"] in ("ADV", "DET", "NOUN", "VERB") for r in rows)
