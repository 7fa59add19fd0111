"""Models: shapes of every head, packing against per-sequence runs, pooling, generation."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from rnnkit.toolkit.models import (
    LanguageModel,
    ManyToOneModel,
    ModelConfig,
    RecurrentEncoder,
    TaggingModel,
    build_model,
)

BATCH, WINDOW, FEATURES, HIDDEN, VOCAB = 4, 7, 3, 5, 11
LENGTHS = torch.tensor([7, 3, 5, 1])  # (batch,): unsorted, with a full and a one-step sequence


def make(task: str = "regression", **overrides) -> torch.nn.Module:
    """A float64 model; real-valued input unless vocab_size is given."""
    fields = {"task": task, "hidden_size": HIDDEN}
    if "vocab_size" not in overrides:
        fields["input_size"] = FEATURES
    if task in ("classification", "tagging"):
        fields["num_outputs"] = 3
    fields.update(overrides)
    torch.manual_seed(0)
    return build_model(ModelConfig(**fields)).double()


def features(seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(BATCH, WINDOW, FEATURES, generator=generator, dtype=torch.float64)


def tokens(seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(1, VOCAB, (BATCH, WINDOW), generator=generator)


def pad_junk(x: torch.Tensor, lengths: torch.Tensor, seed: int = 9) -> torch.Tensor:
    """`x` with every padded step overwritten by other values."""
    generator = torch.Generator().manual_seed(seed)
    x = x.clone()
    for b, length in enumerate(lengths.tolist()):
        if x.is_floating_point():
            noise = 100 * torch.randn(x[b, length:].shape, generator=generator, dtype=x.dtype)
            x[b, length:] = noise
        else:
            x[b, length:] = torch.randint(1, VOCAB, x[b, length:].shape, generator=generator)
    return x


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "variable"])
def test_shapes_of_every_head(bidirectional, lengths):
    directions = 2 if bidirectional else 1
    x, ids = features(), tokens()
    common = {"num_layers": 2, "bidirectional": bidirectional}

    regressor = make("regression", num_outputs=2, **common)
    assert regressor(x, lengths).shape == (BATCH, 2)  # (batch, num_outputs)
    assert regressor.features(x, lengths).shape == (BATCH, directions * HIDDEN)

    classifier = make("classification", vocab_size=VOCAB, embedding_dim=6, **common)
    assert classifier(ids, lengths).shape == (BATCH, 3)  # (batch, classes)

    tagger = make("tagging", **common)
    assert tagger(x, lengths).shape == (BATCH, WINDOW, 3)  # (batch, window, tags)

    encoded = tagger.encoder(x, lengths)
    assert encoded.output.shape == (BATCH, WINDOW, directions * HIDDEN)
    assert encoded.h_n.shape == (directions * 2, BATCH, HIDDEN)

    language_model = make("language_model", vocab_size=VOCAB, num_layers=2)
    assert language_model(ids, lengths).shape == (BATCH, WINDOW, VOCAB)


@pytest.mark.parametrize("token_input", [False, True])
def test_bidirectional_last_state_equals_a_run_of_each_sequence_alone(token_input):
    """The many-to-one feature is h_n[-2] (forward, at the last valid step) and h_n[-1]
    (backward, after reading back to step 0) of each sequence run alone, unpadded."""
    extra = {"vocab_size": VOCAB} if token_input else {}
    model = make("regression", num_layers=2, bidirectional=True, **extra)
    x = tokens() if token_input else features()
    got = model.features(x, LENGTHS)  # (batch, 2 * hidden)
    for b, length in enumerate(LENGTHS.tolist()):
        alone = x[b : b + 1, :length]  # (1, length[, features])
        if token_input:
            alone = model.encoder.embedding(alone)
        _, h_n = model.encoder.rnn(alone)  # (2 * num_layers, 1, hidden)
        expected = torch.cat([h_n[-2, 0], h_n[-1, 0]])
        torch.testing.assert_close(got[b], expected, rtol=1e-12, atol=1e-12)


def test_packed_input_equals_padded_input_with_lengths():
    model = make("tagging", bidirectional=True)
    x = features()
    packed = pack_padded_sequence(x, LENGTHS, batch_first=True, enforce_sorted=False)
    from_packed = model(packed)  # (batch, longest, tags)
    torch.testing.assert_close(model(packed, LENGTHS), from_packed, rtol=0, atol=0)
    from_padded = model(x, LENGTHS)  # (batch, window, tags)
    assert from_packed.shape == (BATCH, int(LENGTHS.max()), 3)
    for b, length in enumerate(LENGTHS.tolist()):
        torch.testing.assert_close(from_packed[b, :length], from_padded[b, :length])


def test_tagging_outputs_equal_each_sequence_alone():
    model = make("tagging", num_layers=2, bidirectional=True)
    x = features()
    got = model(x, LENGTHS)  # (batch, window, tags)
    for b, length in enumerate(LENGTHS.tolist()):
        alone = model(x[b : b + 1, :length])  # (1, length, tags)
        torch.testing.assert_close(got[b, :length], alone[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
@pytest.mark.parametrize("token_input", [False, True])
def test_pooling_ignores_padding(pooling, token_input):
    extra = {"vocab_size": VOCAB} if token_input else {}
    model = make("regression", bidirectional=True, pooling=pooling, **extra)
    x = tokens() if token_input else features()
    torch.testing.assert_close(model(pad_junk(x, LENGTHS), LENGTHS), model(x, LENGTHS),
                               rtol=0, atol=0)  # fmt: skip


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_mean_and_max_pool_the_valid_steps(pooling):
    model = make("regression", bidirectional=True, pooling=pooling)
    x = features()
    got = model.features(x, LENGTHS)  # (batch, 2 * hidden)
    for b, length in enumerate(LENGTHS.tolist()):
        output, _ = model.encoder.rnn(x[b : b + 1, :length])  # (1, length, 2 * hidden)
        expected = output[0].mean(0) if pooling == "mean" else output[0].amax(0)
        torch.testing.assert_close(got[b], expected, rtol=1e-12, atol=1e-12)


def test_full_lengths_take_the_unpacked_path_with_the_same_result():
    model = make("regression", pooling="mean")
    x = features()
    full = torch.full((BATCH,), WINDOW)
    # Mean pooling over valid steps (sum / length) and over all steps (mean) may
    # round differently in the last bit; the encoder's output is the same.
    torch.testing.assert_close(model(x, full), model(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("lengths", "match"),
    [
        (torch.tensor([7, 3, 5]), r"`lengths`, expected shape \(4,\)"),
        (torch.tensor([7, 3, 0, 1]), r"every length in \[1, window=7\], got \[7, 3, 0, 1\]"),
        (torch.tensor([8, 3, 5, 1]), r"every length in \[1, window=7\]"),
        (torch.tensor([7.0, 3, 5, 1]), "expected integer lengths"),
    ],
)
def test_bad_lengths_are_refused(lengths, match):
    with pytest.raises(ValueError, match=match):
        make("regression")(features(), lengths)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match=r"expected integer token ids of shape \(batch, window\)"):
        make("regression", vocab_size=VOCAB)(features())
    with pytest.raises(ValueError, match=r"expected a tensor of shape \(batch, window, features\)"):
        make("regression")(features()[0])
    packed = pack_padded_sequence(features(), LENGTHS, batch_first=True, enforce_sorted=False)
    with pytest.raises(
        ValueError,
        match=r"`lengths`, expected None or the PackedSequence's own lengths \[7, 3, 5, 1\], "
        r"got \[7, 3, 5, 2\]",
    ):
        make("regression")(packed, torch.tensor([7, 3, 5, 2]))


def test_config_round_trips_through_json():
    for model in (
        make("classification", vocab_size=VOCAB, bidirectional=True, pooling="max"),
        make("language_model", vocab_size=VOCAB),
        make("tagging", num_layers=2, nonlinearity="relu"),
    ):
        fields = json.loads(json.dumps(dataclasses.asdict(model.config)))
        rebuilt = build_model(fields)
        assert type(rebuilt) is type(model)
        assert rebuilt.config == model.config
        assert rebuilt.state_dict().keys() == model.state_dict().keys()


def test_config_resolves_its_defaults():
    assert ModelConfig(input_size=2).num_outputs == 1
    assert ModelConfig(task="language_model", vocab_size=9).num_outputs == 9
    assert ModelConfig(vocab_size=9, hidden_size=12).embedding_dim == 12


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"task": "forecast", "input_size": 2}, r"`task`, expected one of \('regression'"),
        ({}, "expected exactly one of them"),
        ({"input_size": 2, "vocab_size": 5}, "expected exactly one of them"),
        ({"input_size": 0}, "`input_size`, expected a positive integer or None, got 0"),
        ({"input_size": 2, "hidden_size": True}, "`hidden_size`, expected a positive integer"),
        ({"input_size": 2, "dropout": 1.5}, r"`dropout`, expected a number in \[0, 1\], got 1.5"),
        ({"input_size": 2, "pooling": "sum"}, "`pooling`, expected one of"),
        ({"input_size": 2, "embedding_dim": 4}, "`embedding_dim`, expected None for real-valued"),
        ({"vocab_size": 5, "padding_idx": 5}, r"`padding_idx`, expected None or a token id"),
        ({"task": "classification", "input_size": 2}, "`num_outputs`, expected the number of"),
        ({"task": "tagging", "input_size": 2, "num_outputs": 3, "pooling": "mean"},
         "`pooling`, expected the default 'last' for task 'tagging'"),
        ({"task": "language_model", "input_size": 2}, "`vocab_size`, expected a positive"),
        ({"task": "language_model", "vocab_size": 5, "num_outputs": 4}, "`num_outputs`"),
    ],
)  # fmt: skip
def test_config_errors_name_the_argument(fields, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig(**fields)


def test_bidirectional_language_model_is_refused():
    match = (
        r"argument `bidirectional`, expected False for task 'language_model', got True: "
        "a bidirectional model sees the future, so it cannot generate autoregressively"
    )
    with pytest.raises(ValueError, match=match):
        ModelConfig(task="language_model", vocab_size=VOCAB, bidirectional=True)
    with pytest.raises(ValueError, match=match):
        build_model({"task": "language_model", "vocab_size": VOCAB, "bidirectional": True})


def test_models_refuse_a_config_for_another_task():
    with pytest.raises(ValueError, match=r"`config.task`, expected one of \('language_model',\)"):
        LanguageModel(ModelConfig(input_size=2))
    with pytest.raises(ValueError, match=r"`config\.task`"):
        ManyToOneModel(ModelConfig(task="tagging", input_size=2, num_outputs=3))
    with pytest.raises(ValueError, match=r"`config\.task`"):
        TaggingModel(ModelConfig(input_size=2))
    with pytest.raises(ValueError, match="unknown"):
        build_model({"input_size": 2, "hidden": 3})


def test_encoder_needs_exactly_one_input_kind():
    with pytest.raises(ValueError, match="expected exactly one of them"):
        RecurrentEncoder(4)


def language_model(**overrides) -> LanguageModel:
    model = make("language_model", vocab_size=VOCAB, num_layers=2, dropout=0.3, **overrides)
    with torch.no_grad():  # a peaked distribution, so greedy and sampled runs differ
        model.head.linear.weight.mul_(8)
    return model


def test_generate_is_deterministic_for_a_seed_and_leaves_the_global_rng_alone():
    model = language_model()
    state = torch.get_rng_state()
    first = model.generate([3, 4, 5], length=30, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    assert model.generate([3, 4, 5], length=30, seed=7) == first
    assert model.generate([3, 4, 5], length=30, seed=8) != first
    assert list(model.stream(torch.tensor([3, 4, 5]), length=30, seed=7)) == first
    assert len(first) == 30 and all(1 <= t < VOCAB for t in first)
    assert model.generate([3], length=0) == []


def test_top_k_1_is_greedy_argmax_of_the_full_forward_pass():
    """Streaming carries the hidden state; recomputing the whole sequence must agree."""
    model = language_model()
    model.eval()
    sequence = [3, 4, 5]
    for _ in range(12):
        logits = model(torch.tensor([sequence]))[0, -1]  # (vocab_size,)
        logits[0] = -torch.inf  # padding is never generated
        sequence.append(int(logits.argmax()))
    model.train()
    assert model.generate([3, 4, 5], length=12, top_k=1, seed=1) == sequence[3:]
    assert model.generate([3, 4, 5], length=12, top_k=1, temperature=5.0, seed=2) == sequence[3:]
    assert model.training  # restored after generation


def test_padding_is_never_generated():
    model = language_model()
    with torch.no_grad():
        model.head.linear.bias[0] = 1e4  # padding would win every step
    assert 0 not in model.generate([1], length=50, seed=0, temperature=3.0)


@pytest.mark.parametrize("temperature", [0, -1.0, float("nan"), float("inf"), True, "1"])
def test_temperature_must_be_positive(temperature):
    with pytest.raises(ValueError, match="`temperature`, expected a positive finite number"):
        language_model().generate([1], length=3, temperature=temperature)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"top_k": 0}, r"`top_k`, expected None or an integer in \[1, vocab_size=11\], got 0"),
        ({"top_k": VOCAB + 1}, "`top_k`"),
        ({"length": -1}, "`length`, expected an integer >= 0, got -1"),
        ({"seed": 1.5}, "`seed`, expected None or an integer"),
        ({"prompt_ids": []}, "`prompt_ids`, expected a non-empty 1-D sequence"),
        ({"prompt_ids": [1, VOCAB]}, r"token ids in \[0, vocab_size=11\), got \[1, 11\]"),
        ({"prompt_ids": [[1, 2]]}, "`prompt_ids`"),
    ],
)
def test_generation_arguments_are_checked_at_the_call(kwargs, match):
    arguments = {"prompt_ids": [1, 2], "length": 3} | kwargs
    with pytest.raises(ValueError, match=match):
        language_model().stream(**arguments)  # raises before the first token is asked for
