"""Target-oriented multimodal sentiment on Twitter-2015 (Yu and Jiang, 2019): image + text, 3 classes.

Published with TomBERT, https://github.com/jefferyYu/TomBERT: its data archive
(the Google Drive link of the repository's ``README.md``, whose version of
commit 425a3d5f6e6575c6320fd4d0ffcd71882169712a describes it) holds the text
under ``twitter2015/`` and the images under ``twitter2015_images/``; the same
``train.tsv``, ``dev.tsv`` and ``test.tsv`` are in the repository as
``absa_data/twitter2015/`` (read at commit 31bc79fb9a913a2480d5a56ffe5009d986d6eb2a).
``--data-dir`` may be the archive's root or a directory holding the three tsv
files next to ``twitter2015_images/``.

The tsv files are ASCII with LF line endings and no quoting. Their first line
is a header that TomBERT skips; it differs between files (``test.tsv`` names
4 columns, ``index<TAB>#1 ImageID<TAB>#2 String<TAB>#2 String``, over 5), so
the rows, not the header, are validated. Each row is one (tweet, target):
``index, label, image_id, tweet with the target masked as $T$, target`` (label
0 negative, 1 neutral, 2 positive; ``image_id`` names a file in
``twitter2015_images/`` and ends in ``.jpg``). A tweet with several targets is
several rows with the same image. Splits: 3179 / 1122 / 1037.
"""

from pathlib import Path


from mie_jax.data.builders import media
from mie_jax.data.builders.base import (
    DataLayoutError,
    PaperBuilder,
    image_text_features,
    decode_all,
    label_index,
    require_dir,
    require_file,
)

CLASSES = ("negative", "neutral", "positive")
LABELS = ("0", "1", "2")  # As written in the files, in the order of CLASSES.
SPLIT_FILES = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}
TEXT_DIR = "twitter2015"  # The archive's folder of the tsv files.
IMAGE_DIR = "twitter2015_images"
TARGET = "$T$"
ROW = "index<TAB>label 0-2<TAB>image_id.jpg<TAB>tweet with $T$<TAB>target"


class Twitter2015(PaperBuilder):
    """Yu and Jiang's Twitter-2015: a tweet's image and text, and the sentiment towards one target in it."""

    LAYOUT = (
        f"[{TEXT_DIR}/]{{train,dev,test}}.tsv, each a header line starting 'index' and rows '{ROW}';"
        f" {IMAGE_DIR}/<image_id>"
    )
    HOMEPAGE = "https://github.com/jefferyYu/TomBERT"
    DESCRIPTION = "Tweets with an image and a target entity, labelled with the sentiment towards it (Twitter-2015)."
    CITATION = (
        "Yu and Jiang. Adapting BERT for Target-Oriented Multimodal Sentiment Classification. IJCAI 2019. "
        "Zhang, Fu, Liu and Huang. Adaptive Co-attention Network for Named Entity Recognition in Tweets. "
        "AAAI 2018."
    )
    SPLITS = tuple(SPLIT_FILES)
    MODALITIES = ("image", "text")

    def features(self):
        return image_text_features(self.builder_config.image_size, CLASSES, "text", "target")

    def examples(self, raw_dir: Path, split: str):
        # The archive's root has the tsv files in twitter2015/; a flat directory has them beside the images.
        text_dir = raw_dir / TEXT_DIR if (raw_dir / TEXT_DIR).is_dir() else raw_dir
        path = require_file(text_dir / SPLIT_FILES[split], self.LAYOUT)
        images = require_dir(raw_dir / IMAGE_DIR, self.LAYOUT)
        # split("\n"), not splitlines(): tweets may hold Unicode line separators, which are no row breaks in a tsv.
        # The published files are LF; "\r" is stripped so that a copy saved with CRLF reads the same.
        header, *lines = [line.rstrip("\r") for line in path.read_text(encoding="utf-8").split("\n")]
        if header.split("\t")[0] != "index":
            raise DataLayoutError(f"{path}:1: expected a header line starting 'index<TAB>', got {header[:80]!r}")
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
        raise DataLayoutError(f"{where}: expected 5 tab-separated fields ({ROW}), got {len(fields)}")
    index, label, image_id, tweet, target = fields
    if not index.isdigit():
        raise DataLayoutError(f"{where}: expected an integer index in field 1, got {index[:40]!r}")
    label = label_index(label, LABELS, where)
    if not image_id.endswith(".jpg") or "/" in image_id:
        raise DataLayoutError(f"{where}: expected an image file name ending '.jpg' in field 3, got {image_id[:40]!r}")
    if TARGET not in tweet or not target.strip():
        raise DataLayoutError(f"{where}: expected a tweet with {TARGET} in field 4 and its target in field 5")
    return image_id, tweet.replace(TARGET, target), target, label
