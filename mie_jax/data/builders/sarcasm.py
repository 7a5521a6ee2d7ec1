"""Multimodal sarcasm detection on Twitter (Cai et al., 2019): image + text, 2 classes.

Published at https://github.com/headacheboy/data-of-multimodal-sarcasm-detection
(read at commit f42b16510208624d91fa545ca9bb64c6335f971e): ``text/train.txt``,
``text/valid2.txt`` and ``text/test2.txt`` are UTF-8 with CRLF line endings and
hold one Python list literal per line, ``[image_id, text, label]`` in train and
``[image_id, text, hashtag_label, annotator_label]`` in validation and test;
the label read is the last element (0 or 1), as the authors' ``codes/loadData.py``
reads it. The images, ``dataset_image/<image_id>.jpg``, come from the Google
Drive archives the repository's ``README.md`` links to.

The text files hold more posts than the paper uses: ``codes/loadData.py``
discards every post whose text has one of :data:`DISCARDED_WORDS` as a
whitespace-separated token, and the authors did not publish those posts' images.
This builder applies the same filter, so the splits are the paper's
19816 / 2410 / 2409 of the files' 29040 / 2410 / 2409 lines, and notes per split
how many posts it dropped.
"""

import ast
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

CLASSES = ("not_sarcastic", "sarcastic")
SPLIT_FILES = {"train": "train.txt", "validation": "valid2.txt", "test": "test2.txt"}
# Elements per list literal: train has one label, validation and test two (hashtag's, then an annotator's).
FIELDS = {"train": 3, "validation": 4, "test": 4}
# The words of codes/loadData.py's ``readData``, in its order: a post whose ``text.split()`` holds any of them
# (case-sensitive, whole tokens, so "# sarcasm" is dropped and "#lolsarcasm" kept) is discarded in every split.
DISCARDED_WORDS = (
    "sarcasm",
    "sarcastic",
    "reposting",
    "<url>",
    "joke",
    "humour",
    "humor",
    "jokes",
    "irony",
    "ironic",
    "exgag",
)


class Sarcasm(PaperBuilder):
    """Cai et al.'s sarcasm tweets: a tweet's image and text, sarcastic or not."""

    LAYOUT = (
        "text/{train,valid2,test2}.txt with one ['image_id', 'text', ..., label] per line; dataset_image/<image_id>.jpg"
    )
    HOMEPAGE = "https://github.com/headacheboy/data-of-multimodal-sarcasm-detection"
    DESCRIPTION = "Tweets with an image, labelled sarcastic or not (Cai, Cai and Wan, ACL 2019)."
    CITATION = "Cai, Cai and Wan. Multi-Modal Sarcasm Detection in Twitter with Hierarchical Fusion Model. ACL 2019."
    SPLITS = tuple(SPLIT_FILES)
    MODALITIES = ("text", "image")

    def features(self):
        return image_text_features(self.builder_config.image_size, CLASSES, "text")

    def examples(self, raw_dir: Path, split: str):
        path = require_file(raw_dir / "text" / SPLIT_FILES[split], self.LAYOUT)
        images = require_dir(raw_dir / "dataset_image", self.LAYOUT)
        rows, first_line = [], {}
        # split("\n"), not splitlines(): loadData.py (Python 2) breaks lines at "\n" only; "\r" of CRLF is stripped.
        for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            image_id, text, label = _parse_line(line.rstrip("\r"), FIELDS[split], where)
            if image_id in first_line:
                raise DataLayoutError(f"{where}: image id {image_id!r} already on line {first_line[image_id]}")
            first_line[image_id] = number
            rows.append((image_id, text, label))
        kept = [row for row in rows if not set(row[1].split()).intersection(DISCARDED_WORDS)]
        self.note(
            split,
            f"{len(rows) - len(kept)} of {len(rows)} posts in {path.name} dropped by the authors' "
            f"keyword filter (codes/loadData.py; their images are not published)",
        )
        size = self.builder_config.image_size
        decoded = decode_all(lambda row: media.read_image(images / f"{row[0]}.jpg", size), kept)
        for (image_id, text, label), image in zip(kept, decoded):
            yield image_id, {"id": image_id, "image": image, "text": text, "label": label}


def _parse_line(line: str, fields: int, where: str) -> tuple:
    """``(image_id, text, label)`` of one line of ``fields`` elements; errors name ``where`` (file:line)."""
    expected = f"{where}: expected a list literal ['image_id', 'text', {', '.join(['label'] * (fields - 2))}]"
    try:
        values = ast.literal_eval(line)
    except (ValueError, SyntaxError):
        raise DataLayoutError(expected) from None
    if not isinstance(values, list) or len(values) != fields or not all(isinstance(v, str) for v in values[:2]):
        raise DataLayoutError(expected)
    return values[0], values[1], label_index(str(values[-1]), ("0", "1"), where)
