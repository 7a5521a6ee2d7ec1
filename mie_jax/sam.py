"""Sharpness-aware minimisation: MIE's forward phase (Eq. 2-4).

The perturbation moves the parameters a distance ``rho`` along the gradient,
``eps = rho * g / ||g||_2``; the update then uses the gradient evaluated at
``theta + eps`` while ``theta`` itself is updated from ``theta``.

References:
  Jiang, Chi and Yang, `Multimodal Classification via Modal-Aware Interactive
  Enhancement <https://arxiv.org/abs/2407.04587>`_, Eq. 2-4.
  Foret et al., `Sharpness-Aware Minimization for Efficiently Improving
  Generalization <https://arxiv.org/abs/2010.01412>`_, 2021.
"""

from typing import Any, Callable, Literal, Optional

import jax
import jax.numpy as jnp
import optax

from mie_jax import _validate

Normalize = Literal["global", "per_tensor"]
_NORMALIZE_CHOICES = ("global", "per_tensor")


def _safe_scale(rho, norm):
    """rho / norm, or 0 where norm is 0 (a zero gradient has no direction)."""
    positive = norm > 0
    return jnp.where(positive, rho / jnp.where(positive, norm, 1.0), 0.0)


def sam_perturbation(grads: Any, rho, *, normalize: Normalize = "global") -> Any:
    """The SAM perturbation ``eps = rho * g / ||g||_2`` (MIE Eq. 3).

    Args:
      grads: a pytree of gradients ``g`` at the current parameters.
      rho: the radius of the neighbourhood, ``rho >= 0``.
      normalize: ``"global"`` divides by the L2 norm of the whole pytree (the
        paper). ``"per_tensor"`` divides each leaf by its own L2 norm (the
        authors' released code).

    Returns:
      A pytree ``eps`` of the structure and dtypes of ``grads``. Its global norm is
      ``rho`` (``"global"``) or each leaf's norm is ``rho`` (``"per_tensor"``).
      A zero gradient (globally, or a zero leaf under ``"per_tensor"``) gives a
      zero perturbation, never NaN.

    Raises:
      ValueError: ``rho`` is negative or ``normalize`` is unknown.
    """
    _validate.non_negative("rho", rho)
    _validate.choice("normalize", normalize, _NORMALIZE_CHOICES)
    if normalize == "global":
        scale = _safe_scale(rho, optax.tree.norm(grads))
        return jax.tree.map(lambda g: (scale * g).astype(g.dtype), grads)
    return jax.tree.map(
        lambda g: (_safe_scale(rho, jnp.linalg.norm(g.ravel())) * g).astype(g.dtype),
        grads,
    )


def _masked(updates: Any, mask: Any) -> Any:
    """``updates`` with zeros where ``mask`` is False."""
    if jax.tree.structure(mask) != jax.tree.structure(updates):
        raise ValueError(
            f"sam: mask must have the structure of params, got {jax.tree.structure(mask)} "
            f"for {jax.tree.structure(updates)}."
        )
    return jax.tree.map(lambda u, keep: u if keep else jnp.zeros_like(u), updates, mask)


def sam(
    rho: float,
    *,
    normalize: Normalize = "global",
    mix: Optional[float] = None,
    axis_name: Optional[str] = None,
    mask: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """Replaces the incoming gradient by the gradient at ``params + eps``.

    Place it first in a chain: the transforms after it (a gradient projection,
    weight decay, the optimizer) see the sharpness-aware gradient. Its
    ``update`` takes the caller's gradient function as the extra argument
    ``grad_fn`` with the signature of ``optax.contrib.sam``'s opaque mode,
    ``grad_fn(params, i) -> grads``, so one function serves both. Unlike
    ``optax.contrib.sam``, it ignores extra arguments meant for other transforms,
    so it composes with any of them in ``optax.chain``::

      tx = optax.chain(mie_jax.sam(rho=0.05), mie_jax.flat_projection(),
                       optax.sgd(1e-2, momentum=0.9))
      updates, state = tx.update(grads, state, params, grad_fn=grad_fn,
                                 transforms=t_tree)

    Args:
      rho: the radius of the neighbourhood, ``rho >= 0`` (the paper uses 1e-15
        for image and text, 1e-10 for audio).
      normalize: how to normalise the gradient, see :func:`sam_perturbation`.
      mix: ``None`` returns the perturbed gradient ``g_adv``. A weight ``alpha``
        in [0, 1] returns ``(1 - alpha) * g + alpha * g_adv``: with
        ``alpha=0.3`` this is the gradient of the released code's loss
        ``0.7 * L(theta) + 0.3 * L(theta + eps)``.
      axis_name: for use inside ``shard_map``, ``pmap`` or ``vmap`` where each
        device holds the gradient of its own part of the batch: each device
        is perturbed along its own gradient (m-sharpness, as in the SAM
        authors' code) and the returned gradient is the mean over the axis.
        ``None`` (the default) expects the global gradient.
      mask: which parameters to perturb: a pytree of bools with the structure
        of ``params``, or a function of ``params`` returning one (as
        ``optax.masked`` takes). Unmasked parameters keep ``eps = 0`` and are
        left out of the global norm; the gradient is still taken with
        respect to every parameter. ``None`` perturbs all of them. The
        released code perturbs the classification head only.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose ``update(updates, state,
      params, *, grad_fn, **extra_args)`` needs ``params`` and ``grad_fn``.

    Raises:
      ValueError: ``rho < 0``, ``mix`` outside [0, 1] or unknown ``normalize``;
        at update, a ``mask`` whose structure is not that of ``params``.

    References:
      Jiang, Chi and Yang, `Multimodal Classification via Modal-Aware
      Interactive Enhancement <https://arxiv.org/abs/2407.04587>`_, Eq. 2-4.
    """
    _validate.non_negative("rho", rho)
    _validate.choice("normalize", normalize, _NORMALIZE_CHOICES)
    if mix is not None and not 0.0 <= mix <= 1.0:
        raise ValueError(f"sam: mix must lie in [0, 1] or be None, got {mix}.")

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(
        updates,
        state,
        params=None,
        *,
        grad_fn: Optional[Callable[[Any, int], Any]] = None,
        **extra_args,
    ):
        del extra_args  # Meant for other transforms of the chain.
        if params is None:
            raise ValueError("sam: update needs params (the point to perturb).")
        if grad_fn is None:
            raise ValueError("sam: update needs the extra argument grad_fn(params, i) -> grads.")
        if mask is not None:
            updates_to_perturb = _masked(updates, mask(params) if callable(mask) else mask)
        else:
            updates_to_perturb = updates
        eps = sam_perturbation(updates_to_perturb, rho, normalize=normalize)
        perturbed_params = jax.tree.map(lambda p, e: (p + e).astype(p.dtype), params, eps)
        perturbed_grads = grad_fn(perturbed_params, 0)
        if axis_name is not None:
            perturbed_grads = jax.lax.pmean(perturbed_grads, axis_name)
            updates = jax.lax.pmean(updates, axis_name)
        if mix is None:
            return perturbed_grads, state
        mixed = jax.tree.map(
            lambda g, ga: ((1.0 - mix) * g + mix * ga).astype(g.dtype),
            updates,
            perturbed_grads,
        )
        return mixed, state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
