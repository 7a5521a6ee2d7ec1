"""What the audio-visual datasets (CREMA-D, Kinetics-Sounds) share: a csv of clips, a wav and frames per clip.

Each split is a csv of ``clip_id,label`` rows; a clip is a wav file and a
folder of frames extracted from its video. A builder declares where these
live and its classes and spectrogram settings; :class:`AudioVisualBuilder`
reads, validates and decodes them.
"""

import csv
import dataclasses
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import tensorflow_datasets as tfds

from mie_jax.data.builders import media
from mie_jax.data.builders.base import (
    DataLayoutError, PaperBuilder, array_feature, decode_all, label_index, require_dir, require_file,
)


@dataclasses.dataclass(frozen=True)
class Spectrogram:
    """The log-spectrogram settings of a dataset: the keyword arguments of :func:`media.log_spectrogram`."""

    sample_rate: int
    seconds: float
    n_fft: int
    hop: int

    @property
    def shape(self) -> Tuple[int, int]:
        """``[frequencies, frames]`` of every spectrogram."""
        return self.n_fft // 2 + 1, 1 + int(round(self.seconds * self.sample_rate)) // self.hop

    def __call__(self, samples: np.ndarray, rate: int) -> np.ndarray:
        return media.log_spectrogram(samples, rate, **dataclasses.asdict(self))


class AudioVisualBuilder(PaperBuilder):
    """Clips listed in ``<split>.csv``, each ``AUDIO_DIR/<clip>.wav`` and ``FRAMES_DIR/<clip>/*.jpg``.

    Subclasses set, besides :class:`PaperBuilder`'s attributes, ``CLASSES``
    (label names, in class-index order), ``SPECTROGRAM``, ``AUDIO_DIR``,
    ``FRAMES_DIR`` and ``CSV_HEADER`` (the csv's first row, or ``None`` when
    it has none). Examples are ``{"id", "audio", "visual", "label"}``.
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

    def examples(self, raw_dir: Path, split: str):
        # All of a split's rows are checked before any clip is decoded: a bad row fails at once, not hours in.
        rows = read_clip_list(require_file(raw_dir / f"{split}.csv", self.LAYOUT), self.CLASSES, self.CSV_HEADER)
        audio_dir = require_dir(raw_dir / self.AUDIO_DIR, self.LAYOUT)
        frames_dir = require_dir(raw_dir / self.FRAMES_DIR, self.LAYOUT)
        size, num_frames = self.builder_config.image_size, self.builder_config.num_frames

        def decode(row):
            samples, rate = media.read_wav(audio_dir / f"{row[0]}.wav")
            return self.SPECTROGRAM(samples, rate), media.read_frame_folder(frames_dir / row[0], num_frames, size)

        for (clip_id, label), (audio, visual) in zip(rows, decode_all(decode, rows)):
            yield clip_id, {"id": clip_id, "audio": audio, "visual": visual, "label": label}


def read_clip_list(path: Path, classes: Sequence[str], header: Optional[Sequence[str]]) -> List[Tuple[str, int]]:
    """``(clip_id, class index)`` of every ``clip_id,label`` row of a csv file; blank lines are skipped.

    Args:
      path: the csv file (UTF-8; a byte-order mark, as Excel writes, is ignored).
      classes: the label names.
      header: the expected first row, or ``None`` when the file has no header.

    Raises:
      DataLayoutError: naming ``path:line`` for a wrong header, a row that is
        not two non-empty fields, an unknown label or a repeated clip; naming
        ``path`` for a file that is not UTF-8 or lists no clip.
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
        fields = _fields(line)
        if len(fields) != 2 or not all(fields):
            raise DataLayoutError(f"{where}: expected a 'clip_id,label' row, got {line!r}")
        if fields[0] in seen:  # TFDS would fail later on the duplicate key, without naming the row.
            raise DataLayoutError(f"{where}: clip {fields[0]!r} is listed twice")
        seen.add(fields[0])
        rows.append((fields[0], label_index(fields[1], classes, where)))
    if not rows:
        raise DataLayoutError(f"{path}: lists no clip; expected 'clip_id,label' rows")
    return rows


def _fields(line: str) -> List[str]:
    return [field.strip() for field in next(csv.reader([line]))]
