"""A run is a typed object: config.json and every checkpoint read into RunConfig / ModelRecord and write back the
same JSON, run folders written by earlier versions included (tests/data/old_runs), and nothing but the run
folder opens config.json."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from pipeline.training.base_rate import OutputBase
from pipeline.cli import main
from pipeline.settings.config import DataConfig, LossConfig, ModelConfig, TrainConfig
from pipeline.data.prepare import LabelEncoding
from pipeline.training.run_config import LossChoice, ModelRecord, RunConfig, RunSettings
from pipeline.training.run_folder import RunFolder

ROOT = Path(__file__).parents[3]
OLD_RUNS = ROOT / "tests" / "data" / "old_runs"
OLD_CONFIGS = ["old_regression", "old_ensemble", "old_ensemble/members/member-0", "old_ensemble/members/member-1"]


@pytest.mark.parametrize("folder", OLD_CONFIGS)
def test_an_old_config_reads_into_a_run_config_and_writes_back_the_same_json(folder):
    written = json.loads((OLD_RUNS / folder / "config.json").read_text())
    config = RunFolder(OLD_RUNS / folder).read_config()
    assert config.to_dict() == written
    assert config.record.output_base is None and config.mlflow_run_id is None  # keys added after it was written
    assert config.model == ModelConfig.from_dict(written["model_config"])
    assert config.settings.train == TrainConfig.from_dict(written["train"])
    assert config.task == written["encoding"]["task"] and config.seed == written["train"]["seed"]


def test_every_key_round_trips_and_optional_keys_are_left_out_when_empty():
    record = ModelRecord(ModelConfig(name="fcn", in_channels=2, length=16, n_outputs=3), LabelEncoding(
        "multiclass", ("a", "b", "c"), 3), LossChoice("cross_entropy", {"label_smoothing": 0.1}),
        OutputBase("softmax", [1.0, 1.0, 1.0], [0.1, -0.2, 0.1]), {"columns": ["label"], "width": 17})
    settings = RunSettings(DataConfig(data="/x.npz"), LossConfig(label_smoothing=0.1), record.model,
                           TrainConfig(epochs=7, seed=4, mlflow="file:/tmp/m"))
    config = RunConfig(settings, record, mlflow_run_id="abc", torch_version="2.13.0", python="3.11.7")
    d = json.loads(json.dumps(config.to_dict()))
    assert list(d) == ["pipeline_version", "torch_version", "python", "data", "loss_config", "train",
                       "model_config", "encoding", "loss", "output_base", "csv_labels", "mlflow_run_id"]
    again = RunConfig.from_dict(d)
    assert again == config
    bare = RunConfig(settings, ModelRecord(record.model, record.encoding, record.loss))
    assert {"output_base", "csv_labels", "mlflow_run_id"} & set(bare.to_dict()) == set()


def test_a_new_run_and_its_checkpoints_describe_the_same_model(tmp_path, npz_file):
    result = CliRunner().invoke(main, ["train", "--data", str(npz_file("multiclass", n=24, length=16)),
                                       "--model", "linear", "--epochs", "1", "--no-progress",
                                       "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    config = RunFolder(tmp_path / "run").read_config()
    assert config.to_dict() == json.loads((tmp_path / "run" / "config.json").read_text())
    for checkpoint in ("best.pt", "last.pt"):
        state = torch.load(tmp_path / "run" / checkpoint, weights_only=True)
        assert ModelRecord.from_dict(state) == config.record
    assert config.record.output_base is not None and config.record.loss.name == "cross_entropy"


def test_an_old_ensemble_resumes_and_trains_its_members_further(tmp_path):
    run = tmp_path / "old_ensemble"
    shutil.copytree(OLD_RUNS / "old_ensemble", run)
    result = CliRunner().invoke(main, ["train", "--resume", str(run), "--epochs", "3", "--no-progress"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert [m["epochs_run"] for m in metrics["members"]] == [3, 3]
    config = RunFolder(run).read_config()
    assert config.settings.train.epochs == 3 and config.record.output_base is None  # trained as it was
    for i in range(2):
        state = torch.load(run / "members" / f"member-{i}" / "last.pt", weights_only=True)
        assert state["epoch"] == 3 and "output_base" not in state


def test_nothing_but_the_run_folder_opens_config_json_or_spells_its_keys():
    keys = re.compile(r"""["'](config\.json|model_config|loss_config|mlflow_run_id|csv_labels)["']""")
    owners = {"pipeline/training/run_folder.py", "pipeline/training/run_config.py"}
    found = sorted(str(p.relative_to(ROOT)) for package in ("pipeline", "export", "runtime")
                   for p in (ROOT / package).rglob("*.py")
                   if str(p.relative_to(ROOT)) not in owners and keys.search(p.read_text()))
    assert found == []
