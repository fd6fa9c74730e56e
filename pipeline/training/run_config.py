"""A run, typed: the settings it was trained with (`RunSettings`), what rebuilds its model and loss
(`ModelRecord`, also stored in every checkpoint) and the versions that wrote it (`RunConfig`, the run folder's
config.json). Only `pipeline/training/run_folder.py` reads and writes config.json, through `RunConfig`; nothing else
spells its keys. Old run folders load: every key added since the first release is optional. No torch."""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field, replace

from pipeline.version import __version__
from pipeline.training.base_rate import OUTPUT_BASE, OutputBase
from pipeline.settings.config import DataConfig, LossConfig, ModelConfig, TrainConfig, default_epochs, recipe
from pipeline.data.prepare import LabelEncoding


def _json(value):
    """As config.json reads it back (tuples as lists): what every process and tracker sees."""
    return json.loads(json.dumps(value))


@dataclass(frozen=True)
class RunSettings:
    """A run's four configs, as the user gave them (a new run) or as the run recorded them (resume)."""

    data: DataConfig
    loss: LossConfig
    model: ModelConfig
    train: TrainConfig


@dataclass(frozen=True)
class LossChoice:
    """The loss a run trains with: its name (built-in or package.module:Class) and resolved parameters."""

    name: str
    params: dict

    def to_dict(self) -> dict:
        return {"name": self.name, "params": _json(self.params)}


@dataclass(frozen=True)
class ModelRecord:
    """What rebuilds a trained model and its loss: the complete model config, the label encoding, the loss, the
    fitted output layer (None in runs saved before it existed) and the CSV label spellings (CSV data only).
    Stored flat in config.json and in every checkpoint, under the keys of `to_dict`."""

    model: ModelConfig
    encoding: LabelEncoding
    loss: LossChoice
    output_base: OutputBase | None = None
    csv_labels: dict | None = None  # CSV data: the label columns (header names or 0-based indices) and width
    window: dict | None = None  # train --window: runtime.manifest.Window's fields (length, stride, label, split, ...)

    @property
    def task(self) -> str:
        return self.encoding.task

    def to_dict(self) -> dict:
        d = {"model_config": _json(self.model.to_dict()), "encoding": self.encoding.to_dict(),
             "loss": self.loss.to_dict()}
        if self.output_base is not None:
            d[OUTPUT_BASE] = self.output_base.to_dict()
        if self.csv_labels:
            d["csv_labels"] = _json(self.csv_labels)
        if self.window:
            d["window"] = _json(self.window)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelRecord":
        """From config.json or a checkpoint (their other keys are ignored)."""
        return cls(ModelConfig.from_dict(d["model_config"]), LabelEncoding.from_dict(d["encoding"]),
                   LossChoice(d["loss"]["name"], d["loss"]["params"]), OutputBase.from_dict(d.get(OUTPUT_BASE)),
                   d.get("csv_labels") or None, d.get("window") or None)


@dataclass(frozen=True)
class RunConfig:
    """A run folder's config.json."""

    settings: RunSettings
    record: ModelRecord
    mlflow_run_id: str | None = None  # set once the run has an MLflow run, so --resume continues it
    pipeline_version: str = __version__
    torch_version: str = ""
    python: str = field(default_factory=platform.python_version)

    @property
    def model(self) -> ModelConfig:
        return self.record.model

    @property
    def task(self) -> str:
        return self.record.task

    @property
    def seed(self) -> int:
        return self.settings.train.seed

    def with_train(self, train: TrainConfig) -> "RunConfig":
        return replace(self, settings=replace(self.settings, train=train))

    def to_dict(self) -> dict:
        s = self.settings
        d = {"pipeline_version": self.pipeline_version, "torch_version": self.torch_version, "python": self.python,
             "data": _json(s.data.to_dict()), "loss_config": _json(s.loss.to_dict()),
             "train": _json(s.train.to_dict()), **self.record.to_dict()}
        if self.mlflow_run_id:
            d["mlflow_run_id"] = self.mlflow_run_id
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        record = ModelRecord.from_dict(d)
        settings = RunSettings(DataConfig.from_dict(d["data"]), LossConfig.from_dict(d["loss_config"]), record.model,
                               TrainConfig.from_dict(d["train"]))
        return cls(settings, record, d.get("mlflow_run_id"), d["pipeline_version"], d.get("torch_version", ""),
                   d.get("python", ""))


def new_run_settings(data: dict, loss: dict, model: dict, train: dict) -> RunSettings:
    """A new run's four validated configs from the fields given (by the command line or the Python API): the
    TrainConfig fields not given take the model's recipe (or, on the embedded data, its epochs)."""
    data_cfg, loss_cfg, model_cfg = DataConfig(**data), LossConfig(**loss), ModelConfig(**model)
    plan = recipe(model_cfg.name)
    planned = {"epochs": default_epochs(data_cfg.data is None, model_cfg.name), "batch_size": plan.batch_size,
               "patience": plan.patience, "lr_patience": plan.lr_patience, "lr": plan.lr}
    return RunSettings(data_cfg, loss_cfg, model_cfg, TrainConfig(**{**planned, **train}))
