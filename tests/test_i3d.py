"""Tests for the I3D video encoder (tiny widths; mostly ``[B, 8, 32, 32, C]`` clips).

As in ``test_resnet.py``: shapes and the full-size parameter count are checked
abstractly with ``nnx.eval_shape``, and the numerical tests fill abstractly
built models with NumPy weights (eager initialisation would compile a sampler
per kernel shape).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mie_jax.models.i3d import BN_EPSILON
from mie_jax.models.i3d import BN_MOMENTUM
from mie_jax.models.i3d import I3D
from mie_jax.models.i3d import InceptionModule
from mie_jax.models.i3d import Unit3D
from mie_jax.models.resnet import TorchBatchNorm
from mie_jax.train.steps import apply_model
from mie_jax.train.steps import split_model
from tests.conv_models import all_changed, check_batchnorm_modes, param_count

MULTIPLIER = 1 / 16
CLIP = (8, 32, 32)  # (T, H, W)
# Mixed_5c at 1/16 width: 384 -> 24, 384 -> 24, 128 -> 8, 128 -> 8.
TINY_FEATURES = 64


def _build(constructor, seed=0):
    """``constructor(rngs)``'s module with torch-default uniform kernels drawn by NumPy (no XLA compiles)."""
    graphdef, state = nnx.split(nnx.eval_shape(lambda: constructor(nnx.Rngs(0))))
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = path[-1].key
        if name == "kernel":  # [kt, kh, kw, in, out]: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
            bound = 1.0 / np.sqrt(np.prod(leaf.shape[:-1]))
            return jnp.asarray(rng.uniform(-bound, bound, leaf.shape), leaf.dtype)
        return jnp.full(leaf.shape, 1.0 if name in ("scale", "var") else 0.0, leaf.dtype)

    return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(fill, nnx.to_pure_dict(state)))


def _clips(seed, batch, channels):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(batch, *CLIP, channels)), jnp.float32)


@pytest.mark.parametrize("channels", [1, 2, 3])  # Depth, optical flow, RGB.
def test_output_shape(channels):
    model = nnx.eval_shape(lambda: I3D(channels, width_multiplier=MULTIPLIER, rngs=nnx.Rngs(0)))
    assert model.out_features == TINY_FEATURES
    clips = jax.ShapeDtypeStruct((2, *CLIP, channels), jnp.float32)
    out = nnx.eval_shape(lambda m, x: m(x, train=False), model, clips)
    assert (out.shape, out.dtype) == ((2, TINY_FEATURES), jnp.float32)


# The paper's Inception widths (Mixed_3b, 3c, 4b-4f, 5b, 5c), copied here independently of the module:
# (1x1, 3x3 reduce, 3x3, 3x3 reduce, 3x3, pool projection).
_INCEPTION_TABLE = (
    (64, 96, 128, 16, 32, 32),
    (128, 128, 192, 32, 96, 64),
    (192, 96, 208, 16, 48, 64),
    (160, 112, 224, 24, 64, 64),
    (128, 128, 256, 24, 64, 64),
    (112, 144, 288, 32, 64, 64),
    (256, 160, 320, 32, 128, 128),
    (256, 160, 320, 32, 128, 128),
    (384, 192, 384, 48, 128, 128),
)


def _reference_parameter_count(in_channels):
    """I3D's conv + BatchNorm (scale and bias) parameters, from the paper's channel table.

    Written independently of the module: each unit is a ``k^3 * c_in * c_out``
    kernel plus ``2 * c_out`` BatchNorm parameters.
    """

    def unit(c_in, c_out, k):
        return k**3 * c_in * c_out + 2 * c_out

    total = unit(in_channels, 64, 7) + unit(64, 64, 1) + unit(64, 192, 3)
    c_in = 192
    for b0, b1a, b1b, b2a, b2b, b3 in _INCEPTION_TABLE:
        total += unit(c_in, b0, 1) + unit(c_in, b1a, 1) + unit(b1a, b1b, 3)
        total += unit(c_in, b2a, 1) + unit(b2a, b2b, 3) + unit(c_in, b3, 1)
        c_in = b0 + b1b + b2b + b3
    assert c_in == 1024
    return total


def test_full_width_parameter_count_matches_reference():
    # pytorch-i3d's InceptionI3d without its ``logits`` convolution (a 400-class one would add
    # 1024 * 400 + 400 = 410,000, for 12,697,264).
    assert _reference_parameter_count(3) == 12_287_264
    model = nnx.eval_shape(lambda: I3D(3, rngs=nnx.Rngs(0)))  # Abstract: no arrays allocated.
    assert model.out_features == 1024
    assert param_count(model) == _reference_parameter_count(3)
    # Depth and flow differ only in the stem's 7x7x7 kernel (built at full width, alone, for speed).
    for channels in (1, 2):
        stem = nnx.eval_shape(lambda: Unit3D(channels, 64, (7, 7, 7), (2, 2, 2), rngs=nnx.Rngs(0)))
        difference = param_count(stem) - param_count(model.conv_1a)
        assert param_count(model) + difference == _reference_parameter_count(channels)
    # BatchNorm keeps a running mean and variance per unit's channel (not parameters).
    stats = nnx.state(model, nnx.BatchStat)
    assert sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(stats)) == 2 * (
        64 + 64 + 192 + sum(map(sum, _INCEPTION_TABLE))
    )


def test_batchnorm_is_pytorch_i3d_s():
    """BatchNorm3d(eps=0.001, momentum=0.01), with torch's (unbiased) running-variance update."""
    unit = nnx.eval_shape(lambda: Unit3D(2, 4, rngs=nnx.Rngs(0)))
    assert isinstance(unit.bn, TorchBatchNorm)
    assert (unit.bn.epsilon, unit.bn.momentum) == (BN_EPSILON, BN_MOMENTUM) == (1e-3, 0.99)


def test_reference_clip_reaches_8x7x7():
    # A 64-frame 224x224 clip: the reference's 8x7x7 map before its final pool ('SAME' padding).
    model = nnx.eval_shape(lambda: I3D(3, width_multiplier=MULTIPLIER, rngs=nnx.Rngs(0)))

    pools = (((1, 3, 3), (1, 2, 2)), ((3, 3, 3), (2, 2, 2)), ((2, 2, 2), (2, 2, 2)))

    def last_map(m, x):  # I3D.__call__ without the final mean.
        x = m.conv_1a(x, train=False)
        x = nnx.max_pool(x, (1, 3, 3), (1, 2, 2), "SAME")
        x = m.conv_2c(m.conv_2b(x, train=False), train=False)
        for (window, strides), stage in zip(pools, m.stages):
            x = nnx.max_pool(x, window, strides, "SAME")
            for module in stage:
                x = module(x, train=False)
        return x

    clips = jax.ShapeDtypeStruct((1, 64, 224, 224, 3), jnp.float32)
    assert nnx.eval_shape(last_map, model, clips).shape == (1, 8, 7, 7, TINY_FEATURES)


def test_same_padding_matches_pytorch_i3d():
    """pytorch-i3d's padding: ``max(k - s, 0)`` or ``max(k - size % s, 0)``, the extra unit at the end."""
    unit = _build(lambda rngs: Unit3D(2, 3, (7, 7, 7), (2, 2, 2), rngs=rngs))
    x = _clips(1, 1, 2)[:, :7, :9, :10]  # Odd and even sizes: asymmetric and symmetric padding.

    def pad(size, k, s):
        total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
        return total // 2, total - total // 2

    padded = jnp.pad(x, ((0, 0), *(pad(n, 7, 2) for n in x.shape[1:4]), (0, 0)))
    expected = jax.lax.conv_general_dilated(
        padded, unit.conv.kernel[...], (2, 2, 2), "VALID", dimension_numbers=("NDHWC", "DHWIO", "NDHWC")
    )
    np.testing.assert_allclose(unit.conv(x), expected, rtol=1e-5, atol=1e-5)
    assert unit.conv(x).shape == (1, 4, 5, 5, 3)


def test_batch_stats_update_only_in_training():
    # One Inception module (the full model's statistics are checked functionally below).
    module = _build(lambda rngs: InceptionModule(3, (2, 2, 3, 1, 2, 2), rngs=rngs))
    eval_out = check_batchnorm_modes(module, _clips(2, 2, 3))
    assert eval_out.shape == (2, *CLIP, module.out_features) and module.out_features == 9


# The gradient of the whole I3D takes ~20 s to compile with XLA's default CPU optimisations on
# two cores; these settings roughly halve that and barely matter for the tiny model's run time.
_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def test_functional_training_step_reduces_loss():
    """The trainer's pattern on the whole model: split_model once, apply_model inside a jitted step."""
    model = _build(lambda rngs: I3D(1, width_multiplier=MULTIPLIER, rngs=rngs), seed=1)
    graphdef, params, model_state = split_model(model)
    # 16x64x64 clips leave a 2x2x2 map for Mixed_5b/5c: with a 1x1x1 map and two clips, training-mode
    # BatchNorm there would output +-1 whatever the earlier layers did.
    x = jnp.asarray(np.random.default_rng(5).normal(size=(2, 16, 64, 64, 1)), jnp.float32)
    target = jnp.asarray(np.random.default_rng(6).normal(size=(2, model.out_features)), jnp.float32)

    @jax.jit(compiler_options=_FAST_COMPILE)
    def step(params, model_state):
        def loss_fn(p):
            y, new_state = apply_model(graphdef, p, model_state, x, train=True)
            return jnp.mean((y - target) ** 2), new_state

        (loss, new_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        return jax.tree.map(lambda p, g: p - 0.1 * g, params, grads), new_state, loss

    initial_state = jax.tree.map(np.asarray, model_state)
    losses = []
    for _ in range(3):
        params, new_state, loss = step(params, model_state)
        assert all_changed(model_state, new_state)  # train=True: every BatchNorm statistic moves.
        model_state = new_state
        losses.append(float(loss))
    assert np.isfinite(losses).all() and losses[0] > losses[1] > losses[2]
    # Same structure in and out (no recompiles); the caller's arrays are untouched.
    assert jax.tree.structure(model_state) == jax.tree.structure(initial_state)
    jax.tree.map(np.testing.assert_array_equal, initial_state, split_model(model)[2])


def test_rejects_bad_width_multiplier():
    with pytest.raises(ValueError, match="width_multiplier"):
        I3D(3, width_multiplier=0.0, rngs=nnx.Rngs(0))
