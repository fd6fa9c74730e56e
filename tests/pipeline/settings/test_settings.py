"""One declaration per setting: every option of `train`, `export`, `predict`, `evaluate`, `verify` and `bench`
comes from one config field, shows that field's default, and every field users set has exactly one option."""

from __future__ import annotations

from pathlib import Path

import dataclasses

import click
import pytest

from click.testing import CliRunner

from export.options import ExportConfig
from pipeline.bench.config import BenchConfig
from pipeline.cli import main
from pipeline.settings.config import DataConfig, LossConfig, ModelConfig, TrainConfig
from pipeline.settings.scoring_config import EvaluateConfig, PredictConfig, VerifyConfig
from pipeline.settings.fields import flagged, values

COMMANDS = {"train": (DataConfig, LossConfig, ModelConfig, TrainConfig), "export": (ExportConfig,),
            "predict": (PredictConfig,), "evaluate": (EvaluateConfig,), "verify": (VerifyConfig,),
            "bench": (BenchConfig,)}
# arguments and options of the commands themselves, not settings of a config
COMMAND_ONLY = {"train": {"out", "force", "resume", "mlflow_optional", "nproc", "help"},
                "export": {"run_dir", "out", "force", "mlflow", "register", "help"},
                "predict": {"bundle", "out", "force", "help"}, "evaluate": {"bundle", "as_json", "help"},
                "verify": {"bundle", "help"}, "bench": {"run_dir", "as_json", "out", "force", "help"}}


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
        elif flag.required:  # the command needs it; the field's default serves the Python API only
            assert option.required and field.default is None
        elif isinstance(option, click.Option) and option.multiple:  # none given: the field's default
            assert field.default == (flag.parse(()) if flag.parse else ())
        else:
            assert option.default == field.default, dest


@pytest.mark.parametrize("cls", [DataConfig, LossConfig, ModelConfig, TrainConfig, ExportConfig, PredictConfig,
                                 EvaluateConfig, VerifyConfig, BenchConfig])
def test_fields_without_a_flag_are_filled_by_the_run_not_the_user(cls):
    unflagged = {f.name for f in dataclasses.fields(cls)} - {f.name for f, _ in flagged(cls)}
    assert unflagged == {ModelConfig: {"in_channels", "length", "n_outputs", "normalize", "combine", "horizon",
                                       "targets", "quantiles", "per_step"},
                         TrainConfig: {"member"}, BenchConfig: {"run_dir"}}.get(cls, set())


def test_the_bench_options_give_the_config_a_user_expects(monkeypatch):
    """A switch turns its field's default over (--no-memory: memory False), repeated options collect."""
    import pipeline.bench.run as bench_run
    import pipeline.bench.report as bench_report

    seen = []
    monkeypatch.setattr(bench_run, "run_bench", lambda cfg, log: seen.append(cfg) or {})
    monkeypatch.setattr(bench_report, "format_report", lambda report: "")
    for args in ([], ["--no-memory", "--quick", "--train-model", "lite", "--train-model", "fcn", "--model", "resnet"]):
        assert CliRunner().invoke(main, ["bench", *args]).exit_code == 0
    assert seen == [BenchConfig(), BenchConfig(model="resnet", memory=False, quick=True, train_models=("lite", "fcn"))]


def test_predict_reads_the_same_config_the_python_api_builds():
    given = {"data": "x.npz", "target_column": None, "pad": False, "batch_size": None, "threads": 2,
             "precision": "int8", "public_key": None, "saliency": None, "segments": False}
    assert PredictConfig(**values(PredictConfig, given)) == PredictConfig(data="x.npz", threads=2, precision="int8")
    with_maps = PredictConfig(**values(PredictConfig, {**given, "saliency": "maps.npy"}))
    assert with_maps == PredictConfig(data="x.npz", threads=2, precision="int8", saliency=Path("maps.npy"))
