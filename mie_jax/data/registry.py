"""The datasets ``experiments.run --dataset`` knows, behind one loader."""

import dataclasses
from pathlib import Path
from typing import Mapping, NamedTuple, Optional, Sequence

import numpy as np

from mie_jax.data import builders, columns, emoji, mfeat, prepare, prepared_arrays, splits
from mie_jax.data.splits import SPLITS
from mie_jax.data import text


class Split(NamedTuple):
    """One split: an input column per modality (rows aligned) and the labels.

    A column is a numpy array or anything that reads rows by index
    (:mod:`mie_jax.data.columns`); labels are always a numpy array.
    """

    inputs: Mapping[str, np.ndarray]
    labels: np.ndarray


class MultimodalDataset(NamedTuple):
    name: str
    modalities: tuple
    num_classes: int
    splits: Mapping[str, Split]


def check_dataset(dataset: MultimodalDataset) -> None:
    """Refuses a dataset the trainer would misread.

    Raises:
      ValueError: naming the dataset, split and modality: a missing split or
        modality, a modality whose row count differs from the labels', or a
        label outside ``[0, num_classes)``.
    """
    for split in SPLITS:
        if split not in dataset.splits:
            raise ValueError(f"{dataset.name}: no {split!r} split; expected {list(SPLITS)}.")
        inputs, labels = dataset.splits[split]
        for modality in dataset.modalities:
            if modality not in inputs:
                raise ValueError(f"{dataset.name} {split}: no inputs for modality {modality!r}.")
            if len(inputs[modality]) != len(labels):
                raise ValueError(
                    f"{dataset.name} {split}: modality {modality!r} has {len(inputs[modality])} rows "
                    f"but there are {len(labels)} labels; every modality needs one row per example."
                )
        labels = np.asarray(labels)
        if labels.size and (labels.min() < 0 or labels.max() >= dataset.num_classes):
            raise ValueError(
                f"{dataset.name} {split}: labels must lie in [0, {dataset.num_classes}), "
                f"found {labels.min()} to {labels.max()}."
            )


@dataclasses.dataclass(frozen=True)
class LoadOptions:
    """How a dataset is read, beyond its name and modalities.

    Attributes:
      data_dir: a directory with the dataset's files; ``None`` uses the copy
        shipped with the package where there is one.
      seed: seeds the split where the dataset has no fixed one.
      text_dir: the Hugging Face directory whose tokenizer encodes text
        (``None``: all-MiniLM-L6-v2's).
      prepared_dir: where the paper datasets' builders write their prepared
        copy (``None``: ``<data_dir>/prepared``).
      image_size: decoded image and frame size of the paper datasets (0: the
        builder's default, 224; 112 for NVGesture).
      num_frames: frames per video clip (0: the builder's default).
      text_length: token ids per text, [CLS] and [SEP] included (0: the
        dataset's default).
    """

    data_dir: Optional[str] = None
    seed: int = 0
    text_dir: Optional[str] = None
    prepared_dir: Optional[str] = None
    image_size: int = 0
    num_frames: int = 0
    text_length: int = 0


def _load_mfeat(modalities, options):
    data_dir, seed = options.data_dir, options.seed
    path = None if data_dir is None else Path(data_dir) / "mfeat.npz"
    splits = {}
    for split in SPLITS:
        arrays = mfeat.load_mfeat(modalities, split=split, seed=seed, path=path)
        labels = arrays.pop("label")
        splits[split] = Split(arrays, labels)
    return mfeat.NUM_CLASSES, splits


def _load_emoji(modalities, options):
    """Images as float32 in [0, 1]; names as WordPiece ids of the text encoder's tokenizer."""
    data_dir = options.data_dir  # The prepared file holds its fixed split: no seed.
    if data_dir is None:
        raise ValueError(
            "--data-dir must name a directory with emoji.npz; make it with "
            "`python -m mie_jax.data.emoji DIR` (needs apt-get install unicode-data fonts-noto-color-emoji)."
        )
    unknown = sorted(set(modalities) - {"image", "text"})
    if unknown:
        raise ValueError(f"emoji has the modalities ['image', 'text'], got unknown {unknown}.")
    tokenizer = text.load_tokenizer(options.text_dir or text.default_minilm_dir())
    splits = {}
    for split in SPLITS:
        arrays = emoji.load_emoji(data_dir, split=split)
        inputs = {
            "image": arrays["image"],
            "text": text.tokenize(tokenizer, arrays["text"], options.text_length or EMOJI_TEXT_LENGTH)[0],
        }
        splits[split] = Split({m: inputs[m] for m in modalities}, arrays["label"])
    return len(emoji.GROUPS), splits


def _load_paper(name, modalities, options):
    """A paper dataset from its published files, prepared once by its TFDS builder.

    Every array modality is a :class:`~mie_jax.data.columns.NpyColumn` over
    a file written once beside the prepared copy
    (:mod:`mie_jax.data.prepared_arrays`): batches are read when the trainer
    asks for them, so host memory does not grow with the split. Images and
    frames stay uint8 (the encoders scale them to [0, 1]); spectrograms get a
    channel axis; text becomes WordPiece ids (small, kept in memory). Datasets prepared
    without a validation split (CREMA-D, NVGesture, and Kinetics-Sounds unless
    BML's ``KS_train_val.json`` was there) hold out ``VALIDATION_FRACTION`` of
    every training class, chosen by ``options.seed``; the test split is the
    published one.
    """
    cls = builders.builder_class(name)
    if options.data_dir is None:
        raise ValueError(f"--data-dir must name the directory of {name}'s files. {cls.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    unknown = sorted(set(modalities) - set(cls.MODALITIES))
    if unknown:
        raise ValueError(f"{name} has the modalities {list(cls.MODALITIES)}, got unknown {unknown}.")
    prepared_dir = options.prepared_dir or prepare.default_prepared_dir(options.data_dir)
    builder = builders.prepare(
        cls, options.data_dir, prepared_dir, image_size=options.image_size, num_frames=options.num_frames
    )
    features = builder.info.features
    text_length = options.text_length or PAPER_TEXT_LENGTH
    tokenizer = None
    if "text" in modalities:
        tokenizer = text.load_tokenizer(options.text_dir or text.default_minilm_dir())

    def column(path, field):
        if field == "text":  # Token ids are small: the whole split stays in memory.
            return text.tokenize(tokenizer, prepared_arrays.read_texts(path), text_length)[0]
        if field == "audio":  # One channel, as a 2-D image.
            return columns.NpyColumn(path, (*features[field].shape, 1))
        return columns.NpyColumn(path)

    published = {}
    for split in builders.split_counts(builder):  # Kinetics-Sounds has a validation split only where BML's file was.
        paths = prepared_arrays.write_missing(builder, split, (*modalities, "label"))
        published[split] = Split({m: column(paths[m], m) for m in modalities}, np.load(paths["label"]))
    if "validation" not in published:
        train = published.pop("train")
        parts = splits.split_indices(
            train.labels, options.seed, fractions=(1 - VALIDATION_FRACTION,), names=("train", "validation")
        )
        if not len(parts["validation"]):
            raise ValueError(
                f"{name}: holding out {VALIDATION_FRACTION:.0%} of each training class left no "
                f"validation example ({len(parts['train'])} training examples)."
            )
        published.update(
            {
                split: Split({m: columns.take_rows(c, rows) for m, c in train.inputs.items()}, train.labels[rows])
                for split, rows in parts.items()
            }
        )
    return len(features["label"].names), {split: published[split] for split in SPLITS}


# Emoji names are short: 24 WordPiece tokens hold every one of them with [CLS] and [SEP].
EMOJI_TEXT_LENGTH = 24
# Tweets (Twitter2015, Sarcasm): 64 tokens hold nearly all of them.
PAPER_TEXT_LENGTH = 64
# The share of each training class held out for model selection where none is published.
VALIDATION_FRACTION = 0.1
_LOADERS = {"mfeat": _load_mfeat, "emoji": _load_emoji}
DATASETS = (*_LOADERS, *builders.PAPER_DATASETS)


def load_dataset(name: str, modalities: Sequence[str], options: LoadOptions = LoadOptions()) -> MultimodalDataset:
    """Loads every split of a dataset's chosen modalities.

    Args:
      name: one of ``DATASETS``.
      modalities: the modalities (for mfeat: views) to load, in training order.
      options: where the files are and how to read them.

    Raises:
      ValueError: an unknown dataset or modality, or a missing ``data_dir``.
      mie_jax.data.builders.DataLayoutError: (a ValueError) a paper dataset's
        files are missing, unreadable or not in the published layout.
    """
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {list(DATASETS)}, got {name!r}.")
    if name in _LOADERS:
        num_classes, splits = _LOADERS[name](tuple(modalities), options)
    else:
        num_classes, splits = _load_paper(name, tuple(modalities), options)
    dataset = MultimodalDataset(name, tuple(modalities), num_classes, splits)
    check_dataset(dataset)
    return dataset
