"""Encoders by name, and an image + text run through ResNet18 and BERT end to end."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mie_jax.data.registry import MultimodalDataset, Split, load_dataset
from mie_jax.models import encoders
from mie_jax.train import make_config, steps, train


def test_one_name_serves_every_modality_or_one_per_modality():
    assert encoders.encoder_names(make_config({}), ("a", "b")) == {"a": "mlp", "b": "mlp"}
    config = make_config({"model": {"encoder": {"image": "resnet18", "text": "bert"}}})
    assert encoders.encoder_names(config, ("image", "text")) == {"image": "resnet18", "text": "bert"}
    # --set model.encoder=image=resnet18,text=bert parses to the same mapping.
    assert make_config({}, ["model.encoder=image=resnet18,text=bert"]).model.encoder == config.model.encoder


@pytest.mark.parametrize(
    "spec, message",
    [
        ("image=resnet18", r"names no encoder for modalities \['text'\]"),
        ("image=vgg,text=bert", r"model\.encoder must name encoders from .*got 'vgg'"),
    ],
)
def test_bad_encoder_specs_are_named(spec, message):
    with pytest.raises(ValueError, match=message):
        encoders.encoder_names(make_config({}, [f"model.encoder={spec}"]), ("image", "text"))


def test_input_rank_must_fit_the_encoder():
    with pytest.raises(ValueError, match=r"encoder 'resnet18' expects examples with 3 axes, got shape \(216,\)"):
        encoders.build_encoder(make_config({}), "resnet18", (216,), nnx.Rngs(0))


def test_every_encoder_projects_to_dim():
    config = make_config({"model": {"dim": 8, "resnet_width": 4}})
    cases = {
        "mlp": (np.ones((2, 5), np.float32),),
        "resnet18": (np.ones((2, 16, 16, 1), np.float32),),
        "frames_resnet18": (np.ones((2, 3, 16, 16, 3), np.float32),),
        "bert": (np.array([[101, 2023, 102, 0], [101, 102, 0, 0]], np.int32),),
    }
    for name, (x,) in cases.items():
        model = encoders.build_encoder(config, name, x.shape[1:], nnx.Rngs(0))
        graphdef, params, state = steps.split_model(model)
        out, _ = steps.apply_model(graphdef, params, state, jnp.asarray(x), train=False)
        assert out.shape == (2, 8), name


def test_bert_text_encoder_ignores_padding():
    model = encoders.build_encoder(make_config({"model": {"dim": 8}}), "bert", (6,), nnx.Rngs(0))
    short = model(jnp.array([[101, 2023, 102, 0, 0, 0]]))
    padded_differently = model(jnp.array([[101, 2023, 102, 0, 0, 0, 0, 0]]))
    np.testing.assert_allclose(short, padded_differently, atol=1e-5)


def test_image_and_text_train_with_resnet_and_bert():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 16).astype(np.int32)
    # Class-dependent images and token ids, so both modalities can be learned.
    images = (rng.normal(size=(48, 16, 16, 3)) + labels[:, None, None, None]).astype(np.float32)
    words = np.array([2158, 2450, 3899])  # "man", "woman", "dog"
    ids = np.zeros((48, 6), np.int32)
    ids[:, 0], ids[:, 1], ids[:, 2] = 101, words[labels], 102
    split = Split({"image": images, "text": ids}, labels)
    dataset = MultimodalDataset("toy", ("image", "text"), 3, {"train": split, "validation": split, "test": split})
    config = make_config(
        {
            "modalities": ("image", "text"),
            "model": {"encoder": {"image": "resnet18", "text": "bert"}, "resnet_width": 4, "dim": 16},
            "train": {"outer_iterations": 1, "phase_epochs": 3, "batch_size": 16},
            "optimizer": {"name": "adam", "learning_rate": 1e-3},
            "alternating": {"mixup_alpha": 1.0},
        }
    )
    results = train(config, dataset)
    assert results["test"]["text"]["accuracy"] > 0.9
    assert all(np.isfinite(r["loss"]) for r in results["history"])


def test_emoji_needs_its_prepared_directory():
    with pytest.raises(ValueError, match=r"--data-dir must name a directory with emoji.npz"):
        load_dataset("emoji", ("image", "text"))


def test_i3d_takes_clips_and_projects_to_dim():
    config = make_config({"model": {"dim": 8, "resnet_width": 4}})
    model = nnx.eval_shape(lambda: encoders.build_encoder(config, "i3d", (8, 32, 32, 2), nnx.Rngs(0)))
    out = nnx.eval_shape(lambda m, x: m(x, train=False), model, jnp.zeros((2, 8, 32, 32, 2)))
    assert out.shape == (2, 8)


def test_imagenet_normalisation_standardises_the_scaled_pixels_of_the_named_modality():
    config = make_config(
        {
            "modalities": ("visual", "audio"),
            "data": {"imagenet_normalize": ("visual",)},
            "model": {"dim": 8, "resnet_width": 4},
        }
    )
    pixels = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    normalized = encoders.build_encoder(config, "resnet18", pixels.shape[1:], nnx.Rngs(0), "visual")
    plain = encoders.build_encoder(config, "resnet18", pixels.shape[1:], nnx.Rngs(0), "audio")
    standardised = (pixels / 255.0 - np.array(encoders.IMAGENET_MEAN)) / np.array(encoders.IMAGENET_STD)
    np.testing.assert_allclose(
        normalized(jnp.asarray(pixels)), plain(jnp.asarray(standardised, jnp.float32)), rtol=1e-5, atol=1e-5
    )
    # Floats in [0, 1] (mixed-up batches) are standardised the same way.
    np.testing.assert_allclose(
        normalized(jnp.asarray(pixels / 255.0, jnp.float32)), normalized(jnp.asarray(pixels)), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("name, shape", [("resnet18", (257, 188, 1)), ("bert", (6,))])
def test_imagenet_normalisation_needs_rgb_pixels(name, shape):
    config = make_config({"modalities": ("audio", "visual"), "data": {"imagenet_normalize": ("audio",)}})
    with pytest.raises(
        ValueError, match=rf"data\.imagenet_normalize names 'audio', whose encoder '{name}' takes examples"
    ):
        encoders.build_encoder(config, name, shape, nnx.Rngs(0), "audio")


def test_imagenet_normalisation_must_name_a_modality_of_the_run():
    with pytest.raises(ValueError, match=r"data\.imagenet_normalize must name modalities of this run"):
        make_config({"data": {"imagenet_normalize": ("visual",)}})
