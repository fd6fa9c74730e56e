"""One declaration per setting: every option of `train` and `export` comes from one config field, shows that
field's default, and every field users set has exactly one option."""

from __future__ import annotations

import dataclasses

import click
import pytest

from export.options import ExportConfig
from pipeline.cli import main
from pipeline.config import DataConfig, LossConfig, ModelConfig, TrainConfig
from pipeline.settings import flagged

COMMANDS = {"train": (DataConfig, LossConfig, ModelConfig, TrainConfig), "export": (ExportConfig,)}
# options of the commands themselves, not settings of a config
COMMAND_ONLY = {"train": {"out", "force", "resume", "mlflow_optional", "nproc", "help"},
                "export": {"run_dir", "out", "force", "mlflow", "register", "help"}}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_is_one_config_field_with_its_default(command):
    params = {p.name: p for p in main.commands[command].params}
    fields = {flag.option_dest(f): (f, flag) for cls in COMMANDS[command] for f, flag in flagged(cls)}
    assert set(params) - COMMAND_ONLY[command] == set(fields)  # each field has exactly one option, and back
    for dest, (field, flag) in fields.items():
        option = params[dest]
        assert option.opts[0] == flag.option_name(field)
        if flag.unset:  # decided later (the model's recipe): the help says the default
            assert option.default is None and "[default: " in option.help
            assert field.default is None or f"[default: {field.default}" in option.help
        elif isinstance(option, click.Option) and option.multiple:
            assert field.default == ()
        else:
            assert option.default == field.default, dest


@pytest.mark.parametrize("cls", [DataConfig, LossConfig, ModelConfig, TrainConfig, ExportConfig])
def test_fields_without_a_flag_are_filled_by_the_run_not_the_user(cls):
    unflagged = {f.name for f in dataclasses.fields(cls)} - {f.name for f, _ in flagged(cls)}
    assert unflagged == {ModelConfig: {"in_channels", "length", "n_outputs", "normalize", "combine"},
                         TrainConfig: {"member"}}.get(cls, set())
