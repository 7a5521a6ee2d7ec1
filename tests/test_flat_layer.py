"""Specification of flat_layer: MIE's Eq. 8 applied in a layer's backward pass, on its cheaper side."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

import mie_jax
from tests import references

TAU = 0.4


def dense(x, kernel):
    return x @ kernel


def strided_conv(x, kernel):
    """A 3x3 conv, stride 2, SAME padding: the zero padding and the stride must not break Eq. 8."""
    return jax.lax.conv_general_dilated(x, kernel, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def covariance(seed, d, batches=6):
    rng = np.random.default_rng(seed)
    return references.covariance([np.maximum(rng.normal(size=(12, d)) + 0.5, 0.0) for _ in range(batches)])


def transform(kind, d, seed=0):
    cov = jnp.asarray(covariance(seed, d))
    return mie_jax.flat_transform(cov, TAU, 3) if kind == "low_rank" else mie_jax.flat_transform(cov, TAU)


def as_matrix(t):
    return np.asarray(t.dense() if isinstance(t, mie_jax.LowRankTransform) else t, np.float64)


def reference_grads(layer, x, kernel, cotangent, t):
    """Float64: the plain input gradient, and T @ g over the kernel's input axis (Eq. 8) in numpy."""
    _, vjp = jax.vjp(layer, x, kernel)
    input_grad, kernel_grad = vjp(cotangent)
    projected = np.einsum("ij,...jo->...io", as_matrix(t), np.asarray(kernel_grad, np.float64))
    return np.asarray(input_grad), projected


def flat_layer_grads(layer, x, kernel, cotangent, t, variant=lambda f: f):
    def loss(x, kernel):
        return jnp.sum(cotangent * mie_jax.flat_layer(layer, x, kernel, t))

    return variant(jax.grad(loss, argnums=(0, 1)))(x, kernel)


# (layer, inputs shape, kernel shape, which side is cheaper: rows of inputs < kernel columns per input).
CASES = (
    ("dense_wide_small_batch", dense, (4, 8), (8, 32), "inputs"),
    ("dense_narrow_large_batch", dense, (64, 8), (8, 3), "gradient"),
    ("conv_small_image", strided_conv, (2, 5, 5, 6), (3, 3, 6, 7), "inputs"),
    ("conv_large_image", strided_conv, (4, 9, 9, 6), (3, 3, 6, 2), "gradient"),
)


@pytest.fixture(autouse=True)
def float64():
    with jax.enable_x64(True):
        yield


class FlatLayerTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        *[(f"{name}_{kind}_t", layer, x, k, kind) for name, layer, x, k, _ in CASES for kind in ("dense", "low_rank")]
    )
    def test_the_kernel_gets_t_times_its_gradient_and_the_inputs_their_own(self, layer, x_shape, kernel_shape, kind):
        rng = np.random.default_rng(1)
        x, kernel = jnp.asarray(rng.normal(size=x_shape)), jnp.asarray(rng.normal(size=kernel_shape))
        cotangent = jnp.asarray(rng.normal(size=layer(x, kernel).shape))
        t = transform(kind, kernel_shape[-2])
        input_grad, kernel_grad = flat_layer_grads(layer, x, kernel, cotangent, t, self.variant)
        expected_input_grad, expected_kernel_grad = reference_grads(layer, x, kernel, cotangent, t)
        np.testing.assert_allclose(input_grad, expected_input_grad, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(kernel_grad, expected_kernel_grad, rtol=1e-10, atol=1e-12)
        assert not np.allclose(kernel_grad, jax.grad(lambda k: jnp.sum(cotangent * layer(x, k)))(kernel))

    @parameterized.named_parameters(*CASES)
    def test_the_cheaper_side_is_projected(self, layer, x_shape, kernel_shape, side):
        # Compiled FLOPs of the backward: the chosen side must cost no more than the other one.
        rng = np.random.default_rng(2)
        x, kernel = jnp.asarray(rng.normal(size=x_shape)), jnp.asarray(rng.normal(size=kernel_shape))
        cotangent = jnp.asarray(rng.normal(size=layer(x, kernel).shape))
        basis = jnp.asarray(np.linalg.qr(rng.normal(size=(kernel_shape[-2], 2)))[0])
        t = mie_jax.LowRankTransform(basis, jnp.asarray([0.3, 0.1]), jnp.asarray(0.0))

        def flops(fn):
            return jax.jit(fn).lower(x, kernel).compile().cost_analysis()["flops"]

        def on_gradient(x, kernel):
            (g,) = jax.vjp(lambda k: layer(x, k), kernel)[1](cotangent)
            return jax.vjp(lambda x: layer(x, kernel), x)[1](cotangent)[0], mie_jax.flat.left_multiply(t, g, caller="t")

        def on_inputs(x, kernel):
            projected = x - ((x @ t.basis) * t.damping) @ t.basis.T
            (g,) = jax.vjp(lambda k: layer(projected, k), kernel)[1](cotangent)
            return jax.vjp(lambda x: layer(x, kernel), x)[1](cotangent)[0], g

        def chosen(x, kernel):
            return jax.grad(lambda x, k: jnp.sum(cotangent * mie_jax.flat_layer(layer, x, k, t)), (0, 1))(x, kernel)

        expected, other = (on_inputs, on_gradient) if side == "inputs" else (on_gradient, on_inputs)
        assert flops(chosen) == flops(expected) < flops(other)

    def test_the_identity_and_none_leave_the_gradients_as_they_are(self):
        rng = np.random.default_rng(3)
        x, kernel = jnp.asarray(rng.normal(size=(4, 8))), jnp.asarray(rng.normal(size=(8, 16)))
        cotangent = jnp.asarray(rng.normal(size=(4, 16)))
        plain = jax.grad(lambda x, k: jnp.sum(cotangent * dense(x, k)), (0, 1))(x, kernel)
        for t in (None, mie_jax.LowRankTransform.identity(8, 3, jnp.float64), jnp.eye(8)):
            chex.assert_trees_all_close(flat_layer_grads(dense, x, kernel, cotangent, t), plain, rtol=1e-14)

    def test_it_equals_flat_projection_in_an_sgd_step(self):
        # The two forms of GM: the same update whether T acts in the backward pass or in the chain.
        rng = np.random.default_rng(4)
        params = {"kernel": jnp.asarray(rng.normal(size=(8, 32))), "bias": jnp.zeros(32)}
        x, y = jnp.asarray(rng.normal(size=(4, 8))), jnp.asarray(rng.normal(size=(4, 32)))
        t = transform("low_rank", 8)

        def loss(params, layer_t=None):
            out = mie_jax.flat_layer(dense, x, params["kernel"], layer_t) + params["bias"]
            return jnp.mean((out - y) ** 2)

        tx = mie_jax.flat_projection()
        in_chain, _ = tx.update(jax.grad(loss)(params), tx.init(params), transforms={"kernel": t, "bias": None})
        chex.assert_trees_all_close(jax.grad(loss)(params, t), in_chain, rtol=1e-12)

    @parameterized.named_parameters(
        ("kernel_input_axis", (4, 8), (6, 16), jnp.eye(8), r"^flat_layer: kernel \(6, 16\) must be \[\.\.\., d, out\]"),
        ("transform_size", (4, 8), (8, 16), jnp.eye(5), r"^flat_layer: transform must be \(8, 8\)"),
        ("vector_kernel", (4, 8), (8,), jnp.eye(8), r"^flat_layer: kernel \(8,\) must be"),
    )
    def test_mismatched_shapes_are_one_line_errors(self, x_shape, kernel_shape, t, message):
        with pytest.raises(ValueError, match=message):
            mie_jax.flat_layer(jnp.matmul, jnp.ones(x_shape), jnp.ones(kernel_shape), t)
