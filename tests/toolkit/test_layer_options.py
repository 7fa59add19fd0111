"""``model.recurrent_dropout``, ``model.zoneout``, ``model.layer_norm`` (and ``weight_drop``):
the run config reaches the layer, the checkpoint records it, the reloaded model scores the
same; off values build torch's layer; bad values are one line naming the key."""

from __future__ import annotations

import json

import pytest
import torch
from test_model_cells import SMALL, reload_run, write_prices

import rnnkit
from rnnkit.cli import main
from rnnkit.toolkit import rundir
from rnnkit.toolkit.cells import LAYER_OPTIONS, recurrent_layer
from rnnkit.toolkit.config import ConfigError, load_config
from rnnkit.toolkit.models import ModelConfig, RecurrentEncoder, build_model

OPTIONS = {"recurrent_dropout": 0.2, "zoneout": 0.1, "layer_norm": True, "weight_drop": 0.3}


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_a_run_with_every_option_trains_records_them_and_reloads(cell, tmp_path, capsys):
    write_prices(tmp_path / "prices.csv")
    config = tmp_path / "forecast.toml"
    config.write_text(f'[data]\npath = "{tmp_path / "prices.csv"}"\nlookback = 10\n' + SMALL)
    run = tmp_path / "run"
    overrides = [f"--set=model.{name}={str(v).lower()}" for name, v in OPTIONS.items()]
    code = main(["train", str(config), "--out", str(run), f"--set=model.cell={cell}", *overrides])
    assert code == 0, capsys.readouterr().err
    document = json.loads((run / rundir.MODEL_DIR / "checkpoint.json").read_text())
    assert {name: document["model_config"][name] for name in OPTIONS} == OPTIONS
    loaded, task, transform, baseline, model = reload_run(run)
    layer = model.encoder.rnn
    assert {name: getattr(layer, name) for name in OPTIONS} == OPTIONS
    assert "layer_norm_weight_l0" in dict(layer.named_parameters())
    # The reloaded model scores the test split as the run did (evaluation is deterministic).
    scores, _ = task.score(model, task.prepare(loaded).test, transform, baseline)
    results = json.loads((run / rundir.RESULTS_FILE).read_text())
    assert json.loads(json.dumps(scores)) == results["test"]


def test_off_values_build_torch_s_layer_and_on_values_reach_it():
    plain = recurrent_layer("gru", 4, 6, layer_options=LAYER_OPTIONS)
    assert repr(plain) == repr(torch.nn.GRU(4, 6, batch_first=True))
    config = ModelConfig(input_size=4, hidden_size=6, cell="lstm", **OPTIONS)
    encoder = RecurrentEncoder.from_config(config)
    assert repr(encoder.rnn).endswith(
        "weight_drop=0.3, recurrent_dropout=0.2, zoneout=0.1, layer_norm=True)"
    )
    assert isinstance(build_model(config).encoder.rnn, rnnkit.LSTM)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.zoneout=1.0", "`model.zoneout`, expected a number in [0, 1), got 1.0"),
        ("model.recurrent_dropout=-0.1", "`model.recurrent_dropout`, expected a number in [0, 1)"),
        ("model.layer_norm=1", "`model.layer_norm`, expected"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_key(override, message, tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"^--set: invalid value for key ") as caught:
        load_config(overrides=[override])
    assert message in str(caught.value)
    assert main(["train", "--out", str(tmp_path / "run"), f"--set={override}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("rnnkit: error: --set: ") and err.count("\n") == 1 and message in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["zoneout", "recurrent_dropout"])
def test_model_config_refuses_a_probability_of_one(name):
    with pytest.raises(ValueError, match=f"argument `{name}`, expected a number in"):
        ModelConfig(input_size=4, **{name: 1.0})
