"""The datasets ``experiments.run --dataset`` knows, behind one loader."""

from pathlib import Path
from typing import Mapping, NamedTuple, Optional, Sequence

import numpy as np

from mie_jax.data import emoji, mfeat
from mie_jax.models import bert

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


def _load_mfeat(modalities, data_dir, seed, text_dir):
    del text_dir  # No text.
    path = None if data_dir is None else Path(data_dir) / "mfeat.npz"
    splits = {}
    for split in SPLITS:
        arrays = mfeat.load_mfeat(modalities, split=split, seed=seed, path=path)
        labels = arrays.pop("label")
        splits[split] = Split(arrays, labels)
    return mfeat.NUM_CLASSES, splits


def _load_emoji(modalities, data_dir, seed, text_dir):
    """Images as float32 in [0, 1]; names as WordPiece ids of the text encoder's tokenizer."""
    del seed  # The prepared file holds its fixed split.
    if data_dir is None:
        raise ValueError(
            "--data-dir must name a directory with emoji.npz; make it with "
            "`python -m mie_jax.data.emoji DIR` (needs apt-get install unicode-data fonts-noto-color-emoji)."
        )
    unknown = sorted(set(modalities) - {"image", "text"})
    if unknown:
        raise ValueError(f"emoji has the modalities ['image', 'text'], got unknown {unknown}.")
    tokenizer = bert.load_tokenizer(text_dir or bert.default_minilm_dir())
    splits = {}
    for split in SPLITS:
        arrays = emoji.load_emoji(data_dir, split=split)
        inputs = {"image": arrays["image"],
                  "text": bert.tokenize(tokenizer, arrays["text"], EMOJI_TEXT_LENGTH)[0]}
        splits[split] = Split({m: inputs[m] for m in modalities}, arrays["label"])
    return len(emoji.GROUPS), splits


# Emoji names are short: 24 WordPiece tokens hold every one of them with [CLS] and [SEP].
EMOJI_TEXT_LENGTH = 24
_LOADERS = {"mfeat": _load_mfeat, "emoji": _load_emoji}
DATASETS = tuple(_LOADERS)


def load_dataset(
    name: str,
    modalities: Sequence[str],
    *,
    data_dir: Optional[str] = None,
    seed: int = 0,
    text_dir: Optional[str] = None,
) -> MultimodalDataset:
    """Loads every split of a dataset's chosen modalities.

    Args:
      name: one of ``DATASETS``.
      modalities: the modalities (for mfeat: views) to load, in training order.
      data_dir: a directory with the dataset's files; ``None`` uses the copy
        shipped with the package where there is one.
      seed: seeds the split where the dataset has no fixed one.
      text_dir: the Hugging Face directory whose tokenizer encodes text
        (``None``: all-MiniLM-L6-v2's).

    Raises:
      ValueError: an unknown dataset or modality.
    """
    if name not in _LOADERS:
        raise ValueError(f"dataset must be one of {list(DATASETS)}, got {name!r}.")
    num_classes, splits = _LOADERS[name](tuple(modalities), data_dir, seed, text_dir)
    return MultimodalDataset(name, tuple(modalities), num_classes, splits)
