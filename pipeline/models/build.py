"""Networks for (batch, channels, length) series. Every model emits raw scores (N, n_outputs)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.models import networks
from pipeline.settings.config import MODELS, ModelConfig
from pipeline.errors import PipelineError

NORM_EPS = 1e-8
REVIN_EPS = 1e-10  # added to each window's variance: a constant window is divided by 1e-5, not 0


class Normalize(nn.Module):
    """Z-scores inside the model, so exported graphs take raw series.

    channel: training-set mean/std per channel (buffers, saved with the weights);
    series: each series by its own mean/std per channel; none: identity.
    """

    def __init__(self, mode: str, channels: int):
        super().__init__()
        self.mode = mode
        self.eps = NORM_EPS  # an attribute, not a global, so torch.jit.script compiles forward
        self.register_buffer("mean", torch.zeros(1, channels, 1))
        self.register_buffer("std", torch.ones(1, channels, 1))

    def forward(self, x: Tensor) -> Tensor:  # (batch, channels, length)
        if self.mode == "channel":
            return (x - self.mean) / self.std
        if self.mode == "series":
            mean = x.mean(dim=2, keepdim=True)
            std = x.std(dim=2, keepdim=True, unbiased=False)
            return (x - mean) / (std + self.eps)
        return x

    @torch.no_grad()
    def fit(self, mean: Tensor, std: Tensor) -> None:
        self.mean.copy_(mean.reshape(self.mean.shape))
        self.std.copy_(torch.where(std > NORM_EPS, std, torch.ones_like(std)).reshape(self.std.shape))


class _OutputBuffers(nn.Module):
    """A module holding output-layer buffers `scale` and `shift`: a state dict saved before the output layer
    existed loads them as the identity (scale 1, shift 0), which is what that model computed."""

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if prefix + "scale" not in state_dict and prefix + "shift" not in state_dict:
            state_dict[prefix + "scale"] = torch.ones_like(self.scale)
            state_dict[prefix + "shift"] = torch.zeros_like(self.shift)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class OutputScale(_OutputBuffers):
    """The last step of every model: raw score = network output * scale + shift, per output, with fixed
    buffers fitted from the training targets (pipeline.training.base_rate), so a fresh network starts at the data's
    base rate and a regression graph answers in the user's units. A run saved before this layer existed
    loads as the identity (scale 1, shift 0), which is what it computed."""

    def __init__(self, n_outputs: int):
        super().__init__()
        self.register_buffer("scale", torch.ones(n_outputs))
        self.register_buffer("shift", torch.zeros(n_outputs))

    def forward(self, z: Tensor) -> Tensor:  # (batch, n_outputs) or per step (batch, n_outputs, length)
        if z.dim() == 3:
            return z * self.scale.unsqueeze(-1) + self.shift.unsqueeze(-1)
        return z * self.scale + self.shift

    @torch.no_grad()
    def fit(self, scale: Tensor, shift: Tensor) -> None:
        self.scale.copy_(scale.reshape(self.scale.shape))
        self.shift.copy_(shift.reshape(self.shift.shape))


def non_crossing(z: Tensor, quantiles: int) -> Tensor:
    """Quantile forecasts that cannot cross, from free scores (..., T * H * Q), quantiles innermost: the middle
    one is the median; each quantile above it adds softplus of its score to the one below, each below subtracts
    (runtime.forecast's layout). The identity for a point forecast (Q = 1)."""
    if quantiles == 1:
        return z
    q = z.reshape(z.shape[:-1] + (-1, quantiles))  # (..., T * H, Q)
    middle = quantiles // 2
    median = q[..., middle:middle + 1]
    below = median - torch.flip(torch.cumsum(torch.flip(F.softplus(q[..., :middle]), [-1]), dim=-1), [-1])
    above = median + torch.cumsum(F.softplus(q[..., middle + 1:]), dim=-1)
    return torch.cat([below, median, above], dim=-1).reshape(z.shape)


class Reversible(nn.Module):
    """Reversible instance normalisation for forecasting (Kim et al. 2022, RevIN, without the affine weights):
    each window is z-scored per channel by its own mean and spread on the way in, and the forecast of each target
    channel is scaled back by that channel's spread and level on the way out, so recordings at any level share
    one model and the graph answers in the user's units."""

    def __init__(self, targets: tuple[int, ...], horizon: int, quantiles: int):
        super().__init__()
        self.register_buffer("targets", torch.tensor(list(targets), dtype=torch.long))
        self.steps = horizon * quantiles  # values per target
        self.eps = REVIN_EPS

    def stats(self, x: Tensor) -> tuple[Tensor, Tensor]:  # (batch, channels, length) -> two (batch, channels, 1)
        mean = x.mean(dim=2, keepdim=True)
        spread = torch.sqrt(((x - mean) ** 2).mean(dim=2, keepdim=True) + self.eps)
        return mean, spread

    def restore(self, out: Tensor, mean: Tensor, spread: Tensor) -> Tensor:  # (batch, T * H * Q), normalised
        mean, spread = mean[:, self.targets], spread[:, self.targets]  # (batch, T, 1)
        return (out.reshape(out.shape[0], -1, self.steps) * spread + mean).reshape(out.shape)


def _log_mean_exp(a: Tensor) -> Tensor:
    """log(mean(exp(a), dim=0)), shifted by the maximum so that no exp overflows or underflows to 0."""
    top = a.max(dim=0).values
    return top + torch.log(torch.exp(a - top).mean(dim=0))


class EnsembleNet(_OutputBuffers):
    """Members' raw scores (M, batch, K) combined into the raw score of their averaged output, so that the
    task's outputs and its loss read it like one network's score:
    softmax: log of the averaged class probabilities (its softmax is that average, and cross-entropy on it
    is the ensemble's negative log-likelihood); sigmoid: the logit of the averaged probabilities;
    exp: the log of the averaged rates; identity: the averaged predictions. All in log space, finite at
    the confident scores trained members emit. Each member's score first passes through that member's
    output layer (OutputScale), here as stacked buffers `scale` and `shift` (members, 1, n_outputs)."""

    def __init__(self, members: list[nn.Module], combine: str, n_outputs: int, quantiles: int = 1):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.combine = combine
        self.quantiles = quantiles  # forecasts: each member's quantiles made non-crossing, then averaged
        self.register_buffer("scale", torch.ones(len(members), 1, n_outputs))
        self.register_buffer("shift", torch.zeros(len(members), 1, n_outputs))

    def forward(self, x: Tensor) -> Tensor:
        outs: list[Tensor] = []
        for member in self.members:
            outs.append(member(x))
        z = torch.stack(outs)  # (members, batch, n_outputs), per step (members, batch, n_outputs, length)
        if z.dim() == 4:
            return self._combined(z * self.scale.unsqueeze(-1) + self.shift.unsqueeze(-1))
        return self._combined(z * self.scale + self.shift)

    def scores_and_maps(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The combined score and the mean of the members' activation maps, each in its member's score units
        (networks.GlobalPooled; one pass over every member)."""
        outs: list[Tensor] = []
        maps: list[Tensor] = []
        for member in self.members:
            raw, member_maps = member.scores_and_maps(x)
            outs.append(raw)
            maps.append(member_maps)
        scaled_maps = torch.stack(maps) * self.scale.unsqueeze(-1)  # (members, batch, n_outputs, length)
        return self._combined(torch.stack(outs) * self.scale + self.shift), scaled_maps.mean(dim=0)

    def _combined(self, z: Tensor) -> Tensor:  # (members, batch, n_outputs) -> (batch, n_outputs)
        if self.combine == "softmax":
            return _log_mean_exp(torch.log_softmax(z, dim=2))
        if self.combine == "sigmoid":
            return _log_mean_exp(F.logsigmoid(z)) - _log_mean_exp(F.logsigmoid(-z))
        if self.combine == "exp":
            return _log_mean_exp(z)
        if self.combine == "forecast":
            return non_crossing(z, self.quantiles).mean(dim=0)
        return z.mean(dim=0)


def network_class(name: str) -> type[nn.Module]:
    """The network class of registry entry `name` (pipeline.settings.config.MODELS)."""
    return getattr(networks, MODELS[name].network)


def _network(c: ModelConfig) -> nn.Module:
    net = network_class(c.name).from_config(c)
    if hasattr(net, "per_step"):  # an instance attribute, so TorchScript sees it; True: a score at every step
        net.per_step = c.per_step  # (--window-label each, networks.per_step_head)
    return net


class SequenceModel(nn.Module):
    """Normalisation, the network and its output layer (or, with config.ensemble > 1, the members' networks,
    each with its output layer, and their average); input (batch, channels, length), output raw scores."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        c = config
        self.normalize = Normalize(c.normalize, c.in_channels)
        self.quantiles = c.quantiles
        self.per_step = c.per_step
        self.single = c.ensemble == 1
        if c.ensemble > 1:
            self.net = EnsembleNet([_network(c) for _ in range(c.ensemble)], c.combine, c.n_outputs, c.quantiles)
            self.output = nn.Identity()  # the members' output layers are inside EnsembleNet
        else:
            self.net = _network(c)
            self.output = OutputScale(c.n_outputs)
        # --task forecast: each window scaled by its own statistics instead of the training set's (`normalize`
        # then only keeps the training scale, which the export's verification grid draws its series at)
        self.reversible = Reversible(c.targets, c.horizon, c.quantiles) if c.horizon else None
        self.forecast_shape = (len(c.targets), c.horizon) + ((c.quantiles,) if c.quantiles > 1 else ())

    def forward(self, x: Tensor) -> Tensor:  # (batch, channels, length) -> (batch, n_outputs)
        if self.reversible is None:
            return self.output(self.net(self.normalize(x)))
        mean, spread = self.reversible.stats(x)
        z = self.net((x - mean) / spread)
        if self.single:  # one network (an ensemble's members are made non-crossing inside EnsembleNet)
            z = non_crossing(self.output(z), self.quantiles)
        return self.reversible.restore(z, mean, spread)

    @torch.jit.unused
    def network_input(self, x: Tensor) -> Tensor:
        """What the network reads: the normalised series, or a forecaster's windows each in its own scale."""
        if self.reversible is None:
            return self.normalize(x)
        mean, spread = self.reversible.stats(x)
        return (x - mean) / spread

    @torch.jit.unused
    def normalised_targets(self, x: Tensor, y: Tensor) -> Tensor:
        """A forecaster's targets (batch, T * H) in each window's units: what its network answers before restore."""
        mean, spread = self.reversible.stats(x)
        t = self.reversible.targets
        return ((y.reshape(len(y), len(t), -1) - mean[:, t]) / spread[:, t]).reshape(y.shape)

    @torch.jit.unused
    def target_spread(self, x: Tensor) -> Tensor:
        """--task forecast: each window's spread of each target channel (batch, T), the scale it forecasts in."""
        return self.reversible.stats(x)[1][:, self.reversible.targets, 0]

    def scores_and_maps(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Raw scores (batch, n_outputs) and activation maps (batch, n_outputs, length); see has_maps."""
        return scores_and_maps(self.net, self.output, self.normalize(x))


def has_maps(net: nn.Module) -> bool:
    """Whether a network (or every member of an ensemble) ends in global average pooling and a linear head, so
    that its class activation maps are exact (networks.GlobalPooled)."""
    members = net.members if isinstance(net, EnsembleNet) else [net]
    return all(isinstance(m, networks.GlobalPooled) for m in members)


def check_saliency(model: SequenceModel, name: str) -> None:
    """Saliency maps need exact activation maps (has_maps) of a model that is not a forecaster; a one-line
    refusal saying why a model has none."""
    if model.per_step:
        raise PipelineError("--saliency: a per-step model (--window-label each) already answers at every time step; "
                            "its probabilities are the map. Export without --saliency")
    if model.reversible is not None:
        raise PipelineError("--saliency: a forecast has no exact per-time-step map (each of its H x targets outputs "
                            "is restored by the window's own level and spread, which every step moves); export "
                            "without --saliency")
    if not has_maps(model.net):
        raise PipelineError(f"--saliency: {name} has no exact per-time-step map; "
                            + SALIENCY_REFUSALS.get(name, "its head does not read a global average of feature maps")
                            + "; export without --saliency, or train fcn, resnet, inception or lite")


# why a model without global average pooling has no exact activation map (docs/models.md, "Where the model looked")
SALIENCY_REFUSALS = {
    "minirocket": "its features are proportions of positive convolution outputs over the whole series (PPV), "
                  "counted, not averaged, so no map sums to them",
    "hydra": "its features count which kernel wins at each step, over the whole series, so no map sums to them",
    "multirocket-hydra": "its features are counts, maxima and longest runs over the whole series, so no map sums "
                         "to them",
    "tcn": "its head reads the features of the last time step alone, not an average over time",
    "simple-cnn": "its linear layer reads the flattened feature maps, one weight per position, not their average",
    "mlp": "its hidden layers mix every time step before the output",
    "linear": "it has no feature maps, one weight per input value",
}


def scores_and_maps(net: nn.Module, output: nn.Module, z: Tensor) -> tuple[Tensor, Tensor]:
    """A normalised input's raw scores and activation maps through the output layer: each map in its output's
    score units, so that its mean over length plus a constant (the head's bias, scaled, plus the shift) is the
    score; an ensemble's maps are its members' mean."""
    if isinstance(net, EnsembleNet):
        return net.scores_and_maps(z)
    raw, maps = net.scores_and_maps(z)
    return output(raw), maps * output.scale.unsqueeze(-1)


def _below(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def load_members(model: SequenceModel, states: list[dict]) -> SequenceModel:
    """An ensemble's weights from its members' state dicts: the members share the normalisation (fitted
    on the same training data), so the first member's is kept; each member's output layer is stacked."""
    model.normalize.load_state_dict(_below(states[0], "normalize."))
    ensemble: EnsembleNet = model.net
    for i, (member, state) in enumerate(zip(ensemble.members, states, strict=True)):
        member.load_state_dict(_below(state, "net."))
        output = OutputScale(ensemble.scale.shape[-1])
        output.load_state_dict(_below(state, "output."))  # identity for members saved before it existed
        ensemble.scale[i, 0].copy_(output.scale)
        ensemble.shift[i, 0].copy_(output.shift)
    return model


def build_model(config: ModelConfig) -> SequenceModel:
    """A fresh model for `config`; fixed-length models need config.length."""
    shortest = MODELS[config.name].min_length
    if config.fixed_length and config.length < shortest:
        raise PipelineError(f"--model {config.name} needs series of length {shortest} or more")
    return SequenceModel(config)
