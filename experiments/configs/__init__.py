"""Per-dataset configs: each module's ``get_config()`` returns TrainConfig values."""

import importlib

from mie_jax.data.registry import DATASETS


def get_config(dataset: str) -> dict:
    """The config values of ``dataset`` (``experiments/configs/<dataset>.py``).

    Raises:
      ValueError: no such dataset (the message lists the known ones).
    """
    if dataset not in DATASETS:
        raise ValueError(f"--dataset must be one of {list(DATASETS)}, got {dataset!r}.")
    return importlib.import_module(f"experiments.configs.{dataset}").get_config()
