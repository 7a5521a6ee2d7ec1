"""Multimodal sarcasm detection on Twitter (Cai et al., 2019): image + text, 2 classes.

Published at https://github.com/headacheboy/data-of-multimodal-sarcasm-detection:
``text/{train,valid2,test2}.txt`` hold one Python list literal per line,
``[image_id, text, ..., label]`` (the train file has three fields, the other
two four: the last is the sarcasm label 0 or 1), and ``dataset_image/`` holds
``<image_id>.jpg``. Splits: 19816 / 2410 / 2409.
"""

import ast
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from mie_jax.data.builders import media
from mie_jax.data.builders.base import (
    DataLayoutError, PaperBuilder, array_feature, decode_all, label_index, require_dir, require_file,
)

CLASSES = ("not_sarcastic", "sarcastic")
SPLIT_FILES = {"train": "train.txt", "validation": "valid2.txt", "test": "test2.txt"}


class Sarcasm(PaperBuilder):
    """Cai et al.'s sarcasm tweets: a tweet's image and text, sarcastic or not."""

    LAYOUT = "text/{train,valid2,test2}.txt with one ['image_id', 'text', ..., label] per line; dataset_image/<image_id>.jpg"
    HOMEPAGE = "https://github.com/headacheboy/data-of-multimodal-sarcasm-detection"
    DESCRIPTION = "Tweets with an image, labelled sarcastic or not (Cai, Cai and Wan, ACL 2019)."
    CITATION = "Cai, Cai and Wan. Multi-Modal Sarcasm Detection in Twitter with Hierarchical Fusion Model. ACL 2019."
    SPLITS = tuple(SPLIT_FILES)
    MODALITIES = ("text", "image")

    def features(self):
        size = self.builder_config.image_size
        return {
            "id": tfds.features.Text(),
            "image": array_feature((size, size, 3), np.uint8),
            "text": tfds.features.Text(),
            "label": tfds.features.ClassLabel(names=CLASSES),
        }

    def examples(self, raw_dir: Path, split: str):
        path = require_file(raw_dir / "text" / SPLIT_FILES[split], self.LAYOUT)
        images = require_dir(raw_dir / "dataset_image", self.LAYOUT)
        rows = [_parse_line(line, f"{path}:{number}")
                for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if line.strip()]
        size = self.builder_config.image_size
        decoded = decode_all(lambda row: media.read_image(images / f"{row[0]}.jpg", size), rows)
        for (image_id, text, label), image in zip(rows, decoded):
            yield image_id, {"id": image_id, "image": image, "text": text, "label": label}


def _parse_line(line: str, where: str) -> tuple:
    """``(image_id, text, label)`` of one line; errors name ``where`` (file:line)."""
    try:
        fields = ast.literal_eval(line.strip())
    except (ValueError, SyntaxError):
        raise DataLayoutError(f"{where}: expected a list literal ['image_id', 'text', ..., label]") from None
    if not isinstance(fields, (list, tuple)) or len(fields) < 3:
        raise DataLayoutError(f"{where}: expected a list literal ['image_id', 'text', ..., label]")
    return str(fields[0]), str(fields[1]), label_index(str(fields[-1]), ("0", "1"), where)
