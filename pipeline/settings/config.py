"""One frozen, validated dataclass per concern; saved as plain JSON next to the weights."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.settings.fields import setting
from runtime.forecast import check_quantiles
from runtime.manifest import WINDOW_LABELS
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


def _exists(path: str, flag: str) -> bool:
    """Whether `path` exists; a name the file system refuses (too long, say) is our one-line error."""
    try:
        return Path(path).exists()
    except OSError as exc:
        raise PipelineError(f"{flag} {path[:60]}{'...' if len(path) > 60 else ''}: {exc.strerror}") from None


def _positive(flag: str, value, allow_zero: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    if not ok or (isinstance(value, float) and not math.isfinite(value)):
        raise PipelineError(f"{flag} must be {'>= 0' if allow_zero else '> 0'}; got {value}")


DEFAULT_EPOCHS = 300  # Wang et al. 2017 train far longer; early stopping ends most runs sooner
DEFAULT_EPOCHS_EMBEDDED = 40  # the embedded waveforms converge in a few dozen epochs (about a minute on CPU)


LOSS_PARAM_DEFAULTS = {"huber_delta": 1.0, "beta": 1.0, "label_smoothing": 0.0}  # torch.nn's own defaults


DEFAULT_QUANTILES = (0.1, 0.5, 0.9)  # --loss quantile: an 80 % interval around the median
DEFAULT_PATIENCE = 50
DEFAULT_LR = 1e-3
HEADS = ("auto", "ridge", "linear")


@dataclass(frozen=True)
class Recipe:
    """A model's training defaults, each overridden by its flag. patience 0: no early stopping;
    lr_patience: epochs without improvement before the plateau scheduler halves the rate."""

    epochs: int = DEFAULT_EPOCHS
    batch_size: int | None = None  # None: auto_batch_size(training series)
    patience: int = DEFAULT_PATIENCE
    lr_patience: int | None = None  # None: a third of --patience (at least 3), or 10 without early stopping
    source: str = "Wang et al. 2017, with early stopping"
    lr: float = DEFAULT_LR

    def describe(self) -> str:
        batch = f"batch {self.batch_size}" if self.batch_size else "batch = training series / 10 (2..32)"
        stop = f"early stopping after {self.patience} epochs" if self.patience else "no early stopping"
        rate = f"after {self.lr_patience}" if self.lr_patience else "when the loss stalls"
        return (f"{self.epochs} epochs, {batch}, Adam {_rate(self.lr)} halved {rate} epochs without improvement down "
                f"to {_rate(self.lr / 10)}, {stop} ({self.source})")


def _rate(lr: float) -> str:
    """1e-3, 1e-4, 3e-4: a learning rate as the papers write it."""
    return f"{lr:.0e}".replace("e-0", "e-")


@dataclass(frozen=True)
class ModelSpec:
    """One model of the registry: its network class in pipeline.models.build (built there from a ModelConfig, so
    choosing and checking a model needs no torch), whether it takes any series length, its shortest training
    series, its training recipe, and one line of help."""

    name: str
    network: str  # a class of pipeline.models.build with from_config(ModelConfig)
    any_length: bool
    summary: str
    min_length: int = 1
    recipe: Recipe = Recipe()
    kernel: bool = False  # a kernel transform fitted from the training series, then a linear head (--head)
    per_step: bool = False  # can label every time step (--window-label each): features at full length


# InceptionTime's and LITE's published code: Adam 1e-3, batch 64, 1500 epochs, ReduceLROnPlateau on the training
# loss (factor 0.5, patience 50, min 1e-4), the weights of the lowest training loss kept, no early stopping
_PAPERS = {"inception": Recipe(1500, 64, 0, 50, "Ismail Fawaz et al. 2020"),
           "lite": Recipe(1500, 64, 0, 50, "Ismail-Fawaz et al. 2023"),
           # MiniRocket's softmax.py for large sets (--head linear); the ridge head is fitted in closed form
           "kernel": Recipe(50, 256, 10, 5, "Dempster et al. 2021's softmax recipe", lr=1e-4)}

# The model registry: adding a model is one entry here (and its network class in pipeline.models.build).
MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in (
    ModelSpec("fcn", "FCN", True, "Wang et al. 2017's fully convolutional network", per_step=True),
    ModelSpec("resnet", "ResNet", True, "Wang et al. 2017's ResNet", per_step=True),
    ModelSpec("inception", "Inception", True, "InceptionTime's network", recipe=_PAPERS["inception"], per_step=True),
    ModelSpec("lite", "LITE", True, "LITE", recipe=_PAPERS["lite"], per_step=True),
    ModelSpec("tcn", "TCN", True, "a causal dilated temporal convolutional network", per_step=True),
    ModelSpec("unet", "UNet", False, "a 1-D U-Net, U-Time's encoder-decoder", per_step=True),
    # kernel models: fixed to the training length (their dilations are), 9 steps at least (one kernel's span)
    ModelSpec("minirocket", "MiniRocket", False, "MiniRocket's 10,000 PPV features and a linear head", min_length=9,
              recipe=_PAPERS["kernel"], kernel=True),
    ModelSpec("hydra", "Hydra", False, "Hydra's competing kernel groups and a linear head", min_length=9,
              recipe=_PAPERS["kernel"], kernel=True),
    # the first difference must span a kernel too
    ModelSpec("multirocket-hydra", "MultiRocketHydra", False, "MultiRocket's four poolings and Hydra's counts, "
              "then a linear head", min_length=10, recipe=_PAPERS["kernel"], kernel=True),
    # simple-cnn pools pairs of steps; every other model takes even one step per series
    ModelSpec("simple-cnn", "SimpleCNN", False, "the tutorials' Conv1d-ReLU-MaxPool-Flatten-Linear", min_length=2),
    ModelSpec("mlp", "MLP", False, "two hidden layers on the flattened series"),
    ModelSpec("linear", "Linear", False, "a linear model on the flattened series"),
)}
MODEL_NAMES = tuple(MODELS)
FIXED_LENGTH_MODELS = tuple(name for name, spec in MODELS.items() if not spec.any_length)
MIN_LENGTH = {name: spec.min_length for name, spec in MODELS.items() if spec.min_length > 1}
PAPER_RECIPES = {name: spec.recipe for name, spec in MODELS.items() if spec.recipe != Recipe() and not spec.kernel}
KERNEL_MODELS = tuple(name for name, spec in MODELS.items() if spec.kernel)
PER_STEP_MODELS = tuple(name for name, spec in MODELS.items() if spec.per_step)


def recipe(model: str) -> Recipe:
    return MODELS[model].recipe


def model_help() -> str:
    """--model's help, from the registry."""
    def names(specs):
        return ", ".join(f"{s.name} ({s.summary})" for s in specs)

    specs = list(MODELS.values())
    papers = [s for s in specs if s.name in PAPER_RECIPES]
    return (f"Any length: {names(s for s in specs if s.any_length)}. Fixed to the training length: "
            f"{names(s for s in specs if not s.any_length)}. {' and '.join(s.name for s in papers)} train with "
            f"their papers' recipe unless a flag says otherwise: {papers[0].recipe.describe()}. "
            f"{', '.join(KERNEL_MODELS)}: see --head.")


def default_epochs(embedded_data: bool, model: str = "fcn") -> int:
    return DEFAULT_EPOCHS_EMBEDDED if embedded_data else recipe(model).epochs


def auto_batch_size(n_train: int) -> int:
    """Wang et al. 2017 use min(N/10, 16): small UCR sets need many small steps to converge.

    Capped at 32 rather than 16, where larger sets gain more from throughput than from noise.
    """
    return int(min(32, max(2, n_train // 10)))


# the models trained with their papers' recipe (one recipe, the same for each), named in the help texts
_PAPER_MODELS = " and ".join(PAPER_RECIPES)
_PAPER = next(iter(PAPER_RECIPES.values()))


def _small_set_val_splits() -> str:
    """'0.3 for regression, count; 0 for binary, multiclass, multilabel': each task's small-set hold-out."""
    by_split: dict[float, list[str]] = {}
    for name, task in TASKS.items():
        by_split.setdefault(task.small_set_val_split, []).append(name)
    return "; ".join(f"{split:g} for {', '.join(names)}" for split, names in by_split.items())


def _loss_help() -> str:
    rows = "; ".join(f"{name}: {', '.join(spec.loss_names)}" for name, spec in TASKS.items())
    return f"Loss (first per task is the default) - {rows}; or your own as package.module:ClassName."


def numbers(flag: str, text: str) -> tuple[float, ...]:
    """'1,2.5' -> (1.0, 2.5), for the flags that take one number or several."""
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise PipelineError(f"{flag} '{text}' must be a number or comma-separated numbers like 1,2.5") from None


def name_values(items: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """('gamma=2',) -> (('gamma', '2'),): a custom loss's constructor arguments."""
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise PipelineError(f"--loss-param '{item}' must look like NAME=VALUE (VALUE is read as JSON if it can be)")
        pairs.append((key, value))
    return tuple(pairs)


class _JsonMixin:
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in names}
        return cls(**kwargs)


WINDOW_FIELDS = ("window", "stride", "window_label", "recording_column", "time_column")  # DataConfig's, for --window
FORECAST_FIELDS = ("horizon", "forecast_columns", "season")  # DataConfig's, for --task forecast


@dataclass(frozen=True)
class DataConfig(_JsonMixin):
    """Where the series come from and how they are split and normalised."""

    data: str | None = setting(None, kind="data", parse=str, help="Training series: .npz (X, y), .csv, UCR .tsv or "
                               "UCR/UEA .ts; with --window, recordings (a per-sample .csv, an .npz, or a folder of "
                               "them). Default: embedded waveforms.")
    val_data: str | None = setting(None, kind="data", parse=str,
                                   help="Validation file (same format rules); replaces --val-split.")
    test_data: str | None = setting(None, kind="data", parse=str,
                                    help="Test file, scored with the best checkpoint at the end.")
    # None: 0.2 for AUTO_VAL_MIN_SERIES series or more, else the task's small_set_val_split
    val_split: float | None = setting(
        None, type=float, help="Fraction of training series held out (stratified for classes); 0 selects by training "
        f"loss. [default: {AUTO_VAL_FRACTION:g} with {AUTO_VAL_MIN_SERIES} or more training series; below that "
        f"{_small_set_val_splits()}]")
    target_column: str | None = setting(None, type=str, help="CSV label column name or 0-based index (default: last); "
                                        "several comma-separated for multi-target.")
    task: str | None = setting(None, choices=TASK_NAMES, help="Task; inferred from the labels if omitted.")
    normalize: str = setting("channel", choices=NORMALIZE_MODES,
                             help="channel: z-score per channel fitted on training data; series: per series; none.")
    pad: bool = setting(False, kind="switch", help="Right-pad unequal-length .ts series with their last value.")
    window: int | None = setting(None, type=int, help="Cut long recordings into windows of this many samples: "
                                 "--data is then a per-sample .csv (a row per time step), an .npz of recordings, "
                                 "or a folder of them, one recording per file (see docs/recordings.md).")
    stride: int | None = setting(None, type=int, help="Samples between window starts (with --window). "
                                 "[default: the window, no overlap; --task forecast: the horizon; --window-label "
                                 "each: half the window]")
    window_label: str = setting("last", choices=WINDOW_LABELS, help="A window's label when labels are per time "
                                "step: last (causal: what a live stream knows; pick it to stream), majority, "
                                "center; each: a label for every time step (segmentation, see "
                                "docs/segmentation.md).")
    recording_column: str | None = setting(None, type=str, help="Per-sample .csv: the column naming each row's "
                                           "recording (default: the file is one recording).")
    time_column: str | None = setting(None, type=str, help="Per-sample .csv: a time column; rows must be in "
                                      "increasing time within each recording (it is not a signal channel).")
    horizon: int | None = setting(None, type=int, help="--task forecast: predict the next this many samples after "
                                  "each window of --window past samples (see docs/forecasting.md).")
    forecast_columns: str | None = setting(None, type=str, help="--task forecast: the channels to forecast, by "
                                           "header name or 0-based index, comma-separated; the others are inputs "
                                           "only. [default: every channel]")
    season: int = setting(1, type=int, help="--task forecast: the season length (samples) of the seasonal-naive "
                          "baseline and of MASE's scale.")

    def __post_init__(self):
        if self.task is not None:
            _choice("--task", self.task, TASK_NAMES)
        _choice("--normalize", self.normalize, NORMALIZE_MODES)
        if self.val_split is not None and not 0.0 <= self.val_split < 1.0:
            raise PipelineError(f"--val-split must be in [0, 1); got {self.val_split}")
        if self.val_data is not None and self.val_split is not None:
            raise PipelineError("--val-split and --val-data both choose validation data; pass only one")
        _choice("--window-label", self.window_label, WINDOW_LABELS)
        if self.window is None:
            given = [flag for flag, value in (("--stride", self.stride), ("--recording-column", self.recording_column),
                                              ("--time-column", self.time_column)) if value is not None]
            if given or self.window_label != "last":
                flags = ", ".join(given + (["--window-label"] if self.window_label != "last" else []))
                raise PipelineError(f"{flags} cut recordings into windows and need --window LENGTH too")
        elif self.window < 1 or (self.stride is not None and self.stride < 1):
            raise PipelineError(f"--window {self.window} and --stride {self.stride} must be at least 1 sample")
        if self.window is not None and self.pad:
            raise PipelineError("--pad right-pads .ts series; windows of recordings need no padding, drop --pad")
        if self.task == "forecast" and (self.window is None or self.horizon is None):
            raise PipelineError("--task forecast predicts the next --horizon samples after windows of --window "
                                "past samples of recordings; pass both (e.g. --window 96 --horizon 24)")
        if self.task != "forecast":
            given = [flag for flag, value in (("--horizon", self.horizon), ("--forecast-columns", self.forecast_columns),
                                              ("--season", None if self.season == 1 else self.season))
                     if value is not None]
            if given:
                raise PipelineError(f"{', '.join(given)} apply to --task forecast only; pass --task forecast")
        if self.task == "forecast":
            label_flags = [flag for flag, given in (("--target-column", self.target_column is not None),
                                                    ("--window-label", self.window_label != "last")) if given]
            if label_flags:
                raise PipelineError(f"{', '.join(label_flags)} choose a label column; --task forecast forecasts "
                                    "channels of the recordings: name them with --forecast-columns")
        if self.horizon is not None and self.horizon < 1:
            raise PipelineError(f"--horizon must be at least 1 sample; got {self.horizon}")
        if self.season < 1:
            raise PipelineError(f"--season must be at least 1 sample; got {self.season}")
        if self.task == "forecast" and self.season >= self.window:
            raise PipelineError(f"--season {self.season} must be shorter than --window {self.window}: the seasonal-"
                                "naive baseline and MASE read the season from the window")

    def to_dict(self) -> dict:
        d = super().to_dict()
        if self.window is None:  # runs without windows: their configs stay as they were before windows existed
            for key in WINDOW_FIELDS:
                del d[key]
        if self.task != "forecast":  # and runs of other tasks as they were before forecasting
            for key in FORECAST_FIELDS:
                del d[key]
        return d

    @property
    def window_stride(self) -> int | None:
        """Samples between window starts: --stride, or the window (no overlap)."""
        if self.window is None:
            return None
        if self.stride:
            return self.stride
        if self.task == "forecast":
            return self.horizon
        return max(self.window // 2, 1) if self.window_label == "each" else self.window


@dataclass(frozen=True)
class LossConfig(_JsonMixin):
    """The loss by name (or package.module:Class) with every parameter that tunes it."""

    name: str | None = setting(None, name="--loss", dest="loss_name", type=str, metavar="NAME",
                               help=_loss_help())  # None: the task's default
    # None: not given (LOSS_PARAM_DEFAULTS apply), so a flag given at its default value is still a given flag
    huber_delta: float | None = setting(None, type=float, help="Delta of --loss huber. [default: "
                                        f"{LOSS_PARAM_DEFAULTS['huber_delta']}]")
    beta: float | None = setting(None, type=float,
                                 help=f"Beta of --loss smooth_l1. [default: {LOSS_PARAM_DEFAULTS['beta']}]")
    pos_weight: tuple[float, ...] | None = setting(
        None, type=str, metavar="W[,W..]", parse=lambda text: numbers("--pos-weight", text),
        help="Positive-class weight for bce_with_logits: one number or one per label.")
    class_weights: str | tuple[float, ...] | None = setting(  # "balanced" or explicit weights
        None, type=str, metavar="balanced|W1,W2,..",
        parse=lambda text: text if text == "balanced" else numbers("--class-weights", text),
        help="Class weights for cross_entropy/nll/multi_margin; 'balanced' computes them from the labels.")
    label_smoothing: float | None = setting(None, type=float, help="For cross_entropy. [default: "
                                            f"{LOSS_PARAM_DEFAULTS['label_smoothing']}]")
    quantiles: tuple[float, ...] | None = setting(
        None, type=str, metavar="Q[,Q..]", parse=lambda text: numbers("--quantiles", text),
        help="--loss quantile (--task forecast): the quantiles forecast, increasing, 0.5 in the middle. "
             f"[default: {','.join(f'{q:g}' for q in DEFAULT_QUANTILES)}]")
    loss_params: tuple[tuple[str, str], ...] = setting(  # keyword arguments for a custom loss
        (), name="--loss-param", dest="loss_param", kind="many", metavar="NAME=VALUE", parse=name_values,
        help="Constructor argument of a custom loss.")

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
        if self.quantiles is not None:
            why = check_quantiles(self.quantiles)
            if why:
                raise PipelineError(f"--quantiles {','.join(f'{q:g}' for q in self.quantiles)}: {why}")
        if isinstance(self.class_weights, tuple):
            for w in self.class_weights:
                _positive("--class-weights", w, allow_zero=True)
            if not any(self.class_weights):
                raise PipelineError("--class-weights must not all be 0")
        elif self.class_weights not in (None, "balanced"):
            raise PipelineError(f"--class-weights must be 'balanced' or numbers 'w1,w2,..'; got {self.class_weights}")

    def to_dict(self) -> dict:
        d = super().to_dict()
        if self.quantiles is None:  # runs without quantiles: their configs stay as they were before forecasting
            del d["quantiles"]
        return d

    def given(self) -> dict[str, bool]:
        """Which tuning flags were given (at any value, the default's too)."""
        return {"huber_delta": self.huber_delta is not None, "beta": self.beta is not None,
                "pos_weight": self.pos_weight is not None, "class_weights": self.class_weights is not None,
                "label_smoothing": self.label_smoothing is not None, "quantiles": self.quantiles is not None}

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

    name: str = setting("fcn", name="--model", dest="model_name", choices=MODEL_NAMES, help=model_help())
    # members; more than one: their outputs averaged (models.EnsembleNet)
    ensemble: int = setting(1, kind="count", metavar="N", help="Train N members (seeds SEED..SEED+N-1) in one run "
                            "folder; export one graph that averages their probabilities (classification) or "
                            "predictions. --model inception --ensemble 5 is InceptionTime, --model lite --ensemble 5 "
                            "is LITETime.")
    width: float = setting(1.0, help="Multiplies the model's channel sizes (the kernel models' number of features).")
    head: str = setting("auto", choices=HEADS, help=f"The head of {', '.join(KERNEL_MODELS)}: ridge is fitted in "
                        "closed form, its regularisation chosen by leave-one-out cross-validation (alphas 1e-3..1e3), "
                        "then its scale fitted to the task's loss; linear is trained by gradient descent with the "
                        f"task's loss ({_PAPERS['kernel'].describe()}). auto: ridge below 10000 training series, "
                        "linear from there.")
    in_channels: int = 1
    length: int = 0  # training length; required by the fixed-length models
    n_outputs: int = 1
    normalize: str = "channel"
    combine: str = "identity"  # how members are averaged: the task's scores (runtime.tasks.Task.scores)
    # --task forecast: the forecast's shape (targets, horizon, quantiles), the target channels, so the model
    # normalises each window by its own level and spread and restores them on the targets (build.Reversible)
    horizon: int = 0
    targets: tuple[int, ...] = ()
    quantiles: int = 1
    per_step: bool = False  # --window-label each: scores at every time step, (batch, n_outputs, length)

    def __post_init__(self):
        _choice("--model", self.name, MODEL_NAMES)
        _positive("--width", self.width)
        _choice("--normalize", self.normalize, NORMALIZE_MODES)
        if not isinstance(self.ensemble, int) or self.ensemble < 1:
            raise PipelineError(f"--ensemble must be a whole number >= 1; got {self.ensemble}")
        _choice("combine", self.combine, ENSEMBLE_COMBINES)
        _choice("--head", self.head, HEADS)
        if self.head != "auto" and not MODELS[self.name].kernel:
            raise PipelineError(f"--head {self.head} applies to --model {', '.join(KERNEL_MODELS)}; --model "
                                f"{self.name} trains its own head")

    @property
    def fixed_length(self) -> bool:
        return not MODELS[self.name].any_length

    @property
    def target_outputs(self) -> int:
        """The width of the loss graph's target: the raw width, but a quantile forecast's Q outputs per value."""
        return self.n_outputs // self.quantiles

    def to_dict(self) -> dict:
        d = super().to_dict()
        if d["head"] == "auto":  # only the kernel models choose a head: other runs' configs stay as they were
            del d["head"]
        if not self.horizon:  # only forecasters have a horizon
            for key in ("horizon", "targets", "quantiles"):
                del d[key]
        if not self.per_step:  # only per-step models: other runs' configs stay as they were
            del d["per_step"]
        return d


@dataclass(frozen=True)
class TrainConfig(_JsonMixin):
    """The optimisation loop: optimizer, schedule, stopping, compile and device."""

    optimizer: str = setting("adam", choices=OPTIMIZERS)
    lr: float = setting(DEFAULT_LR, type=float, unset=True, help=f"Learning rate. [default: {DEFAULT_LR:g}; "
                        f"{_PAPERS['kernel'].lr:g} for {', '.join(KERNEL_MODELS)} with --head linear]")
    # the flags below left unset take the model's recipe (pipeline.settings.config.MODELS) or the embedded data's epochs
    epochs: int = setting(DEFAULT_EPOCHS, type=int, unset=True, resumable=True, help=f"Epochs [default: "
                          f"{DEFAULT_EPOCHS}, {_PAPER.epochs} for {_PAPER_MODELS}; {DEFAULT_EPOCHS_EMBEDDED} on the "
                          "embedded data].")
    batch_size: int | None = setting(  # None: auto_batch_size(training series)
        None, type=int, unset=True, help="[default: training series / 10, between 2 and 32, as Wang et al. for "
        f"small sets; {_PAPER.batch_size} for {_PAPER_MODELS}]")
    weight_decay: float = setting(0.0)
    momentum: float = setting(0.9, help="For --optimizer sgd.")
    scheduler: str = setting("plateau", choices=SCHEDULERS, help="plateau halves the rate when the monitored loss "
                             "stalls; cosine anneals over --epochs.")
    patience: int = setting(  # early stopping; 0 turns it off
        DEFAULT_PATIENCE, type=int, unset=True, resumable=True, help="Early stopping after this many epochs without "
        f"improvement; 0 turns it off. [default: {DEFAULT_PATIENCE}; 0 for {_PAPER_MODELS}]")
    lr_patience: int | None = setting(  # plateau scheduler's stall; None: derived from patience
        None, type=int, unset=True, help="Epochs without improvement before --scheduler plateau halves the rate. "
        f"[default: a third of --patience, at least 3 (10 without early stopping); {_PAPER.lr_patience} for "
        f"{_PAPER_MODELS}]")
    seed: int = setting(0)
    compile: str = setting("auto", dest="compile_", choices=COMPILE_CHOICES, resumable=True,
                           help="torch.compile the model and the loss; auto compiles on CUDA only (slower on CPU).")
    compile_mode: str = setting("default", choices=COMPILE_MODES, resumable=True)
    device: str = setting("auto", choices=DEVICES, resumable=True)
    threads: int | None = setting(None, kind="count", resumable=True, help="CPU threads for the whole run (torch "
                                  "intra-op: every epoch and the kernel models' fit), set once at its start. "
                                  "[default: torch's, one per core or $OMP_NUM_THREADS]")
    precision: str = setting("auto", choices=PRECISIONS, resumable=True, help="bf16 runs the model's forward pass "
                             "under bf16 autocast; weights, checkpoints, exports and the loss stay fp32. auto: bf16 "
                             "where the device runs it natively (CUDA with bf16; CPUs with AVX-512 BF16 or AMX), fp32 "
                             "elsewhere.")
    member: int = 0  # ensemble member: its weights and shuffling come from seed + member (the data split from seed)
    progress: bool = setting(True, kind="on-off", resumable=True, help="Progress bars (shown on a terminal).")
    tensorboard: str | None = setting(  # event-file folder; "" means RUN_DIR/tensorboard
        None, type=str, flag_value="", metavar="[DIR]", help="Write TensorBoard event files (losses, metrics, lr per "
        "epoch; hparams; the model graph) to DIR [default DIR: RUN_DIR/tensorboard]; a resumed run continues them.")
    mlflow: str | None = setting(  # tracking URI (http://..., sqlite:///...), local stores made absolute
        None, type=str, metavar="URI", help="Log the run to MLflow: a tracking server (http://HOST:PORT) or a local "
        "database store (sqlite:///mlflow.db): the config as parameters, per-epoch metrics, tags, the run's files as "
        "artifacts. Experiment: $MLFLOW_EXPERIMENT_NAME [default: pipeline]. A resumed run continues its MLflow run.")

    def to_dict(self) -> dict:
        d = super().to_dict()
        if d["threads"] is None:  # added after runs existed: their config.json stays as written
            del d["threads"]
        return d

    def __post_init__(self):
        _positive("--epochs", self.epochs)
        if self.batch_size is not None:
            _positive("--batch-size", self.batch_size)
        _positive("--lr", self.lr)
        _positive("--weight-decay", self.weight_decay, allow_zero=True)
        _positive("--patience", self.patience, allow_zero=True)
        _positive("--momentum", self.momentum, allow_zero=True)
        _positive("--seed", self.seed, allow_zero=True)  # numpy and torch take seeds of 0 and up
        if self.threads is not None and self.threads < 1:
            raise PipelineError(f"--threads must be at least 1; got {self.threads}")
        if self.mlflow is not None and not self.mlflow.strip():
            raise PipelineError("--mlflow needs a tracking URI: a server (http://HOST:PORT) or a local database "
                                "store (sqlite:///mlflow.db)")
        if self.lr_patience is not None:
            _positive("--lr-patience", self.lr_patience, allow_zero=True)
        _choice("--optimizer", self.optimizer, OPTIMIZERS)
        _choice("--scheduler", self.scheduler, SCHEDULERS)
        _choice("--compile", self.compile, COMPILE_CHOICES)
        _choice("--compile-mode", self.compile_mode, COMPILE_MODES)
        _choice("--device", self.device, DEVICES)
        _choice("--precision", self.precision, PRECISIONS)
        if self.tensorboard and _exists(self.tensorboard, "--tensorboard") and not Path(self.tensorboard).is_dir():
            raise PipelineError(f"--tensorboard {self.tensorboard} is a file; pass a folder for the event files "
                                "(or --tensorboard alone for RUN_DIR/tensorboard)")
