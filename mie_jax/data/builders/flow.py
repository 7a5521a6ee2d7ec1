"""Optical flow of a video's frames, read from denseflow's images or computed with OpenCV.

Both give the same encoding, that of denseflow (``convertFlowToImage`` in
https://github.com/open-mmlab/denseflow, ``src/common.cpp``): each of the x
and y displacement, in pixels of the full-size frame, becomes
``round(255 * (v + BOUND) / (2 * BOUND))`` clipped to ``[0, 255]``, so 128
is no motion. ``BOUND`` is 20 px, the bound TSN's ``build_of.py`` passes to
denseflow (its tools default to 15 to 32); motion beyond 20 px a frame
saturates. Flow at frame ``i`` is the motion from frame ``i`` to frame
``i + 1``, which denseflow writes as ``flow_{x,y}_<i + 1>.jpg`` (it numbers
its images from 1).

Computed flow is TV-L1 (``cv2.optflow.DualTVL1OpticalFlow_create``, denseflow's
default) where OpenCV's contrib modules are installed (opencv-contrib-python),
else Farneback (``cv2.calcOpticalFlowFarneback`` with OpenCV's tutorial
parameters), both on grayscale frames. :func:`algorithm` tells which. On one
core, a pair of 320 x 240 frames takes TV-L1 about 0.9 s and Farneback about
25 ms: NVGesture's 1532 clips at 8 frames, about 3 hours and 5 minutes, spread
over the decoding threads.
"""

from pathlib import Path
from typing import Sequence

import numpy as np

from mie_jax.data.builders import media
from mie_jax.data.builders.base import DataLayoutError

BOUND = 20.0  # Pixels a frame mapped to 0 and 255.
TVL1, FARNEBACK = "tvl1", "farneback"
# Pyramid scale, levels, window size, iterations, polynomial neighbourhood and sigma, flags: OpenCV's tutorial values.
FARNEBACK_PARAMETERS = (0.5, 3, 15, 3, 5, 1.2, 0)


def algorithm() -> str:
    """:data:`TVL1` where OpenCV has its contrib module ``optflow``, else :data:`FARNEBACK`."""
    import cv2  # Imported here: only video datasets need OpenCV.

    return TVL1 if hasattr(getattr(cv2, "optflow", None), "DualTVL1OpticalFlow_create") else FARNEBACK


def encode(flow: np.ndarray) -> np.ndarray:
    """Float displacements (pixels) as denseflow's uint8: 128 for none, 0 and 255 at -/+ :data:`BOUND`."""
    # np.round rounds halves to even, like OpenCV's cvRound: 0 px gives 127.5, stored as 128.
    return np.clip(np.round(255.0 * (flow + BOUND) / (2 * BOUND)), 0, 255).astype(np.uint8)


def read_denseflow(folder: Path, frames: Sequence[int], size: int) -> np.ndarray:
    """Precomputed flow at ``frames`` of a video, from denseflow's images.

    Args:
      folder: the video's ``flow_x_%05d.jpg`` and ``flow_y_%05d.jpg`` (grayscale, numbered from 1).
      frames: frame indices of the video, from 0.
      size: output height and width.

    Returns:
      uint8 ``[len(frames), size, size, 2]``: x and y flow.

    Raises:
      DataLayoutError: a flow image is missing or undecodable.
    """
    # read_image converts grayscale to RGB by repeating the value: any channel is the image.
    return np.stack(
        [
            np.stack(
                [media.read_image(folder / f"flow_{axis}_{i + 1:05d}.jpg", size)[..., 0] for axis in "xy"], axis=-1
            )
            for i in frames
        ]
    )


def compute(video: Path, frames: Sequence[int], size: int, method: str) -> np.ndarray:
    """Flow at ``frames`` of a video, computed from consecutive frames at the video's size.

    The flow at the video's last frame, which has no successor, is the motion into it.

    Args:
      video: a video OpenCV can decode.
      frames: frame indices, from 0.
      size: output height and width (the encoded flow is resized, as denseflow's images are when read).
      method: :data:`TVL1` or :data:`FARNEBACK`.

    Returns:
      uint8 ``[len(frames), size, size, 2]``: x and y flow, encoded as :func:`encode` does.

    Raises:
      DataLayoutError: the video is missing, undecodable or shorter than ``max(frames) + 1`` frames.
      ValueError: an unknown ``method``.
    """
    import cv2

    if method not in (TVL1, FARNEBACK):
        raise ValueError(f"method must be {TVL1!r} or {FARNEBACK!r}, got {method!r}.")
    first = max(min(frames) - 1, 0)  # The predecessor of the first frame, for a one-frame-short video.
    gray = _gray_frames(video, first, max(frames) + 2)
    end = first + len(gray)
    if max(frames) >= end or len(gray) < 2:
        raise DataLayoutError(
            f"{video}: expected frames {first} to {max(frames)} for optical flow, could decode {len(gray)}"
        )
    if method == TVL1:
        flow = cv2.optflow.DualTVL1OpticalFlow_create().calc
    else:

        def flow(before, after, out):
            return cv2.calcOpticalFlowFarneback(before, after, out, *FARNEBACK_PARAMETERS)

    encoded = []
    for i in frames:
        before, after = (i, i + 1) if i + 1 < end else (i - 1, i)
        motion = encode(flow(gray[before - first], gray[after - first], None))
        encoded.append(cv2.resize(motion, (size, size), interpolation=cv2.INTER_LINEAR))
    return np.stack(encoded)


def _gray_frames(video: Path, start: int, end: int) -> list:
    """Frames ``start`` to ``end - 1`` of a video as grayscale, fewer where the video ends first."""
    import cv2

    capture = cv2.VideoCapture(str(video))
    frames = []
    try:
        if not capture.isOpened():
            raise DataLayoutError(f"{video}: not a readable video file")
        capture.set(cv2.CAP_PROP_POS_FRAMES, start)
        for _ in range(start, end):
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
    finally:
        capture.release()
    return frames
