"""What every paper-dataset builder shares: layout errors, atomic preparation, reading back.

A builder turns a dataset's files, laid out as their authors publish them (the
"raw directory"), into a TFDS dataset of array_record files (the "prepared
directory"); no TensorFlow is needed for either step. Heavy decoding (wav to
log-spectrogram, images and video frames to fixed-size uint8 arrays) happens
once, here, so that training reads arrays.

Preparation is atomic: TFDS writes into an ``incomplete.*`` directory that it
renames when every split is written, and :func:`prepare` deletes that directory
when anything fails, so a failed preparation leaves nothing a later run could
mistake for a dataset.
"""

import concurrent.futures
import dataclasses
import os
import shutil
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Sequence, Tuple, TypeVar

import numpy as np
import tensorflow_datasets as tfds

T = TypeVar("T")
R = TypeVar("R")

# Decoding threads per builder: image and video decoders release the GIL.
DECODE_WORKERS = min(8, os.cpu_count() or 1)


class DataLayoutError(ValueError):
    """The raw files are missing, unreadable or not in the published layout.

    The message is one line naming the offending path and what was expected there.
    """


@dataclasses.dataclass(eq=False)
class MediaConfig(tfds.core.BuilderConfig):
    """The decoded size of a dataset's images and video frames.

    Attributes:
      image_size: height and width of every image and frame.
      num_frames: frames kept per clip (datasets without video ignore it).
    """

    image_size: int = 224
    num_frames: int = 1


class PaperBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A dataset read from its published files in a local directory.

    Subclasses set ``LAYOUT`` (one line: the files expected in the raw
    directory), ``HOMEPAGE``, ``CITATION``, ``DESCRIPTION``, ``SPLITS`` (the
    splits the authors publish) and ``MODALITIES``, and implement :meth:`features` and
    :meth:`examples`. They are not registered in TFDS's catalogue (whose
    ``crema_d`` is another dataset); use them through :func:`prepare`.

    ``self.builder_config`` is a :class:`MediaConfig`: one prepared copy per
    image size and frame count, side by side.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    LAYOUT: str = ""
    HOMEPAGE: str = ""
    CITATION: str = ""
    DESCRIPTION: str = ""
    SPLITS: Tuple[str, ...] = ()
    MODALITIES: Tuple[str, ...] = ()  # Feature names, in the released code's training order.
    DEFAULT_IMAGE_SIZE: int = 224
    DEFAULT_NUM_FRAMES: int = 1

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(skip_registration=True, **kwargs)
        cls.MANUAL_DOWNLOAD_INSTRUCTIONS = (
            f"Get the files from {cls.HOMEPAGE} and pass their directory as --data-dir. Expected layout: {cls.LAYOUT}"
        )

    def features(self) -> Dict[str, tfds.features.FeatureConnector]:
        """The feature of every field of an example."""
        raise NotImplementedError

    def note(self, split: str, message: str) -> None:
        """Records what preparing ``split`` dropped or computed, e.g. ``"9224 posts dropped by ..."``.

        Notes are stored with the prepared dataset (:func:`preparation_notes`)
        and printed by ``python -m mie_jax.data.prepare`` as ``<split>: <message>``.
        """
        self.info.metadata.setdefault("notes", []).append(f"{split}: {message}")

    def record_setting(self, key: str, value) -> None:
        """Stores a choice made while preparing (a resampler, a flow algorithm) with the prepared dataset."""
        self.info.metadata.setdefault("settings", {})[key] = value

    def examples(self, raw_dir: Path, split: str) -> Iterator[Tuple[str, dict]]:
        """Yields ``(key, example)`` for one split, validating what it reads.

        Raises:
          DataLayoutError: a missing or unreadable file, or an unknown label.
        """
        raise NotImplementedError

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            # Written with the dataset when preparation ends: notes and settings of note()/record_setting().
            metadata=tfds.core.MetadataDict(),
            # The trainer draws its own batch order; TFDS's shuffle would hold up to 1 GB of examples while writing.
            disable_shuffling=True,
            description=self.DESCRIPTION,
            features=tfds.features.FeaturesDict(self.features()),
            homepage=self.HOMEPAGE,
            citation=self.CITATION,
        )

    def _split_generators(self, dl_manager):
        raw_dir = Path(dl_manager.manual_dir)
        return {split: self._generate_examples(raw_dir, split) for split in self.SPLITS}

    def _generate_examples(self, raw_dir: Path, split: str):
        return self.examples(raw_dir, split)


def array_feature(shape: Tuple[int, ...], dtype) -> tfds.features.Tensor:
    """A fixed-shape array field, stored as raw bytes.

    TFDS's default stores a Tensor as a list of int64s: eight times the disk
    of uint8 pixels and about 50 times slower to decode.
    """
    return tfds.features.Tensor(shape=shape, dtype=dtype, encoding=tfds.features.Encoding.BYTES)


def image_text_features(image_size: int, classes: Sequence[str], *texts: str) -> dict:
    """The fields of an image-text example: ``id``, an RGB ``image``, the text fields ``texts``, ``label``."""
    return {
        "id": tfds.features.Text(),
        "image": array_feature((image_size, image_size, 3), np.uint8),
        **{name: tfds.features.Text() for name in texts},
        "label": tfds.features.ClassLabel(names=classes),
    }


def require_dir(path: Path, layout: str) -> Path:
    """``path`` if it is a directory, else a :class:`DataLayoutError` showing ``layout``."""
    if not path.is_dir():
        raise DataLayoutError(f"{path}: directory not found; expected layout: {layout}")
    return path


def require_file(path: Path, layout: str) -> Path:
    """``path`` if it is a file, else a :class:`DataLayoutError` showing ``layout``."""
    if not path.is_file():
        raise DataLayoutError(f"{path}: file not found; expected layout: {layout}")
    return path


def label_index(label: str, names: Sequence[str], where: str) -> int:
    """The class index of ``label``; ``where`` (file and line) names it in the error."""
    try:
        return list(names).index(label)
    except ValueError:
        raise DataLayoutError(f"{where}: unknown label {label!r}; expected one of {list(names)}") from None


def decode_all(fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
    """``map(fn, items)`` on ``DECODE_WORKERS`` threads, in order, lazily in chunks."""
    items = list(items)
    chunk = 4 * DECODE_WORKERS
    with concurrent.futures.ThreadPoolExecutor(DECODE_WORKERS) as pool:
        for start in range(0, len(items), chunk):
            yield from pool.map(fn, items[start : start + chunk])


def prepare(builder_cls, raw_dir, prepared_dir, *, image_size: int = 0, num_frames: int = 0) -> PaperBuilder:
    """Builds the dataset from ``raw_dir`` into ``prepared_dir`` unless already there.

    Args:
      builder_cls: a :class:`PaperBuilder` subclass.
      raw_dir: the directory of the published files.
      prepared_dir: the TFDS data directory to write into (the dataset lands in
        ``prepared_dir/<name>/<size>px_<frames>f/<version>``).
      image_size: decoded image and frame size; 0 takes the builder's default.
      num_frames: frames per clip; 0 takes the builder's default.

    Returns:
      The prepared builder; ``builder.as_data_source(split)`` reads a split.

    Raises:
      DataLayoutError: ``raw_dir`` is missing or a file in it is missing,
        unreadable or carries an unknown label. Nothing is left in
        ``prepared_dir`` for this dataset's version then.
    """
    raw_dir = Path(raw_dir)
    require_dir(raw_dir, builder_cls.LAYOUT)
    tfds.disable_progress_bar()
    if image_size < 0 or num_frames < 0:
        raise ValueError(f"image_size and num_frames must be >= 0, got {image_size} and {num_frames}.")
    size = image_size or builder_cls.DEFAULT_IMAGE_SIZE
    frames = num_frames or builder_cls.DEFAULT_NUM_FRAMES
    config = MediaConfig(name=f"{size}px_{frames}f", image_size=size, num_frames=frames)
    builder = builder_cls(data_dir=os.fspath(prepared_dir), file_format="array_record", config=config)
    if builder.is_prepared():
        return builder
    try:
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(raw_dir)))
    except BaseException:
        _remove_incomplete(Path(builder.data_dir).parent)
        raise
    return builder


def _remove_incomplete(dataset_dir: Path) -> None:
    for path in dataset_dir.glob("incomplete.*"):
        shutil.rmtree(path, ignore_errors=True)


def preparation_notes(builder: PaperBuilder) -> List[str]:
    """What preparing each split dropped or computed, one ``<split>: <message>`` line each."""
    return list(builder.info.metadata.get("notes", []))


def preparation_settings(builder: PaperBuilder) -> Dict[str, object]:
    """The choices recorded while preparing (:meth:`PaperBuilder.record_setting`)."""
    return dict(builder.info.metadata.get("settings", {}))


def split_counts(builder: PaperBuilder) -> Dict[str, int]:
    """Examples per split, as written."""
    return {name: info.num_examples for name, info in builder.info.splits.items()}


def read_split(builder: PaperBuilder, split: str, fields: Sequence[str]) -> Dict[str, np.ndarray]:
    """Every example of ``split`` as one stacked array per field (text as ``str``)."""
    source = builder.as_data_source(split)
    rows = [source[i] for i in range(len(source))]
    arrays = {}
    for field in fields:
        values = [row[field] for row in rows]
        if values and isinstance(values[0], bytes):
            arrays[field] = np.array([v.decode("utf-8") for v in values], dtype=object)
        else:
            arrays[field] = np.stack(values) if values else np.zeros((0,))
    return arrays
