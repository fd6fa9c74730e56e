"""One declaration per setting: a config field carries its command-line flag (help, choices, whether
`--resume` may change it) as field metadata, so the click options, the Python API and validation read the
same field. No click and no torch here; pipeline/commands/options.py turns the flags into click options."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.errors import PipelineError

FLAG = "flag"  # the metadata key


@dataclass(frozen=True)
class Flag:
    """How one config field appears on the command line."""

    help: str = ""
    name: str | None = None  # the flag; default --FIELD-NAME
    dest: str | None = None  # the option's parameter name; default the field's name
    type: type | None = None  # int, float or str when the default (None) does not tell
    choices: tuple | None = None
    kind: str = "value"  # value, file, folder, data (a file, or a folder of recordings), count (a whole number >= 1), switch (--x), on-off (--x/--no-x), many
    metavar: str | None = None
    show_default: bool = True
    unset: bool = False  # the flag's default is None: the value is decided later (the model's recipe, the data)
    flag_value: Any = None  # the value of the flag given without one (e.g. --tensorboard alone)
    resumable: bool = False  # `--resume` may change it
    parse: Callable[[Any], Any] | None = None  # the option's value -> the field's (e.g. '1,2' -> (1.0, 2.0))
    required: bool = False  # the command needs it (the field's default serves the Python API only)

    def option_name(self, field: dataclasses.Field) -> str:
        return self.name or "--" + field.name.replace("_", "-")

    def option_dest(self, field: dataclasses.Field) -> str:
        return self.dest or field.name


def setting(default: Any = None, **flag: Any) -> Any:
    """A config field that users set: its default, and its flag (see Flag)."""
    return dataclasses.field(default=default, metadata={FLAG: Flag(**flag)})


def flagged(cls) -> list[tuple[dataclasses.Field, Flag]]:
    """The fields of config class `cls` that users set, in declaration order, with their flags."""
    return [(f, f.metadata[FLAG]) for f in dataclasses.fields(cls) if FLAG in f.metadata]


def values(cls, given: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of `cls` from the options' values (by option name), each parsed by its flag; an
    unset flag left at None is left out, so the field's own default (or a later decision) applies."""
    kwargs = {}
    for f, flag in flagged(cls):
        value = given[flag.option_dest(f)]
        if flag.unset and value is None:
            continue
        kwargs[f.name] = flag.parse(value) if flag.parse is not None and value is not None else value
        check_finite(flag.option_name(f), kwargs[f.name])
    return kwargs


def check_finite(name: str, value: Any) -> None:
    """A number (or each number of a list) of a setting is finite: NaN and infinity are refused by name."""
    for v in value if isinstance(value, (tuple, list)) else (value,):
        if isinstance(v, float) and not math.isfinite(v):
            raise PipelineError(f"{name} {v}: must be a finite number")


def api_name(field: dataclasses.Field, flag: Flag) -> str:
    """The keyword the Python API takes for a setting: its flag without the dashes (--model -> model,
    --huber-delta -> huber_delta), so the CLI's names carry over."""
    return flag.option_name(field)[2:].replace("-", "_")


def _python_value(flag: Flag, value: Any) -> Any:
    """A Python value as the field holds it: text as the command line would give it (parsed by the flag),
    lists as tuples, one number for a per-label weight as a one-element tuple, a dict of custom loss
    arguments as NAME=VALUE pairs."""
    if flag.kind == "many":
        if isinstance(value, dict):
            return tuple((str(k), v if isinstance(v, str) else json.dumps(v)) for k, v in value.items())
        items = tuple(value)
        return flag.parse(items) if flag.parse is not None and all(isinstance(v, str) for v in items) else items
    if isinstance(value, str) and flag.parse is not None:
        return flag.parse(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return tuple(float(v) for v in value)
    if flag.parse is not None and flag.type is str and isinstance(value, (int, float)) \
            and not isinstance(value, bool):
        return (float(value),)  # a list of numbers given as one: pos_weight=2 -> (2.0,)
    return value


_KINDS = {  # a field's annotated type -> (the values it takes, how a message says it)
    "bool": (lambda v: isinstance(v, bool), "True or False"),
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool) or type(v).__module__ == "numpy"
            and type(v).__name__.startswith(("int", "uint")), "a whole number"),
    "float": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) or type(v).__module__ == "numpy"
              and type(v).__name__.startswith(("int", "uint", "float")), "a number"),
    "str": (lambda v: isinstance(v, str), "text"),
}


def check_type(field: dataclasses.Field, flag: Flag, value: Any) -> None:
    """A Python value for a setting is of the type its field declares (None where the field allows it); a
    PipelineError names the keyword, the value and the command line's flag."""
    kinds = [part.strip() for part in str(field.type).split("|")]
    if value is None and "None" in kinds:
        return
    known = [_KINDS[k] for k in kinds if k in _KINDS]
    tuples = any(k.startswith("tuple") for k in kinds)
    if not known and not tuples:
        return
    if any(accepts(value) for accepts, _ in known) or (tuples and isinstance(value, tuple)):
        return
    said = [what for _, what in known] + (["a list"] if tuples else []) + (["None"] if "None" in kinds else [])
    raise PipelineError(f"{api_name(field, flag)}={value!r}: must be {' or '.join(said)} (the command line's "
                     f"{flag.option_name(field)})")


def from_python(cls, given: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of config class `cls` from the Python API's keywords (see api_name), each of its
    field's type (check_type); the keywords used are removed from `given`."""
    kwargs = {}
    for f, flag in flagged(cls):
        name = api_name(f, flag)
        if name in given:
            value = _python_value(flag, given.pop(name))
            if type(value).__module__ == "numpy" and hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
                value = value.item()  # numpy's scalars (a grid search's values) as the Python numbers they hold
            check_type(f, flag, value)
            check_finite(name, value)
            kwargs[f.name] = value
    return kwargs
