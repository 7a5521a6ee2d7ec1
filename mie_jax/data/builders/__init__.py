"""TFDS builders for the paper's datasets, read from the files their authors publish.

  builder = prepare(builder_class("sarcasm"), raw_dir, prepared_dir)
  train = read_split(builder, "train", ("image", "text", "label"))
"""

import importlib

from mie_jax.data.builders.base import DataLayoutError, MediaConfig, PaperBuilder, prepare, read_split, split_counts

# Dataset name -> (module, class); imported on first use so that a dataset's
# decoders (OpenCV for video) load only when it is asked for.
_BUILDERS = {
    "cremad": ("cremad", "CremaD"),
    "kinetics_sounds": ("kinetics_sounds", "KineticsSounds"),
    "twitter2015": ("twitter2015", "Twitter2015"),
    "sarcasm": ("sarcasm", "Sarcasm"),
    "nvgesture": ("nvgesture", "NVGesture"),
}
PAPER_DATASETS = tuple(_BUILDERS)


def builder_class(name: str) -> type:
    """The :class:`PaperBuilder` subclass of one of ``PAPER_DATASETS``."""
    if name not in _BUILDERS:
        raise ValueError(f"dataset must be one of {list(PAPER_DATASETS)}, got {name!r}.")
    module, cls = _BUILDERS[name]
    return getattr(importlib.import_module(f"mie_jax.data.builders.{module}"), cls)


__all__ = ["DataLayoutError", "MediaConfig", "PAPER_DATASETS", "PaperBuilder", "builder_class", "prepare",
           "read_split", "split_counts"]
