"""The Sarcasm builder reads Cai et al.'s published layout, and names what is wrong with it."""

import ast
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mie_jax.data import builders
from tests import builder_checks

# Real lines of the published text files, byte for byte (CRLF included); tests/data/sarcasm/README.md says which.
PUBLISHED = Path(__file__).parent / "data" / "sarcasm"
# Lines of PUBLISHED's train.txt whose text has a word of the authors' filter as a token, found by running
# loadData.py's test on them; the authors published no image for them. valid2.txt and test2.txt have none.
DROPPED_TRAIN_LINES = (1, 2, 4, 9, 15, 21, 22, 26, 33, 34, 37, 40, 44, 45, 46, 47, 48, 49, 50, 53, 54, 56, 62, 69)

# (split file, number of fields per line, labels)
SPLITS = {
    "train": ("train.txt", 3, [0, 1, 1]),
    "validation": ("valid2.txt", 4, [1, 0]),
    "test": ("test2.txt", 4, [0, 1]),
}


def write_sarcasm(root, rng=np.random.default_rng(0)):
    """A tiny synthetic Sarcasm in the published layout: list-literal text files and jpg images."""
    (root / "text").mkdir(parents=True)
    (root / "dataset_image").mkdir()
    for split, (filename, width, labels) in SPLITS.items():
        lines = []
        for i, label in enumerate(labels):
            image_id = f"{split}{i:04d}"
            pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "dataset_image" / f"{image_id}.jpg")
            fields = [image_id, f"tweet {i} of {split}, isn't it <user>"] + [0] * (width - 3) + [label]
            lines.append(repr(fields))
        (root / "text" / filename).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture
def raw(tmp_path):
    return write_sarcasm(tmp_path / "raw")


def test_builds_every_split_and_reads_it_back(raw, tmp_path):
    arrays = builder_checks.check_round_trip(
        "sarcasm",
        raw,
        tmp_path / "prepared",
        counts={split: len(labels) for split, (_, _, labels) in SPLITS.items()},
        labels={split: labels for split, (_, _, labels) in SPLITS.items()},
    )
    train = arrays["train"]
    builder_checks.check_images(train["image"], 3)
    assert set(train["text"]) == {f"tweet {i} of train, isn't it <user>" for i in range(3)}
    assert sorted(train["id"]) == ["train0000", "train0001", "train0002"]


def test_preparing_twice_reuses_the_prepared_copy(raw, tmp_path):
    first = builder_checks.build("sarcasm", raw, tmp_path / "prepared")
    (raw / "text" / "train.txt").unlink()  # A rebuild would now fail.
    second = builder_checks.build("sarcasm", raw, tmp_path / "prepared")
    assert second.data_dir == first.data_dir


def test_missing_directory_is_named(tmp_path):
    builder_checks.check_layout_error("sarcasm", tmp_path / "nowhere", tmp_path / "prepared", tmp_path / "nowhere")


def test_missing_split_file_is_named(raw, tmp_path):
    (raw / "text" / "test2.txt").unlink()
    builder_checks.check_layout_error("sarcasm", raw, tmp_path / "prepared", raw / "text" / "test2.txt")


def test_missing_image_is_named(raw, tmp_path):
    (raw / "dataset_image" / "validation0001.jpg").unlink()
    builder_checks.check_layout_error(
        "sarcasm", raw, tmp_path / "prepared", raw / "dataset_image" / "validation0001.jpg"
    )


def test_corrupt_image_is_named(raw, tmp_path):
    builder_checks.corrupt(raw / "dataset_image" / "test0000.jpg")
    builder_checks.check_layout_error("sarcasm", raw, tmp_path / "prepared", raw / "dataset_image" / "test0000.jpg")


@pytest.mark.parametrize("line,problem", [("['x', 'text', 2]", "unknown label"), ("not a list", "list literal")])
def test_bad_line_is_named_with_its_number(raw, tmp_path, line, problem):
    path = raw / "text" / "train.txt"
    path.write_text(path.read_text() + line + "\n")
    with pytest.raises(ValueError, match=problem) as info:
        builder_checks.build("sarcasm", raw, tmp_path / "prepared")
    assert f"{path}:4" in str(info.value)
    builder_checks.assert_nothing_prepared(tmp_path / "prepared")


def published_lines(filename):
    """The list literals of one of PUBLISHED's files, in order."""
    return [ast.literal_eval(line) for line in (PUBLISHED / "text" / filename).read_text(encoding="utf-8").splitlines()]


def write_published(root, rng=np.random.default_rng(0)):
    """PUBLISHED's text files, and a jpg for each post but the dropped ones, as the authors published them."""
    shutil.copytree(PUBLISHED / "text", root / "text")
    for filename in ("train.txt", "valid2.txt", "test2.txt"):
        for number, fields in enumerate(published_lines(filename), 1):
            if filename != "train.txt" or number not in DROPPED_TRAIN_LINES:
                builder_checks.write_jpg(
                    root / "dataset_image" / f"{fields[0]}.jpg", rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
                )
    return root


def test_published_lines_keep_the_posts_the_authors_keep(tmp_path):
    assert (PUBLISHED / "text" / "train.txt").read_bytes().count(b"\r\n") == 70  # The fixture is still CRLF.
    arrays = builder_checks.check_round_trip(
        "sarcasm",
        write_published(tmp_path / "raw"),
        tmp_path / "prepared",
        counts={"train": 46, "validation": 32, "test": 36},
        labels={"train": [0] * 8 + [1] * 38, "validation": [0] * 7 + [1] * 25, "test": [0] * 7 + [1] * 29},
    )
    builder_checks.check_images(arrays["train"]["image"], 46)
    train = published_lines("train.txt")
    kept = [fields for number, fields in enumerate(train, 1) if number not in DROPPED_TRAIN_LINES]
    assert sorted(arrays["train"]["id"]) == sorted(fields[0] for fields in kept)
    texts = set(arrays["train"]["text"])
    assert train[35][1] in texts and train[58][1] in texts  # "# motherofsarcasm", "# allofthesarcasm": no token.
    assert not any(text.endswith("\r") for split in arrays.values() for text in split["text"])
    # Validation and test carry a hashtag label, then an annotator's: the annotator's is read, as loadData.py does.
    validation = dict(zip(arrays["validation"]["id"], arrays["validation"]["label"]))
    for fields in published_lines("valid2.txt")[16], published_lines("valid2.txt")[26]:
        assert fields[2] != fields[3] and validation[fields[0]] == fields[3]


def test_published_lines_note_what_the_filter_dropped(tmp_path):
    builder = builder_checks.build("sarcasm", write_published(tmp_path / "raw"), tmp_path / "prepared")
    filter_ = "dropped by the authors' keyword filter (codes/loadData.py; their images are not published)"
    assert builders.preparation_notes(builder) == [
        f"train: 24 of 70 posts in train.txt {filter_}",
        f"validation: 0 of 32 posts in valid2.txt {filter_}",
        f"test: 0 of 36 posts in test2.txt {filter_}",
    ]
    reread = builder_checks.build("sarcasm", tmp_path / "raw", tmp_path / "prepared")  # Stored with the dataset.
    assert builders.preparation_notes(reread) == builders.preparation_notes(builder)


@pytest.mark.parametrize(
    "line,problem",
    [
        ("['1', 'text', 0, 1]", "list literal"),
        ("['1', 'a joke', 5]", "unknown label"),  # Dropped, yet checked.
        ("['854387227362807810', 'again', 1]", "already on line 36"),
    ],
)
def test_bad_published_line_is_named_with_its_number(tmp_path, line, problem):
    raw = write_published(tmp_path / "raw")
    builder_checks.check_bad_line("sarcasm", raw, tmp_path / "prepared", raw / "text" / "train.txt", line, problem)
