"""Grain input pipelines over random-access sources of example dicts.

A source is anything with ``len`` and integer indexing whose items are dicts of
numpy arrays, numbers and bytes: a prepared builder's
``builder.as_data_source(split)`` (a TFDS ``ArrayRecordDataSource``) or a
plain list of dicts. A pipeline keeps some of an example's fields, applies
per-field transforms and stacks examples into batches::

  source = builder.as_data_source("train")
  image_batches = modality_pipeline(
      source, ("image", "label"), {"image": (random_resized_crop_and_flip, to_float)},
      batch_size=64, seed=0, drop_remainder=True)
  for batch in image_batches:  # {"image": float32 [64, 224, 224, 3], "label": int64 [64]}
      ...

The alternating phases read one such pipeline per modality (that modality's
field and the label); joint training reads every modality's field from one;
evaluation reads every example once, in order, without augmentation::

  eval_batches = modality_pipeline(
      source, ("image", "text", "label"), {"image": to_float, "text": tokenize(tokenizer, 40)},
      batch_size=64, seed=0, shuffle=False, drop_remainder=False)

A transform is a function ``(value, rng) -> array`` of one field of one
example; ``rng`` is a ``np.random.Generator`` that grain seeds from the
pipeline's seed, the example's index and the epoch, so a pipeline's batches,
augmentations included, depend on nothing but its arguments, whether
``num_workers`` is 0 or not. Deterministic transforms accept and ignore it.
"""

import functools
from typing import Any, Callable, Mapping, Optional, Sequence, Tuple, Union

import grain
import numpy as np
from PIL import Image

from mie_jax.data import crops
from mie_jax.data import text as text_lib

Transform = Callable[[Any, np.random.Generator], Any]

# Elements of the MapDataset handed to grain's reader are whole batches, so the
# prefetch buffer counts batches: grain's default (500) would hold gigabytes of
# 224x224 images. A few batches in flight keep a training step fed.
READ_OPTIONS = grain.ReadOptions(num_threads=4, prefetch_buffer_size=4)


def random_resized_crop_and_flip(
    image: np.ndarray,
    rng: np.random.Generator,
    scale: Tuple[float, float] = crops.SCALE,
    ratio: Tuple[float, float] = crops.RATIO,
) -> np.ndarray:
    """A random crop resized back to the input's size, mirrored left-right half the time.

    The crop is :func:`mie_jax.data.crops.crop_box`'s (the Inception crop, as
    torchvision's ``RandomResizedCrop``). All frames of a clip share one crop
    and one flip.

    Args:
      image: uint8 ``[H, W, C]`` image or ``[F, H, W, C]`` clip.
      rng: the example's generator.
      scale: bounds of the crop's fraction of the area, ``0 < low <= high <= 1``.
      ratio: bounds of the crop's width/height ratio, ``0 < low <= high``.

    Returns:
      uint8 array of ``image``'s shape: the crop, resized (bilinear,
      antialiased) to ``[H, W]`` and maybe flipped.

    Raises:
      ValueError: ``image`` is not a uint8 image or clip, or ``scale`` or
        ``ratio`` is out of bounds.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (3, 4):
        raise ValueError(f"image must be uint8 [H, W, C] or [F, H, W, C], got {image.dtype} {image.shape}.")
    crops.check_bounds(scale, ratio)
    height, width = image.shape[-3:-1]
    top, left, crop_height, crop_width = crops.crop_box(height, width, rng, scale, ratio)
    cropped = image[..., top : top + crop_height, left : left + crop_width, :]
    frames = cropped.reshape((-1,) + cropped.shape[-3:])
    resized = np.stack([_resize(frame, height, width) for frame in frames]).reshape(image.shape)
    if rng.random() < 0.5:
        resized = resized[..., ::-1, :]
    return np.ascontiguousarray(resized)


def _resize(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """A uint8 ``[h, w, C]`` frame resized to ``[height, width, C]`` (bilinear, antialiased).

    PIL returns an unchanged copy when the size does not change.
    """
    size = (width, height)
    if frame.shape[-1] == 3:  # One call for RGB: twice as fast as three.
        return np.asarray(Image.fromarray(np.ascontiguousarray(frame)).resize(size, Image.BILINEAR))
    # Channel by channel for other counts (depth 1, optical flow 2), which PIL has no mode for.
    channels = [
        np.asarray(Image.fromarray(np.ascontiguousarray(frame[..., c])).resize(size, Image.BILINEAR))
        for c in range(frame.shape[-1])
    ]
    return np.stack(channels, axis=-1)


def to_float(image: np.ndarray, rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """uint8 pixels as float32 in [0, 1].

    Args:
      image: uint8 array of any shape.
      rng: unused; every transform takes one.

    Returns:
      float32 array of ``image``'s shape.
    """
    del rng  # Deterministic.
    return np.asarray(image, np.float32) / np.float32(255)


def add_channel_axis(array: np.ndarray, rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """``array`` with a trailing axis of size 1: a ``[F, T]`` spectrogram as a one-channel image.

    Args:
      array: any array (spectrograms are computed when the dataset is built).
      rng: unused; every transform takes one.

    Returns:
      ``array[..., None]``.
    """
    del rng  # Deterministic.
    return np.asarray(array)[..., None]


def tokenize(tokenizer, length: int) -> Transform:
    """A transform of one text into its WordPiece ids, with :func:`mie_jax.data.text.tokenize`.

    Args:
      tokenizer: a tokenizer from :func:`mie_jax.data.text.load_tokenizer`.
      length: tokens per text, [CLS] and [SEP] included; longer texts are cut,
        shorter ones padded with [PAD] (the text encoder's mask is ``ids != pad``).

    Returns:
      ``(text, rng) -> int32 [length]``; ``text`` is ``str`` or UTF-8 bytes
      (a TFDS ``Text`` feature reads back as bytes).

    Raises:
      ValueError: ``length`` < 2 (no room for [CLS] and [SEP]).
    """
    if length < 2:
        raise ValueError(f"length must be >= 2 ([CLS] and [SEP]), got {length}.")
    return functools.partial(_token_ids, tokenizer=tokenizer, length=length)


def _token_ids(text, rng: Optional[np.random.Generator] = None, *, tokenizer, length: int) -> np.ndarray:
    del rng  # Deterministic.
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    return text_lib.tokenize(tokenizer, [text], length)[0][0]


def modality_pipeline(
    source: Sequence[Mapping[str, Any]],
    fields: Sequence[str],
    transforms: Mapping[str, Union[Transform, Sequence[Transform]]],
    *,
    batch_size: int,
    seed: int,
    drop_remainder: bool,
    shuffle: bool = True,
    epoch: int = 0,
    num_epochs: int = 1,
    num_workers: int = 0,
) -> grain.IterDataset:
    """Batches of some fields of a source's examples, transformed, for ``num_epochs`` epochs.

    Each epoch visits every example once (in an order drawn from ``seed`` and
    the epoch when ``shuffle``, else in the source's order) and never shares a
    batch with the next epoch. Epoch ``e`` of one call is epoch ``e`` of any
    other call with the same arguments: a phase that starts at epoch 5 passes
    ``epoch=5``.

    Args:
      source: random-access examples, each a dict holding at least ``fields``.
      fields: the fields every batch holds, e.g. ``("image", "label")`` for one
        modality's phase, every modality and the label for joint training or
        evaluation.
      transforms: field -> a transform or a sequence of them applied in
        order; fields without one pass through unchanged.
      batch_size: examples per batch.
      seed: seeds the order and the transforms' generators; >= 0.
      drop_remainder: drop the last batch of an epoch when it is short (a
        training step's shapes stay fixed); False keeps every example.
      shuffle: draw a new order every epoch; False reads the source's order.
      epoch: the first epoch.
      num_epochs: epochs to read.
      num_workers: processes that read and transform (grain's
        ``mp_prefetch``; the same batches as 0, which reads in this process).

    Returns:
      A grain ``IterDataset`` of dicts field -> array with a leading batch axis.
      With ``num_workers > 0``, close its iterators (``iterator.close()``)
      when done: that stops the workers and frees their shared memory.

    Raises:
      ValueError: an empty source, a field the examples lack, a transform for
        a field not in ``fields``, or an out-of-range ``batch_size``, ``seed``,
        ``epoch``, ``num_epochs`` or ``num_workers``.
    """
    _check_arguments(source, fields, transforms, batch_size, seed, drop_remainder, epoch, num_epochs, num_workers)
    field_transforms = {
        field: tuple(chain) if isinstance(chain, (list, tuple)) else (chain,) for field, chain in transforms.items()
    }
    # Adjacent seeds must not share epochs: grain's shuffle seeds epoch e with seed + e.
    grain_seed = int(np.random.SeedSequence(seed).generate_state(1)[0])
    examples = grain.MapDataset.source(source).random_map(
        functools.partial(_transform_example, fields=tuple(fields), transforms=field_transforms), seed=grain_seed
    )
    # Shuffling above the random map keeps an example's generator tied to its
    # index (and the epoch), not to its position in the order.
    if shuffle:
        examples = examples.shuffle(seed=grain_seed)
    batches = examples.batch(batch_size, drop_remainder=drop_remainder)
    # Repeating reseeds the shuffle and the generators every epoch; batching
    # before repeating keeps each batch within one epoch.
    batches = batches.repeat(epoch + num_epochs)[epoch * len(batches) :]
    pipeline = batches.to_iter_dataset(READ_OPTIONS)
    if num_workers > 0:
        _allow_workers_without_absl_flags()
        pipeline = pipeline.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
    return pipeline


def _transform_example(example, rng: np.random.Generator, *, fields, transforms) -> dict:
    """``fields`` of one example, each through its transforms in order."""
    selected = {}
    for field in fields:
        value = example[field]
        for transform in transforms.get(field, ()):
            value = transform(value, rng)
        selected[field] = value
    return selected


def _check_arguments(source, fields, transforms, batch_size, seed, drop_remainder, epoch, num_epochs, num_workers):
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}.")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}.")
    if num_epochs <= 0:
        raise ValueError(f"num_epochs must be positive, got {num_epochs}.")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}.")
    if len(source) == 0:
        raise ValueError("source has no examples.")
    if drop_remainder and batch_size > len(source):
        raise ValueError(
            f"batch_size {batch_size} exceeds the source's {len(source)} examples with "
            "drop_remainder: no batch would be left."
        )
    if isinstance(fields, str) or not fields:
        raise ValueError(f"fields must be a non-empty sequence of field names, got {fields!r}.")
    available = sorted(source[0])
    unknown = sorted(set(fields) - set(available))
    if unknown:
        raise ValueError(f"fields names {unknown}, which the source's examples lack; they have {available}.")
    untransformed = sorted(set(transforms) - set(fields))
    if untransformed:
        raise ValueError(f"transforms names {untransformed}, which are not in fields {list(fields)}.")


def _allow_workers_without_absl_flags() -> None:
    """Marks absl's flags parsed when no ``absl.app`` did, so that grain can start workers.

    Grain 0.2.x reads an absl flag when it starts ``mp_prefetch`` workers with
    JAX loaded, which fails unless the flags were parsed
    (https://github.com/google/grain/issues/1355); this library's entry points
    use argparse. Parsed flags keep their values.
    """
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
