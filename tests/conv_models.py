"""Helpers shared by the tests of the convolutional encoders (ResNet, I3D)."""

import jax
import numpy as np
from flax import nnx


def batch_stats_snapshot(model):
    """The batch statistics as plain arrays (``nnx.state`` shares the live Variables)."""
    return nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))


def all_changed(old, new):
    return all(jax.tree.leaves(jax.tree.map(lambda a, b: not np.array_equal(a, b), old, new)))


def param_count(model):
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)))


@nnx.jit(static_argnames="train")
def forward(model, x, *, train):
    return model(x, train=train)
