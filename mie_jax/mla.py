"""MLA's orthogonal gradient projection over a shared head (a peer baseline).

MLA alternates modalities batch by batch over one shared head. To keep a
modality's update from erasing what the others taught the head, each head
kernel's gradient is multiplied by a projection ``P`` that is updated, after
every step, from the batch mean ``x`` of the layer's input in the style of
orthogonal weight modification (OWM)::

  k = P x,    P <- P - k k^T / (alpha + x^T k),    P <- P / ||P||_F

with ``alpha = 0.1 ** (1 + batch / batches_per_epoch)`` in MLA's training loop
and ``P = I`` at the start.

Facts about the public code, kept as options here: MLA's released code never
applies the projection (its parameter-name check never matches); the
BalanceBenchmark port adds the projected gradient to the gradient instead of
replacing it (``residual=True``).

References:
  Zhang, Latham and Yao, `Multimodal Representation Learning by Alternating
  Unimodal Adaptation <https://arxiv.org/abs/2311.10707>`_, CVPR 2024.
  Zeng et al., `Continual learning of context-dependent processing in neural
  networks <https://arxiv.org/abs/1810.01256>`_, Nature Machine Intelligence 2019.
"""

from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import optax

from mie_jax import flat


class OrthogonalProjectionState(NamedTuple):
    """State of :func:`orthogonal_projection`.

    Attributes:
      count: the number of updates so far (the argument of an ``alpha`` schedule).
      projections: a pytree of the updates' structure: ``[d, d]`` projections
        for the projected kernels, ``None`` elsewhere.
    """

    count: jax.Array
    projections: Any


def owm_projection_update(projection, features, alpha):
    """One OWM step of a projection from a batch of layer inputs.

    Args:
      projection: the current symmetric ``[d, d]`` projection ``P``.
      features: the layer's input features ``[B, d]``; their batch mean ``x``
        is the direction to protect.
      alpha: the regulariser ``alpha > 0`` (smaller removes ``x`` more fully).

    Returns:
      ``P - P x x^T P / (alpha + x^T P x)``, divided by its Frobenius norm.

    Raises:
      ValueError: ``features`` is not ``[B, d]`` for the projection's ``d``.
    """
    d = projection.shape[0]
    if features.ndim != 2 or features.shape[1] != d:
        raise ValueError(
            f"features must be [batch, {d}] for a {tuple(projection.shape)} projection, got {tuple(features.shape)}."
        )
    x = jnp.mean(features.astype(projection.dtype), axis=0)
    k = projection @ x
    updated = projection - jnp.outer(k, k) / (alpha + x @ k)
    return updated / jnp.linalg.norm(updated)


def orthogonal_projection(
    alpha: Union[float, Callable[[jax.Array], jax.Array]] = 0.1,
    *,
    mask: Optional[Union[Any, Callable[[Any], Any]]] = None,
    residual: bool = False,
) -> optax.GradientTransformationExtraArgs:
    """MLA's projected gradient for the shared head's kernels.

    ``update`` multiplies each projected kernel gradient ``g`` ``[d, out]`` by
    the current ``P`` (``P @ g``; with ``residual=True``, ``g + P @ g``), then
    updates ``P`` with :func:`owm_projection_update` from the extra argument
    ``features``: a pytree of the updates' structure with the layer inputs
    ``[B, d]`` of this step for the projected kernels (other leaves ``None``).
    Without ``features`` the projections stay as they are.

    Args:
      alpha: OWM's regulariser, a float or a schedule ``count -> alpha`` (MLA
        uses ``0.1 ** (1 + batch / batches_per_epoch)``).
      mask: a pytree of booleans of the params' structure, or a function of the
        params returning one, choosing the kernels to project. ``None`` projects
        every 2-D leaf.
      residual: add the projected gradient to the gradient (BalanceBenchmark's
        port) instead of replacing it (the paper).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with
      :class:`OrthogonalProjectionState`.

    References:
      Zhang, Latham and Yao, `Multimodal Representation Learning by Alternating
      Unimodal Adaptation <https://arxiv.org/abs/2311.10707>`_, CVPR 2024.
    """

    def init_fn(params):
        chosen = mask(params) if callable(mask) else mask
        if chosen is None:
            chosen = jax.tree.map(lambda p: p.ndim == 2, params)
        projections = jax.tree.map(
            lambda p, use: jnp.eye(p.shape[0], dtype=p.dtype) if use else None,
            params,
            chosen,
        )
        return OrthogonalProjectionState(jnp.zeros([], jnp.int32), projections)

    def update_fn(updates, state, params=None, *, features=None, **extra_args):
        del params, extra_args
        matrices = state.projections
        if residual:  # g + P g = (I + P) g, only for the projected kernels.
            matrices = jax.tree.map(lambda p: p + jnp.eye(p.shape[0], dtype=p.dtype), matrices)
        projected = flat.left_multiply(matrices, updates, caller="orthogonal_projection")
        projections = state.projections
        if features is not None:
            step_alpha = alpha(state.count) if callable(alpha) else alpha
            projections = jax.tree.map(
                lambda p, z: p if p is None or z is None else owm_projection_update(p, z, step_alpha),
                state.projections,
                features,
                is_leaf=lambda x: x is None,
            )
        return projected, OrthogonalProjectionState(state.count + 1, projections)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
