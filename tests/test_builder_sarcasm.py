"""The Sarcasm builder reads Cai et al.'s published layout, and names what is wrong with it."""

import numpy as np
import pytest
from PIL import Image

from tests import builder_checks

# (split file, number of fields per line, labels)
SPLITS = {"train": ("train.txt", 3, [0, 1, 1]), "validation": ("valid2.txt", 4, [1, 0]), "test": ("test2.txt", 4, [0, 1])}


def write_sarcasm(root, rng=np.random.default_rng(0)):
    """A tiny Sarcasm in the published layout: list-literal text files and jpg images."""
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
        "sarcasm", raw, tmp_path / "prepared",
        counts={split: len(labels) for split, (_, _, labels) in SPLITS.items()},
        labels={split: labels for split, (_, _, labels) in SPLITS.items()})
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
    builder_checks.check_layout_error("sarcasm", raw, tmp_path / "prepared", raw / "dataset_image" / "validation0001.jpg")


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
