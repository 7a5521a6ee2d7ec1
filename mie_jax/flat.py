"""Gradient modification: MIE's backward phase (Eq. 5, 7, 8).

After modality ``k`` is trained, the input features of each head layer are
summarised by a covariance ``Ybar`` (Eq. 5). Its spectrum gives the matrix
``T = V diag(exp(-tau (lambda - lambda_min) / (lambda_max - lambda_min))) V^T``
(Eq. 7), whose eigenvalues lie in ``[exp(-tau), 1]``: directions in which
modality ``k``'s features vary most are damped most. While the next modality is
trained, the layer's weight gradient ``g`` (Flax kernel layout ``[in, out]``)
is replaced by ``T @ g`` (Eq. 8), which keeps the update flat along what
modality ``k`` learned.

References:
  Jiang, Chi and Yang, `Multimodal Classification via Modal-Aware Interactive
  Enhancement <https://arxiv.org/abs/2407.04587>`_, Eq. 5, 7, 8.
"""

from typing import Any, Literal

import jax
import jax.numpy as jnp
import optax

from mie_jax import _validate

Statistic = Literal["batch_mean", "second_moment"]
_STATISTIC_CHOICES = ("batch_mean", "second_moment")


def update_covariance(cov, features, *, statistic: Statistic = "batch_mean"):
    """Adds one batch's term to a layer's feature covariance (MIE Eq. 5).

    Args:
      cov: the running ``[d, d]`` sum over the batches seen so far (zeros at the
        start of a pass).
      features: the layer's input features ``Z_t`` of one batch, ``[B, d]``.
      statistic: ``"batch_mean"`` adds ``zbar zbar^T`` with ``zbar`` the mean of
        the batch (the paper; a rank-one term per batch). ``"second_moment"``
        adds ``Z^T Z / B``, the uncentred covariance of the batch's samples.

    Returns:
      ``cov`` plus the batch's term, in the dtype of ``cov``.

    Raises:
      ValueError: ``features`` is not 2-D, ``cov`` is not ``[d, d]`` for the
        features' ``d``, or ``statistic`` is unknown.
    """
    _validate.choice("statistic", statistic, _STATISTIC_CHOICES)
    if features.ndim != 2:
        raise ValueError(
            f"features must be 2-D [batch, d], got shape {tuple(features.shape)}."
        )
    d = features.shape[1]
    if cov.shape != (d, d):
        raise ValueError(
            f"cov must be [d, d] = {(d, d)} for features of shape "
            f"{tuple(features.shape)}, got {tuple(cov.shape)}."
        )
    z = features.astype(cov.dtype)
    if statistic == "batch_mean":
        mean = jnp.mean(z, axis=0)
        return cov + jnp.outer(mean, mean)
    return cov + z.T @ z / z.shape[0]


def flat_transform(cov, tau):
    """The matrix ``T`` of MIE Eq. 7 from a layer's feature covariance.

    ``Ybar`` is symmetric positive semi-definite, so its singular value
    decomposition is its eigendecomposition (the singular values are the
    eigenvalues and both singular bases are the eigenvectors). ``eigh`` computes it
    faster than an SVD and returns exactly orthogonal eigenvectors, so ``T``
    comes out symmetric.

    ``T`` depends only on ``(lambda - lambda_min) / (lambda_max - lambda_min)``,
    so scaling ``cov`` leaves it unchanged and no normalisation is needed. A
    spectrum whose spread is within rounding of its magnitude (isotropic or
    all-zero covariances) has no preferred direction and gives ``T = I``.

    Args:
      cov: a symmetric ``[d, d]`` covariance (only its symmetric part is used).
      tau: the damping strength ``tau > 0`` (the paper uses 0.4).

    Returns:
      The symmetric ``[d, d]`` matrix ``T`` with eigenvalues in
      ``[exp(-tau), 1]`` and the eigenvectors of ``cov``, in ``cov``'s dtype.

    Raises:
      ValueError: ``cov`` is not a square 2-D array or ``tau <= 0``.
    """
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
        raise ValueError(f"cov must be a square [d, d] matrix, got {tuple(cov.shape)}.")
    _validate.positive("tau", tau)
    symmetric = (cov + cov.T) / 2
    eigenvalues, eigenvectors = jnp.linalg.eigh(symmetric)
    spread = eigenvalues[-1] - eigenvalues[0]
    magnitude = jnp.max(jnp.abs(eigenvalues))
    # A spread this small is eigh's rounding, not a direction worth damping.
    rounding = cov.shape[0] * jnp.finfo(cov.dtype).eps * magnitude
    is_flat = spread <= rounding
    relative = jnp.where(
        is_flat, 0.0, (eigenvalues - eigenvalues[0]) / jnp.where(is_flat, 1.0, spread)
    )
    damping = jnp.exp(-tau * relative).astype(cov.dtype)
    t = (eigenvectors * damping) @ eigenvectors.T
    return (t + t.T) / 2


def flat_transforms(covariances: Any, tau) -> Any:
    """Maps a pytree of covariances to the pytree of their ``T`` matrices.

    Args:
      covariances: a pytree whose leaves are ``[d, d]`` covariances; ``None``
        marks a leaf without one and stays ``None``.
      tau: the damping strength ``tau > 0``.

    Returns:
      A pytree of the same structure with ``flat_transform(cov, tau)`` per leaf,
      ready to pass as ``transforms=`` to :func:`flat_projection`.

    Raises:
      ValueError: a leaf is not square (the message names its path) or
        ``tau <= 0``.
    """
    _validate.positive("tau", tau)

    def one(path, cov):
        if cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
            raise ValueError(
                f"covariance at {jax.tree_util.keystr(path)} must be square [d, d], "
                f"got {tuple(cov.shape)}."
            )
        return flat_transform(cov, tau)

    return jax.tree_util.tree_map_with_path(one, covariances)


def left_multiply(matrices: Any, updates: Any, *, caller: str) -> Any:
    """Replaces each 2-D update ``g`` ``[d, out]`` by ``M @ g``; ``None`` skips.

    Args:
      matrices: a pytree of ``[d, d]`` matrices or ``None`` leaves, of the
        structure of ``updates``.
      updates: the pytree of updates.
      caller: the transform's name, for error messages.

    Returns:
      The updates with the matrices applied, in their own dtypes.

    Raises:
      ValueError: the structures differ, or a matrix does not match its
        update's input dimension (the message names the leaf path and shapes).
    """

    def one(path, matrix, update):
        if matrix is None:
            return update
        where = jax.tree_util.keystr(path)
        if update.ndim != 2:
            raise ValueError(
                f"{caller}: update at {where} must be a 2-D kernel [in, out] to "
                f"project, got shape {tuple(update.shape)}."
            )
        d = update.shape[0]
        if matrix.shape != (d, d):
            raise ValueError(
                f"{caller}: matrix at {where} must be {(d, d)} to match the kernel's "
                f"input dimension (kernel {tuple(update.shape)}), got "
                f"{tuple(matrix.shape)}."
            )
        return (matrix @ update).astype(update.dtype)

    try:
        return jax.tree_util.tree_map_with_path(
            one, matrices, updates, is_leaf=lambda x: x is None
        )
    except ValueError as error:
        if str(error).startswith(caller):
            raise
        raise ValueError(
            f"{caller}: the matrices must have the tree structure of the updates "
            f"(None for leaves left as is): {error}"
        ) from None


def flat_projection() -> optax.GradientTransformationExtraArgs:
    """Multiplies kernel gradients by MIE's ``T`` matrices (Eq. 8).

    Its ``update`` takes the extra argument ``transforms``: a pytree of the
    structure of the updates whose leaves are ``[d, d]`` matrices (a kernel
    gradient ``g`` of shape ``[d, out]`` becomes ``T @ g``) or ``None`` (left as
    is). ``transforms=None``, or no such argument, is the identity, as at the
    start of Algorithm 1 where ``T = I``. Other extra arguments are ignored.

    Returns:
      A stateless ``optax.GradientTransformationExtraArgs``.

    References:
      Jiang, Chi and Yang, `Multimodal Classification via Modal-Aware
      Interactive Enhancement <https://arxiv.org/abs/2407.04587>`_, Eq. 8.
    """

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None, *, transforms=None, **extra_args):
        del params, extra_args
        if transforms is None:
            return updates, state
        return left_multiply(transforms, updates, caller="flat_projection"), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
