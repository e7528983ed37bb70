"""Strict structuring of plain TOML values into attrs config classes.

cattrs' defaults are lenient (``int("3")`` and ``int(3.7)`` both succeed); a
plan is a research record, so here a wrong type is an error, an unknown key is
an error, and every message is one line that names the key.
"""

from __future__ import annotations

import collections.abc
import math
import re
import types
import typing
from typing import Any

import attrs
import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

from paperkit.errors import PlanError, did_you_mean

_TYPE_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


#: The largest integer a plan may hold: what torch, NumPy and the platform's C integers all accept.
MAX_INT = 2**63 - 1


def _strict(kind: type):
    def hook(value: Any, _type: Any) -> Any:
        if isinstance(value, bool) and kind is not bool:
            raise TypeError(f"expected {_TYPE_NAMES[kind]}, got {value!r}")
        if kind is float and isinstance(value, int):
            if abs(value) > MAX_INT:
                raise TypeError(f"expected {_TYPE_NAMES[kind]} of a usable size, got {value}")
            return float(value)
        if not isinstance(value, kind):
            raise TypeError(f"expected {_TYPE_NAMES[kind]}, got {_describe(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise TypeError(f"expected a finite number, got {value}")
        if isinstance(value, int) and abs(value) > MAX_INT:
            raise TypeError(f"expected an integer of at most {MAX_INT}, got {value}")
        return value

    return hook


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True)
    for kind in (int, float, bool, str):
        converter.register_structure_hook(kind, _strict(kind))
    return converter


CONVERTER = _make_converter()


def structure(cls: type, options: dict[str, Any], where: str) -> Any:
    """Build ``cls(**options)`` strictly; raise one :class:`PlanError` naming the key.

    ``where`` is the ``file: [table]`` prefix; the key is appended.
    """
    if not isinstance(options, dict):
        raise PlanError(f"expected a table, got {_describe(options)}", where)
    problem = _string_for_collection(cls, options)
    if problem:
        raise PlanError(problem[1], f"{where} {problem[0]}")
    try:
        return CONVERTER.structure(options, cls)
    except Exception as exc:  # cattrs wraps validator and type errors in groups
        key, message = first_problem(exc, cls)
        raise PlanError(message, f"{where} {key}".rstrip() if key else where) from None


_COLLECTIONS = (
    list,
    tuple,
    set,
    frozenset,
    collections.abc.Sequence,
    collections.abc.MutableSequence,
    collections.abc.Set,
    collections.abc.Iterable,
    collections.abc.Collection,
)


def _string_for_collection(cls: type, options: dict[str, Any], prefix: str = "") -> tuple[str, str] | None:
    """A string or table given where a list belongs, as (dotted key, message).

    cattrs would iterate a string into its characters (``"blocks"`` becoming
    ``['b', 'l', ...]``), which no validator downstream can tell from a real list.
    """
    if not attrs.has(cls):
        return None
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # a plugin's annotations may name types only imported for type checkers
        hints = {}
    for field in attrs.fields(cls):
        if field.name not in options:
            continue
        value, tp = options[field.name], hints.get(field.name, field.type)
        args = (
            [a for a in typing.get_args(tp) if a is not type(None)]
            if typing.get_origin(tp) in (typing.Union, types.UnionType)
            else [tp]
        )
        collection = any(typing.get_origin(a) in _COLLECTIONS or a in _COLLECTIONS for a in args)
        if collection and isinstance(value, (str, dict, int, float)):
            if not any(isinstance(a, type) and isinstance(value, a) for a in args):
                return (prefix + field.name, f"expected a list, got {_describe(value)}")
        fixed = [typing.get_args(a) for a in args if typing.get_origin(a) is tuple]
        fixed = [t for t in fixed if t and t[-1] is not Ellipsis]
        if fixed and isinstance(value, list) and all(len(value) != len(t) for t in fixed):
            wanted = " or ".join(str(len(t)) for t in fixed)
            return (prefix + field.name, f"expected a list of {wanted} values, got {len(value)}: {value}")
        for a in args:
            if isinstance(a, type) and attrs.has(a) and isinstance(value, dict):
                found = _string_for_collection(a, value, f"{prefix}{field.name}.")
                if found:
                    return found
    return None


def first_problem(exc: BaseException, cls: type | None) -> tuple[str, str]:
    """The first leaf error in a cattrs exception group, as (dotted key, message)."""
    return _walk(exc, cls, "")


def _walk(exc: BaseException, cls: type | None, prefix: str) -> tuple[str, str]:
    if isinstance(exc, ForbiddenExtraKeysError):
        extra = sorted(exc.extra_fields)[0]
        fields = [f.name for f in attrs.fields(exc.cl)] if attrs.has(exc.cl) else []
        known = f" (known keys: {', '.join(fields)})" if fields and not did_you_mean(extra, fields) else ""
        return (prefix + extra, f"unknown key{did_you_mean(extra, fields)}{known}")
    if isinstance(exc, (ClassValidationError, IterableValidationError)):
        for inner in exc.exceptions:
            name = _note_name(inner)
            if not name:
                return _walk(inner, None, prefix)
            nested = (
                f"{prefix.rstrip('.')}{name}." if name.startswith("[") else f"{prefix}{name}."
            )  # betas[0], not betas.[0]
            return _walk(inner, _field_type(cls, name), nested)
    # attrs' in_ validator raises ValueError(message, attribute, options, value): keep the message
    text = exc.args[0] if len(exc.args) > 1 and isinstance(exc.args[0], str) else str(exc)
    message = text.splitlines()[0] if text else type(exc).__name__
    if isinstance(exc, KeyError):
        message = "missing required key"
    named = _VALIDATOR_MESSAGE.match(message)
    if named:  # attrs validators say "'lr' must be > 0.0: -0.1"
        name, rest = named.groups()
        rest, _, got = rest.rpartition(": ") if ": " in rest else (rest, "", "")
        return (prefix + name, f"{rest} (got {got})" if got else rest)
    return (prefix.rstrip("."), message)


_VALIDATOR_MESSAGE = re.compile(r"^'(\w+)' (.*)$")


def _note_name(exc: BaseException) -> str:
    for note in getattr(exc, "__notes__", []) or []:
        name = getattr(note, "name", None)
        if name is None:
            index = getattr(note, "index", None)
            if isinstance(index, int):  # a plain string note has a str.index method, not a position
                return f"[{index}]"
            continue
        return str(name)
    return ""


def _field_type(cls: type | None, name: str) -> type | None:
    if cls is None or not attrs.has(cls):
        return None
    for field in attrs.fields(cls):
        if field.name == name and isinstance(field.type, type) and attrs.has(field.type):
            return field.type
    return None


def unstructure(config: Any) -> dict[str, Any]:
    """A config instance as plain TOML-friendly values (for resolved plans)."""
    if config is None:
        return {}
    return CONVERTER.unstructure(config)


def describe_fields(cls: type | None) -> list[dict[str, Any]]:
    """Schema rows (name, type, default, help) for ``paperkit show`` and the docs."""
    if cls is None:
        return []
    rows = []
    hints = typing.get_type_hints(cls) if attrs.has(cls) else {}
    for field in attrs.fields(cls):
        default = field.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            default = default.factory()
        elif default is attrs.NOTHING:
            default = "(required)"
        rows.append(
            {
                "name": field.name,
                "type": _type_name(hints.get(field.name, field.type)),
                "default": default,
                "help": field.metadata.get("help", ""),
            }
        )
    return rows


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")
