"""Argument checks shared by the public functions: one-line, named errors."""

import jax
import numpy as np


def _concrete_float(value):
    """The value as a float, or None when it is traced (checked only eagerly)."""
    if isinstance(value, jax.core.Tracer):
        return None
    return float(np.asarray(value))


def non_negative(name: str, value) -> None:
    number = _concrete_float(value)
    if number is not None and not number >= 0:
        raise ValueError(f"{name} must be >= 0, got {number}.")


def positive(name: str, value) -> None:
    number = _concrete_float(value)
    if number is not None and not number > 0:
        raise ValueError(f"{name} must be > 0, got {number}.")


def choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}.")
