"""Helpers shared by the tests of the convolutional encoders (ResNet, I3D)."""

import jax
import jax.numpy as jnp
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


def check_batchnorm_modes(model, x):
    """Evaluation is deterministic and leaves the statistics; training updates every one of them.

    Returns:
      The evaluation output, for the caller's shape checks.
    """
    before = batch_stats_snapshot(model)
    eval_a = forward(model, x, train=False)
    eval_b = forward(model, x, train=False)
    assert bool(jnp.all(jnp.isfinite(eval_a)))
    np.testing.assert_array_equal(eval_a, eval_b)
    jax.tree.map(np.testing.assert_array_equal, before, batch_stats_snapshot(model))

    train_out = forward(model, x, train=True)
    assert all_changed(before, batch_stats_snapshot(model))
    assert not np.allclose(train_out, eval_a)  # Batch, not running, statistics.
    # The eval output now reflects the new running statistics.
    assert not np.allclose(forward(model, x, train=False), eval_a)
    return eval_a
