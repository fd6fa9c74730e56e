"""Click options generated from the config fields' flags (pipeline/settings/fields.py): one declaration each."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from pipeline.settings.fields import Flag, flagged


class NamedPath(click.Path):
    """click.Path that refuses an empty name (Path('') is the working folder: --out '' would write there)."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            self.fail("an empty path; give a file or folder name", param, ctx)
        return super().convert(value, param, ctx)


class ShortChoice(click.Choice):
    """click.Choice whose refusal shows at most 60 characters of the value given (it echoed all of it)."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and len(value) > 60 and value not in self.choices:
            self.fail(f"{value[:60]!r}... is not one of {', '.join(map(repr, self.choices))}", param, ctx)
        return super().convert(value, param, ctx)


def _click_type(field: dataclasses.Field, flag: Flag):
    if flag.choices is not None:
        return ShortChoice(flag.choices)
    if flag.kind == "file":
        return NamedPath(dir_okay=False, path_type=Path)
    if flag.kind == "data":  # a data file, or (train --window) a folder of recordings; the readers say which
        return NamedPath(path_type=Path)
    if flag.kind == "folder":
        return NamedPath(file_okay=False, path_type=Path)
    if flag.kind == "count":
        return click.IntRange(min=1)
    if flag.kind == "many" and flag.choices is None and flag.type is None:
        return None
    if flag.type is not None:
        return flag.type
    return None if field.default is None else type(field.default)


def option(field: dataclasses.Field, flag: Flag):
    """The click option of one flagged config field."""
    name, dest = flag.option_name(field), flag.option_dest(field)
    common = {"help": flag.help, "metavar": flag.metavar}
    if flag.kind == "switch":
        # the flag turns the default over (--no-memory: memory True -> False)
        return click.option(name, dest, is_flag=True, default=field.default, flag_value=not field.default, **common)
    if flag.kind == "on-off":
        return click.option(f"{name}/--no-{name[2:]}", dest, default=field.default, **common)
    if flag.kind == "many":
        return click.option(name, dest, multiple=True, type=_click_type(field, flag), **common)
    if flag.required:
        return click.option(name, dest, type=_click_type(field, flag), required=True, **common)
    extra = {} if flag.flag_value is None else {"is_flag": False, "flag_value": flag.flag_value}
    return click.option(name, dest, type=_click_type(field, flag), default=None if flag.unset else field.default,
                        show_default=flag.show_default and not flag.unset and field.default is not None, **common,
                        **extra)


def config_options(*classes):
    """Decorate a click command with the options of every flagged field of `classes`, in declaration order."""
    def decorate(fn):
        for cls in reversed(classes):
            for field, flag in reversed(flagged(cls)):
                fn = option(field, flag)(fn)
        return fn

    return decorate


def resumable_flags(*classes) -> tuple[str, ...]:
    """The flags of `classes` that `--resume` may change."""
    return tuple(flag.option_name(f) for cls in classes for f, flag in flagged(cls) if flag.resumable)
