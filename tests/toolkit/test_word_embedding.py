"""Words by id and by spelling: `spell` rows, and WordCharEmbedding against torch.nn.RNN."""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call

from rnnkit.toolkit.word_embedding import MAX_WORD_CHARS, WordCharEmbedding, spell

VOCAB, EMBED, CHARS, CHAR_EMBED, CHAR_HIDDEN = 12, 3, 9, 4, 5
WIDTH = 6  # characters per row in these tests (the library's default is MAX_WORD_CHARS)


def make(seed: int = 0, **overrides) -> WordCharEmbedding:
    """A float64 embedding with every parameter drawn from U(-0.8, 0.8)."""
    sizes = {
        "vocab_size": VOCAB,
        "embedding_dim": EMBED,
        "char_vocab_size": CHARS,
        "char_embedding_dim": CHAR_EMBED,
        "char_hidden_size": CHAR_HIDDEN,
    }
    sizes.update(overrides)
    embed = WordCharEmbedding(**sizes).double()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in embed.parameters():
            p.copy_(torch.rand(p.shape, generator=generator, dtype=p.dtype) * 1.6 - 0.8)
        embed.words.weight[0] = 0  # padding_idx rows stay zeros, as nn.Embedding keeps them
        embed.chars.weight[0] = 0
    return embed


def rows(*words: tuple[int, list[int]], width: int = WIDTH) -> torch.Tensor:
    """``(len(words), 1 + width)`` int64 rows from (word id, char ids) pairs."""
    return torch.tensor([spell(w, c, width) for w, c in words])


# A batch of 2 sentences x 4 tokens: <unk> (1) spelled three ways, a known word, padding,
# a word without characters, and words of every length up to the row width.
SENTENCES = torch.stack(
    [
        rows((1, [2, 3, 4]), (1, [5, 6]), (7, [2, 8, 8, 3, 4, 5]), (0, [])),
        rows((3, [7]), (1, [2, 3, 4]), (4, []), (1, [6, 5, 4, 3])),
    ]
)  # (batch 2, words 4, 1 + WIDTH)


def torch_oracle(embed: WordCharEmbedding) -> torch.nn.RNN:
    """torch.nn.RNN (bidirectional, batch_first) holding the character RNN's weights."""
    theirs = torch.nn.RNN(CHAR_EMBED, CHAR_HIDDEN, batch_first=True, bidirectional=True).double()
    theirs.load_state_dict(embed.char_rnn.state_dict(), strict=True)
    return theirs


# ----------------------------------------------------------------------------- spell


@pytest.mark.parametrize(
    ("chars", "width", "expected"),
    [
        ([3, 4, 5], 4, [7, 3, 4, 5, 0]),  # padded with 0 to the width
        ([3, 4, 5, 6], 4, [7, 3, 4, 5, 6]),  # exactly the width: unchanged
        ([1, 2, 3, 4, 5, 6], 4, [7, 1, 2, 5, 6]),  # first two and last two
        ([1, 2, 3, 4, 5, 6, 7, 8], 5, [7, 1, 2, 6, 7, 8]),  # odd width: the end keeps one more
        ([1, 2, 3], 1, [7, 3]),  # width 1: the last character only
        ([], 3, [7, 0, 0, 0]),  # no characters: all padding
    ],
)
def test_spell_cuts_long_words_to_first_and_last_halves_and_pads(chars, width, expected):
    assert spell(7, chars, width) == expected


def test_spell_default_width_keeps_prefix_and_suffix():
    word = list(range(1, 26))  # 25 characters
    row = spell(9, word)
    assert len(row) == 1 + MAX_WORD_CHARS == 21
    half = MAX_WORD_CHARS // 2
    assert row == [9, *word[:half], *word[-half:]]
    assert spell(9, [4, 5]) == [9, 4, 5] + [0] * (MAX_WORD_CHARS - 2)


def test_spell_takes_any_sequence_and_leaves_it_alone():
    chars = [5, 6, 7, 8, 9]
    assert spell(2, chars, 2) == [2, 5, 9]
    assert chars == [5, 6, 7, 8, 9]
    assert spell(2, (5, 6), 3) == spell(2, range(5, 7), 3) == [2, 5, 6, 0]


# ----------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("batch_shape", [(7,), (2, 4), (2, 3, 2)])
@pytest.mark.parametrize("width", [1, WIDTH])
def test_output_shape_is_word_embedding_plus_both_directions(batch_shape, width):
    embed = make()
    assert embed.embedding_dim == EMBED + 2 * CHAR_HIDDEN
    generator = torch.Generator().manual_seed(3)
    words = torch.randint(0, VOCAB, (*batch_shape, 1), generator=generator)
    chars = torch.randint(1, CHARS, (*batch_shape, width), generator=generator)
    out = embed(torch.cat([words, chars], dim=-1))
    assert out.shape == (*batch_shape, EMBED + 2 * CHAR_HIDDEN)
    assert out.dtype == torch.float64


def test_the_docstring_example():
    embed = WordCharEmbedding(100, 32, 60, 16, 24)
    ids = torch.tensor([[spell(5, [7, 8, 9]), spell(6, [10])]])
    assert ids.shape == (1, 2, 21)
    assert embed(ids).shape == (1, 2, 80)


def test_no_tokens_at_all():
    out = make()(torch.zeros(0, 1 + WIDTH, dtype=torch.int64))
    assert out.shape == (0, EMBED + 2 * CHAR_HIDDEN)


# ----------------------------------------------------------------------------- values


@pytest.mark.parametrize("engine", ["fused", "reference"])
def test_spelling_part_equals_torch_rnn_h_n_over_each_word_alone(engine, monkeypatch):
    monkeypatch.setenv("RNNKIT_ENGINE", engine)
    embed = make()
    theirs = torch_oracle(embed)
    out = embed(SENTENCES)  # (2, 4, EMBED + 2 * CHAR_HIDDEN)
    for b in range(SENTENCES.size(0)):
        for t in range(SENTENCES.size(1)):
            word, chars = int(SENTENCES[b, t, 0]), SENTENCES[b, t, 1:]
            chars = chars[chars != 0]
            torch.testing.assert_close(out[b, t, :EMBED], embed.words.weight[word], rtol=0, atol=0)
            spelling = out[b, t, EMBED:]
            if chars.numel() == 0:
                assert torch.equal(spelling, torch.zeros(2 * CHAR_HIDDEN, dtype=torch.float64))
                continue
            _, h_n = theirs(embed.chars(chars).unsqueeze(0))  # (2, 1, CHAR_HIDDEN)
            expected = torch.cat([h_n[0, 0], h_n[1, 0]])  # forward, then backward
            torch.testing.assert_close(spelling, expected, rtol=1e-9, atol=1e-9)


def test_spelling_part_equals_torch_rnn_on_a_packed_batch():
    embed = make(seed=1)
    theirs = torch_oracle(embed)
    flat = SENTENCES.reshape(-1, 1 + WIDTH)
    spelt = flat[(flat[:, 1:] != 0).any(dim=1)]  # (tokens with characters, 1 + WIDTH)
    lengths = (spelt[:, 1:] != 0).sum(dim=1)
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        embed.chars(spelt[:, 1:]), lengths, batch_first=True, enforce_sorted=False
    )
    _, h_n = theirs(packed)  # (2, tokens, CHAR_HIDDEN)
    torch.testing.assert_close(
        embed(spelt)[:, EMBED:], torch.cat([h_n[0], h_n[1]], dim=-1), rtol=1e-9, atol=1e-9
    )


def test_constant_weights_by_hand():
    # One feature everywhere, no recurrence (W_hh = 0), no biases: each direction's last
    # state is tanh of the character it reads last, so the forward direction ends on the
    # word's last character, the backward one on its first; padding is never read.
    embed = WordCharEmbedding(4, 1, 5, 1, 1).double()
    with torch.no_grad():
        for name, p in embed.char_rnn.named_parameters():
            p.fill_(1.0 if name.startswith("weight_ih") else 0.0)
        embed.chars.weight.copy_(
            torch.tensor([[0.0], [0.1], [0.2], [0.3], [0.4]], dtype=torch.float64)
        )
        embed.words.weight.copy_(torch.tensor([[0.0], [5.0], [6.0], [7.0]], dtype=torch.float64))
    out = embed(rows((2, [1, 2, 3]), (3, [4]), (1, [3, 1]), width=4))
    expected = torch.tensor(
        [
            [6.0, math.tanh(0.3), math.tanh(0.1)],
            [7.0, math.tanh(0.4), math.tanh(0.4)],
            [5.0, math.tanh(0.1), math.tanh(0.3)],
        ],
        dtype=torch.float64,
    )
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_same_word_id_different_spellings_give_different_vectors():
    embed = make()
    out = embed(rows((1, [2, 3, 4]), (1, [5, 6]), (1, [4, 3, 2]), (1, [2, 3, 4])))
    # <unk> (1) is one row of the word embedding ...
    for i in range(1, 4):
        assert torch.equal(out[i, :EMBED], out[0, :EMBED])
    # ... but each spelling, even the same characters reversed, is a different vector.
    spellings = out[:, EMBED:]
    for i, j in ((0, 1), (0, 2), (1, 2)):
        assert (spellings[i] - spellings[j]).abs().max() > 1e-3, (i, j)
    assert torch.equal(out[3], out[0])  # the same spelling again: the same vector


def test_each_token_is_embedded_independently_of_the_batch():
    embed = make(seed=2)
    together = embed(SENTENCES)
    for b in range(SENTENCES.size(0)):
        for t in range(SENTENCES.size(1)):
            alone = embed(SENTENCES[b, t].unsqueeze(0))[0]
            torch.testing.assert_close(together[b, t], alone, rtol=1e-12, atol=1e-12)


def test_padding_rows_and_wordless_rows():
    embed = make()
    out = embed(rows((0, []), (4, []), (0, [2, 3])))
    assert torch.equal(out[0], torch.zeros(EMBED + 2 * CHAR_HIDDEN, dtype=torch.float64))
    # A word without characters: its embedding, and zeros for the spelling part.
    assert torch.equal(out[1, :EMBED], embed.words.weight[4])
    assert torch.equal(out[1, EMBED:], torch.zeros(2 * CHAR_HIDDEN, dtype=torch.float64))
    # Characters with the padding word id: the word part is zeros, the spelling is read.
    assert torch.equal(out[2, :EMBED], torch.zeros(EMBED, dtype=torch.float64))
    assert out[2, EMBED:].abs().min() > 0


# ----------------------------------------------------------------------------- gradients


def test_gradients_reach_the_char_embedding_and_char_rnn():
    embed = make()
    out = embed(SENTENCES)
    weights = torch.linspace(-1, 1, out.numel(), dtype=torch.float64).reshape(out.shape)
    (out * weights).sum().backward()
    for name, p in embed.char_rnn.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 0, name
        assert torch.isfinite(p.grad).all(), name
    used = set(SENTENCES[..., 1:].unique().tolist()) - {0}
    grad = embed.chars.weight.grad
    for char in range(CHARS):
        norm = float(grad[char].abs().max())
        assert (norm > 0) == (char in used), (char, norm)  # padding (0) and unused: none
    words_grad = embed.words.weight.grad
    assert torch.equal(words_grad[0], torch.zeros(EMBED, dtype=torch.float64))
    assert words_grad[1].abs().max() > 0


def test_a_batch_of_padding_only_backpropagates():
    embed = make()
    embed.words.weight.requires_grad_(True)
    out = embed(torch.zeros(2, 3, 1 + WIDTH, dtype=torch.int64))
    assert torch.equal(out, torch.zeros(2, 3, EMBED + 2 * CHAR_HIDDEN, dtype=torch.float64))
    out.sum().backward()
    assert torch.equal(embed.words.weight.grad, torch.zeros(VOCAB, EMBED, dtype=torch.float64))
    for p in embed.char_rnn.parameters():
        assert p.grad is None or not p.grad.any()


def test_gradcheck_of_the_spelling_in_float64(monkeypatch):
    monkeypatch.setenv("RNNKIT_ENGINE", "reference")  # the fast engines: the oracle test above
    embed = make(char_embedding_dim=2, char_hidden_size=2)
    ids = rows((1, [2, 3, 4]), (5, [4]), (0, []), (1, [6, 2]), width=4)
    names = ["chars.weight", "char_rnn.weight_hh_l0_reverse", "char_rnn.bias_ih_l0"]
    params = dict(embed.named_parameters())
    inputs = tuple(params[n].detach().clone().requires_grad_(True) for n in names)

    def spelled(*values: torch.Tensor) -> torch.Tensor:
        return functional_call(embed, dict(zip(names, values, strict=True)), (ids,))

    assert torch.autograd.gradcheck(spelled, inputs)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("ids", "shown"),
    [
        (torch.zeros(2, 1 + WIDTH), "got a torch.float32 tensor of shape (2, 7)"),
        (torch.tensor(spell(3, [2, 4], WIDTH)), "got a torch.int64 tensor of shape (7,)"),
        (torch.zeros(3, 1, dtype=torch.int64), "of shape (3, 1)"),  # a word id, no characters
        (torch.zeros(2, 1 + WIDTH, dtype=torch.bool), "got a torch.bool tensor"),
    ],
    ids=["float", "1-D", "no-char-column", "bool"],
)
def test_bad_ids_are_refused_naming_the_argument(ids, shown):
    with pytest.raises(ValueError, match=r"argument `ids`, expected integer rows") as caught:
        make()(ids)
    assert shown in str(caught.value)
