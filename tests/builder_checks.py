"""Checks every paper-dataset builder's tests share: build a fixture, read it back, fail cleanly."""

import wave
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


def write_jpg(path: Path, pixels: np.ndarray) -> None:
    """Saves uint8 ``pixels`` (``[h, w]`` grayscale or ``[h, w, 3]`` RGB) as a jpg, making its folder."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def write_video(path: Path, frames: np.ndarray, fps: int = 10) -> None:
    """Saves uint8 RGB ``frames`` ``[n, h, w, 3]`` as an MJPEG avi, and checks that OpenCV reads all back."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (frames.shape[2], frames.shape[1]))
    assert writer.isOpened(), f"{path}: OpenCV cannot write MJPEG here"
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.read()[0]:
        count += 1
    capture.release()
    assert count == len(frames), f"{path}: wrote {len(frames)} frames, OpenCV reads back {count}"


def check_bad_line(name: str, raw_dir: Path, prepared_dir: Path, path: Path, line: str, problem: str) -> None:
    """Appending ``line`` to the text file ``path`` fails preparing with ``problem`` at ``path:<its line>``."""
    text = path.read_text(encoding="utf-8")
    text += "\n" if text and not text.endswith("\n") else ""
    path.write_text(text + line + "\n", encoding="utf-8")
    with pytest.raises(builders.DataLayoutError, match=problem) as info:
        build(name, raw_dir, prepared_dir)
    assert f"{path}:{len(text.splitlines()) + 1}" in str(info.value)
    assert "\n" not in str(info.value)
    assert_nothing_prepared(prepared_dir)


def write_wav(path: Path, pcm: np.ndarray, rate: int) -> None:
    """Writes integer PCM samples (uint8, int16 or int32; ``[n]`` mono or ``[n, channels]``) as a wav file."""
    pcm = pcm.reshape(len(pcm), -1)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(pcm.shape[1])
        f.setsampwidth(pcm.dtype.itemsize)
        f.setframerate(rate)
        f.writeframes(pcm.astype(pcm.dtype.newbyteorder("<")).tobytes())


def write_tone_wav(path: Path, frequency: float, seconds: float = 0.5, rate: int = 16000) -> np.ndarray:
    """Writes a 16-bit mono sine tone at half amplitude; returns its samples as floats in [-1, 1]."""
    times = np.arange(int(seconds * rate)) / rate
    pcm = np.round(0.5 * 32768 * np.sin(2 * np.pi * frequency * times)).astype(np.int16)
    write_wav(path, pcm, rate)
    return pcm.astype(np.float32) / 32768


def write_frames(folder: Path, count: int, rng: np.random.Generator) -> list:
    """Writes ``count`` small random jpg frames ``frame_00001.jpg``... into ``folder``; returns their paths."""
    paths = [folder / f"frame_{i:05d}.jpg" for i in range(1, count + 1)]
    for path in paths:
        write_jpg(path, rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))
    return paths
