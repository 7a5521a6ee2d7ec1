"""What the audio-visual datasets (CREMA-D, Kinetics-Sounds) share: lists of clips, a wav and frames per clip.

Each split is a text file listing one clip per row; a clip is a wav file and
a folder of frames extracted from its video. A builder declares where these
live, how a row names its clip and label, its classes and its spectrogram
settings; :class:`AudioVisualBuilder` reads, validates and decodes them.
"""

import csv
import dataclasses
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow_datasets as tfds

from mie_jax.data.builders import media
from mie_jax.data.builders.base import (
    DataLayoutError,
    PaperBuilder,
    array_feature,
    decode_all,
    label_index,
    require_dir,
    require_file,
)

Row = Tuple[str, int]  # (clip id, class index)
# Reads one row's fields (``where`` is file:line): its Row, or None when the row is not in the list's format.
RowParser = Callable[[List[str], str], Optional[Row]]


@dataclasses.dataclass(frozen=True)
class Spectrogram:
    """The log-spectrogram settings of a dataset: the keyword arguments of :func:`media.log_spectrogram`."""

    sample_rate: int
    seconds: float
    n_fft: int
    hop: int
    resampler: str = media.DEFAULT_RESAMPLER  # Of wavs at another rate than sample_rate: one of media.RESAMPLERS.

    @property
    def shape(self) -> Tuple[int, int]:
        """``[frequencies, frames]`` of every spectrogram."""
        return self.n_fft // 2 + 1, 1 + int(round(self.seconds * self.sample_rate)) // self.hop

    def __call__(self, samples: np.ndarray, rate: int) -> np.ndarray:
        return media.log_spectrogram(samples, rate, **dataclasses.asdict(self))


class AudioVisualBuilder(PaperBuilder):
    """Clips listed per split, each ``AUDIO_DIR/<clip>.wav`` and ``FRAMES_DIR/<clip>/*.jpg``.

    Subclasses set, besides :class:`PaperBuilder`'s attributes, ``CLASSES``
    (label names, in class-index order), ``SPECTROGRAM``, ``AUDIO_DIR`` and
    ``FRAMES_DIR``. By default a split is ``<split>.csv`` of ``clip_id,label``
    rows, the label a class name, after the header ``CSV_HEADER`` (``None``
    when there is none); a dataset listed otherwise overrides :meth:`clips`.
    Examples are ``{"id", "audio", "visual", "label"}``.
    """

    MODALITIES: Tuple[str, ...] = ("audio", "visual")  # Training order; the names are feature names.
    CLASSES: Tuple[str, ...] = ()
    SPECTROGRAM: Spectrogram
    AUDIO_DIR: str = ""
    FRAMES_DIR: str = ""
    CSV_HEADER: Optional[Tuple[str, ...]] = None

    def features(self):
        size, frames = self.builder_config.image_size, self.builder_config.num_frames
        return {
            "id": tfds.features.Text(),
            "audio": array_feature(self.SPECTROGRAM.shape, np.float32),
            "visual": array_feature((frames, size, size, 3), np.uint8),
            "label": tfds.features.ClassLabel(names=self.CLASSES),
        }

    def clips(self, raw_dir: Path, split: str) -> List[Row]:
        """``(clip id, class index)`` of every clip of ``split``, validated.

        Raises:
          DataLayoutError: the split's list is missing or a row of it is wrong.
        """
        path = require_file(raw_dir / f"{split}.csv", self.LAYOUT)
        return read_clip_list(path, named_label(self.CLASSES), self.CSV_HEADER, "'clip_id,label'")

    def examples(self, raw_dir: Path, split: str):
        # All of a split's rows are checked before any clip is decoded: a bad row fails at once, not hours in.
        rows = self.clips(raw_dir, split)
        audio_dir = require_dir(raw_dir / self.AUDIO_DIR, self.LAYOUT)
        frames_dir = require_dir(raw_dir / self.FRAMES_DIR, self.LAYOUT)
        size, num_frames = self.builder_config.image_size, self.builder_config.num_frames
        self.record_setting("resampler", self.SPECTROGRAM.resampler)

        def decode(row):
            samples, rate = media.read_wav(audio_dir / f"{row[0]}.wav")
            return self.SPECTROGRAM(samples, rate), media.read_frame_folder(frames_dir / row[0], num_frames, size)

        for (clip_id, label), (audio, visual) in zip(rows, decode_all(decode, rows)):
            yield clip_id, {"id": clip_id, "audio": audio, "visual": visual, "label": label}


def named_label(classes: Sequence[str]) -> RowParser:
    """The parser of ``clip_id,label`` rows whose label is one of ``classes`` by name."""

    def parse(fields: List[str], where: str) -> Optional[Row]:
        if len(fields) != 2 or not all(fields):
            return None
        return fields[0], label_index(fields[1], classes, where)

    return parse


def read_clip_list(path: Path, parse: RowParser, header: Optional[Sequence[str]], row_format: str) -> List[Row]:
    """``(clip_id, class index)`` of every row of a comma-separated list; blank lines are skipped.

    Args:
      path: the list (UTF-8, LF or CRLF line ends; a byte-order mark, as Excel writes, is ignored).
      parse: reads a row's stripped fields; ``None`` for a row not in ``row_format``.
      header: the expected first row, or ``None`` when the file has no header.
      row_format: the rows' format, quoted, for the error messages (e.g. ``"'clip_id,label'"``).

    Returns:
      The rows in file order.

    Raises:
      DataLayoutError: naming ``path:line`` for a wrong header, a row not in
        ``row_format``, an unknown label or a repeated clip; naming ``path``
        for a file that is not UTF-8 or lists no clip.
    """
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        raise DataLayoutError(f"{path}: not UTF-8 text ({e})") from None
    numbered = [(number, line) for number, line in enumerate(lines, 1) if line.strip()]
    if header is not None:
        number, line = numbered[0] if numbered else (1, "")
        if _fields(line) != list(header):
            raise DataLayoutError(f"{path}:{number}: expected the header row {','.join(header)!r}, found {line!r}")
        numbered = numbered[1:]
    rows, seen = [], set()
    for number, line in numbered:
        where = f"{path}:{number}"
        row = parse(_fields(line), where)
        if row is None:
            raise DataLayoutError(f"{where}: expected a {row_format} row, got {line!r}")
        if row[0] in seen:  # TFDS would fail later on the duplicate key, without naming the row.
            raise DataLayoutError(f"{where}: clip {row[0]!r} is listed twice")
        seen.add(row[0])
        rows.append(row)
    if not rows:
        raise DataLayoutError(f"{path}: lists no clip; expected {row_format} rows")
    return rows


def _fields(line: str) -> List[str]:
    return [field.strip() for field in next(csv.reader([line]))]
