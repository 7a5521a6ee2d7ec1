"""NVIDIA Dynamic Hand Gesture (Molchanov et al., CVPR 2016): depth, RGB and optical flow clips, 25 classes.

Published by NVIDIA at
https://research.nvidia.com/publication/2016-06_online-detection-and-classification-dynamic-hand-gestures-recurrent-3d:
``nvgesture_{train,test}_correct_cvpr2016_v2.lst`` hold one clip per line,
``path:./Video_data/class_01/subject13_r0 depth:sk_depth:138:218
color:sk_color:138:218 duo_left:duo_left:161:254 label:1``, where each sensor's
``<name>:<start>:<end>`` is the gesture's frame range ``[start, end)`` in
``<path>/<name>.avi`` (MJPEG) and the label is 1 to 25. Splits: 1050 / 482.

NVIDIA ships no optical flow; ours is precomputed with denseflow into
``<path>/sk_flow/flow_{x,y}_%05d.jpg``: grayscale, 128 for no motion, image
``i`` aligned with frame ``i`` (from 0) of the color video.

Clips keep 8 frames of 112 pixels by default. The I3D peers feed more frames,
but the prepared dataset holds every clip decoded, three streams each, and
``read_split`` loads a split whole: 8 frames keep all 1532 clips under a
gigabyte (64 would take 7.4 GB).
"""

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np
import tensorflow_datasets as tfds

from mie_jax.data.builders import media
from mie_jax.data.builders.base import (
    DataLayoutError, PaperBuilder, array_feature, decode_all, label_index, require_file,
)

CLASSES = tuple(f"class_{i:02d}" for i in range(1, 26))
LABELS = tuple(str(i) for i in range(1, 26))  # As written in the lists, in the order of CLASSES.
SPLIT_FILES = {"train": "nvgesture_train_correct_cvpr2016_v2.lst", "test": "nvgesture_test_correct_cvpr2016_v2.lst"}
FLOW_DIR = "sk_flow"
LINE_FORMAT = "'path:<dir> depth:<name>:<start>:<end> color:<name>:<start>:<end> ... label:<1-25>'"


@dataclasses.dataclass(frozen=True)
class Clip:
    """One line of a split list: the clip's folder, label index and each video's ``(name, start, end)``."""

    path: str
    label: int
    color: tuple
    depth: tuple


class NVGesture(PaperBuilder):
    """NVIDIA's in-car hand gestures: a gesture's depth, RGB and optical flow frames."""

    name = "nvgesture"  # The dataset's name in builders, not TFDS's "nv_gesture" from the class name.
    LAYOUT = (f"nvgesture_{{train,test}}_correct_cvpr2016_v2.lst with one {LINE_FORMAT} per line; "
              f"<dir>/<name>.avi for depth and color; <dir>/{FLOW_DIR}/flow_{{x,y}}_%05d.jpg per color frame")
    HOMEPAGE = ("https://research.nvidia.com/publication/"
                "2016-06_online-detection-and-classification-dynamic-hand-gestures-recurrent-3d")
    DESCRIPTION = "Dynamic hand gestures recorded in a car simulator by NVIDIA, 25 classes (Molchanov et al., 2016)."
    CITATION = ("Molchanov, Yang, Gupta, Kim, Tyree and Kautz. Online Detection and Classification of Dynamic Hand "
                "Gestures with Recurrent 3D Convolutional Neural Networks. CVPR 2016.")
    SPLITS = tuple(SPLIT_FILES)
    DEFAULT_IMAGE_SIZE = 112
    DEFAULT_NUM_FRAMES = 8
    MODALITIES = ("depth", "rgb", "flow")  # The released code's order.

    def features(self):
        size, frames = self.builder_config.image_size, self.builder_config.num_frames
        return {
            "id": tfds.features.Text(),
            "rgb": array_feature((frames, size, size, 3), np.uint8),
            "depth": array_feature((frames, size, size, 1), np.uint8),
            "flow": array_feature((frames, size, size, 2), np.uint8),
            "label": tfds.features.ClassLabel(names=CLASSES),
        }

    def examples(self, raw_dir: Path, split: str):
        path = require_file(raw_dir / SPLIT_FILES[split], self.LAYOUT)
        clips = [_parse_line(line, f"{path}:{number}")
                 for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if line.strip()]
        decoded = decode_all(lambda clip: self._read_clip(raw_dir / clip.path, clip), clips)
        for clip, streams in zip(clips, decoded):
            yield clip.path, {"id": clip.path, **streams, "label": clip.label}

    def _read_clip(self, folder: Path, clip: Clip) -> dict:
        """The clip's ``rgb``, ``depth`` and ``flow`` frames, evenly spaced over its ranges."""
        size, count = self.builder_config.image_size, self.builder_config.num_frames
        (color, start, end), (depth, depth_start, depth_end) = clip.color, clip.depth
        return {
            "rgb": media.read_video(require_file(folder / f"{color}.avi", self.LAYOUT), start, end, count, size, 3),
            "depth": media.read_video(require_file(folder / f"{depth}.avi", self.LAYOUT),
                                      depth_start, depth_end, count, size, 1),
            # The frames read_video picks from the color range.
            "flow": read_flow(folder / FLOW_DIR, start + media.evenly_spaced(end - start, count), size),
        }


def read_flow(folder: Path, frames: Sequence[int], size: int) -> np.ndarray:
    """The precomputed optical flow at ``frames`` of a clip.

    Args:
      folder: the clip's ``flow_x_%05d.jpg`` and ``flow_y_%05d.jpg`` (grayscale, 128 for no motion).
      frames: frame indices of the color video.
      size: output height and width.

    Returns:
      uint8 ``[len(frames), size, size, 2]``: x and y flow.

    Raises:
      DataLayoutError: a flow image is missing or undecodable.
    """
    # read_image converts grayscale to RGB by repeating the value: any channel is the image.
    return np.stack([np.stack([media.read_image(folder / f"flow_{axis}_{i:05d}.jpg", size)[..., 0] for axis in "xy"],
                              axis=-1) for i in frames])


def _parse_line(line: str, where: str) -> Clip:
    """The clip of one list line; errors name ``where`` (file:line)."""
    try:
        fields = dict(field.split(":", 1) for field in line.split())
        color, depth = (_range(fields[sensor]) for sensor in ("color", "depth"))
        path, label = fields["path"], fields["label"]
    except (KeyError, ValueError):
        raise DataLayoutError(f"{where}: expected {LINE_FORMAT}, got {line.strip()[:120]!r}") from None
    return Clip(path, label_index(label, LABELS, where), color, depth)


def _range(field: str) -> tuple:
    """``(name, start, end)`` of a sensor field ``<name>:<start>:<end>``, with ``0 <= start < end``."""
    name, start, end = field.split(":")
    start, end = int(start), int(end)
    if not 0 <= start < end:
        raise ValueError(field)
    return name, start, end
