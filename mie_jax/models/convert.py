"""Converts a torch ``.pth`` / ``.pt`` state dict into a safetensors file, for machines without torch.

Run it where torch is installed; the ``.safetensors`` file then loads anywhere
through ``--set model.encoder_weights=MODALITY=FILE`` (:mod:`mie_jax.models.pretrained`):

  python -m mie_jax.models.convert rgb_imagenet.pt                 # writes rgb_imagenet.safetensors
  python -m mie_jax.models.convert resnet50-0676ba61.pth /w/resnet50.safetensors

The names and arrays are kept as they are (a checkpoint's ``state_dict``
entry is taken when it holds one); the loaders map the names.
"""

import argparse
import sys
from pathlib import Path

from mie_jax.models import pretrained


def convert(source, destination) -> int:
    """Writes the state dict of the torch file ``source`` to the safetensors file ``destination``.

    Args:
        source: A ``.pth`` / ``.pt`` torch state dict.
        destination: The ``.safetensors`` file to write.

    Returns:
        The number of arrays written.

    Raises:
        ImportError: torch is not installed.
        FileNotFoundError, ValueError: As :func:`mie_jax.models.pretrained.read_state_dict`
            raises them, or ``destination`` does not end in ``.safetensors``.
    """
    from safetensors.numpy import save_file

    destination = Path(destination)
    if destination.suffix != pretrained.SAFETENSORS_SUFFIX:
        raise ValueError(f"output {destination}: expected a {pretrained.SAFETENSORS_SUFFIX} file.")
    if Path(source).suffix not in pretrained.TORCH_SUFFIXES:
        raise ValueError(f"input {source}: expected a {'/'.join(pretrained.TORCH_SUFFIXES)} torch file.")
    try:
        import torch  # noqa: F401 (only to say plainly that converting needs it)
    except ImportError:
        raise ImportError(
            "converting needs torch, which is not installed: run this where torch is "
            "(pip install torch), then copy the .safetensors file."
        ) from None
    arrays = pretrained.read_state_dict(source)
    # safetensors refuses non-contiguous arrays, and views of one buffer.
    save_file({name: array.copy(order="C") for name, array in arrays.items()}, str(destination))
    return len(arrays)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mie_jax.models.convert", description=__doc__.splitlines()[0])
    parser.add_argument("source", help="a torch .pth / .pt state dict")
    parser.add_argument("destination", nargs="?", help="the .safetensors file (default: SOURCE with that suffix)")
    args = parser.parse_args(argv)
    destination = args.destination or str(Path(args.source).with_suffix(pretrained.SAFETENSORS_SUFFIX))
    try:
        count = convert(args.source, destination)
    except (ImportError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {count} arrays to {destination}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
