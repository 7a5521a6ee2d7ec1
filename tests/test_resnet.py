"""Tests for the torchvision-style ResNet encoders (tiny widths, 32x32 inputs).

Compilation dominates on CPU, so: output shapes are checked abstractly
(``nnx.eval_shape`` traces construction and the forward pass without compiling),
and the numerical tests fill abstractly built models with NumPy weights, since
eager initialisation compiles a normal sampler per kernel shape (~1-3 s each on
2 cores). ``test_initialisation`` runs the real initialisers on one block.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mie_jax.models.resnet import BN_EPSILON
from mie_jax.models.resnet import BN_MOMENTUM
from mie_jax.models.resnet import BasicBlock
from mie_jax.models.resnet import Bottleneck
from mie_jax.models.resnet import frames_resnet18
from mie_jax.models.resnet import ResNet
from mie_jax.models.resnet import TorchBatchNorm
from mie_jax.models.resnet import resnet18
from mie_jax.models.resnet import resnet50
from tests.conv_models import all_changed, batch_stats_snapshot, check_batchnorm_modes, forward, param_count

WIDTH = 4
SIZE = 32
FACTORIES = {"resnet18": (resnet18, 8 * WIDTH), "resnet50": (resnet50, 32 * WIDTH)}


def _build(constructor, seed=0):
    """``constructor(rngs)``'s module with He-normal kernels drawn by NumPy (no XLA compiles)."""
    graphdef, state = nnx.split(nnx.eval_shape(lambda: constructor(nnx.Rngs(0))))
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = path[-1].key
        if name == "kernel":  # [kh, kw, in, out]: std sqrt(2 / fan_out), like torchvision.
            std = np.sqrt(2.0 / (leaf.shape[0] * leaf.shape[1] * leaf.shape[3]))
            return jnp.asarray(rng.normal(0.0, std, leaf.shape), leaf.dtype)
        return jnp.full(leaf.shape, 1.0 if name in ("scale", "var") else 0.0, leaf.dtype)

    return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(fill, nnx.to_pure_dict(state)))


def _images(seed, *shape):
    """Random images ``[*shape, SIZE, SIZE, channels]``; ``shape`` ends with the channels."""
    *lead, channels = shape
    return jnp.asarray(np.random.default_rng(seed).normal(size=(*lead, SIZE, SIZE, channels)), jnp.float32)


@pytest.fixture(scope="module")
def audio_resnet():
    """The shared real model: a width-4 ResNet18 on 1-channel spectrograms."""
    return _build(lambda rngs: resnet18(1, width=WIDTH, rngs=rngs))


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_output_shape(name, channels):
    factory, features = FACTORIES[name]
    model = nnx.eval_shape(lambda: factory(channels, width=WIDTH, rngs=nnx.Rngs(0)))
    assert model.out_features == features
    images = jax.ShapeDtypeStruct((2, SIZE, SIZE, channels), jnp.float32)
    # train=False: tracing BatchNorm's updates is slow, and the shapes are the same.
    out = nnx.eval_shape(lambda m, x: m(x, train=False), model, images)
    assert (out.shape, out.dtype) == ((2, features), jnp.float32)


@pytest.mark.parametrize("channels", [1, 3])
def test_frame_resnet_output_shape(channels):
    encoder = nnx.eval_shape(lambda: frames_resnet18(channels, width=WIDTH, rngs=nnx.Rngs(0)))
    assert encoder.out_features == 8 * WIDTH
    clips = jax.ShapeDtypeStruct((2, 3, SIZE, SIZE, channels), jnp.float32)  # [B, T, H, W, C]
    out = nnx.eval_shape(lambda m, x: m(x, train=False), encoder, clips)
    assert (out.shape, out.dtype) == ((2, 8 * WIDTH), jnp.float32)


def test_full_width_parameter_counts_match_torchvision():
    # torchvision's resnet18 / resnet50 without ``fc``: conv kernels and BatchNorm scales
    # and biases. eval_shape builds the modules abstractly (the same variables, no arrays).
    r18 = nnx.eval_shape(lambda: resnet18(3, rngs=nnx.Rngs(0)))
    r50 = nnx.eval_shape(lambda: resnet50(3, rngs=nnx.Rngs(0)))
    assert (r18.out_features, r50.out_features) == (512, 2048)
    assert param_count(r18) == 11_176_512
    assert param_count(r50) == 23_508_032


def test_batch_stats_update_only_in_training(audio_resnet):
    model = nnx.clone(audio_resnet)  # Its statistics change: leave the shared one alone.
    assert check_batchnorm_modes(model, _images(2, 4, 1)).shape == (4, model.out_features)


def test_batchnorm_keeps_running_averages_as_torch():
    """Normalises with the biased batch variance; the running variance takes the unbiased one, as torch's."""
    bn = TorchBatchNorm(3, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, rngs=nnx.Rngs(0))
    x = np.random.default_rng(0).normal(2.0, 3.0, size=(2, 4, 5, 3)).astype(np.float32)
    flat = x.reshape(-1, 3)
    normalised = (x - flat.mean(axis=0)) / np.sqrt(flat.var(axis=0) + BN_EPSILON)
    np.testing.assert_allclose(bn(jnp.asarray(x), use_running_average=False), normalised, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bn.mean[...], 0.1 * flat.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(bn.var[...], 0.9 + 0.1 * flat.var(axis=0, ddof=1), rtol=1e-5)
    # Evaluation normalises with the running averages and leaves them.
    mean, var = np.asarray(bn.mean[...]), np.asarray(bn.var[...])
    np.testing.assert_allclose(
        bn(jnp.asarray(x), use_running_average=True), (x - mean) / np.sqrt(var + BN_EPSILON), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_array_equal(bn.var[...], var)


def test_frame_resnet_pools_over_frames(audio_resnet):
    encoder = nnx.eval_shape(lambda: frames_resnet18(1, width=WIDTH, rngs=nnx.Rngs(0)))
    nnx.update(encoder, nnx.state(audio_resnet))  # The same layers under the same names: the same weights.
    clips = _images(3, 2, 2, 1)  # [B=2, T=2, H, W, C=1]
    features = forward(encoder, clips, train=False)
    assert features.shape == (2, encoder.out_features)
    # Invariant to the order of the frames.
    np.testing.assert_allclose(forward(encoder, clips[:, ::-1], train=False), features, rtol=1e-5, atol=1e-6)
    # The mean over the frames of the per-frame features.
    per_frame = forward(audio_resnet, clips.reshape(4, SIZE, SIZE, 1), train=False).reshape(2, 2, -1)
    np.testing.assert_allclose(features, per_frame.mean(axis=1), rtol=1e-5, atol=1e-6)
    # With T = 1 it is the plain ResNet.
    images = _images(4, 4, 1)
    np.testing.assert_allclose(
        forward(encoder, images[:, None], train=False),
        forward(audio_resnet, images, train=False),
        rtol=1e-5,
        atol=1e-6,
    )


def _sgd_steps(step, params, batch_stats, num_steps=3):
    losses = []
    for _ in range(num_steps):
        params, batch_stats, loss = step(params, batch_stats)
        losses.append(float(loss))
    return params, batch_stats, losses


def test_functional_training_step_reduces_loss():
    """The trainer's pattern: split once, merge inside a jitted loss, return the new batch stats."""
    # One block per stage (identity and projection shortcuts both occur): half the compile time.
    model = _build(lambda rngs: ResNet("basic", (1, 1, 1, 1), 1, width=WIDTH, rngs=rngs), seed=1)
    graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    x = _images(5, 4, 1)
    target = jnp.asarray(np.random.default_rng(6).normal(size=(4, model.out_features)), jnp.float32)

    def loss_fn(params, batch_stats):
        # copy=True: fresh Variables at this trace level. Without it merge reuses the Variables
        # of the State arguments, and BatchNorm's update raises TraceContextError under grad.
        # (Plain dicts from nnx.to_pure_dict always get fresh Variables; copy is harmless.)
        m = nnx.merge(graphdef, params, batch_stats, copy=True)
        y = m(x, train=True)
        return jnp.mean((y - target) ** 2), nnx.state(m, nnx.BatchStat)

    @jax.jit
    def step(params, batch_stats):
        (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch_stats)
        params = jax.tree.map(lambda p, g: p - 0.1 * g, params, grads)
        return params, new_stats, loss

    initial_stats = batch_stats_snapshot(model)
    new_params, new_stats, losses = _sgd_steps(step, params, batch_stats)
    assert losses[-1] < losses[0]
    # Same structure in and out (no recompiles); the statistics moved; the inputs did not.
    assert jax.tree.structure(new_stats) == jax.tree.structure(batch_stats)
    assert all_changed(initial_stats, nnx.to_pure_dict(new_stats))
    jax.tree.map(np.testing.assert_array_equal, initial_stats, batch_stats_snapshot(model))
    jax.tree.map(np.testing.assert_array_equal, initial_stats, nnx.to_pure_dict(batch_stats))
    # The results merge back into a module, also as plain dicts (as mie_jax.train.steps keeps them).
    trained = nnx.merge(graphdef, nnx.to_pure_dict(new_params), nnx.to_pure_dict(new_stats))
    jax.tree.map(np.testing.assert_array_equal, batch_stats_snapshot(trained), nnx.to_pure_dict(new_stats))


def test_initialisation():
    """The real initialisers: torchvision's He-normal (fan-out) kernels, unit-scale BatchNorm."""
    # Two 3x3x16x16 kernels: one sampler compile (an rbg key's compiles fastest).
    block = BasicBlock(16, 16, 1, rngs=nnx.Rngs(jax.random.key(0, impl="rbg")))
    assert block.shortcut is None
    kernels = np.concatenate([np.ravel(block.conv1.kernel[...]), np.ravel(block.conv2.kernel[...])])
    np.testing.assert_allclose(kernels.std(), np.sqrt(2.0 / (3 * 3 * 16)), rtol=0.05)
    assert abs(kernels.mean()) < 0.01
    assert block.conv1.bias is None  # Bias-free convolutions, as torchvision.
    np.testing.assert_array_equal(block.bn1.scale[...], 1.0)
    np.testing.assert_array_equal(block.bn1.bias[...], 0.0)
    np.testing.assert_array_equal(block.bn1.var[...], 1.0)
    bottleneck = nnx.eval_shape(lambda: Bottleneck(8, 4, 2, rngs=nnx.Rngs(0)))
    assert bottleneck.shortcut.conv.kernel.shape == (1, 1, 8, 16)  # Projection to 4 * width.
    assert bottleneck.conv2.strides == (2, 2)  # Strided 3x3, as torchvision (ResNet v1.5).


def test_rejects_bad_config():
    with pytest.raises(ValueError, match="block"):
        ResNet("wide", (2, 2, 2, 2), 3, width=WIDTH, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="stage_sizes"):
        ResNet("basic", (2, 2, 2), 3, width=WIDTH, rngs=nnx.Rngs(0))
