"""Torchvision-style ResNet encoders (NHWC) for the audio and visual modalities.

The audio-visual balanced-learning methods (OGM-GE, MLA, MIE) encode each
modality with a ResNet18 trained from scratch: a 1-channel log-spectrogram
``[B, F, T, 1]`` goes straight into :class:`ResNet` (``in_channels=1``), and a
clip of frames ``[B, T, H, W, C]`` goes through :class:`FrameResNet`, which
runs the ResNet on every frame and averages the features over time.

The architecture is torchvision's without its final ``fc`` layer, so the
encoders return a feature vector (``out_features`` wide); the projection to the
common dimension and the classification head are elsewhere. Convolutions have
no bias, the 3x3 max-pool pads with -inf, the Bottleneck strides in its 3x3
convolution (ResNet v1.5), and BatchNorm uses torch's defaults (eps 1e-5,
running-average momentum 0.1, i.e. flax ``momentum=0.9``), so the parameter
counts equal torchvision's: 11,176,512 for ResNet18 and 23,508,032 for ResNet50.
With torchvision's weights (:mod:`mie_jax.models.pretrained`) the models compute
torchvision's function, in training too: see :class:`TorchBatchNorm`.

BatchNorm makes the models stateful: ``train=True`` normalises with the batch
statistics and updates the running averages (``nnx.BatchStat`` variables);
``train=False`` uses the running averages and changes nothing. Used
functionally, the updated statistics come out of the merged module. Merge
``nnx.State`` arguments with ``copy=True`` inside a transformed function:
otherwise the module reuses the arguments' Variables, which belong to the
outer trace, and BatchNorm's update raises ``TraceContextError`` (plain dicts
from ``nnx.to_pure_dict`` always get fresh Variables and need no copy):

Example:
    >>> model = resnet18(1, width=8, rngs=nnx.Rngs(0))
    >>> graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    >>> def loss_fn(params, batch_stats, x):
    ...     m = nnx.merge(graphdef, params, batch_stats, copy=True)
    ...     y = m(x, train=True)
    ...     return jnp.mean(y**2), nnx.state(m, nnx.BatchStat)
    >>> (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
    ...     params, batch_stats, jnp.ones((2, 32, 32, 1)))
"""

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from mie_jax.models import taps

# torchvision's BatchNorm2d defaults: eps=1e-5, running = 0.9 * running + 0.1 * batch.
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9

BLOCKS = ("basic", "bottleneck")
STAGE_WIDTHS = (1, 2, 4, 8)  # Multiples of the base width: (64, 128, 256, 512) at width 64.
RESNET18_STAGES = (2, 2, 2, 2)
RESNET50_STAGES = (3, 4, 6, 3)

# torchvision's kaiming_normal_(mode="fan_out", nonlinearity="relu"): untruncated N(0, 2 / fan_out).
_conv_init = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")


def _conv(in_features, out_features, kernel, stride, *, rngs):
    """A bias-free convolution padded like torch's (``kernel // 2`` on every side)."""
    pad = kernel // 2
    return taps.Conv(
        in_features,
        out_features,
        kernel_size=(kernel, kernel),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        kernel_init=_conv_init,
        rngs=rngs,
    )


class TorchBatchNorm(nnx.BatchNorm):
    """BatchNorm over the last axis that keeps its running averages as torch's ``BatchNorm`` does.

    In training both normalise with the biased batch variance, but torch
    updates the running variance with the unbiased one (times ``n / (n - 1)``,
    ``n`` the values per channel: batch x spatial size), where flax's
    ``nnx.BatchNorm`` uses the biased one. The models here are ports of torch
    models (torchvision's ResNets, pytorch-i3d) whose peers train in torch,
    pretrained or from scratch, so every one of them uses torch's update: then
    after the same training steps the running statistics, hence evaluation,
    agree with the peers'. The batch statistics are computed in two passes
    (mean, then the mean squared deviation), as torch does, rather than with
    flax's one-pass ``E[x^2] - E[x]^2``, which loses precision in float32.
    (With a single value per channel, where torch refuses to train, the
    running variance takes the biased one.)

    The variables (``scale``, ``bias``, ``mean``, ``var``) are ``nnx.BatchNorm``'s.
    """

    def __call__(self, x, use_running_average: bool):
        """Normalises ``x`` ``[..., features]``.

        Args:
            x: The input, features on the last axis.
            use_running_average: Whether to normalise with the running averages
                (evaluation); otherwise with the batch statistics, updating the
                running averages (training).

        Returns:
            The normalised input, scaled and shifted per feature.
        """
        if use_running_average:
            mean, var = self.mean[...], self.var[...]
        else:
            axes = tuple(range(x.ndim - 1))
            mean = jnp.mean(x, axis=axes)
            var = jnp.mean(jnp.square(x - mean), axis=axes)
            count = x.size // x.shape[-1]
            unbiased = var * (count / max(count - 1, 1))
            self.mean[...] = jax.lax.stop_gradient(self.momentum * self.mean[...] + (1 - self.momentum) * mean)
            self.var[...] = jax.lax.stop_gradient(self.momentum * self.var[...] + (1 - self.momentum) * unbiased)
        return (x - mean) * (jax.lax.rsqrt(var + self.epsilon) * self.scale[...]) + self.bias[...]


def _bn(features, *, rngs):
    return TorchBatchNorm(features, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, rngs=rngs)


class _Shortcut(nnx.Module):
    """The projection shortcut: 1x1 convolution (with the block's stride) -> BatchNorm."""

    def __init__(self, in_features: int, out_features: int, stride: int, *, rngs: nnx.Rngs):
        self.conv = _conv(in_features, out_features, 1, stride, rngs=rngs)
        self.bn = _bn(out_features, rngs=rngs)

    def __call__(self, x, *, train: bool):
        return self.bn(self.conv(x), use_running_average=not train)


class BasicBlock(nnx.Module):
    """Two 3x3 convolutions with a residual connection (ResNet18/34).

    Attributes:
        expansion: Ratio of the block's output width to its ``width``.
    """

    expansion = 1

    def __init__(self, in_features: int, width: int, stride: int, *, rngs: nnx.Rngs):
        """Builds the block.

        Args:
            in_features: Channels of the input.
            width: Channels of both convolutions (and of the output).
            stride: Stride of the first convolution and of the shortcut.
            rngs: Random number generators for the initial weights.
        """
        out_features = width * self.expansion
        self.conv1 = _conv(in_features, width, 3, stride, rngs=rngs)
        self.bn1 = _bn(width, rngs=rngs)
        self.conv2 = _conv(width, out_features, 3, 1, rngs=rngs)
        self.bn2 = _bn(out_features, rngs=rngs)
        if stride != 1 or in_features != out_features:
            self.shortcut = _Shortcut(in_features, out_features, stride, rngs=rngs)
        else:
            self.shortcut = None

    def __call__(self, x, *, train: bool):
        y = jax.nn.relu(self.bn1(self.conv1(x), use_running_average=not train))
        y = self.bn2(self.conv2(y), use_running_average=not train)
        residual = x if self.shortcut is None else self.shortcut(x, train=train)
        return jax.nn.relu(y + residual)


class Bottleneck(nnx.Module):
    """1x1 -> 3x3 (strided) -> 1x1 convolutions with a residual connection (ResNet50/101/152).

    Attributes:
        expansion: Ratio of the block's output width to its ``width``.
    """

    expansion = 4

    def __init__(self, in_features: int, width: int, stride: int, *, rngs: nnx.Rngs):
        """Builds the block.

        Args:
            in_features: Channels of the input.
            width: Channels of the two inner convolutions; the output has ``4 * width``.
            stride: Stride of the 3x3 convolution and of the shortcut.
            rngs: Random number generators for the initial weights.
        """
        out_features = width * self.expansion
        self.conv1 = _conv(in_features, width, 1, 1, rngs=rngs)
        self.bn1 = _bn(width, rngs=rngs)
        self.conv2 = _conv(width, width, 3, stride, rngs=rngs)
        self.bn2 = _bn(width, rngs=rngs)
        self.conv3 = _conv(width, out_features, 1, 1, rngs=rngs)
        self.bn3 = _bn(out_features, rngs=rngs)
        if stride != 1 or in_features != out_features:
            self.shortcut = _Shortcut(in_features, out_features, stride, rngs=rngs)
        else:
            self.shortcut = None

    def __call__(self, x, *, train: bool):
        y = jax.nn.relu(self.bn1(self.conv1(x), use_running_average=not train))
        y = jax.nn.relu(self.bn2(self.conv2(y), use_running_average=not train))
        y = self.bn3(self.conv3(y), use_running_average=not train)
        residual = x if self.shortcut is None else self.shortcut(x, train=train)
        return jax.nn.relu(y + residual)


class ResNet(nnx.Module):
    """A torchvision ResNet without its classifier: images ``[B, H, W, C]`` -> features ``[B, out_features]``.

    Stem: 7x7 convolution (stride 2) -> BatchNorm -> ReLU -> 3x3 max-pool (stride 2);
    then four stages of ``stage_sizes`` blocks with widths ``(1, 2, 4, 8) * width``
    (the first block of stages 2-4 has stride 2, and a 1x1 projection shortcut
    wherever the shape changes); then a global average pool.

    Attributes:
        block_type: ``"basic"`` or ``"bottleneck"``.
        stage_sizes: Number of blocks in each of the four stages.
        out_features: Width of the feature vector: ``8 * width * expansion``
            (512 for ResNet18, 2048 for ResNet50 at ``width=64``).
    """

    def __init__(
        self,
        block: str,
        stage_sizes: Sequence[int],
        in_channels: int,
        *,
        width: int = 64,
        rngs: nnx.Rngs,
    ):
        """Builds the network.

        Args:
            block: ``"basic"`` (BasicBlock) or ``"bottleneck"`` (Bottleneck, expansion 4).
            stage_sizes: Number of blocks in each of the four stages, e.g.
                ``(2, 2, 2, 2)`` for ResNet18 or ``(3, 4, 6, 3)`` for ResNet50.
            in_channels: Channels of the input (1 for spectrograms, 3 for RGB frames).
            width: Base width (torchvision's 64); tests use a few channels.
            rngs: Random number generators for the initial weights.

        Raises:
            ValueError: If ``block`` is unknown or there are not four stages.
        """
        if block not in BLOCKS:
            raise ValueError(f"block must be one of {BLOCKS}, got {block!r}.")
        if len(stage_sizes) != len(STAGE_WIDTHS):
            raise ValueError(f"stage_sizes must have {len(STAGE_WIDTHS)} entries, got {tuple(stage_sizes)}.")
        block_cls = BasicBlock if block == "basic" else Bottleneck
        self.block_type = block
        self.stage_sizes = tuple(stage_sizes)
        self.conv = _conv(in_channels, width, 7, 2, rngs=rngs)
        self.bn = _bn(width, rngs=rngs)
        blocks = []
        features = width
        for stage, (num_blocks, multiple) in enumerate(zip(stage_sizes, STAGE_WIDTHS)):
            for i in range(num_blocks):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(block_cls(features, width * multiple, stride, rngs=rngs))
                features = width * multiple * block_cls.expansion
        self.blocks = nnx.List(blocks)
        self.out_features = features

    def __call__(self, x, *, train: bool):
        """Features of a batch of images.

        Args:
            x: Images ``[B, H, W, in_channels]``.
            train: Whether BatchNorm uses (and updates the running averages with)
                the batch statistics; if False it uses the running averages.

        Returns:
            Features ``[B, out_features]``.
        """
        x = jax.nn.relu(self.bn(self.conv(x), use_running_average=not train))
        x = nnx.max_pool(x, window_shape=(3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for block in self.blocks:
            x = block(x, train=train)
        return jnp.mean(x, axis=(1, 2))


def resnet18(in_channels: int, *, width: int = 64, rngs: nnx.Rngs) -> ResNet:
    """ResNet18 (BasicBlock, ``[2, 2, 2, 2]``); ``out_features = 8 * width`` (512 at full width)."""
    return ResNet("basic", RESNET18_STAGES, in_channels, width=width, rngs=rngs)


def resnet50(in_channels: int, *, width: int = 64, rngs: nnx.Rngs) -> ResNet:
    """ResNet50 (Bottleneck, ``[3, 4, 6, 3]``); ``out_features = 32 * width`` (2048 at full width)."""
    return ResNet("bottleneck", RESNET50_STAGES, in_channels, width=width, rngs=rngs)


class FrameResNet(ResNet):
    """A ResNet over video frames: clips ``[B, T, H, W, C]`` -> features ``[B, out_features]``.

    Every one of the ``B * T`` frames goes through the same ResNet (in one
    batch, so in training BatchNorm's statistics are over all the frames), and
    the frame features are averaged over ``T``. This is the visual encoder of
    OGM-GE and MLA, which fold time into the batch and average-pool the feature
    maps over time and space together; since every frame's map has the same
    size, that equals averaging the per-frame (spatially pooled) features.

    It is a :class:`ResNet` (built with the same arguments, holding the same
    layers under the same names), so a spectrogram ResNet and a frame ResNet
    have counterpart layers, and pretrained ResNet weights load into it alike.
    """

    def __call__(self, x, *, train: bool):
        """Features of a batch of clips.

        Args:
            x: Frames ``[B, T, H, W, C]``.
            train: As for :class:`ResNet`.

        Returns:
            Features ``[B, out_features]``, the mean over the ``T`` frames.
        """
        batch, frames = x.shape[:2]
        features = super().__call__(x.reshape(batch * frames, *x.shape[2:]), train=train)
        return jnp.mean(features.reshape(batch, frames, -1), axis=1)


def frames_resnet18(in_channels: int, *, width: int = 64, rngs: nnx.Rngs) -> FrameResNet:
    """ResNet18 over every frame of a clip, features averaged over time (:class:`FrameResNet`)."""
    return FrameResNet("basic", RESNET18_STAGES, in_channels, width=width, rngs=rngs)
