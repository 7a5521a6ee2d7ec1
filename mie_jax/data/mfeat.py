"""UCI Multiple Features (mfeat): 2000 handwritten digits seen through six views.

Each of the 2000 digits ('0'..'9', 200 per class, stored in class order) is
described by six feature sets extracted from the same scanned image:

    fou   76 Fourier coefficients of the character shape
    fac  216 profile correlations
    kar   64 Karhunen-Loeve coefficients
    pix  240 pixel averages in 2 x 3 windows
    zer   47 Zernike moments
    mor    6 morphological features

The views differ strongly in how much they say about the label. Per-view
logistic regression test accuracy from our design notes:
fac 0.975, pix 0.966, kar 0.948, zer 0.826, fou 0.814, mor 0.740.
This built-in imbalance is why the dataset is useful for studying how
multi-view models weight strong and weak views.

The data contain six pairs of identical digits (same class, identical in every
view); the fixed split may put the two members of a pair in different splits.

License: CC BY 4.0. Duin, R. (1998). Multiple Features [Dataset]. UCI Machine
Learning Repository. https://doi.org/10.24432/C5HC70. See ``MFEAT_LICENSE.md``
next to this module for where the bundled copy comes from and how it was
converted.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mie_jax.data.splits import SPLITS, split_indices

VIEWS = {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}
NUM_CLASSES = 10

_DEFAULT_PATH = Path(__file__).with_name("mfeat.npz")


def load_mfeat(
    views: Sequence[str] = ("fac", "mor"),
    *,
    split: str = "train",
    seed: int = 0,
    standardize: bool = True,
    path: str | os.PathLike | None = None,
) -> dict[str, np.ndarray]:
    """Loads one split of the requested mfeat views.

    Rows keep the dataset order (grouped by class), so shuffle before
    minibatching.

    Args:
        views: Distinct view names, each a key of ``VIEWS``.
        split: One of "train", "validation", "test".
        seed: Seed of the stratified split (see :func:`mie_jax.data.splits.split_indices`).
        standardize: If True, scale every feature to zero mean and unit
            variance using the train split's statistics, so all splits share
            the same transform. Constant features are only centered.
        path: npz file to read instead of the copy bundled with the package.

    Returns:
        Dict with one float32 array [n, VIEWS[view]] per requested view and
        "label", an int32 array [n] of classes 0..9.

    Raises:
        ValueError: If ``views`` or ``split`` is invalid, or the npz file is
            corrupt or lacks the requested arrays.
        FileNotFoundError: If the npz file does not exist.
    """
    views = _check_views(views)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}.")

    path = Path(_DEFAULT_PATH if path is None else path)
    arrays = _read_npz(path, views)
    indices = split_indices(arrays["labels"], seed)

    result = {}
    for view in views:
        features = arrays[view]
        if standardize:
            train_rows = features[indices["train"]].astype(np.float64)
            mean = train_rows.mean(axis=0)
            std = train_rows.std(axis=0)
            std[std == 0] = 1.0  # constant feature: avoid dividing by zero
            features = (features - mean) / std
        result[view] = features[indices[split]].astype(np.float32)
    result["label"] = arrays["labels"][indices[split]].astype(np.int32)
    return result


def _check_views(views: Sequence[str]) -> tuple[str, ...]:
    """Validates ``views`` and returns it as a tuple."""
    # A bare string is a sequence of characters, which would give a confusing
    # "unknown view 'f'" error below.
    if isinstance(views, str):
        raise ValueError(f"views must be a sequence of view names such as ({views!r},), got the string {views!r}.")
    views = tuple(views)
    if not views:
        raise ValueError(f"views must name at least one of {list(VIEWS)}, got none.")
    for position, view in enumerate(views):
        if view not in VIEWS:
            raise ValueError(f"views must be names from {list(VIEWS)}, got unknown view {view!r}.")
        if view in views[:position]:
            raise ValueError(f"views must be distinct, got {view!r} more than once.")
    return views


def _read_npz(path: Path, views: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Reads and checks "labels" and the given views from an mfeat npz file."""
    if not path.is_file():
        raise FileNotFoundError(f"path {str(path)!r} does not exist or is not a file.")
    # Content problems raised inside the block share the corrupt-file message.
    try:
        archive = np.load(path)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single array, not an npz archive")
        with archive:
            missing = [key for key in ("labels", *views) if key not in archive.files]
            if missing:
                raise ValueError(f"it lacks the arrays {missing}")
            arrays = {key: archive[key] for key in ("labels", *views)}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise ValueError(f"path {str(path)!r} is not a valid mfeat npz file: {error}") from None

    if arrays["labels"].ndim != 1:
        raise ValueError(f"path {str(path)!r} must hold 'labels' of shape [n], got shape {arrays['labels'].shape}.")
    num_rows = arrays["labels"].shape[0]
    for view in views:
        if arrays[view].shape != (num_rows, VIEWS[view]):
            raise ValueError(
                f"path {str(path)!r} must hold {view!r} of shape {(num_rows, VIEWS[view])}, got {arrays[view].shape}."
            )
    return arrays
