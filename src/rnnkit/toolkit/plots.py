"""PNG plots of a run: learning curves, a forecast against the actual series, a confusion
matrix, a translation's attention map, and what ``rnnkit explain`` shows of a network: its
hidden states over one example and the gradient's norm through time.

matplotlib is imported inside the functions (importing the toolkit stays
cheap) and draws on an Agg canvas attached to each figure, without pyplot, so
no global backend is chosen or changed and no window ever opens.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "confusion_counts",
    "plot_attention",
    "plot_confusion_matrix",
    "plot_ensemble_members",
    "plot_forecast",
    "plot_gradient_norms",
    "plot_hidden_states",
    "plot_learning_curves",
]

DPI = 120


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)  # attaches itself as figure.canvas
    return figure


def plot_learning_curves(
    history: Sequence[Mapping[str, float]],
    path: str | os.PathLike[str],
    *,
    best_epoch: int | None = None,
    title: str = "Learning curves",
) -> Path:
    """Train and validation loss per epoch, and the epoch whose weights were kept.

    Args:
        history: The trainer's history: one mapping per epoch with ``epoch``,
            ``train_loss`` and, with a validation set, ``val_loss``.
        path: Where the PNG goes.
        best_epoch: The epoch to mark as the best, as the trainer judged it by its
            monitored value (which need not be the loss); None marks none.
        title: The figure's title.

    Returns:
        `path`.

    Example:
        >>> plot_learning_curves(trainer.history, "runs/goog/learning_curves.png", best_epoch=7)
    """
    figure = _learning_curves_figure(history, best_epoch, title)
    _save(figure, path)
    return Path(path)


def _learning_curves_figure(
    history: Sequence[Mapping[str, float]], best_epoch: int | None, title: str
) -> Any:
    if not history:
        raise ValueError(
            "Received an invalid value for argument `history`, expected at least one epoch, got []"
        )
    epochs = [row["epoch"] for row in history]
    if best_epoch is not None and best_epoch not in epochs:
        raise ValueError(
            "Received an invalid value for argument `best_epoch`, expected None or one of the "
            f"epochs of `history` ({epochs[0]} to {epochs[-1]}), got {best_epoch!r}"
        )
    figure = _figure(7, 4)
    axes = figure.add_subplot()
    for key, label, style in (("train_loss", "train", "-o"), ("val_loss", "validation", "-s")):
        values = [row.get(key, math.nan) for row in history]
        if any(_finite(v) for v in values):
            axes.plot(epochs, values, style, markersize=3, label=label)
    if best_epoch is not None:
        axes.axvline(best_epoch, color="0.6", linestyle=":", label=f"best epoch ({best_epoch})")
    losses = [row.get(k, math.nan) for row in history for k in ("train_loss", "val_loss")]
    if all(v > 0 for v in losses if _finite(v)) and _spread(losses) > 10:
        axes.set_yscale("log")  # a first epoch far above the rest would flatten the others
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("epoch")
    axes.set_ylabel("loss")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    return figure


def plot_ensemble_members(
    member_values: Sequence[float | None],
    ensemble_value: float | None,
    path: str | os.PathLike[str],
    *,
    metric: str,
    title: str = "Ensemble members and their average",
) -> Path:
    """Each member's validation figure as a bar, their mean and the ensemble's as lines.

    Args:
        member_values: The figure of each member's kept epoch (None: the member has none).
        ensemble_value: The same figure for the members' average; None draws no line.
        path: Where the PNG goes.
        metric: The figure's name, e.g. ``"val_accuracy"``.
        title: The figure's title.

    Returns:
        `path`.

    Shape:
        member_values: ``(members,)``.

    Example:
        >>> plot_ensemble_members([0.79, 0.81, 0.80], 0.82, "runs/sst2/ensemble_members.png",
        ...                       metric="val_accuracy")
    """
    values = [float(v) if _finite(v) else math.nan for v in member_values]
    if not values:
        raise ValueError(
            "Received an invalid value for argument `member_values`, expected at least one "
            "member, got []"
        )
    figure = _figure(7.0, 3.8)
    axes = figure.add_subplot()
    members = np.arange(1, len(values) + 1)
    axes.bar(members, values, color="#9ecae1", label="each member (its kept epoch)")
    finite = [v for v in values if math.isfinite(v)]
    shown = list(finite)
    if finite:
        mean = float(np.mean(finite))
        axes.axhline(mean, color="#6b6b6b", linestyle=":", label=f"mean of the members {mean:.4g}")
    if _finite(ensemble_value):
        shown.append(float(ensemble_value))
        axes.axhline(ensemble_value, color="#d62728", linewidth=2,
                     label=f"their average {ensemble_value:.4g}")  # fmt: skip
    if shown:  # bars from zero would hide differences of a point or two
        low, high = min(shown), max(shown)
        margin = max(high - low, abs(high) * 0.01, 1e-6)
        axes.set_ylim(low - margin, high + 1.6 * margin)  # room for the legend on top
    axes.set_xticks(members)
    axes.set_xlabel("member")
    axes.set_ylabel(metric)
    axes.set_title(title)
    axes.legend(loc="upper center", ncols=3, fontsize="small")
    _save(figure, path)
    return Path(path)


def plot_forecast(
    dates: Sequence[Any] | pd.Index,
    actual: Sequence[float] | np.ndarray,
    predicted: Sequence[float] | np.ndarray,
    path: str | os.PathLike[str],
    *,
    title: str = "Forecast on the test period",
    ylabel: str = "value",
    errors: bool = True,
) -> Path:
    """The predicted series over the actual one, dates on the x axis.

    Args:
        dates: The date of each target (a DatetimeIndex, or labels).
        actual: The actual values, in original units.
        predicted: The model's forecasts of the same dates.
        path: Where the PNG goes.
        title: The figure's title, e.g. with the RMSE against the baseline's.
        ylabel: What the values are, e.g. ``"Close"``.
        errors: Add a lower panel with the forecast error per date.

    Returns:
        `path`.

    Shape:
        dates, actual, predicted: ``(n,)``, one per forecast.
    """
    actual = np.asarray(actual, dtype=float).reshape(-1)
    predicted = np.asarray(predicted, dtype=float).reshape(-1)
    x = pd.Index(dates)
    if not len(x) == len(actual) == len(predicted) or len(x) == 0:
        raise ValueError(
            "Received invalid values for arguments `dates`, `actual`, `predicted`, expected "
            f"the same non-zero length, got {len(x)}, {len(actual)}, {len(predicted)}"
        )
    dated = isinstance(x, pd.DatetimeIndex)
    xs = x.to_pydatetime() if dated else np.arange(len(x))
    figure = _figure(10, 5.5 if errors else 4.2)
    if errors:
        top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    else:
        top, bottom = figure.add_subplot(), None
    top.plot(xs, actual, color="black", linewidth=1.2, label="actual")
    top.plot(xs, predicted, color="tab:orange", linewidth=1.0, label="predicted")
    top.set_ylabel(ylabel)
    top.set_title(title)
    top.grid(alpha=0.3)
    top.legend()
    last = bottom if bottom is not None else top
    if bottom is not None:
        bottom.axhline(0, color="0.5", linewidth=0.8)
        bottom.plot(xs, predicted - actual, color="tab:orange", linewidth=0.8)
        bottom.set_ylabel("error")
        bottom.grid(alpha=0.3)
    if dated:
        from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

        locator = AutoDateLocator()
        last.xaxis.set_major_locator(locator)
        last.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    else:
        labels = [str(v) for v in x]
        ticks = np.linspace(0, len(x) - 1, num=min(8, len(x)), dtype=int)
        last.set_xticks(ticks, [labels[i] for i in ticks])
    last.set_xlabel("date" if dated else "")
    _save(figure, path)
    return Path(path)


def plot_confusion_matrix(
    labels: Sequence[Any],
    predicted: Sequence[Any],
    classes: Sequence[Any],
    path: str | os.PathLike[str],
    *,
    title: str = "Confusion matrix on the test set",
) -> Path:
    """Counts of each (true, predicted) class pair, coloured by the share of the true class.

    Args:
        labels: The true class of each example.
        predicted: The model's class for the same examples.
        classes: Every class, in the order of the rows and columns; each label and
            prediction must be one of them.
        path: Where the PNG goes.
        title: The figure's title, e.g. with the accuracy.

    Returns:
        `path`.

    Shape:
        labels, predicted: ``(n,)``, one per example; the matrix is ``(classes, classes)``,
        rows true, columns predicted.

    Example:
        >>> plot_confusion_matrix(["neg", "pos", "pos"], ["neg", "neg", "pos"], ["neg", "pos"],
        ...                       "runs/sst2/confusion_matrix.png")
    """
    counts = confusion_counts(labels, predicted, classes)
    figure = _confusion_figure(counts, [str(c) for c in classes], title)
    _save(figure, path)
    return Path(path)


def confusion_counts(
    labels: Sequence[Any], predicted: Sequence[Any], classes: Sequence[Any]
) -> np.ndarray:
    """The confusion matrix: ``counts[i, j]`` examples of ``classes[i]`` predicted ``classes[j]``.

    Args:
        labels: The true class of each example.
        predicted: The model's class for the same examples.
        classes: Every class, in the order of the rows and columns.

    Returns:
        An int64 array of shape ``(len(classes), len(classes))``.

    Raises:
        ValueError: `classes` is empty or repeats a class, `labels` and `predicted` differ
            in length or are empty, or either holds a value that is not in `classes`.
    """
    classes, labels, predicted = list(classes), list(labels), list(predicted)
    index = {c: i for i, c in enumerate(classes)}
    if not classes or len(index) != len(classes):
        raise ValueError(
            "Received an invalid value for argument `classes`, expected distinct classes, "
            f"got {classes!r}"
        )
    if not len(labels) == len(predicted) or not labels:
        raise ValueError(
            "Received invalid values for arguments `labels`, `predicted`, expected the same "
            f"non-zero length, got {len(labels)}, {len(predicted)}"
        )
    for name, values in (("labels", labels), ("predicted", predicted)):
        unknown = sorted({repr(v) for v in values if v not in index})
        if unknown:
            raise ValueError(
                f"Received an invalid value for argument `{name}`, expected values among "
                f"`classes` {classes!r}, got {', '.join(unknown[:5])}"
            )
    counts = np.zeros((len(classes), len(classes)), dtype=np.int64)  # (true, predicted)
    np.add.at(counts, ([index[v] for v in labels], [index[v] for v in predicted]), 1)
    return counts


def _confusion_figure(counts: np.ndarray, names: list[str], title: str) -> Any:
    # Colour by the row's share, so that a rare class's errors show as clearly as a common one's.
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    side = min(3.5 + 0.45 * len(names), 12)
    figure = _figure(side + 1, side)
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, label="share of the true class", shrink=0.8)
    ticks = np.arange(len(names))
    if max(map(len, names)) > 3:  # long names overlap unless turned
        axes.set_xticks(ticks, names, rotation=45, ha="right", rotation_mode="anchor")
    else:
        axes.set_xticks(ticks, names)
    axes.set_yticks(ticks, names)
    small = len(names) > 12
    for (row, column), count in np.ndenumerate(counts):
        axes.text(
            column,
            row,
            f"{count:,}",
            ha="center",
            va="center",
            fontsize=6 if small else 9,
            color="white" if shares[row, column] > 0.5 else "black",  # legible on dark cells
        )
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    return figure


def plot_attention(
    weights: Any,
    source: Sequence[str],
    target: Sequence[str],
    path: str | os.PathLike[str],
    *,
    title: str = "Attention",
) -> Path:
    """Which source pieces each generated piece read: the decoder's attention weights.

    Args:
        weights: ``(target, source)`` attention weights (a tensor or array), each row
            summing to 1.
        source: The source pieces, one per column.
        target: The generated pieces (EOS included), one per row.
        path: Where the PNG goes.
        title: The figure's title.

    Returns:
        `path`.

    Raises:
        ValueError: The weights' shape is not ``(len(target), len(source))``.

    Example:
        >>> plot_attention(weights, ["▁Ein", "▁Mann", "."], ["▁A", "▁man", ".", "</s>"],
        ...                "runs/de-en/attention.png")
    """
    values = np.asarray(weights, dtype=float)
    if values.shape != (len(target), len(source)):
        raise ValueError(
            "Received an invalid value for argument `weights`, expected shape "
            f"({len(target)}, {len(source)}) (target, source), got {values.shape}"
        )
    figure = _figure(min(2.5 + 0.42 * len(source), 16), min(2.0 + 0.36 * len(target), 14))
    axes = figure.add_subplot()
    image = axes.imshow(values, cmap="Greys", vmin=0, vmax=1, aspect="auto")
    figure.colorbar(image, ax=axes, label="attention weight", shrink=0.8)
    font = {"family": _fonts_for([*source, *target, title])}
    axes.set_xticks(np.arange(len(source)), list(source), rotation=60, ha="right",
                    rotation_mode="anchor", fontdict=font)  # fmt: skip
    axes.set_yticks(np.arange(len(target)), list(target), fontdict=font)
    axes.set_xlabel("source (read by the encoder)")
    axes.set_ylabel("generated, top to bottom")
    axes.set_title(title, fontdict=font)
    _save(figure, path)
    return Path(path)


def plot_hidden_states(
    states: Any,
    path: str | os.PathLike[str],
    *,
    inputs: Any = None,
    feature_names: Sequence[str] | None = None,
    title: str = "Hidden states",
) -> Path:
    """Each unit's state at each step as a heatmap (units x steps), under what was read.

    Args:
        states: ``(steps, units)`` states (a tensor or array), or a mapping from a
            direction's name to its states (``{"forward": ..., "backward": ...}``, as
            :func:`rnnkit.toolkit.explain.hidden_states` returns them), drawn side by side.
        path: Where the PNG goes.
        inputs: What was read at each step: tokens (one string per step), shown as
            the x tick labels; or numbers ``(steps,)`` or ``(steps, features)``,
            drawn as lines above the heatmap; None shows step numbers only.
        feature_names: The names of the numeric inputs' features, for a legend.
        title: The figure's title.

    Returns:
        `path`.

    Raises:
        ValueError: The states are not 2-D, finite and of one shape; `inputs` or
            `feature_names` do not match them.

    Shape:
        Each of `states` ``(steps, units)``; the heatmap has a row per unit and a
        column per step.

    Example:
        >>> plot_hidden_states(explain.hidden_states(model, batch), "hidden_states.png",
        ...                    inputs=list("the cat"))
    """
    panels = _state_panels(states)
    steps = panels[0][1].shape[0]
    tokens, values = _step_inputs(inputs, steps)
    if feature_names is not None and (values is None or len(feature_names) != values.shape[1]):
        expected = "None for tokens" if values is None else f"{values.shape[1]} names"
        raise ValueError(
            f"Received an invalid value for argument `feature_names`, expected {expected} "
            f"(one per feature of `inputs`), got {list(feature_names)!r}"
        )
    figure = _hidden_states_figure(panels, tokens, values, feature_names, title)
    _save(figure, path)
    return Path(path)


def _state_panels(states: Any) -> list[tuple[str, np.ndarray]]:
    """``(name, (steps, units) array)`` per direction, checked."""
    if isinstance(states, Mapping):
        panels = [(str(name), np.asarray(values, dtype=float)) for name, values in states.items()]
    else:
        panels = [("", np.asarray(states, dtype=float))]
    shapes = [values.shape for _, values in panels]
    if not panels or any(len(shape) != 2 or 0 in shape for shape in shapes):
        raise ValueError(
            "Received an invalid value for argument `states`, expected (steps, units) arrays "
            f"of at least one step and unit, got shapes {shapes}"
        )
    if len(set(shapes)) > 1:
        raise ValueError(
            "Received an invalid value for argument `states`, expected every direction of "
            f"one shape, got shapes {shapes}"
        )
    if not all(np.isfinite(values).all() for _, values in panels):
        raise ValueError(
            "Received an invalid value for argument `states`, expected finite values, got NaN "
            "or infinity (did training diverge?)"
        )
    return panels


def _step_inputs(inputs: Any, steps: int) -> tuple[list[str] | None, np.ndarray | None]:
    """``(tokens, None)``, ``(None, (steps, features) values)`` or ``(None, None)``."""
    if inputs is None:
        return None, None
    if not isinstance(inputs, str) and _all_strings(inputs):
        tokens = list(inputs)
        if len(tokens) != steps:
            raise ValueError(
                f"Received an invalid value for argument `inputs`, expected {steps} tokens "
                f"(one per step of `states`), got {len(tokens)}"
            )
        return tokens, None
    try:
        values = np.asarray(inputs, dtype=float)
    except (TypeError, ValueError):
        values = None
    if values is not None and values.ndim == 1:
        values = values[:, None]  # (steps, 1)
    if values is None or values.ndim != 2 or values.shape[0] != steps:
        shape = None if values is None else values.shape
        raise ValueError(
            f"Received an invalid value for argument `inputs`, expected {steps} tokens or "
            f"numbers of shape ({steps},) or ({steps}, features), got {type(inputs).__name__}"
            + ("" if shape is None else f" of shape {shape}")
        )
    return None, values


def _all_strings(values: Any) -> bool:
    return isinstance(values, Sequence) and all(isinstance(v, str) for v in values)


def _hidden_states_figure(
    panels: list[tuple[str, np.ndarray]],
    tokens: list[str] | None,
    values: np.ndarray | None,
    feature_names: Sequence[str] | None,
    title: str,
) -> Any:
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    steps, units = panels[0][1].shape
    columns = len(panels)
    width = min(4.5 + 0.11 * steps, 11.0) * columns + 1.2  # + the colour bar
    height = min(2.0 + 0.14 * units, 9.0) + (1.6 if values is not None else 0.0)
    every = -(-steps // 60)  # at most about 60 token labels, however long the example
    turned = bool(tokens) and max(map(len, tokens)) * -(-steps // every) > 40  # else overlap
    height += 0.6 if turned else 0.0
    figure = _figure(min(width, 24.0), height)
    rows = 2 if values is not None else 1
    grid = figure.subplots(
        rows, columns, squeeze=False, sharex="col", height_ratios=[1, 3] if rows == 2 else None
    )
    # tanh keeps RNN, LSTM and GRU states in [-1, 1]: a fixed scale shows saturation; relu's
    # unbounded states take their own largest magnitude.
    largest = max(float(np.abs(states).max()) for _, states in panels)
    bound = 1.0 if largest <= 1.0 else largest
    font = {"family": _fonts_for([*(tokens or []), title])}
    one_based = FuncFormatter(lambda value, _: f"{round(value) + 1}")
    image = None
    for column, (name, states) in enumerate(panels):
        heat = grid[-1, column]
        image = heat.imshow(states.T, aspect="auto", cmap="RdBu_r", vmin=-bound, vmax=bound,
                            interpolation="nearest")  # fmt: skip
        heat.yaxis.set_major_locator(MaxNLocator(integer=True))
        heat.yaxis.set_major_formatter(one_based)
        if column == 0:
            heat.set_ylabel("unit")
        if tokens is not None:
            ticks = np.arange(0, steps, every)
            heat.set_xticks(ticks, [tokens[i] for i in ticks], fontdict=font,
                            rotation=90 if turned else 0)  # fmt: skip
            heat.set_xlabel("input, step by step" + (f" (every {every}th)" if every > 1 else ""))
        else:
            heat.xaxis.set_major_locator(MaxNLocator(integer=True))
            heat.xaxis.set_major_formatter(one_based)
            heat.set_xlabel("step")
        if columns > 1:
            reading = " (reads right to left)" if name == "backward" else ""
            grid[0, column].set_title(f"{name} direction{reading}")
        if values is not None:
            top = grid[0, column]
            lines = top.plot(np.arange(steps), values, linewidth=1.0)
            top.set_ylabel("input")
            top.grid(alpha=0.3)
            top.tick_params(labelbottom=False)
            if feature_names is not None and column == 0 and len(feature_names) <= 10:
                top.legend(lines, list(feature_names), fontsize=7, loc="upper left",
                           ncols=min(len(feature_names), 5))  # fmt: skip
    figure.colorbar(image, ax=list(grid[-1]), label="hidden state", shrink=0.9)
    figure.suptitle(title, fontfamily=font["family"])
    return figure


def plot_gradient_norms(
    norms: Any,
    path: str | os.PathLike[str],
    *,
    labels: Sequence[str] | None = None,
    title: str = "Gradient through time",
) -> Path:
    """The norm of dLoss/dh_t against the step t, on a log axis: where the gradient vanishes.

    Args:
        norms: One curve ``(steps,)``; several, as a sequence of curves (of any
            lengths) or a ``(curves, steps)`` array; or a mapping from a curve's
            label to it (as :func:`rnnkit.toolkit.explain.gradient_through_time`
            returns them, one per direction).
        path: Where the PNG goes.
        labels: One legend entry per curve (not with a mapping, whose keys are the labels).
        title: The figure's title.

    Returns:
        `path`.

    Raises:
        ValueError: A curve is empty, not 1-D, or holds a negative or non-finite
            value; no value is positive (nothing to draw on a log axis); `labels`
            do not match the curves.

    Shape:
        Each curve ``(steps,)``; entry ``t - 1`` is the norm at step ``t``.

    Example:
        >>> plot_gradient_norms([rnn, gru, lstm], "compare.png", labels=["RNN", "GRU", "LSTM"])
    """
    curves = _norm_curves(norms, labels)
    figure = _figure(7, 4)
    axes = figure.add_subplot()
    for label, values in curves:
        steps = np.arange(1, len(values) + 1)
        shown = np.where(values > 0, values, np.nan)  # a zero has no place on a log axis
        axes.plot(steps, shown, "-o", markersize=2.5 if len(values) <= 60 else 0, linewidth=1.2,
                  label=label)  # fmt: skip
    axes.set_yscale("log")
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("step t (the state after reading input t)")
    axes.set_ylabel("‖dLoss/dh_t‖")
    axes.set_title(title)
    axes.grid(alpha=0.3, which="both")
    if any(label for label, _ in curves):
        axes.legend()
    _save(figure, path)
    return Path(path)


def _norm_curves(norms: Any, labels: Sequence[str] | None) -> list[tuple[str, np.ndarray]]:
    """``(label, (steps,) values)`` per curve, checked."""
    if isinstance(norms, Mapping):
        if labels is not None:
            raise ValueError(
                "Received an invalid value for argument `labels`, expected None with a mapping "
                f"of curves (its keys are the labels), got {list(labels)!r}"
            )
        labels, raw = [str(k) for k in norms], list(norms.values())
    elif isinstance(norms, (list, tuple)) and norms and np.ndim(norms[0]) >= 1:
        raw = list(norms)
    else:
        array = np.asarray(norms, dtype=float)
        raw = [array] if array.ndim == 1 else list(array) if array.ndim == 2 else [array]
    curves = [np.asarray(values, dtype=float) for values in raw]
    if not curves or any(c.ndim != 1 or c.size == 0 for c in curves):
        raise ValueError(
            "Received an invalid value for argument `norms`, expected one or more non-empty "
            f"(steps,) curves, got shapes {[c.shape for c in curves]}"
        )
    if any(not np.isfinite(c).all() or (c < 0).any() for c in curves):
        raise ValueError(
            "Received an invalid value for argument `norms`, expected finite non-negative "
            "norms, got NaN, infinity or a negative value (did training diverge?)"
        )
    if not any((c > 0).any() for c in curves):
        raise ValueError(
            "Received an invalid value for argument `norms`, expected at least one positive "
            "norm (a log axis cannot show zeros), got only zeros"
        )
    if labels is None:
        labels = [""] * len(curves)
    elif len(labels) != len(curves) or not _all_strings(labels):
        raise ValueError(
            f"Received an invalid value for argument `labels`, expected {len(curves)} strings "
            f"(one per curve), got {list(labels)!r}"
        )
    return list(zip(labels, curves, strict=True))


def _fonts_for(texts: Sequence[str]) -> list[str]:
    """Font families for labels: matplotlib's default, then NanumGothic for Hangul when
    koreanize-matplotlib (``pip install 'rnnkit[translate]'``) ships it; registered for
    this call's labels only, never as a global setting."""
    families = ["DejaVu Sans"]
    if not any("\uac00" <= ch <= "\ud7a3" or "\u3131" <= ch <= "\u318e" for t in texts for ch in t):
        return families
    import importlib.util

    # The font file only: importing koreanize_matplotlib would set matplotlib's global fonts.
    spec = importlib.util.find_spec("koreanize_matplotlib")
    if spec is None or not spec.submodule_search_locations:
        return families
    font = Path(spec.submodule_search_locations[0]) / "fonts" / "NanumGothic.ttf"
    if not font.is_file():
        return families
    from matplotlib import font_manager

    font_manager.fontManager.addfont(str(font))
    return [*families, "NanumGothic"]


def _save(figure: Any, path: str | os.PathLike[str]) -> None:
    # Rendered in memory, then swapped in whole: a crash never leaves half a PNG.
    from rnnkit.toolkit.checkpoint import atomic_write

    buffer = io.BytesIO()
    figure.savefig(buffer, format=Path(path).suffix.lstrip(".").lower() or "png")
    atomic_write(path, buffer.getvalue())


def _finite(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _spread(values: Sequence[float]) -> float:
    finite = [v for v in values if _finite(v) and v > 0]
    return max(finite) / min(finite) if finite else 1.0
