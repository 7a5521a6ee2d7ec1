"""The Kinetics-Sounds builder reads its documented layout, and names what is wrong with it."""

import numpy as np
import pytest

from mie_jax.data.builders import kinetics_sounds, media
from tests import builder_checks

# split -> (youtube id, class name) rows; YouTube ids may start with '-' and hold '_'.
SPLITS = {
    "train": [("-3Mwkq-7TV4_2", "playing bagpipes"), ("04fLIUMTbco_6", "tap dancing"), ("0bXjaGuxRSU_2", "singing")],
    "test": [("1widWpujNQg_0", "playing bagpipes"), ("2Q8zm2Vn-M0_70", "shoveling snow")],
}
FRAMES_PER_CLIP = 4


def write_kinetics_sounds(root, rng=np.random.default_rng(0)):
    """A tiny Kinetics-Sounds: csvs with a header, a tone wav per clip (one frequency each), 4 jpg frames per clip.

    Returns:
      youtube id -> the samples written to its wav.
    """
    (root / "audio").mkdir(parents=True)
    samples = {}
    for split, rows in SPLITS.items():
        (root / f"{split}.csv").write_text("youtube_id,label\n" + "".join(f"{i},{label}\n" for i, label in rows))
        for clip, _ in rows:
            samples[clip] = builder_checks.write_tone_wav(root / "audio" / f"{clip}.wav", 300.0 * (len(samples) + 1))
            builder_checks.write_frames(root / "visual" / clip, FRAMES_PER_CLIP, rng)
    return samples


@pytest.fixture
def raw(tmp_path):
    root = tmp_path / "raw"
    write_kinetics_sounds(root)
    return root


def test_classes_are_the_31_sorted_kinetics_names():
    assert len(set(kinetics_sounds.CLASSES)) == 31
    assert list(kinetics_sounds.CLASSES) == sorted(kinetics_sounds.CLASSES)


def test_builds_every_split_and_reads_it_back(tmp_path):
    raw = tmp_path / "raw"
    samples = write_kinetics_sounds(raw)
    arrays = builder_checks.check_round_trip(
        "kinetics_sounds", raw, tmp_path / "prepared",
        counts={split: len(rows) for split, rows in SPLITS.items()},
        labels={split: [kinetics_sounds.CLASSES.index(label) for _, label in rows] for split, rows in SPLITS.items()})
    assert kinetics_sounds.SPECTROGRAM.shape == (257, 454)  # 10 s at 16 kHz, hop 353.
    num_frames = kinetics_sounds.KineticsSounds.DEFAULT_NUM_FRAMES
    for split, rows in SPLITS.items():
        got, labels = arrays[split], dict(rows)
        assert got["audio"].dtype == np.float32 and got["audio"].shape == (len(rows), 257, 454)
        assert got["visual"].shape[1] == num_frames == 3
        builder_checks.check_images(got["visual"], len(rows))
        for clip, label, audio, visual in zip(got["id"], got["label"], got["audio"], got["visual"]):
            assert kinetics_sounds.CLASSES[label] == labels[clip]
            expected = media.log_spectrogram(samples[clip], 16000, sample_rate=16000, seconds=10.0, n_fft=512, hop=353)
            np.testing.assert_allclose(audio, expected, rtol=1e-6, atol=1e-6)
            folder = raw / "visual" / clip
            frames = media.read_frame_folder(folder, num_frames, builder_checks.IMAGE_SIZE)
            np.testing.assert_array_equal(visual, frames)


def test_missing_directory_is_named(tmp_path):
    nowhere = tmp_path / "nowhere"
    builder_checks.check_layout_error("kinetics_sounds", nowhere, tmp_path / "prepared", nowhere)


def test_missing_split_file_is_named(raw, tmp_path):
    (raw / "train.csv").unlink()
    builder_checks.check_layout_error("kinetics_sounds", raw, tmp_path / "prepared", raw / "train.csv")


def test_missing_header_is_named(raw, tmp_path):
    path = raw / "test.csv"
    path.write_text("".join(f"{i},{label}\n" for i, label in SPLITS["test"]))
    builder_checks.check_layout_error("kinetics_sounds", raw, tmp_path / "prepared", f"{path}:1")


def test_missing_wav_is_named(raw, tmp_path):
    wav = raw / "audio" / "2Q8zm2Vn-M0_70.wav"
    wav.unlink()
    builder_checks.check_layout_error("kinetics_sounds", raw, tmp_path / "prepared", wav)


def test_corrupt_wav_is_named(raw, tmp_path):
    wav = raw / "audio" / "-3Mwkq-7TV4_2.wav"
    builder_checks.corrupt(wav)
    builder_checks.check_layout_error("kinetics_sounds", raw, tmp_path / "prepared", wav)


def test_missing_frame_folder_is_named(raw, tmp_path):
    folder = raw / "visual" / "0bXjaGuxRSU_2"
    for frame in folder.iterdir():
        frame.unlink()
    folder.rmdir()
    builder_checks.check_layout_error("kinetics_sounds", raw, tmp_path / "prepared", folder)


def test_corrupt_frame_is_named(raw, tmp_path):
    kept = media.evenly_spaced(FRAMES_PER_CLIP, kinetics_sounds.KineticsSounds.DEFAULT_NUM_FRAMES)
    frame = sorted((raw / "visual" / "1widWpujNQg_0").iterdir())[kept[-1]]  # One the builder reads.
    builder_checks.corrupt(frame)
    builder_checks.check_layout_error("kinetics_sounds", raw, tmp_path / "prepared", frame)


@pytest.mark.parametrize("line,problem", [
    ("3s7-V-ClBhA_353,playing ukulele", "unknown label"),
    ("3s7-V-ClBhA_353", "expected a 'clip_id,label' row"),
    (",playing bagpipes", "expected a 'clip_id,label' row"),
    ("-3Mwkq-7TV4_2,playing bagpipes", "listed twice"),
])
def test_bad_row_is_named_with_its_line(raw, tmp_path, line, problem):
    builder_checks.check_bad_line("kinetics_sounds", raw, tmp_path / "prepared", raw / "train.csv", line, problem)
