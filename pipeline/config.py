"""One frozen, validated dataclass per concern; saved as plain JSON next to the weights."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import PipelineError
from runtime.tasks import ALL_LOSS_NAMES, TASK_NAMES, TASKS, is_custom_loss

NORMALIZE_MODES = ("channel", "series", "none")
# Below this many training series no validation split is held out by default: a handful of
# held-out series (UCR sets have 20-400) make early stopping noisy and cost accuracy.
AUTO_VAL_MIN_SERIES = 200
AUTO_VAL_FRACTION = 0.2
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("plateau", "cosine", "none")
COMPILE_CHOICES = ("auto", "on", "off")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")
ENSEMBLE_COMBINES = tuple(dict.fromkeys(task.scores for task in TASKS.values()))  # how each task averages members


def _choice(flag: str, value, choices) -> None:
    if value not in choices:
        raise PipelineError(f"{flag} '{value}' is not valid; choose one of {', '.join(choices)}")


def _positive(flag: str, value, allow_zero: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    if not ok or (isinstance(value, float) and not math.isfinite(value)):
        raise PipelineError(f"{flag} must be {'>= 0' if allow_zero else '> 0'}; got {value}")


DEFAULT_EPOCHS = 300  # Wang et al. 2017 train far longer; early stopping ends most runs sooner
DEFAULT_EPOCHS_EMBEDDED = 40  # the embedded waveforms converge in a few dozen epochs (about a minute on CPU)


LOSS_PARAM_DEFAULTS = {"huber_delta": 1.0, "beta": 1.0, "label_smoothing": 0.0}  # torch.nn's own defaults


DEFAULT_PATIENCE = 50


@dataclass(frozen=True)
class Recipe:
    """A model's training defaults, each overridden by its flag. patience 0: no early stopping;
    lr_patience: epochs without improvement before the plateau scheduler halves the rate."""

    epochs: int = DEFAULT_EPOCHS
    batch_size: int | None = None  # None: auto_batch_size(training series)
    patience: int = DEFAULT_PATIENCE
    lr_patience: int | None = None  # None: a third of --patience (at least 3), or 10 without early stopping
    source: str = "Wang et al. 2017, with early stopping"

    def describe(self) -> str:
        batch = f"batch {self.batch_size}" if self.batch_size else "batch = training series / 10 (2..32)"
        stop = f"early stopping after {self.patience} epochs" if self.patience else "no early stopping"
        rate = f"after {self.lr_patience}" if self.lr_patience else "when the loss stalls"
        return (f"{self.epochs} epochs, {batch}, Adam 1e-3 halved {rate} epochs without improvement down to 1e-4, "
                f"{stop} ({self.source})")


@dataclass(frozen=True)
class ModelSpec:
    """One model of the registry: its network class in pipeline.models (built there from a ModelConfig, so
    choosing and checking a model needs no torch), whether it takes any series length, its shortest training
    series, its training recipe, and one line of help."""

    name: str
    network: str  # a class of pipeline.models with from_config(ModelConfig)
    any_length: bool
    summary: str
    min_length: int = 1
    recipe: Recipe = Recipe()


# InceptionTime's and LITE's published code: Adam 1e-3, batch 64, 1500 epochs, ReduceLROnPlateau on the training
# loss (factor 0.5, patience 50, min 1e-4), the weights of the lowest training loss kept, no early stopping
_PAPERS = {"inception": Recipe(1500, 64, 0, 50, "Ismail Fawaz et al. 2020"),
           "lite": Recipe(1500, 64, 0, 50, "Ismail-Fawaz et al. 2023")}

# The model registry: adding a model is one entry here (and its network class in pipeline.models).
MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in (
    ModelSpec("fcn", "FCN", True, "Wang et al. 2017's fully convolutional network"),
    ModelSpec("resnet", "ResNet", True, "Wang et al. 2017's ResNet"),
    ModelSpec("inception", "Inception", True, "InceptionTime's network", recipe=_PAPERS["inception"]),
    ModelSpec("lite", "LITE", True, "LITE", recipe=_PAPERS["lite"]),
    # simple-cnn pools pairs of steps; every other model takes even one step per series
    ModelSpec("simple-cnn", "SimpleCNN", False, "the tutorials' Conv1d-ReLU-MaxPool-Flatten-Linear", min_length=2),
    ModelSpec("mlp", "MLP", False, "two hidden layers on the flattened series"),
    ModelSpec("linear", "Linear", False, "a linear model on the flattened series"),
)}
MODEL_NAMES = tuple(MODELS)
FIXED_LENGTH_MODELS = tuple(name for name, spec in MODELS.items() if not spec.any_length)
MIN_LENGTH = {name: spec.min_length for name, spec in MODELS.items() if spec.min_length > 1}
PAPER_RECIPES = {name: spec.recipe for name, spec in MODELS.items() if spec.recipe != Recipe()}


def recipe(model: str) -> Recipe:
    return MODELS[model].recipe


def model_help() -> str:
    """--model's help, from the registry."""
    def names(specs):
        return ", ".join(f"{s.name} ({s.summary})" for s in specs)

    specs = list(MODELS.values())
    papers = [s for s in specs if s.recipe != Recipe()]
    return (f"Any length: {names(s for s in specs if s.any_length)}. Fixed to the training length: "
            f"{names(s for s in specs if not s.any_length)}. {' and '.join(s.name for s in papers)} train with "
            f"their papers' recipe unless a flag says otherwise: {papers[0].recipe.describe()}.")


def default_epochs(embedded_data: bool, model: str = "fcn") -> int:
    return DEFAULT_EPOCHS_EMBEDDED if embedded_data else recipe(model).epochs


def auto_batch_size(n_train: int) -> int:
    """Wang et al. 2017 use min(N/10, 16): small UCR sets need many small steps to converge.

    Capped at 32 rather than 16, where larger sets gain more from throughput than from noise.
    """
    return int(min(32, max(2, n_train // 10)))


class _JsonMixin:
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in names}
        return cls(**kwargs)


@dataclass(frozen=True)
class DataConfig(_JsonMixin):
    """Where the series come from and how they are split and normalised."""

    data: str | None = None  # None: the embedded waveform data set
    val_data: str | None = None
    test_data: str | None = None
    # None: 0.2 for AUTO_VAL_MIN_SERIES series or more, else the task's small_set_val_split
    val_split: float | None = None
    target_column: str | None = None
    task: str | None = None  # None: inferred from the labels
    normalize: str = "channel"
    pad: bool = False

    def __post_init__(self):
        if self.task is not None:
            _choice("--task", self.task, TASK_NAMES)
        _choice("--normalize", self.normalize, NORMALIZE_MODES)
        if self.val_split is not None and not 0.0 <= self.val_split < 1.0:
            raise PipelineError(f"--val-split must be in [0, 1); got {self.val_split}")
        if self.val_data is not None and self.val_split is not None:
            raise PipelineError("--val-split and --val-data both choose validation data; pass only one")


@dataclass(frozen=True)
class LossConfig(_JsonMixin):
    """The loss by name (or package.module:Class) with every parameter that tunes it."""

    name: str | None = None  # None: the task's default
    # None: not given (LOSS_PARAM_DEFAULTS apply), so a flag given at its default value is still a given flag
    huber_delta: float | None = None
    beta: float | None = None
    pos_weight: tuple[float, ...] | None = None
    class_weights: str | tuple[float, ...] | None = None  # "balanced" or explicit weights
    label_smoothing: float | None = None
    loss_params: tuple[tuple[str, str], ...] = ()  # keyword arguments for a custom loss

    def __post_init__(self):
        if self.name is not None and not is_custom_loss(self.name) and self.name not in ALL_LOSS_NAMES:
            by_task = "; ".join(f"{task}: {', '.join(spec.loss_names)}" for task, spec in TASKS.items())
            raise PipelineError(f"--loss '{self.name}' is not a loss; choose one of {by_task}; or a custom loss "
                                "as package.module:ClassName")
        if self.huber_delta is not None:
            _positive("--huber-delta", self.huber_delta)
        if self.beta is not None:
            _positive("--beta", self.beta, allow_zero=True)
        if self.label_smoothing is not None and not 0.0 <= self.label_smoothing < 1.0:
            raise PipelineError(f"--label-smoothing must be in [0, 1); got {self.label_smoothing}")
        for w in self.pos_weight or ():
            _positive("--pos-weight", w)
        if isinstance(self.class_weights, tuple):
            for w in self.class_weights:
                _positive("--class-weights", w, allow_zero=True)
            if not any(self.class_weights):
                raise PipelineError("--class-weights must not all be 0")
        elif self.class_weights not in (None, "balanced"):
            raise PipelineError(f"--class-weights must be 'balanced' or numbers 'w1,w2,..'; got {self.class_weights}")

    def given(self) -> dict[str, bool]:
        """Which tuning flags were given (at any value, the default's too)."""
        return {"huber_delta": self.huber_delta is not None, "beta": self.beta is not None,
                "pos_weight": self.pos_weight is not None, "class_weights": self.class_weights is not None,
                "label_smoothing": self.label_smoothing is not None}

    def value(self, name: str) -> float:
        """A scalar tuning parameter: as given, else its default."""
        value = getattr(self, name)
        return LOSS_PARAM_DEFAULTS[name] if value is None else value

    @classmethod
    def from_dict(cls, d: dict):
        d = dict(d)
        if isinstance(d.get("loss_params"), list):
            d["loss_params"] = tuple(tuple(p) for p in d["loss_params"])
        return super().from_dict(d)


@dataclass(frozen=True)
class ModelConfig(_JsonMixin):
    """Everything needed to rebuild the network; the data-dependent fields are filled at training."""

    name: str = "fcn"
    width: float = 1.0  # multiplies the channel/hidden sizes of the architecture
    in_channels: int = 1
    length: int = 0  # training length; required by the fixed-length models
    n_outputs: int = 1
    normalize: str = "channel"
    ensemble: int = 1  # members; more than one: their outputs averaged (models.EnsembleNet)
    combine: str = "identity"  # how members are averaged: the task's scores (runtime.tasks.Task.scores)

    def __post_init__(self):
        _choice("--model", self.name, MODEL_NAMES)
        _positive("--width", self.width)
        _choice("--normalize", self.normalize, NORMALIZE_MODES)
        if not isinstance(self.ensemble, int) or self.ensemble < 1:
            raise PipelineError(f"--ensemble must be a whole number >= 1; got {self.ensemble}")
        _choice("combine", self.combine, ENSEMBLE_COMBINES)

    @property
    def fixed_length(self) -> bool:
        return not MODELS[self.name].any_length


@dataclass(frozen=True)
class TrainConfig(_JsonMixin):
    """The optimisation loop: optimizer, schedule, stopping, compile and device."""

    epochs: int = DEFAULT_EPOCHS
    batch_size: int | None = None  # None: auto_batch_size(training series)
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    scheduler: str = "plateau"
    patience: int = DEFAULT_PATIENCE  # early stopping; 0 turns it off
    lr_patience: int | None = None  # plateau scheduler's stall; None: derived from patience
    seed: int = 0
    compile: str = "auto"
    compile_mode: str = "default"
    device: str = "auto"
    precision: str = "auto"
    member: int = 0  # ensemble member: its weights and shuffling come from seed + member (the data split from seed)
    progress: bool = True
    tensorboard: str | None = None  # event-file folder; "" means RUN_DIR/tensorboard
    mlflow: str | None = None  # tracking URI (http://..., sqlite:///...), local stores made absolute

    def __post_init__(self):
        _positive("--epochs", self.epochs)
        if self.batch_size is not None:
            _positive("--batch-size", self.batch_size)
        _positive("--lr", self.lr)
        _positive("--weight-decay", self.weight_decay, allow_zero=True)
        _positive("--patience", self.patience, allow_zero=True)
        if self.lr_patience is not None:
            _positive("--lr-patience", self.lr_patience, allow_zero=True)
        _choice("--optimizer", self.optimizer, OPTIMIZERS)
        _choice("--scheduler", self.scheduler, SCHEDULERS)
        _choice("--compile", self.compile, COMPILE_CHOICES)
        _choice("--compile-mode", self.compile_mode, COMPILE_MODES)
        _choice("--device", self.device, DEVICES)
        _choice("--precision", self.precision, PRECISIONS)
        if self.tensorboard and Path(self.tensorboard).exists() and not Path(self.tensorboard).is_dir():
            raise PipelineError(f"--tensorboard {self.tensorboard} is a file; pass a folder for the event files "
                                "(or --tensorboard alone for RUN_DIR/tensorboard)")
