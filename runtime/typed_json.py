"""Frozen dataclasses <-> JSON, checked field by field, and their JSON Schema, all from the annotations: what
runtime/manifest.py reads and writes manifest.json with (numpy-free)."""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from typing import Any, Literal

from runtime.errors import BundleError


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls, globalns=vars(sys.modules[cls.__module__]))


def dump(value):
    """A dataclass (and what it holds) as JSON values; None fields marked omit_none are left out."""
    if dataclasses.is_dataclass(value):
        out = {}
        for f in dataclasses.fields(value):
            v = getattr(value, f.name)
            if v is None and (f.metadata.get("omit_none") or getattr(value, f.metadata.get("omit_none_when", ""),
                                                                      None) is not None):
                continue
            out[f.name] = dump(v)
        return out
    if isinstance(value, dict):
        return {k: dump(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [dump(v) for v in value]
    return value


def _bad(where: str, path: str, what: str, value) -> BundleError:
    got = json.dumps(value)[:60] if not isinstance(value, _Missing) else "nothing"
    return BundleError(f"{where}: field '{path}' must be {what}, got {got}; the bundle is damaged or was not "
                       "written by pipeline export, re-export it")


class _Missing:
    pass


SAFE_INTEGER = 2 ** 53  # the integers every host's JSON parser reads exactly, as integers


def load(tp, value, where: str, version: int, path: str = ""):
    """`value` checked against the type `tp` (bundle format `version`); `path` is the dotted field name for
    messages, `where` the file."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in args:
            found = _json_type_of(value)
            if option is not type(None) and _json_type(option) in (None, found, "number" if found == "integer" else ""):
                return load(option, value, where, version, path)  # deeper problems are named where they are
        raise _bad(where, path, _describe(tp), value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _bad(where, path, "an object", value)
        hints, kwargs = _hints(tp), {}
        names = {f.name for f in dataclasses.fields(tp)}
        unknown = sorted(set(value) - names)
        if unknown:
            raise BundleError(f"{where}: field '{_join(path, unknown[0])}' is not part of bundle format "
                              f"{version}; re-export the bundle with this version of pipeline")
        for f in dataclasses.fields(tp):
            sub = _join(path, f.name)
            if f.name not in value:
                if f.default is dataclasses.MISSING:
                    raise _bad(where, sub, _describe(hints[f.name]), _Missing())
                continue
            kwargs[f.name] = load(hints[f.name], value[f.name], where, version, sub)
            extra = f.metadata.get("schema", {})
            if "minimum" in extra and kwargs[f.name] is not None and kwargs[f.name] < extra["minimum"]:
                raise _bad(where, sub, f"{_describe(hints[f.name])} >= {extra['minimum']}", kwargs[f.name])
            for key in extra.get("required", []):
                rule = extra["properties"][key]
                item = kwargs[f.name].get(key, _Missing())
                if _json_type_of(item) != "integer" or item < rule["minimum"]:
                    raise _bad(where, f"{sub}.{key}", f"an integer >= {rule['minimum']}", item)
        return tp(**kwargs)
    if origin is Literal:
        if value not in args:
            raise _bad(where, path, _describe(tp), value)
        return value
    if origin is list:
        if not isinstance(value, list):
            raise _bad(where, path, _describe(tp), value)
        return [load(args[0], v, where, version, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _bad(where, path, "an object", value)
        return {k: load(args[1], v, where, version, _join(path, k)) for k, v in value.items()}
    if tp is Any:
        return value
    checks = {int: lambda v: isinstance(v, int) and not isinstance(v, bool) and abs(v) <= SAFE_INTEGER,
              float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
              bool: lambda v: isinstance(v, bool), str: lambda v: isinstance(v, str)}
    if not checks[tp](value):
        raise _bad(where, path, _describe(tp), value)  # e.g. "an integer"
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


_A = {"integer": "an integer", "number": "a number", "string": "a string", "boolean": "true or false",
      "null": "null", "array": "a list", "object": "an object"}
_PLURAL = {"integer": "integers", "number": "numbers", "string": "strings", "boolean": "booleans", "null": "nulls",
           "array": "lists", "object": "objects"}


def _json_type(tp) -> str | None:
    """The JSON type a Python annotation stands for, or None (unions, literals, Any)."""
    names = {int: "integer", float: "number", bool: "boolean", str: "string", type(None): "null"}
    if tp in names:
        return names[tp]
    if dataclasses.is_dataclass(tp) or typing.get_origin(tp) is dict:
        return "object"
    return "array" if typing.get_origin(tp) is list else None


def _json_type_of(value) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):  # beyond 2^53 C++'s and JavaScript's parsers read a float: so does this check
        return "integer" if abs(value) <= SAFE_INTEGER else "number"
    return {float: "number", str: "string", list: "array", dict: "object", type(None): "null"}.get(type(value), "?")


def _describe(tp) -> str:
    """What a field must be, in the words the JS and C++ kits use for the same schema."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(json.dumps(a) for a in args)
    if origin is list:
        item = _json_type(args[0])
        return f"a list of {_PLURAL[item]}" if item else "a list"
    return _A.get(_json_type(tp), "any value")


def schema(tp) -> dict:
    """The JSON Schema of the type `tp`, with each dataclass's first doc line as its description."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [schema(a) for a in args]}
    if dataclasses.is_dataclass(tp):
        hints = _hints(tp)
        properties = {}
        for f in dataclasses.fields(tp):
            prop = schema(hints[f.name])
            extra = dict(f.metadata.get("schema", {}))
            if extra:
                prop.update(extra)
            properties[f.name] = prop
        required = [f.name for f in dataclasses.fields(tp) if f.default is dataclasses.MISSING]
        return {"type": "object", "description": (tp.__doc__ or "").strip().splitlines()[0],
                "properties": properties, "required": required, "additionalProperties": False}
    if origin is Literal:
        return {"enum": list(args)}
    if origin is list:
        return {"type": "array", "items": schema(args[0])}
    if origin is dict:
        return {"type": "object", "additionalProperties": schema(args[1])}
    if tp is Any:
        return {}
    return {"type": {int: "integer", float: "number", bool: "boolean", str: "string", type(None): "null"}[tp]}
