"""Greedy and beam search: hand-made step functions with answers worked out by hand, and
small random translation models (beam search of width 1 is greedy search)."""

from __future__ import annotations

import itertools
import math
import zlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnkit.toolkit.models import ModelConfig, build_model
from rnnkit.toolkit.translation.model import _reorder, max_output_lengths
from rnnkit.toolkit.translation.search import beam_search, greedy_search
from rnnkit.toolkit.translation.subwords import BOS as MODEL_BOS
from rnnkit.toolkit.translation.subwords import EOS as MODEL_EOS

# The hand-made step functions' vocabulary.
BOS, EOS, A, B, C = 0, 1, 2, 3, 4
VOCAB = 5
CELLS = ("rnn", "gru", "lstm")
ATTENTIONS = ("additive", "multiplicative")


@pytest.fixture(autouse=True)
def one_engine_one_thread(monkeypatch):
    """The torch-ops engine, on one thread, for every model here: bitwise repeatable, and
    fast at these sizes (on a busy two-core machine, two threads per op wait on each other
    and run the searches 100 times slower)."""
    monkeypatch.setenv("RNNKIT_ENGINE", "fused")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def read(tokens: torch.Tensor) -> torch.Tensor:
    """A stand-in for attention weights ``(rows, VOCAB)``: each row "reads" the token it was
    fed, so a hypothesis' weights spell out its own input, BOS first."""
    return torch.nn.functional.one_hot(tokens, VOCAB).double()


def table_step(
    table: dict[tuple[int, ...], dict[int, float]], default: dict[int, float], attend=False
):
    """A step function whose next-token probabilities depend only on the row's history.

    The state is a list with one tuple per row: the tokens fed so far, BOS first.
    `table` maps a history to ``{token: probability}`` (other tokens get 0); a history
    it lacks gets `default`. With `attend`, it returns :func:`read`'s weights.
    """

    def step(tokens, state):
        state = [(*history, token) for history, token in zip(state, tokens.tolist(), strict=True)]
        rows = []
        for history in state:
            row = torch.full((VOCAB,), -math.inf, dtype=torch.float64)
            for token, probability in table.get(history, default).items():
                row[token] = math.log(probability)
            rows.append(row)
        return torch.stack(rows), state, read(tokens) if attend else None  # (rows, vocab)

    return step


def random_step(seed: int, eos_bias: float = 0.0, attend: bool = False):
    """A step function with random log-probabilities, a fixed function of the history
    (with `attend`, :func:`read`'s weights)."""

    def log_probs(history: tuple[int, ...]) -> torch.Tensor:
        key = zlib.crc32(bytes([seed, *history]))
        logits = torch.randn(VOCAB, generator=torch.Generator().manual_seed(key))
        logits[EOS] += eos_bias
        logits[BOS] = -math.inf  # never generated: keeps every history readable
        return torch.log_softmax(logits.double(), dim=-1)  # (vocab,)

    def step(tokens, state):
        state = [(*history, token) for history, token in zip(state, tokens.tolist(), strict=True)]
        attention = read(tokens) if attend else None
        return torch.stack([log_probs(history) for history in state]), state, attention

    return step, log_probs


def reorder(state, rows):
    return [state[i] for i in rows.tolist()]


def start(batch: int) -> list[tuple[int, ...]]:
    return [()] * batch


# Greedy takes A (0.6), after which every continuation is poor (EOS at best, 0.3): 0.18.
# B (0.4) is followed by EOS for certain: 0.4, the better translation.
GREEDY_TRAP = {
    (BOS,): {A: 0.6, B: 0.4},
    (BOS, A): {EOS: 0.3, A: 0.25, C: 0.25, B: 0.2},
    (BOS, B): {EOS: 1.0},
}


def test_beam_search_finds_what_greedy_search_misses():
    step = table_step(GREEDY_TRAP, {EOS: 1.0})
    limits = torch.tensor([10])

    greedy = greedy_search(step, start(1), limits, bos=BOS, eos=EOS)
    assert greedy.tokens == [[A]]
    assert greedy.scores[0] == pytest.approx(math.log(0.6) + math.log(0.3), abs=1e-12)

    beam = beam_search(step, start(1), reorder, limits, bos=BOS, eos=EOS, beam_size=2)
    assert beam.tokens == [[B]]
    assert beam.scores[0] == pytest.approx(math.log(0.4), abs=1e-12)
    assert beam.scores[0] > greedy.scores[0]


# Short: B EOS, 0.45 (mean log-probability over its 2 tokens -0.40).
# Long: A A A EOS, 0.55 * 0.9 ** 3 = 0.401 (mean over its 4 tokens -0.23).
SHORT_OR_LONG = {
    (BOS,): {A: 0.55, B: 0.45},
    (BOS, A): {A: 0.9, EOS: 0.05, C: 0.05},
    (BOS, A, A): {A: 0.9, EOS: 0.05, C: 0.05},
    (BOS, A, A, A): {EOS: 0.9, A: 0.05, C: 0.05},
    (BOS, B): {EOS: 1.0},
}


@pytest.mark.parametrize(
    ("length_penalty", "tokens", "probability"),
    [(0.0, [B], 0.45), (1.0, [A, A, A], 0.55 * 0.9**3)],
    ids=["raw sums pick the short", "per-token means pick the long"],
)
def test_length_penalty_chooses_between_a_short_and_a_long_hypothesis(
    length_penalty, tokens, probability
):
    step = table_step(SHORT_OR_LONG, {EOS: 1.0})
    found = beam_search(
        step, start(1), reorder, torch.tensor([10]), bos=BOS, eos=EOS, beam_size=2,
        length_penalty=length_penalty,
    )  # fmt: skip
    assert found.tokens == [tokens]
    # The score is the raw sum, whichever the penalty: the penalty only picks the winner.
    assert found.scores[0] == pytest.approx(math.log(probability), abs=1e-12)


NEVER_EOS = {A: 0.7, B: 0.19, C: 0.1, EOS: 0.01}  # EOS never the likeliest


@pytest.mark.parametrize("beam_size", [None, 1, 3], ids=["greedy", "beam 1", "beam 3"])
def test_a_sentence_that_never_ends_stops_at_its_own_limit(beam_size):
    step = table_step({}, NEVER_EOS)
    limits = torch.tensor([1, 4, 2, 6])  # (batch,): EOS included
    if beam_size is None:
        found = greedy_search(step, start(4), limits, bos=BOS, eos=EOS)
    else:
        found = beam_search(step, start(4), reorder, limits, bos=BOS, eos=EOS, beam_size=beam_size)
    assert found.tokens == [[A] * (limit - 1) for limit in limits.tolist()]
    # EOS is forced at the limit, at the model's probability of it.
    expected = [(limit - 1) * math.log(0.7) + math.log(0.01) for limit in limits.tolist()]
    assert found.scores == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("beam_size", [None, 2], ids=["greedy", "beam 2"])
def test_a_sentence_stops_at_its_limit_while_another_ends_by_itself(beam_size):
    # Sentence 0 says EOS at once (0.8); sentence 1 starts from another history, which
    # the table lacks: it never says EOS and is cut at its limit of 3.
    step = table_step({(BOS,): {EOS: 0.8, A: 0.2}}, NEVER_EOS)
    state, limits = [(), (BOS,)], torch.tensor([5, 3])
    if beam_size is None:
        found = greedy_search(step, state, limits, bos=BOS, eos=EOS)
    else:
        found = beam_search(step, state, reorder, limits, bos=BOS, eos=EOS, beam_size=beam_size)
    assert found.tokens == [[], [A, A]]
    assert found.scores == pytest.approx(
        [math.log(0.8), 2 * math.log(0.7) + math.log(0.01)], abs=1e-12
    )


def expected_score(log_probs, tokens: list[int], limit: int) -> float:
    """Sum of the chosen tokens' log-probabilities, EOS's included (forced or not)."""
    history, total = (BOS,), 0.0
    for token in tokens:
        total += float(log_probs(history)[token])
        history += (token,)
    return total + float(log_probs(history)[EOS])


@pytest.mark.parametrize("beam_size", [None, 1, 2, 4], ids=["greedy", "b1", "b2", "b4"])
@pytest.mark.parametrize("seed", range(4))
def test_scores_are_sums_of_the_chosen_tokens_log_probabilities(beam_size, seed):
    step, log_probs = random_step(seed, eos_bias=0.5)
    limits = torch.tensor([7, 3, 5, 9, 1])  # (batch,)
    batch = len(limits)
    if beam_size is None:
        found = greedy_search(step, start(batch), limits, bos=BOS, eos=EOS)
    else:
        found = beam_search(
            step, start(batch), reorder, limits, bos=BOS, eos=EOS, beam_size=beam_size,
            length_penalty=0.0,
        )  # fmt: skip
    for tokens, score, limit in zip(found.tokens, found.scores, limits.tolist(), strict=True):
        assert EOS not in tokens and BOS not in tokens
        assert len(tokens) < limit
        assert score == pytest.approx(expected_score(log_probs, tokens, limit), abs=1e-9)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
@pytest.mark.parametrize("seed", range(4))
def test_a_beam_wide_enough_to_keep_everything_finds_the_best_hypothesis(seed, length_penalty):
    """With a limit of 4, the hypotheses are the 1 + 3 + 9 + 27 = 40 sequences of A, B, C
    of at most 3 tokens, then EOS; a beam of 64 never drops one, so its winner is the best
    of all 40 by ``score / (tokens + 1) ** length_penalty``."""
    step, log_probs = random_step(seed)
    limit = 4
    everything = [
        list(tokens) for n in range(limit) for tokens in itertools.product((A, B, C), repeat=n)
    ]
    assert len(everything) == 40

    def penalised(tokens: list[int]) -> float:
        return expected_score(log_probs, tokens, limit) / (len(tokens) + 1) ** length_penalty

    best = max(everything, key=penalised)
    found = beam_search(
        step, start(1), reorder, torch.tensor([limit]), bos=BOS, eos=EOS, beam_size=64,
        length_penalty=length_penalty,
    )  # fmt: skip
    assert found.tokens == [best]
    assert found.scores[0] == pytest.approx(expected_score(log_probs, best, limit), abs=1e-9)


@pytest.mark.parametrize("beam_size", [0, -1, 2.0, True, "3", None])
def test_invalid_beam_size_is_refused(beam_size):
    with pytest.raises(ValueError, match=r"argument `beam_size`, expected a positive integer"):
        beam_search(
            table_step({}, {EOS: 1.0}), start(1), reorder, torch.tensor([3]), bos=BOS, eos=EOS,
            beam_size=beam_size,
        )  # fmt: skip


def tiny_model(cell: str, attention: str, bidirectional: bool = True, seed: int = 0):
    torch.manual_seed(seed)
    config = ModelConfig(
        task="translation", vocab_size=9, num_outputs=8, hidden_size=6, embedding_dim=5,
        cell=cell, attention=attention, bidirectional=bidirectional,
    )  # fmt: skip
    return build_model(config).eval()


def random_source(lengths: list[int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(batch, S)`` ids in [4, 9) padded with 0, and the lengths."""
    generator = torch.Generator().manual_seed(seed)
    source = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for row, length in enumerate(lengths):
        source[row, :length] = torch.randint(4, 9, (length,), generator=generator)
    return source, torch.tensor(lengths)


@settings(max_examples=20, deadline=None)
@given(
    cell=st.sampled_from(CELLS),
    attention=st.sampled_from(ATTENTIONS),
    bidirectional=st.booleans(),
    seed=st.integers(0, 2**16),
    lengths=st.lists(st.integers(1, 6), min_size=1, max_size=4),
)
def test_beam_search_of_width_one_is_greedy_search(cell, attention, bidirectional, seed, lengths):
    model = tiny_model(cell, attention, bidirectional, seed)
    source, source_lengths = random_source(lengths, seed)
    limits = max_output_lengths(source_lengths)
    with torch.no_grad():
        state = model.encode(source, source_lengths)
        greedy = greedy_search(model.step, state, limits, bos=MODEL_BOS, eos=MODEL_EOS)
        beam = beam_search(
            model.step, state, _reorder, limits, bos=MODEL_BOS, eos=MODEL_EOS, beam_size=1
        )
    assert beam.tokens == greedy.tokens
    assert beam.scores == greedy.scores
    for ours, theirs in zip(beam.attention, greedy.attention, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("beam_size", [1, 3])
def test_attention_per_sentence_has_a_row_per_generated_token_and_eos(cell, attention, beam_size):
    model = tiny_model(cell, attention)
    lengths = [5, 2, 4]
    source, source_lengths = random_source(lengths, seed=1)
    found = model.translate(source, source_lengths, beam_size=beam_size)
    assert len(found.tokens) == len(found.scores) == len(found.attention) == len(lengths)
    for tokens, weights, length in zip(found.tokens, found.attention, lengths, strict=True):
        assert weights.shape == (len(tokens) + 1, source.size(1))  # (generated + 1, source)
        assert bool((weights[:, length:] == 0).all())  # padding is never read
        torch.testing.assert_close(weights.sum(-1), torch.ones(len(tokens) + 1))


@pytest.mark.parametrize(
    ("make_step", "beam_size", "length_penalty"),
    [
        (lambda: table_step(GREEDY_TRAP, {EOS: 1.0}, attend=True), 2, 1.0),
        (lambda: table_step(SHORT_OR_LONG, {EOS: 1.0}, attend=True), 2, 0.0),
        (lambda: table_step(SHORT_OR_LONG, {EOS: 1.0}, attend=True), 2, 1.0),
        *[(lambda seed=seed: random_step(seed, attend=True)[0], 3, 0.7) for seed in range(3)],
    ],
    ids=["greedy trap", "short", "long", "random 0", "random 1", "random 2"],
)
def test_beam_attention_is_what_the_winners_own_steps_read(make_step, beam_size, length_penalty):
    """The winner may change beam slots from step to step (in the greedy trap, B is kept in
    slot 1, then B EOS in slot 0): its attention must be its own parents' at each step."""
    limits = torch.tensor([6, 4, 9])
    found = beam_search(
        make_step(), start(3), reorder, limits, bos=BOS, eos=EOS, beam_size=beam_size,
        length_penalty=length_penalty,
    )  # fmt: skip
    for tokens, weights in zip(found.tokens, found.attention, strict=True):
        assert weights.shape == (len(tokens) + 1, VOCAB)  # (generated + 1, source)
        assert weights.argmax(-1).tolist() == [BOS, *tokens]
    greedy = greedy_search(make_step(), start(3), limits, bos=BOS, eos=EOS)
    for tokens, weights in zip(greedy.tokens, greedy.attention, strict=True):
        assert weights.argmax(-1).tolist() == [BOS, *tokens]


def test_searches_without_attention_return_none_per_sentence():
    step = table_step(GREEDY_TRAP, {EOS: 1.0})
    limits = torch.tensor([4, 4])
    assert greedy_search(step, start(2), limits, bos=BOS, eos=EOS).attention == [None, None]
    found = beam_search(step, start(2), reorder, limits, bos=BOS, eos=EOS, beam_size=2)
    assert found.attention == [None, None]
