"""StandardScaler: statistics, both directions on arrays and tensors, JSON round trip."""

import json
import logging
import re

import numpy as np
import pytest
import torch

from rnnkit.toolkit.data import StandardScaler


def test_fit_transform_inverse_on_arrays_and_tensors():
    values = np.array([[1.0, 10.0], [3.0, 30.0], [5.0, 20.0]])
    scaler = StandardScaler.fit(values, ["a", "b"])
    np.testing.assert_allclose(scaler.mean, [3.0, 20.0])
    np.testing.assert_allclose(scaler.std, values.std(axis=0))  # population std, ddof=0
    z = scaler.transform(values)
    np.testing.assert_allclose(z.mean(axis=0), [0, 0], atol=1e-12)
    np.testing.assert_allclose(scaler.inverse_transform(z), values)
    x = torch.tensor(values, dtype=torch.float32).reshape(3, 1, 2)  # (batch, window, features)
    torch.testing.assert_close(scaler.inverse_transform(scaler.transform(x)), x)
    assert scaler.transform(x).dtype == torch.float32


def test_json_round_trip():
    scaler = StandardScaler.fit(np.array([[1.0], [2.0], [4.0]]), ["Close"])
    state = json.loads(json.dumps(scaler.to_dict()))
    assert state["columns"] == ["Close"]
    assert StandardScaler.from_dict(state) == scaler


def test_constant_column_is_centred_and_logged(caplog):
    with caplog.at_level(logging.WARNING, logger="rnnkit.toolkit.data.scaling"):
        scaler = StandardScaler.fit(np.array([[2.0, 1.0], [2.0, 3.0]]), ["flat", "b"])
    assert scaler.std == (1.0, 1.0)
    assert "column 'flat' is constant" in caplog.text


def test_invalid_arguments():
    with pytest.raises(ValueError, match=re.escape("expected a positive finite number, got 0.0")):
        StandardScaler(("a",), (0.0,), (0.0,))
    with pytest.raises(ValueError, match=re.escape("expected one value per column (2), got 1")):
        StandardScaler(("a", "b"), (0.0,), (1.0, 1.0))
    with pytest.raises(ValueError, match=re.escape("expected shape (rows >= 1, 1), got (0, 1)")):
        StandardScaler.fit(np.empty((0, 1)), ["a"])
    with pytest.raises(ValueError, match=re.escape("expected keys ['columns', 'mean', 'std']")):
        StandardScaler.from_dict({"columns": ["a"]})
    scaler = StandardScaler.identity(["a", "b"])
    with pytest.raises(ValueError, match=re.escape("to hold the 2 columns ['a', 'b'], got shape")):
        scaler.transform(torch.zeros(4, 3))
