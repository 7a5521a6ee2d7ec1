"""Training-time image augmentation on the device: the random resized crop and the mirror flip.

The boxes and flips are drawn on the host (:func:`mie_jax.data.crops.crop_draws`,
from the phase's seed), like the batch order and the mixup draws, so results do
not depend on how a phase is cut into chunks; only the resampling runs on the device.
"""

import jax
import jax.numpy as jnp

from mie_jax.data import crops
from mie_jax.train import batches

AUGMENT_STREAM = 1  # batches.phase_rng's stream 0 draws the order and mixup.


def crop_and_flip(images: jax.Array, boxes: jax.Array, flips: jax.Array) -> jax.Array:
    """Each image's crop, resized back to the image's size, mirrored where ``flips`` says.

    The crop is resampled bilinearly with antialiasing when it shrinks (as
    PIL's resize in the peers' loaders); the filter may read up to a pixel
    beyond the box's edges, where cropping first would repeat the edge.

    Args:
      images: uint8 ``[B, H, W, C]`` images or ``[B, F, H, W, C]`` clips (all
        frames of a clip share its crop and flip).
      boxes: int ``[B, 4]`` rows ``(top, left, crop_height, crop_width)``.
      flips: bool ``[B]``.

    Returns:
      An array of ``images``' shape and dtype.
    """
    height, width = images.shape[-3:-1]

    def one(image, box, flip):
        top, left, crop_height, crop_width = box.astype(jnp.float32)
        scale = jnp.stack([height / crop_height, width / crop_width])
        # Output pixel y samples input row (y + 0.5) / scale - 0.5 + top: the box stretched over the image.
        translation = -jnp.stack([top, left]) * scale
        spatial = (image.ndim - 3, image.ndim - 2)
        resized = jax.image.scale_and_translate(
            image.astype(jnp.float32), image.shape, spatial, scale, translation, method="linear", antialias=True
        )
        resized = jnp.where(flip, jnp.flip(resized, axis=-2), resized)
        return jnp.clip(jnp.round(resized), 0, 255).astype(image.dtype)

    return jax.vmap(one)(images, boxes, flips)


def apply(x: jax.Array, crop=None) -> jax.Array:
    """A batch through :func:`crop_and_flip` when ``crop`` is ``(boxes, flips)``, else as it is."""
    return x if crop is None else crop_and_flip(x, *crop)


def check_augmentable(config, inputs) -> None:
    """Raises ValueError unless every modality in ``config.data.augment`` holds uint8 images or clips."""
    for m in config.data.augment:
        array = inputs[m]
        if array.dtype != jnp.uint8 or array.ndim not in (4, 5):
            raise ValueError(
                f"data.augment names {m!r}, whose inputs are {array.dtype} {list(array.shape)}; expected uint8 "
                "images [N, H, W, C] or clips [N, F, H, W, C]."
            )


def phase_crops(config, inputs, phase: int, shape, modalities) -> dict:
    """The host's draws for a phase: augmented modality -> ``(boxes, flips)`` of ``shape`` (steps, batch).

    They come from the phase's own stream of ``batches.phase_rng``, so turning
    augmentation on changes neither the batch order nor the mixup draws.
    """
    rng = batches.phase_rng(config.seed, phase, stream=AUGMENT_STREAM)
    return {
        m: crops.crop_draws(rng, tuple(shape), *inputs[m].shape[-3:-1]) for m in modalities if m in config.data.augment
    }
