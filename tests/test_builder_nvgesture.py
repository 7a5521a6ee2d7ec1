"""The NVGesture builder reads NVIDIA's published layout, reads or computes optical flow, and names what is wrong."""

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from mie_jax.data import builders
from mie_jax.data.builders import flow, nvgesture
from tests import builder_checks

NVGESTURE_DATA = Path(__file__).parent / "data" / "nvgesture"  # Real lines of NVIDIA's lists.

NUM_FRAMES = 4  # Kept per clip.
VIDEO_FRAMES, HEIGHT, WIDTH = 12, 24, 32
COLOR, DEPTH = (2, 10), (3, 11)  # Frame ranges [start, end); different, so that a mix-up shows.
# split -> (list file, labels as written, 1 to 25)
SPLITS = {
    "train": ("nvgesture_train_correct_cvpr2016_v2.lst", [1, 25, 7]),
    "test": ("nvgesture_test_correct_cvpr2016_v2.lst", [3, 3]),
}


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
    """One recording: sk_color.avi, sk_depth.avi, and denseflow's flow images of the color video in sk_flow/."""
    builder_checks.write_video(folder / "sk_color.avi", frames([color_level(i) for i in range(VIDEO_FRAMES)]))
    builder_checks.write_video(folder / "sk_depth.avi", frames([depth_level(i) for i in range(VIDEO_FRAMES)]))
    for i in range(VIDEO_FRAMES - 1):  # Denseflow writes the motion from frame i to i + 1 as image i + 1.
        for axis, level in zip("xy", flow_levels(i)):
            builder_checks.write_jpg(
                folder / "sk_flow" / f"flow_{axis}_{i + 1:05d}.jpg", np.full((HEIGHT, WIDTH), level, np.uint8)
            )


def clip_dir(split, i, label):
    return f"./Video_data/class_{label:02d}/subject{i + 1}_r{0 if split == 'train' else 1}"


def write_nvgesture(root):
    """A tiny NVGesture in NVIDIA's layout: two split lists and their clips' folders (no duo videos: unused)."""
    for split, (filename, labels) in SPLITS.items():
        lines = []
        for i, label in enumerate(labels):
            write_clip(root / clip_dir(split, i, label))
            lines.append(
                f"path:{clip_dir(split, i, label)} depth:sk_depth:{DEPTH[0]}:{DEPTH[1]} "
                f"color:sk_color:{COLOR[0]}:{COLOR[1]} duo_left:duo_left:5:12 label:{label}"
            )
        (root / filename).write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def raw(tmp_path):
    return write_nvgesture(tmp_path / "raw")


@pytest.fixture(scope="module")
def precomputed(tmp_path_factory):
    """Every split's arrays and the builder, prepared once (with denseflow's flow) for the tests that only read them."""
    root = tmp_path_factory.mktemp("nvgesture")
    raw = write_nvgesture(root / "raw")
    arrays = builder_checks.check_round_trip(
        "nvgesture",
        raw,
        root / "prepared",
        num_frames=NUM_FRAMES,
        counts={split: len(labels) for split, (_, labels) in SPLITS.items()},
        labels={split: [label - 1 for label in labels] for split, (_, labels) in SPLITS.items()},
    )
    return arrays, builder_checks.build("nvgesture", raw, root / "prepared", num_frames=NUM_FRAMES)


@pytest.fixture(scope="module")
def prepared(precomputed):
    return precomputed[0]


def test_builds_every_split_and_reads_it_back(prepared):
    train = prepared["train"]
    for field, channels in (("rgb", 3), ("depth", 1), ("flow", 2)):
        assert train[field].shape[:2] == (3, NUM_FRAMES)
        builder_checks.check_images(
            train[field].reshape(-1, *train[field].shape[2:]), 3 * NUM_FRAMES, channels=channels
        )
    assert sorted(train["id"]) == sorted(clip_dir("train", i, label) for i, label in enumerate(SPLITS["train"][1]))


def test_precomputed_flow_is_noted(precomputed):
    builder = precomputed[1]
    assert builders.preparation_notes(builder) == [
        "train: 3 flow clips read from sk_flow/ (precomputed)",
        "test: 2 flow clips read from sk_flow/ (precomputed)",
    ]
    assert builders.preparation_settings(builder) == {"flow": "precomputed"}


def test_frames_come_from_each_streams_range(prepared):
    # evenly_spaced(8, 4) picks offsets 1, 3, 5, 7 of each 8-frame range; flow follows the color range
    # (denseflow's image i + 1 for frame i).
    expected = {
        "rgb": [[color_level(i)] * 3 for i in COLOR[0] + np.array([1, 3, 5, 7])],
        "depth": [[depth_level(i)] for i in DEPTH[0] + np.array([1, 3, 5, 7])],
        "flow": [flow_levels(i) for i in COLOR[0] + np.array([1, 3, 5, 7])],
    }
    for split, clips in prepared.items():
        for field, levels in expected.items():
            # Each frame's mean brightness per channel, [clips, frames, channels]; JPEG moves it a little.
            error = np.abs(clips[field].mean(axis=(2, 3)) - np.array(levels, np.float64))
            assert error.max() < 4, (split, field, clips[field].mean(axis=(2, 3)))


def test_missing_list_is_named(raw, tmp_path):
    (raw / SPLITS["test"][0]).unlink()
    builder_checks.check_layout_error("nvgesture", raw, tmp_path / "prepared", raw / SPLITS["test"][0])


@pytest.mark.parametrize(
    "line,problem",
    [
        ("path:./Video_data/class_01/subject9_r0 depth:sk_depth:3:11 color:sk_color label:1", "expected 'path:"),
        ("path:./Video_data/class_01/subject9_r0 depth:sk_depth:3:11 color:sk_color:9:2 label:1", "expected 'path:"),
        ("path:./Video_data/class_01/subject9_r0 depth:sk_depth:3:11 color:sk_color:2:10 label:26", "unknown label"),
    ],
)
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
    flow_image = raw / clip_dir("test", 0, 3) / "sk_flow" / f"flow_y_{COLOR[0] + 5 + 1:05d}.jpg"  # Of a picked frame.
    flow_image.unlink()
    builder_checks.check_layout_error("nvgesture", raw, tmp_path / "prepared", flow_image)


def test_flow_encoding_is_denseflows():
    # 0 px is 127.5, rounded to even as OpenCV's cvRound does; +-BOUND px and beyond saturate.
    displacements = np.array([0.0, -flow.BOUND, flow.BOUND, 2 * flow.BOUND, -100.0, 1.0])
    assert flow.encode(displacements).tolist() == [128, 0, 255, 255, 0, 134]


# Real lines (tests/data/nvgesture) with synthetic videos: a smooth texture, still or moving right.
REAL_FRAMES, REAL_SIZE, SHIFT = 300, 32, 2  # Frames per video (the lines' ranges end by 298), pixels, px per frame.


def texture_video(shift):
    """``[REAL_FRAMES, 32, 32, 3]`` frames of a smooth random texture moving ``shift`` px a frame to the right."""
    import cv2

    noise = np.random.default_rng(0).uniform(0, 255, (REAL_SIZE, 2 * REAL_SIZE)).astype(np.float32)
    texture = cv2.normalize(cv2.GaussianBlur(noise, (0, 0), 2.0), None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    return np.stack(
        [np.repeat(np.roll(texture, shift * i, axis=1)[:, :REAL_SIZE, None], 3, axis=2) for i in range(REAL_FRAMES)]
    )


def moving(line_number):
    return line_number % 2 == 1  # Odd lines' clips move, even lines' stand still.


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """NVIDIA's real lines, every clip's videos written (no flow images), prepared once: (lines, arrays, builder)."""
    root = tmp_path_factory.mktemp("nvgesture_real")
    raw, videos = root / "raw", root / "videos"
    builder_checks.write_video(videos / "moving.avi", texture_video(SHIFT))
    builder_checks.write_video(videos / "still.avi", texture_video(0))
    builder_checks.write_video(videos / "depth.avi", np.full((REAL_FRAMES, REAL_SIZE, REAL_SIZE, 3), 90, np.uint8))
    shutil.copytree(NVGESTURE_DATA, raw)
    lines = {}
    for split, filename in nvgesture.SPLIT_FILES.items():
        lines[split] = nvgesture.read_list(raw / filename)
        for number, clip in enumerate(lines[split], 1):
            (raw / clip.path).mkdir(parents=True)
            shutil.copy(videos / ("moving.avi" if moving(number) else "still.avi"), raw / clip.path / "sk_color.avi")
            shutil.copy(videos / "depth.avi", raw / clip.path / "sk_depth.avi")
    arrays = builder_checks.check_round_trip(
        "nvgesture",
        raw,
        root / "prepared",
        num_frames=NUM_FRAMES,
        counts={"train": 27, "test": 14},
        labels={split: [c.label for c in clips] for split, clips in lines.items()},
    )
    return lines, arrays, builder_checks.build("nvgesture", raw, root / "prepared", num_frames=NUM_FRAMES)


def test_real_lines_label_field_wins_over_the_folder(real):
    lines, arrays, _ = real
    for split, mismatches in (("train", 15), ("test", 8)):  # All of NVIDIA's lists' disagreements are in the fixture.
        folder_class = {c.path: int(re.search(r"class_(\d+)", c.path).group(1)) - 1 for c in lines[split]}
        labels = dict(zip(arrays[split]["id"], arrays[split]["label"]))
        assert sum(labels[path] != folder_class[path] for path in labels) == mismatches
    train = dict(zip(arrays["train"]["id"], arrays["train"]["label"]))
    # Line 6: 'path:./Video_data/class_01/subject4_r2 ... label:2'.
    assert nvgesture.CLASSES[train["./Video_data/class_01/subject4_r2"]] == "class_02"


def test_flow_is_computed_from_the_color_video_where_none_is_precomputed(real):
    lines, arrays, builder = real
    method = flow.algorithm()
    assert builders.preparation_notes(builder) == [
        f"train: 27 flow clips computed from sk_color.avi ({method})",
        f"test: 14 flow clips computed from sk_color.avi ({method})",
    ]
    assert builders.preparation_settings(builder) == {"flow": method}
    expected_x = 128 + SHIFT * 255 / (2 * flow.BOUND)  # 2 px a frame to the right: 140.75.
    for split, clips in lines.items():
        by_id = dict(zip(arrays[split]["id"], arrays[split]["flow"].astype(np.float64)))
        for number, clip in enumerate(clips, 1):
            x, y = by_id[clip.path][..., 0], by_id[clip.path][..., 1]
            if moving(number):
                # Near the texture's wrap-around seam a few pixels may go astray.
                assert abs(x.mean() - expected_x) < 2 and (x > 134).mean() > 0.95, (split, number, x.mean())
                assert abs(y.mean() - 128) < 1 and (np.abs(y - 128) <= 2).mean() > 0.95, (split, number)
            else:  # Still: about 128 everywhere.
                assert np.abs(x - 128).max() <= 2 and np.abs(y - 128).max() <= 2, (split, number)


def test_flow_at_a_videos_last_frame_is_the_motion_into_it(tmp_path):
    video = tmp_path / "moving.avi"
    builder_checks.write_video(video, texture_video(SHIFT)[:12])
    x = flow.compute(video, [11], 16, flow.FARNEBACK)[..., 0].astype(np.float64)
    assert abs(x.mean() - (128 + SHIFT * 255 / (2 * flow.BOUND))) < 2
    with pytest.raises(builders.DataLayoutError, match="expected frames 11 to 12") as info:
        flow.compute(video, [12], 16, flow.FARNEBACK)
    assert str(info.value).startswith(f"{video}: ")


@pytest.mark.skipif(flow.algorithm() != flow.TVL1, reason="TV-L1 needs opencv-contrib-python, not installed")
def test_tvl1_flow_sees_the_motion(tmp_path):
    builder_checks.write_video(tmp_path / "moving.avi", texture_video(SHIFT)[:12])
    x = flow.compute(tmp_path / "moving.avi", [2, 11], 16, flow.TVL1)[..., 0].astype(np.float64)
    assert abs(x.mean() - (128 + SHIFT * 255 / (2 * flow.BOUND))) < 2


def test_clips_without_flow_images_are_computed_beside_precomputed_ones(raw, tmp_path):
    shutil.rmtree(raw / clip_dir("train", 1, 25) / "sk_flow")
    builder = builder_checks.build("nvgesture", raw, tmp_path / "prepared", num_frames=NUM_FRAMES)
    method = flow.algorithm()
    assert builders.preparation_notes(builder) == [
        "train: 2 flow clips read from sk_flow/ (precomputed)",
        f"train: 1 flow clips computed from sk_color.avi ({method})",
        "test: 2 flow clips read from sk_flow/ (precomputed)",
    ]
    assert builders.preparation_settings(builder) == {"flow": method}
    computed = builders.read_split(builder, "train", ("id", "flow"))
    still = computed["flow"][list(computed["id"]).index(clip_dir("train", 1, 25))]
    assert np.abs(still.astype(np.float64) - 128).max() <= 2  # Uniform frames: no motion found.
