"""Specification of the low-rank T (MIE Eq. 7 as I - U diag(1 - sigma) U^T) and of conv-kernel projection."""

import json

import chex
import hypothesis
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized

import mie_jax
from benchmarks import low_rank as low_rank_benchmark
from tests import references

TAU = 0.4


def relu_covariance(seed, d, batches):
    """Eq. 5 of `batches` batches of 12 non-negative features, in float64: rank min(batches, d)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(8, d))
    return references.covariance(
        [np.maximum(rng.normal(loc=rng.normal(size=8), size=(12, 8)) @ w + 0.5, 0.0) for _ in range(batches)]
    )


def reference_low_rank(cov, tau, rank, tol=0.0):
    """Float64: the dampings 1 - sigma (largest eigenvalue first), T_r and max over dropped modes of 1 - sigma."""
    eigenvalues, eigenvectors = np.linalg.eigh(np.asarray(cov, np.float64))
    eigenvalues, eigenvectors = eigenvalues[::-1], eigenvectors[:, ::-1]
    damping = 1.0 - np.exp(-tau * (eigenvalues - eigenvalues[-1]) / (eigenvalues[0] - eigenvalues[-1]))
    kept = np.where(damping[:rank] > tol, damping[:rank], 0.0)
    t_r = np.eye(len(cov)) - (eigenvectors[:, :rank] * kept) @ eigenvectors[:, :rank].T
    dropped = np.concatenate([damping[rank:], damping[:rank][kept == 0.0], [0.0]])
    return damping, t_r, dropped.max()


def spectral_norm(a):
    return np.linalg.norm(np.asarray(a, np.float64), 2)


@pytest.fixture
def float64():
    with jax.enable_x64(True):
        yield


pytestmark_float64 = pytest.mark.usefixtures("float64")


@pytestmark_float64
class LowRankTransformTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters((16, 6, 2), (16, 6, 5), (32, 40, 4), (32, 40, 20), (8, 3, 7))
    def test_equals_dense_t_within_its_bound_float64(self, d, batches, rank):
        cov = relu_covariance(d, d, batches)
        out = self.variant(lambda c: mie_jax.flat_transform(c, TAU, rank))(jnp.asarray(cov))
        chex.assert_shape((out.basis, out.damping, out.bound), ((d, rank), (rank,), ()))
        damping, t_r, bound = reference_low_rank(cov, TAU, rank)
        # T - T_r is -sum over the dropped modes of (1 - sigma) v v^T: its norm is the bound, exactly.
        np.testing.assert_allclose(out.bound, bound, rtol=1e-9, atol=1e-13)
        np.testing.assert_allclose(out.bound, damping[rank] if rank < d else 0.0, rtol=1e-9, atol=1e-13)
        np.testing.assert_allclose(
            spectral_norm(references.flat_transform(cov, TAU) - out.dense()), bound, rtol=1e-7, atol=1e-12
        )
        np.testing.assert_allclose(out.dense(), t_r, atol=1e-10)
        np.testing.assert_allclose(out.damping, damping[:rank], atol=1e-12)

    @chex.variants(with_jit=True, without_jit=True)
    @hypothesis.settings(max_examples=12)  # Each (d, rank) compiles anew under jit.
    @hypothesis.given(
        seed=hypothesis.strategies.integers(0, 2**31 - 1),
        d=hypothesis.strategies.integers(2, 12),
        batches=hypothesis.strategies.integers(1, 16),
        tau=hypothesis.strategies.floats(0.05, 5.0),
    )
    def test_distance_to_dense_t_is_the_bound(self, seed, d, batches, tau):
        cov = relu_covariance(seed, d, batches)
        rank = 1 + seed % d
        # tau traced: one compile per (d, rank), not per example.
        out = self.variant(lambda c, t: mie_jax.flat_transform(c, t, rank))(jnp.asarray(cov), tau)
        dense = np.asarray(mie_jax.flat_transform(jnp.asarray(cov), tau))
        np.testing.assert_allclose(spectral_norm(dense - out.dense()), out.bound, atol=1e-9)
        self.assertLessEqual(float(out.bound), 1.0 - np.exp(-tau) + 1e-12)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(np.float32, np.float64)
    def test_full_rank_equals_dense_t(self, dtype):
        cov = jnp.asarray(relu_covariance(1, 24, 30), dtype)
        out = self.variant(lambda c: mie_jax.flat_transform(c, TAU, 24))(cov)
        self.assertEqual(out.basis.dtype, dtype)
        self.assertEqual(float(out.bound), 0.0)
        np.testing.assert_allclose(
            out.dense(), mie_jax.flat_transform(cov, TAU), atol=1e-12 if dtype == np.float64 else 2e-6
        )

    @chex.variants(with_jit=True, without_jit=True)
    def test_tol_zeroes_small_dampings_and_keeps_shapes(self):
        cov = relu_covariance(2, 16, 10)
        damping, _, _ = reference_low_rank(cov, TAU, 16)
        rank, tol = 8, float(damping[4] + damping[5]) / 2  # Modes 0..4 exceed tol, 5..7 do not.
        out = self.variant(lambda c, t: mie_jax.flat_transform(c, TAU, rank, t))(jnp.asarray(cov), tol)
        chex.assert_shape(out.basis, (16, rank))
        np.testing.assert_allclose(out.damping[:5], damping[:5], atol=1e-12)
        np.testing.assert_array_equal(out.damping[5:], 0.0)
        _, t_r, bound = reference_low_rank(cov, TAU, rank, tol)
        np.testing.assert_allclose(out.bound, damping[5], rtol=1e-9)  # The largest cut one.
        np.testing.assert_allclose(out.bound, bound, rtol=1e-9)
        self.assertLessEqual(float(out.bound), tol)
        np.testing.assert_allclose(out.dense(), t_r, atol=1e-10)

    @chex.variants(with_jit=True, without_jit=True)
    def test_bound_above_tol_says_the_rank_is_too_small(self):
        cov = relu_covariance(3, 16, 10)
        damping, _, _ = reference_low_rank(cov, TAU, 16)
        out = self.variant(lambda c: mie_jax.flat_transform(c, TAU, 2, 1e-6))(jnp.asarray(cov))
        np.testing.assert_allclose(out.bound, damping[2], rtol=1e-9)
        self.assertGreater(float(out.bound), 1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_tol_above_every_damping_gives_identity(self):
        cov = relu_covariance(4, 8, 5)
        out = self.variant(lambda c: mie_jax.flat_transform(c, TAU, 3, 1.0))(jnp.asarray(cov))
        np.testing.assert_allclose(out.dense(), np.eye(8), atol=1e-12)
        np.testing.assert_allclose(out.bound, 1.0 - np.exp(-TAU), rtol=1e-9)  # The top mode's, now cut.

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(("isotropic", 3.0), ("zero", 0.0))
    def test_flat_spectrum_gives_identity(self, name, scale):
        del name
        out = self.variant(lambda c: mie_jax.flat_transform(c, TAU, 2))(jnp.asarray(scale * np.eye(6)))
        np.testing.assert_array_equal(out.damping, 0.0)
        self.assertEqual(float(out.bound), 0.0)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters((64, 12, 6), (64, 30, 16), (40, 40, 20))
    def test_subspace_solver_equals_eigh_on_low_rank_covariances(self, d, batches, rank):
        # Rank <= 2 * rank (the block): one iteration spans the range; fewer batches than d: lambda_min = 0.
        cov = relu_covariance(5, d, batches)
        kwargs = {} if batches < d else {"min_eigenvalue": float(np.linalg.eigvalsh(cov)[0])}
        out = self.variant(lambda c: mie_jax.flat_transform(c, TAU, rank, solver="subspace", **kwargs))(
            jnp.asarray(cov)
        )
        exact = mie_jax.flat_transform(jnp.asarray(cov), TAU, rank)
        np.testing.assert_allclose(out.dense(), exact.dense(), atol=1e-9)
        np.testing.assert_allclose(out.damping, exact.damping, atol=1e-9)
        np.testing.assert_allclose(out.bound, exact.bound, atol=1e-9)

    @chex.variants(with_jit=True, without_jit=True)
    def test_subspace_solver_converges_on_a_decaying_spectrum(self):
        rng = np.random.default_rng(6)
        basis, _ = np.linalg.qr(rng.normal(size=(96, 96)))
        spectrum = 0.5 ** np.arange(96)  # Ratio 2 between modes: (1/2)^(2r - i) per iteration.
        cov = (basis * spectrum) @ basis.T
        out = self.variant(
            lambda c: mie_jax.flat_transform(c, TAU, 8, solver="subspace", iterations=20, min_eigenvalue=spectrum[-1])
        )(jnp.asarray(cov))
        dense = references.flat_transform(cov, TAU)
        np.testing.assert_allclose(spectral_norm(dense - out.dense()), out.bound, rtol=1e-6)

    def test_subspace_min_eigenvalue_defaults_to_zero(self):
        # Shifting a covariance moves lambda_min away from 0: the default then damps the shifted modes more.
        cov = relu_covariance(7, 16, 4) + np.eye(16)
        assumed = mie_jax.flat_transform(jnp.asarray(cov), TAU, 4, solver="subspace")
        given = mie_jax.flat_transform(jnp.asarray(cov), TAU, 4, solver="subspace", min_eigenvalue=1.0)
        exact = mie_jax.flat_transform(jnp.asarray(cov), TAU, 4)
        np.testing.assert_allclose(given.damping, exact.damping, atol=1e-9)
        # lambda / lambda_max >= (lambda - lambda_min) / (lambda_max - lambda_min), equal at the top mode.
        np.testing.assert_allclose(assumed.damping[0], exact.damping[0], rtol=1e-12)
        self.assertTrue(np.all(np.asarray(assumed.damping[1:]) > np.asarray(exact.damping[1:])))

    def test_identity_has_the_shapes_and_projects_as_identity(self):
        t = mie_jax.LowRankTransform.identity(5, 2, jnp.float64)
        chex.assert_shape((t.basis, t.damping, t.bound), ((5, 2), (2,), ()))
        np.testing.assert_array_equal(t.dense(), np.eye(5))


@pytestmark_float64
class FlatRankTest(chex.TestCase):
    @parameterized.parameters(1e-6, 1e-3, 0.1, 1.0)  # Not 0: the null space's dampings are rounding.
    def test_counts_the_dampings_above_tol(self, tol):
        cov = relu_covariance(8, 20, 12)
        damping, _, _ = reference_low_rank(cov, TAU, 20)
        self.assertEqual(int(mie_jax.flat_rank(jnp.asarray(cov), TAU, tol)), int(np.sum(damping > tol)))

    def test_that_rank_reaches_tol(self):
        cov = jnp.asarray(relu_covariance(9, 32, 20))
        rank = int(mie_jax.flat_rank(cov, TAU, 1e-3))
        self.assertLessEqual(float(mie_jax.flat_transform(cov, TAU, rank, 1e-3).bound), 1e-3)


@pytestmark_float64
class FlatTransformsLowRankTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_rank_applies_to_every_leaf_up_to_its_size(self):
        big, small = relu_covariance(10, 12, 8), relu_covariance(11, 4, 8)
        tree = {"fc1": {"kernel": jnp.asarray(big), "bias": None}, "fc2": {"kernel": jnp.asarray(small)}}
        out = self.variant(lambda t: mie_jax.flat_transforms(t, TAU, 6, 1e-3))(tree)
        self.assertIsNone(out["fc1"]["bias"])
        chex.assert_shape((out["fc1"]["kernel"].basis, out["fc2"]["kernel"].basis), ((12, 6), (4, 4)))
        np.testing.assert_allclose(out["fc1"]["kernel"].dense(), reference_low_rank(big, TAU, 6, 1e-3)[1], atol=1e-10)
        np.testing.assert_allclose(out["fc2"]["kernel"].dense(), reference_low_rank(small, TAU, 4, 1e-3)[1], atol=1e-10)

    def test_default_stays_dense(self):
        cov = jnp.asarray(relu_covariance(12, 6, 3))
        out = mie_jax.flat_transforms({"fc1": cov}, TAU)
        np.testing.assert_array_equal(out["fc1"], mie_jax.flat_transform(cov, TAU))


def conv_reference(t, kernel):
    """The dense-kernel view: [kh kw c_in, c_out] (row-major) left-multiplied by kron(I_{kh kw}, T)."""
    *spatial, c_in, c_out = kernel.shape
    taps = int(np.prod(spatial))
    flat = np.asarray(kernel, np.float64).reshape(taps * c_in, c_out)
    return (np.kron(np.eye(taps), np.asarray(t, np.float64)) @ flat).reshape(kernel.shape)


@pytestmark_float64
class ProjectionTest(chex.TestCase):
    def project(self, transforms, grads):
        tx = mie_jax.flat_projection()
        return self.variant(lambda g, t: tx.update(g, tx.init(g), transforms=t)[0])(grads, transforms)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(2, 6, 16)
    def test_low_rank_equals_dense_projection_within_bound(self, rank):
        cov = relu_covariance(13, 16, 10)
        grads = {"fc1": {"kernel": jnp.asarray(np.random.default_rng(14).normal(size=(16, 5))), "bias": jnp.ones(5)}}
        low = mie_jax.flat_transform(jnp.asarray(cov), TAU, rank)
        dense = self.project({"fc1": {"kernel": mie_jax.flat_transform(jnp.asarray(cov), TAU), "bias": None}}, grads)
        out = self.project({"fc1": {"kernel": low, "bias": None}}, grads)
        g = np.asarray(grads["fc1"]["kernel"])
        gap = np.linalg.norm(np.asarray(out["fc1"]["kernel"]) - np.asarray(dense["fc1"]["kernel"]))
        self.assertLessEqual(gap, float(low.bound) * np.linalg.norm(g) + 1e-12)
        np.testing.assert_allclose(out["fc1"]["kernel"], np.asarray(low.dense()) @ g, atol=1e-12)
        np.testing.assert_array_equal(out["fc1"]["bias"], grads["fc1"]["bias"])

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(((3, 3, 6, 4),), ((5, 6, 2),), ((2, 3, 3, 6, 4),))
    def test_conv_kernel_matches_kron_of_the_dense_kernel(self, shape):
        c_in = shape[-2]
        cov = relu_covariance(15, c_in, 4)
        kernel = jnp.asarray(np.random.default_rng(16).normal(size=shape))
        dense_t = mie_jax.flat_transform(jnp.asarray(cov), TAU)
        low = mie_jax.flat_transform(jnp.asarray(cov), TAU, 2)
        np.testing.assert_allclose(
            self.project({"conv": dense_t}, {"conv": kernel})["conv"], conv_reference(dense_t, kernel), atol=1e-12
        )
        np.testing.assert_allclose(
            self.project({"conv": low}, {"conv": kernel})["conv"], conv_reference(low.dense(), kernel), atol=1e-12
        )
        # The same as the einsum over input channels at every tap.
        np.testing.assert_allclose(
            self.project({"conv": dense_t}, {"conv": kernel})["conv"],
            np.einsum("ij,...jo->...io", np.asarray(dense_t), np.asarray(kernel)),
            atol=1e-12,
        )

    @chex.variants(with_jit=True, without_jit=True)
    def test_float32_update_keeps_its_dtype(self):
        low = mie_jax.LowRankTransform.identity(4, 2, jnp.float64)
        out = self.project({"k": low}, {"k": jnp.ones((3, 3, 4, 2), jnp.float32)})
        self.assertEqual(out["k"].dtype, jnp.float32)

    def test_low_rank_size_mismatch_names_the_leaf(self):
        tx = mie_jax.flat_projection()
        with pytest.raises(
            ValueError,
            match=(
                r"flat_projection: matrix at \['k'\] must be \(4, 4\).*"
                r"kernel \(3, 3, 4, 2\).*got \(5, 5\)"
            ),
        ):
            tx.update(
                {"k": jnp.ones((3, 3, 4, 2))},
                optax.EmptyState(),
                transforms={"k": mie_jax.LowRankTransform.identity(5, 2)},
            )


@pytestmark_float64
class ConvCovarianceTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_batch_mean_is_the_mean_over_batch_and_space(self):
        x = np.random.default_rng(17).normal(size=(3, 5, 4, 6))
        out = self.variant(mie_jax.update_conv_covariance)(jnp.zeros((6, 6)), jnp.asarray(x))
        mean = x.mean(axis=(0, 1, 2))
        np.testing.assert_allclose(out, np.outer(mean, mean), atol=1e-12)

    @chex.variants(with_jit=True, without_jit=True)
    def test_second_moment_pools_positions(self):
        x = np.random.default_rng(18).normal(size=(2, 3, 3, 4))
        out = self.variant(lambda c, f: mie_jax.update_conv_covariance(c, f, statistic="second_moment"))(
            jnp.eye(4), jnp.asarray(x)
        )
        rows = x.reshape(-1, 4)
        np.testing.assert_allclose(out, np.eye(4) + rows.T @ rows / len(rows), atol=1e-12)

    def test_inputs_must_be_at_least_2d(self):
        with pytest.raises(
            ValueError, match=r"inputs must be at least 2-D \[batch, \.\.\., channels\], got shape \(4,\)"
        ):
            mie_jax.update_conv_covariance(jnp.zeros((4, 4)), jnp.ones(4))


@pytestmark_float64
class ArgumentErrorsTest(parameterized.TestCase):
    @parameterized.parameters(0, 5, -1, 2.5, True, "2")
    def test_bad_rank(self, rank):
        with pytest.raises(ValueError, match=r"^rank must be an int in \[1, d\] = \[1, 4\], got "):
            mie_jax.flat_transform(jnp.eye(4), TAU, rank)

    def test_bad_tol(self):
        with pytest.raises(ValueError, match=r"^tol must be >= 0, got -0.1"):
            mie_jax.flat_transform(jnp.eye(4), TAU, 2, -0.1)

    def test_tol_needs_rank(self):
        with pytest.raises(ValueError, match=r"^tol applies to the low-rank form only: pass rank as well"):
            mie_jax.flat_transform(jnp.eye(4), TAU, tol=1e-3)

    def test_bad_solver(self):
        with pytest.raises(ValueError, match=r"^solver must be one of \['eigh', 'subspace'\], got 'lobpcg'"):
            mie_jax.flat_transform(jnp.eye(4), TAU, 2, solver="lobpcg")

    @parameterized.parameters(0, 1.5)
    def test_bad_iterations(self, iterations):
        with pytest.raises(ValueError, match=r"^iterations must be an int >= 1"):
            mie_jax.flat_transform(jnp.eye(4), TAU, 2, solver="subspace", iterations=iterations)

    def test_min_eigenvalue_is_for_the_subspace_solver(self):
        with pytest.raises(ValueError, match=r"^min_eigenvalue applies to the subspace solver only"):
            mie_jax.flat_transform(jnp.eye(4), TAU, 2, min_eigenvalue=0.0)

    def test_flat_transforms_bad_rank(self):
        with pytest.raises(ValueError, match=r"^rank must be an int >= 1, got 0"):
            mie_jax.flat_transforms({"fc1": jnp.eye(4)}, TAU, 0)

    def test_flat_rank_bad_tol(self):
        with pytest.raises(ValueError, match=r"^tol must be >= 0"):
            mie_jax.flat_rank(jnp.eye(4), TAU, -1.0)


def test_benchmark_main_runs_tiny(tmp_path):
    assert low_rank_benchmark.main(["--tiny", "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("low_rank_*.json")
    assert path.with_suffix(".md").is_file()
    report = json.loads(path.read_text())
    assert [row["d"] for row in report["solvers"]] == list(low_rank_benchmark.TINY["sizes"])
    for row in report["solvers"]:
        assert all(ms > 0 for ms in row["ms"].values())
        # The exact truncation is at its bound; the subspace solver's is too, to float32 rounding.
        assert abs(row["exact_truncation_error"] - row["exact_bound"]) < 1e-4
        assert abs(row["subspace_error"] - row["subspace_bound"]) < 1e-4
    assert [gm["batch"] for gm in report["gm"]] == list(low_rank_benchmark.TINY["batches"])
    for gm in report["gm"]:
        rows = {row["variant"]: row for row in gm["rows"]}
        assert (
            set(rows) == {"plain", "gm_dense", "gm_low_rank", "gm_low_rank_flat_layer"}
            and rows["plain"]["ratio_to_plain"] == 1.0
        )
        assert all(bound <= gm["tol"] + 1e-6 for bound in gm["bounds"].values())
        assert f"### Batch {gm['batch']}" in report["markdown"]
    assert "Gradient modification on the mfeat MLP" in report["markdown"]
    wide = {row["variant"]: row for row in report["wide"]["rows"]}
    assert set(wide) == {"plain", "gm_low_rank", "gm_low_rank_flat_layer"} and report["wide"]["d"] == 64
    assert "One wide dense layer" in report["markdown"]
