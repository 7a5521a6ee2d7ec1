"""The NVGesture builder reads NVIDIA's published layout (plus denseflow's flow), and names what is wrong with it."""

import numpy as np
import pytest

from tests import builder_checks

NUM_FRAMES = 4  # Kept per clip.
VIDEO_FRAMES, HEIGHT, WIDTH = 12, 24, 32
COLOR, DEPTH = (2, 10), (3, 11)  # Frame ranges [start, end); different, so that a mix-up shows.
# split -> (list file, labels as written, 1 to 25)
SPLITS = {"train": ("nvgesture_train_correct_cvpr2016_v2.lst", [1, 25, 7]),
          "test": ("nvgesture_test_correct_cvpr2016_v2.lst", [3, 3])}


# Every frame's brightness encodes its index, so that the picked frames can be told apart.
def color_level(i):
    return 20 * i + 10


def depth_level(i):
    return 240 - 20 * i


def flow_levels(i):
    return 60 + 10 * i, 200 - 10 * i


def frames(levels):
    """``[len(levels), HEIGHT, WIDTH, 3]`` uniform frames of the given brightness."""
    return np.broadcast_to(np.asarray(levels, np.uint8)[:, None, None, None], (len(levels), HEIGHT, WIDTH, 3)).copy()


def write_clip(folder):
    """One recording: sk_color.avi, sk_depth.avi, and the flow of every color frame in sk_flow/."""
    builder_checks.write_video(folder / "sk_color.avi", frames([color_level(i) for i in range(VIDEO_FRAMES)]))
    builder_checks.write_video(folder / "sk_depth.avi", frames([depth_level(i) for i in range(VIDEO_FRAMES)]))
    for i in range(VIDEO_FRAMES):
        for axis, level in zip("xy", flow_levels(i)):
            builder_checks.write_jpg(folder / "sk_flow" / f"flow_{axis}_{i:05d}.jpg",
                                     np.full((HEIGHT, WIDTH), level, np.uint8))


def clip_dir(split, i, label):
    return f"./Video_data/class_{label:02d}/subject{i + 1}_r{0 if split == 'train' else 1}"


def write_nvgesture(root):
    """A tiny NVGesture in NVIDIA's layout: two split lists and their clips' folders (no duo videos: unused)."""
    for split, (filename, labels) in SPLITS.items():
        lines = []
        for i, label in enumerate(labels):
            write_clip(root / clip_dir(split, i, label))
            lines.append(f"path:{clip_dir(split, i, label)} depth:sk_depth:{DEPTH[0]}:{DEPTH[1]} "
                         f"color:sk_color:{COLOR[0]}:{COLOR[1]} duo_left:duo_left:5:12 label:{label}")
        (root / filename).write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def raw(tmp_path):
    return write_nvgesture(tmp_path / "raw")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Every split's arrays, prepared once for the tests that only read them."""
    root = tmp_path_factory.mktemp("nvgesture")
    return builder_checks.check_round_trip(
        "nvgesture", write_nvgesture(root / "raw"), root / "prepared", num_frames=NUM_FRAMES,
        counts={split: len(labels) for split, (_, labels) in SPLITS.items()},
        labels={split: [label - 1 for label in labels] for split, (_, labels) in SPLITS.items()})


def test_builds_every_split_and_reads_it_back(prepared):
    train = prepared["train"]
    for field, channels in (("rgb", 3), ("depth", 1), ("flow", 2)):
        assert train[field].shape[:2] == (3, NUM_FRAMES)
        builder_checks.check_images(train[field].reshape(-1, *train[field].shape[2:]), 3 * NUM_FRAMES,
                                    channels=channels)
    assert sorted(train["id"]) == sorted(clip_dir("train", i, label) for i, label in enumerate(SPLITS["train"][1]))


def test_frames_come_from_each_streams_range(prepared):
    # evenly_spaced(8, 4) picks offsets 1, 3, 5, 7 of each 8-frame range; flow follows the color range.
    expected = {"rgb": [[color_level(i)] * 3 for i in COLOR[0] + np.array([1, 3, 5, 7])],
                "depth": [[depth_level(i)] for i in DEPTH[0] + np.array([1, 3, 5, 7])],
                "flow": [flow_levels(i) for i in COLOR[0] + np.array([1, 3, 5, 7])]}
    for split, clips in prepared.items():
        for field, levels in expected.items():
            # Each frame's mean brightness per channel, [clips, frames, channels]; JPEG moves it a little.
            error = np.abs(clips[field].mean(axis=(2, 3)) - np.array(levels, np.float64))
            assert error.max() < 4, (split, field, clips[field].mean(axis=(2, 3)))


def test_missing_list_is_named(raw, tmp_path):
    (raw / SPLITS["test"][0]).unlink()
    builder_checks.check_layout_error("nvgesture", raw, tmp_path / "prepared", raw / SPLITS["test"][0])


@pytest.mark.parametrize("line,problem", [
    ("path:./Video_data/class_01/subject9_r0 depth:sk_depth:3:11 color:sk_color label:1", "expected 'path:"),
    ("path:./Video_data/class_01/subject9_r0 depth:sk_depth:3:11 color:sk_color:9:2 label:1", "expected 'path:"),
    ("path:./Video_data/class_01/subject9_r0 depth:sk_depth:3:11 color:sk_color:2:10 label:26", "unknown label"),
])
def test_bad_line_is_named_with_its_number(raw, tmp_path, line, problem):
    path = raw / SPLITS["train"][0]
    path.write_text(path.read_text() + line + "\n")
    builder_checks.check_layout_error("nvgesture", raw, tmp_path / "prepared", f"{path}:4: {problem}")


def test_missing_video_is_named(raw, tmp_path):
    video = raw / clip_dir("test", 1, 3) / "sk_depth.avi"
    video.unlink()
    builder_checks.check_layout_error("nvgesture", raw, tmp_path / "prepared", video)


def test_corrupt_video_is_named(raw, tmp_path):
    video = raw / clip_dir("train", 2, 7) / "sk_color.avi"
    builder_checks.corrupt(video)
    builder_checks.check_layout_error("nvgesture", raw, tmp_path / "prepared", video)


def test_video_shorter_than_its_range_is_named(raw, tmp_path):
    video = raw / clip_dir("train", 0, 1) / "sk_color.avi"
    builder_checks.write_video(video, frames([color_level(i) for i in range(COLOR[1] - 1)]))
    builder_checks.check_layout_error("nvgesture", raw, tmp_path / "prepared", video)


def test_missing_flow_frame_is_named(raw, tmp_path):
    flow = raw / clip_dir("test", 0, 3) / "sk_flow" / f"flow_y_{COLOR[0] + 5:05d}.jpg"  # A picked frame.
    flow.unlink()
    builder_checks.check_layout_error("nvgesture", raw, tmp_path / "prepared", flow)
