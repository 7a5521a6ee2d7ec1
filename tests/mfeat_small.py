"""The small mfeat setting the methods' end-to-end tests share: three views, narrow MLPs, batch 100."""

import functools

from mie_jax.data.registry import load_dataset
from mie_jax.train import make_config

THREE_VIEWS = ("fac", "mor", "zer")


@functools.lru_cache(maxsize=None)
def dataset():
    """mfeat's fac, mor and zer views (loaded once per test process)."""
    return load_dataset("mfeat", THREE_VIEWS)


def small_config(method: str, epochs: int, *overrides: str, learning_rate=None):
    """``method`` on :func:`dataset`: dim 16, hidden 32, one outer iteration of ``epochs`` epochs per phase."""
    base = {
        "modalities": THREE_VIEWS,
        "model": {"dim": 16, "encoder_hidden": 32},
        "train": {"batch_size": 100, "outer_iterations": 1, "phase_epochs": epochs},
    }
    if learning_rate is not None:
        base["optimizer"] = {"learning_rate": learning_rate}
    return make_config(base, list(overrides), method=method)
