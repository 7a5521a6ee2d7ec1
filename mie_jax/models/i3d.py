"""The Inflated 3D ConvNet (I3D) encoder (channels-last) for video modalities.

I3D (Carreira & Zisserman, "Quo Vadis, Action Recognition?", CVPR 2017) is
Inception-v1 with every 2D kernel inflated to 3D. It is the per-modality
encoder of the NVGesture experiments, with a clip ``[B, T, H, W, C]`` of RGB
(``in_channels=3``), depth (1) or optical flow (2) frames going in.

The layout follows the common PyTorch port (piergiaj/pytorch-i3d) without its
classifier (the final average pool, dropout and ``logits`` convolution):

=============  =====================================================
Conv3d_1a      7x7x7 convolution, stride 2 -> 64
MaxPool3d_2a   1x3x3, stride (1, 2, 2)
Conv3d_2b      1x1x1 convolution -> 64
Conv3d_2c      3x3x3 convolution -> 192
MaxPool3d_3a   1x3x3, stride (1, 2, 2)
Mixed_3b, 3c   Inception modules -> 256, 480
MaxPool3d_4a   3x3x3, stride 2
Mixed_4b..4f   Inception modules -> 512, 512, 512, 528, 832
MaxPool3d_5a   2x2x2, stride 2
Mixed_5b, 5c   Inception modules -> 832, 1024
(pool)         global average over (T, H, W) -> ``[B, 1024]``
=============  =====================================================

Each Inception module concatenates four branches on the channels: 1x1x1;
1x1x1 -> 3x3x3; 1x1x1 -> 3x3x3; 3x3x3 max-pool (stride 1) -> 1x1x1, with the
widths of :data:`MIXED_CHANNELS`. Every convolution is bias-free and followed
by BatchNorm and ReLU (pytorch-i3d's ``Unit3D``); BatchNorm is pytorch-i3d's
``BatchNorm3d(eps=0.001, momentum=0.01)``, i.e. flax ``momentum=0.99``, with a
scale and a bias per channel, and torch's update of the running variance
(unbiased: :class:`mie_jax.models.resnet.TorchBatchNorm`). At full width the encoder has 12,287,264
parameters for RGB input (conv kernels and BatchNorm scales and biases;
pytorch-i3d's 400-class ``logits`` layer would add 410,000; the original
TensorFlow model has no BatchNorm scale, hence fewer), 12,243,360 for depth
and 12,265,312 for optical flow.

Padding: every convolution and max-pool uses TensorFlow's ``'SAME'`` padding,
as the original model does and as pytorch-i3d reproduces with its dynamic
padding: the output size is ``ceil(size / stride)``, and the total padding,
``max((out - 1) * stride + kernel - size, 0)``, is split with the extra unit
at the end. Max-pools pad with ``-inf`` (pytorch-i3d pads with zeros, which
is the same since every pooled tensor comes after a ReLU). A 224x224 clip of
64 frames thus gives the reference's ``8 x 7 x 7`` map before the pool; the
global average pool here replaces the reference's fixed ``2 x 7 x 7``
average pool, so any clip size works.

Convolution kernels are initialised like torch's ``Conv3d`` default (which
pytorch-i3d keeps): uniform on ``[-1/sqrt(fan_in), 1/sqrt(fan_in)]``.
pytorch-i3d's ImageNet-inflated weights (``rgb_imagenet.pt``, ``flow_imagenet.pt``)
load with :func:`mie_jax.models.pretrained.load_i3d`; they expect pixels and
flow scaled to [-1, 1], as that repository's loaders scale them.

Like :mod:`mie_jax.models.resnet`, the model is stateful through BatchNorm:
``train=True`` normalises with the batch statistics and updates the running
averages; ``train=False`` uses them and changes nothing. Use it functionally
with :func:`mie_jax.train.steps.split_model` and
:func:`mie_jax.train.steps.apply_model`.

Example:
    >>> model = I3D(3, width_multiplier=1 / 16, rngs=nnx.Rngs(0))
    >>> features = model(jnp.ones((2, 8, 32, 32, 3)), train=False)  # [2, model.out_features]
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from mie_jax.models import taps

from mie_jax.models.resnet import TorchBatchNorm

# pytorch-i3d's BatchNorm3d(eps=0.001, momentum=0.01): running = 0.99 * running + 0.01 * batch.
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99

STEM_CHANNELS = (64, 64, 192)  # Conv3d_1a_7x7, Conv3d_2b_1x1, Conv3d_2c_3x3.

# Per Inception module: (1x1, 3x3 reduce, 3x3, 3x3 reduce, 3x3, pool projection); the output
# width is the sum of the 1st, 3rd, 5th and 6th entries.
MIXED_CHANNELS = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
# The Inception modules after each of the three max-pools (MaxPool3d_3a, 4a, 5a).
STAGES = (
    ("Mixed_3b", "Mixed_3c"),
    ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"),
    ("Mixed_5b", "Mixed_5c"),
)
# (window, strides) of those max-pools over (T, H, W).
STAGE_POOLS = (((1, 3, 3), (1, 2, 2)), ((3, 3, 3), (2, 2, 2)), ((2, 2, 2), (2, 2, 2)))

# torch's Conv3d default, kaiming_uniform_(a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
_conv_init = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def _scale(channels: int, width_multiplier: float) -> int:
    """``channels * width_multiplier`` rounded to the nearest integer, at least 1."""
    return max(1, int(math.floor(channels * width_multiplier + 0.5)))


def _max_pool(x, window, strides):
    """A TF-'SAME' max-pool over (T, H, W) of ``[B, T, H, W, C]``, padding with -inf."""
    return nnx.max_pool(x, window_shape=window, strides=strides, padding="SAME")


class Unit3D(nnx.Module):
    """A bias-free 3D convolution ('SAME' padding) -> BatchNorm -> ReLU (pytorch-i3d's ``Unit3D``)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel: tuple[int, int, int] = (1, 1, 1),
        strides: tuple[int, int, int] = (1, 1, 1),
        *,
        rngs: nnx.Rngs,
    ):
        """Builds the unit.

        Args:
            in_features: Channels of the input.
            out_features: Channels of the output.
            kernel: Kernel size over (T, H, W).
            strides: Strides over (T, H, W).
            rngs: Random number generators for the initial weights.
        """
        self.conv = taps.Conv(
            in_features,
            out_features,
            kernel_size=tuple(kernel),
            strides=tuple(strides),
            padding="SAME",
            use_bias=False,
            kernel_init=_conv_init,
            rngs=rngs,
        )
        self.bn = TorchBatchNorm(out_features, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, rngs=rngs)

    def __call__(self, x, *, train: bool):
        return jax.nn.relu(self.bn(self.conv(x), use_running_average=not train))


class InceptionModule(nnx.Module):
    """I3D's Inception module: four branches concatenated on the channels.

    Branches: 1x1x1; 1x1x1 -> 3x3x3; 1x1x1 -> 3x3x3; 3x3x3 max-pool
    (stride 1, 'SAME') -> 1x1x1.

    Attributes:
        out_features: Channels of the output, the sum of the four branches'.
    """

    def __init__(self, in_features: int, channels, *, rngs: nnx.Rngs):
        """Builds the module.

        Args:
            in_features: Channels of the input.
            channels: The six widths ``(1x1, 3x3 reduce, 3x3, 3x3 reduce, 3x3,
                pool projection)``, as in :data:`MIXED_CHANNELS`.
            rngs: Random number generators for the initial weights.
        """
        c0, c1a, c1b, c2a, c2b, c3 = channels
        self.branch_0 = Unit3D(in_features, c0, rngs=rngs)
        self.branch_1a = Unit3D(in_features, c1a, rngs=rngs)
        self.branch_1b = Unit3D(c1a, c1b, (3, 3, 3), rngs=rngs)
        self.branch_2a = Unit3D(in_features, c2a, rngs=rngs)
        self.branch_2b = Unit3D(c2a, c2b, (3, 3, 3), rngs=rngs)
        self.branch_3 = Unit3D(in_features, c3, rngs=rngs)
        self.out_features = c0 + c1b + c2b + c3

    def __call__(self, x, *, train: bool):
        return jnp.concatenate(
            [
                self.branch_0(x, train=train),
                self.branch_1b(self.branch_1a(x, train=train), train=train),
                self.branch_2b(self.branch_2a(x, train=train), train=train),
                self.branch_3(_max_pool(x, (3, 3, 3), (1, 1, 1)), train=train),
            ],
            axis=-1,
        )


class I3D(nnx.Module):
    """I3D without its classifier: clips ``[B, T, H, W, C]`` -> features ``[B, out_features]``.

    See the module docstring for the layers and the padding.

    Attributes:
        out_features: Width of the feature vector (1024 at full width).
    """

    def __init__(self, in_channels: int, *, width_multiplier: float = 1.0, rngs: nnx.Rngs):
        """Builds the network.

        Args:
            in_channels: Channels of the input (3 for RGB, 1 for depth, 2 for optical flow).
            width_multiplier: Factor applied to every channel count (each rounded
                to the nearest integer, at least 1); 1.0 is the reference I3D,
                tests use small factors.
            rngs: Random number generators for the initial weights.

        Raises:
            ValueError: If ``width_multiplier`` is not positive.
        """
        if not width_multiplier > 0:
            raise ValueError(f"width_multiplier must be positive, got {width_multiplier}.")
        c1a, c2b, c2c = (_scale(c, width_multiplier) for c in STEM_CHANNELS)
        self.conv_1a = Unit3D(in_channels, c1a, (7, 7, 7), (2, 2, 2), rngs=rngs)
        self.conv_2b = Unit3D(c1a, c2b, rngs=rngs)
        self.conv_2c = Unit3D(c2b, c2c, (3, 3, 3), rngs=rngs)
        features = c2c
        stages = []
        for names in STAGES:
            modules = []
            for name in names:
                channels = tuple(_scale(c, width_multiplier) for c in MIXED_CHANNELS[name])
                modules.append(InceptionModule(features, channels, rngs=rngs))
                features = modules[-1].out_features
            stages.append(nnx.List(modules))
        self.stages = nnx.List(stages)
        self.out_features = features

    def __call__(self, x, *, train: bool):
        """Features of a batch of clips.

        Args:
            x: Clips ``[B, T, H, W, in_channels]``.
            train: Whether BatchNorm uses (and updates the running averages with)
                the batch statistics; if False it uses the running averages.

        Returns:
            Features ``[B, out_features]``, the mean over time and space.
        """
        x = self.conv_1a(x, train=train)
        x = _max_pool(x, (1, 3, 3), (1, 2, 2))  # MaxPool3d_2a.
        x = self.conv_2c(self.conv_2b(x, train=train), train=train)
        for (window, strides), stage in zip(STAGE_POOLS, self.stages):
            x = _max_pool(x, window, strides)
            for module in stage:
                x = module(x, train=train)
        return jnp.mean(x, axis=(1, 2, 3))
