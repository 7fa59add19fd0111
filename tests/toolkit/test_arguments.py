"""Argument checks shared by the toolkit: rnnkit.toolkit.arguments."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from rnnkit.toolkit.arguments import invalid_argument, is_int, is_real


def test_invalid_argument_names_the_argument_and_shows_the_repr_of_what_it_got():
    error = invalid_argument("lr", "a positive number", 0)
    assert type(error) is ValueError
    assert (
        str(error)
        == "Received an invalid value for argument `lr`, expected a positive number, got 0"
    )
    error = invalid_argument("device", "a device name", "gpu")
    assert str(error) == (
        "Received an invalid value for argument `device`, expected a device name, got 'gpu'"
    )


@pytest.mark.parametrize("value", [0, -3, 2**70, np.int8(1), np.int64(-1), np.uint32(7)])
def test_integers_numpy_ones_included_are_ints_and_reals(value):
    assert is_int(value)
    assert is_real(value)


@pytest.mark.parametrize("value", [True, False, np.bool_(True)])
def test_bools_are_neither_ints_nor_reals(value):
    assert not is_int(value)
    assert not is_real(value)


@pytest.mark.parametrize("value", [0.5, -2.0, np.float32(0.25), np.float64(3.0), Fraction(1, 3)])
def test_finite_floats_are_reals_but_not_ints(value):
    assert is_real(value)
    assert not is_int(value)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, np.float32("nan"), np.inf])
def test_nan_and_infinities_are_not_reals(value):
    assert not is_real(value)


@pytest.mark.parametrize("value", [None, "1", b"1", [1], 1j, np.array([1]), np.array(1)])
def test_other_things_are_neither(value):
    assert not is_int(value)
    assert not is_real(value)


def test_an_integer_beyond_floats_range_is_an_int_but_not_a_real():
    """math.isfinite raises OverflowError on it; a config with dropout = 10**400
    must get the usual ValueError, not that."""
    assert is_int(10**400)
    assert not is_real(10**400)
    assert not is_real(-(10**400))
