"""mie_jax's transforms composed with optax's in one chain."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import parameterized

import mie_jax

TAU = 0.4


def problem():
    """A two-layer regression with a kernel to project and a bias to leave."""
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(16, 5)), jnp.float32)
    y = jnp.asarray(rng.normal(size=(16, 2)), jnp.float32)
    params = {"dense": {"kernel": jnp.asarray(rng.normal(size=(5, 2)), jnp.float32), "bias": jnp.zeros(2)}}

    def loss(p):
        return jnp.mean((x @ p["dense"]["kernel"] + p["dense"]["bias"] - y) ** 2)

    cov = mie_jax.update_covariance(jnp.zeros((5, 5)), x[:8])
    cov = mie_jax.update_covariance(cov, x[8:] + 1.0)
    transforms = {"dense": {"kernel": mie_jax.flat_transform(cov, TAU), "bias": None}}
    return params, loss, transforms


class ChainTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_sam_flat_sgd_equals_hand_computed_update(self):
        params, loss, transforms = problem()

        def grad_fn(p, i):
            return jax.grad(loss)(p)

        tx = optax.chain(mie_jax.sam(rho=0.05), mie_jax.flat_projection(), optax.sgd(1e-2, momentum=0.9))
        grads = jax.grad(loss)(params)
        updates, _ = self.variant(lambda g, s, p, t: tx.update(g, s, p, grad_fn=grad_fn, transforms=t))(
            grads, tx.init(params), params, transforms
        )

        eps = mie_jax.sam_perturbation(grads, 0.05)
        g_adv = jax.grad(loss)(jax.tree.map(jnp.add, params, eps))
        t = np.asarray(transforms["dense"]["kernel"], np.float64)
        # First momentum step: the trace equals the gradient.
        np.testing.assert_allclose(
            updates["dense"]["kernel"], -1e-2 * t @ np.asarray(g_adv["dense"]["kernel"]), rtol=1e-5
        )
        np.testing.assert_allclose(updates["dense"]["bias"], -1e-2 * np.asarray(g_adv["dense"]["bias"]), rtol=1e-5)

    @parameterized.named_parameters(
        ("adam", lambda: optax.adam(1e-3)),
        ("adamw", lambda: optax.adamw(1e-3, weight_decay=1e-4)),
        (
            "decay_clip_sgd",
            lambda: optax.chain(optax.add_decayed_weights(1e-4), optax.clip_by_global_norm(1.0), optax.sgd(1e-2)),
        ),
    )
    def test_composes_with_optax_transforms_and_reduces_the_loss(self, make_optimizer):
        params, loss, transforms = problem()

        def grad_fn(p, i):
            return jax.grad(loss)(p)

        tx = optax.chain(mie_jax.sam(rho=0.05), mie_jax.flat_projection(), make_optimizer())
        state = tx.init(params)

        @jax.jit
        def step(p, s):
            updates, s = tx.update(jax.grad(loss)(p), s, p, grad_fn=grad_fn, transforms=transforms)
            return optax.apply_updates(p, updates), s

        start = float(loss(params))
        for _ in range(50):
            params, state = step(params, state)
        self.assertLess(float(loss(params)), start)

    def test_mla_baseline_is_a_chain_too(self):
        params, loss, _ = problem()
        tx = optax.chain(
            mie_jax.orthogonal_projection(mask={"dense": {"kernel": True, "bias": False}}), optax.sgd(1e-2)
        )
        state = tx.init(params)
        features = {"dense": {"kernel": jnp.ones((4, 5)), "bias": None}}
        updates, state = tx.update(jax.grad(loss)(params), state, params, features=features)
        chex.assert_tree_all_finite(updates)
        self.assertEqual(int(state[0].count), 1)
