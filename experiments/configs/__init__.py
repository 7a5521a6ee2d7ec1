"""Per-dataset configs: each module's ``get_config()`` returns the values that differ from the defaults.

Values are nested as :func:`mie_jax.train.make_config` reads them: top-level keys
(``modalities``) and ``{section: {key: value}}``.
"""

import importlib
from typing import Any, Mapping

from mie_jax.data.registry import DATASETS


def get_config(dataset: str) -> dict:
    """The config values of ``dataset`` (``experiments/configs/<dataset>.py``).

    Raises:
      ValueError: no such dataset (the message lists the known ones).
    """
    if dataset not in DATASETS:
        raise ValueError(f"--dataset must be one of {list(DATASETS)}, got {dataset!r}.")
    return importlib.import_module(f"experiments.configs.{dataset}").get_config()


def merge(*trees: Mapping[str, Any]) -> dict:
    """The nested config values of ``trees``, later ones winning key by key inside each section."""
    merged: dict = {}
    for tree in trees:
        for key, value in tree.items():
            if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
                merged[key] = merge(merged[key], value)
            else:
                merged[key] = value
    return merged
