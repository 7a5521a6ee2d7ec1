"""The Twitter-2015 builder reads TomBERT's published layout, and names what is wrong with it."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests import builder_checks

# Real lines of TomBERT's tsv files, byte for byte; tests/data/twitter2015/README.md says which.
PUBLISHED = Path(__file__).parent / "data" / "twitter2015"

HEADER = "index\t#1 Label\t#2 ImageID\t#3 String\t#3 String"
# split -> (file, labels as written; the first two rows of each split share an image, as a tweet's targets do)
SPLITS = {"train": ("train.tsv", [0, 2, 1]), "validation": ("dev.tsv", [1, 1]), "test": ("test.tsv", [2, 0])}


def row(index, label, image_id, tweet, target):
    return "\t".join(map(str, (index, label, image_id, tweet, target)))


def write_twitter2015(root, rng=np.random.default_rng(0)):
    """A tiny Twitter-2015 in TomBERT's layout: three tsv files and twitter2015_images/."""
    for split, (filename, labels) in SPLITS.items():
        lines = [HEADER]
        for i, label in enumerate(labels, 1):
            image_id = f"{split}{max(i - 1, 1)}.jpg"
            builder_checks.write_jpg(
                root / "twitter2015_images" / image_id, rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
            )
            lines.append(row(i, label, image_id, f"RT @ {split} : $T$ , tweet {i} !", f"Target {i}"))
        (root / filename).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture
def raw(tmp_path):
    return write_twitter2015(tmp_path / "raw")


def test_builds_every_split_and_reads_it_back(raw, tmp_path):
    arrays = builder_checks.check_round_trip(
        "twitter2015",
        raw,
        tmp_path / "prepared",
        counts={split: len(labels) for split, (_, labels) in SPLITS.items()},
        labels={split: labels for split, (_, labels) in SPLITS.items()},
    )
    train = arrays["train"]
    builder_checks.check_images(train["image"], 3)
    order = np.argsort(train["id"])
    assert train["id"][order].tolist() == ["train.tsv:1", "train.tsv:2", "train.tsv:3"]  # As the index column
    # The target replaces $T$ in the text and is kept on its own; rows keep their labels.
    assert train["text"][order].tolist() == [f"RT @ train : Target {i} , tweet {i} !" for i in (1, 2, 3)]
    assert train["target"][order].tolist() == ["Target 1", "Target 2", "Target 3"]
    assert train["label"][order].tolist() == [0, 2, 1]
    # Two targets of one tweet: two examples, one image.
    np.testing.assert_array_equal(train["image"][order[0]], train["image"][order[1]])


def test_missing_split_file_is_named(raw, tmp_path):
    (raw / "dev.tsv").unlink()
    builder_checks.check_layout_error("twitter2015", raw, tmp_path / "prepared", raw / "dev.tsv")


def test_missing_header_is_named(raw, tmp_path):
    path = raw / "test.tsv"
    path.write_text(path.read_text().split("\n", 1)[1])  # TomBERT would skip the first row in its place.
    builder_checks.check_layout_error("twitter2015", raw, tmp_path / "prepared", f"{path}:1: expected a header line")


@pytest.mark.parametrize(
    "bad_row,problem",
    [
        ("4\t1\ttrain1.jpg\ta $T$ without its target", "expected 5 tab-separated"),
        (row(4, 3, "train1.jpg", "$T$ has label 3", "x"), "unknown label"),
        (row("four", 1, "train1.jpg", "$T$ !", "x"), "expected an integer index"),
        (row(4, 1, "train1", "$T$ !", "x"), "expected an image file name"),
        (row(4, 1, "train1.jpg", "no target", "x"), "expected a tweet with $T$"),
    ],
)
def test_bad_row_is_named_with_its_line(raw, tmp_path, bad_row, problem):
    path = raw / "train.tsv"
    path.write_text(path.read_text() + bad_row + "\n")
    builder_checks.check_layout_error("twitter2015", raw, tmp_path / "prepared", f"{path}:5: {problem}")


def test_missing_image_is_named(raw, tmp_path):
    (raw / "twitter2015_images" / "validation1.jpg").unlink()
    builder_checks.check_layout_error(
        "twitter2015", raw, tmp_path / "prepared", raw / "twitter2015_images" / "validation1.jpg"
    )


def test_corrupt_image_is_named(raw, tmp_path):
    builder_checks.corrupt(raw / "twitter2015_images" / "test1.jpg")
    builder_checks.check_layout_error(
        "twitter2015", raw, tmp_path / "prepared", raw / "twitter2015_images" / "test1.jpg"
    )


def write_published(root, text_dir, rng=np.random.default_rng(0)):
    """PUBLISHED's tsv files in ``text_dir`` and a small jpg for each image they name in root/twitter2015_images."""
    text_dir.mkdir(parents=True, exist_ok=True)
    for filename in ("train.tsv", "dev.tsv", "test.tsv"):
        shutil.copy(PUBLISHED / filename, text_dir / filename)
        for line in (PUBLISHED / filename).read_text().splitlines()[1:]:
            path = root / "twitter2015_images" / line.split("\t")[2]
            if not path.exists():
                builder_checks.write_jpg(path, rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))
    return root


@pytest.mark.parametrize("layout", ["archive", "flat"])
def test_published_rows_are_read_in_both_layouts(tmp_path, layout):
    raw = tmp_path / "raw"
    write_published(raw, raw / "twitter2015" if layout == "archive" else raw)
    arrays = builder_checks.check_round_trip(
        "twitter2015",
        raw,
        tmp_path / "prepared",
        counts={"train": 30, "validation": 15, "test": 15},
        labels={
            "train": [0] * 3 + [1] * 16 + [2] * 11,
            "validation": [0] * 3 + [1] * 9 + [2] * 3,
            "test": [0] + [1] * 11 + [2] * 3,
        },
    )
    builder_checks.check_images(arrays["train"]["image"], 30)
    # test.tsv's header names 4 columns over 5; its rows are read as the others'.
    assert (PUBLISHED / "test.tsv").read_text().split("\n")[0] == "index\t#1 ImageID\t#2 String\t#2 String"
    test = {key: (text, target) for key, text, target in zip(*(arrays["test"][f] for f in ("id", "text", "target")))}
    assert test["test.tsv:2"] == ("Crazy hair day ! Lydia is a contender . : )", "Lydia")


def test_missing_split_file_in_the_archive_layout_is_named(tmp_path):
    raw = write_published(tmp_path / "raw", tmp_path / "raw" / "twitter2015")
    (raw / "twitter2015" / "dev.tsv").unlink()
    builder_checks.check_layout_error("twitter2015", raw, tmp_path / "prepared", raw / "twitter2015" / "dev.tsv")
