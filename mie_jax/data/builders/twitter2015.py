"""Target-oriented multimodal sentiment on Twitter-2015 (Yu and Jiang, 2019): image + text, 3 classes.

Published with TomBERT at https://github.com/jefferyYu/TomBERT: ``{train,dev,test}.tsv``
start with the header ``index<TAB>#1 Label<TAB>#2 ImageID<TAB>#3 String<TAB>#3 String``
and hold one tab-separated row per (tweet, target): ``index, label, image_id,
tweet with the target masked as $T$, target`` (label 0 negative, 1 neutral, 2
positive); ``twitter2015_images/`` holds ``<image_id>`` (which ends in ``.jpg``).
A tweet with several targets is several rows with the same image. Splits:
3179 / 1122 / 1037.
"""

from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from mie_jax.data.builders import media
from mie_jax.data.builders.base import (
    DataLayoutError, PaperBuilder, array_feature, decode_all, label_index, require_dir, require_file,
)

CLASSES = ("negative", "neutral", "positive")
LABELS = ("0", "1", "2")  # As written in the files, in the order of CLASSES.
SPLIT_FILES = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}
HEADER = "\t".join(("index", "#1 Label", "#2 ImageID", "#3 String", "#3 String"))
TARGET = "$T$"


class Twitter2015(PaperBuilder):
    """Yu and Jiang's Twitter-2015: a tweet's image and text, and the sentiment towards one target in it."""

    LAYOUT = ("{train,dev,test}.tsv with the header 'index<TAB>#1 Label<TAB>#2 ImageID<TAB>#3 String<TAB>#3 String'"
              " and rows 'index<TAB>label 0-2<TAB>image_id<TAB>tweet with $T$<TAB>target';"
              " twitter2015_images/<image_id>")
    HOMEPAGE = "https://github.com/jefferyYu/TomBERT"
    DESCRIPTION = "Tweets with an image and a target entity, labelled with the sentiment towards it (Twitter-2015)."
    CITATION = ("Yu and Jiang. Adapting BERT for Target-Oriented Multimodal Sentiment Classification. IJCAI 2019. "
                "Zhang, Fu, Liu and Huang. Adaptive Co-attention Network for Named Entity Recognition in Tweets. "
                "AAAI 2018.")
    SPLITS = tuple(SPLIT_FILES)
    MODALITIES = ("image", "text")

    def features(self):
        size = self.builder_config.image_size
        return {
            "id": tfds.features.Text(),
            "image": array_feature((size, size, 3), np.uint8),
            "text": tfds.features.Text(),
            "target": tfds.features.Text(),
            "label": tfds.features.ClassLabel(names=CLASSES),
        }

    def examples(self, raw_dir: Path, split: str):
        path = require_file(raw_dir / SPLIT_FILES[split], self.LAYOUT)
        images = require_dir(raw_dir / "twitter2015_images", self.LAYOUT)
        # split("\n"), not splitlines(): tweets may hold Unicode line separators, which are no row breaks in a tsv.
        header, *lines = path.read_text(encoding="utf-8").split("\n")
        if header.rstrip() != HEADER:
            raise DataLayoutError(f"{path}:1: expected the header {HEADER!r}, got {header[:80]!r}")
        rows = [(number, *_parse_row(line, f"{path}:{number}")) for number, line in enumerate(lines, 2) if line.strip()]
        size = self.builder_config.image_size
        decoded = decode_all(lambda row: media.read_image(images / row[1], size), rows)
        for (number, _, text, target, label), image in zip(rows, decoded):
            # The row's number under the header: TomBERT's guid, and the index in the published files, but
            # unique by construction (an image repeats across rows; an index might).
            key = f"{path.name}:{number - 1}"
            yield key, {"id": key, "image": image, "text": text, "target": target, "label": label}


def _parse_row(line: str, where: str) -> tuple:
    """``(image_id, text, target, label)`` of one row; errors name ``where`` (file:line)."""
    fields = line.split("\t")
    if len(fields) != 5:
        raise DataLayoutError(f"{where}: expected 5 tab-separated fields (index, label, image_id, tweet, target), "
                              f"got {len(fields)}")
    _, label, image_id, tweet, target = fields
    return image_id, tweet.replace(TARGET, target), target, label_index(label, LABELS, where)
