"""The loss landscape around trained weights: filter-normalised random planes (Li et al. 2018).

References:
  Li, Xu, Taylor, Studer and Goldstein, `Visualizing the Loss Landscape of Neural
  Nets <https://arxiv.org/abs/1712.09913>`_, NeurIPS 2018.
"""

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

# The landscape's "inner" region: within half the grid's radius of the trained weights.
INNER_RADIUS = 0.5


@jax.jit  # One program per parameter structure instead of a dozen small ones per leaf.
def filter_normalized_direction(params: Any, key: jax.Array) -> Any:
    """A random direction in parameter space, normalised filter by filter (Li et al. 2018).

    Each weight of two or more axes gets a Gaussian direction whose every filter has
    the norm of the same filter of the weight. Flax kernels keep their output units
    last (Dense ``[in, out]``, convolution ``[h, w, in, out]``), so a filter is one
    slice ``[..., o]``. Biases and other 1-D parameters (e.g. normalisation scales)
    get zero, as in Li et al.: perturbing them says little about the landscape.

    Args:
      params: a pytree of parameter arrays.
      key: a JAX PRNG key.

    Returns:
      A pytree of ``params``' structure, shapes and dtypes.
    """
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))

    def direction(weight, leaf_key):
        if weight.ndim <= 1:
            return jnp.zeros_like(weight)
        gaussian = jax.random.normal(leaf_key, weight.shape, weight.dtype)
        filter_axes = tuple(range(weight.ndim - 1))
        weight_norms = jnp.sqrt(jnp.sum(weight**2, axis=filter_axes, keepdims=True))
        gaussian_norms = jnp.sqrt(jnp.sum(gaussian**2, axis=filter_axes, keepdims=True))
        return gaussian * (weight_norms / gaussian_norms)

    return jax.tree.unflatten(treedef, [direction(w, k) for w, k in zip(leaves, keys)])


def loss_surface(
    loss_fn: Callable[[Any], jax.Array], params: Any, d1: Any, d2: Any, grid: Sequence[float]
) -> np.ndarray:
    """The loss on the plane through ``params`` spanned by ``d1`` and ``d2``.

    Args:
      loss_fn: a traceable function of parameters of ``params``' structure, returning a scalar.
      params: the centre of the plane.
      d1: the first direction (rows of the result), of ``params``' structure.
      d2: the second direction (columns of the result).
      grid: the coordinates along each direction.

    Returns:
      ``surface[i, j] = loss_fn(params + grid[i] * d1 + grid[j] * d2)``, a float64
      array ``[len(grid), len(grid)]``.
    """
    coordinates = np.asarray(grid, np.float32)
    alphas, betas = np.meshgrid(coordinates, coordinates, indexing="ij")

    def loss_at(point):
        alpha, beta = point
        return loss_fn(jax.tree.map(lambda p, u, v: p + alpha * u + beta * v, params, d1, d2))

    # One compiled loop over the grid: one model's forward pass in memory at a time.
    losses = jax.jit(lambda a, b: jax.lax.map(loss_at, (a, b)))(alphas.ravel(), betas.ravel())
    return np.asarray(losses, np.float64).reshape(len(coordinates), len(coordinates))


def surface_summary(surface: np.ndarray, grid: Sequence[float]) -> dict:
    """How much the loss rises around the centre of a surface from :func:`loss_surface`.

    Args:
      surface: ``[n, n]`` losses over ``grid`` x ``grid``.
      grid: the coordinates, containing 0 (the trained weights).

    Returns:
      ``center_loss``; ``mean_rise`` and ``max_rise`` of ``surface - center_loss`` over
      the whole grid; ``inner_mean_rise`` over the points within ``INNER_RADIUS`` of
      the centre along both directions. A flatter minimum has smaller rises.
    """
    grid = np.asarray(grid)
    center = int(np.argmin(np.abs(grid)))
    rise = surface - surface[center, center]
    inner = np.abs(grid) <= INNER_RADIUS + 1e-9
    return {
        "center_loss": float(surface[center, center]),
        "mean_rise": float(rise.mean()),
        "max_rise": float(rise.max()),
        "inner_mean_rise": float(rise[np.ix_(inner, inner)].mean()),
    }


def classifier_loss_fn(predict: Callable, model_state: Any, inputs: Any, labels: Any) -> Callable:
    """The mean cross-entropy of one modality's classifier as a function of its parameters.

    Args:
      predict: ``(params, model_state, inputs) -> logits``, e.g. ``AlternatingMethod.predicts[m]``.
      model_state: the classifier's non-parameter state (BatchNorm statistics; empty for MLPs).
      inputs: the modality's examples.
      labels: their integer classes.

    Returns:
      ``loss(params) -> scalar``, traceable.
    """
    inputs, labels = jnp.asarray(inputs), jnp.asarray(labels)

    def loss(params):
        logits = predict(params, model_state, inputs)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    return loss
