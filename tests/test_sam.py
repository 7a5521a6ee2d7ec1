"""Specification of mie_jax.sam_perturbation and mie_jax.sam (MIE Eq. 2-4)."""

import chex
import hypothesis
import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized

import mie_jax
from tests import references

finite_floats = hypothesis.strategies.floats(-1e3, 1e3, width=32)


def gradient_trees():
    """Two-leaf gradient pytrees with small random shapes."""
    return hypothesis.strategies.tuples(
        hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=2, max_side=5), elements=finite_floats),
        hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=1, max_side=5), elements=finite_floats),
    ).map(lambda leaves: {"kernel": leaves[0], "bias": leaves[1]})


class SamPerturbationTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters("global", "per_tensor")
    def test_matches_float64_reference(self, normalize):
        rng = np.random.default_rng(0)
        grads = {"kernel": rng.normal(size=(4, 3)).astype(np.float32), "bias": rng.normal(size=(3,)).astype(np.float32)}
        eps = self.variant(lambda g: mie_jax.sam_perturbation(g, 0.05, normalize=normalize))(grads)
        expected = references.sam_perturbation(
            [grads["bias"], grads["kernel"]], 0.05, per_tensor=normalize == "per_tensor"
        )
        np.testing.assert_allclose(eps["bias"], expected[0], rtol=1e-5)
        np.testing.assert_allclose(eps["kernel"], expected[1], rtol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    @hypothesis.given(grads=gradient_trees(), rho=hypothesis.strategies.floats(1e-3, 10.0))
    def test_global_norm_is_rho_and_parallel_to_gradient(self, grads, rho):
        norm = float(optax.tree.norm(grads))
        hypothesis.assume(norm > 1e-3)
        eps = self.variant(lambda g: mie_jax.sam_perturbation(g, rho))(grads)
        np.testing.assert_allclose(float(optax.tree.norm(eps)), rho, rtol=1e-4)
        flat_eps = np.concatenate([np.ravel(eps["bias"]), np.ravel(eps["kernel"])])
        flat_g = np.concatenate([np.ravel(grads["bias"]), np.ravel(grads["kernel"])])
        cosine = flat_eps @ flat_g / (np.linalg.norm(flat_eps) * np.linalg.norm(flat_g))
        np.testing.assert_allclose(cosine, 1.0, rtol=1e-4)

    @chex.variants(with_jit=True, without_jit=True)
    @hypothesis.given(grads=gradient_trees(), rho=hypothesis.strategies.floats(1e-3, 10.0))
    def test_per_tensor_gives_each_nonzero_leaf_norm_rho(self, grads, rho):
        eps = self.variant(lambda g: mie_jax.sam_perturbation(g, rho, normalize="per_tensor"))(grads)
        for name in grads:
            if np.linalg.norm(grads[name]) > 1e-3:
                np.testing.assert_allclose(np.linalg.norm(eps[name]), rho, rtol=1e-4)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters("global", "per_tensor")
    def test_zero_gradient_gives_zero_perturbation(self, normalize):
        grads = {"kernel": jnp.zeros((3, 2)), "bias": jnp.zeros(2)}
        eps = self.variant(lambda g: mie_jax.sam_perturbation(g, 0.1, normalize=normalize))(grads)
        chex.assert_trees_all_equal(eps, grads)

    def test_zero_leaf_under_per_tensor_stays_zero(self):
        eps = mie_jax.sam_perturbation({"a": jnp.zeros(3), "b": jnp.ones(3)}, 0.1, normalize="per_tensor")
        chex.assert_tree_all_finite(eps)
        np.testing.assert_array_equal(eps["a"], 0.0)

    def test_keeps_dtypes(self):
        grads = {"a": jnp.ones(3, jnp.bfloat16), "b": jnp.ones(2, jnp.float32)}
        eps = mie_jax.sam_perturbation(grads, 0.1)
        self.assertEqual(eps["a"].dtype, jnp.bfloat16)
        self.assertEqual(eps["b"].dtype, jnp.float32)


def quadratic_problem():
    """loss(p) = 0.5 * sum(a * w^2) + sum(b): grad w = a * w, grad b = 1."""
    a = jnp.array([[1.0, 2.0], [3.0, 4.0]])
    params = {"w": jnp.array([[0.5, -1.0], [2.0, 0.25]]), "b": jnp.array([0.1, 0.2])}

    def loss(p):
        return 0.5 * jnp.sum(a * p["w"] ** 2) + jnp.sum(p["b"])

    return params, loss


class SamTransformTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_grad_fn_is_called_at_params_plus_eps(self):
        params, loss = quadratic_problem()
        grads = jax.grad(loss)(params)
        seen = []

        def grad_fn(p, i):
            seen.append(i)
            return jax.tree.map(lambda x: 10.0 * x, p)  # returns 10 * its argument

        tx = mie_jax.sam(rho=0.3)
        out, _ = self.variant(lambda g, s, p: tx.update(g, s, p, grad_fn=grad_fn))(grads, tx.init(params), params)
        eps = mie_jax.sam_perturbation(grads, 0.3)
        chex.assert_trees_all_close(out, jax.tree.map(lambda p, e: 10.0 * (p + e), params, eps), rtol=1e-6)
        self.assertEqual(seen, [0])

    @chex.variants(with_jit=True, without_jit=True)
    def test_matches_hand_computed_sam_gradient(self):
        params, loss = quadratic_problem()
        grads = jax.grad(loss)(params)
        tx = mie_jax.sam(rho=0.1)
        out, _ = self.variant(lambda g, s, p: tx.update(g, s, p, grad_fn=lambda q, i: jax.grad(loss)(q)))(
            grads, tx.init(params), params
        )
        a = np.array([[1.0, 2.0], [3.0, 4.0]])
        w = np.asarray(params["w"], np.float64)
        g_w, g_b = a * w, np.ones(2)
        norm = np.sqrt(np.sum(g_w**2) + np.sum(g_b**2))
        np.testing.assert_allclose(out["w"], a * (w + 0.1 * g_w / norm), rtol=1e-6)
        np.testing.assert_allclose(out["b"], np.ones(2), rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_mix_blends_clean_and_perturbed_gradients(self):
        params, loss = quadratic_problem()
        grads = jax.grad(loss)(params)

        def grad_fn(q, i):
            return jax.grad(loss)(q)

        perturbed, _ = mie_jax.sam(0.1).update(grads, optax.EmptyState(), params, grad_fn=grad_fn)
        tx = mie_jax.sam(0.1, mix=0.3)
        mixed, _ = self.variant(lambda g, s, p: tx.update(g, s, p, grad_fn=grad_fn))(grads, tx.init(params), params)
        expected = jax.tree.map(lambda g, ga: 0.7 * g + 0.3 * ga, grads, perturbed)
        chex.assert_trees_all_close(mixed, expected, rtol=1e-6)

    def test_rho_zero_returns_the_gradient_at_params(self):
        params, loss = quadratic_problem()
        grads = jax.grad(loss)(params)
        out, _ = mie_jax.sam(0.0).update(grads, optax.EmptyState(), params, grad_fn=lambda q, i: jax.grad(loss)(q))
        chex.assert_trees_all_close(out, grads)

    def test_ignores_extra_args_meant_for_other_transforms(self):
        params, loss = quadratic_problem()
        grads = jax.grad(loss)(params)
        out, _ = mie_jax.sam(0.1).update(
            grads, optax.EmptyState(), params, grad_fn=lambda q, i: jax.grad(loss)(q), transforms=None, something_else=3
        )
        chex.assert_tree_all_finite(out)

    def test_works_with_optax_contrib_sam_grad_fn_convention(self):
        params, loss = quadratic_problem()
        batches = [1.0, 2.0]
        grad_fn = jax.grad(lambda p, i: jnp.asarray(batches)[i] * loss(p))
        grads = grad_fn(params, 0)
        out, _ = mie_jax.sam(0.1).update(grads, optax.EmptyState(), params, grad_fn=grad_fn)
        chex.assert_tree_all_finite(out)


class SamBadInputTest(chex.TestCase):
    def test_negative_rho(self):
        with pytest.raises(ValueError, match=r"rho must be >= 0, got -0.1"):
            mie_jax.sam(-0.1)
        with pytest.raises(ValueError, match=r"rho must be >= 0"):
            mie_jax.sam_perturbation({"a": jnp.ones(2)}, -1.0)

    def test_unknown_normalize(self):
        with pytest.raises(ValueError, match=r"normalize must be one of \['global', 'per_tensor'\]"):
            mie_jax.sam(0.1, normalize="layer")

    def test_mix_out_of_range(self):
        with pytest.raises(ValueError, match=r"mix must lie in \[0, 1\]"):
            mie_jax.sam(0.1, mix=1.5)

    def test_missing_grad_fn(self):
        with pytest.raises(ValueError, match=r"grad_fn"):
            mie_jax.sam(0.1).update({"a": jnp.ones(2)}, optax.EmptyState(), {"a": jnp.ones(2)})

    def test_missing_params(self):
        with pytest.raises(ValueError, match=r"needs params"):
            mie_jax.sam(0.1).update({"a": jnp.ones(2)}, optax.EmptyState(), grad_fn=lambda p, i: p)


class SamPerDeviceTest(chex.TestCase):
    def test_each_device_perturbs_along_its_own_gradient_and_the_mean_is_returned(self):
        params, _ = quadratic_problem()
        scales = jnp.array([1.0, 2.0, -1.0, 0.5])  # Four "devices", each with its own batch.

        def local_loss(p, s):
            return s * 0.5 * jnp.sum(p["w"] ** 2) + s**2 * jnp.sum(p["b"])

        tx = mie_jax.sam(0.1, axis_name="devices", mix=0.3)

        def device_step(s):
            grads = jax.grad(local_loss)(params, s)
            out, _ = tx.update(grads, optax.EmptyState(), params, grad_fn=lambda p, i: jax.grad(local_loss)(p, s))
            return out

        out = jax.vmap(device_step, axis_name="devices")(scales)
        expected = []
        for s in scales:
            g = jax.grad(local_loss)(params, s)
            eps = mie_jax.sam_perturbation(g, 0.1)
            g_adv = jax.grad(local_loss)(jax.tree.map(jnp.add, params, eps), s)
            expected.append(jax.tree.map(lambda a, b: 0.7 * a + 0.3 * b, g, g_adv))
        mean = jax.tree.map(lambda *leaves: jnp.mean(jnp.stack(leaves), axis=0), *expected)
        for device in range(4):  # Every device returns the same averaged gradient.
            chex.assert_trees_all_close(jax.tree.map(lambda x: x[device], out), mean, rtol=1e-5)


class SamMaskTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(True, False)
    def test_only_masked_parameters_are_perturbed_with_their_own_norm(self, as_function):
        params, loss = quadratic_problem()
        grads = jax.grad(loss)(params)
        keep = {"w": True, "b": False}
        tx = mie_jax.sam(rho=0.1, mask=(lambda p: keep) if as_function else keep)
        # grad_fn returns its argument: the point SAM asks the gradient at.
        point, _ = self.variant(lambda g, s, p: tx.update(g, s, p, grad_fn=lambda q, i: q))(
            grads, tx.init(params), params
        )
        g_w = np.asarray(grads["w"], np.float64)
        expected_w = np.asarray(params["w"], np.float64) + 0.1 * g_w / np.linalg.norm(g_w)
        np.testing.assert_allclose(point["w"], expected_w, rtol=1e-6)
        np.testing.assert_array_equal(point["b"], params["b"])

    def test_mask_of_another_structure_is_named(self):
        params, loss = quadratic_problem()
        tx = mie_jax.sam(rho=0.1, mask={"w": True})
        with pytest.raises(ValueError, match="sam: mask must have the structure of params"):
            tx.update(jax.grad(loss)(params), tx.init(params), params, grad_fn=lambda p, i: p)
