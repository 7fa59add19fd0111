"""The translation model: shapes, masking, the bridge, tied weights, gradients, its config,
and learning to reverse sequences exactly."""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch

from rnnkit.toolkit.metrics import loss_for_task
from rnnkit.toolkit.models import ModelConfig, build_model
from rnnkit.toolkit.translation.attention import Attention
from rnnkit.toolkit.translation.data import collate_translation
from rnnkit.toolkit.translation.model import TranslationModel
from rnnkit.toolkit.translation.subwords import BOS, EOS, PAD

SOURCE_VOCAB, TARGET_VOCAB, HIDDEN, EMBEDDING = 13, 11, 6, 5
CELLS = ("rnn", "gru", "lstm")
ATTENTIONS = ("additive", "multiplicative")
LENGTHS = [5, 2, 4, 1]  # (batch,): unsorted, with a full and a one-step source
# The loss a translate run trains with: label-smoothed cross-entropy at the real steps.
translation_loss = loss_for_task("translation")


@pytest.fixture(autouse=True)
def one_engine_one_thread(monkeypatch):
    """The torch-ops engine, on one thread, for every model here: bitwise repeatable, and
    fast at these sizes (on a busy two-core machine, two threads per op wait on each other
    and run decoding 100 times slower)."""
    monkeypatch.setenv("RNNKIT_ENGINE", "fused")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make(seed: int = 0, **overrides) -> TranslationModel:
    """A small float64 translation model in eval mode."""
    fields = {
        "task": "translation", "vocab_size": SOURCE_VOCAB, "num_outputs": TARGET_VOCAB,
        "hidden_size": HIDDEN, "embedding_dim": EMBEDDING, "bidirectional": True,
    }  # fmt: skip
    fields.update(overrides)
    torch.manual_seed(seed)
    model = build_model(ModelConfig(**fields))
    assert isinstance(model, TranslationModel)
    return model.double().eval()


def source_batch(lengths=LENGTHS, seed: int = 1, extra: int = 0):
    """``(batch, max(lengths) + extra)`` source ids in [4, SOURCE_VOCAB), padded with 0."""
    generator = torch.Generator().manual_seed(seed)
    source = torch.zeros(len(lengths), max(lengths) + extra, dtype=torch.long)
    for row, length in enumerate(lengths):
        source[row, :length] = torch.randint(4, SOURCE_VOCAB, (length,), generator=generator)
    return source, torch.tensor(lengths)


def pairs_batch(seed: int = 1):
    """A collated batch of random pairs with targets of different lengths."""
    generator = torch.Generator().manual_seed(seed)
    targets = [3, 1, 4, 2]

    def ids(n: int, vocab: int) -> list[int]:
        return torch.randint(4, vocab, (n,), generator=generator).tolist()

    return collate_translation(
        [
            (ids(s, SOURCE_VOCAB), ids(t, TARGET_VOCAB))
            for s, t in zip(LENGTHS, targets, strict=True)
        ]
    )


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("cell", CELLS)
def test_forward_gives_logits_for_the_real_target_steps_only_in_step_order(cell, attention):
    model = make(cell=cell, attention=attention)
    batch = pairs_batch()
    logits = model(batch.source, batch.source_lengths, batch.target_in)
    tokens = int((batch.target_in != PAD).sum())
    assert logits.shape == (tokens, TARGET_VOCAB)  # (tokens, V)
    assert tokens == int((batch.target_out != -100).sum())

    # The same log-probabilities one teacher-forced step at a time, in row-major order.
    state = model.encode(batch.source, batch.source_lengths)
    steps = []
    for t in range(batch.target_in.size(1)):
        log_probs, state, _ = model.step(batch.target_in[:, t], state)  # (batch, V)
        steps.append(log_probs)
    stepped = torch.stack(steps, dim=1)[batch.target_in != PAD]  # (tokens, V)
    torch.testing.assert_close(torch.log_softmax(logits.float(), dim=-1), stepped)


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_padding_is_never_attended(attention):
    model = make(attention=attention)
    source, lengths = source_batch()
    state = model.encode(source, lengths)
    assert state.mask.tolist() == [[t < n for t in range(source.size(1))] for n in LENGTHS]
    _, _, weights = model.step(torch.full((len(LENGTHS),), BOS), state)  # (batch, S)
    queries = torch.randn(len(LENGTHS), 3, HIDDEN, dtype=torch.float64)  # (batch, T, H)
    _, all_weights = model.attention(queries, state.keys, state.memory, state.mask)
    for row, length in enumerate(LENGTHS):
        assert weights[row, length:].tolist() == [0.0] * (source.size(1) - length)
        assert bool((all_weights[row, :, length:] == 0).all())
        assert bool((weights[row, :length] > 0).all())
    torch.testing.assert_close(weights.sum(-1), torch.ones(len(LENGTHS), dtype=torch.float64))


@pytest.mark.parametrize("beam_size", [1, 4], ids=["greedy", "beam"])
@pytest.mark.parametrize("cell", CELLS)
@torch.no_grad()
def test_a_translations_score_and_attention_are_its_own_when_replayed(cell, beam_size):
    """Feeding the chosen tokens back one step at a time gives the reported score (their
    log-probabilities, EOS included) and the reported attention, row for row: beam search
    follows each winner back through its own parents."""
    model = make(cell=cell)
    source, lengths = source_batch()
    found = model.translate(source, lengths, beam_size=beam_size, length_penalty=0.5)
    for row, (tokens, score, weights) in enumerate(
        zip(found.tokens, found.scores, found.attention, strict=True)
    ):
        state = model.encode(source[row : row + 1], lengths[row : row + 1])
        total, rows = 0.0, []
        for previous, chosen in zip([BOS, *tokens], [*tokens, EOS], strict=True):
            log_probs, state, attention = model.step(torch.tensor([previous]), state)
            total += float(log_probs[0, chosen])  # a forced EOS at the model's probability
            rows.append(attention[0])
        assert score == pytest.approx(total, abs=1e-5)
        torch.testing.assert_close(weights, torch.stack(rows))  # (generated + 1, S)


@pytest.mark.parametrize("beam_size", [1, 3], ids=["greedy", "beam"])
@pytest.mark.parametrize("cell", CELLS)
def test_a_source_padded_longer_gets_the_same_translation(cell, beam_size):
    model = make(cell=cell, attention="additive")
    short = model.translate(*source_batch(), beam_size=beam_size)
    longer = model.translate(*source_batch(extra=3), beam_size=beam_size)
    assert longer.tokens == short.tokens
    assert longer.scores == pytest.approx(short.scores, abs=1e-6)
    for wide, narrow in zip(longer.attention, short.attention, strict=True):
        assert bool((wide[:, narrow.size(1) :] == 0).all())
        torch.testing.assert_close(wide[:, : narrow.size(1)], narrow)


@pytest.mark.parametrize("beam_size", [1, 3], ids=["greedy", "beam"])
@pytest.mark.parametrize("attention", ATTENTIONS)
def test_batch_order_does_not_change_a_translation(attention, beam_size):
    model = make(cell="gru", attention=attention)
    source, lengths = source_batch()
    found = model.translate(source, lengths, beam_size=beam_size)
    order = [2, 0, 3, 1]
    shuffled = model.translate(source[order], lengths[order], beam_size=beam_size)
    assert shuffled.tokens == [found.tokens[i] for i in order]
    assert shuffled.scores == pytest.approx([found.scores[i] for i in order], abs=1e-6)
    alone = model.translate(source[1:2, : LENGTHS[1]], lengths[1:2], beam_size=beam_size)
    assert alone.tokens == found.tokens[1:2]


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [True, False], ids=["bi", "one-way"])
@pytest.mark.parametrize("cell", CELLS)
def test_the_bridge_maps_each_layers_final_states_to_the_decoders_first(
    cell, bidirectional, num_layers
):
    model = make(cell=cell, bidirectional=bidirectional, num_layers=num_layers)
    directions = 2 if bidirectional else 1
    source, lengths = source_batch()
    batch, window = source.shape
    state = model.encode(source, lengths)
    encoded = model.encoder(source, lengths)

    assert state.memory.shape == (batch, window, directions * HIDDEN)  # (batch, S, D * H)
    assert state.keys.shape[:2] == (batch, window)
    torch.testing.assert_close(state.memory, encoded.output)
    finals = [(encoded.h_n, model.bridge)]
    if cell == "lstm":
        assert isinstance(state.hidden, tuple) and len(state.hidden) == 2
        finals.append((encoded.c_n, model.cell_bridge))
        hiddens = state.hidden
    else:
        assert model.cell_bridge is None
        hiddens = (state.hidden,)
    for hidden, (final, bridge) in zip(hiddens, finals, strict=True):
        assert hidden.shape == (num_layers, batch, HIDDEN)  # (layers, batch, H)
        for layer in range(num_layers):
            # h_n's rows are layer-major: (layer 0 forward, layer 0 backward, layer 1 ...)
            joined = torch.cat(list(final[layer * directions : (layer + 1) * directions]), -1)
            torch.testing.assert_close(hidden[layer], torch.tanh(bridge(joined)))
    assert len(model.translate(source, lengths).tokens) == batch


def test_tied_embeddings_share_one_weight():
    model = make(tie_embeddings=True)
    assert model.head.weight is model.target_embedding.weight
    assert model.combine.out_features == EMBEDDING
    untied = make(tie_embeddings=False)
    assert untied.head.weight is not untied.target_embedding.weight
    # Tied, the head has no weight of its own (V * H untied), and combine projects the
    # 2H memory + H query to E rather than H features: (3H + 1) * (H - E) fewer.
    assert untied.parameter_count() - model.parameter_count() == (
        TARGET_VOCAB * HIDDEN + (3 * HIDDEN + 1) * (HIDDEN - EMBEDDING)
    )
    with torch.no_grad():
        model.target_embedding.weight[7].fill_(0.5)
    assert model.head.weight[7].tolist() == [0.5] * EMBEDDING


@pytest.mark.parametrize("tie_embeddings", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("cell", CELLS)
def test_gradients_reach_every_parameter(cell, attention, tie_embeddings):
    model = make(cell=cell, attention=attention, tie_embeddings=tie_embeddings, num_layers=2)
    model.train()
    batch = pairs_batch()
    loss = translation_loss(
        model(batch.source, batch.source_lengths, batch.target_in), batch.target_out
    )
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, f"{name}.grad is None"
        assert bool(parameter.grad.abs().sum() > 0), f"{name}.grad is all zeros"
        assert bool(parameter.grad.isfinite().all()), f"{name}.grad is not finite"


def default(name: str):
    return {f.name: f.default for f in dataclasses.fields(ModelConfig)}[name]


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"attention": "x"}, r"argument `attention`, expected one of \('additive', "),
        ({"tie_embeddings": 1}, r"argument `tie_embeddings`, expected a bool, got 1"),
        ({"vocab_size": None, "input_size": 3}, r"argument `vocab_size`, .* 'translation'"),
        ({"num_outputs": None}, r"argument `num_outputs`"),
    ],
)
def test_translation_config_errors_name_the_argument(fields, match):
    config = {"task": "translation", "vocab_size": 9, "num_outputs": 8, "hidden_size": 4}
    with pytest.raises(ValueError, match=match):
        ModelConfig(**{**config, **fields})


@pytest.mark.parametrize("task", ["classification", "language_model"])
def test_translation_options_are_refused_for_other_tasks(task):
    fields = {"task": task, "vocab_size": 9, "hidden_size": 4}
    if task == "classification":
        fields["num_outputs"] = 3
    other = next(kind for kind in ATTENTIONS if kind != default("attention"))
    with pytest.raises(ValueError, match=rf"argument `attention`, .* for task '{task}'"):
        ModelConfig(**fields, attention=other)
    with pytest.raises(ValueError, match=rf"argument `tie_embeddings`, .* for task '{task}'"):
        ModelConfig(**fields, tie_embeddings=not default("tie_embeddings"))
    ModelConfig(**fields)  # the defaults are fine


def test_the_model_refuses_a_config_for_another_task():
    config = ModelConfig(task="classification", vocab_size=9, num_outputs=3, hidden_size=4)
    with pytest.raises(ValueError, match=r"argument `config`, .* task 'translation'"):
        TranslationModel(config)


def test_attention_refuses_an_unknown_kind():
    with pytest.raises(ValueError, match=r"argument `attention`, expected one of"):
        Attention("dot", 4, 4, 4)


def reverse_pairs(count: int, seed: int) -> list[tuple[list[int], list[int]]]:
    """Sequences of ids 4..11, 2 to 5 long, and their reverses."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        sequence = [rng.randint(4, 11) for _ in range(rng.randint(2, 5))]
        pairs.append((sequence, sequence[::-1]))
    return pairs


def test_teacher_forced_loss_decreases_until_it_reverses_every_sequence_exactly():
    """The issue's check: every id of every training sequence in its reversed place, by
    greedy decoding (not only a lower teacher-forced loss)."""
    pairs = reverse_pairs(300, seed=0)
    torch.manual_seed(0)
    model = build_model(
        ModelConfig(task="translation", vocab_size=12, num_outputs=12, hidden_size=32,
                    cell="gru", bidirectional=True)
    )  # fmt: skip
    steps = 600
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-2)
    # Decaying to 0 settles the last few ids: every one of 8 seeds reverses all 300 pairs.
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    rng = random.Random(1)
    first = collate_translation(pairs)
    with torch.no_grad():
        initial = float(translation_loss(model(*first[:3]), first.target_out))
    model.train()
    for _ in range(steps):
        batch = collate_translation(rng.sample(pairs, 32))
        loss = translation_loss(model(*batch[:3]), batch.target_out)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()
    with torch.no_grad():
        final = float(translation_loss(model(*first[:3]), first.target_out))
    assert final < initial / 4, (initial, final)

    found = model.translate(first.source, first.source_lengths)
    wrong = [(s, t, o) for (s, t), o in zip(pairs, found.tokens, strict=True) if o != t]
    assert wrong == [], f"{len(wrong)} of {len(pairs)} reversed wrongly, e.g. {wrong[:3]}"
