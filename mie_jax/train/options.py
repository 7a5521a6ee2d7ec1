"""Checked config options: dataclass fields that carry their valid values, and ``--set`` value parsing.

A config section is a frozen dataclass whose fields are made with
:func:`choice`, :func:`whole`, :func:`number`, :func:`flag`, :func:`text` or
:func:`names` (plain fields are allowed and go unchecked); :func:`validate`
checks an instance and names the bad key as ``section.key`` in a one-line
error.
"""

import dataclasses
import math
from typing import Any, Mapping, Optional, Sequence

import numpy as np


def choice(default: str, choices: Sequence[str]):
    """A string field that must be one of ``choices``."""
    return dataclasses.field(default=default, metadata={"choices": tuple(choices)})


def whole(default: int, low: int, note: str = ""):
    """An integer field ``>= low``; ``note`` says what a special value means (e.g. "0: off")."""
    return dataclasses.field(default=default, metadata={"whole": (low, note)})


def number(default: Optional[float], low=None, high=None, note: str = "", optional: bool = False):
    """A finite number field within ``low`` and ``high``, each ``(bracket, bound)`` or None for open.

    ``"("`` / ``")"`` exclude the bound, ``"["`` / ``"]"`` include it; with
    ``optional`` the field may also be None.
    """
    return dataclasses.field(default=default, metadata={"number": (low, high, note, optional)})


def flag(default: bool):
    """A true/false field."""
    return dataclasses.field(default=default, metadata={"flag": True})


def text(default: str):
    """A string field (a path or a name)."""
    return dataclasses.field(default=default, metadata={"text": True})


def names(default: Sequence[str] = ()):
    """A tuple of names (e.g. modalities), given as ``a,b`` on the command line."""
    return dataclasses.field(default=tuple(default), metadata={"names": True})


def positive_epochs(default: Sequence[int] = ()):
    """A tuple of whole numbers of epochs >= 1, given as ``25,50`` on the command line."""
    return dataclasses.field(default=tuple(default), metadata={"epochs": True})


def validate(prefix: str, options) -> None:
    """Checks every checked field of the dataclass instance ``options``; normalises sequences to tuples.

    Raises:
      ValueError: one line naming ``prefix.field`` and what it must be.
    """
    for field in dataclasses.fields(options):
        name, value, meta = f"{prefix}{field.name}", getattr(options, field.name), field.metadata
        if "choices" in meta and value not in meta["choices"]:
            raise ValueError(f"{name} must be one of {list(meta['choices'])}, got {value!r}.")
        if "whole" in meta:
            _check_whole(name, value, *meta["whole"])
        if "number" in meta:
            low, high, note, optional = meta["number"]
            if not (optional and value is None):
                _check_number(name, value, low, high, note + ("; None: off" if optional else ""))
        if "flag" in meta and not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}.")
        if "text" in meta and not isinstance(value, str):
            raise ValueError(f"{name} must be a string, got {value!r}.")
        if "names" in meta:
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{name} must be a sequence of names, got {value!r}.")
            object.__setattr__(options, field.name, tuple(value))
        if "epochs" in meta:
            object.__setattr__(options, field.name, _epochs(name, value))


def parse(key: str, text_value: str, default: Any) -> Any:
    """Parses a ``--set key=value`` text as the type of the field's ``default``."""
    if isinstance(default, bool):
        if text_value.lower() in ("true", "1", "yes"):
            return True
        if text_value.lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"--set {key}=... expects true or false, got {text_value!r}.")
    if isinstance(default, Mapping) or (isinstance(default, str) and "=" in text_value):
        return _mapping(key, text_value)
    if isinstance(default, (tuple, list)):
        return tuple(item for item in text_value.split(",") if item)
    if default is None:  # Optional numbers such as sam.mix.
        return None if text_value.lower() == "none" else _number(key, text_value)
    if isinstance(default, float):
        return _number(key, text_value)
    try:
        return type(default)(text_value)
    except ValueError:
        raise ValueError(f"--set {key}=... expects a {type(default).__name__}, got {text_value!r}.") from None


def _mapping(key, text_value):
    """``a=x,b=y`` as ``{"a": "x", "b": "y"}`` (``""`` is the empty mapping)."""
    entries = {}
    for item in filter(None, text_value.split(",")):
        name, sep, value = item.partition("=")
        if not (sep and name and value):
            raise ValueError(f"--set {key}=... expects name=value entries separated by commas, got {item!r}.")
        if name in entries:
            raise ValueError(f"--set {key}=... names {name!r} twice.")
        entries[name] = value
    return entries


def _number(key, text_value):
    try:
        return float(text_value)
    except ValueError:
        raise ValueError(f"--set {key}=... expects a number, got {text_value!r}.") from None


def _epochs(name, values):
    try:
        epochs = tuple(int(e) for e in values)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must list whole numbers of epochs, e.g. 25,50, got {','.join(map(str, values))!r}."
        ) from None
    if any(e < 1 for e in epochs):
        raise ValueError(f"{name} must list epochs >= 1, got {list(epochs)}.")
    return epochs


def _check_whole(name, value, low, note=""):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be a whole number, got {value!r}.")
    if value < low:
        raise ValueError(f"{name} must be >= {low}" + (f" ({note})" if note else "") + f", got {value}.")


def _check_number(name, value, low, high, note=""):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}.")
    value = float(value)
    bounds = (f"{low[0]}{low[1]:g}" if low else "(-inf") + ", " + (f"{high[1]:g}{high[0]}" if high else "inf)")
    ok = (
        math.isfinite(value)
        and not (low and (value < low[1] or (low[0] == "(" and value == low[1])))
        and not (high and (value > high[1] or (high[0] == ")" and value == high[1])))
    )
    if not ok:
        raise ValueError(
            f"{name} must be a finite number in {bounds}" + (f" ({note})" if note else "") + f", got {value}."
        )
