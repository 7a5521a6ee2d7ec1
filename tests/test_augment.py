"""Training-time augmentation: the device-side crop and flip, the host's draws, and the trainer's use of them."""

import chex
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from mie_jax.data import crops, pipeline
from mie_jax.data.registry import MultimodalDataset, Split
from mie_jax.train import augment, make_config, train


def smooth_image(size=32):
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    return np.stack([255 * yy, 255 * xx, 127 + 100 * np.sin(6 * yy + 4 * xx)], -1).round().astype(np.uint8)


class CropAndFlipTest(parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_the_whole_image_unflipped_is_unchanged_and_flipped_is_mirrored(self):
        image = smooth_image()[None]
        whole = jnp.array([[0, 0, 32, 32]])
        crop_and_flip = self.variant(augment.crop_and_flip)
        np.testing.assert_array_equal(crop_and_flip(image, whole, jnp.array([False])), image)
        np.testing.assert_array_equal(crop_and_flip(image, whole, jnp.array([True])), image[:, :, ::-1])

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(([4, 6, 16, 20],), ([0, 0, 8, 8],), ([10, 3, 20, 28],), ([2, 2, 30, 29],))
    def test_a_box_is_resized_as_cropping_then_resizing_with_pil_does(self, box):
        image = smooth_image()
        top, left, height, width = box
        reference = pipeline._resize(image[top : top + height, left : left + width], 32, 32).astype(int)
        out = np.asarray(self.variant(augment.crop_and_flip)(image[None], jnp.array([box]), jnp.array([False])))
        difference = np.abs(out[0].astype(int) - reference)
        # Within rounding inside; at the box's edges the filter may also read the pixels just outside it.
        self.assertLessEqual(difference[2:-2, 2:-2].max(), 1)
        self.assertLess(difference.mean(), 0.5)
        self.assertEqual(out.dtype, np.uint8)

    def test_the_frames_of_a_clip_share_its_crop_and_flip(self):
        clip = np.stack([smooth_image(), smooth_image()[::-1]])[None]
        box, flip = jnp.array([[3, 5, 17, 21]]), jnp.array([True])
        out = augment.crop_and_flip(clip, box, flip)
        for f in range(2):
            np.testing.assert_array_equal(out[:, f], augment.crop_and_flip(clip[:, f], box, flip))

    def test_each_image_gets_its_own_box(self):
        images = np.stack([smooth_image()] * 2)
        out = augment.crop_and_flip(images, jnp.array([[0, 0, 32, 32], [8, 8, 16, 16]]), jnp.array([False, False]))
        np.testing.assert_array_equal(out[0], images[0])
        self.assertGreater(np.abs(out[1].astype(int) - images[1]).mean(), 10)


def test_draws_are_boxes_inside_the_image_of_the_inception_crop():
    boxes, flips = crops.crop_draws(np.random.default_rng(0), (50, 8), 24, 40)
    assert boxes.shape == (50, 8, 4) and boxes.dtype == np.int32 and flips.shape == (50, 8)
    top, left, height, width = np.moveaxis(boxes, -1, 0)
    assert (top >= 0).all() and (left >= 0).all() and (height > 0).all() and (width > 0).all()
    assert (top + height <= 24).all() and (left + width <= 40).all()
    area = height * width / (24 * 40)
    assert area.min() >= 0.07 and area.max() <= 1  # U(0.08, 1) of the area, to rounding.
    assert 0.4 < flips.mean() < 0.6
    again = crops.crop_draws(np.random.default_rng(0), (50, 8), 24, 40)
    np.testing.assert_array_equal(again[0], boxes)


def test_a_phase_draws_only_for_augmented_modalities_and_from_its_own_stream():
    config = make_config({"modalities": ("image", "vec"), "data": {"augment": ("image",)}, "seed": 3})
    inputs = {"image": np.zeros((10, 12, 16, 3), np.uint8), "vec": np.zeros((10, 5), np.float32)}
    draws = augment.phase_crops(config, inputs, 2, (4, 6), ("image", "vec"))
    assert set(draws) == {"image"} and draws["image"][0].shape == (4, 6, 4)
    np.testing.assert_array_equal(
        draws["image"][0], augment.phase_crops(config, inputs, 2, (4, 6), ("image",))["image"][0]
    )
    assert not np.array_equal(draws["image"][0], augment.phase_crops(config, inputs, 3, (4, 6), ("image",))["image"][0])
    assert augment.phase_crops(config, inputs, 2, (4, 6), ("vec",)) == {}


def test_augment_must_name_a_modality_of_the_run():
    with pytest.raises(
        ValueError, match=r"data\.augment must name modalities of this run \['fac', 'mor'\], got \['image'\]"
    ):
        make_config({"data": {"augment": ("image",)}})


def toy_dataset(frames=0):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(2), 16).astype(np.int32)
    # Class-dependent brightness, so the images can be learned under crops and flips.
    shape = (32, frames, 16, 16, 3) if frames else (32, 16, 16, 3)
    brightness = (90 + 80 * labels).reshape(-1, *[1] * (len(shape) - 1))
    images = np.clip(rng.normal(brightness, 30, shape), 0, 255).astype(np.uint8)
    vectors = (rng.normal(size=(32, 6)) + labels[:, None]).astype(np.float32)
    split = Split({"image": images, "vec": vectors}, labels)
    return MultimodalDataset("toy", ("image", "vec"), 2, {"train": split, "validation": split, "test": split})


def toy_config(method, image_encoder="resnet18", *overrides):
    return make_config(
        {
            "modalities": ("image", "vec"),
            "model": {
                "encoder": {"image": image_encoder, "vec": "mlp"},
                "resnet_width": 4,
                "dim": 8,
                "encoder_hidden": 16,
            },
            "train": {"outer_iterations": 1, "phase_epochs": 1, "batch_size": 8},
        },
        overrides,
        method=method,
    )


@pytest.mark.parametrize("method, frames", [("mie", 0), ("joint", 0), ("mla", 0), ("mie", 2)])
def test_augmentation_changes_the_image_batches_of_every_kind_of_trainer(method, frames):
    dataset, encoder = toy_dataset(frames), "frames_resnet18" if frames else "resnet18"
    plain = train(toy_config(method, encoder), dataset)
    augmented = train(toy_config(method, encoder, "data.augment=image"), dataset)
    losses = [np.array([r["step_losses"] for r in run["history"]]) for run in (plain, augmented)]
    assert np.isfinite(losses[1]).all()
    assert not np.allclose(losses[0], losses[1])


def test_only_uint8_images_or_clips_can_be_augmented():
    with pytest.raises(
        ValueError, match=r"data\.augment names 'vec', whose inputs are float32 \[32, 6\]; expected uint8"
    ):
        train(toy_config("mie", "resnet18", "data.augment=vec"), toy_dataset())
