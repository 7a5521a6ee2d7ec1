"""Columns: one modality of one split, read by rows on demand.

Training, evaluation and the covariance pass read a split batch by batch
(:mod:`mie_jax.train.feed`), so a split never has to fit in memory. What they
need of a modality is a *column*: ``len(column)``, ``column.shape`` (rows
first), ``column.dtype`` and ``column[indices]`` for an integer array of row
indices, returning a numpy array. A numpy array is a column; so are
:class:`NpyColumn` (a ``.npy`` file read row by row, what the paper datasets
become) and :class:`RowSubset` (some rows of another column, e.g. a
validation split held out of the published training split); a new kind of
column subclasses :class:`Column`.
"""

import os
from typing import Optional, Sequence

import numpy as np


class Column:
    """What every column shares; subclasses set ``shape`` and ``dtype`` and read rows in ``__getitem__``."""

    shape: tuple
    dtype: np.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype=None, copy=None):
        """The whole column in memory (for small splits and tests; training never asks for it)."""
        whole = self[np.arange(len(self))]
        return whole if dtype is None else whole.astype(dtype)


class NpyColumn(Column):
    """The rows of a ``.npy`` file, read with one ``pread`` per row: nothing is mapped or kept in memory.

    Rows are read in file order whatever order they are asked in, which keeps
    a disk's reads as sequential as a shuffled batch allows.

    Args:
      path: a C-ordered ``.npy`` file of shape ``[rows, ...]``.
      example_shape: the shape one row is viewed as (same number of
        elements, e.g. a trailing channel axis); ``None`` keeps the file's.
    """

    def __init__(self, path, example_shape: Optional[Sequence[int]] = None):
        self.path = os.fspath(path)
        with open(self.path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            shape, fortran_order, dtype = read_header(f)
            self.offset = f.tell()
        if fortran_order or not shape:
            raise ValueError(f"{self.path}: expected a C-ordered array with a row axis, got shape {shape}.")
        self.dtype = np.dtype(dtype)
        row = tuple(shape[1:]) if example_shape is None else tuple(example_shape)
        if int(np.prod(row)) != int(np.prod(shape[1:])):
            raise ValueError(f"{self.path}: rows of shape {tuple(shape[1:])} cannot be viewed as {row}.")
        self.shape = (shape[0], *row)
        self.row_bytes = int(np.prod(row)) * self.dtype.itemsize

    def __getitem__(self, indices) -> np.ndarray:
        indices = np.asarray(indices, np.int64)
        flat = indices.reshape(-1)
        if flat.size and (flat.min() < 0 or flat.max() >= len(self)):
            raise IndexError(f"{self.path}: rows {flat.min()}..{flat.max()} asked of {len(self)}.")
        out = np.empty((flat.size, self.row_bytes), np.uint8)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for i in np.argsort(flat, kind="stable"):
                data = os.pread(fd, self.row_bytes, self.offset + int(flat[i]) * self.row_bytes)
                if len(data) != self.row_bytes:
                    raise OSError(f"{self.path}: truncated at row {flat[i]}; delete it to have it written again.")
                out[i] = np.frombuffer(data, np.uint8)
        finally:
            os.close(fd)
        return out.view(self.dtype).reshape(*indices.shape, *self.shape[1:])


class RowSubset(Column):
    """The rows ``rows`` of ``column``, in that order, as a column of its own."""

    def __init__(self, column, rows: np.ndarray):
        self.column = column
        self.rows = np.asarray(rows, np.int64)
        self.shape = (len(self.rows), *column.shape[1:])
        self.dtype = column.dtype

    def __getitem__(self, indices) -> np.ndarray:
        return np.asarray(self.column[self.rows[np.asarray(indices, np.int64)]])


def take_rows(column, rows: np.ndarray):
    """``column``'s rows ``rows``: a numpy array for a numpy column, else a :class:`RowSubset`."""
    if isinstance(column, np.ndarray):
        return column[rows]
    return RowSubset(column, rows)
