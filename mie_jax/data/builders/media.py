"""Decoding the media files of the paper's datasets: wav, log-spectrograms, images, frames, video.

Every reader raises :class:`~mie_jax.data.builders.base.DataLayoutError`
naming the file when it cannot be decoded, so one corrupt file among thousands
is found by name.
"""

import functools
import wave
from pathlib import Path
import numpy as np
from PIL import Image, UnidentifiedImageError
from scipy import signal

from mie_jax.data.builders.base import DataLayoutError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# The resamplers of :func:`resample`: the default of the peers' librosa 0.8,
# resampy 0.2's Kaiser-windowed sinc "kaiser_best", and that of librosa >= 0.10,
# soxr's "soxr_hq".
RESAMPLERS = ("resampy_0.2_kaiser_best", "soxr_hq")
DEFAULT_RESAMPLER = "resampy_0.2_kaiser_best"


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
            f"{path}: truncated: its header declares {declared} frames, found {len(frames) // (width * channels)}"
        )
    if width not in (1, 2, 4) or not frames:
        raise DataLayoutError(f"{path}: expected 8-, 16- or 32-bit PCM samples, got {width * 8}-bit or none")
    if width == 1:  # 8-bit wav is unsigned.
        samples = (np.frombuffer(frames, np.uint8).astype(np.float32) - 128.0) / 128.0
    else:
        dtype = {2: np.int16, 4: np.int32}[width]
        samples = np.frombuffer(frames, dtype).astype(np.float32) / float(np.iinfo(dtype).max + 1)
    return samples.reshape(-1, channels).mean(axis=1), rate


def resample(samples: np.ndarray, rate: int, target_rate: int, resampler: str = DEFAULT_RESAMPLER) -> np.ndarray:
    """``samples`` at ``rate`` Hz resampled to ``target_rate`` Hz, as ``librosa.load`` does.

    As librosa's, the output has ``ceil(len(samples) * target_rate / rate)``
    samples (the resampler's output cut or zero-padded to it), so that the
    clips the peers tile have the same length, and it is float32, computed in
    float32 as librosa.load's samples are. The precision shows: resampy sums
    its taps in the output's dtype, and float32 rounding (about 1e-7) is of
    the order of what the filter leaves above the source's Nyquist frequency
    (about 1e-5 per STFT bin), so resampling a 16 kHz clip in float64 would
    move its 8-11 kHz bins by a mean 0.12 nats from the peers' spectrograms.
    (resampy compiles its loop for the first dtype it is given, and a float64
    loop would then serve float32 input too: this module only passes float32.)

    Args:
      samples: mono samples in [-1, 1].
      rate: their sample rate.
      target_rate: the sample rate wanted.
      resampler: one of ``RESAMPLERS``.

    Returns:
      float32 samples at ``target_rate`` (``samples`` as float32 when the rates are equal).

    Raises:
      ValueError: an unknown ``resampler``.
    """
    if resampler not in RESAMPLERS:
        raise ValueError(f"resampler must be one of {list(RESAMPLERS)}, got {resampler!r}.")
    samples = np.asarray(samples, np.float32)
    if rate == target_rate:
        return samples
    # Imported here: only datasets recorded at another rate than their spectrograms' need a resampler.
    if resampler == "resampy_0.2_kaiser_best":
        import resampy

        resampled = resampy.resample(samples, rate, target_rate, filter=_resampy_0_2_kaiser_best)
    else:
        import soxr

        resampled = soxr.resample(samples, rate, target_rate, quality="soxr_hq")
    length = -(-len(samples) * target_rate // rate)
    return np.pad(resampled[:length], (0, max(0, length - len(resampled))))


def _resampy_0_2_kaiser_best() -> tuple:
    """resampy 0.2's "kaiser_best" filter, built from the parameters it documents.

    resampy >= 0.3 ships another filter under that name (8192 steps per
    zero-crossing, roll-off 0.917): its spectrograms of a 16 kHz clip differ
    from the peers' by a mean 0.28 nats. This one is resampy 0.2.2's table to
    within 3e-16.

    Returns:
      ``(half_window, steps per zero-crossing, roll-off)``, as resampy's filters.
    """
    import resampy

    kaiser = functools.partial(signal.windows.kaiser, beta=14.769656459379492)
    return resampy.filters.sinc_window(num_zeros=64, precision=9, window=kaiser, rolloff=0.9475937167399596)


def log_spectrogram(
    samples: np.ndarray,
    rate: int,
    *,
    sample_rate: int,
    seconds: float,
    n_fft: int,
    hop: int,
    resampler: str = DEFAULT_RESAMPLER,
) -> np.ndarray:
    """The audio-visual peers' input: log-magnitude STFT of a fixed-length clip.

    The clip is resampled to ``sample_rate`` (:func:`resample`), tiled to
    ``seconds`` (short clips repeat; long ones are cut), clipped to [-1, 1],
    and transformed with a Hann window, centred frames (reflect padding) and
    ``log(|S| + 1e-7)``, as the peers' librosa code does. CREMA-D's setting
    (22050 Hz, 3 s, n_fft 512, hop 353) gives 257 x 188.

    Args:
      samples: mono samples in [-1, 1], e.g. of :func:`read_wav`.
      rate: their sample rate.
      sample_rate, seconds, n_fft, hop: the spectrogram's settings.
      resampler: one of ``RESAMPLERS``, used when ``rate`` is not ``sample_rate``.

    Returns:
      float32 ``[n_fft // 2 + 1, 1 + length // hop]``.

    Raises:
      ValueError: an unknown ``resampler``.
    """
    samples = resample(samples, rate, sample_rate, resampler)
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
        raise DataLayoutError(
            f"{folder}: expected a folder of extracted frames ({'/'.join(IMAGE_SUFFIXES)}), found none"
        )
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
