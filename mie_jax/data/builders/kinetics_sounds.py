"""Kinetics-Sounds (Arandjelovic and Zisserman, 2017): audio + video frames of Kinetics actions that sound, 31 classes.

Kinetics-Sounds is a subset of Kinetics-400 (YouTube clips of about 10 s).
Its splits are OGM-GE's (https://github.com/GeWu-Lab/OGM-GE_CVPR2022,
``data/KineticSound/``, commit 149c68e): ``my_train.txt`` (14799 clips) and
``my_test.txt`` (2597) list one ``<clip id>,10,<class index>`` row per clip,
with CRLF line ends and no header (e.g. ``--4-0ihtnBU_000058_000068,10,4``);
the middle field is 10 in every row and is not read. Training ids are
``<youtube id>_<start s>_<end s>``, test ids ``<youtube id>_<n>``
(``-3Mwkq-7TV4_2``): the media files are named by them as they are.

OGM-GE names no class. The indices are positions in the 31-name list of BML
(https://github.com/GeWu-Lab/BML_TPAMI2024, ``code/dataset/KS.json`` and
``KS_train_val.json``, commit 8db168f), which its loader indexes in list
order: that list is :data:`CLASSES`, and every clip of OGM-GE's lists carries
the same class there. ``KS_train_val.json`` also publishes a validation split,
1320 clips listed in neither of OGM-GE's files (its ``"training"`` and
``"testing"`` subsets are exactly ``my_train.txt`` and ``my_test.txt``): when
the file is in the directory the builder writes it as the ``validation``
split. Its presence is read when a copy is prepared; a copy prepared without it
stays without a validation split.

Layout of the directory given as ``--data-dir``: ``my_train.txt``,
``my_test.txt``, optionally ``KS_train_val.json``; ``audio/<clip id>.wav``, the
clip's audio, and ``visual/<clip id>/*.jpg``, its extracted frames (read in
sorted name order).

The peers' loaders differ in their audio input (sample rate, clip length,
STFT, or precomputed arrays they do not publish). Ours is CREMA-D's transform
on the whole clip: 10 s at 16 kHz, n_fft 512, hop 353, i.e. 257 x 454.
"""

import json
from pathlib import Path
from typing import Dict, List, Optional

from mie_jax.data.builders.audiovisual import AudioVisualBuilder, Row, Spectrogram, read_clip_list
from mie_jax.data.builders.base import DataLayoutError, label_index, require_file

# BML's KS.json "labels", in its order (sorted): OGM-GE's class indices point into it.
CLASSES = (
    "blowing_nose",
    "blowing_out_candles",
    "bowling",
    "chopping_wood",
    "dribbling_basketball",
    "laughing",
    "mowing_lawn",
    "playing_accordion",
    "playing_bagpipes",
    "playing_bass_guitar",
    "playing_clarinet",
    "playing_drums",
    "playing_guitar",
    "playing_harmonica",
    "playing_keyboard",
    "playing_organ",
    "playing_piano",
    "playing_saxophone",
    "playing_trombone",
    "playing_trumpet",
    "playing_violin",
    "playing_xylophone",
    "ripping_paper",
    "shoveling_snow",
    "shuffling_cards",
    "singing",
    "stomping_grapes",
    "tap_dancing",
    "tapping_guitar",
    "tapping_pen",
    "tickling",
)
# Our choice (see the module docstring): the whole 10 s clip at 16 kHz.
SPECTROGRAM = Spectrogram(sample_rate=16000, seconds=10.0, n_fft=512, hop=353)
SPLIT_FILES = {"train": "my_train.txt", "test": "my_test.txt"}
VALIDATION_FILE = "KS_train_val.json"
ROW_FORMAT = f"'<clip id>,10,<class index 0-{len(CLASSES) - 1}>'"


class KineticsSounds(AudioVisualBuilder):
    """Kinetics-Sounds' clips: a log-spectrogram and frames, one of 31 sounding actions."""

    LAYOUT = (
        f"my_train.txt and my_test.txt (OGM-GE's data/KineticSound/) with one {ROW_FORMAT} row per clip "
        f"and no header; optionally {VALIDATION_FILE} (BML's code/dataset/) for the validation split; "
        "audio/<clip id>.wav and visual/<clip id>/*.jpg extracted from the Kinetics videos"
    )
    HOMEPAGE = "https://github.com/cvdfoundation/kinetics-dataset"
    DESCRIPTION = "Kinetics-400 clips of 31 actions that can be both seen and heard (Arandjelovic and Zisserman, 2017)."
    CITATION = "Arandjelovic and Zisserman. Look, Listen and Learn. ICCV 2017."
    SPLITS = tuple(SPLIT_FILES)  # Always there; "validation" too when VALIDATION_FILE is.
    DEFAULT_NUM_FRAMES = 3  # The peers feed three frames per Kinetics-Sounds clip.
    CLASSES = CLASSES
    SPECTROGRAM = SPECTROGRAM
    AUDIO_DIR = "audio"
    FRAMES_DIR = "visual"

    def _split_generators(self, dl_manager):
        generators = super()._split_generators(dl_manager)
        raw_dir = Path(dl_manager.manual_dir)
        if (raw_dir / VALIDATION_FILE).is_file():
            generators["validation"] = self._generate_examples(raw_dir, "validation")
        return generators

    def clips(self, raw_dir: Path, split: str) -> List[Row]:
        """The clips of OGM-GE's list of ``split``, or of BML's validation subset.

        Raises:
          DataLayoutError: a list is missing, or a row or entry of it is wrong.
        """
        if split != "validation":
            return self._ogm_list(raw_dir, split)
        listed = {clip: SPLIT_FILES[name] for name in SPLIT_FILES for clip, _ in self._ogm_list(raw_dir, name)}
        return read_validation(raw_dir / VALIDATION_FILE, listed)

    def _ogm_list(self, raw_dir: Path, split: str) -> List[Row]:
        path = require_file(raw_dir / SPLIT_FILES[split], self.LAYOUT)
        return read_clip_list(path, _class_index, None, ROW_FORMAT)


def _class_index(fields: List[str], where: str) -> Optional[Row]:
    """An OGM-GE row's clip and class index; ``None`` when it is not ``<clip id>,<field>,<integer>``."""
    if len(fields) != 3 or not fields[0] or not (fields[2].isascii() and fields[2].isdigit()):
        return None
    index = int(fields[2])
    if index >= len(CLASSES):
        raise DataLayoutError(f"{where}: unknown class index {index}; expected 0 to {len(CLASSES) - 1}")
    return fields[0], index


def read_validation(path: Path, listed: Dict[str, str]) -> List[Row]:
    """The clips of the ``"validation"`` subset of BML's ``KS_train_val.json``.

    Args:
      path: the file: ``{"labels": [31 names], "database": {clip id: {"subset": ..., "label": name}}}``.
      listed: clip id -> the name of the training or test list holding it.

    Returns:
      ``(clip id, class index)`` in the file's order.

    Raises:
      DataLayoutError: naming ``path`` when it is not that JSON, its labels
        are not :data:`CLASSES`, an entry's label is unknown, a validation
        clip is also in a training or test list, or it has no validation clip.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        labels, entries = data["labels"], data["database"]
        subsets = [(clip, entry["subset"], entry["label"]) for clip, entry in entries.items()]
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise DataLayoutError(
            f"{path}: expected BML's JSON {{'labels': [...], 'database': {{clip id: "
            f"{{'subset': ..., 'label': ...}}}}}} ({type(e).__name__}: {e})"
        ) from None
    if labels != list(CLASSES):
        raise DataLayoutError(f"{path}: expected the labels {list(CLASSES)}, found {labels}")
    rows = []
    for clip, subset, label in subsets:
        if subset != "validation":
            continue
        if clip in listed:  # A clip trained or tested on would make its validation score meaningless.
            raise DataLayoutError(f"{path}: validation clip {clip!r} is also listed in {listed[clip]}")
        rows.append((clip, label_index(label, CLASSES, f"{path}: clip {clip!r}")))
    if not rows:
        raise DataLayoutError(f"{path}: lists no clip of the subset 'validation'")
    return rows
