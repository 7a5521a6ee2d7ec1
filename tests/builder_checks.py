"""Checks every paper-dataset builder's tests share: build a fixture, read it back, fail cleanly."""

from pathlib import Path

import numpy as np
import pytest

from mie_jax.data import builders

# Fixtures decode to this size, so that tests stay small.
IMAGE_SIZE = 16


def build(name: str, raw_dir: Path, prepared_dir: Path, **sizes) -> builders.PaperBuilder:
    """Prepares ``name`` from a fixture at ``IMAGE_SIZE`` (``sizes`` may override it)."""
    sizes.setdefault("image_size", IMAGE_SIZE)
    return builders.prepare(builders.builder_class(name), raw_dir, prepared_dir, **sizes)


def check_round_trip(name: str, raw_dir: Path, prepared_dir: Path, counts: dict, labels: dict, **sizes) -> dict:
    """Builds the fixture, checks the split counts and labels, and returns every split's arrays.

    Args:
      counts: expected examples per split.
      labels: expected sorted label list per split.
    """
    builder = build(name, raw_dir, prepared_dir, **sizes)
    assert builders.split_counts(builder) == counts
    fields = tuple(builder.info.features)
    arrays = {split: builders.read_split(builder, split, fields) for split in counts}
    for split, expected in labels.items():
        assert sorted(arrays[split]["label"].tolist()) == sorted(expected), split
    return arrays


def check_layout_error(name: str, raw_dir: Path, prepared_dir: Path, culprit: Path) -> None:
    """Preparing fails with one line naming ``culprit``, and leaves no dataset behind."""
    with pytest.raises(builders.DataLayoutError) as info:
        build(name, raw_dir, prepared_dir)
    message = str(info.value)
    assert str(culprit) in message
    assert "\n" not in message
    assert_nothing_prepared(prepared_dir)


def assert_nothing_prepared(prepared_dir: Path) -> None:
    """No finished and no half-written dataset version under ``prepared_dir``."""
    if prepared_dir.exists():
        leftovers = [p for p in prepared_dir.rglob("*") if p.name.startswith("incomplete.") or p.name == "1.0.0"]
        assert not leftovers, leftovers


def corrupt(path: Path) -> None:
    """Replaces a media file's content with bytes no decoder accepts."""
    path.write_bytes(b"not a media file " * 4)


def check_images(images: np.ndarray, count: int, size: int = IMAGE_SIZE, channels: int = 3) -> None:
    """``count`` decoded uint8 images (or frames) of ``size``, not all one colour."""
    assert images.dtype == np.uint8
    assert images.shape[0] == count and images.shape[-3:] == (size, size, channels)
    assert images.std() > 0
