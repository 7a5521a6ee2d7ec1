"""The audio-visual builders (CREMA-D, Kinetics-Sounds) read their layouts, and name what is wrong with them."""

import dataclasses

import numpy as np
import pytest

from mie_jax.data.builders import builder_class, cremad, kinetics_sounds, media
from tests import builder_checks


@dataclasses.dataclass(frozen=True)
class Fixture:
    """A tiny dataset in one builder's layout, and what the tests expect of it.

    Attributes:
      name: the dataset's name in ``builders``.
      splits: split -> (clip id, label) rows, in the csv format.
      frames_per_clip: extracted frames written per clip.
      base_hz: clip k's wav is a tone of ``base_hz * (k + 1)``.
      spectrogram: the expected ``log_spectrogram`` settings, written out here
        rather than read from the builder, so that a changed constant fails.
      spectrogram_shape: the shape those settings give.
      bad_rows: (row appended to train.csv, the problem its error names).
    """

    name: str
    splits: dict
    frames_per_clip: int
    base_hz: float
    spectrogram: dict
    spectrogram_shape: tuple
    bad_rows: tuple

    @property
    def builder(self):
        return builder_class(self.name)


CREMAD = Fixture(
    name="cremad",
    splits={"train": [("1001_DFA_ANG_XX", "ANG"), ("1002_IEO_HAP_HI", "HAP"), ("1003_TIE_NEU_XX", "NEU")],
            "test": [("1004_ITS_SAD_XX", "SAD"), ("1005_WSI_DIS_XX", "DIS")]},
    frames_per_clip=3,  # CREMA-D's clips last 2 to 3 s: 1 fps extraction leaves about 3 frames.
    base_hz=200.0,
    spectrogram={"sample_rate": 22050, "seconds": 3.0, "n_fft": 512, "hop": 353},
    spectrogram_shape=(257, 188),  # OGM-GE's input size.
    bad_rows=(("1006_DFA_CAL_XX,CAL", "unknown label"),
              ("1006_DFA_ANG_XX", "expected a 'clip_id,label' row"),
              ("1006_DFA_ANG_XX,ANG,extra", "expected a 'clip_id,label' row"),
              ("1001_DFA_ANG_XX,ANG", "listed twice")),
)
KINETICS_SOUNDS = Fixture(
    name="kinetics_sounds",
    # YouTube ids may start with '-' and hold '_'.
    splits={"train": [("-3Mwkq-7TV4_2", "playing bagpipes"), ("04fLIUMTbco_6", "tap dancing"),
                      ("0bXjaGuxRSU_2", "singing")],
            "test": [("1widWpujNQg_0", "playing bagpipes"), ("2Q8zm2Vn-M0_70", "shoveling snow")]},
    frames_per_clip=4,
    base_hz=300.0,
    spectrogram={"sample_rate": 16000, "seconds": 10.0, "n_fft": 512, "hop": 353},
    spectrogram_shape=(257, 454),  # 10 s at 16 kHz, hop 353.
    bad_rows=(("3s7-V-ClBhA_353,playing ukulele", "unknown label"),
              ("3s7-V-ClBhA_353", "expected a 'clip_id,label' row"),
              (",playing bagpipes", "expected a 'clip_id,label' row"),
              ("-3Mwkq-7TV4_2,playing bagpipes", "listed twice")),
)
FIXTURES = (CREMAD, KINETICS_SOUNDS)


def write_audiovisual(fixture, root, rng=None, splits=None):
    """Writes ``fixture``'s csvs (with the builder's header, if any), a tone wav and jpg frames per clip.

    Returns:
      clip id -> the samples written to its wav.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    builder = fixture.builder
    header = ",".join(builder.CSV_HEADER) + "\n" if builder.CSV_HEADER else ""
    (root / builder.AUDIO_DIR).mkdir(parents=True)
    samples = {}
    for split, rows in (splits or fixture.splits).items():
        (root / f"{split}.csv").write_text(header + "".join(f"{clip},{label}\n" for clip, label in rows))
        for clip, _ in rows:
            tone = fixture.base_hz * (len(samples) + 1)
            samples[clip] = builder_checks.write_tone_wav(root / builder.AUDIO_DIR / f"{clip}.wav", tone)
            builder_checks.write_frames(root / builder.FRAMES_DIR / clip, fixture.frames_per_clip, rng)
    return samples


def write_cremad(root, splits=None):
    """A tiny CREMA-D in the peers' layout (``splits`` replaces its rows)."""
    return write_audiovisual(CREMAD, root, splits=splits)


@pytest.fixture(params=FIXTURES, ids=lambda f: f.name)
def fixture(request):
    return request.param


@pytest.fixture
def raw(fixture, tmp_path):
    root = tmp_path / "raw"
    write_audiovisual(fixture, root)
    return root


def clip_path(fixture, raw, split, index, kind):
    """The wav or frame folder of the ``index``-th clip of ``split``."""
    clip = fixture.splits[split][index][0]
    builder = fixture.builder
    return raw / builder.AUDIO_DIR / f"{clip}.wav" if kind == "wav" else raw / builder.FRAMES_DIR / clip


def test_builds_every_split_and_reads_it_back(fixture, tmp_path):
    raw = tmp_path / "raw"
    samples = write_audiovisual(fixture, raw)
    builder = fixture.builder
    arrays = builder_checks.check_round_trip(
        fixture.name, raw, tmp_path / "prepared",
        counts={split: len(rows) for split, rows in fixture.splits.items()},
        labels={split: [builder.CLASSES.index(label) for _, label in rows] for split, rows in fixture.splits.items()})
    assert builder.SPECTROGRAM.shape == fixture.spectrogram_shape
    for split, rows in fixture.splits.items():
        got, labels = arrays[split], dict(rows)
        assert got["audio"].dtype == np.float32 and got["audio"].shape == (len(rows), *fixture.spectrogram_shape)
        assert got["visual"].shape[1] == builder.DEFAULT_NUM_FRAMES
        builder_checks.check_images(got["visual"], len(rows))
        for clip, label, audio, visual in zip(got["id"], got["label"], got["audio"], got["visual"]):
            assert builder.CLASSES[label] == labels[clip]
            expected = media.log_spectrogram(samples[clip], 16000, **fixture.spectrogram)
            np.testing.assert_allclose(audio, expected, rtol=1e-6, atol=1e-6)
            frames = media.read_frame_folder(
                raw / builder.FRAMES_DIR / clip, builder.DEFAULT_NUM_FRAMES, builder_checks.IMAGE_SIZE)
            np.testing.assert_array_equal(visual, frames)


def test_default_frames_are_the_peers():
    assert cremad.CremaD.DEFAULT_NUM_FRAMES == 1 and kinetics_sounds.KineticsSounds.DEFAULT_NUM_FRAMES == 3


def test_kinetics_classes_are_the_31_sorted_names():
    assert len(set(kinetics_sounds.CLASSES)) == 31
    assert list(kinetics_sounds.CLASSES) == sorted(kinetics_sounds.CLASSES)


def test_missing_directory_is_named(fixture, tmp_path):
    nowhere = tmp_path / "nowhere"
    builder_checks.check_layout_error(fixture.name, nowhere, tmp_path / "prepared", nowhere)


@pytest.mark.parametrize("split", ["train", "test"])
def test_missing_split_file_is_named(fixture, raw, tmp_path, split):
    (raw / f"{split}.csv").unlink()
    builder_checks.check_layout_error(fixture.name, raw, tmp_path / "prepared", raw / f"{split}.csv")


def test_kinetics_csv_without_its_header_is_named(tmp_path):
    raw = tmp_path / "raw"
    write_audiovisual(KINETICS_SOUNDS, raw)
    path = raw / "test.csv"
    path.write_text("".join(f"{i},{label}\n" for i, label in KINETICS_SOUNDS.splits["test"]))
    builder_checks.check_layout_error("kinetics_sounds", raw, tmp_path / "prepared", f"{path}:1")


def test_missing_wav_is_named(fixture, raw, tmp_path):
    wav = clip_path(fixture, raw, "test", 1, "wav")
    wav.unlink()
    builder_checks.check_layout_error(fixture.name, raw, tmp_path / "prepared", wav)


def test_corrupt_wav_is_named(fixture, raw, tmp_path):
    wav = clip_path(fixture, raw, "train", 1, "wav")
    builder_checks.corrupt(wav)
    builder_checks.check_layout_error(fixture.name, raw, tmp_path / "prepared", wav)


def test_missing_frame_folder_is_named(fixture, raw, tmp_path):
    folder = clip_path(fixture, raw, "train", 2, "frames")
    for frame in folder.iterdir():
        frame.unlink()
    folder.rmdir()
    builder_checks.check_layout_error(fixture.name, raw, tmp_path / "prepared", folder)


def test_corrupt_frame_is_named(fixture, raw, tmp_path):
    kept = media.evenly_spaced(fixture.frames_per_clip, fixture.builder.DEFAULT_NUM_FRAMES)
    frame = sorted(clip_path(fixture, raw, "test", 0, "frames").iterdir())[kept[-1]]  # One the builder reads.
    builder_checks.corrupt(frame)
    builder_checks.check_layout_error(fixture.name, raw, tmp_path / "prepared", frame)


@pytest.mark.parametrize("row", range(4))
def test_bad_row_is_named_with_its_line(fixture, raw, tmp_path, row):
    line, problem = fixture.bad_rows[row]
    builder_checks.check_bad_line(fixture.name, raw, tmp_path / "prepared", raw / "train.csv", line, problem)
