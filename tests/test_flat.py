"""Specification of the covariance, T matrix and flat_projection (MIE Eq. 5, 7, 8)."""

import chex
import hypothesis
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized

import mie_jax
from tests import references

TAU = 0.4


def random_covariance(seed, d, rank=None):
    """A PSD covariance built as in Eq. 5 from `rank` random batches."""
    rng = np.random.default_rng(seed)
    batches = [rng.normal(loc=rng.normal(size=d), size=(12, d)) for _ in range(rank or d)]
    return references.covariance(batches).astype(np.float32), batches


def spectra():
    """Covariances V diag(lambda) V^T with a spread-out positive spectrum."""
    return hypothesis.strategies.tuples(
        hypothesis.strategies.integers(0, 2**31 - 1),
        hypothesis.strategies.integers(2, 8),
    )


class UpdateCovarianceTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_accumulates_batch_mean_outer_products(self):
        _, batches = random_covariance(0, 5, rank=3)
        cov = jnp.zeros((5, 5))
        update = self.variant(mie_jax.update_covariance)
        for z in batches:
            cov = update(cov, jnp.asarray(z, jnp.float32))
        np.testing.assert_allclose(cov, references.covariance(batches), rtol=1e-4, atol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_second_moment_option(self):
        z = np.random.default_rng(1).normal(size=(6, 4))
        out = self.variant(lambda c, f: mie_jax.update_covariance(c, f, statistic="second_moment"))(
            jnp.eye(4), jnp.asarray(z, jnp.float32)
        )
        np.testing.assert_allclose(out, np.eye(4) + z.T @ z / 6, rtol=1e-5, atol=1e-6)

    def test_one_batch_adds_a_rank_one_term(self):
        z = jnp.asarray(np.random.default_rng(2).normal(size=(12, 6)), jnp.float32)
        cov = mie_jax.update_covariance(jnp.zeros((6, 6)), z)
        self.assertEqual(int(jnp.linalg.matrix_rank(cov)), 1)
        chex.assert_trees_all_close(cov, cov.T)

    def test_features_must_be_2d(self):
        with pytest.raises(ValueError, match=r"features must be 2-D \[batch, d\], got shape \(2, 3, 4\)"):
            mie_jax.update_covariance(jnp.zeros((4, 4)), jnp.ones((2, 3, 4)))

    def test_cov_must_match_feature_dimension(self):
        with pytest.raises(ValueError, match=r"cov must be \[d, d\] = \(3, 3\).*got \(4, 4\)"):
            mie_jax.update_covariance(jnp.zeros((4, 4)), jnp.ones((2, 3)))

    def test_unknown_statistic(self):
        with pytest.raises(ValueError, match=r"statistic must be one of"):
            mie_jax.update_covariance(jnp.zeros((3, 3)), jnp.ones((2, 3)), statistic="median")


class FlatTransformTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters((4, 4), (8, 3), (16, 16))
    def test_matches_float64_svd_reference(self, d, rank):
        cov, _ = random_covariance(d, d, rank)
        t = self.variant(mie_jax.flat_transform)(jnp.asarray(cov), TAU)
        np.testing.assert_allclose(t, references.flat_transform(cov, TAU), atol=2e-5)

    @chex.variants(with_jit=True, without_jit=True)
    @hypothesis.given(spectrum=spectra(), tau=hypothesis.strategies.floats(0.05, 5.0))
    def test_symmetric_with_eigenvalues_in_exp_minus_tau_to_one(self, spectrum, tau):
        seed, d = spectrum
        cov, _ = random_covariance(seed, d)
        t = np.asarray(self.variant(mie_jax.flat_transform)(jnp.asarray(cov), tau), np.float64)
        np.testing.assert_allclose(t, t.T, atol=1e-6)
        eigenvalues = np.linalg.eigvalsh(t)
        self.assertGreaterEqual(eigenvalues.min(), np.exp(-tau) - 1e-5)
        self.assertLessEqual(eigenvalues.max(), 1.0 + 1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    @hypothesis.given(spectrum=spectra(), scale=hypothesis.strategies.floats(1e-3, 1e3))
    def test_invariant_to_scaling_the_covariance(self, spectrum, scale):
        seed, d = spectrum
        cov, _ = random_covariance(seed, d)
        transform = self.variant(mie_jax.flat_transform)
        np.testing.assert_allclose(
            transform(jnp.asarray(cov), TAU), transform(jnp.asarray(cov * np.float32(scale)), TAU), atol=1e-4
        )

    @chex.variants(with_jit=True, without_jit=True)
    def test_eigenvectors_are_the_covariances(self):
        rng = np.random.default_rng(3)
        basis, _ = np.linalg.qr(rng.normal(size=(5, 5)))
        spectrum = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
        cov = (basis * spectrum) @ basis.T
        t = self.variant(mie_jax.flat_transform)(jnp.asarray(cov, jnp.float32), TAU)
        expected_damping = np.exp(-TAU * (spectrum - 1.0) / 15.0)
        # T v_i = sigma_i v_i for each eigenvector v_i of the covariance.
        np.testing.assert_allclose(np.asarray(t) @ basis, basis * expected_damping, atol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        ("isotropic", lambda d: 3.0 * np.eye(d)),
        ("zero", lambda d: np.zeros((d, d))),
        (
            "rotated_isotropic",
            lambda d: (lambda q: 2.5 * q @ q.T)(np.linalg.qr(np.random.default_rng(4).normal(size=(d, d)))[0]),
        ),
    )
    def test_flat_spectrum_gives_identity(self, make):
        t = self.variant(mie_jax.flat_transform)(jnp.asarray(make(6), jnp.float32), TAU)
        np.testing.assert_allclose(t, np.eye(6), atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_rank_deficient_covariance_is_finite(self):
        cov, _ = random_covariance(5, 32, rank=1)
        t = self.variant(mie_jax.flat_transform)(jnp.asarray(cov), TAU)
        chex.assert_tree_all_finite(t)
        np.testing.assert_allclose(t, references.flat_transform(cov, TAU), atol=1e-5)

    @parameterized.parameters(512, 2048)
    def test_large_float32_is_finite_and_symmetric(self, d):
        z = np.random.default_rng(d).normal(size=(40, 12, d)).astype(np.float32)
        cov = jnp.zeros((d, d))
        for batch in z:
            cov = mie_jax.update_covariance(cov, jnp.asarray(batch))
        t = jax.jit(mie_jax.flat_transform)(cov, TAU)
        chex.assert_tree_all_finite(t)
        chex.assert_trees_all_equal(t, t.T)
        eigenvalues = np.linalg.eigvalsh(np.asarray(t, np.float64))
        self.assertGreaterEqual(eigenvalues.min(), np.exp(-TAU) - 1e-4)
        self.assertLessEqual(eigenvalues.max(), 1.0 + 1e-4)

    def test_cov_must_be_square(self):
        with pytest.raises(ValueError, match=r"cov must be a square \[d, d\] matrix, got \(3, 4\)"):
            mie_jax.flat_transform(jnp.zeros((3, 4)), TAU)

    @parameterized.parameters(0.0, -1.0)
    def test_tau_must_be_positive(self, tau):
        with pytest.raises(ValueError, match=r"tau must be > 0"):
            mie_jax.flat_transform(jnp.eye(3), tau)


class FlatTransformsTest(chex.TestCase):
    def test_maps_each_leaf_and_keeps_none(self):
        cov, _ = random_covariance(6, 4)
        tree = {"dense_0": {"kernel": jnp.asarray(cov), "bias": None}}
        out = mie_jax.flat_transforms(tree, TAU)
        self.assertIsNone(out["dense_0"]["bias"])
        np.testing.assert_allclose(out["dense_0"]["kernel"], mie_jax.flat_transform(jnp.asarray(cov), TAU))

    def test_bad_leaf_names_its_path(self):
        with pytest.raises(ValueError, match=r"covariance at \['dense_1'\]\['kernel'\] must be square"):
            mie_jax.flat_transforms({"dense_1": {"kernel": jnp.zeros((2, 3))}}, TAU)


def kernel_tree():
    rng = np.random.default_rng(7)
    return {
        "dense_0": {
            "kernel": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
            "bias": jnp.asarray(rng.normal(size=(3,)), jnp.float32),
        }
    }


class FlatProjectionTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_identity_transform_is_the_identity(self):
        grads = kernel_tree()
        tx = mie_jax.flat_projection()
        transforms = {"dense_0": {"kernel": jnp.eye(4), "bias": None}}
        out, _ = self.variant(lambda g, t: tx.update(g, tx.init(g), transforms=t))(grads, transforms)
        chex.assert_trees_all_close(out, grads)

    @chex.variants(with_jit=True, without_jit=True)
    def test_no_transforms_is_the_identity(self):
        grads = kernel_tree()
        tx = mie_jax.flat_projection()
        out, _ = self.variant(lambda g: tx.update(g, tx.init(g)))(grads)
        chex.assert_trees_all_equal(out, grads)

    @chex.variants(with_jit=True, without_jit=True)
    def test_left_multiplies_kernels_by_t(self):
        grads = kernel_tree()
        cov, _ = random_covariance(8, 4)
        t = np.asarray(mie_jax.flat_transform(jnp.asarray(cov), TAU), np.float64)
        tx = mie_jax.flat_projection()
        transforms = {"dense_0": {"kernel": jnp.asarray(t, jnp.float32), "bias": None}}
        out, _ = self.variant(lambda g, tr: tx.update(g, tx.init(g), transforms=tr))(grads, transforms)
        np.testing.assert_allclose(out["dense_0"]["kernel"], t @ np.asarray(grads["dense_0"]["kernel"]), rtol=1e-5)
        np.testing.assert_array_equal(out["dense_0"]["bias"], grads["dense_0"]["bias"])

    def test_size_mismatch_names_the_leaf_and_shapes(self):
        tx = mie_jax.flat_projection()
        transforms = {"dense_0": {"kernel": jnp.eye(5), "bias": None}}
        with pytest.raises(
            ValueError,
            match=(
                r"flat_projection: matrix at \['dense_0'\]\['kernel'\] must be "
                r"\(4, 4\).*kernel \(4, 3\).*got \(5, 5\)"
            ),
        ):
            tx.update(kernel_tree(), optax.EmptyState(), transforms=transforms)

    def test_non_2d_update_names_the_leaf(self):
        tx = mie_jax.flat_projection()
        transforms = {"dense_0": {"kernel": None, "bias": jnp.eye(3)}}
        with pytest.raises(ValueError, match=r"update at \['dense_0'\]\['bias'\] must be a kernel \[\.\.\., in, out\]"):
            tx.update(kernel_tree(), optax.EmptyState(), transforms=transforms)

    def test_structure_mismatch_is_explained(self):
        tx = mie_jax.flat_projection()
        with pytest.raises(ValueError, match=r"must have the tree structure of the updates"):
            tx.update(kernel_tree(), optax.EmptyState(), transforms={"other": jnp.eye(4)})
