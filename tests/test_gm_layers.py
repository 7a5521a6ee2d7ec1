"""Gradient modification on any layer the modalities share (mie.layers), dense and conv, end to end."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import mie_jax
from mie_jax.data.registry import MultimodalDataset, Split, load_dataset
from mie_jax.models import taps
from mie_jax.models.mlp import MLPEncoder
from mie_jax.train import loop, make_config, steps, train
from mie_jax.train.methods import alternating
from mie_jax.train.trainer import build_method

VIEWS = ("fac", "mor", "zer")
SMALL = {
    "modalities": VIEWS,
    "model": {"dim": 16, "encoder_hidden": 32},
    "train": {"outer_iterations": 1, "phase_epochs": 1, "batch_size": 100},
}


@functools.lru_cache(maxsize=None)
def mfeat():
    return load_dataset("mfeat", VIEWS)


def mie(layers="all", **sections):
    return build_method(make_config({**SMALL, **sections}, [f"mie.layers={layers}"], method="mie"), mfeat())


def test_tapped_layers_report_their_inputs_only_while_recording():
    encoder = MLPEncoder(5, 3, hidden=4, rngs=nnx.Rngs(0))
    x = jnp.arange(10.0).reshape(2, 5)
    before = nnx.to_pure_dict(nnx.state(encoder))
    output, inputs = taps.recording_inputs(encoder, lambda: encoder(x))
    assert set(inputs) == {"hidden", "out"} == set(taps.tapped_layers(encoder))
    np.testing.assert_array_equal(inputs["hidden"], x)
    np.testing.assert_allclose(inputs["out"], jax.nn.relu(encoder.hidden(x)), rtol=1e-6)
    np.testing.assert_array_equal(output, encoder(x))  # A call outside recording is the same and keeps nothing.
    assert jax.tree.map(np.shape, nnx.to_pure_dict(nnx.state(encoder))) == jax.tree.map(np.shape, before)


def test_all_selects_the_layers_every_modality_has_at_the_same_width():
    # mfeat's views have 216, 6 and 47 features: the encoders' first layers differ, the rest match.
    assert mie("all").layers == ("encoder/out", "head/fc1", "head/fc2", "head/fc3")
    assert mie("head").layers == alternating.HEAD_LAYER_NAMES
    assert mie("encoder/out, head/fc3").layers == ("encoder/out", "head/fc3")


@pytest.mark.parametrize("layers", ["encoder/hidden", "head/fc9", ","])
def test_a_layer_the_modalities_do_not_share_is_refused_naming_the_valid_ones(layers):
    with pytest.raises(ValueError, match="expected head, all, or some of encoder/out, head/fc1") as error:
        mie(layers)
    assert "\n" not in str(error.value)


def test_the_covariance_pass_sums_the_batch_means_of_each_layers_inputs():
    method = mie("all")
    state = method.init()
    params, model_state = state["params"]["mor"], state["model_state"]["mor"]
    x = np.asarray(method.inputs["mor"], np.float64)[:50]
    covariance = method.covariance_passes["mor"](params, model_state, x.astype(np.float32), 12, 2)
    # float64 reference: the encoder's hidden activations are the inputs of encoder/out (Eq. 5 over 12-row batches).
    w, b = (np.asarray(params["encoder"]["hidden"][k], np.float64) for k in ("kernel", "bias"))
    hidden = np.maximum(x @ w + b, 0.0)
    expected = sum(np.outer(m, m) for m in (hidden[i : i + 12].mean(axis=0) for i in range(0, 50, 12)))
    np.testing.assert_allclose(covariance["encoder/out"], expected, rtol=2e-5, atol=1e-6)
    assert set(covariance) == set(method.layers)


def test_t_reaches_every_selected_kernel_and_comes_from_the_previous_modality():
    method = mie("all")
    state = method.init()
    rng = np.random.default_rng(0)
    for m, covariances in state["covariance"].items():
        for layer, c in covariances.items():
            z = rng.normal(size=(4, c.shape[0]))
            state["covariance"][m][layer] = jnp.asarray(z.T @ z, jnp.float32)
    transforms = method._transforms(state, 1, "mor")
    np.testing.assert_allclose(
        transforms["encoder"]["out"]["kernel"],
        mie_jax.flat_transform(state["covariance"]["fac"]["encoder/out"], 0.4),
        atol=1e-6,
    )
    assert transforms["encoder"]["hidden"]["kernel"] is None and transforms["head"]["fc1"]["bias"] is None


def test_mie_on_all_shared_layers_trains_mfeat_end_to_end():
    config = make_config(SMALL, ["mie.layers=all"])
    results = train(config, mfeat())
    assert results["finished"] and results["test"]["average"]["accuracy"] > 0.6
    head_only = train(config.replace({"mie.layers": "head"}), mfeat())
    # The encoder's T changes the training: the two runs differ.
    assert results["history"][-1]["loss"] != head_only["history"][-1]["loss"]


def test_conv_layers_get_their_t_end_to_end():
    """A spectrogram ResNet18 and a frame ResNet18: every conv layer but the stem (1 vs 3 channels) is shared."""
    rng = np.random.default_rng(0)

    def split(n):
        labels = rng.integers(0, 2, n).astype(np.int32)
        audio = rng.normal(size=(n, 8, 8, 1)).astype(np.float32) + labels[:, None, None, None]
        frames = rng.integers(0, 255, size=(n, 1, 8, 8, 3)).astype(np.uint8)
        return Split({"audio": audio, "visual": frames}, labels)

    dataset = MultimodalDataset("toy", ("audio", "visual"), 2, {s: split(16) for s in ("train", "validation", "test")})
    values = {
        "modalities": ("audio", "visual"),
        "model": {"encoder": {"audio": "resnet18", "visual": "frames_resnet18"}, "resnet_width": 1, "dim": 4},
        "train": {"outer_iterations": 1, "phase_epochs": 1, "batch_size": 8},
    }
    config = make_config(values, ["mie.layers=all", "mie.rank=1"])
    method = build_method(config, dataset)
    convs = [layer for layer in method.layers if layer.startswith("encoder/backbone/")]
    # 8 blocks x 2 convs and the 3 projection shortcuts.
    assert "encoder/backbone/conv" not in method.layers and len(convs) == 19
    state = method.init()
    audio = state["params"]["audio"], state["model_state"]["audio"], state["opt_state"]["audio"], None
    state = method.finish_phase(state, 0, audio)  # The audio phase's end: its covariance pass.
    kernel = steps.layer_params(state["params"]["audio"], convs[0])["kernel"]
    # A conv layer's covariance is [c_in, c_in]; its T multiplies every tap of the [kh, kw, c_in, c_out] gradient.
    assert state["covariance"]["audio"][convs[0]].shape == (kernel.shape[-2],) * 2
    before = steps.layer_params(state["params"]["visual"], convs[0])["kernel"]
    plan = method.phase_plan(state, 1)  # The visual phase, with T from the audio covariances.
    assert all(isinstance(steps.layer_params(plan.constants, c)["kernel"], mie_jax.LowRankTransform) for c in convs)
    (params, *_), done, losses = next(loop.run_chunks(plan, start=0, chunk=1))
    assert done == 1 and np.isfinite(losses).all()
    assert not np.array_equal(steps.layer_params(params, convs[0])["kernel"], before)
