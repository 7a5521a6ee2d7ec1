"""Decoding the media files of the paper's datasets: wav, log-spectrograms, images, frames, video.

Every reader raises :class:`~mie_jax.data.builders.base.DataLayoutError`
naming the file when it cannot be decoded, so one corrupt file among thousands
is found by name.
"""

import math
import wave
from pathlib import Path
import numpy as np
from PIL import Image, UnidentifiedImageError
from scipy import signal

from mie_jax.data.builders.base import DataLayoutError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def read_wav(path: Path) -> tuple:
    """A PCM wav file as mono float32 samples in [-1, 1] and its sample rate.

    Raises:
      DataLayoutError: the file is missing or not a PCM wav file.
    """
    try:
        with wave.open(str(path), "rb") as f:
            width, channels, rate = f.getsampwidth(), f.getnchannels(), f.getframerate()
            declared = f.getnframes()
            frames = f.readframes(declared)
    except (OSError, EOFError, wave.Error) as e:
        raise DataLayoutError(f"{path}: not a readable PCM wav file ({e})") from None
    if len(frames) != declared * width * channels:
        raise DataLayoutError(
            f"{path}: truncated: its header declares {declared} frames, found {len(frames) // (width * channels)}")
    if width not in (1, 2, 4) or not frames:
        raise DataLayoutError(f"{path}: expected 8-, 16- or 32-bit PCM samples, got {width * 8}-bit or none")
    if width == 1:  # 8-bit wav is unsigned.
        samples = (np.frombuffer(frames, np.uint8).astype(np.float32) - 128.0) / 128.0
    else:
        dtype = {2: np.int16, 4: np.int32}[width]
        samples = np.frombuffer(frames, dtype).astype(np.float32) / float(np.iinfo(dtype).max + 1)
    return samples.reshape(-1, channels).mean(axis=1), rate


def log_spectrogram(
    samples: np.ndarray, rate: int, *, sample_rate: int, seconds: float, n_fft: int, hop: int
) -> np.ndarray:
    """The audio-visual peers' input: log-magnitude STFT of a fixed-length clip.

    The clip is resampled to ``sample_rate``, tiled to ``seconds`` (short clips
    repeat; long ones are cut), clipped to [-1, 1], and transformed with a
    Hann window, centred frames (reflect padding) and ``log(|S| + 1e-7)``, as
    the peers' librosa code does. CREMA-D's setting (22050 Hz, 3 s, n_fft 512,
    hop 353) gives 257 x 188.

    Returns:
      float32 ``[n_fft // 2 + 1, 1 + length // hop]``.
    """
    if rate != sample_rate:
        common = math.gcd(rate, sample_rate)
        samples = signal.resample_poly(samples, sample_rate // common, rate // common)
    length = int(round(seconds * sample_rate))
    clip = np.tile(samples, -(-length // max(len(samples), 1)))[:length]
    clip = np.clip(clip, -1.0, 1.0).astype(np.float64)
    padded = np.pad(clip, n_fft // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]
    spectrum = np.fft.rfft(frames * signal.get_window("hann", n_fft), axis=1)
    return np.log(np.abs(spectrum) + 1e-7).T.astype(np.float32)


def read_image(path: Path, size: int) -> np.ndarray:
    """An image file as uint8 RGB ``[size, size, 3]`` (bilinear resize).

    Raises:
      DataLayoutError: the file is missing or not a decodable image.
    """
    try:
        with Image.open(path) as image:
            image = image.convert("RGB").resize((size, size), Image.BILINEAR)
            return np.asarray(image, np.uint8)
    except (OSError, UnidentifiedImageError, SyntaxError) as e:
        raise DataLayoutError(f"{path}: not a readable image ({e})") from None


def evenly_spaced(count: int, wanted: int) -> np.ndarray:
    """``wanted`` indices spread over ``range(count)``, centred in equal segments."""
    return ((np.arange(wanted) + 0.5) * count / wanted).astype(np.int64)


def read_frame_folder(folder: Path, num_frames: int, size: int) -> np.ndarray:
    """``num_frames`` evenly spaced images of a folder of extracted frames, in name order.

    Returns:
      uint8 ``[num_frames, size, size, 3]``.

    Raises:
      DataLayoutError: the folder is missing or holds no images.
    """
    files = sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    if not files:
        raise DataLayoutError(f"{folder}: expected a folder of extracted frames ({'/'.join(IMAGE_SUFFIXES)}), found none")
    return np.stack([read_image(files[i], size) for i in evenly_spaced(len(files), num_frames)])


def read_video(path: Path, start: int, end: int, num_frames: int, size: int, channels: int) -> np.ndarray:
    """``num_frames`` evenly spaced frames of ``[start, end)`` from a video file.

    Args:
      path: a video OpenCV can decode (NVGesture's are MJPEG avi).
      start, end: the frame range (NVGesture's annotation gives one per clip).
      num_frames: frames to keep.
      size: output height and width.
      channels: 3 (RGB) or 1 (the first channel: depth videos repeat it).

    Returns:
      uint8 ``[num_frames, size, size, channels]``.

    Raises:
      DataLayoutError: the file is missing, undecodable, or shorter than ``end``.
    """
    import cv2  # Imported here: only video datasets need OpenCV.

    capture = cv2.VideoCapture(str(path))
    frames = []
    try:
        if not capture.isOpened():
            raise DataLayoutError(f"{path}: not a readable video file")
        capture.set(cv2.CAP_PROP_POS_FRAMES, start)
        for _ in range(end - start):
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        capture.release()
    if len(frames) < end - start or not frames:
        raise DataLayoutError(f"{path}: expected frames {start} to {end}, could decode {len(frames)}")
    picked = [frames[i] for i in evenly_spaced(len(frames), num_frames)]
    resized = [cv2.resize(f, (size, size), interpolation=cv2.INTER_LINEAR) for f in picked]
    rgb = np.stack([cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in resized])
    return rgb[..., :channels]

