"""Columns: one modality of one split, read by rows on demand.

Training, evaluation and the covariance pass read a split batch by batch
(:mod:`mie_jax.train.feed`), so a split never has to fit in memory. What they
need of a modality is a *column*: ``len(column)``, ``column.shape`` (rows
first), ``column.dtype`` and ``column[indices]`` for an integer array of row
indices, returning a numpy array. A numpy array is a column; so are
:class:`RecordColumn` (a field of a prepared TFDS dataset, read from its
array_record files) and :class:`RowSubset` (some rows of another column, e.g.
a validation split held out of the published training split); a new kind of
column subclasses :class:`Column`.
"""

from typing import Callable, Optional, Sequence

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


class RecordColumn(Column):
    """One field of a TFDS data source, decoded per row and transformed per batch.

    Args:
      source: a random-access TFDS data source (``builder.as_data_source(split)``).
      field: the feature to read.
      example_shape: the shape of one row after ``transform``.
      dtype: the dtype after ``transform``.
      transform: maps the stacked field values of a batch (a numpy array, or a
        list of ``str`` for text fields) to the model's input, e.g. tokenizes
        text; ``None`` stacks the values as they are.
    """

    def __init__(self, source, field: str, example_shape: Sequence[int], dtype,
                 transform: Optional[Callable] = None):
        self.source = source
        self.field = field
        self.shape = (len(source), *example_shape)
        self.dtype = np.dtype(dtype)
        self.transform = transform

    def __getitem__(self, indices) -> np.ndarray:
        indices = np.asarray(indices, np.int64)
        rows = self.source.__getitems__(indices.ravel().tolist()) if indices.size else []
        values = [row[self.field] for row in rows]
        if values and isinstance(values[0], bytes):
            values = [value.decode("utf-8") for value in values]
            batch = values if self.transform is None else self.transform(values)
        else:
            stacked = np.stack(values) if values else np.zeros((0, *self.shape[1:]), self.dtype)
            batch = stacked if self.transform is None else self.transform(stacked)
        return np.asarray(batch, self.dtype).reshape(*indices.shape, *self.shape[1:])


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
