"""Gradient modification: MIE's backward phase (Eq. 5, 7, 8).

After modality ``k`` is trained, the input features of each head layer are
summarised by a covariance ``Ybar`` (Eq. 5). Its spectrum gives the matrix
``T = V diag(exp(-tau (lambda - lambda_min) / (lambda_max - lambda_min))) V^T``
(Eq. 7), whose eigenvalues lie in ``[exp(-tau), 1]``: directions in which
modality ``k``'s features vary most are damped most. While the next modality is
trained, the layer's weight gradient ``g`` (Flax kernel layout ``[in, out]``)
is replaced by ``T @ g`` (Eq. 8), which keeps the update flat along what
modality ``k`` learned.

Most of ``T``'s eigenvalues are 1 to within rounding (the batch-mean
covariance is dominated by a few directions), so ``T`` is also available as the
identity minus a low-rank correction, :class:`LowRankTransform`, computed with
a top-``r`` eigensolver and applied in ``4 d r out`` FLOPs instead of
``2 d^2 out``. Conv kernels ``[..., c_in, c_out]`` are projected over their
input channels (an extension beyond the paper, see :func:`flat_projection`).

References:
  Jiang, Chi and Yang, `Multimodal Classification via Modal-Aware Interactive
  Enhancement <https://arxiv.org/abs/2407.04587>`_, Eq. 5, 7, 8.
"""

from typing import Any, Callable, Literal, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from mie_jax import _validate

Statistic = Literal["batch_mean", "second_moment"]
_STATISTIC_CHOICES = ("batch_mean", "second_moment")
Solver = Literal["eigh", "subspace"]
_SOLVER_CHOICES = ("eigh", "subspace")


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
        raise ValueError(f"features must be 2-D [batch, d], got shape {tuple(features.shape)}.")
    d = features.shape[1]
    if cov.shape != (d, d):
        raise ValueError(
            f"cov must be [d, d] = {(d, d)} for features of shape {tuple(features.shape)}, got {tuple(cov.shape)}."
        )
    z = features.astype(cov.dtype)
    if statistic == "batch_mean":
        mean = jnp.mean(z, axis=0)
        return cov + jnp.outer(mean, mean)
    return cov + z.T @ z / z.shape[0]


def update_conv_covariance(cov, inputs, *, statistic: Statistic = "batch_mean"):
    """Adds one batch's term to a conv layer's input-channel covariance.

    An extension beyond the paper, which applies Eq. 5 to dense head layers
    only: a conv layer's input ``[B, ..., c_in]`` (e.g. ``[B, H, W, c_in]``) is
    summarised over its channels, its samples and positions pooled. With
    ``"batch_mean"`` the term is ``zbar zbar^T`` for ``zbar`` the mean over the
    batch and space, ``x.mean(axis=(0, 1, 2))`` for 2-D inputs. Its ``T`` is
    ``[c_in, c_in]``; :func:`flat_projection` applies it to every spatial tap of
    the ``[kh, kw, c_in, c_out]`` kernel gradient alike.

    Args:
      cov: the running ``[c_in, c_in]`` sum over the batches seen so far.
      inputs: the layer's input of one batch, ``[B, ..., c_in]``, at least 2-D.
      statistic: as in :func:`update_covariance`; ``"second_moment"`` adds the
        mean over samples and positions of ``x x^T``.

    Returns:
      ``cov`` plus the batch's term, in the dtype of ``cov``.

    Raises:
      ValueError: ``inputs`` has fewer than 2 dimensions, or as
        :func:`update_covariance`.
    """
    if inputs.ndim < 2:
        raise ValueError(f"inputs must be at least 2-D [batch, ..., channels], got shape {tuple(inputs.shape)}.")
    # Positions are more samples of the same channels: the spatial mean of a
    # batch is the mean of its rows once the positions are folded into them.
    return update_covariance(cov, inputs.reshape(-1, inputs.shape[-1]), statistic=statistic)


class LowRankTransform(NamedTuple):
    """``T = I - basis diag(damping) basis^T``: MIE's ``T`` (Eq. 7) as a low-rank correction.

    A pytree; :func:`flat_projection` applies it as
    ``g - basis (damping[:, None] * (basis^T g))``.

    Attributes:
      basis: ``[d, r]`` orthonormal eigenvectors of the covariance, largest
        eigenvalue first.
      damping: ``[r]`` the ``1 - sigma`` of those modes, decreasing, in
        ``[0, 1 - exp(-tau)]``; zeros for modes cut by ``tol``.
      bound: ``[]`` the spectral-norm distance to the dense ``T``,
        ``max(1 - sigma)`` over the modes left out or zeroed (0 when none
        are), to within the eigensolver's accuracy.
    """

    basis: jax.Array
    damping: jax.Array
    bound: jax.Array

    @classmethod
    def identity(cls, d: int, rank: int, dtype=jnp.float32) -> "LowRankTransform":
        """``T = I`` with the shapes of a rank-``rank`` transform, so steps compile once."""
        return cls(jnp.zeros((d, rank), dtype), jnp.zeros((rank,), dtype), jnp.zeros((), dtype))

    def dense(self) -> jax.Array:
        """The ``[d, d]`` matrix, for checks and small layers."""
        d = self.basis.shape[0]
        return jnp.eye(d, dtype=self.basis.dtype) - (self.basis * self.damping) @ self.basis.T


def _relative_spectrum(eigenvalues, lowest, highest, d, dtype):
    """``(lambda - lambda_min) / (lambda_max - lambda_min)``; 0 for a flat spectrum (``T = I``)."""
    spread = highest - lowest
    magnitude = jnp.maximum(jnp.abs(highest), jnp.abs(lowest))
    # A spread this small is eigh's rounding, not a direction worth damping.
    rounding = d * jnp.finfo(dtype).eps * magnitude
    is_flat = spread <= rounding
    return jnp.where(is_flat, 0.0, (eigenvalues - lowest) / jnp.where(is_flat, 1.0, spread))


def flat_transform(
    cov, tau, rank: Optional[int] = None, tol=None, *, solver: Solver = "eigh", iterations: int = 8, min_eigenvalue=None
):
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

    With ``rank=r`` it returns the low-rank form
    ``T_r = I - U diag(1 - sigma) U^T`` over the ``r`` largest eigenvalues
    (``sigma`` decreases with ``lambda``: the damped modes are the top ones),
    a :class:`LowRankTransform`. The modes left out have
    ``1 - sigma <= 1 - sigma_{r+1}``, so
    ``||T - T_r||_2 = max over the dropped modes of (1 - sigma)``, returned as
    ``bound``. Shapes depend on ``rank`` only, so it works under ``jit`` with a
    traced covariance: ``tol`` does not change them but zeroes the damping of
    kept modes with ``1 - sigma <= tol`` (they then count as dropped in
    ``bound``). ``bound > tol`` says that ``rank`` is too small for ``tol``;
    :func:`flat_rank` gives the rank a ``tol`` needs.

    The low-rank ``solver``:

    * ``"eigh"``: the full ``eigh``, exact, any symmetric ``cov``. It saves the
      projection's cost, not the decomposition's.
    * ``"subspace"``: block power iteration on ``2 r`` vectors
      (``iterations`` products ``cov @ Q`` of ``2 d^2 (2 r)`` FLOPs and QR
      steps), then Rayleigh-Ritz; ``O(d^2 r)`` instead of ``eigh``'s ``O(d^3)``.
      Needs a PSD ``cov`` (every covariance of :func:`update_covariance` is).
      The Ritz pairs of mode ``i`` converge as
      ``(lambda_{2r+1} / lambda_i)^iterations``; they are exact (to rounding)
      after one iteration when ``cov`` has rank ``<= 2 r``, as a batch-mean
      covariance of at most ``2 r`` batches does. It does not see
      ``lambda_min``: ``min_eigenvalue`` defaults to 0, exact for a batch-mean
      covariance of fewer than ``d`` batches (rank ``< d``); otherwise pass it
      (e.g. ``jnp.linalg.eigvalsh(cov)[0]`` where that is affordable) or accept
      that every ``sigma`` moves by at most ``tau * lambda_min / lambda_max``.

    Args:
      cov: a symmetric ``[d, d]`` covariance (only its symmetric part is used).
      tau: the damping strength ``tau > 0`` (the paper uses 0.4).
      rank: ``None`` for the dense ``[d, d]`` ``T`` (the default), or the
        number ``r`` in ``[1, d]`` of modes kept (a Python int: it sets shapes).
      tol: only with ``rank``: damping at or below it is set to 0
        (default ``None``: none is).
      solver: ``"eigh"`` or ``"subspace"``, for the low-rank form.
      iterations: the subspace solver's power iterations, ``>= 1``.
      min_eigenvalue: only with the subspace solver: ``lambda_min`` of ``cov``
        (default ``None``: 0).

    Returns:
      Without ``rank``: the symmetric ``[d, d]`` matrix ``T`` with eigenvalues
      in ``[exp(-tau), 1]`` and the eigenvectors of ``cov``, in ``cov``'s dtype.
      With ``rank``: a :class:`LowRankTransform` in ``cov``'s dtype.

    Raises:
      ValueError: ``cov`` is not a square 2-D array, ``tau <= 0``, ``rank`` is
        not an int in ``[1, d]``, ``tol < 0`` or given without ``rank``,
        ``solver`` is unknown, ``iterations < 1``, or ``min_eigenvalue`` is
        given for the eigh solver.
    """
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
        raise ValueError(f"cov must be a square [d, d] matrix, got {tuple(cov.shape)}.")
    _validate.positive("tau", tau)
    if rank is not None:
        return _low_rank_transform(cov, tau, rank, tol, solver, iterations, min_eigenvalue)
    if tol is not None:
        raise ValueError("tol applies to the low-rank form only: pass rank as well.")
    symmetric = (cov + cov.T) / 2
    eigenvalues, eigenvectors = jnp.linalg.eigh(symmetric)
    relative = _relative_spectrum(eigenvalues, eigenvalues[0], eigenvalues[-1], cov.shape[0], cov.dtype)
    damping = jnp.exp(-tau * relative).astype(cov.dtype)
    t = (eigenvectors * damping) @ eigenvectors.T
    return (t + t.T) / 2


def _check_rank(rank, d: int) -> None:
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= d:
        raise ValueError(f"rank must be an int in [1, d] = [1, {d}], got {rank!r}.")


def _top_eigenpairs(symmetric, block: int, iterations: int):
    """The ``block`` largest Ritz pairs of a PSD matrix by block power iteration, largest first."""
    d = symmetric.shape[0]
    # A fixed start keeps T a function of cov alone; QR keeps the block orthonormal.
    start = jax.random.normal(jax.random.key(0), (d, block), symmetric.dtype)
    q = jax.lax.fori_loop(0, iterations, lambda _, q: jnp.linalg.qr(symmetric @ q)[0], jnp.linalg.qr(start)[0])
    ritz_values, ritz_vectors = jnp.linalg.eigh(q.T @ symmetric @ q)
    return ritz_values[::-1], (q @ ritz_vectors)[:, ::-1]


def _low_rank_transform(cov, tau, rank, tol, solver, iterations, min_eigenvalue):
    d = cov.shape[0]
    _check_rank(rank, d)
    _validate.choice("solver", solver, _SOLVER_CHOICES)
    if tol is not None:
        _validate.non_negative("tol", tol)
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be an int >= 1, got {iterations!r}.")
    symmetric = (cov + cov.T) / 2
    if solver == "eigh":
        if min_eigenvalue is not None:
            raise ValueError("min_eigenvalue applies to the subspace solver only: eigh computes it.")
        eigenvalues, eigenvectors = jnp.linalg.eigh(symmetric)
        lowest, highest = eigenvalues[0], eigenvalues[-1]
        # Largest first; one mode past the kept ones (if any) gives the bound.
        eigenvalues, eigenvectors = eigenvalues[::-1][: rank + 1], eigenvectors[:, ::-1][:, :rank]
    else:
        # Twice the kept modes: the extra ones speed up convergence and give the next eigenvalue.
        eigenvalues, eigenvectors = _top_eigenpairs(symmetric, min(d, 2 * rank), iterations)
        eigenvalues, eigenvectors = eigenvalues[: rank + 1], eigenvectors[:, :rank]
        lowest = jnp.asarray(0.0 if min_eigenvalue is None else min_eigenvalue, cov.dtype)
        highest = eigenvalues[0]
    relative = _relative_spectrum(eigenvalues, lowest, highest, d, cov.dtype)
    # expm1 keeps the small dampings exact, which tol compares.
    damping = -jnp.expm1(-tau * relative)
    kept, next_damping = damping[:rank], damping[rank:]
    cut = jnp.zeros_like(kept) if tol is None else jnp.where(kept > tol, 0.0, kept)
    # Dampings decrease with the eigenvalue, so the largest dropped one is the next mode's or a cut one.
    bound = jnp.max(jnp.concatenate([cut, next_damping, jnp.zeros((1,), kept.dtype)]))
    kept = kept - cut
    return LowRankTransform(eigenvectors.astype(cov.dtype), kept.astype(cov.dtype), bound.astype(cov.dtype))


def flat_rank(cov, tau, tol):
    """How many modes of ``T`` have ``1 - sigma > tol``: the rank that ``tol`` needs.

    For choosing ``rank`` of :func:`flat_transform` (a static shape) from a
    representative covariance, outside the training step. It computes the
    eigenvalues of ``cov`` (``eigvalsh``, ``O(d^3)``).

    Args:
      cov: a symmetric ``[d, d]`` covariance.
      tau: the damping strength ``tau > 0``.
      tol: the damping threshold ``tol >= 0``.

    Returns:
      An int32 scalar array in ``[0, d]``.

    Raises:
      ValueError: ``cov`` is not square, ``tau <= 0`` or ``tol < 0``.
    """
    if cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
        raise ValueError(f"cov must be a square [d, d] matrix, got {tuple(cov.shape)}.")
    _validate.positive("tau", tau)
    _validate.non_negative("tol", tol)
    eigenvalues = jnp.linalg.eigvalsh((cov + cov.T) / 2)
    relative = _relative_spectrum(eigenvalues, eigenvalues[0], eigenvalues[-1], cov.shape[0], cov.dtype)
    return jnp.sum(-jnp.expm1(-tau * relative) > tol).astype(jnp.int32)


def flat_transforms(
    covariances: Any, tau, rank: Optional[int] = None, tol=None, *, solver: Solver = "eigh", iterations: int = 8
) -> Any:
    """Maps a pytree of covariances to the pytree of their ``T`` matrices.

    Args:
      covariances: a pytree whose leaves are ``[d, d]`` covariances; ``None``
        marks a leaf without one and stays ``None``.
      tau: the damping strength ``tau > 0``.
      rank: ``None`` for dense ``T`` (the default), or an int ``r >= 1``: each
        leaf gets the low-rank form of rank ``min(r, d)`` (``d`` is exact).
      tol, solver, iterations: as in :func:`flat_transform`, for every leaf.

    Returns:
      A pytree of the same structure with ``flat_transform(cov, tau, ...)`` per
      leaf (``[d, d]`` arrays or :class:`LowRankTransform`), ready to pass as
      ``transforms=`` to :func:`flat_projection`.

    Raises:
      ValueError: a leaf is not square (the message names its path),
        ``tau <= 0``, or an argument is invalid as in :func:`flat_transform`.
    """
    _validate.positive("tau", tau)
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
        raise ValueError(f"rank must be an int >= 1, got {rank!r}.")

    def one(path, cov):
        if cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
            raise ValueError(
                f"covariance at {jax.tree_util.keystr(path)} must be square [d, d], got {tuple(cov.shape)}."
            )
        if rank is None:
            return flat_transform(cov, tau, tol=tol)
        return flat_transform(cov, tau, min(rank, cov.shape[0]), tol, solver=solver, iterations=iterations)

    return jax.tree_util.tree_map_with_path(one, covariances)


def _matrix_shape(matrix) -> tuple:
    return matrix.basis.shape[:1] * 2 if isinstance(matrix, LowRankTransform) else tuple(matrix.shape)


def _check_matrix(matrix, d: int, what: str, against: str) -> None:
    if _matrix_shape(matrix) != (d, d):
        raise ValueError(
            f"{what} must be {(d, d)} to match the kernel's input dimension ({against}), got {_matrix_shape(matrix)}."
        )


def _multiply_input_axis(matrix, kernel):
    """``M @ g`` over a kernel's input axis ``-2`` (matmul broadcasts over a conv kernel's spatial axes)."""
    if isinstance(matrix, LowRankTransform):
        projected = kernel - matrix.basis @ (matrix.damping[:, None] * (matrix.basis.T @ kernel))
    else:
        projected = matrix @ kernel
    return projected.astype(kernel.dtype)


def _multiply_feature_axis(matrix, inputs):
    """``x M^T`` over the inputs' feature axis ``-1``: what ``M @ g`` is for a kernel gradient ``g = x^T dy``."""
    if isinstance(matrix, LowRankTransform):  # Symmetric: U diag(damping) U^T.
        projected = inputs - ((inputs @ matrix.basis) * matrix.damping) @ matrix.basis.T
    else:
        projected = inputs @ matrix.T
    return projected.astype(inputs.dtype)


def left_multiply(matrices: Any, updates: Any, *, caller: str) -> Any:
    """Replaces each update ``g`` ``[..., d, out]`` by ``M @ g``; ``None`` skips.

    ``M`` acts on the input axis ``-2`` of Flax kernels: ``[in, out]`` for
    Dense, ``[kh, kw, c_in, out]`` for Conv, where it multiplies every spatial
    tap alike.

    Args:
      matrices: a pytree of the structure of ``updates`` whose leaves are
        ``[d, d]`` matrices, :class:`LowRankTransform` (applied as
        ``g - U (damping * (U^T g))``) or ``None``.
      updates: the pytree of updates.
      caller: the transform's name, for error messages.

    Returns:
      The updates with the matrices applied, in their own dtypes.

    Raises:
      ValueError: the structures differ, an update is not at least 2-D, or a
        matrix does not match its update's input dimension (the message names
        the leaf path and shapes).
    """

    def one(path, matrix, update):
        if matrix is None:
            return update
        where = jax.tree_util.keystr(path)
        if update.ndim < 2:
            raise ValueError(
                f"{caller}: update at {where} must be a kernel [..., in, out] to "
                f"project, got shape {tuple(update.shape)}."
            )
        _check_matrix(matrix, update.shape[-2], f"{caller}: matrix at {where}", f"kernel {tuple(update.shape)}")
        return _multiply_input_axis(matrix, update)

    try:
        return jax.tree_util.tree_map_with_path(
            one,
            matrices,
            updates,
            is_leaf=lambda x: x is None or isinstance(x, LowRankTransform),
        )
    except ValueError as error:
        if str(error).startswith(caller):
            raise
        raise ValueError(
            f"{caller}: the matrices must have the tree structure of the updates (None for leaves left as is): {error}"
        ) from None


def flat_projection() -> optax.GradientTransformationExtraArgs:
    """Multiplies kernel gradients by MIE's ``T`` matrices (Eq. 8).

    Its ``update`` takes the extra argument ``transforms``: a pytree of the
    structure of the updates whose leaves are ``[d, d]`` matrices (a kernel
    gradient ``g`` of shape ``[d, out]`` becomes ``T @ g``),
    :class:`LowRankTransform` (``g - U (damping * (U^T g))``, ``4 d r out``
    FLOPs instead of ``2 d^2 out``) or ``None`` (left as is).
    ``transforms=None``, or no such argument, is the identity, as at the
    start of Algorithm 1 where ``T = I``. Other extra arguments are ignored.

    Conv kernels ``[kh, kw, c_in, c_out]`` (any number of leading axes) are
    projected over their input channels by a ``[c_in, c_in]`` ``T``, the same at
    every tap: as a dense kernel ``[kh kw c_in, c_out]`` (row-major reshape) it
    is multiplied by ``kron(I_{kh kw}, T)``. This, with the covariance of
    :func:`update_conv_covariance`, extends the paper, which modifies the head's
    dense layers only.

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


def flat_layer(layer: Callable[[jax.Array, jax.Array], jax.Array], inputs, kernel, transform):
    """``layer(inputs, kernel)`` whose kernel gradient comes out multiplied by ``T`` (Eq. 8).

    The backward-pass form of :func:`flat_projection` for one layer, for models
    that call their layers themselves: the gradient reaching ``kernel`` is the
    ``T @ g`` that :func:`flat_projection` would make of it (for conv kernels,
    over the input channels), and the gradient reaching ``inputs`` is the
    ordinary one, so the layers before it train as they would.

    Why it can be cheaper: a layer linear in its inputs along their last axis
    (a dense layer, a convolution without feature groups) has the kernel
    gradient ``g = x^T dy`` summed over positions, so ``T @ g`` is the kernel
    gradient at the inputs ``x T^T``. Projecting the ``n`` input rows (batch
    times positions) costs ``4 n d r`` FLOPs with a :class:`LowRankTransform`,
    projecting the gradient ``4 r |kernel|``; the cheaper side is taken, the
    inputs when ``n < |kernel| / d``: a wide dense layer trained on small
    batches. Both give the same gradient up to rounding.

    Args:
      layer: ``layer(inputs, kernel)``, linear in ``inputs``, contracting the
        inputs' last axis with the kernel's axis ``-2`` (e.g.
        ``lambda x, k: x @ k``); a bias is added outside it.
      inputs: ``[..., d]``.
      kernel: ``[..., d, out]``.
      transform: a ``[d, d]`` matrix, a :class:`LowRankTransform`, or ``None``
        (the plain ``layer``).

    Returns:
      ``layer(inputs, kernel)``.

    Raises:
      ValueError: the inputs' last axis, the kernel's axis ``-2`` and the
        transform do not all have the same size ``d``.

    References:
      Jiang, Chi and Yang, `Multimodal Classification via Modal-Aware
      Interactive Enhancement <https://arxiv.org/abs/2407.04587>`_, Eq. 8.
    """
    if transform is None:
        return layer(inputs, kernel)
    d = inputs.shape[-1]
    if kernel.ndim < 2 or kernel.shape[-2] != d:
        raise ValueError(
            f"flat_layer: kernel {tuple(kernel.shape)} must be [..., d, out] with the inputs' d = {d} "
            f"(inputs {tuple(inputs.shape)})."
        )
    _check_matrix(transform, d, "flat_layer: transform", f"kernel {tuple(kernel.shape)}")
    on_inputs = inputs.size // d < kernel.size // d  # Rows projected vs kernel columns projected.

    @jax.custom_vjp
    def apply(inputs, kernel, transform):
        return layer(inputs, kernel)

    def forward(inputs, kernel, transform):
        return layer(inputs, kernel), (inputs, kernel, transform)

    def backward(residuals, cotangent):
        inputs, kernel, transform = residuals
        if on_inputs:
            (input_grad,) = jax.vjp(lambda x: layer(x, kernel), inputs)[1](cotangent)
            projected = _multiply_feature_axis(transform, inputs)
            (kernel_grad,) = jax.vjp(lambda k: layer(projected, k), kernel)[1](cotangent)
        else:
            input_grad, kernel_grad = jax.vjp(layer, inputs, kernel)[1](cotangent)
            kernel_grad = _multiply_input_axis(transform, kernel_grad)
        return input_grad, kernel_grad, jax.tree.map(jnp.zeros_like, transform)

    apply.defvjp(forward, backward)
    return apply(inputs, kernel, transform)
