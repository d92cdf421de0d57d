"""One validator from YAML values to dataclass fields: the config tree, cluster profiles, job resources.

    coerce("4", int, from_text=True)                  # 4 (a command line's text, parsed by the field's type)
    coerce(True, int, strict=True)                    # Mismatch("an integer")
    coerce(0, int, strict=True, low=1)                # Mismatch("an integer >= 1")

The caller names the key and the file, this module says what the field takes (`Mismatch.expected`),
so every layer's message reads "<file>: <key> ... expected/must be <what>, got <value>".

Two modes. The config tree (`strict=False`) reads YAML 1.1 and command lines, so it accepts numbers
written as text ("1e-4", "1_000"), a whole float for an int and yes/no/on/off for a bool. Profiles and
resources (`strict=True`) are written by hand once per cluster and only ever come from YAML: a value
of another type is a mistake to name, not to convert.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable
from typing import Any, Literal

import yaml

_TRUE = ("true", "yes", "1", "on")
_FALSE = ("false", "no", "0", "off")


class Mismatch(ValueError):
    """A value the field does not take; `expected` says what it takes ("an integer >= 1", "float")."""

    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


def field_types(cls: type) -> dict[str, Any]:
    """The resolved annotation of each field of the dataclass `cls`."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def describe(tp: Any, strict: bool = False, low: float | None = None) -> str:
    """What a field of annotation `tp` takes, in words (the config's terse type names unless strict)."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        item = typing.get_args(tp)[0]
        return "a list of strings" if strict and item is str else f"a list of {describe(item, strict)}"
    if strict:
        words = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
        text = words.get(tp, getattr(tp, "__name__", str(tp)))
    else:
        text = getattr(tp, "__name__", str(tp))
    return text if low is None else f"{text} >= {low:g}"


def coerce(value: Any, tp: Any, from_text: bool = False, strict: bool = False, low: float | None = None) -> Any:
    """`value` as the field of annotation `tp` holds it; raises Mismatch saying what the field takes.

    `from_text`: the value is a command line's text, parsed by the field's type (lists as YAML).
    `low`: the smallest number the field takes."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return _literal(value, tp, strict)
    if origin in (list, tuple):
        return _sequence(value, tp, from_text, strict)
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unsupported annotation {tp}")  # the trees use none; keep it so
    scalar = _SCALARS.get(tp)
    if scalar is None:
        raise TypeError(f"unsupported annotation {tp}")
    out = scalar(value, strict)
    if out is None:
        raise Mismatch(describe(tp, strict, low))
    if low is not None and out < low:
        raise Mismatch(describe(tp, strict, low))
    return out


def _literal(value: Any, tp: Any, strict: bool) -> Any:
    for choice in typing.get_args(tp):
        if value == choice:
            return choice
        # Case-insensitive in the config tree (`attn`/`ATTN`); a number typed where text is expected
        # only matches text exactly.
        if not strict and isinstance(value, str) and value.lower() == str(choice).lower():
            return choice
    raise Mismatch(describe(tp, strict))


def _sequence(value: Any, tp: Any, from_text: bool, strict: bool) -> Any:
    item_tp = typing.get_args(tp)[0]  # list[X] or tuple[X, ...]
    if from_text and isinstance(value, str):
        parsed = yaml.safe_load(value) if value.strip() else []
        value = parsed if isinstance(parsed, list) else [value]
    if not isinstance(value, list):
        raise Mismatch(describe(tp, strict))
    # Strict lists of strings still take numbers (a module version 12.1, a queue named 2: YAML reads
    # them as numbers); a strict string field does not (a typo there is more likely than a number).
    strict_items = strict and item_tp is not str
    items = []
    for i, item in enumerate(value):
        try:
            items.append(coerce(item, item_tp, from_text, strict_items))
        except Mismatch:
            what = describe(item_tp, strict)
            raise Mismatch(f"{describe(tp, strict)} (item {i}: {item!r} is not {what})") from None
    return tuple(items) if typing.get_origin(tp) is tuple else items


# One function per scalar type: the value as the field holds it, or None when it does not fit.


def _as_bool(value: Any, strict: bool) -> bool | None:
    if isinstance(value, bool):
        return value
    if not strict and isinstance(value, str) and value.lower() in (*_TRUE, *_FALSE):
        return value.lower() in _TRUE
    return None


def _as_int(value: Any, strict: bool) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if strict:
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            number = float(value.replace("_", ""))
        except ValueError:
            return None
        if number.is_integer():
            return int(number)
    return None


def _as_float(value: Any, strict: bool) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if not strict and isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads "1e-4" as a string; accept it as a number
        except ValueError:
            return None
    return None


def _as_str(value: Any, strict: bool) -> str | None:
    if isinstance(value, str):
        return value
    if not strict and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


_SCALARS: dict[Any, Callable[[Any, bool], Any]] = {bool: _as_bool, int: _as_int, float: _as_float, str: _as_str}


def positive_number(value: Any) -> float:
    """A finite number > 0 (a memory size, a rate): a Mismatch otherwise."""
    number = _as_float(value, strict=True)
    if number is None or not 0 < number < math.inf:
        raise Mismatch("a positive number")
    return number
