"""Spectra of the head kernels: singular values, their concentration, and how far training moved them."""

from typing import Any, Mapping, Sequence

import numpy as np

from mie_jax.models.head import HEAD_LAYERS

# How many of the largest singular values a summary lists and sums.
TOP_K = 5


def head_singular_values(params: Mapping[str, Any]) -> dict:
    """The singular values of each head kernel of one modality's classifier.

    Args:
      params: the classifier's parameters, with ``params["head"][layer]["kernel"]``
        for each layer of ``HEAD_LAYERS``.

    Returns:
      ``{layer: singular values}``, each a descending float64 array of length
      ``min(in, out)`` of the kernel ``[in, out]``.
    """
    # The kernels are small: numpy's float64 SVD costs less than compiling one per shape.
    return {
        layer: np.linalg.svd(np.asarray(params["head"][layer]["kernel"], np.float64), compute_uv=False)
        for layer in HEAD_LAYERS
    }


def head_relative_change(params: Mapping[str, Any], initial_params: Mapping[str, Any]) -> dict:
    """How far training moved each head kernel from its initialisation.

    Args:
      params: one modality's classifier parameters after training.
      initial_params: the same classifier's parameters before training.

    Returns:
      ``{layer: ||W - W0||_F / ||W0||_F}`` for each layer of ``HEAD_LAYERS``.
    """
    changes = {}
    for layer in HEAD_LAYERS:
        trained, initial = (np.asarray(p["head"][layer]["kernel"], np.float64) for p in (params, initial_params))
        changes[layer] = float(np.linalg.norm(trained - initial) / np.linalg.norm(initial))
    return changes


def spectrum_summary(singular_values: Sequence[float]) -> dict:
    """A short description of one kernel's spectrum.

    Args:
      singular_values: the kernel's singular values, in any order.

    Returns:
      ``top`` (the ``TOP_K`` largest, descending), ``largest``, ``condition_number``
      (largest over smallest) and ``top_energy`` (the share of the squared Frobenius
      norm in the ``TOP_K`` largest).
    """
    values = np.sort(np.asarray(singular_values, np.float64))[::-1]
    energy = values**2
    return {
        "top": values[:TOP_K].tolist(),
        "largest": float(values[0]),
        "condition_number": float(values[0] / values[-1]),
        "top_energy": float(energy[:TOP_K].sum() / energy.sum()),
    }
