"""NVIDIA Dynamic Hand Gesture (Molchanov et al., CVPR 2016): depth, RGB and optical flow clips, 25 classes.

Published by NVIDIA at
https://research.nvidia.com/publication/2016-06_online-detection-and-classification-dynamic-hand-gestures-recurrent-3d:
``nvgesture_{train,test}_correct_cvpr2016_v2.lst`` (1050 / 482 lines; a copy
is in https://github.com/breadbread1984/R3DCNN, commit e5e8ed4) hold one clip
per line, ``path:./Video_data/class_01/subject13_r0 depth:sk_depth:138:218
color:sk_color:138:218 duo_left:duo_left:161:254 label:1``, where each sensor's
``<name>:<start>:<end>`` is the gesture's frame range ``[start, end)`` in
``<path>/<name>.avi`` (MJPEG) and the label is 1 to 25. Every range is 80
frames; lines end with a space. The directory given as ``--data-dir`` holds the
two lists and NVIDIA's ``Video_data/``.

The label field is the class, as in NVIDIA's reader (``load_split_nvgesture``):
in 15 training and 8 test lines it differs from the ``class_XX`` folder of the
path (e.g. ``path:./Video_data/class_01/subject4_r2 ... label:2``), and the
folder is only where the recording is stored.

NVIDIA ships no optical flow. A clip's flow is read from
``<path>/sk_flow/flow_{x,y}_%05d.jpg`` where that folder exists (precomputed
with denseflow from ``sk_color.avi``), else computed from ``sk_color.avi``
while preparing, TV-L1 where OpenCV's contrib modules are installed and
Farneback otherwise; the encoding, bound and frame alignment are those of
:mod:`~mie_jax.data.builders.flow`. Which clips were computed, and how, is in
the prepared dataset's notes and its ``"flow"`` setting.

Clips keep 8 frames of 112 pixels by default. The I3D peers feed more frames,
but the prepared dataset holds every clip decoded, three streams each, and
``read_split`` loads a split whole: 8 frames keep all 1532 clips under a
gigabyte (64 would take 7.4 GB).
"""

import collections
import dataclasses
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from mie_jax.data.builders import flow, media
from mie_jax.data.builders.base import (
    DataLayoutError,
    PaperBuilder,
    array_feature,
    decode_all,
    label_index,
    preparation_settings,
    require_file,
)

CLASSES = tuple(f"class_{i:02d}" for i in range(1, 26))
LABELS = tuple(str(i) for i in range(1, 26))  # As written in the lists, in the order of CLASSES.
SPLIT_FILES = {"train": "nvgesture_train_correct_cvpr2016_v2.lst", "test": "nvgesture_test_correct_cvpr2016_v2.lst"}
FLOW_DIR = "sk_flow"
PRECOMPUTED = "precomputed"  # The "flow" setting when no clip's flow was computed.
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
    LAYOUT = (
        f"nvgesture_{{train,test}}_correct_cvpr2016_v2.lst with one {LINE_FORMAT} per line; "
        f"<dir>/<name>.avi for depth and color; optionally <dir>/{FLOW_DIR}/flow_{{x,y}}_%05d.jpg "
        "(denseflow's, from sk_color.avi), else flow is computed"
    )
    HOMEPAGE = (
        "https://research.nvidia.com/publication/"
        "2016-06_online-detection-and-classification-dynamic-hand-gestures-recurrent-3d"
    )
    DESCRIPTION = "Dynamic hand gestures recorded in a car simulator by NVIDIA, 25 classes (Molchanov et al., 2016)."
    CITATION = (
        "Molchanov, Yang, Gupta, Kim, Tyree and Kautz. Online Detection and Classification of Dynamic Hand "
        "Gestures with Recurrent 3D Convolutional Neural Networks. CVPR 2016."
    )
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
        clips = read_list(require_file(raw_dir / SPLIT_FILES[split], self.LAYOUT))
        method = flow.algorithm()
        decoded = decode_all(lambda clip: self._read_clip(raw_dir / clip.path, clip, method), clips)
        sources = collections.Counter()
        for clip, (streams, source) in zip(clips, decoded):
            sources[source] += 1
            yield clip.path, {"id": clip.path, **streams, "label": clip.label}
        if sources[PRECOMPUTED]:
            self.note(split, f"{sources[PRECOMPUTED]} flow clips read from {FLOW_DIR}/ (precomputed)")
        if sources[method]:
            self.note(split, f"{sources[method]} flow clips computed from sk_color.avi ({method})")
        # The algorithm once any split computed flow; "precomputed" only while none did.
        if sources[method] or "flow" not in preparation_settings(self):
            self.record_setting("flow", method if sources[method] else PRECOMPUTED)

    def _read_clip(self, folder: Path, clip: Clip, method: str):
        """The clip's ``rgb``, ``depth`` and ``flow`` frames, evenly spaced over its ranges, and the flow's source.

        Returns:
          ``(streams, source)``: the three arrays by name, and :data:`PRECOMPUTED` or ``method``.
        """
        size, count = self.builder_config.image_size, self.builder_config.num_frames
        (color, start, end), (depth, depth_start, depth_end) = clip.color, clip.depth
        video = require_file(folder / f"{color}.avi", self.LAYOUT)
        streams = {
            "rgb": media.read_video(video, start, end, count, size, 3),
            "depth": media.read_video(
                require_file(folder / f"{depth}.avi", self.LAYOUT), depth_start, depth_end, count, size, 1
            ),
        }
        picked = start + media.evenly_spaced(end - start, count)  # The frames read_video picks from the color range.
        if (folder / FLOW_DIR).is_dir():
            return {**streams, "flow": flow.read_denseflow(folder / FLOW_DIR, picked, size)}, PRECOMPUTED
        return {**streams, "flow": flow.compute(video, picked, size, method)}, method


def read_list(path: Path) -> list:
    """The :class:`Clip` of every non-blank line of a split list.

    Raises:
      DataLayoutError: naming ``path:line`` for a line not in NVIDIA's format or with a label outside 1 to 25.
    """
    return [
        _parse_line(line, f"{path}:{number}")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if line.strip()
    ]


def _parse_line(line: str, where: str) -> Clip:
    """The clip of one list line; errors name ``where`` (file:line)."""
    try:
        fields = dict(field.split(":", 1) for field in line.split())
        color, depth = (_range(fields[sensor]) for sensor in ("color", "depth"))
        path, label = fields["path"], fields["label"]
    except (KeyError, ValueError):
        raise DataLayoutError(f"{where}: expected {LINE_FORMAT}, got {line.strip()[:120]!r}") from None
    # The label field, not the path's class_XX folder, is the class (see the module docstring).
    return Clip(path, label_index(label, LABELS, where), color, depth)


def _range(field: str) -> tuple:
    """``(name, start, end)`` of a sensor field ``<name>:<start>:<end>``, with ``0 <= start < end``."""
    name, start, end = field.split(":")
    start, end = int(start), int(end)
    if not 0 <= start < end:
        raise ValueError(field)
    return name, start, end
