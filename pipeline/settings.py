"""One declaration per setting: a config field carries its command-line flag (help, choices, whether
`--resume` may change it) as field metadata, so the click options, the Python API and validation read the
same field. No click and no torch here; pipeline/commands/options.py turns the flags into click options."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

FLAG = "flag"  # the metadata key


@dataclass(frozen=True)
class Flag:
    """How one config field appears on the command line."""

    help: str = ""
    name: str | None = None  # the flag; default --FIELD-NAME
    dest: str | None = None  # the option's parameter name; default the field's name
    type: type | None = None  # int, float or str when the default (None) does not tell
    choices: tuple | None = None
    kind: str = "value"  # value, file, folder, count (a whole number >= 1), switch (--x), on-off (--x/--no-x), many
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
    return kwargs
