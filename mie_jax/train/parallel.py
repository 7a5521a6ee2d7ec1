"""Data parallelism with JAX's own sharding: the batch is split over a 'data' mesh axis.

Parameters, optimizer states and the training arrays are replicated; inside
the jitted phase each batch is constrained to be sharded over ``data``, and XLA
inserts the gradient all-reduce. The computation stays the global one: the
covariance of Eq. 5 uses the global batch mean, and SAM's perturbation the
global gradient, so one and many devices give the same numbers up to the order
of floating-point sums.
"""

from typing import Optional

import jax
from jax.sharding import NamedSharding, PartitionSpec

DATA_AXIS = "data"


def data_mesh(num_devices: int = 0) -> jax.sharding.Mesh:
    """A 1-D mesh over ``num_devices`` devices (0: all of them, across every host).

    Raises:
      ValueError: more devices are asked for than exist.
    """
    available = jax.device_count()
    count = num_devices or available
    if not 1 <= count <= available:
        raise ValueError(f"num_devices must be in [0, {available}] (0 = all), got {num_devices}.")
    return jax.make_mesh(
        (count,), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,), devices=jax.devices()[:count]
    )


def check_batch_size(batch_size: int, mesh: jax.sharding.Mesh, name: str = "batch_size") -> None:
    if batch_size % mesh.size:
        raise ValueError(f"{name} {batch_size} must be divisible by the {mesh.size} devices of the mesh.")


def replicate(tree, mesh: jax.sharding.Mesh):
    """Places every array of ``tree`` whole on every device of ``mesh``."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def shard_batch(tree, mesh: Optional[jax.sharding.Mesh]):
    """Inside jit: asks for the leading (batch) axis of every array to be split over the mesh."""
    if mesh is None or mesh.size == 1:
        return tree
    sharding = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
    return jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, sharding), tree)
