"""The CREMA-D builder reads the peers' published layout, and names what is wrong with it."""

import numpy as np
import pytest

from mie_jax.data.builders import cremad, media
from tests import builder_checks

# split -> (clip name, label) rows, in the published csv format.
SPLITS = {
    "train": [("1001_DFA_ANG_XX", "ANG"), ("1002_IEO_HAP_HI", "HAP"), ("1003_TIE_NEU_XX", "NEU")],
    "test": [("1004_ITS_SAD_XX", "SAD"), ("1005_WSI_DIS_XX", "DIS")],
}
FRAMES_PER_CLIP = 3  # CREMA-D's clips last 2 to 3 s: 1 fps extraction leaves about 3 frames.


def write_cremad(root, rng=np.random.default_rng(0), splits=SPLITS):
    """A tiny CREMA-D: headerless csvs, a tone wav per clip (one frequency each), 3 jpg frames per clip.

    Returns:
      clip name -> the samples written to its wav.
    """
    (root / "AudioWAV").mkdir(parents=True)
    samples = {}
    for split, rows in splits.items():
        (root / f"{split}.csv").write_text("".join(f"{clip},{label}\n" for clip, label in rows))
        for clip, _ in rows:
            samples[clip] = builder_checks.write_tone_wav(root / "AudioWAV" / f"{clip}.wav", 200.0 * (len(samples) + 1))
            builder_checks.write_frames(root / "Image-01-FPS" / clip, FRAMES_PER_CLIP, rng)
    return samples


@pytest.fixture
def raw(tmp_path):
    root = tmp_path / "raw"
    write_cremad(root)
    return root


def test_builds_every_split_and_reads_it_back(tmp_path):
    raw = tmp_path / "raw"
    samples = write_cremad(raw)
    arrays = builder_checks.check_round_trip(
        "cremad", raw, tmp_path / "prepared",
        counts={split: len(rows) for split, rows in SPLITS.items()},
        labels={split: [cremad.CLASSES.index(label) for _, label in rows] for split, rows in SPLITS.items()})
    assert cremad.SPECTROGRAM.shape == (257, 188)  # OGM-GE's input size.
    for split, rows in SPLITS.items():
        got, labels = arrays[split], dict(rows)
        assert got["audio"].dtype == np.float32 and got["audio"].shape == (len(rows), 257, 188)
        assert got["visual"].shape[1] == cremad.CremaD.DEFAULT_NUM_FRAMES == 1
        builder_checks.check_images(got["visual"], len(rows))
        for clip, label, audio, visual in zip(got["id"], got["label"], got["audio"], got["visual"]):
            assert cremad.CLASSES[label] == labels[clip]
            expected = media.log_spectrogram(samples[clip], 16000, sample_rate=22050, seconds=3.0, n_fft=512, hop=353)
            np.testing.assert_allclose(audio, expected, rtol=1e-6, atol=1e-6)
            folder = raw / "Image-01-FPS" / clip
            np.testing.assert_array_equal(visual, media.read_frame_folder(folder, 1, builder_checks.IMAGE_SIZE))


def test_missing_directory_is_named(tmp_path):
    builder_checks.check_layout_error("cremad", tmp_path / "nowhere", tmp_path / "prepared", tmp_path / "nowhere")


def test_missing_split_file_is_named(raw, tmp_path):
    (raw / "test.csv").unlink()
    builder_checks.check_layout_error("cremad", raw, tmp_path / "prepared", raw / "test.csv")


def test_missing_wav_is_named(raw, tmp_path):
    (raw / "AudioWAV" / "1004_ITS_SAD_XX.wav").unlink()
    builder_checks.check_layout_error("cremad", raw, tmp_path / "prepared", raw / "AudioWAV" / "1004_ITS_SAD_XX.wav")


def test_corrupt_wav_is_named(raw, tmp_path):
    builder_checks.corrupt(raw / "AudioWAV" / "1002_IEO_HAP_HI.wav")
    builder_checks.check_layout_error("cremad", raw, tmp_path / "prepared", raw / "AudioWAV" / "1002_IEO_HAP_HI.wav")


def test_missing_frame_folder_is_named(raw, tmp_path):
    folder = raw / "Image-01-FPS" / "1003_TIE_NEU_XX"
    for frame in folder.iterdir():
        frame.unlink()
    folder.rmdir()
    builder_checks.check_layout_error("cremad", raw, tmp_path / "prepared", folder)


def test_corrupt_frame_is_named(raw, tmp_path):
    kept = media.evenly_spaced(FRAMES_PER_CLIP, cremad.CremaD.DEFAULT_NUM_FRAMES)
    frame = sorted((raw / "Image-01-FPS" / "1005_WSI_DIS_XX").iterdir())[kept[0]]  # The one the builder reads.
    builder_checks.corrupt(frame)
    builder_checks.check_layout_error("cremad", raw, tmp_path / "prepared", frame)


@pytest.mark.parametrize("line,problem", [
    ("1006_DFA_CAL_XX,CAL", "unknown label"),
    ("1006_DFA_ANG_XX", "expected a 'clip_id,label' row"),
    ("1006_DFA_ANG_XX,ANG,extra", "expected a 'clip_id,label' row"),
    ("1001_DFA_ANG_XX,ANG", "listed twice"),
])
def test_bad_row_is_named_with_its_line(raw, tmp_path, line, problem):
    builder_checks.check_bad_line("cremad", raw, tmp_path / "prepared", raw / "train.csv", line, problem)
