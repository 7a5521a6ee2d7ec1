"""The random Inception crop's box: shared by the grain pipeline and the trainer's augmentation."""

from typing import Tuple

import numpy as np

SCALE = (0.08, 1.0)  # torchvision RandomResizedCrop's defaults, which the peers' loaders use.
RATIO = (3 / 4, 4 / 3)


def check_bounds(scale, ratio) -> None:
    if not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"scale must satisfy 0 < low <= high <= 1, got {scale}.")
    if not 0 < ratio[0] <= ratio[1]:
        raise ValueError(f"ratio must satisfy 0 < low <= high, got {ratio}.")


def crop_box(height: int, width: int, rng: np.random.Generator, scale=SCALE, ratio=RATIO) -> Tuple[int, int, int, int]:
    """``(top, left, crop_height, crop_width)`` of a random Inception crop.

    The crop covers a fraction ``U(scale)`` of the area with a width/height
    ratio log-uniform in ``ratio``: 10 draws, then the largest central crop of
    an allowed ratio (torchvision's ``RandomResizedCrop``).
    """
    area = height * width
    log_ratio = np.log(ratio)
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        aspect = np.exp(rng.uniform(*log_ratio))
        crop_width = int(round(np.sqrt(target_area * aspect)))
        crop_height = int(round(np.sqrt(target_area / aspect)))
        if 0 < crop_width <= width and 0 < crop_height <= height:
            top = int(rng.integers(0, height - crop_height + 1))
            left = int(rng.integers(0, width - crop_width + 1))
            return top, left, crop_height, crop_width
    # No draw fitted: the largest central crop whose ratio is within bounds.
    crop_height, crop_width = height, width
    if width / height < ratio[0]:
        crop_height = int(round(width / ratio[0]))
    elif width / height > ratio[1]:
        crop_width = int(round(height * ratio[1]))
    return (height - crop_height) // 2, (width - crop_width) // 2, crop_height, crop_width


def crop_draws(rng: np.random.Generator, shape: Tuple[int, ...], height: int, width: int):
    """A crop box and a coin flip for each of ``shape`` images (e.g. ``[steps, batch]``).

    Returns:
      ``(boxes, flips)``: int32 ``shape + (4,)`` rows ``(top, left, crop_height,
      crop_width)``, and bool ``shape``, True to mirror left-right.
    """
    count = int(np.prod(shape))
    boxes = np.array([crop_box(height, width, rng) for _ in range(count)], np.int32).reshape(*shape, 4)
    flips = rng.random(count).reshape(shape) < 0.5
    return boxes, flips
