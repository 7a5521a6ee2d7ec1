"""Flax NNX modules, used functionally (split once, merged inside pure loss functions: see mie_jax.train.steps)."""

from mie_jax.models.classifier import ConcatClassifier
from mie_jax.models.classifier import LogitAverageClassifier
from mie_jax.models.classifier import SharedHeadClassifier
from mie_jax.models.classifier import UnimodalClassifier
from mie_jax.models.head import HEAD_LAYERS
from mie_jax.models.head import Head
from mie_jax.models.mlp import MLPEncoder

__all__ = [
    "ConcatClassifier",
    "HEAD_LAYERS",
    "Head",
    "LogitAverageClassifier",
    "MLPEncoder",
    "SharedHeadClassifier",
    "UnimodalClassifier",
]
