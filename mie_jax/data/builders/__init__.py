"""TFDS builders for the paper's datasets, read from the files their authors publish.

  builder = prepare(builder_class("sarcasm"), raw_dir, prepared_dir)
  train = read_split(builder, "train", ("image", "text", "label"))

Importing this package is cheap: TensorFlow Datasets loads with the first
builder or function used (``prepare``, ``read_split``, ...), so code that
never reads a paper dataset never needs it.
"""

import importlib

# Dataset name -> (module, class).
_BUILDERS = {
    "cremad": ("cremad", "CremaD"),
    "kinetics_sounds": ("kinetics_sounds", "KineticsSounds"),
    "twitter2015": ("twitter2015", "Twitter2015"),
    "sarcasm": ("sarcasm", "Sarcasm"),
    "nvgesture": ("nvgesture", "NVGesture"),
}
PAPER_DATASETS = tuple(_BUILDERS)
_FROM_BASE = (
    "DataLayoutError",
    "MediaConfig",
    "PaperBuilder",
    "prepare",
    "preparation_notes",
    "preparation_settings",
    "read_split",
    "split_counts",
)


def builder_class(name: str) -> type:
    """The :class:`PaperBuilder` subclass of one of ``PAPER_DATASETS``."""
    if name not in _BUILDERS:
        raise ValueError(f"dataset must be one of {list(PAPER_DATASETS)}, got {name!r}.")
    module, cls = _BUILDERS[name]
    return getattr(importlib.import_module(f"mie_jax.data.builders.{module}"), cls)


def __getattr__(name: str):
    if name in _FROM_BASE:
        return getattr(importlib.import_module("mie_jax.data.builders.base"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["PAPER_DATASETS", "builder_class", *_FROM_BASE]
