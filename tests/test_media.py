"""The media decoders: log-spectrograms against a textbook STFT and librosa, resampling, wav reading."""

from pathlib import Path

import numpy as np
import pytest
import resampy
from scipy import signal

from mie_jax.data.builders import DataLayoutError, cremad, media
from tests import builder_checks

AUDIO = Path(__file__).resolve().parent / "data" / "audio"
# librosa's log-spectrograms of chirp_16k.wav, one per resampler: see make_reference.py there for how.
LIBROSA = AUDIO / "chirp_16k_librosa.npz"


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


def cremad_log_spectrogram(samples, rate, resampler):
    """What the CREMA-D builder stores for a wav's samples (its settings, with ``resampler``)."""
    settings = cremad.SPECTROGRAM
    return media.log_spectrogram(
        samples,
        rate,
        sample_rate=settings.sample_rate,
        seconds=settings.seconds,
        n_fft=settings.n_fft,
        hop=settings.hop,
        resampler=resampler,
    )


def mean_nats_from_librosa(log_spectrogram, resampler):
    with np.load(LIBROSA) as references:
        reference = references[resampler]
    assert log_spectrogram.shape == reference.shape == cremad.SPECTROGRAM.shape
    return float(np.mean(np.abs(log_spectrogram - reference)))


@pytest.mark.parametrize("resampler", media.RESAMPLERS)
def test_a_16_khz_wav_gives_librosas_log_spectrogram(resampler):
    samples, rate = media.read_wav(AUDIO / "chirp_16k.wav")
    assert rate == 16000 and cremad.SPECTROGRAM.sample_rate == 22050
    assert mean_nats_from_librosa(cremad_log_spectrogram(samples, rate, resampler), resampler) < 0.01


def test_cremads_transform_is_the_peers_librosa_0_8s():
    samples, rate = media.read_wav(AUDIO / "chirp_16k.wav")
    assert mean_nats_from_librosa(cremad.SPECTROGRAM(samples, rate), "resampy_0.2_kaiser_best") < 0.01


def librosa_length(samples):
    """``samples`` cut or zero-padded to librosa's length of the 2.5 s clip at 22050 Hz."""
    length = 55135  # ceil(40007 * 22050 / 16000)
    return np.pad(samples[:length], (0, max(0, length - len(samples))))


# Resamplings that the bound must refuse (the 16 kHz clip in, 22050 Hz out): scipy's resample_poly with its
# default filter (librosa's res_type "polyphase"), and the "kaiser_best" of resampy >= 0.3, not the peers'.
IMPOSTORS = {
    "polyphase": lambda samples: signal.resample_poly(samples, 441, 320),
    "resampy_kaiser_best": lambda samples: resampy.resample(samples, 16000, 22050, filter="kaiser_best"),
}


@pytest.mark.parametrize("resampler", media.RESAMPLERS)
@pytest.mark.parametrize("impostor", [*IMPOSTORS, "other"])
def test_the_librosa_bound_tells_resamplers_apart(resampler, impostor):
    # Each leaves another residue above 8 kHz, where the 16 kHz source holds nothing.
    samples, rate = media.read_wav(AUDIO / "chirp_16k.wav")
    if impostor == "other":
        (other,) = set(media.RESAMPLERS) - {resampler}
        got = cremad_log_spectrogram(samples, rate, other)
    else:
        got = cremad.SPECTROGRAM(librosa_length(IMPOSTORS[impostor](samples)), 22050)  # At 22050 Hz already.
    assert mean_nats_from_librosa(got, resampler) > 0.05


@pytest.mark.parametrize("resampler", media.RESAMPLERS)
def test_resampling_a_band_limited_signal_evaluates_it_at_the_new_times(resampler):
    rng = np.random.default_rng(0)
    # Below 6 kHz: both resamplers' passbands end above it (at 8 kHz, 16 kHz's Nyquist, they cut).
    frequencies, phases = np.array([110.0, 997.0, 2500.0, 4321.0, 6000.0]), rng.uniform(0, 2 * np.pi, 5)

    def sines(count, rate):
        times = np.arange(count)[:, None] / rate
        return 0.18 * np.sin(2 * np.pi * frequencies * times + phases).sum(axis=1)

    source = sines(16001, 16000)
    got = media.resample(source, 16000, 22050, resampler)
    assert got.dtype == np.float32 and len(got) == 22052  # ceil(16001 * 22050 / 16000), as librosa's.
    interior = slice(2205, -2205)  # 0.1 s from either end, where the filters see zeros beyond the signal.
    np.testing.assert_allclose(got[interior], sines(len(got), 22050)[interior], rtol=0, atol=1e-4)


def test_resampling_to_the_same_rate_keeps_the_samples_and_an_unknown_resampler_is_refused():
    samples = np.random.default_rng(0).uniform(-1, 1, 100).astype(np.float32)
    assert media.resample(samples, 16000, 16000) is samples
    with pytest.raises(ValueError, match="resampler must be one of"):
        media.log_spectrogram(samples, 16000, sample_rate=16000, seconds=0.01, n_fft=32, hop=8, resampler="fft")


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
