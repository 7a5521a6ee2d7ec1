"""The split names every dataset uses, and stratified splits by row index."""

from typing import Sequence

import numpy as np

SPLITS = ("train", "validation", "test")

# Fractions of every class assigned to train and validation; test gets the rest (mfeat's 60/20/20).
_FRACTIONS = (0.6, 0.2)


def split_indices(
    labels: np.ndarray, seed: int = 0, *, fractions: Sequence[float] = _FRACTIONS, names: Sequence[str] = SPLITS
) -> dict[str, np.ndarray]:
    """Returns a stratified split as row indices (by default mfeat's fixed 60/20/20).

    Within each class the rows are permuted with a numpy Generator seeded by
    ``seed``; ``names[i]`` takes the next ``round(fractions[i] * n)`` of them
    and the last name the rest. With 200 rows per class the default gives
    120/40/40.

    Args:
        labels: Integer class label of every row, shape [n].
        seed: Seed of the permutation.
        fractions: The share of every class for each name but the last.
        names: The splits, one more than ``fractions``.

    Returns:
        Dict mapping each of ``names`` to sorted int64 row indices. Together
        the index arrays cover every row exactly once.
    """
    if len(names) != len(fractions) + 1:
        raise ValueError(f"names must be one longer than fractions, got {list(names)} and {list(fractions)}.")
    rng = np.random.default_rng(seed)
    parts = {name: [] for name in names}
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        start = 0
        for name, fraction in zip(names, fractions):
            count = round(fraction * len(members))
            parts[name].append(members[start : start + count])
            start += count
        parts[names[-1]].append(members[start:])
    return {name: np.sort(np.concatenate(parts[name])) for name in names}
