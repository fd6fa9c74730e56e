"""Ensembles (`--ensemble N`): N members trained one after another into one run folder, then joined into
one model whose output averages theirs (models.EnsembleNet).

RUN_DIR/config.json, best.pt, metrics.json, loss_curve.png and calibration.npy describe the ensemble;
RUN_DIR/members/member-I/ is member I's own run folder (config, checkpoints, history, metrics, curve), so a
resumed ensemble resumes the member it was in, and a member can be exported alone.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from pipeline.training.checkpoint import BEST, LAST, load_checkpoint
from pipeline.settings.config import TrainConfig
from pipeline.errors import PipelineError
from pipeline.models.build import build_model, load_members
from pipeline.training.run_config import RunConfig
from pipeline.training.run_folder import MEMBERS_DIR, METRICS, RunFolder

MEMBER_KEYS = ("best_epoch", "epochs_run", "stopped_early", "train", "val", "test", "train_seconds")


def member_dir(run_dir: Path, i: int) -> Path:
    return Path(run_dir) / MEMBERS_DIR / f"member-{i}"


def member_train_config(train_cfg: TrainConfig, i: int) -> TrainConfig:
    """Member I's settings: its own seed offset and, with TensorBoard, its own event folder."""
    events = train_cfg.tensorboard
    return replace(train_cfg, member=i, tensorboard=None if events is None else str(Path(events) / f"member-{i}"))


def member_finished(run_dir: Path, i: int, epochs: int | None) -> bool:
    """Member I wrote its report, and has run the asked-for epochs (when --epochs was given again)."""
    path = member_dir(run_dir, i) / METRICS
    if not path.is_file():
        return False
    return epochs is None or json.loads(path.read_text())["epochs_run"] >= epochs


def assemble(run_dir: Path, config: RunConfig, evaluate: Callable[[nn.Module], dict], device: torch.device,
             report: dict, writes: bool, log: Callable[[str], None]) -> dict:
    """Join the members' best weights into the ensemble, measure it, write best.pt, metrics.json and the
    curve of every member. `evaluate(model)` gives the loss and metrics per split; `report` holds the
    run-wide keys (device, batch size, ...). Returns the metrics."""
    cfg = config.model
    folders = [member_dir(run_dir, i) for i in range(cfg.ensemble)]
    model = load_members(build_model(cfg), [load_checkpoint(f / BEST)["model"] for f in folders]).to(device)
    members = []
    for i, folder in enumerate(folders):
        saved = json.loads((folder / METRICS).read_text())
        seed = config.seed + i
        members.append({"member": i, "seed": seed, **{k: saved[k] for k in MEMBER_KEYS if k in saved}})
    histories = [load_checkpoint(f / LAST)["history"] for f in folders]
    folder = RunFolder(run_dir, writes=writes)
    folder.save_best({**config.record.to_dict(), "model": {k: v.cpu() for k, v in model.state_dict().items()},
                      "epoch": max(m["epochs_run"] for m in members),
                      "best": {"members": [m["best_epoch"] for m in members]}})
    metrics = {"task": config.task, "loss": config.record.loss.name, "model": cfg.name,
               "ensemble": cfg.ensemble, **evaluate(model), "members": members, **report,
               "train_seconds": round(sum(m.get("train_seconds", 0.0) for m in members), 3)}
    folder.save_report(metrics, histories, f"{cfg.name} x {cfg.ensemble} · {metrics['task']} · {metrics['loss']}")
    log(f"ensemble of {cfg.ensemble} {cfg.name} members: best epochs "
        f"{', '.join(str(m['best_epoch']) for m in members)}")
    return metrics


def check_resumable(run_dir: Path, n: int, epochs: int | None) -> None:
    """A finished ensemble resumes only with more epochs than its members ran."""
    if (Path(run_dir) / METRICS).is_file() and all(member_finished(run_dir, i, epochs) for i in range(n)):
        ran = max(json.loads((member_dir(run_dir, i) / METRICS).read_text())["epochs_run"] for i in range(n))
        raise PipelineError(f"--resume {run_dir}: the ensemble already finished (its members ran up to {ran} "
                            f"epochs); pass --epochs larger than {ran} to train further")
