"""Run configuration: defaults, TOML files, --set overrides, and the exact error messages."""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

import pytest

from rnnkit.toolkit.config import (
    ConfigError,
    DataConfig,
    ModelSection,
    RunConfig,
    TrainSection,
    dumps_toml,
    load_config,
    parse_override,
)
from rnnkit.toolkit.models import ModelConfig
from rnnkit.toolkit.trainer import TrainConfig

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def write(tmp_path: Path, text: str, name: str = "run.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_are_the_main_job():
    config = RunConfig()
    assert config.task == "forecast"
    assert config.data.path == ""  # the bundled GOOG.csv
    assert config.data.features == ("Open", "High", "Low", "Close")
    # "auto": 100 rows for GOOG's 2,148 (rnnkit.toolkit.forecast_defaults.choose_lookback)
    assert (config.data.target, config.data.lookback, config.data.horizon) == ("Close", "auto", 1)
    assert (config.model.hidden_size, config.model.num_layers) == (64, 1)
    assert (config.model.nonlinearity, config.model.bidirectional) == ("tanh", False)
    assert config.train.batch_size == 30
    assert load_config() == config


def test_goog_forecast_toml_equals_the_defaults():
    assert load_config(CONFIGS / "goog_forecast.toml") == RunConfig()


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    load_config(path)


def test_toml_round_trip(tmp_path):
    config = load_config(
        overrides=[
            "task=classify",
            "data.path=train.txt",
            'data.target=say "hi" \\ there',
            "model.bidirectional=true",
            "train.lr=0.0003",
            "train.grad_clip=0",
        ]
    )
    assert load_config(write(tmp_path, config.to_toml())) == config


def test_dumps_toml_escapes_what_toml_needs():
    document = {"a": 'quote " backslash \\ tab \t del \x7f é 😀', "b": [1, 2.5, True]}
    assert tomllib.loads(dumps_toml(document)) == document


def test_file_values_and_types(tmp_path):
    path = write(
        tmp_path,
        'task = "forecast"\n[data]\nfeatures = ["Close"]\nlookback = 10\n'
        "[model]\ndropout = 0\n[train]\nlr = 1\nepochs = 3\n",
    )
    config = load_config(path)
    assert config.data.features == ("Close",)
    assert config.data.lookback == 10
    assert config.model.dropout == 0.0 and isinstance(config.model.dropout, float)
    assert config.train.lr == 1.0 and isinstance(config.train.lr, float)


@pytest.mark.parametrize(
    ("override", "key", "expected"),
    [
        ("model.bidirectional=true", "model.bidirectional", True),
        ('data.features=["Open","Close"]', "data.features", ("Open", "Close")),
        ("data.path=prices.csv", "data.path", "prices.csv"),  # not TOML: plain text
        ('data.path="my prices.csv"', "data.path", "my prices.csv"),
        ("data.target=2020", "data.target", "2020"),  # a string key keeps the text
        ("train.lr=3e-4", "train.lr", 3e-4),
        ("train.epochs=5", "train.epochs", 5),
        ("train.device=cpu", "train.device", "cpu"),
    ],
)
def test_overrides(override, key, expected):
    section, name = key.split(".")
    config = load_config(overrides=[override])
    assert getattr(getattr(config, section), name) == expected


def test_overrides_apply_after_the_file_in_order(tmp_path):
    path = write(tmp_path, "[train]\nepochs = 3\n")
    config = load_config(path, ["train.epochs=4", "train.epochs=5"])
    assert config.train.epochs == 5


def test_task_override():
    config = load_config(overrides=["task=language-model", "data.path=input.txt"])
    assert config.task == "language-model"
    assert config.model_task == "language_model"


def test_parse_override():
    assert parse_override("train.epochs=5") == ("train.epochs", 5)
    assert parse_override("data.path=a=b.csv") == ("data.path", "a=b.csv")


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        (
            "[train]\nepochs = 'five'\n",
            [],
            "run.toml: invalid value for key `train.epochs`, expected a positive integer, "
            "got 'five'",
        ),
        (
            "[train]\nlrr = 0.1\n",
            [],
            "run.toml: unknown key `train.lrr` (did you mean `train.lr`?), expected one of "
            "[train] keys: epochs, batch_size, lr,",
        ),
        (
            "[optim]\nlr = 0.1\n",
            [],
            "run.toml: unknown section [optim], expected [data], [model], [train] or the "
            "top-level key `task`",
        ),
        (
            "[trian]\nlr = 0.1\n",
            [],
            "run.toml: unknown section [trian], expected [data], [model], [train] or the "
            "top-level key `task` (did you mean [train]?)",
        ),
        (
            "data = 3\n",
            [],
            "run.toml: invalid value for key `data`, expected a table [data], got 3",
        ),
        ("[train\n", [], "run.toml: expected TOML, got a syntax error ("),
        (
            "[model]\nbidirectional = 'yes'\n",
            [],
            "run.toml: invalid value for key `model.bidirectional`, expected true or false, "
            "got 'yes'",
        ),
        (
            "[train]\nlr = 0.1\n",
            ["train.lr=0"],
            "--set: invalid value for key `train.lr`, expected a positive number, got 0",
        ),
        (
            "",
            ["train.lr"],
            "--set: expected section.key=value (e.g. train.epochs=5), got 'train.lr'",
        ),
        (
            "",
            ["model.hidden=8"],
            "--set: unknown key `model.hidden` (did you mean `model.hidden_size`?), expected one "
            "of [model] keys: hidden_size,",
        ),
        (
            "",
            ["optim.lr=1"],
            "--set: unknown section [optim], expected [data], [model], [train] or the top-level "
            "key `task`",
        ),
        (
            "",
            ["epochs=3"],
            "--set: unknown key `epochs`, expected section.key (sections [data], [model], "
            "[train]) or `task`",
        ),
        (
            "",
            ["data.features=Open"],
            "--set: invalid value for key `data.features`, expected a non-empty list of column "
            "names, got 'Open'",
        ),
        (
            "",
            ["model.nonlinearity=sigmoid"],
            "--set: invalid value for key `model.nonlinearity`, expected one of 'tanh', 'relu', "
            "got 'sigmoid'",
        ),
        (
            "",
            ["data.lookback=0"],
            "--set: invalid value for key `data.lookback`, expected a positive integer or "
            '"auto", got 0',
        ),
        (
            "",
            ["data.val_fraction=1"],
            "--set: invalid value for key `data.val_fraction`, expected a number in [0, 1), got 1",
        ),
        (
            "",
            ["data.val_fraction=0.5", "data.test_fraction=0.5"],
            "--set: invalid value for key `data.test_fraction`, expected a share that leaves "
            "training data next to val_fraction=0.5 (a sum below 1), got 0.5",
        ),
        (
            'task = "classify"\n',
            [],
            "run.toml: invalid value for key `data.path`, expected the training file of task "
            "'classify', got ''",
        ),
        (
            'task = "language-model"\n[data]\npath = "a.txt"\n',
            ["model.bidirectional=true"],
            "--set: invalid value for key `model.bidirectional`, expected false for task "
            "'language-model' (a backward pass would read the characters it has to predict), "
            "got True",
        ),
        (
            "[data]\nval_path = 'dev.csv'\n",
            [],
            "run.toml: invalid value for key `data.val_path`, expected \"\" for task 'forecast' "
            "(one series is split in time order by val_fraction and test_fraction), got 'dev.csv'",
        ),
        (
            "",
            ["train.monitor=val_accuracy"],
            '--set: invalid value for key `train.monitor`, expected "" or one of val_loss, '
            "val_rmse, val_mae, train_loss, train_rmse, train_mae for task 'forecast', "
            "got 'val_accuracy'",
        ),
        (
            "",
            ["task=regression"],
            "--set: invalid value for key `task`, expected one of 'forecast', 'classify', "
            "'classify-series', 'tag', 'language-model', 'translate', got 'regression'",
        ),
    ],
)
def test_errors_name_the_source_key_expected_and_received(tmp_path, text, overrides, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, overrides)
    shown = str(caught.value)
    assert shown.replace(str(path), "run.toml").startswith(message)
    assert "\n" not in shown


def test_error_names_the_flag_that_overrode_the_file(tmp_path):
    path = write(tmp_path, "[train]\nepochs = 3\n")
    with pytest.raises(ConfigError, match=r"^--set: invalid value for key `train.epochs`"):
        load_config(path, ["train.epochs=-1"])
    with pytest.raises(ConfigError, match=r"run.toml: invalid value for key `train.epochs`"):
        load_config(write(tmp_path, "[train]\nepochs = -1\n"), ["train.lr=0.1"])


def test_missing_or_unreadable_file(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(
        ConfigError, match=re.escape(f"{missing}: expected a TOML file, got no file")
    ):
        load_config(missing)
    with pytest.raises(ConfigError, match="expected a TOML file, got a directory"):
        load_config(tmp_path)
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b"task = 'caf\xe9'\n")
    with pytest.raises(ConfigError, match="expected UTF-8 text, got byte 0xe9 at offset 11"):
        load_config(bad)


@pytest.mark.parametrize(
    ("section", "fields", "message"),
    [
        (DataConfig, {"features": ("Open", "Open")}, "`data.features`, expected distinct"),
        (DataConfig, {"max_vocab": 1}, "`data.max_vocab`, expected 0 (no limit) or an integer"),
        (ModelSection, {"dropout": 1.5}, "`model.dropout`, expected a number in [0, 1], got 1.5"),
        (ModelSection, {"hidden_size": True}, "`model.hidden_size`, expected a positive integer"),
        (TrainSection, {"grad_clip": -1}, "`train.grad_clip`, expected a positive number, or 0"),
        (TrainSection, {"optimizer": "lbfgs"}, "`train.optimizer`, expected one of 'adamw'"),
        (TrainSection, {"device": "gpu"}, "`train.device`, expected 'auto', 'cpu', 'cuda'"),
    ],
)
def test_sections_validate_in_post_init(section, fields, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        section(**fields)


def test_sections_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        RunConfig().train.epochs = 3


def test_train_section_maps_off_values_to_none():
    config = TrainSection(grad_clip=0, early_stopping_patience=0, monitor="").to_train_config(
        progress=False
    )
    assert isinstance(config, TrainConfig)
    assert (config.grad_clip, config.early_stopping_patience, config.monitor) == (None, None, None)
    assert config.progress is False
    on = TrainSection(grad_clip=2, early_stopping_patience=3, monitor="val_rmse").to_train_config()
    assert (on.grad_clip, on.early_stopping_patience, on.monitor) == (2.0, 3, "val_rmse")


def test_model_section_to_model_config():
    config = ModelSection(hidden_size=8, bidirectional=True).to_model_config(
        "forecast", input_size=4
    )
    assert config == ModelConfig(task="regression", input_size=4, hidden_size=8, bidirectional=True)
    tokens = ModelSection(embedding_dim=0).to_model_config("tag", vocab_size=10, num_outputs=3)
    assert tokens.embedding_dim == 64  # 0 means hidden_size


def test_resolve_paths(tmp_path):
    config = load_config(overrides=["task=classify", "data.path=a.txt", "data.test_path=b.txt"])
    resolved = config.resolve_paths(tmp_path)
    assert resolved.data.path == str(tmp_path / "a.txt")
    assert resolved.data.test_path == str(tmp_path / "b.txt")
    assert resolved.data.val_path == ""
