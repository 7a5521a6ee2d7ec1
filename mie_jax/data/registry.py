"""The datasets ``experiments.run --dataset`` knows, behind one loader."""

from pathlib import Path
from typing import Mapping, NamedTuple, Optional, Sequence

import numpy as np

from mie_jax.data import mfeat

SPLITS = ("train", "validation", "test")


class Split(NamedTuple):
    """One split: an input array per modality (rows aligned) and the labels."""

    inputs: Mapping[str, np.ndarray]
    labels: np.ndarray


class MultimodalDataset(NamedTuple):
    name: str
    modalities: tuple
    num_classes: int
    splits: Mapping[str, Split]


def _load_mfeat(modalities, data_dir, seed):
    path = None if data_dir is None else Path(data_dir) / "mfeat.npz"
    splits = {}
    for split in SPLITS:
        arrays = mfeat.load_mfeat(modalities, split=split, seed=seed, path=path)
        labels = arrays.pop("label")
        splits[split] = Split(arrays, labels)
    return mfeat.NUM_CLASSES, splits


_LOADERS = {"mfeat": _load_mfeat}
DATASETS = tuple(_LOADERS)


def load_dataset(
    name: str, modalities: Sequence[str], *, data_dir: Optional[str] = None, seed: int = 0
) -> MultimodalDataset:
    """Loads every split of a dataset's chosen modalities.

    Args:
      name: one of ``DATASETS``.
      modalities: the modalities (for mfeat: views) to load, in training order.
      data_dir: a directory with the dataset's files; ``None`` uses the copy
        shipped with the package where there is one.
      seed: seeds the split where the dataset has no fixed one.

    Raises:
      ValueError: an unknown dataset or modality.
    """
    if name not in _LOADERS:
        raise ValueError(f"dataset must be one of {list(DATASETS)}, got {name!r}.")
    num_classes, splits = _LOADERS[name](tuple(modalities), data_dir, seed)
    return MultimodalDataset(name, tuple(modalities), num_classes, splits)
