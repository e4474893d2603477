"""Typed building of frozen dataclasses from YAML data, with ${VAR} substitution.

Generic: :mod:`pipeline.config` declares the structures and the semantic
checks; this module turns a parsed YAML tree into them, rejecting unknown
keys and wrong types with one line that names the file and the key.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from typing import Any

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")


# -- environment substitution --------------------------------------------------
def expand_env(value: str, where: str, env=None, error=ValueError) -> str:
    """``${VAR}`` and ``${VAR:-default}`` in ``value``; an unset variable without default is ``error``."""
    env = os.environ if env is None else env

    def repl(mt: re.Match) -> str:
        name, default = mt.group(1), mt.group(2)
        if env.get(name):
            return env[name]
        if default is not None:
            return default
        raise error(f"{where}: ${{{name}}} is not set (give it a default with ${{{name}:-value}})")

    return _VAR.sub(repl, value)


def expand_tree(data: Any, where: str, error=ValueError) -> Any:
    """:func:`expand_env` on every string of a YAML tree."""
    if isinstance(data, str):
        return expand_env(data, where, error=error)
    if isinstance(data, list):
        return [expand_tree(v, f"{where}[{i}]", error) for i, v in enumerate(data)]
    if isinstance(data, dict):
        return {k: expand_tree(v, f"{where}.{k}" if where else str(k), error) for k, v in data.items()}
    return data


# -- typed building ----------------------------------------------------------------
def _type_ok(value: Any, tp: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return True, None
        for a in args:
            if a is type(None):
                continue
            ok, v = _type_ok(value, a)
            if ok:
                return True, v
        return False, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if tp is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, str(value)  # e.g. a numeric device index
        return isinstance(value, str), value
    if tp is dict:
        return isinstance(value, dict), value
    if tp is tuple:
        if isinstance(value, str):
            return True, (value,)
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        return ok, tuple(value) if ok else value
    return False, value


def _type_name(tp: Any) -> str:
    names = {bool: "true/false", int: "an integer", float: "a number", str: "text", dict: "a mapping",
             tuple: "a list of names"}
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp) if a is not type(None)) + " (or null)"
    return names.get(tp, str(tp))


def build(cls, data: Any, where: str, file: str, error=ValueError, lists: dict | None = None):
    """An instance of the frozen dataclass ``cls`` from YAML ``data``, every key and type checked.

    ``lists`` maps a class name to ``{field: item class}`` for fields that
    hold a list of dataclasses (kept as a tuple). Errors are one ``error``
    line naming ``file`` and the key.
    """
    lists = lists or {}
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise error(f"{file}: {where or 'top level'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.name != "path"}
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in known:
            raise error(f"{file}: unknown key {path!r} (allowed: {', '.join(sorted(known))})")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = build(tp, value, path, file, error, lists)
        elif key in lists.get(cls.__name__, {}):
            if not isinstance(value, list):
                raise error(f"{file}: {path}: expected a list")
            item = lists[cls.__name__][key]
            kwargs[key] = tuple(build(item, v, f"{path}[{i}]", file, error, lists) for i, v in enumerate(value))
        else:
            ok, coerced = _type_ok(value, tp)
            if not ok:
                raise error(f"{file}: {path}: expected {_type_name(tp)}, got {value!r}")
            kwargs[key] = coerced
    return cls(**kwargs)
