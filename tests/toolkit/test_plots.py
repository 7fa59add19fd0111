"""Plots: real PNG files, dates on the x axis, no pyplot and no global backend change."""

from __future__ import annotations

import os
import re
import struct
import sys

import numpy as np
import pandas as pd
import pytest

from rnnkit.toolkit import plots
from rnnkit.toolkit.plots import (
    confusion_counts,
    plot_confusion_matrix,
    plot_ensemble_members,
    plot_forecast,
    plot_learning_curves,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


HISTORY = [
    {"epoch": 1, "train_loss": 2.0, "val_loss": 1.5},
    {"epoch": 2, "train_loss": 0.5, "val_loss": 0.7},
    {"epoch": 3, "train_loss": 0.1, "val_loss": 0.8},
]


def test_learning_curves_png(tmp_path):
    path = plot_learning_curves(HISTORY, tmp_path / "curves.png")
    assert path == tmp_path / "curves.png"
    assert png_size(path) == (7 * 120, 4 * 120)


def test_learning_curves_without_validation(tmp_path):
    history = [{"epoch": e, "train_loss": 1 / e} for e in (1, 2)]
    png_size(plot_learning_curves(history, tmp_path / "curves.png"))


def test_learning_curves_mark_the_epoch_given_as_best():
    # Monitoring val_accuracy, the trainer may keep epoch 3 though epoch 2 has the lowest val_loss.
    figure = plots._learning_curves_figure(HISTORY, 3, "curves")
    (axes,) = figure.axes
    marks = [line for line in axes.get_lines() if line.get_label().startswith("best epoch")]
    assert [(line.get_label(), list(line.get_xdata())) for line in marks] == [
        ("best epoch (3)", [3, 3])
    ]
    with pytest.raises(ValueError, match="`best_epoch`, expected None or one of the epochs"):
        plot_learning_curves(HISTORY, "unused.png", best_epoch=4)


@pytest.mark.parametrize("which", ["curves", "forecast", "confusion"])
def test_a_failed_plot_write_keeps_the_old_file(tmp_path, monkeypatch, which):
    path = tmp_path / "plot.png"
    path.write_bytes(b"old")
    monkeypatch.setattr(os, "replace", lambda src, dst: (_ for _ in ()).throw(OSError("full")))
    with pytest.raises(OSError, match="full"):
        if which == "curves":
            plot_learning_curves(HISTORY, path)
        elif which == "confusion":
            plot_confusion_matrix([0, 1], [1, 1], [0, 1], path)
        else:
            plot_forecast([1, 2, 3], [1.0, 2.0, 3.0], [1.0, 2.0, 2.5], path)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]


def test_learning_curves_need_an_epoch(tmp_path):
    with pytest.raises(ValueError, match="`history`, expected at least one epoch, got"):
        plot_learning_curves([], tmp_path / "curves.png")


def test_ensemble_members_draw_each_member_their_mean_and_the_average(tmp_path, monkeypatch):
    path = plot_ensemble_members([0.79, None, 0.81], 0.82, tmp_path / "members.png",
                                 metric="val_accuracy")  # fmt: skip
    assert png_size(path) == (7 * 120, int(3.8 * 120))
    drawn = []
    monkeypatch.setattr(plots, "_save", lambda figure, _: drawn.append(figure))
    plot_ensemble_members([0.79, None, 0.81], 0.82, "unused.png", metric="val_accuracy")
    (axes,) = drawn[0].axes
    heights = [bar.get_height() for bar in axes.patches]
    assert heights[0] == 0.79 and np.isnan(heights[1]) and heights[2] == 0.81
    labels = [line.get_label() for line in axes.get_lines()]
    assert labels == ["mean of the members 0.8", "their average 0.82"]
    low, high = axes.get_ylim()
    assert low < 0.79 and high > 0.82 and low > 0.5  # zoomed on the values, not from zero
    with pytest.raises(ValueError, match="`member_values`, expected at least one member"):
        plot_ensemble_members([], None, "unused.png", metric="val_loss")


def test_forecast_png_with_dates(tmp_path):
    dates = pd.bdate_range("2012-01-02", periods=120)
    actual = 600 + np.cumsum(np.random.default_rng(0).normal(size=120))
    path = plot_forecast(dates, actual, actual + 1, tmp_path / "forecast.png", ylabel="Close")
    assert png_size(path) == (10 * 120, int(5.5 * 120))


def test_forecast_png_with_labels_and_no_error_panel(tmp_path):
    labels = [f"step {i}" for i in range(30)]
    values = np.arange(30.0)
    path = plot_forecast(labels, values, values, tmp_path / "forecast.png", errors=False)
    assert png_size(path) == (10 * 120, int(4.2 * 120))


def test_forecast_lengths_must_match(tmp_path):
    with pytest.raises(ValueError, match="expected the same non-zero length, got 3, 3, 2"):
        plot_forecast([1, 2, 3], [1.0, 2.0, 3.0], [1.0, 2.0], tmp_path / "f.png")


def test_no_pyplot(tmp_path):
    before = "matplotlib.pyplot" in sys.modules
    plot_learning_curves(HISTORY, tmp_path / "curves.png")
    plot_forecast(pd.bdate_range("2012-01-02", periods=5), range(5), range(5), tmp_path / "f.png")
    plot_confusion_matrix(["a", "b"], ["b", "b"], ["a", "b"], tmp_path / "c.png")
    assert ("matplotlib.pyplot" in sys.modules) == before


def test_confusion_counts_by_hand():
    labels = ["cat", "cat", "cat", "dog", "dog", "eel"]
    predicted = ["cat", "dog", "cat", "dog", "eel", "eel"]
    counts = confusion_counts(labels, predicted, ["dog", "cat", "eel"])
    # Rows true, columns predicted, both in the order of `classes`.
    np.testing.assert_array_equal(counts, [[1, 0, 1], [1, 2, 0], [0, 0, 1]])
    assert counts.dtype == np.int64


def test_confusion_matrix_png(tmp_path):
    classes = [str(c) for c in range(1, 10)]
    labels = classes * 3
    path = plot_confusion_matrix(labels, labels[1:] + labels[:1], classes, tmp_path / "cm.png")
    assert path == tmp_path / "cm.png"
    width, height = png_size(path)
    assert width > height > 100


def test_confusion_matrix_annotates_counts_and_colours_rows_by_share():
    # 90 of class 0 (9 wrong), 10 of class 1 (5 wrong): row shares, not counts, set the colour.
    counts = np.array([[81, 9], [5, 5]])
    figure = plots._confusion_figure(counts, ["neg", "pos"], "cm")
    axes = figure.axes[0]
    assert [t.get_text() for t in axes.texts] == ["81", "9", "5", "5"]
    np.testing.assert_allclose(axes.images[0].get_array(), [[0.9, 0.1], [0.5, 0.5]])


def test_confusion_matrix_with_a_class_never_seen():
    counts = np.array([[2, 0], [0, 0]])  # no example of the second class: its row stays 0
    figure = plots._confusion_figure(counts, ["a", "b"], "cm")
    np.testing.assert_allclose(figure.axes[0].images[0].get_array(), [[1, 0], [0, 0]])


@pytest.mark.parametrize(
    ("labels", "predicted", "classes", "message"),
    [
        ([0, 1], [0, 1], [], "argument `classes`, expected distinct classes, got []"),
        ([0, 1], [0, 1], [0, 1, 0], "argument `classes`, expected distinct classes"),
        ([0, 1], [0], [0, 1], "`labels`, `predicted`, expected the same non-zero length, got 2, 1"),
        ([], [], [0, 1], "expected the same non-zero length, got 0, 0"),
        (
            [0, 2],
            [0, 1],
            [0, 1],
            "argument `labels`, expected values among `classes` [0, 1], got 2",
        ),
        ([0, 1], [0, "x"], [0, 1], "argument `predicted`, expected values among .*got 'x'"),
    ],
)
def test_confusion_matrix_refuses_bad_input(tmp_path, labels, predicted, classes, message):
    path = tmp_path / "cm.png"
    with pytest.raises(ValueError, match=message if ".*" in message else re.escape(message)):
        plot_confusion_matrix(labels, predicted, classes, path)
    assert not path.exists()
