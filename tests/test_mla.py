"""Specification of MLA's orthogonal projection (the peer baseline)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mie_jax
from tests import references


def head_params():
    rng = np.random.default_rng(0)
    return {"kernel": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32), "bias": jnp.zeros(3)}


class OwmProjectionUpdateTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_matches_float64_reference(self):
        rng = np.random.default_rng(1)
        p = np.eye(4)
        update = self.variant(mie_jax.owm_projection_update)
        out = jnp.eye(4)
        for _ in range(3):
            z = rng.normal(size=(8, 4))
            p = references.owm_update(p, z, 0.05)
            out = update(out, jnp.asarray(z, jnp.float32), 0.05)
        np.testing.assert_allclose(out, p, atol=1e-5)

    def test_unit_frobenius_norm_and_damps_the_seen_direction(self):
        z = jnp.asarray(np.random.default_rng(2).normal(loc=1.0, size=(16, 4)), jnp.float32)
        p = mie_jax.owm_projection_update(jnp.eye(4), z, 1e-3)
        np.testing.assert_allclose(jnp.linalg.norm(p), 1.0, rtol=1e-5)
        x = jnp.mean(z, axis=0)
        # The protected direction is almost removed relative to an orthogonal one.
        orthogonal = jnp.array([x[1], -x[0], 0.0, 0.0])
        self.assertLess(
            float(jnp.linalg.norm(p @ x) / jnp.linalg.norm(x)),
            0.05 * float(jnp.linalg.norm(p @ orthogonal) / jnp.linalg.norm(orthogonal)),
        )

    def test_features_must_match_dimension(self):
        with pytest.raises(ValueError, match=r"features must be \[batch, 4\].*got \(2, 3\)"):
            mie_jax.owm_projection_update(jnp.eye(4), jnp.ones((2, 3)), 0.1)


class OrthogonalProjectionTest(chex.TestCase):
    def test_init_projects_2d_leaves_with_identity(self):
        state = mie_jax.orthogonal_projection().init(head_params())
        np.testing.assert_array_equal(state.projections["kernel"], np.eye(4))
        self.assertIsNone(state.projections["bias"])

    def test_mask_chooses_the_projected_leaves(self):
        params = {"a": jnp.ones((2, 2)), "b": jnp.ones((3, 3))}
        state = mie_jax.orthogonal_projection(mask={"a": True, "b": False}).init(params)
        self.assertIsNone(state.projections["b"])

    @chex.variants(with_jit=True, without_jit=True)
    def test_projects_with_current_p_then_updates_p(self):
        params = head_params()
        grads = jax.tree.map(jnp.ones_like, params)
        z = jnp.asarray(np.random.default_rng(3).normal(size=(8, 4)), jnp.float32)
        tx = mie_jax.orthogonal_projection(alpha=lambda count: 0.1 ** (1.0 + count / 10))
        step = self.variant(lambda g, s, f: tx.update(g, s, features=f))
        state = tx.init(params)
        out, state = step(grads, state, {"kernel": z, "bias": None})
        chex.assert_trees_all_close(out, grads)  # P = I at the first step.
        p1 = references.owm_update(np.eye(4), z, 0.1)
        np.testing.assert_allclose(state.projections["kernel"], p1, atol=1e-5)
        out, state = step(grads, state, {"kernel": z, "bias": None})
        np.testing.assert_allclose(out["kernel"], p1 @ np.ones((4, 3)), atol=1e-5)
        np.testing.assert_array_equal(out["bias"], grads["bias"])
        np.testing.assert_allclose(state.projections["kernel"], references.owm_update(p1, z, 0.1**1.1), atol=1e-5)
        self.assertEqual(int(state.count), 2)

    def test_residual_adds_the_projected_gradient(self):
        params = head_params()
        grads = jax.tree.map(jnp.ones_like, params)
        tx = mie_jax.orthogonal_projection(residual=True)
        out, _ = tx.update(grads, tx.init(params))
        np.testing.assert_allclose(out["kernel"], 2.0 * np.ones((4, 3)))
        np.testing.assert_allclose(out["bias"], np.ones(3))

    def test_without_features_the_projection_stays(self):
        params = head_params()
        tx = mie_jax.orthogonal_projection()
        state = tx.init(params)
        _, new_state = tx.update(params, state)
        chex.assert_trees_all_equal(new_state.projections, state.projections)
