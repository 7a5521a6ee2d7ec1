"""Tests for mie_jax.fusion against float64 NumPy references."""

import chex
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest, parameterized

from mie_jax import fusion

# float32 JAX vs float64 NumPy.
ATOL = 1e-6


def softmax_reference(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exps = np.exp(shifted)
    return exps / exps.sum(axis=-1, keepdims=True)


def entropy_weights_reference(logits):
    """lambda_m = exp(max_k e_k - e_m) / sum_j exp(max_k e_k - e_j), per sample."""
    probs = softmax_reference(np.asarray(logits, dtype=np.float64))
    entropies = -np.sum(np.where(probs > 0, probs * np.log(probs), 0.0), axis=-1)  # [M, B]
    unnormalized = np.exp(entropies.max(axis=0) - entropies)
    return unnormalized / unnormalized.sum(axis=0)


def weighted_fusion_reference(logits):
    probs = softmax_reference(np.asarray(logits, dtype=np.float64))
    return np.sum(entropy_weights_reference(logits)[..., None] * probs, axis=0)


def random_logits(seed, shape=(3, 5, 4)):
    return np.random.default_rng(seed).normal(scale=3.0, size=shape).astype(np.float32)


class FusionTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(0, 1, 2)
    def test_average_fusion_is_mean_of_softmaxes(self, seed):
        logits = random_logits(seed)
        fused = self.variant(fusion.average_fusion)(logits)
        expected = softmax_reference(logits.astype(np.float64)).mean(axis=0)
        chex.assert_shape(fused, (5, 4))
        np.testing.assert_allclose(fused, expected, atol=ATOL)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(0, 1, 2)
    def test_weighted_fusion_matches_reference(self, seed):
        logits = random_logits(seed)
        fused = self.variant(fusion.entropy_weighted_fusion)(logits)
        chex.assert_shape(fused, (5, 4))
        np.testing.assert_allclose(fused, weighted_fusion_reference(logits), atol=ATOL)

    @chex.variants(with_jit=True, without_jit=True)
    def test_confident_modality_dominates_uniform_one_worked_example(self):
        # Modality 0: logits [ln 8, 0] -> p = [8/9, 1/9]. Modality 1: uniform.
        logits = np.array([[[np.log(8.0), 0.0]], [[0.0, 0.0]]], dtype=np.float32)
        # e_0 = ln 9 - (8/9) ln 8 ~ 0.34883, e_1 = ln 2 ~ 0.69315.
        e_0 = np.log(9.0) - (8.0 / 9.0) * np.log(8.0)
        lambda_0 = np.exp(np.log(2.0) - e_0) / (np.exp(np.log(2.0) - e_0) + 1.0)  # ~ 0.58524
        expected_first = lambda_0 * 8.0 / 9.0 + (1.0 - lambda_0) * 0.5  # ~ 0.72759

        weights = self.variant(fusion.entropy_fusion_weights)(logits)
        fused = self.variant(fusion.entropy_weighted_fusion)(logits)

        np.testing.assert_allclose(weights[:, 0], [lambda_0, 1.0 - lambda_0], atol=ATOL)
        np.testing.assert_allclose(fused[0], [expected_first, 1.0 - expected_first], atol=ATOL)
        # Closer to the confident modality than plain averaging (0.69444) is.
        self.assertGreater(float(fused[0, 0]), float(fusion.average_fusion(logits)[0, 0]))

    @chex.variants(with_jit=True, without_jit=True)
    def test_near_one_hot_modality_takes_almost_all_weight(self):
        confident = np.array([[30.0, 0.0, 0.0]], dtype=np.float32)
        uniform = np.zeros((1, 3), dtype=np.float32)
        fused = self.variant(fusion.entropy_weighted_fusion)(np.stack([uniform, confident]))
        # e = [ln 3, ~0]: lambda_confident = 3 / (3 + 1).
        np.testing.assert_allclose(fused[0], [0.75 + 0.25 / 3, 0.25 / 3, 0.25 / 3], atol=ATOL)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(0, 1, 2)
    def test_weights_are_a_distribution_over_modalities(self, seed):
        weights = self.variant(fusion.entropy_fusion_weights)(random_logits(seed))
        chex.assert_shape(weights, (3, 5))
        self.assertTrue(bool(jnp.all(weights >= 0)))
        np.testing.assert_allclose(weights.sum(axis=0), np.ones(5), atol=ATOL)
        np.testing.assert_allclose(weights, entropy_weights_reference(random_logits(seed)), atol=ATOL)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters("average", "weighted")
    def test_fused_rows_are_distributions(self, method):
        fused = self.variant(fusion.fuse, static_argnames="method")(random_logits(3), method=method)
        self.assertTrue(bool(jnp.all(fused >= 0)))
        np.testing.assert_allclose(fused.sum(axis=-1), np.ones(5), atol=ATOL)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters("average", "weighted")
    def test_adding_a_constant_to_a_modality_changes_nothing(self, method):
        logits = random_logits(4)
        shifted = logits.copy()
        shifted[1] += np.float32(7.5)  # the same constant for every class of modality 1
        fuse = self.variant(fusion.fuse, static_argnames="method")
        np.testing.assert_allclose(fuse(shifted, method=method), fuse(logits, method=method), atol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_weighted_equals_average_for_identical_modalities(self):
        logits = np.repeat(random_logits(5, shape=(1, 5, 4)), 3, axis=0)
        np.testing.assert_allclose(
            self.variant(fusion.entropy_weighted_fusion)(logits),
            self.variant(fusion.average_fusion)(logits),
            atol=ATOL,
        )

    @chex.variants(with_jit=True, without_jit=True)
    def test_single_modality_fuses_to_its_softmax(self):
        logits = random_logits(6, shape=(1, 5, 4))
        expected = softmax_reference(logits[0].astype(np.float64))
        for fn in (fusion.average_fusion, fusion.entropy_weighted_fusion):
            np.testing.assert_allclose(self.variant(fn)(logits), expected, atol=ATOL)

    @chex.variants(with_jit=True, without_jit=True)
    def test_fuse_dispatches_by_name(self):
        logits = random_logits(7)
        fuse = self.variant(fusion.fuse, static_argnames="method")
        np.testing.assert_allclose(fuse(logits, method="average"), fusion.average_fusion(logits), atol=ATOL)
        np.testing.assert_allclose(fuse(logits, method="weighted"), fusion.entropy_weighted_fusion(logits), atol=ATOL)

    def test_sequence_of_modalities_is_stacked(self):
        per_modality = list(random_logits(8))
        np.testing.assert_allclose(
            fusion.entropy_weighted_fusion(per_modality),
            fusion.entropy_weighted_fusion(np.stack(per_modality)),
        )

    def test_extreme_logits_stay_finite(self):
        logits = np.array([[[1e4, -1e4, 0.0]], [[-1e4, 1e4, 0.0]]], dtype=np.float32)
        self.assertTrue(bool(jnp.all(jnp.isfinite(fusion.entropy_weighted_fusion(logits)))))

    def test_unknown_method_lists_valid_names(self):
        with self.assertRaisesRegex(ValueError, r"method must be one of \('average', 'weighted'\)"):
            fusion.fuse(random_logits(0), method="max")

    @parameterized.parameters((5, 4), (2, 1, 5, 4), (0, 5, 4))
    def test_logits_must_be_modalities_batch_classes(self, *shape):
        for fn in (fusion.average_fusion, fusion.entropy_weighted_fusion):
            with self.assertRaisesRegex(ValueError, r"logits must have shape \[modalities"):
                fn(np.zeros(shape, dtype=np.float32))


if __name__ == "__main__":
    absltest.main()
