"""Tests for the bundled UCI Multiple Features (mfeat) dataset and its loader."""

import re
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from mie_jax.data import mfeat
from mie_jax.data.mfeat import NUM_CLASSES, SPLITS, VIEWS, load_mfeat, split_indices

ALL_VIEWS = tuple(VIEWS)
SPLIT_SIZES = {"train": 1200, "validation": 400, "test": 400}
SPLIT_SIZES_PER_CLASS = {"train": 120, "validation": 40, "test": 40}


@pytest.fixture(scope="module")
def raw():
    """The bundled npz as plain arrays."""
    with np.load(Path(mfeat.__file__).with_name("mfeat.npz")) as archive:
        return {key: archive[key] for key in archive.files}


def test_bundled_npz_contents(raw):
    assert sorted(raw) == sorted([*ALL_VIEWS, "labels"])
    for view, dim in VIEWS.items():
        assert raw[view].shape == (2000, dim)
        assert raw[view].dtype == np.float32
        assert np.all(np.isfinite(raw[view]))
    assert raw["labels"].dtype == np.int32
    # The source lists the 200 digits of each class in order 0..9.
    np.testing.assert_array_equal(raw["labels"], np.repeat(np.arange(NUM_CLASSES), 200))


@pytest.mark.parametrize("split", SPLITS)
def test_shapes_and_dtypes(split):
    data = load_mfeat(ALL_VIEWS, split=split)
    assert list(data) == [*ALL_VIEWS, "label"]
    for view, dim in VIEWS.items():
        assert data[view].shape == (SPLIT_SIZES[split], dim)
        assert data[view].dtype == np.float32
    assert data["label"].shape == (SPLIT_SIZES[split],)
    assert data["label"].dtype == np.int32


def test_default_views_are_fac_and_mor():
    assert list(load_mfeat()) == ["fac", "mor", "label"]


def test_splits_partition_all_rows(raw):
    indices = split_indices(raw["labels"], seed=0)
    all_indices = np.concatenate([indices[split] for split in SPLITS])
    # Every row exactly once: no overlap between splits and nothing left out.
    np.testing.assert_array_equal(np.sort(all_indices), np.arange(2000))

    # The loader returns exactly the rows named by the indices.
    for split in SPLITS:
        data = load_mfeat(ALL_VIEWS, split=split, standardize=False)
        for view in ALL_VIEWS:
            np.testing.assert_array_equal(data[view], raw[view][indices[split]])
        np.testing.assert_array_equal(data["label"], raw["labels"][indices[split]])


@pytest.mark.parametrize("split", SPLITS)
def test_split_is_stratified(split):
    labels = load_mfeat(("mor",), split=split)["label"]
    np.testing.assert_array_equal(
        np.bincount(labels, minlength=NUM_CLASSES), np.full(NUM_CLASSES, SPLIT_SIZES_PER_CLASS[split])
    )


def test_split_is_deterministic_per_seed():
    first = load_mfeat(("fac",), split="test", seed=3)
    again = load_mfeat(("fac",), split="test", seed=3)
    other = load_mfeat(("fac",), split="test", seed=4)
    np.testing.assert_array_equal(first["fac"], again["fac"])
    np.testing.assert_array_equal(first["label"], again["label"])
    assert not np.array_equal(first["fac"], other["fac"])


def test_standardization_uses_train_statistics(raw):
    indices = split_indices(raw["labels"], seed=0)
    train_rows = raw["fou"][indices["train"]].astype(np.float64)
    mean, std = train_rows.mean(axis=0), train_rows.std(axis=0)

    train = load_mfeat(("fou",), split="train")["fou"]
    np.testing.assert_allclose(train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(train.std(axis=0), 1.0, atol=1e-5)

    # Held-out splits are transformed with the train mean/std, not their own.
    test = load_mfeat(("fou",), split="test")["fou"]
    expected = (raw["fou"][indices["test"]] - mean) / std
    np.testing.assert_allclose(test, expected, rtol=1e-5, atol=1e-5)
    assert np.abs(test.mean(axis=0)).max() > 1e-3


def test_path_override_and_constant_feature(raw, tmp_path):
    own_copy = {key: value.copy() for key, value in raw.items()}
    own_copy["mor"][:, 0] = 7.0  # a constant feature has std 0
    path = tmp_path / "own_mfeat.npz"
    np.savez_compressed(path, **own_copy)

    data = load_mfeat(("mor",), split="validation", path=str(path))
    # Centered and left unscaled instead of divided by zero.
    np.testing.assert_array_equal(data["mor"][:, 0], 0.0)
    assert np.all(np.isfinite(data["mor"]))


@pytest.mark.parametrize(
    "views, message",
    [
        (
            ("fac", "rgb"),
            "views must be names from ['fou', 'fac', 'kar', 'pix', 'zer', 'mor'], got unknown view 'rgb'.",
        ),
        ((), "views must name at least one of"),
        (("fac", "mor", "fac"), "views must be distinct, got 'fac' more than once."),
        ("fac", "views must be a sequence of view names such as ('fac',), got the string 'fac'."),
    ],
)
def test_bad_views(views, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        load_mfeat(views)


def test_bad_split():
    message = "split must be one of ['train', 'validation', 'test'], got 'dev'."
    with pytest.raises(ValueError, match=re.escape(message)):
        load_mfeat(split="dev")


def test_missing_file(tmp_path):
    path = tmp_path / "absent.npz"
    with pytest.raises(FileNotFoundError, match=re.escape(f"path {str(path)!r}")):
        load_mfeat(path=path)


@pytest.mark.parametrize(
    "contents",
    [
        b"not an npz archive\n",
        b"",
        # A truncated copy of the real archive.
        Path(mfeat.__file__).with_name("mfeat.npz").read_bytes()[:4096],
    ],
    ids=["text", "empty", "truncated"],
)
def test_corrupt_file(tmp_path, contents):
    path = tmp_path / "corrupt.npz"
    path.write_bytes(contents)
    message = f"path {str(path)!r} is not a valid mfeat npz file"
    with pytest.raises(ValueError, match=re.escape(message)):
        load_mfeat(path=path)


def test_file_missing_a_view(raw, tmp_path):
    path = tmp_path / "no_mor.npz"
    np.savez_compressed(path, labels=raw["labels"], fac=raw["fac"])
    with pytest.raises(ValueError, match=re.escape("it lacks the arrays ['mor']")):
        load_mfeat(("fac", "mor"), path=path)


def test_file_with_wrong_view_shape(raw, tmp_path):
    path = tmp_path / "short_fac.npz"
    np.savez_compressed(path, labels=raw["labels"], fac=raw["fac"][:, :10])
    message = f"path {str(path)!r} must hold 'fac' of shape (2000, 216), got (2000, 10)."
    with pytest.raises(ValueError, match=re.escape(message)):
        load_mfeat(("fac",), path=path)


def _logistic_regression_test_accuracy(view):
    train = load_mfeat((view,), split="train")
    test = load_mfeat((view,), split="test")
    classifier = LogisticRegression(max_iter=1000)
    classifier.fit(train[view], train["label"])
    return classifier.score(test[view], test["label"])


def test_views_differ_in_strength():
    # Documents the built-in imbalance: 'fac' alone nearly solves the task,
    # the six morphological features are clearly weaker.
    fac_accuracy = _logistic_regression_test_accuracy("fac")
    mor_accuracy = _logistic_regression_test_accuracy("mor")
    assert fac_accuracy > 0.9
    assert mor_accuracy < fac_accuracy - 0.1
