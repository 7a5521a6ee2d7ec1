"""Pretrained backbone weights from local files: torchvision's ResNets and pytorch-i3d's I3D.

``config.model.encoder_weights`` names a file per modality, e.g.
``--set model.encoder_weights=image=/w/resnet50.safetensors`` or
``--set model.encoder_weights=rgb=/w/rgb_imagenet.safetensors,flow=/w/flow_imagenet.safetensors``;
:func:`mie_jax.models.encoders.build_encoder` loads it into that modality's
backbone with :func:`load_backbone`. Only the backbone is pretrained: the
projection to ``dim`` and the head start random, as they do in the peers.

Files:
    ``.safetensors``: read with safetensors' NumPy loader, no torch needed.
    ``.pth`` / ``.pt``: a torch state dict, read with ``torch.load(weights_only=True)``
    when torch is installed; without torch the error says to convert the file
    on a machine that has it (``python -m mie_jax.models.convert``).

Layouts (the checkpoint's names; a ``module.`` prefix, from ``DataParallel``, is dropped):
    ResNet18 / ResNet50: torchvision's (``conv1.weight``, ``bn1.running_var``,
    ``layer2.0.downsample.0.weight``, ...), which timm's ``resnet18.tv_in1k`` and
    ``resnet50.tv_in1k`` ship as ``model.safetensors``. The ImageNet classifier
    ``fc.*`` is dropped.
    I3D: pytorch-i3d's ``InceptionI3d`` (``Conv3d_1a_7x7.conv3d.weight``,
    ``Mixed_4b.b1b.bn.running_mean``, ...), the layout of its ``rgb_imagenet.pt``
    and ``flow_imagenet.pt``. The Kinetics classifier ``logits.*`` is dropped.
    Both: torch's ``num_batches_tracked`` counters are dropped (they matter only
    to a BatchNorm with ``momentum=None``, which neither model has).

One-channel stems from RGB weights (the checkpoint's first convolution has 3
input channels, the model's 1):
    Depth I3D: the mean of the three input filters, the cross-modality
    initialisation of two-stream and I3D video models (TSN, Wang et al. 2016:
    average the RGB filters over the channels), which the I3D gesture
    recognisers that NVGesture's peers build on use for depth.
    Spectrogram ResNet: the sum of the three input filters. A gray image copied
    into the three channels gives the RGB stem exactly this response, so the
    pretrained first BatchNorm's running statistics stay on the scale they were
    estimated at (timm's ``adapt_input_conv`` sums for one channel too); the
    mean would shrink the stem's outputs threefold against those statistics.

A weight that does not fit (missing, unexpected, or of the wrong shape) raises
one ``ValueError`` naming the weight, the file and both shapes, before any
variable is written: a model is loaded whole or not at all.
"""

from pathlib import Path
from typing import Callable, Mapping, Sequence

import jax.numpy as jnp
import numpy as np
from flax import nnx

from mie_jax.models.i3d import I3D, STAGES
from mie_jax.models.resnet import ResNet

SAFETENSORS_SUFFIX = ".safetensors"
TORCH_SUFFIXES = (".pth", ".pt")
_DATA_PARALLEL_PREFIX = "module."
_BATCH_NORM_NAMES = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}


def read_state_dict(path) -> dict[str, np.ndarray]:
    """The arrays of a safetensors file or of a torch ``.pth`` / ``.pt`` state dict, by name.

    Args:
        path: The file; its suffix says the format.

    Returns:
        Every array in the file (a torch checkpoint's ``state_dict`` entry when
        it holds one), as NumPy arrays.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: An unknown suffix, or a torch file that holds no state dict.
        ImportError: A torch file and no torch installed (the message says how to convert it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist.")
    if path.suffix == SAFETENSORS_SUFFIX:
        from safetensors.numpy import load_file

        return load_file(str(path))
    if path.suffix not in TORCH_SUFFIXES:
        raise ValueError(f"weights file {path}: expected a {SAFETENSORS_SUFFIX} or {'/'.join(TORCH_SUFFIXES)} file.")
    try:
        import torch
    except ImportError:
        raise ImportError(
            f"reading {path} needs torch, which is not installed: on a machine with torch run "
            f"python -m mie_jax.models.convert {path} {path.with_suffix(SAFETENSORS_SUFFIX)} "
            "and pass the .safetensors file."
        ) from None
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("state_dict"), Mapping):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, Mapping) or not all(torch.is_tensor(v) for v in checkpoint.values()):
        raise ValueError(
            f"weights file {path}: expected a state dict (names -> tensors), got {type(checkpoint).__name__}."
        )
    # float() for bfloat16, which NumPy lacks; the loaders cast to the model's dtype anyway.
    return {name: (t.float() if t.is_floating_point() else t).numpy() for name, t in checkpoint.items()}


def _torch_kernel_shape(shape) -> tuple:
    """torch's ``[out, in, *window]`` shape of a flax ``[*window, in, out]`` kernel."""
    return (shape[-1], shape[-2], *shape[:-2])


def _from_torch_kernel(array: np.ndarray) -> np.ndarray:
    """A torch ``[out, in, *window]`` kernel as flax's ``[*window, in, out]``."""
    return np.transpose(array, (*range(2, array.ndim), 1, 0))


def _leaf_name(leaf: str) -> str:
    return "weight" if leaf == "kernel" else _BATCH_NORM_NAMES[leaf]


def _resnet_name(model: ResNet) -> Callable[[tuple], str]:
    """torchvision's name of a variable of ``model``, from its path."""
    stage_and_index = [(stage, i) for stage, size in enumerate(model.stage_sizes) for i in range(size)]
    stem = {"conv": "conv1", "bn": "bn1"}
    shortcut = {"conv": "downsample.0", "bn": "downsample.1"}

    def name(path):
        *modules, leaf = path
        if modules[0] == "blocks":
            stage, index = stage_and_index[modules[1]]
            layer = modules[2] if modules[2] != "shortcut" else shortcut[modules[3]]
            return f"layer{stage + 1}.{index}.{layer}.{_leaf_name(leaf)}"
        return f"{stem[modules[0]]}.{_leaf_name(leaf)}"

    return name


def _i3d_name(path) -> str:
    """pytorch-i3d's name of a variable of :class:`I3D`, from its path."""
    *modules, unit_layer, leaf = path  # unit_layer: Unit3D's "conv" or "bn".
    layer = "conv3d" if unit_layer == "conv" else "bn"
    stems = {"conv_1a": "Conv3d_1a_7x7", "conv_2b": "Conv3d_2b_1x1", "conv_2c": "Conv3d_2c_3x3"}
    if modules[0] == "stages":
        _, stage, index, branch = modules
        # pytorch-i3d's b3a is the branch's max-pool, which has no weights.
        unit = f"{STAGES[stage][index]}.{'b3b' if branch == 'branch_3' else branch.replace('branch_', 'b')}"
    else:
        unit = stems[modules[0]]
    return f"{unit}.{layer}.{_leaf_name(leaf)}"


def _fit_one_channel_stem(array: np.ndarray, expected: tuple, reduce) -> np.ndarray:
    """An RGB stem kernel (torch layout) reduced over its input channels, when the model's stem takes one."""
    if (
        expected[1] == 1
        and array.ndim == len(expected)
        and array.shape[1] == 3
        and array.shape[:1] + array.shape[2:] == expected[:1] + expected[2:]
    ):
        return reduce(array, axis=1, keepdims=True)
    return array


def _load(
    model: nnx.Module,
    weights: Mapping[str, np.ndarray],
    source,
    *,
    name_of,
    layout: str,
    dropped_prefixes: Sequence[str],
    stem: str,
    reduce_stem,
) -> None:
    """Checks every weight of ``weights`` against ``model``'s variables, then writes them all."""
    weights = {k.removeprefix(_DATA_PARALLEL_PREFIX): v for k, v in weights.items()}
    assignments = []
    for path, variable in nnx.iter_graph(model):
        if not isinstance(variable, (nnx.Param, nnx.BatchStat)):
            continue
        name = name_of(path)
        target_shape = tuple(variable.get_value().shape)
        is_kernel = path[-1] == "kernel"
        expected = _torch_kernel_shape(target_shape) if is_kernel else target_shape
        if name not in weights:
            raise ValueError(f"{source}: weight {name} (expected shape {expected}) is missing; expected {layout}.")
        array = np.asarray(weights[name])
        if name == stem:
            array = _fit_one_channel_stem(array, expected, reduce_stem)
        if tuple(array.shape) != expected:
            raise ValueError(f"{source}: weight {name} has shape {tuple(array.shape)}, expected {expected} ({layout}).")
        assignments.append((variable, _from_torch_kernel(array) if is_kernel else array, name))
    used = {name for _, _, name in assignments}
    for name, array in weights.items():
        dropped = name.endswith("num_batches_tracked") or name.startswith(tuple(dropped_prefixes))
        if name not in used and not dropped:
            raise ValueError(
                f"{source}: unexpected weight {name} of shape {tuple(np.shape(array))}; "
                f"{layout} has no such weight (expected shape: none)."
            )
    for variable, array, _ in assignments:
        variable.set_value(jnp.asarray(array, dtype=variable.get_value().dtype))


def load_resnet(model: ResNet, weights: Mapping[str, np.ndarray], source="weights") -> None:
    """Writes torchvision-named weights into a :class:`ResNet`, in place.

    A 1-channel model (spectrograms) takes RGB weights' stem as the sum of its
    three input filters (see the module docstring for why).

    Args:
        model: The ResNet, of torchvision's width (64) for ImageNet weights.
        weights: Arrays by torchvision's names (``fc.*`` and
            ``num_batches_tracked`` are ignored).
        source: What to name in errors (the file).

    Raises:
        ValueError: A weight missing, unexpected or of the wrong shape; nothing is written then.
    """
    layout = f"torchvision's ResNet layout ({model.block_type} blocks, stages {model.stage_sizes})"
    _load(
        model,
        weights,
        source,
        name_of=_resnet_name(model),
        layout=layout,
        dropped_prefixes=("fc.",),
        stem="conv1.weight",
        reduce_stem=np.sum,
    )


def load_i3d(model: I3D, weights: Mapping[str, np.ndarray], source="weights") -> None:
    """Writes pytorch-i3d-named weights into an :class:`I3D`, in place.

    A 1-channel model (depth) takes RGB weights' stem as the mean of its three
    input filters, as that ecosystem initialises depth (see the module docstring).

    Args:
        model: The I3D at full width (``width_multiplier=1``) for pytorch-i3d's weights.
        weights: Arrays by pytorch-i3d's names (``logits.*`` and
            ``num_batches_tracked`` are ignored).
        source: What to name in errors (the file).

    Raises:
        ValueError: A weight missing, unexpected or of the wrong shape; nothing is written then.
    """
    _load(
        model,
        weights,
        source,
        name_of=_i3d_name,
        layout="pytorch-i3d's InceptionI3d layout",
        dropped_prefixes=("logits.",),
        stem="Conv3d_1a_7x7.conv3d.weight",
        reduce_stem=np.mean,
    )


def load_backbone(backbone: nnx.Module, path) -> None:
    """Loads the weights file ``path`` into a ResNet (a FrameResNet is one) or I3D backbone, in place.

    Args:
        backbone: The backbone an encoder wraps.
        path: A ``.safetensors`` file, or a torch ``.pth`` / ``.pt`` state dict (needs torch).

    Raises:
        TypeError: A backbone that takes no pretrained weights.
        FileNotFoundError, ImportError, ValueError: As :func:`read_state_dict`,
            :func:`load_resnet` and :func:`load_i3d` raise them.
    """
    if isinstance(backbone, ResNet):
        load_resnet(backbone, read_state_dict(path), path)
    elif isinstance(backbone, I3D):
        load_i3d(backbone, read_state_dict(path), path)
    else:
        raise TypeError(
            f"pretrained weights ({path}) load into a ResNet or I3D backbone, got {type(backbone).__name__}."
        )
