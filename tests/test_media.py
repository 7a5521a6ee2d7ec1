"""The media decoders: log-spectrograms against a textbook STFT, and wav reading of every PCM flavour."""

import numpy as np
import pytest
from scipy import signal

from mie_jax.data.builders import DataLayoutError, media
from tests import builder_checks


def textbook_log_spectrogram(samples, *, length, n_fft, hop):
    """``log(|STFT| + 1e-7)`` in float64, one frame and one DFT sum at a time (no resampling)."""
    clip = np.clip(np.tile(samples, length // len(samples) + 1)[:length], -1.0, 1.0)
    padded = np.pad(clip, n_fft // 2, mode="reflect")  # Centred frames, as librosa's stft.
    window = signal.get_window("hann", n_fft, fftbins=True)  # Periodic Hann, as librosa's.
    n = np.arange(n_fft)
    np.testing.assert_allclose(window, 0.5 - 0.5 * np.cos(2 * np.pi * n / n_fft), atol=1e-15)
    columns = []
    for start in range(0, length + 1, hop):
        frame = padded[start : start + n_fft] * window
        columns.append([abs(np.sum(frame * np.exp(-2j * np.pi * k * n / n_fft))) for k in range(n_fft // 2 + 1)])
    return np.log(np.array(columns).T + 1e-7)


@pytest.mark.parametrize("count,scale", [(800, 0.9), (300, 1.5)], ids=["exact_length", "short_and_clipped"])
def test_log_spectrogram_matches_a_textbook_stft(count, scale):
    samples = scale * np.random.default_rng(0).uniform(-1, 1, count)
    got = media.log_spectrogram(samples, 8000, sample_rate=8000, seconds=0.1, n_fft=64, hop=24)
    expected = textbook_log_spectrogram(samples, length=800, n_fft=64, hop=24)
    assert got.dtype == np.float32 and got.shape == expected.shape == (33, 1 + 800 // 24)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_log_spectrogram_of_three_seconds_at_22050_hz_is_257_by_188():
    samples = np.random.default_rng(0).uniform(-0.5, 0.5, 16000)  # 1 s at 16 kHz: resampled, then tiled.
    got = media.log_spectrogram(samples, 16000, sample_rate=22050, seconds=3.0, n_fft=512, hop=353)
    assert got.shape == (257, 188) and got.dtype == np.float32
    assert np.isfinite(got).all()


@pytest.mark.parametrize("dtype,channels", [(np.uint8, 1), (np.uint8, 2), (np.int16, 1), (np.int16, 2)])
def test_read_wav_gives_the_mean_of_the_channels_in_plus_minus_one(tmp_path, dtype, channels):
    info = np.iinfo(dtype)
    pcm = np.random.default_rng(0).integers(info.min, info.max, (500, channels), endpoint=True).astype(dtype)
    path = tmp_path / "clip.wav"
    builder_checks.write_wav(path, pcm, 11025)
    samples, rate = media.read_wav(path)
    # 8-bit wav is unsigned around 128; 16-bit signed. Both map full scale to [-1, 1).
    expected = (pcm.astype(np.float64) - 128) / 128 if dtype == np.uint8 else pcm / 32768.0
    assert rate == 11025 and samples.dtype == np.float32 and samples.shape == (500,)
    np.testing.assert_allclose(samples, expected.mean(axis=1), rtol=0, atol=1 / 32768)


@pytest.mark.parametrize("damage", ["header_cut", "not_a_wav"])
def test_read_wav_names_an_unreadable_file(tmp_path, damage):
    path = tmp_path / "clip.wav"
    builder_checks.write_tone_wav(path, 440.0)
    if damage == "header_cut":
        path.write_bytes(path.read_bytes()[:20])
    else:
        builder_checks.corrupt(path)
    with pytest.raises(DataLayoutError) as info:
        media.read_wav(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("keep", [45, 44 + 100], ids=["inside_a_sample", "between_samples"])
def test_read_wav_names_a_truncated_file(tmp_path, keep):
    path = tmp_path / "clip.wav"
    builder_checks.write_tone_wav(path, 440.0)
    path.write_bytes(path.read_bytes()[:keep])  # The 44-byte header, then part of the samples.
    with pytest.raises(DataLayoutError, match="truncated") as info:
        media.read_wav(path)
    assert str(path) in str(info.value)
