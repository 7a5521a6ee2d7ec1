"""Encoders by name: what ``config.model.encoder`` selects for each modality.

Every encoder maps one modality's inputs to the common feature size ``Dim``
(``config.model.dim``), so MIE's head, and its ``T`` matrices, have the same shapes
for every modality (the paper, end of section 3.2).
"""

from typing import Mapping, Sequence

import jax.numpy as jnp
from flax import nnx


from mie_jax.models import bert as bert_lib
from mie_jax.models import pretrained, taps
from mie_jax.models.classifier import UnimodalClassifier
from mie_jax.models.head import Head
from mie_jax.models.mlp import MLPEncoder
from mie_jax.models.i3d import I3D
from mie_jax.models.resnet import frames_resnet18, resnet18, resnet50

ENCODERS = ("mlp", "resnet18", "resnet50", "frames_resnet18", "i3d", "bert")


def scale_pixels(x):
    """uint8 pixels as float32 in [0, 1]; any other input unchanged.

    Datasets keep images and frames as uint8, a quarter of float32's memory on
    the host and the device; they become floats only batch by batch.
    """
    return x.astype(jnp.float32) / 255.0 if x.dtype == jnp.uint8 else x


# ImageNet's per-channel pixel statistics, which torchvision's Normalize in the peers' loaders uses.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ProjectedEncoder(nnx.Module):
    """A backbone's features, linearly projected to ``dim``; uint8 inputs are scaled to [0, 1].

    With ``imagenet_normalize``, the [0, 1] pixels are then standardised with
    ImageNet's per-channel mean and standard deviation (RGB inputs). With
    ``signed_pixels``, uint8 inputs are scaled to [-1, 1] instead, as
    pytorch-i3d's loaders scale the frames and flow its weights were trained on.
    """

    def __init__(
        self,
        backbone: nnx.Module,
        in_features: int,
        dim: int,
        *,
        rngs: nnx.Rngs,
        imagenet_normalize: bool = False,
        signed_pixels: bool = False,
    ):
        self.backbone = backbone
        self.projection = taps.Dense(in_features, dim, rngs=rngs)
        self.imagenet_normalize = imagenet_normalize
        self.signed_pixels = signed_pixels

    def __call__(self, x, *, train: bool = False):
        if self.signed_pixels and x.dtype == jnp.uint8:
            x = x.astype(jnp.float32) / 127.5 - 1.0
        else:
            x = scale_pixels(x)
        if self.imagenet_normalize:
            x = (x - jnp.array(IMAGENET_MEAN)) / jnp.array(IMAGENET_STD)
        return self.projection(self.backbone(x, train=train))


class TextEncoder(nnx.Module):
    """BERT's [CLS] feature (the paper's text setting), projected to ``dim``.

    Inputs are token ids ``[B, T]``; the attention mask is ``ids != pad_id``.
    """

    def __init__(self, encoder: bert_lib.BertEncoder, pad_id: int, dim: int, *, rngs: nnx.Rngs):
        self.encoder = encoder
        self.pad_id = pad_id
        self.projection = taps.Dense(encoder.config.hidden_size, dim, rngs=rngs)

    def __call__(self, ids, *, train: bool = False):
        del train  # No dropout: fine-tuning runs deterministic.
        hidden = self.encoder(ids, (ids != self.pad_id).astype(jnp.int32))
        return self.projection(bert_lib.cls_feature(hidden))


def encoder_names(config, modalities: Sequence[str]) -> Mapping[str, str]:
    """``config.model.encoder`` per modality: one name for every modality, or a ``{modality: name}`` mapping.

    Raises:
      ValueError: an unknown encoder name, or a modality without one.
    """
    spec = config.model.encoder
    names = {m: spec for m in modalities} if isinstance(spec, str) else dict(spec)
    missing = [m for m in modalities if m not in names]
    if missing:
        raise ValueError(f"model.encoder {spec!r} names no encoder for modalities {missing}.")
    for name in names.values():
        if name not in ENCODERS:
            raise ValueError(f"model.encoder must name encoders from {list(ENCODERS)}, got {name!r}.")
    return names


def build_encoders(config, shapes: Mapping[str, tuple], rngs: nnx.Rngs) -> dict:
    """``{modality: encoder}`` for the modalities of ``shapes`` (one example's shape each)."""
    names = encoder_names(config, list(shapes))
    return {m: build_encoder(config, names[m], shape, rngs, m) for m, shape in shapes.items()}


def build_unimodal_classifier(config, name: str, input_shape, num_classes: int, rngs: nnx.Rngs, modality: str = ""):
    """The encoder ``name`` for ``modality``'s examples of ``input_shape``, then MIE's head."""
    encoder = build_encoder(config, name, input_shape, rngs, modality)
    return UnimodalClassifier(encoder, Head(config.model.dim, num_classes, rngs=rngs))


def build_encoder(config, name: str, input_shape, rngs: nnx.Rngs, modality: str = "") -> nnx.Module:
    """The encoder ``name`` for ``modality``'s examples of ``input_shape``, with ``config.model.dim`` outputs.

    ``config`` is a :class:`~mie_jax.train.config.TrainConfig`; its ``model``
    section sizes the encoder. A modality in ``config.data.imagenet_normalize`` gets its RGB pixels
    standardised with ImageNet's statistics (:class:`ProjectedEncoder`). A
    modality that ``config.model.encoder_weights`` names gets its backbone's weights
    from that file (:mod:`mie_jax.models.pretrained`); the projection stays
    random. A pretrained I3D takes uint8 frames scaled to [-1, 1], the range of
    pytorch-i3d's training inputs.

    Raises:
      ValueError: inputs of a shape the encoder cannot take, ImageNet
        normalisation for an encoder or inputs without RGB pixels, pretrained
        weights for an encoder without a backbone, or weights that do not fit.
      FileNotFoundError, ImportError: as :func:`mie_jax.models.pretrained.read_state_dict`.
    """
    shape = tuple(input_shape)
    expected = {"mlp": 1, "resnet18": 3, "resnet50": 3, "frames_resnet18": 4, "i3d": 4, "bert": 1}[name]
    if len(shape) != expected:
        raise ValueError(f"encoder {name!r} expects examples with {expected} axes, got shape {shape}.")
    imagenet_normalize = modality in config.data.imagenet_normalize
    if imagenet_normalize and (name in ("mlp", "bert") or shape[-1] != 3):
        raise ValueError(
            f"data.imagenet_normalize names {modality!r}, whose encoder {name!r} takes examples of shape "
            f"{shape}; expected RGB images or clips (3 channels last) into an image encoder."
        )
    weights_path = config.model.encoder_weights.get(modality)
    if weights_path and name in ("mlp", "bert"):
        raise ValueError(
            f"model.encoder_weights names {modality!r}, whose encoder {name!r} takes none; expected a "
            f"ResNet or I3D modality{' (BERT loads from model.bert_dir)' if name == 'bert' else ''}."
        )
    if name == "mlp":
        return MLPEncoder(shape[0], config.model.dim, hidden=config.model.encoder_hidden, rngs=rngs)
    if name == "bert":
        model, tokenizer = bert_lib.load_bert(config.model.bert_dir or bert_lib.default_minilm_dir())
        return TextEncoder(model, tokenizer.token_to_id("[PAD]"), config.model.dim, rngs=rngs)
    if name == "i3d":  # Clips [T, H, W, C]: RGB 3, depth 1, optical flow 2 channels.
        backbone = I3D(shape[-1], width_multiplier=config.model.resnet_width / 64, rngs=rngs)
        if weights_path:
            pretrained.load_backbone(backbone, weights_path)
        return ProjectedEncoder(
            backbone,
            backbone.out_features,
            config.model.dim,
            rngs=rngs,
            imagenet_normalize=imagenet_normalize,
            signed_pixels=bool(weights_path),
        )
    make = {"resnet18": resnet18, "resnet50": resnet50, "frames_resnet18": frames_resnet18}[name]
    backbone = make(shape[-1], width=config.model.resnet_width, rngs=rngs)
    if weights_path:
        pretrained.load_backbone(backbone, weights_path)
    return ProjectedEncoder(
        backbone, backbone.out_features, config.model.dim, rngs=rngs, imagenet_normalize=imagenet_normalize
    )
