"""``python -m mie_jax.data.prepare``: prepares a paper dataset without training.

Decoding a dataset's wavs, images and videos takes hours on its first use;
this does it once, on any CPU machine, into the directory that training reads
(``--set prepared_dir=...``, by default ``<data-dir>/prepared``), so that the
training machine finds it prepared::

  python -m mie_jax.data.prepare --dataset cremad --data-dir data/CREMAD

It prints one ``<split>: <N> examples`` line per split written, then what
preparing dropped or computed (``<split>: <message>``) and the choices it
recorded (``setting <key>: <value>``). Training finds this copy when asked
for the same sizes (``--set image_size=N num_frames=N`` for ``--image-size N
--num-frames N``; both default to the dataset's).
"""

import argparse
import contextlib
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from mie_jax.data import builders


def default_prepared_dir(data_dir) -> Path:
    """Where a dataset read from ``data_dir`` is prepared unless told otherwise, as training does."""
    return Path(data_dir) / "prepared"


def report(builder: "builders.PaperBuilder") -> List[str]:
    """The lines printed for a prepared dataset: examples per split written, preparation notes, settings."""
    # The splits written, not SPLITS: a builder may write an optional one (Kinetics-Sounds' validation).
    lines = [f"{split}: {count} examples" for split, count in builders.split_counts(builder).items()]
    lines += builders.preparation_notes(builder)
    lines += [f"setting {key}: {value}" for key, value in builders.preparation_settings(builder).items()]
    return lines


def _size(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Prepares the dataset named on the command line and prints what was written.

    Args:
      argv: the arguments after the program name (``None``: ``sys.argv[1:]``).

    Returns:
      0 when the dataset is prepared (or already was), 2 when its files are
      missing or malformed; the one-line reason is printed to stderr then.

    Raises:
      SystemExit: from argparse, for ``--help`` (0) and unknown or malformed arguments (2).
    """
    parser = argparse.ArgumentParser(
        prog="python -m mie_jax.data.prepare",
        description="Prepares a paper dataset from its published files, as training would on first use.",
    )
    parser.add_argument("--dataset", required=True, choices=builders.PAPER_DATASETS)
    parser.add_argument("--data-dir", required=True, help="the directory of the dataset's published files")
    parser.add_argument("--prepared-dir", help="where to write the prepared copy (default: DATA_DIR/prepared)")
    parser.add_argument(
        "--image-size",
        type=_size,
        default=0,
        help="decoded image and frame size (default 0: the dataset's, 224; 112 for NVGesture)",
    )
    parser.add_argument(
        "--num-frames", type=_size, default=0, help="frames kept per video clip (default 0: the dataset's)"
    )
    args = parser.parse_args(argv)
    prepared_dir = args.prepared_dir or default_prepared_dir(args.data_dir)
    try:
        # TFDS prints its progress to stdout: to stderr with its log, so that stdout is the report alone.
        with contextlib.redirect_stdout(sys.stderr):
            builder = builders.prepare(
                builders.builder_class(args.dataset),
                args.data_dir,
                prepared_dir,
                image_size=args.image_size,
                num_frames=args.num_frames,
            )
    # A layout error names the file (and line); an OSError, e.g. an unwritable --prepared-dir, names the path.
    except (builders.DataLayoutError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print("\n".join(report(builder)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
