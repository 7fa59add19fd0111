r"""What a trained run's recurrent network does with one example, as numbers to draw.

``rnnkit explain`` draws these (:mod:`rnnkit.toolkit.plots`); here they are computed:

- :func:`hidden_states`: the top layer's state :math:`h_t` after every step, per
  direction, ``(steps, units)``: which units switch on where.
- :func:`gradient_through_time`: :math:`\lVert dL/dh_t \rVert` for every step ``t``:
  how strongly the loss still depends on the state after step ``t``. It is the total
  derivative, through the head and through every later step; for the Elman cell
  :math:`h_{t+1} = \tanh(x_{t+1} W_{ih}^T + b_{ih} + h_t W_{hh}^T + b_{hh})` it obeys

  .. math::
      \frac{dL}{dh_t} = \frac{\partial L}{\partial h_t}
          + \frac{dL}{dh_{t+1}} \, \mathrm{diag}(1 - h_{t+1}^2) \, W_{hh}

  (the first term is the head's direct path, nonzero at every step for a tagger, at the
  last step only for a many-to-one model). A norm that falls steeply towards early
  steps is a vanishing gradient: the early inputs barely train. It is computed by
  running the model's own layer one step at a time, so that each state is a tensor
  of the autograd graph, then asking autograd for the loss's derivative by each::

      state = None
      for t in range(steps):                          # forward direction
          _, state = layer(x[:, t : t + 1], state)    # x: (1, steps, features)
          states.append(state)                        # an LSTM's state is (h, c): h is used
      grads = torch.autograd.grad(loss(head(states)), states)

  This works for every cell; ``tests/toolkit/test_explain.py`` checks it against the
  recursion above written out by hand, and against torch's cells.
- :func:`attention_map`: a translate run's attention weights for one sentence.

Shapes: ``steps`` positions of the example, ``units`` = hidden_size,
``features`` per step of the layer's input.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence
from torch.utils.data import Dataset

from rnnkit.toolkit.arguments import invalid_argument
from rnnkit.toolkit.models import (
    EncoderOutput,
    LanguageModel,
    ManyToOneModel,
    RecurrentEncoder,
    TaggingModel,
)

__all__ = [
    "ATTENTION_PNG",
    "COMPARED_CELLS",
    "DIRECTIONS",
    "EXPLAIN_DIR",
    "GRADIENT_COMPARE_PNG",
    "GRADIENT_PNG",
    "HIDDEN_STATES_PNG",
    "AttentionMap",
    "attention_map",
    "compare_config",
    "example_batch",
    "explained_model",
    "first_split",
    "gradient_through_time",
    "hidden_states",
    "step_inputs",
    "train_briefly",
]

EXPLAIN_DIR = "explain"  # under the run directory, unless --out says otherwise
HIDDEN_STATES_PNG = "hidden_states.png"
GRADIENT_PNG = "gradient_through_time.png"
GRADIENT_COMPARE_PNG = "gradient_through_time_compare.png"
ATTENTION_PNG = "attention.png"
DIRECTIONS = ("forward", "backward")  # the keys of the per-direction results, in torch's order
COMPARED_CELLS = ("rnn", "gru", "lstm")  # what --compare trains, Elman first
# Models whose loss reads only an encoder and a head: the gradient through time applies.
ENCODER_HEAD_MODELS = (ManyToOneModel, TaggingModel, LanguageModel)
# How tokens that print as nothing are shown under a heatmap.
VISIBLE = {" ": "␣", "\n": "⏎", "\t": "⇥"}


# ----------------------------------------------------------------------------- the example


def first_split(data: Any) -> tuple[Dataset, str]:
    """The split a run is explained on: test, else validation, else training.

    Args:
        data: A :class:`~rnnkit.toolkit.tasks.TaskData`.

    Returns:
        ``(dataset, name)``, name ``"test"``, ``"validation"`` or ``"training"``.
    """
    for dataset, name in ((data.test, "test"), (data.val, "validation")):
        if dataset is not None and len(dataset):
            return dataset, name
    return data.train, "training"


def example_batch(dataset: Dataset, collate_fn: Callable | None, where: str) -> Any:
    """The first example of `dataset`, collated as a batch of one.

    Args:
        dataset: A task's dataset.
        collate_fn: Its collate function (None: torch's default stacking).
        where: What the dataset is, for the error (``"data/other.csv"``).

    Returns:
        The task's batch (``(inputs, [lengths,] target)``) of ``dataset[0]``.

    Raises:
        ValueError: The dataset holds no example.
    """
    from rnnkit.toolkit.tasks import first_batch

    if len(dataset) == 0:
        raise ValueError(f"{where}: expected at least one example, got none")
    return first_batch(dataset, collate_fn, 1)


def explained_model(model: nn.Module) -> tuple[nn.Module, str | None]:
    """The network to explain: `model` itself, or an ensemble's first member.

    Args:
        model: A run's model, as :func:`~rnnkit.toolkit.checkpoint.load_model` returns it.

    Returns:
        ``(network, note)``: the note says which member was taken, or is None.
    """
    members = getattr(model, "members", None)
    if members is not None and not hasattr(model, "encoder"):
        return members[0], f"an ensemble of {len(members)}: the first member is shown"
    return model, None


def step_inputs(transform: Any, batch: Any) -> list[str] | np.ndarray:
    """What the network read at each step of a batch of one, to draw beside its states.

    Args:
        transform: The run's fitted transform (a vocabulary to decode token ids).
        batch: A collated batch of one example (:func:`example_batch`).

    Returns:
        The tokens as the model saw them (``<unk>`` for an unknown word; a blank
        character as ``␣``), one per step; or, for real-valued input, the
        (standardised) features, an array ``(steps, features)``.
    """
    x, _ = _example(batch)
    if x.dtype.is_floating_point:
        return x[0].detach().cpu().numpy()  # (steps, features)
    ids = (x[0] if x.dim() == 2 else x[0, :, 0]).tolist()  # word ids, before their spellings
    source = getattr(transform, "source", None)  # a translation's subword vocabulary
    if source is not None:
        return [source.piece(i) for i in ids]
    return [VISIBLE.get(token, token) for token in transform.vocab.decode(ids)]


# ----------------------------------------------------------------------------- hidden states


def hidden_states(model: nn.Module, batch: Any) -> dict[str, Tensor]:
    """The top recurrent layer's hidden state after every step of one example.

    Args:
        model: A toolkit model with a :class:`~rnnkit.toolkit.models.RecurrentEncoder`
            as ``encoder`` (every task's model, the translation model included).
        batch: A collated batch of one example, ``(inputs, [lengths,] ..., target)``
            as the task's collate function gives it.

    Returns:
        ``{"forward": states}``, and ``"backward"`` for a bidirectional encoder; the
        backward direction's row ``t`` is its state after reading back to step ``t``.
        CPU tensors, in eval mode (no dropout), without gradients.

    Shape:
        Each value ``(steps, units)``.

    Example:
        >>> states = hidden_states(model, example_batch(data.test, data.collate_fn, "test"))
        >>> states["forward"].shape  # (steps, units)
        torch.Size([10, 8])
    """
    encoder = _encoder_of(model)
    x, _ = _example(batch)
    device = next(model.parameters()).device
    with _evaluating(model), torch.no_grad():
        output = encoder(x.to(device)).output  # (1, steps, directions * units)
    units = encoder.rnn.hidden_size
    return {
        name: output[0, :, d * units : (d + 1) * units].cpu()  # (steps, units)
        for d, name in enumerate(DIRECTIONS[: encoder.num_directions])
    }


# ----------------------------------------------------------------------------- gradients


def gradient_through_time(
    model: nn.Module, batch: Any, loss_fn: Callable[[Tensor, Tensor], Tensor]
) -> dict[str, Tensor]:
    r"""The norm of :math:`dL/dh_t` for every step ``t`` of one example.

    ``h_t`` is the top layer's recurrent state after step ``t`` (an LSTM's ``h``); the
    derivative is the total one, through every later step as well as the head (see
    the module docstring). Lower layers run whole; the top layer runs one step at a
    time on the model's own weights. The model is in eval mode and its parameters'
    ``.grad`` are left as they were.

    Args:
        model: A ``ManyToOneModel``, ``TaggingModel`` or ``LanguageModel``.
        batch: A collated batch of one example, ``(inputs, [lengths,] target)``.
        loss_fn: The task's loss, ``loss_fn(output, target)`` -> a scalar
            (``task.loss_fn()``).

    Returns:
        ``{"forward": norms}``, and ``"backward"`` for a bidirectional encoder (its
        entry ``t``: the state after reading back to step ``t``). CPU float64 tensors.

    Raises:
        ValueError: `model` is not an encoder-and-head model (a translation model's
            decoder reads every encoder step through attention), or `batch` is not
            one example.

    Shape:
        Each value ``(steps,)``.

    Example:
        >>> norms = gradient_through_time(model, batch, task.loss_fn())
        >>> norms["forward"].shape  # (steps,): falling fast towards step 1 is a vanishing gradient
        torch.Size([10])
    """
    if not isinstance(model, ENCODER_HEAD_MODELS):
        raise invalid_argument(
            "model",
            "a ManyToOneModel, TaggingModel or LanguageModel (an encoder and a head)",
            type(model).__name__,
        )
    encoder = _encoder_of(model)
    x, target = _example(batch)
    device = next(model.parameters()).device
    x, target = x.to(device), target.to(device)
    with _evaluating(model), torch.enable_grad():
        # Derivatives by the states only: the embedding's are not needed.
        inputs = x if encoder.embedding is None else encoder.embedding(x).detach()
        encoded, states = _stepwise(encoder.rnn, inputs)  # inputs: (1, steps, features)
        loss = loss_fn(model.head(encoded), target)
        if loss.dim() != 0:
            raise ValueError(
                f"Received an invalid value for argument `loss_fn`, expected a function that "
                f"returns a scalar, got one of shape {tuple(loss.shape)}"
            )
        named = [(name, t) for name, steps in states.items() for t in range(len(steps))]
        flat = [states[name][t] for name, t in named]
        grads = torch.autograd.grad(loss, flat, allow_unused=True)
    norms: dict[str, list[float]] = {name: [0.0] * len(steps) for name, steps in states.items()}
    for (name, t), grad in zip(named, grads, strict=True):
        norms[name][t] = 0.0 if grad is None else float(grad.norm())
    return {name: torch.tensor(values, dtype=torch.float64) for name, values in norms.items()}


def _stepwise(rnn: nn.Module, inputs: Tensor) -> tuple[EncoderOutput, dict[str, list[Tensor]]]:
    """Run `rnn` over `inputs` ``(1, steps, features)`` layer by layer, direction by direction,
    the top layer one step at a time; its states by direction, in input order."""
    directions = 2 if rnn.bidirectional else 1
    layer_input = inputs  # (1, steps, features)
    finals: list[Tensor | tuple[Tensor, Tensor]] = []
    states: dict[str, list[Tensor]] = {}
    for layer in range(rnn.num_layers):
        top = layer == rnn.num_layers - 1
        outputs = []
        for direction in range(directions):
            single = _one_direction(rnn, layer, direction)
            sequence = layer_input.flip(1) if direction else layer_input  # backward: reversed
            if top:
                hidden, final = _steps(single, sequence)  # (1, 1, units) per step
                output = torch.cat([h.transpose(0, 1) for h in hidden], dim=1)  # (1, steps, units)
                states[DIRECTIONS[direction]] = hidden[::-1] if direction else hidden
            else:
                output, final = single(sequence)  # (1, steps, units)
            outputs.append(output.flip(1) if direction else output)
            finals.append(final)
        layer_input = torch.cat(outputs, dim=-1)  # (1, steps, directions * units)
    if isinstance(finals[0], tuple):  # an LSTM's (h, c)
        h_n = torch.cat([h for h, _ in finals])  # (directions * layers, 1, units)
        c_n = torch.cat([c for _, c in finals])
        return EncoderOutput(layer_input, h_n, None, c_n), states
    return EncoderOutput(layer_input, torch.cat(finals), None), states


def _steps(
    layer: nn.Module, sequence: Tensor
) -> tuple[list[Tensor], Tensor | tuple[Tensor, Tensor]]:
    """One call of `layer` per step: the state ``h`` after each step ``(1, 1, units)`` and
    the final state. The head must read these very tensors, which carry the recurrence
    (not the layer's output, an equal copy): the derivative by each then gathers both paths."""
    state = None
    hidden = []
    for t in range(sequence.size(1)):
        _, state = layer(sequence[:, t : t + 1], state)  # an LSTM's state is (h, c)
        hidden.append(state[0] if isinstance(state, tuple) else state)  # (layers=1, 1, units)
    return hidden, state


def _one_direction(rnn: nn.Module, layer: int, direction: int) -> nn.Module:
    """A one-layer, one-direction layer of `rnn`'s kind that shares `rnn`'s parameters of
    (`layer`, `direction`): the same weights, under the names of layer 0."""
    suffix = "_reverse" if direction else ""
    kinds = ("weight_ih", "weight_hh", *(("bias_ih", "bias_hh") if rnn.bias else ()))
    weight = getattr(rnn, f"weight_ih_l{layer}{suffix}")
    options = {"nonlinearity": rnn.nonlinearity} if hasattr(rnn, "nonlinearity") else {}
    single = type(rnn)(
        weight.size(1), rnn.hidden_size, bias=rnn.bias, batch_first=True,
        device=weight.device, dtype=weight.dtype, **options,
    )  # fmt: skip
    for kind in kinds:
        setattr(single, f"{kind}_l0", getattr(rnn, f"{kind}_l{layer}{suffix}"))
    return single


# ----------------------------------------------------------------------------- attention


class AttentionMap(NamedTuple):
    """One sentence's translation and the attention weights that produced it."""

    translation: str  # the decoded output sentence
    source: list[str]  # the source subword pieces, one per column
    target: list[str]  # the generated pieces and "</s>", one per row
    weights: Tensor  # (target, source) attention weights, each row summing to 1


def attention_map(model: nn.Module, transform: Any, sentence: str) -> AttentionMap:
    """Translate `sentence` with a translate run's model and keep its attention weights.

    Args:
        model: A :class:`~rnnkit.toolkit.translation.model.TranslationModel`.
        transform: The run's subword vocabularies.
        sentence: A source sentence.

    Returns:
        An :class:`AttentionMap`, as :func:`rnnkit.toolkit.plots.plot_attention` draws it.
    """
    from rnnkit.toolkit.tasks.translate import translate_sentences

    if not isinstance(sentence, str) or not sentence.strip():
        raise invalid_argument("sentence", "a non-empty sentence", sentence)
    maps: list[Any] = []
    translation = translate_sentences(model, transform, [sentence.strip()], attention=maps)[0]
    source, target, weights = maps[0]
    return AttentionMap(translation, source, target, weights)


# ----------------------------------------------------------------------------- --compare


def compare_config(
    path: str | os.PathLike[str], cell: str, epochs: int, overrides: Sequence[str] = ()
) -> Any:
    """A run's configuration with another cell and a few epochs, as ``--set`` would give it.

    Args:
        path: The run's ``config.toml``.
        cell: ``"rnn"``, ``"gru"`` or ``"lstm"``.
        epochs: Epochs to train.
        overrides: Further ``section.key=value`` changes.

    Returns:
        A :class:`~rnnkit.toolkit.config.RunConfig`: the run's size and data, the
        gated cells with their ``tanh``, no early stopping.
    """
    from rnnkit.toolkit.config import load_config

    if cell not in COMPARED_CELLS:
        raise invalid_argument("cell", f"one of {COMPARED_CELLS}", cell)
    changes = [f"model.cell={cell}", f"train.epochs={epochs}", "train.early_stopping_patience=0"]
    if cell != "rnn":  # only the Elman cell takes relu
        changes.append("model.nonlinearity=tanh")
    return load_config(path, [*changes, *overrides])


def train_briefly(config: Any, task: Any, data: Any, callbacks: Sequence[Any] = ()) -> nn.Module:
    """Train a fresh model of `config` on `data` in memory; nothing is written.

    Args:
        config: A :class:`~rnnkit.toolkit.config.RunConfig` (:func:`compare_config`).
        task: Its :class:`~rnnkit.toolkit.tasks.Task`.
        data: The task's prepared data (its training and validation splits are used).
        callbacks: Trainer callbacks, e.g. one that shows progress.

    Returns:
        The trained model (the best epoch's weights, as the trainer keeps them).
    """
    from rnnkit.toolkit.models import build_model
    from rnnkit.toolkit.seeding import seed_everything
    from rnnkit.toolkit.trainer import Trainer

    seed_everything(config.train.seed)
    model_config = config.model.to_model_config(config.task, **task.model_sizes(data.transform))
    model = build_model(model_config)
    trainer = Trainer(
        config.train.to_train_config(progress=False), model, data.train, data.val,
        loss_fn=task.loss_fn(config.train.label_smoothing), metrics=task.metrics(),
        collate_fn=data.collate_fn, callbacks=callbacks, out_dir=None,
    )  # fmt: skip
    trainer.fit()
    return model


# ----------------------------------------------------------------------------- helpers


def _encoder_of(model: nn.Module) -> RecurrentEncoder:
    encoder = getattr(model, "encoder", None)
    if not isinstance(model, nn.Module) or not isinstance(encoder, RecurrentEncoder):
        members = " (an ensemble: pass one of model.members)" if hasattr(model, "members") else ""
        raise invalid_argument(
            "model", f"a toolkit model with a RecurrentEncoder as `encoder`{members}",
            type(model).__name__,
        )  # fmt: skip
    rnn = encoder.rnn
    odd = {
        "proj_size": getattr(rnn, "proj_size", 0),
        "merge_mode": getattr(rnn, "merge_mode", "concat"),
        "learn_initial_state": getattr(rnn, "learn_initial_state", False),
    }
    usual = {"proj_size": 0, "merge_mode": "concat", "learn_initial_state": False}
    if odd != usual:
        raise invalid_argument(
            "model", f"an encoder layer with the toolkit's options {usual}", odd
        )  # fmt: skip
    return encoder


def _example(batch: Any) -> tuple[Tensor, Tensor]:
    """``(x, target)`` of a collated batch of one: x padded, ``(1, steps[, features])``."""
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise invalid_argument(
            "batch", "a collated batch (inputs, [lengths,] ..., target)", type(batch).__name__
        )
    x, target = batch[0], batch[-1]
    if isinstance(x, PackedSequence):
        x, _ = pad_packed_sequence(x, batch_first=True)  # one example: no padding
    if not isinstance(x, Tensor) or x.dim() < 2:
        raise invalid_argument(
            "batch", "inputs of shape (1, steps[, features])", getattr(x, "shape", x)
        )
    if x.size(0) != 1:
        raise ValueError(
            "Received an invalid value for argument `batch`, expected one example, got a "
            f"batch of {x.size(0)}"
        )
    lengths = batch[1] if len(batch) > 2 else None
    if isinstance(lengths, Tensor) and lengths.numel() == 1 and int(lengths) < x.size(1):
        steps = int(lengths)
        x = x[:, :steps]
        if isinstance(target, Tensor) and target.dim() == 2 and target.size(1) > steps:
            target = target[:, :steps]  # one target per step: the padding's are dropped
    return x, target


@contextlib.contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode (no dropout) for the block, then the mode the model was in."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
