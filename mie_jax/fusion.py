"""Test-time fusion of per-modality logits into one class distribution.

All functions are pure and jit-able. They take the logits of M modalities over
the same C classes, stacked as an array of shape [M, B, C] (a sequence of M
[B, C] arrays is stacked for you), and return probabilities of shape [B, C].
"""

from typing import Sequence, Union

import jax
import jax.numpy as jnp

Logits = Union[jax.Array, Sequence[jax.Array]]

FUSION_METHODS = ("average", "weighted")


def _stacked_logits(logits: Logits) -> jax.Array:
    logits = jnp.asarray(logits)
    if logits.ndim != 3 or logits.shape[0] < 1:
        raise ValueError(
            f"logits must have shape [modalities, batch, classes] with at least one modality, got shape {logits.shape}."
        )
    return logits


def average_fusion(logits: Logits) -> jax.Array:
    """Mean over modalities of the per-modality softmax.

    Args:
        logits: per-modality logits, shape [M, B, C].

    Returns:
        Fused class probabilities, shape [B, C].

    Raises:
        ValueError: if `logits` is not of shape [M, B, C] with M >= 1.
    """
    logits = _stacked_logits(logits)
    return jnp.mean(jax.nn.softmax(logits, axis=-1), axis=0)


def entropy_fusion_weights(logits: Logits) -> jax.Array:
    """Per-sample modality weights of MLA's uncertainty-based fusion.

    With p_m = softmax(z_m) and e_m = -sum_c p_m[c] log p_m[c] (natural log),
    the weight of modality m for one sample is

        lambda_m = exp(max_k e_k - e_m) / sum_j exp(max_k e_k - e_j),

    so the less uncertain a modality, the larger its weight. The max cancels
    between numerator and denominator (lambda = softmax(-e) over modalities);
    it only keeps the exponentials bounded, which `jax.nn.softmax` also does.

    Args:
        logits: per-modality logits, shape [M, B, C].

    Returns:
        Weights of shape [M, B], non-negative and summing to one over M.

    Raises:
        ValueError: if `logits` is not of shape [M, B, C] with M >= 1.

    References:
        Zhang et al., "Multimodal Representation Learning by Alternating
        Unimodal Adaptation", CVPR 2024 (arXiv:2311.10707).
    """
    logits = _stacked_logits(logits)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    # Using log_softmax keeps p * log p finite (0 * finite) when p underflows.
    entropies = -jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1)
    return jax.nn.softmax(-entropies, axis=0)


def entropy_weighted_fusion(logits: Logits) -> jax.Array:
    """MLA's test-time uncertainty-based fusion of modality predictions.

    For each sample, fused = sum_m lambda_m * softmax(z_m), with the
    entropy-based weights lambda_m of `entropy_fusion_weights`:

        e_m      = -sum_c p_m[c] log p_m[c],   p_m = softmax(z_m)
        lambda_m = exp(max_k e_k - e_m) / sum_j exp(max_k e_k - e_j)

    A confident (low-entropy) modality dominates an uncertain one; with
    identical modalities this reduces to `average_fusion`.

    This follows the paper's description: one entropy per sample and
    modality, and a lambda-weighted sum of the unimodal predictions, taken
    here to be the softmax outputs. The authors' public code
    (github.com/Cecile-hi/Multimodal-Learning-with-Alternating-Unimodal-Adaptation,
    `main.py`: `calculate_entropy`, `calculate_gating_weights`, and `valid`
    with `--dynamic`) differs in two ways:
    its softmax runs over the batch axis (`dim=0`) and the entropy is summed
    over the whole batch, so each modality gets one weight per batch rather
    than per sample; and it weights the logits and applies softmax afterwards,
    softmax(sum_m lambda_m z_m), instead of mixing probabilities.

    Args:
        logits: per-modality logits, shape [M, B, C].

    Returns:
        Fused class probabilities, shape [B, C].

    Raises:
        ValueError: if `logits` is not of shape [M, B, C] with M >= 1.

    References:
        Zhang et al., "Multimodal Representation Learning by Alternating
        Unimodal Adaptation", CVPR 2024 (arXiv:2311.10707).
    """
    logits = _stacked_logits(logits)
    weights = entropy_fusion_weights(logits)
    return jnp.sum(weights[..., None] * jax.nn.softmax(logits, axis=-1), axis=0)


def fuse(logits: Logits, method: str) -> jax.Array:
    """Fuses per-modality logits with the named method.

    Args:
        logits: per-modality logits, shape [M, B, C].
        method: "average" (`average_fusion`) or "weighted"
            (`entropy_weighted_fusion`). Under `jax.jit` it must be static.

    Returns:
        Fused class probabilities, shape [B, C].

    Raises:
        ValueError: if `method` is unknown or `logits` has the wrong shape.
    """
    if method == "average":
        return average_fusion(logits)
    if method == "weighted":
        return entropy_weighted_fusion(logits)
    raise ValueError(f"method must be one of {FUSION_METHODS}, got {method!r}.")
