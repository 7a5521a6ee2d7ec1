"""Tests for the Unicode emoji dataset (mie_jax.data.emoji).

The Debian files (emoji-test.txt, Noto Color Emoji) are not needed: a small
emoji-test.txt in the real format is written to tmp_path, and its emoji are drawn
with Aileron, the TrueType font bundled inside Pillow (>= 10.1), so most "glyphs"
are Aileron's missing-glyph box. One test builds the real dataset and is skipped
where the Debian files are absent.
"""

import os
import re

import numpy as np
import pytest
from PIL import ImageFont

from mie_jax.data import emoji
from mie_jax.data.emoji import GROUPS, load_emoji, prepare_emoji

SIZE = 8


def _line(codepoints, status, version, name):
    """One emoji-test.txt data line, padded like the real file."""
    text = "".join(chr(int(code, 16)) for code in codepoints.split())
    return f"{codepoints:<55}; {status:<20}# {text} E{version} {name}"


HEADER = [
    "# emoji-test.txt",
    "# Version: 15.0",
    "",
]
# Lines from Emoji 15.0's emoji-test.txt: (line, kept name or None if dropped).
BODY = [
    ("# group: Smileys & Emotion", None),
    ("", None),
    ("# subgroup: face-smiling", None),
    (_line("1F600", "fully-qualified", "1.0", "grinning face"), "grinning face"),
    (_line("1F603", "fully-qualified", "0.6", "grinning face with big eyes"), "grinning face with big eyes"),
    (_line("1F604", "fully-qualified", "0.6", "grinning face with smiling eyes"), "grinning face with smiling eyes"),
    (_line("1F601", "fully-qualified", "0.6", "beaming face with smiling eyes"), "beaming face with smiling eyes"),
    (_line("263A FE0F", "fully-qualified", "0.6", "smiling face"), "smiling face"),
    (_line("263A", "unqualified", "0.6", "smiling face"), None),
    ("", None),
    ("# group: People & Body", None),
    ("# subgroup: hand-fingers-open", None),
    (_line("1F44B", "fully-qualified", "0.6", "waving hand"), "waving hand"),
    (_line("1F44B 1F3FB", "fully-qualified", "1.0", "waving hand: light skin tone"), None),
    (_line("1F91A", "fully-qualified", "3.0", "raised back of hand"), "raised back of hand"),
    (_line("1F91A 1F3FF", "fully-qualified", "3.0", "raised back of hand: dark skin tone"), None),
    (_line("1F590 FE0F", "fully-qualified", "0.7", "hand with fingers splayed"), "hand with fingers splayed"),
    (_line("1F590", "unqualified", "0.7", "hand with fingers splayed"), None),
    (_line("1F9D4 200D 2642 FE0F", "fully-qualified", "13.1", "man: beard"), "man: beard"),
    (_line("1F9D4 200D 2642", "minimally-qualified", "13.1", "man: beard"), None),
    (_line("1F46A", "fully-qualified", "0.6", "family"), "family"),
    (
        _line("1F468 200D 1F469 200D 1F466", "fully-qualified", "2.0", "family: man, woman, boy"),
        "family: man, woman, boy",
    ),
    ("", None),
    ("# group: Component", None),
    (_line("1F3FB", "component", "1.0", "light skin tone"), None),
    (_line("1F9B0", "component", "11.0", "red hair"), None),
    # Files before Emoji 12.1 list components as fully-qualified.
    (_line("1F9B1", "fully-qualified", "11.0", "curly hair"), None),
    ("", None),
    ("# group: Symbols", None),
    (_line("267B FE0F", "fully-qualified", "0.6", "recycling symbol"), "recycling symbol"),
    (_line("2122 FE0F", "fully-qualified", "0.6", "trade mark"), "trade mark"),
    (_line("0023 FE0F 20E3", "fully-qualified", "0.6", "keycap: #"), "#"),
    (_line("0023 20E3", "unqualified", "0.6", "keycap: #"), None),
    (_line("0031 FE0F 20E3", "fully-qualified", "0.6", "keycap: 1"), "1"),
    (_line("1F523", "fully-qualified", "0.6", "input symbols"), "input symbols"),
    ("", None),
    ("# group: Flags", None),
    (_line("1F3C1", "fully-qualified", "0.6", "chequered flag"), "chequered flag"),
    (_line("1F3F3 FE0F 200D 1F308", "fully-qualified", "4.0", "rainbow flag"), "rainbow flag"),
    (_line("1F1E9 1F1EA", "fully-qualified", "0.6", "flag: Germany"), "Germany"),
    (_line("1F1EF 1F1F5", "fully-qualified", "0.6", "flag: Japan"), "Japan"),
    (_line("1F3F4 E0067 E0062 E0065 E006E E0067 E007F", "fully-qualified", "5.0", "flag: England"), "England"),
    ("", None),
    ("#EOF", None),
]
LINES = HEADER + [line for line, _ in BODY]
KEPT = [(line.split(";")[0].strip(), name) for line, name in BODY if name is not None]
NAMES = [name for _, name in KEPT]
CODEPOINTS = [codepoints for codepoints, _ in KEPT]
GROUP_SIZES = {"Smileys & Emotion": 5, "People & Body": 6, "Symbols": 5, "Flags": 5}
LABELS = np.repeat([GROUPS.index(group) for group in GROUP_SIZES], list(GROUP_SIZES.values()))
# Per-group split sizes from round(0.6 n), round(0.2 n) and the rest.
SPLIT_SIZES = {5: (3, 1, 1), 6: (4, 1, 1)}
REAL_FILES = (emoji.DEFAULT_EMOJI_TEST_PATH, emoji.DEFAULT_FONT_PATH)


@pytest.fixture(scope="session")
def font_path(tmp_path_factory):
    """Pillow's bundled Aileron TrueType font, written to a file."""
    font = ImageFont.load_default(size=24)
    if not isinstance(font, ImageFont.FreeTypeFont):
        pytest.skip("this Pillow has no FreeType, so no bundled TrueType font")
    path = tmp_path_factory.mktemp("font") / "aileron.ttf"
    path.write_bytes(font.path.getvalue())  # load_default reads it from an in-memory file
    return path


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def emoji_test(tmp_path):
    return _write(tmp_path / "emoji-test.txt", LINES)


@pytest.fixture
def prepare(tmp_path, emoji_test, font_path):
    """prepare_emoji on the fixture with the test font; keyword arguments override."""

    def run(output_dir=tmp_path / "data", **kwargs):
        options = dict(emoji_test_path=emoji_test, font_path=font_path, font_size=24, image_size=SIZE)
        return prepare_emoji(output_dir, **{**options, **kwargs})

    return run


def _read(path):
    with np.load(path) as archive:
        return {key: archive[key] for key in archive.files}


def test_line_helper_matches_the_real_format():
    real = "1F600                                                  ; fully-qualified     # 😀 E1.0 grinning face"
    assert _line("1F600", "fully-qualified", "1.0", "grinning face") == real


def test_groups():
    assert GROUPS == (
        "Smileys & Emotion",
        "People & Body",
        "Animals & Nature",
        "Food & Drink",
        "Travel & Places",
        "Activities",
        "Objects",
        "Symbols",
        "Flags",
    )


def test_prepare_writes_the_kept_emoji(prepare, tmp_path):
    path = prepare()
    assert path == tmp_path / "data" / "emoji.npz"
    arrays = _read(path)
    assert sorted(arrays) == sorted(
        ["images", "names", "labels", "codepoints", "groups", "train_indices", "validation_indices", "test_indices"]
    )
    # Fully-qualified only, no skin tones, no Component, in file order.
    assert arrays["names"].tolist() == NAMES
    assert arrays["codepoints"].tolist() == CODEPOINTS
    assert arrays["names"].dtype.kind == arrays["codepoints"].dtype.kind == "U"
    np.testing.assert_array_equal(arrays["labels"], LABELS)
    assert arrays["labels"].dtype == np.int32
    assert arrays["groups"].tolist() == list(GROUPS)
    images = arrays["images"]
    assert images.shape == (len(NAMES), SIZE, SIZE, 3)
    assert images.dtype == np.uint8
    # Dark ink on a white background in every image.
    assert np.all(images.max(axis=(1, 2, 3)) == 255)
    assert np.all(images.min(axis=(1, 2, 3)) < 128)


def test_prefixes_that_restate_the_group_are_stripped(prepare):
    names = _read(prepare())["names"].tolist()
    assert {"Germany", "Japan", "England", "#", "1"} <= set(names)
    assert not [name for name in names if name.startswith(("flag:", "keycap:"))]
    # Prefixes that name what is drawn stay.
    assert {"family: man, woman, boy", "man: beard", "chequered flag"} <= set(names)


def test_image_size(prepare):
    assert _read(prepare(image_size=5))["images"].shape == (len(NAMES), 5, 5, 3)


def test_split_is_a_stratified_partition(prepare):
    arrays = _read(prepare())
    indices = [arrays[f"{split}_indices"] for split in ("train", "validation", "test")]
    np.testing.assert_array_equal(np.sort(np.concatenate(indices)), np.arange(len(NAMES)))
    for group, size in GROUP_SIZES.items():
        counts = [np.sum(LABELS[rows] == GROUPS.index(group)) for rows in indices]
        assert tuple(counts) == SPLIT_SIZES[size], group


def test_split_is_deterministic_per_seed(prepare, tmp_path):
    def split(seed, name):
        arrays = _read(prepare(tmp_path / name, seed=seed))
        return [arrays[f"{part}_indices"].tolist() for part in ("train", "validation", "test")]

    assert split(3, "a") == split(3, "b")
    assert split(3, "a") != split(4, "c")


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_load_emoji(prepare, split):
    path = prepare()
    arrays = _read(path)
    rows = arrays[f"{split}_indices"]
    data = load_emoji(path.parent, split=split)
    assert list(data) == ["image", "text", "label"]
    assert data["image"].dtype == np.float32
    assert data["image"].shape == (len(rows), SIZE, SIZE, 3)
    assert 0.0 <= data["image"].min() and data["image"].max() == 1.0
    np.testing.assert_array_equal(np.round(data["image"] * 255), arrays["images"][rows])
    assert data["text"].tolist() == [NAMES[row] for row in rows]
    assert data["label"].dtype == np.int32
    np.testing.assert_array_equal(data["label"], LABELS[rows])


def test_default_split_is_train(prepare):
    path = prepare()
    np.testing.assert_array_equal(load_emoji(path.parent)["label"], LABELS[_read(path)["train_indices"]])


def test_rebuild_replaces_the_file(prepare):
    path = prepare()
    assert prepare(image_size=4) == path
    assert _read(path)["images"].shape[1:] == (4, 4, 3)
    assert os.listdir(path.parent) == ["emoji.npz"]
    assert path.stat().st_mode & 0o777 == 0o644


def test_failed_parse_keeps_the_old_file(prepare, tmp_path):
    path = prepare()
    before = path.read_bytes()
    broken = _write(tmp_path / "broken.txt", LINES[:10] + ["1F600 ; fully-qualified"] + LINES[10:])
    with pytest.raises(ValueError, match=re.escape(f"{broken}:11: expected")):
        prepare(emoji_test_path=broken)
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == ["emoji.npz"]


def test_failed_write_keeps_the_old_file_and_removes_the_temp_file(prepare, monkeypatch):
    path = prepare()
    before = path.read_bytes()

    def write_half_then_fail(file, **arrays):
        file.write(b"PK\x03\x04 half an archive")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        prepare()
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == ["emoji.npz"]


def test_failed_first_build_leaves_nothing(prepare, monkeypatch, tmp_path):
    monkeypatch.setattr(np, "savez_compressed", lambda file, **arrays: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        prepare()
    assert os.listdir(tmp_path / "data") == []


def test_missing_emoji_test(prepare, tmp_path):
    path = tmp_path / "absent.txt"
    message = (
        f"emoji-test.txt {str(path)!r} does not exist; the Debian package unicode-data provides it "
        f"(apt-get install unicode-data fonts-noto-color-emoji)."
    )
    with pytest.raises(FileNotFoundError, match=re.escape(message)):
        prepare(emoji_test_path=path)


def test_missing_font(prepare, tmp_path):
    path = tmp_path / "absent.ttf"
    message = (
        f"font {str(path)!r} does not exist; the Debian package fonts-noto-color-emoji provides "
        f"Noto Color Emoji (apt-get install unicode-data fonts-noto-color-emoji)."
    )
    with pytest.raises(FileNotFoundError, match=re.escape(message)):
        prepare(font_path=path)


def test_unloadable_font(prepare, tmp_path):
    path = tmp_path / "not_a_font.ttf"
    path.write_bytes(b"not a font")
    message = f"font {str(path)!r} cannot be loaded at size 24: "
    with pytest.raises(ValueError, match=re.escape(message) + ".*only at size 109"):
        prepare(font_path=path)


@pytest.mark.parametrize(
    "line, message",
    [
        (
            "1F600 ; fully-qualified",
            "expected 'code points ; status # emoji E<version> name', got '1F600 ; fully-qualified'.",
        ),
        (_line("1F600", "qualified", "1.0", "grinning face"), "expected 'code points ; status"),
        (
            _line("1F600", "fully-qualified", "1.0", "grinning face").replace("1F600", "1F60G"),
            "expected 'code points ; status",
        ),
        (
            _line("1F600", "fully-qualified", "1.0", "grinning face").replace("😀", "😃"),
            "expected the emoji of code points 1F600, got '😃'.",
        ),
        ("# group: Emoticons", "expected a group in ['Smileys & Emotion', "),
    ],
    ids=["no comment", "bad status", "bad code point", "wrong emoji", "unknown group"],
)
def test_malformed_line(prepare, tmp_path, line, message):
    path = _write(tmp_path / "bad.txt", LINES[:6] + [line] + LINES[6:])
    with pytest.raises(ValueError, match=re.escape(f"{path}:7: {message}")):
        prepare(emoji_test_path=path)


def test_emoji_before_any_group(prepare, tmp_path):
    path = _write(tmp_path / "bad.txt", HEADER + [_line("1F600", "fully-qualified", "1.0", "grinning face")])
    message = f"{path}:4: expected a '# group:' line before the first emoji."
    with pytest.raises(ValueError, match=re.escape(message)):
        prepare(emoji_test_path=path)


def test_emoji_test_without_a_version_is_read(prepare, tmp_path):
    # Files before Emoji 13.0 have no "E1.0" in the comment.
    path = _write(tmp_path / "old.txt", [re.sub(r" E\d+\.\d+ ", " ", line) for line in LINES])
    assert _read(prepare(emoji_test_path=path))["names"].tolist() == NAMES


def test_emoji_test_without_usable_emoji(prepare, tmp_path):
    path = _write(
        tmp_path / "components.txt", ["# group: Component", _line("1F3FB", "component", "1.0", "light skin tone")]
    )
    message = f"emoji-test.txt {str(path)!r} holds no fully-qualified emoji outside the 'Component' group."
    with pytest.raises(ValueError, match=re.escape(message)):
        prepare(emoji_test_path=path)


def test_emoji_test_not_utf8(prepare, tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("# group: Flags\n# caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=re.escape(f"emoji-test.txt {str(path)!r} is not UTF-8 text: ")):
        prepare(emoji_test_path=path)


@pytest.mark.parametrize(
    "argument, value", [("image_size", 0), ("image_size", 32.0), ("font_size", True), ("font_size", -109)]
)
def test_bad_sizes(prepare, argument, value):
    with pytest.raises(ValueError, match=re.escape(f"{argument} must be a positive integer, got {value!r}.")):
        prepare(**{argument: value})


def test_unknown_split(prepare):
    path = prepare()
    message = "split must be one of ['train', 'validation', 'test'], got 'dev'."
    with pytest.raises(ValueError, match=re.escape(message)):
        load_emoji(path.parent, split="dev")


def test_missing_npz(tmp_path):
    path = tmp_path / "emoji.npz"
    message = f"path {str(path)!r} does not exist or is not a file; build it with prepare_emoji()."
    with pytest.raises(FileNotFoundError, match=re.escape(message)):
        load_emoji(tmp_path)


@pytest.mark.parametrize("contents", ["text", "empty", "truncated", "one array"])
def test_corrupt_npz(prepare, tmp_path, contents):
    path = prepare()
    if contents == "one array":
        np.save(tmp_path / "one.npy", np.zeros(3))
        data = (tmp_path / "one.npy").read_bytes()
    else:
        data = {"text": b"not an npz archive\n", "empty": b"", "truncated": path.read_bytes()[:2000]}[contents]
    path.write_bytes(data)
    with pytest.raises(ValueError, match=re.escape(f"path {str(path)!r} is not a valid emoji npz file: ")):
        load_emoji(path.parent)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a.pop("test_indices"), "it lacks the arrays ['test_indices']"),
        (lambda a: a.update(images=a["images"].astype(np.float32)), "'images' must be uint8 [n, S, S, 3]"),
        (lambda a: a.update(names=a["names"][:-1]), f"'names' must have shape ({len(NAMES)},)"),
        (lambda a: a.update(groups=a["groups"][::-1]), "'groups' must be ['Smileys & Emotion', "),
        (lambda a: a.update(labels=a["labels"] + 5), "'labels' must be int32 in [0, 9)"),
        (lambda a: a.update(train_indices=a["train_indices"] + 100), "'train_indices' must be row indices"),
    ],
    ids=["missing array", "image dtype", "short names", "group order", "label range", "index range"],
)
def test_inconsistent_npz(prepare, change, message):
    path = prepare()
    arrays = _read(path)
    change(arrays)
    np.savez_compressed(path, **arrays)
    with pytest.raises(ValueError, match=re.escape(f"path {str(path)!r} is not a valid emoji npz file: {message}")):
        load_emoji(path.parent)


@pytest.mark.skipif(
    not all(path.is_file() for path in REAL_FILES),
    reason=f"needs {' and '.join(map(str, REAL_FILES))} (apt-get install unicode-data fonts-noto-color-emoji)",
)
def test_real_debian_files(tmp_path):
    path = prepare_emoji(tmp_path)
    arrays = _read(path)
    counts = np.bincount(arrays["labels"], minlength=len(GROUPS))
    # Emoji 15.0 gives 1870; later versions add a few.
    assert 1850 <= counts.sum() <= 1950
    assert np.all(counts >= 80), dict(zip(GROUPS, counts))
    assert arrays["images"].shape == (counts.sum(), 32, 32, 3)
    assert not [name for name in arrays["names"] if name.startswith(("flag:", "keycap:"))]
    # Every emoji drew something: the font covers all of them.
    assert np.all(arrays["images"].min(axis=(1, 2, 3)) < 200)
    test = load_emoji(tmp_path, split="test")
    assert np.all(np.bincount(test["label"], minlength=len(GROUPS)) >= 15)
