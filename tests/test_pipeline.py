"""Grain pipelines: deterministic batches, every example once per epoch, crops that keep shapes, worker parity."""

import contextlib
import functools
from multiprocessing import shared_memory

import numpy as np
import pytest

from mie_jax.data import pipeline
from mie_jax.models import bert
from tests import builder_checks
from tests.test_builder_sarcasm import SPLITS, write_sarcasm

NUM_EXAMPLES = 10
TEXT_LENGTH = 12
# Every word of the Sarcasm fixture's tweets, so that tokens are not all [UNK].
VOCAB = (
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "tweet",
    "of",
    "train",
    "validation",
    "test",
    ",",
    "isn",
    "'",
    "t",
    "it",
    "<",
    ">",
    "user",
    *map(str, range(10)),
)


def synthetic_source(num_examples=NUM_EXAMPLES, shape=(8, 8, 3)):
    """A list of examples: random uint8 ``image`` of ``shape``, its ``index``, and a ``label``."""
    rng = np.random.default_rng(0)
    return [
        {"image": rng.integers(0, 256, shape, dtype=np.uint8), "index": i, "label": i % 3} for i in range(num_examples)
    ]


def read_all(dataset):
    """Every batch of a pipeline, its iterator closed (which stops any workers)."""
    with contextlib.closing(iter(dataset)) as iterator:
        return list(iterator)


def crop_pipeline(source, seed, **kwargs):
    kwargs.setdefault("batch_size", 4)
    kwargs.setdefault("drop_remainder", False)
    return pipeline.modality_pipeline(
        source, ("image", "index"), {"image": pipeline.random_resized_crop_and_flip}, seed=seed, **kwargs
    )


def assert_same_batches(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert a.keys() == b.keys()
        for field in a:
            np.testing.assert_array_equal(a[field], b[field], err_msg=field)


@pytest.fixture(scope="module")
def sarcasm(tmp_path_factory):
    """The Sarcasm builder prepared from the test fixture (16 px images)."""
    root = tmp_path_factory.mktemp("sarcasm")
    return builder_checks.build("sarcasm", write_sarcasm(root / "raw"), root / "prepared")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """A WordPiece tokenizer over ``VOCAB``, read by the library's loader."""
    directory = tmp_path_factory.mktemp("vocab")
    (directory / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return bert.load_tokenizer(directory)


def test_same_seed_gives_identical_batches_including_crops():
    source = synthetic_source()
    first = read_all(crop_pipeline(source, seed=7, num_epochs=2))
    second = read_all(crop_pipeline(source, seed=7, num_epochs=2))
    assert_same_batches(first, second)
    # The crops are random: not every image came through unchanged or merely mirrored.
    images = {int(i): image for batch in first for i, image in zip(batch["index"], batch["image"])}
    assert any(
        not np.array_equal(images[i], source[i]["image"]) and not np.array_equal(images[i], source[i]["image"][:, ::-1])
        for i in images
    )


def test_same_seed_on_a_tfds_source_gives_identical_batches(sarcasm):
    source = sarcasm.as_data_source("train")
    make = functools.partial(
        pipeline.modality_pipeline,
        source,
        ("image", "label"),
        {"image": (pipeline.random_resized_crop_and_flip, pipeline.to_float)},
        batch_size=2,
        seed=3,
        drop_remainder=True,
        num_epochs=3,
    )
    first, second = read_all(make()), read_all(make())
    assert_same_batches(first, second)
    assert len(first) == 3  # One full batch of 2 per epoch of 3 examples.
    assert first[0]["image"].shape == (2, builder_checks.IMAGE_SIZE, builder_checks.IMAGE_SIZE, 3)
    assert first[0]["image"].dtype == np.float32


def test_different_seeds_give_different_orders():
    source = synthetic_source(num_examples=20)
    orders = [np.concatenate([b["index"] for b in read_all(crop_pipeline(source, seed=seed))]) for seed in (0, 1)]
    assert sorted(orders[0]) == sorted(orders[1])
    assert not np.array_equal(orders[0], orders[1])


def test_every_example_appears_once_per_epoch_and_epochs_can_start_anywhere():
    source = synthetic_source()
    batches = read_all(crop_pipeline(source, seed=0, num_epochs=3))
    per_epoch = -(-NUM_EXAMPLES // 4)  # A short last batch ends every epoch.
    assert len(batches) == 3 * per_epoch
    orders = [np.concatenate([b["index"] for b in batches[e * per_epoch : (e + 1) * per_epoch]]) for e in range(3)]
    for order in orders:
        assert sorted(order.tolist()) == list(range(NUM_EXAMPLES))
    assert not np.array_equal(orders[0], orders[1])  # Reshuffled every epoch.
    # Epoch 1 on its own is epoch 1 of the three-epoch pipeline, crops included.
    assert_same_batches(read_all(crop_pipeline(source, seed=0, epoch=1)), batches[per_epoch : 2 * per_epoch])


def test_drop_remainder_keeps_only_full_batches():
    batches = read_all(crop_pipeline(synthetic_source(), seed=0, drop_remainder=True))
    assert [len(b["index"]) for b in batches] == [4, 4]


@pytest.mark.parametrize("shape", [(16, 16, 3), (12, 20, 3), (9, 7, 1), (3, 10, 10, 2), (1, 16, 16, 3)])
def test_crop_keeps_shape_and_dtype(shape):
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    for seed in range(10):
        cropped = pipeline.random_resized_crop_and_flip(image, np.random.default_rng(seed))
        assert cropped.shape == image.shape and cropped.dtype == np.uint8


def test_full_crop_is_the_image_or_its_exact_horizontal_mirror():
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    flipped = 0
    for seed in range(20):
        out = pipeline.random_resized_crop_and_flip(image, np.random.default_rng(seed), scale=(1, 1), ratio=(1, 1))
        if np.array_equal(out, image[:, ::-1]):
            flipped += 1
        else:
            np.testing.assert_array_equal(out, image)
    assert 0 < flipped < 20


def test_frames_of_a_clip_share_one_crop_and_flip():
    frame = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    clip = np.stack([frame] * 4)
    for seed in range(10):
        out = pipeline.random_resized_crop_and_flip(clip, np.random.default_rng(seed))
        for later in out[1:]:
            np.testing.assert_array_equal(later, out[0])
        # The clip's crop is the crop of any of its frames alone.
        np.testing.assert_array_equal(out[0], pipeline.random_resized_crop_and_flip(frame, np.random.default_rng(seed)))


def test_to_float_and_channel_axis():
    image = np.array([[0, 255], [51, 102]], np.uint8)
    np.testing.assert_allclose(pipeline.to_float(image), [[0, 1], [0.2, 0.4]], rtol=1e-6)
    assert pipeline.to_float(image).dtype == np.float32
    assert pipeline.add_channel_axis(np.zeros((257, 188), np.float32)).shape == (257, 188, 1)


def test_paired_pipeline_returns_every_example_in_order(sarcasm, tokenizer):
    source = sarcasm.as_data_source("validation")  # TFDS's order, not the split file's.
    expected = [source[i] for i in range(len(source))]
    batches = read_all(
        pipeline.modality_pipeline(
            source,
            ("image", "text", "label"),
            {"image": pipeline.to_float, "text": pipeline.tokenize(tokenizer, TEXT_LENGTH)},
            batch_size=3,
            seed=0,
            shuffle=False,
            drop_remainder=False,
        )
    )
    assert len(batches) == 1
    (batch,) = batches
    assert batch["label"].tolist() == [e["label"] for e in expected]
    assert sorted(batch["label"].tolist()) == sorted(SPLITS["validation"][2])
    np.testing.assert_array_equal(batch["image"], np.stack([e["image"] for e in expected]) / np.float32(255))
    ids, _, _ = bert.tokenize(tokenizer, [e["text"].decode() for e in expected], TEXT_LENGTH)
    np.testing.assert_array_equal(batch["text"], ids)
    assert batch["text"].dtype == np.int32 and (ids > VOCAB.index("[UNK]")).any()


def _multiprocessing_unavailable():
    """Why grain cannot start worker processes here, or '' (workers pass batches in shared memory)."""
    try:
        memory = shared_memory.SharedMemory(create=True, size=1)
    except OSError as error:
        return f"no POSIX shared memory for grain's workers: {error}"
    memory.close()
    memory.unlink()
    return ""


@pytest.mark.skipif(bool(_multiprocessing_unavailable()), reason=_multiprocessing_unavailable() or "available")
def test_two_workers_give_the_same_batches_as_none():
    # Small on purpose: starting the two workers (each imports grain and JAX) is most of the time.
    source = synthetic_source()
    in_process = read_all(crop_pipeline(source, seed=5, num_epochs=2))
    with_workers = read_all(crop_pipeline(source, seed=5, num_epochs=2, num_workers=2))
    assert_same_batches(in_process, with_workers)


@pytest.mark.parametrize(
    "change,parameter",
    [
        ({"fields": ("image", "caption")}, "fields"),
        ({"fields": "image"}, "fields"),
        ({"transforms": {"index": pipeline.to_float}}, "transforms"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": -2}, "batch_size"),
        ({"batch_size": NUM_EXAMPLES + 1, "drop_remainder": True}, "batch_size"),
        ({"seed": -1}, "seed"),
        ({"num_epochs": 0}, "num_epochs"),
        ({"epoch": -1}, "epoch"),
        ({"num_workers": -1}, "num_workers"),
        ({"source": []}, "source"),
    ],
)
def test_bad_arguments_name_the_parameter(change, parameter):
    arguments = {
        "source": synthetic_source(),
        "fields": ("image", "label"),
        "transforms": {},
        "batch_size": 4,
        "seed": 0,
        "drop_remainder": False,
        **change,
    }
    with pytest.raises(ValueError, match=rf"^{parameter}\b"):
        pipeline.modality_pipeline(**arguments)


@pytest.mark.parametrize(
    "kwargs,parameter",
    [({"scale": (0.5, 0.2)}, "scale"), ({"scale": (0.0, 1.0)}, "scale"), ({"ratio": (0.0, 1.0)}, "ratio")],
)
def test_bad_crop_bounds_name_the_parameter(kwargs, parameter):
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match=rf"^{parameter}\b"):
        pipeline.random_resized_crop_and_flip(image, np.random.default_rng(0), **kwargs)


def test_crop_rejects_float_images_by_name():
    with pytest.raises(ValueError, match=r"^image\b"):
        pipeline.random_resized_crop_and_flip(np.zeros((8, 8, 3), np.float32), np.random.default_rng(0))
