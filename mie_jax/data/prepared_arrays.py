"""A prepared split's fields as flat files beside it, written once, read row by row.

The TFDS array_record files a builder writes hold whole examples: reading one
field of one example decodes the record of all of them. Measured on this
2-core machine (CREMA-D at 224 px, random batches of 64), that reads about
350 examples a second, against the thousands a GPU step consumes. So the
first load of a split writes each array field to ``<split>-<field>.npy`` and
each text field to ``<split>-<field>.json``, in one sequential pass over
its records; training then reads rows of the ``.npy`` files directly
(:class:`mie_jax.data.columns.NpyColumn`). The files sit in the prepared
dataset's own directory and about double its size on disk.
"""

import json
import os
from pathlib import Path
from typing import Dict, Sequence

import numpy as np


def field_path(builder, split: str, field: str) -> Path:
    """Where ``field`` of ``split`` is kept: ``.json`` for text, ``.npy`` for arrays and labels."""
    return Path(builder.data_dir) / f"{split}-{field}{'.json' if _is_text(builder, field) else '.npy'}"


def write_missing(builder, split: str, fields: Sequence[str]) -> Dict[str, Path]:
    """Writes the files of ``fields`` of ``split`` that do not exist yet, in one pass; returns every path.

    Each file is written under a temporary name and renamed when complete, so
    a killed load leaves none half-written.
    """
    paths = {field: field_path(builder, split, field) for field in dict.fromkeys(fields)}
    missing = [field for field, path in paths.items() if not path.is_file()]
    if not missing:
        return paths
    source = builder.as_data_source(split)
    features = builder.info.features
    texts = {f: [] for f in missing if _is_text(builder, f)}
    writers = [_RowWriter(paths[f], f, len(source), features[f]) for f in missing if f not in texts]
    try:
        for i in range(len(source)):
            record = source[i]
            for writer in writers:
                writer.write(record[writer.field])
            for field, values in texts.items():
                values.append(record[field].decode("utf-8"))
        for writer in writers:
            writer.finish()
    finally:
        for writer in writers:
            writer.abandon()
    for field, values in texts.items():
        partial = f"{paths[field]}.{os.getpid()}.tmp"
        with open(partial, "w", encoding="utf-8") as f:
            json.dump(values, f, ensure_ascii=False)
        os.replace(partial, paths[field])
    return paths


def read_texts(path: Path) -> list:
    """A written text field: one string per example."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


class _RowWriter:
    """A ``.npy`` file written one row at a time under a temporary name, renamed by :meth:`finish`."""

    def __init__(self, path: Path, field: str, count: int, feature):
        self.path, self.field, self.count = os.fspath(path), field, count
        # ClassLabel features store int64; the labels are class indices, int32 as everywhere else.
        self.dtype = np.dtype(np.int32 if field == "label" else feature.np_dtype)
        self.shape = () if field == "label" else tuple(feature.shape)
        self.partial = f"{self.path}.{os.getpid()}.tmp"
        self.file = open(self.partial, "wb")
        np.lib.format.write_array_header_2_0(
            self.file,
            {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": (count, *self.shape)},
        )
        self.written = 0

    def write(self, row) -> None:
        row = np.asarray(row, self.dtype)  # tobytes() writes C order whatever the layout.
        if row.shape != self.shape:
            raise ValueError(f"{self.path}: row {self.written} has shape {row.shape}, expected {self.shape}.")
        self.file.write(row.tobytes())
        self.written += 1

    def finish(self) -> None:
        self.file.close()
        if self.written != self.count:
            raise ValueError(f"{self.path}: {self.written} rows written, expected {self.count}.")
        os.replace(self.partial, self.path)

    def abandon(self) -> None:
        self.file.close()
        if os.path.exists(self.partial):
            os.remove(self.partial)


def _is_text(builder, field: str) -> bool:
    return field not in ("label",) and builder.info.features[field].np_dtype == np.object_
