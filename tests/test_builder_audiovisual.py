"""The audio-visual builders (CREMA-D, Kinetics-Sounds) read their published layouts and name what is wrong."""

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from mie_jax.data import builders
from mie_jax.data.builders import builder_class, cremad, kinetics_sounds, media
from tests import builder_checks

KINETICS_DATA = Path(__file__).parent / "data" / "kinetics_sounds"  # Real lines of OGM-GE's and BML's files.
CREMAD_DATA = Path(__file__).parent / "data" / "cremad"  # Real lines of OGM-GE's CREMA-D lists.


def write_csv(root, split, rows):
    """CREMA-D's ``<split>.csv``: ``clip_name,LABEL`` rows, no header."""
    (root / f"{split}.csv").write_text("".join(f"{clip},{label}\n" for clip, label in rows))


def write_ogm_list(root, split, rows):
    """OGM-GE's ``my_<split>.txt``: ``<clip id>,10,<class index>`` rows, CRLF, no header."""
    (root / kinetics_sounds.SPLIT_FILES[split]).write_bytes(
        b"".join(f"{clip},10,{kinetics_sounds.CLASSES.index(label)}\r\n".encode() for clip, label in rows)
    )


@dataclasses.dataclass(frozen=True)
class Fixture:
    """A tiny dataset in one builder's layout, and what the tests expect of it.

    Attributes:
      name: the dataset's name in ``builders``.
      splits: split -> (clip id, class name) rows.
      list_file: split -> the name of its list.
      write_list: writes one split's list, ``(root, split, rows)``.
      frames_per_clip: extracted frames written per clip.
      base_hz: clip k's wav is a tone of ``base_hz * (k + 1)``.
      spectrogram: the expected ``log_spectrogram`` settings, written out here
        rather than read from the builder, so that a changed constant fails.
      spectrogram_shape: the shape those settings give.
      bad_rows: (row appended to the training list, the problem its error names).
    """

    name: str
    splits: dict
    list_file: dict
    write_list: Callable
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
    splits={
        "train": [("1001_DFA_ANG_XX", "ANG"), ("1002_IEO_HAP_HI", "HAP"), ("1003_TIE_NEU_XX", "NEU")],
        "test": [("1004_ITS_SAD_XX", "SAD"), ("1005_WSI_DIS_XX", "DIS")],
    },
    list_file={"train": "train.csv", "test": "test.csv"},
    write_list=write_csv,
    frames_per_clip=3,  # CREMA-D's clips last 2 to 3 s: 1 fps extraction leaves about 3 frames.
    base_hz=200.0,
    spectrogram={"sample_rate": 22050, "seconds": 3.0, "n_fft": 512, "hop": 353},
    spectrogram_shape=(257, 188),  # OGM-GE's input size.
    bad_rows=(
        ("1006_DFA_CAL_XX,CAL", "unknown label"),
        ("1006_DFA_ANG_XX", "expected a 'clip_id,label' row"),
        ("1006_DFA_ANG_XX,ANG,extra", "expected a 'clip_id,label' row"),
        ("1001_DFA_ANG_XX,ANG", "listed twice"),
    ),
)
KINETICS_SOUNDS = Fixture(
    name="kinetics_sounds",
    # Clip ids as OGM-GE's lists write them: training ones <youtube id>_<start>_<end>, test ones <youtube id>_<n>.
    splits={
        "train": [
            ("--4-0ihtnBU_000058_000068", "dribbling_basketball"),
            ("-5WZ2MfBhz8_000011_000021", "blowing_out_candles"),
            ("-av_0U1Ij7M_000319_000329", "stomping_grapes"),
        ],
        "test": [("-3Mwkq-7TV4_2", "shoveling_snow"), ("04fLIUMTbco_6", "blowing_nose")],
    },
    list_file=dict(kinetics_sounds.SPLIT_FILES),
    write_list=write_ogm_list,
    frames_per_clip=4,
    base_hz=300.0,
    spectrogram={"sample_rate": 16000, "seconds": 10.0, "n_fft": 512, "hop": 353},
    spectrogram_shape=(257, 454),  # 10 s at 16 kHz, hop 353.
    bad_rows=(
        ("3s7-V-ClBhA_353,10,31", "unknown class index 31"),
        ("3s7-V-ClBhA_353,10", "expected a '<clip id>,10,<class index 0-30>' row"),
        ("3s7-V-ClBhA_353,10,playing_bagpipes", "expected a '<clip id>,10,<class index 0-30>' row"),
        ("-5WZ2MfBhz8_000011_000021,10,1", "listed twice"),
    ),
)
FIXTURES = (CREMAD, KINETICS_SOUNDS)


def write_media(builder, root, clips, base_hz, frames_per_clip, rng):
    """A tone wav and jpg frames per clip (clip k's tone is ``base_hz * (k + 1)``); returns clip -> samples."""
    (root / builder.AUDIO_DIR).mkdir(parents=True, exist_ok=True)
    samples = {}
    for clip in clips:
        samples[clip] = builder_checks.write_tone_wav(
            root / builder.AUDIO_DIR / f"{clip}.wav", base_hz * (len(samples) + 1)
        )
        builder_checks.write_frames(root / builder.FRAMES_DIR / clip, frames_per_clip, rng)
    return samples


def write_audiovisual(fixture, root, rng=None, splits=None):
    """Writes ``fixture``'s lists, a tone wav and jpg frames per clip.

    Returns:
      clip id -> the samples written to its wav.
    """
    splits = splits or fixture.splits
    root.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        fixture.write_list(root, split, rows)
    clips = [clip for rows in splits.values() for clip, _ in rows]
    rng = np.random.default_rng(0) if rng is None else rng
    return write_media(fixture.builder, root, clips, fixture.base_hz, fixture.frames_per_clip, rng)


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
        fixture.name,
        raw,
        tmp_path / "prepared",
        counts={split: len(rows) for split, rows in fixture.splits.items()},  # No validation split: none published.
        labels={split: [builder.CLASSES.index(label) for _, label in rows] for split, rows in fixture.splits.items()},
    )
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
                raw / builder.FRAMES_DIR / clip, builder.DEFAULT_NUM_FRAMES, builder_checks.IMAGE_SIZE
            )
            np.testing.assert_array_equal(visual, frames)


def test_default_frames_are_the_peers():
    assert cremad.CremaD.DEFAULT_NUM_FRAMES == 1 and kinetics_sounds.KineticsSounds.DEFAULT_NUM_FRAMES == 3


def test_kinetics_classes_are_bmls_31_sorted_names():
    classes = kinetics_sounds.CLASSES
    assert list(classes) == json.loads((KINETICS_DATA / "KS_train_val.json").read_text())["labels"]
    assert len(set(classes)) == 31 and list(classes) == sorted(classes)
    assert {"blowing_out_candles", "stomping_grapes"} <= set(classes)
    assert not {"playing_cello", "playing_harp"} & set(classes)


def real_kinetics(root):
    """OGM-GE's and BML's real lines (tests/data/kinetics_sounds) and media for every clip they name.

    Returns:
      split -> {clip id: class name}, as BML's JSON names each clip's class.
    """
    root.mkdir(parents=True)
    for name in (*kinetics_sounds.SPLIT_FILES.values(), kinetics_sounds.VALIDATION_FILE):
        shutil.copy(KINETICS_DATA / name, root / name)
    subsets = {"training": "train", "testing": "test", "validation": "validation"}
    expected = {split: {} for split in subsets.values()}
    for clip, entry in json.loads((root / kinetics_sounds.VALIDATION_FILE).read_text())["database"].items():
        expected[subsets[entry["subset"]]][clip] = entry["label"]
    write_media(
        kinetics_sounds.KineticsSounds,
        root,
        [c for clips in expected.values() for c in clips],
        300.0,
        3,
        np.random.default_rng(1),
    )
    return expected


def test_kinetics_real_lists_give_bmls_labels_and_its_validation_split(tmp_path):
    expected = real_kinetics(tmp_path / "raw")
    assert {split: len(clips) for split, clips in expected.items()} == {"train": 17, "test": 13, "validation": 6}
    arrays = builder_checks.check_round_trip(
        "kinetics_sounds",
        tmp_path / "raw",
        tmp_path / "prepared",
        counts={split: len(clips) for split, clips in expected.items()},
        labels={
            split: [kinetics_sounds.CLASSES.index(name) for name in clips.values()] for split, clips in expected.items()
        },
    )
    for split, clips in expected.items():
        got = arrays[split]
        assert {clip: kinetics_sounds.CLASSES[label] for clip, label in zip(got["id"], got["label"])} == clips
    # Line 1 of my_train.txt, '--4-0ihtnBU_000058_000068,10,4', and line 23, the first of index 1.
    assert expected["train"]["--4-0ihtnBU_000058_000068"] == "dribbling_basketball"
    assert expected["train"]["-5WZ2MfBhz8_000011_000021"] == "blowing_out_candles"


def test_cremad_real_lists_give_ogm_ges_labels(tmp_path):
    root = tmp_path / "raw"
    root.mkdir()
    expected = {}
    for split in cremad.CremaD.SPLITS:
        data = (CREMAD_DATA / f"{split}.csv").read_bytes()
        assert data.endswith(b"\r\n") and data.count(b"\r\n") == data.count(b"\n")  # Kept as published.
        (root / f"{split}.csv").write_bytes(data)
        # Each clip's label, read here from its name's emotion field (<actor>_<sentence>_<EMO>_<level>).
        expected[split] = {line.split(b",")[0].decode(): line.split(b"_")[2].decode() for line in data.splitlines()}
    write_media(
        cremad.CremaD, root, [clip for clips in expected.values() for clip in clips], 200.0, 3, np.random.default_rng(2)
    )
    # The copied lines' labels (tests/data/cremad/README.md), in OGM-GE's class order NEU, HAP, SAD, FEA, DIS, ANG.
    per_class = {"train": [3, 4, 7, 4, 5, 8], "test": [5, 4, 6, 2, 6, 7]}
    arrays = builder_checks.check_round_trip(
        "cremad",
        root,
        tmp_path / "prepared",
        counts={"train": 31, "test": 30},
        labels={
            split: [index for index, n in enumerate(counts) for _ in range(n)] for split, counts in per_class.items()
        },
    )
    for split, clips in expected.items():
        got = arrays[split]
        assert {clip: cremad.CLASSES[label] for clip, label in zip(got["id"], got["label"])} == clips
    # Line 1 of train.csv, line 2190 (the docstring's example) and line 744 of test.csv.
    assert expected["train"]["1088_IOM_NEU_XX"] == "NEU" and expected["train"]["1001_DFA_ANG_XX"] == "ANG"
    assert expected["test"]["1014_TIE_HAP_XX"] == "HAP"
    assert cremad.CLASSES.index("NEU") == 0 and cremad.CLASSES.index("ANG") == 5


@pytest.mark.parametrize(
    "change,problem",
    [
        (lambda data: data["labels"].reverse(), "expected the labels"),
        (
            lambda data: data["database"]["--RVKBMp_2M_79"].update(label="playing_cello"),
            "unknown label 'playing_cello'",
        ),
        (lambda data: data["database"]["-3Mwkq-7TV4_2"].update(subset="validation"), "also listed in my_test.txt"),
        (lambda data: data.pop("database"), "expected BML's JSON"),
        (lambda data: [entry.update(subset="training") for entry in data["database"].values()], "lists no clip"),
    ],
)
def test_wrong_validation_json_is_named(tmp_path, change, problem):
    real_kinetics(tmp_path / "raw")
    path = tmp_path / "raw" / kinetics_sounds.VALIDATION_FILE
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    with pytest.raises(builders.DataLayoutError, match=problem) as info:
        builder_checks.build("kinetics_sounds", tmp_path / "raw", tmp_path / "prepared")
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)
    builder_checks.assert_nothing_prepared(tmp_path / "prepared")


def test_missing_directory_is_named(fixture, tmp_path):
    nowhere = tmp_path / "nowhere"
    builder_checks.check_layout_error(fixture.name, nowhere, tmp_path / "prepared", nowhere)


@pytest.mark.parametrize("split", ["train", "test"])
def test_missing_split_file_is_named(fixture, raw, tmp_path, split):
    (raw / fixture.list_file[split]).unlink()
    builder_checks.check_layout_error(fixture.name, raw, tmp_path / "prepared", raw / fixture.list_file[split])


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
    builder_checks.check_bad_line(
        fixture.name, raw, tmp_path / "prepared", raw / fixture.list_file["train"], line, problem
    )
