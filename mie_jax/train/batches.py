"""Deterministic batch orders: a phase's batches depend only on (seed, phase)."""

from typing import Tuple

import numpy as np

# Seeds held-out rows apart from every phase's stream.
HOLDOUT_STREAM = 0x6762


def phase_rng(seed: int, phase: int, stream: int = 0) -> np.random.Generator:
    """The random stream of one phase, independent of every other phase.

    Resuming at a phase boundary therefore replays exactly what an
    uninterrupted run would have drawn.
    """
    return np.random.default_rng([seed, phase, stream])


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    """Whole batches in one epoch (the last partial batch is dropped).

    Raises:
      ValueError: the split has fewer examples than one batch.
    """
    steps = num_examples // batch_size
    if steps == 0:
        raise ValueError(f"batch_size {batch_size} exceeds the {num_examples} training examples.")
    return steps


def epoch_batches(rng: np.random.Generator, num_examples: int, batch_size: int, epochs: int) -> np.ndarray:
    """Shuffled batch indices, ``[epochs * (num_examples // batch_size), batch_size]``.

    Each epoch is a fresh permutation; its last partial batch is dropped so every
    step has the same shape (one compiled step).

    Raises:
      ValueError: the split has fewer examples than one batch.
    """
    steps = steps_per_epoch(num_examples, batch_size)
    orders = [rng.permutation(num_examples)[: steps * batch_size] for _ in range(epochs)]
    return np.concatenate(orders).reshape(epochs * steps, batch_size).astype(np.int32)


def mixup_draws(rng: np.random.Generator, alpha: float, steps: int, batch_size: int):
    """Per-step mixup weights ``lam`` ``[steps]`` and partner permutations ``[steps, B]``.

    ``alpha == 0`` gives ``lam = 1`` (no mixing) and identity partners.
    """
    if alpha <= 0:
        return np.ones(steps, np.float32), np.tile(np.arange(batch_size, dtype=np.int32), (steps, 1))
    lam = rng.beta(alpha, alpha, size=steps).astype(np.float32)
    partners = np.stack([rng.permutation(batch_size) for _ in range(steps)]).astype(np.int32)
    return lam, partners


def holdout_split(num_examples: int, fraction: float, seed: int, option: str) -> Tuple[np.ndarray, np.ndarray]:
    """``(training rows, held-out rows)``: a seeded ``fraction`` of ``range(num_examples)`` held out, each sorted.

    For methods that measure on a part of the training split they do not
    train on (G-Blend's OGR, MSLR's dynamic rates).

    Args:
      num_examples: rows of the training split.
      fraction: the share held out.
      seed: the run's seed.
      option: the config key of ``fraction``, for the error message.

    Raises:
      ValueError: the split leaves no row on one side.
    """
    held = int(round(fraction * num_examples))
    if not 1 <= held < num_examples:
        raise ValueError(
            f"{option}={fraction} of {num_examples} training examples holds out {held}; "
            "expected at least 1 held out and 1 left to train on."
        )
    order = np.random.default_rng([seed, HOLDOUT_STREAM]).permutation(num_examples)
    return np.sort(order[held:]), np.sort(order[:held])
