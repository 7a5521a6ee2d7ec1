"""Columns read a split's rows on demand; a prepared split's fields are written once as row files."""

import numpy as np
import pytest

from mie_jax.data import builders, columns, prepared_arrays
from tests import builder_checks
from tests.test_builder_sarcasm import write_sarcasm


def test_npy_column_reads_any_rows_in_any_order_as_the_array_does(tmp_path):
    array = np.random.default_rng(0).normal(size=(30, 4, 5)).astype(np.float32)
    np.save(tmp_path / "a.npy", array)
    column = columns.NpyColumn(tmp_path / "a.npy")
    assert column.shape == (30, 4, 5) and column.dtype == np.float32 and len(column) == 30 and column.ndim == 3
    rows = np.array([[29, 0, 7], [7, 7, 3]])
    np.testing.assert_array_equal(column[rows], array[rows])
    np.testing.assert_array_equal(np.asarray(column), array)
    with_channel = columns.NpyColumn(tmp_path / "a.npy", (4, 5, 1))
    np.testing.assert_array_equal(with_channel[np.array([2])], array[[2], ..., None])


def test_npy_column_errors_name_the_file(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match=r"a\.npy: rows of shape \(3,\) cannot be viewed as \(2,\)"):
        columns.NpyColumn(tmp_path / "a.npy", (2,))
    with pytest.raises(IndexError, match=r"a\.npy: rows 0\.\.4 asked of 4"):
        columns.NpyColumn(tmp_path / "a.npy")[np.array([0, 4])]
    column = columns.NpyColumn(tmp_path / "a.npy")
    with open(tmp_path / "a.npy", "r+b") as f:
        f.truncate(column.offset + 2 * column.row_bytes + 5)
    with pytest.raises(OSError, match=r"a\.npy: truncated at row 3"):
        column[np.array([1, 3])]


def test_a_prepared_split_is_written_once_as_row_files(tmp_path):
    builder = builder_checks.build("sarcasm", write_sarcasm(tmp_path / "raw"), tmp_path / "prepared")
    paths = prepared_arrays.write_missing(builder, "train", ("image", "text", "label"))
    expected = builders.read_split(builder, "train", ("image", "text", "label"))
    np.testing.assert_array_equal(np.load(paths["image"]), expected["image"])
    np.testing.assert_array_equal(np.load(paths["label"]), expected["label"])
    assert np.load(paths["label"]).dtype == np.int32
    assert prepared_arrays.read_texts(paths["text"]) == list(expected["text"])
    written = {field: path.stat().st_mtime_ns for field, path in paths.items()}
    again = prepared_arrays.write_missing(builder, "train", ("image", "text", "label"))
    assert {field: path.stat().st_mtime_ns for field, path in again.items()} == written
    assert not list(paths["image"].parent.glob("*.tmp"))


def test_a_failed_write_leaves_neither_the_file_nor_a_partial_one(tmp_path, monkeypatch):
    builder = builder_checks.build("sarcasm", write_sarcasm(tmp_path / "raw"), tmp_path / "prepared")
    write = prepared_arrays._RowWriter.write

    def fail_on_the_second_row(self, row):
        if self.written == 1:
            raise OSError("No space left on device")
        write(self, row)

    monkeypatch.setattr(prepared_arrays._RowWriter, "write", fail_on_the_second_row)
    with pytest.raises(OSError, match="No space left"):
        prepared_arrays.write_missing(builder, "train", ("image", "label"))
    directory = prepared_arrays.field_path(builder, "train", "image").parent
    assert not list(directory.glob("train-*"))
