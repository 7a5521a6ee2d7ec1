"""Writes librosa's log-spectrograms of ``chirp_16k.wav``, the references of ``tests/test_media.py``.

librosa is no dependency of mie-jax: each reference is computed once, in a
throwaway environment with the librosa that defines it, and added to
``chirp_16k_librosa.npz`` (the other kept)::

  # resampy_0.2_kaiser_best: the peers' librosa 0.8, whose default resampler is resampy 0.2's
  # kaiser_best (resampy >= 0.3 ships another filter under that name). Python 3.10, numpy < 1.24.
  python3.10 -m venv /tmp/librosa08-venv
  /tmp/librosa08-venv/bin/pip install librosa==0.8.1 resampy==0.2.2 numba==0.55.2 llvmlite==0.38.1 \
      numpy==1.22.4 'scipy<1.10' soundfile==0.14.0
  /tmp/librosa08-venv/bin/python tests/data/audio/make_reference.py

  # soxr_hq: librosa >= 0.10's default resampler.
  python3 -m venv /tmp/librosa-venv
  /tmp/librosa-venv/bin/pip install librosa==0.11.0 soxr==1.1.0 soundfile==0.14.0
  /tmp/librosa-venv/bin/python tests/data/audio/make_reference.py

A reference follows the audio-visual peers' CREMA-D recipe (OGM-GE's dataset
code): ``librosa.load`` at 22050 Hz (soundfile's float32 samples, the mean of
the channels, no normalisation, resampled and cut or padded to
``ceil(n * 22050 / 16000)`` samples), tiled and cut to 3 s, clipped to
[-1, 1], a reflect-padded float32 STFT (n_fft 512, hop 353: librosa 0.8's
default padding, which later versions need spelled out) and
``log(|S| + 1e-7)``.

The wav, written by the first run and committed, is 40007 samples (2.5 s) of
a linear chirp from 100 Hz to 7.9 kHz at 0.4 plus white noise (std 0.05) as
16-bit mono PCM at 16 kHz: CREMA-D's clips last 2 to 3 s, so the recipe tiles
them, and a length that 16000 / 22050 does not divide checks the resampled
length too.
"""

import wave
from pathlib import Path

import librosa
import numpy as np

HERE = Path(__file__).resolve().parent
WAV = HERE / "chirp_16k.wav"
REFERENCES = HERE / "chirp_16k_librosa.npz"
RATE = 16000
LENGTH = 40007


def write_chirp(path: Path) -> None:
    times = np.arange(LENGTH) / RATE
    sweep = 100.0 * times + (7900.0 - 100.0) / (2 * times[-1]) * times**2  # Phase / (2 pi) of the chirp.
    x = 0.4 * np.sin(2 * np.pi * sweep) + 0.05 * np.random.default_rng(0).standard_normal(LENGTH)
    pcm = np.round(np.clip(x, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(RATE)
        f.writeframes(pcm.tobytes())


def peers_log_spectrogram(path: Path, res_type: str) -> np.ndarray:
    """OGM-GE's CREMA-D audio input, with ``res_type`` as librosa.load's resampler."""
    samples, rate = librosa.load(path, sr=22050, res_type=res_type)
    resamples = np.tile(samples, 3)[: 22050 * 3]
    resamples[resamples > 1.0] = 1.0
    resamples[resamples < -1.0] = -1.0
    spectrogram = librosa.stft(resamples, n_fft=512, hop_length=353, pad_mode="reflect")
    return np.log(np.abs(spectrogram) + 1e-7)


def main():
    if librosa.__version__.startswith("0.8."):
        import resampy

        assert resampy.__version__.startswith("0.2."), resampy.__version__
        name, res_type, versions = "resampy_0.2_kaiser_best", "kaiser_best", f"resampy {resampy.__version__}"
    else:
        import soxr

        name, res_type, versions = "soxr_hq", "soxr_hq", f"soxr {soxr.__version__}"
    versions = f"librosa {librosa.__version__}, {versions}, numpy {np.__version__}"
    if not WAV.exists():
        write_chirp(WAV)
    kept = dict(np.load(REFERENCES)) if REFERENCES.exists() else {}
    kept[name] = peers_log_spectrogram(WAV, res_type).astype(np.float32)
    kept[f"{name} versions"] = np.array(versions)
    np.savez_compressed(REFERENCES, **kept)
    print(f"{name}: {versions}, {kept[name].shape}")


if __name__ == "__main__":
    main()
