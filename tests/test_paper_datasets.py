"""The paper's datasets through ``load_dataset`` and ``experiments.run``, on fixtures in their published layouts."""

import json

import numpy as np
import pytest

from experiments import configs, run
from mie_jax.data import builders
from mie_jax.data.registry import LoadOptions, MultimodalDataset, Split, load_dataset
from mie_jax.train import make_config, train
from tests import builder_checks
from tests.test_bert import tiny_weights, write_checkpoint
from tests.test_builder_audiovisual import write_cremad
from tests.test_builder_sarcasm import write_sarcasm

# Two classes with ten training clips each: enough for a 10% validation hold-out per class.
CREMAD_SPLITS = {
    "train": [(f"10{i:02d}_DFA_{label}_XX", label) for i in range(10) for label in ("ANG", "HAP")],
    "test": [("1090_ITS_ANG_XX", "ANG"), ("1091_WSI_HAP_XX", "HAP")],
}
SMALL = {"image_size": builder_checks.IMAGE_SIZE}


@pytest.fixture(scope="module")
def cremad_raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("cremad")
    write_cremad(root, splits=CREMAD_SPLITS)
    return root


def test_sarcasm_in_its_published_layout_trains_end_to_end(tmp_path, capsys):
    raw, bert_dir, workdir = write_sarcasm(tmp_path / "raw"), tmp_path / "bert", tmp_path / "run"
    write_checkpoint(bert_dir, tiny_weights())
    settings = [
        f"model.bert_dir={bert_dir}",
        "data.image_size=16",
        "data.text_length=16",
        "model.encoder=image=resnet18,text=bert",
        "model.resnet_width=8",
        "model.dim=16",
        "train.batch_size=2",
        "mie.covariance_batch_size=2",
        "train.phase_schedule=1",
        "train.outer_iterations=1",
    ]
    argv = ["--dataset", "sarcasm", "--data-dir", str(raw), "--workdir", str(workdir), "--method", "mie"]
    assert run.main(argv + [arg for s in settings for arg in ("--set", s)]) == 0
    assert "| text |" in capsys.readouterr().out
    results = json.loads((workdir / "results.json").read_text())
    assert set(results["test"]) >= {"average", "weighted", "text", "image"}
    assert (raw / "prepared" / "sarcasm" / "16px_1f" / "1.0.0").is_dir()


def test_validation_is_held_out_of_training_where_none_is_published(cremad_raw, tmp_path):
    options = LoadOptions(data_dir=str(cremad_raw), prepared_dir=str(tmp_path / "prepared"), **SMALL)
    dataset = load_dataset("cremad", ("audio", "visual"), options)
    splits = dataset.splits
    assert dataset.num_classes == 6
    assert [len(splits[s].labels) for s in ("train", "validation", "test")] == [18, 2, 2]
    assert sorted(splits["validation"].labels.tolist()) == [1, 5]  # One of each class: HAP and ANG.
    audio, visual = splits["train"].inputs["audio"], splits["train"].inputs["visual"]
    assert audio.shape == (18, 257, 188, 1) and audio.dtype == np.float32
    assert visual.shape == (18, 1, 16, 16, 3) and visual.dtype == np.uint8  # Encoders scale uint8 to [0, 1].
    other_seed = load_dataset("cremad", ("audio",), LoadOptions(**{**options.__dict__, "seed": 1}))
    assert not np.array_equal(other_seed.splits["validation"].inputs["audio"], splits["validation"].inputs["audio"])


def test_a_too_small_training_split_is_refused_rather_than_validated_on_nothing(tmp_path):
    raw = tmp_path / "raw"
    write_cremad(raw)  # One clip per class: a 10% hold-out takes none.
    with pytest.raises(ValueError, match="no validation example"):
        load_dataset("cremad", ("audio",), LoadOptions(data_dir=str(raw), **SMALL))


def test_paper_dataset_needs_its_data_dir():
    with pytest.raises(ValueError, match="--data-dir must name the directory of sarcasm's files"):
        load_dataset("sarcasm", ("text", "image"))


def test_unknown_modality_is_named(cremad_raw):
    with pytest.raises(ValueError, match=r"cremad has the modalities \['audio', 'visual'\], got unknown \['text'\]"):
        load_dataset("cremad", ("audio", "text"), LoadOptions(data_dir=str(cremad_raw)))


@pytest.mark.parametrize("damage", ["missing_directory", "corrupt_image", "label_out_of_range"])
def test_bad_data_fails_with_one_line_and_writes_nothing(tmp_path, capsys, damage):
    raw, workdir = write_sarcasm(tmp_path / "raw"), tmp_path / "run"
    culprit = {
        "missing_directory": tmp_path / "absent",
        "corrupt_image": raw / "dataset_image" / "train0001.jpg",
        "label_out_of_range": raw / "text" / "valid2.txt",
    }[damage]
    if damage == "corrupt_image":
        builder_checks.corrupt(culprit)
    if damage == "label_out_of_range":
        culprit.write_text(culprit.read_text() + "['validation0009', 'text', 0, 5]\n")
    data_dir = culprit if damage == "missing_directory" else raw
    argv = [
        "--dataset",
        "sarcasm",
        "--data-dir",
        str(data_dir),
        "--workdir",
        str(workdir),
        "--set",
        "data.image_size=16",
    ]
    assert run.main(argv) == 2
    # The paper's image-text setting also warns that this run has no pretrained encoders: not an error.
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("warning: ")]
    assert len(lines) == 1
    error = lines[0]
    assert error.startswith("error: ") and str(culprit) in error
    assert not workdir.exists()
    builder_checks.assert_nothing_prepared(raw / "prepared")


def small_arrays(rows, rng):
    return Split({"fac": rng.normal(size=(rows, 4)), "mor": rng.normal(size=(rows, 3))}, np.arange(rows) % 10)


@pytest.mark.parametrize(
    "damage,message",
    [
        ("fewer_rows", r"mfeat train: modality 'mor' has 9 rows but there are 10 labels"),
        ("label_out_of_range", r"mfeat validation: labels must lie in \[0, 10\), found 1 to 10"),
        ("missing_modality", r"mfeat test: no inputs for modality 'mor'"),
    ],
)
def test_the_trainer_refuses_arrays_whose_modalities_and_labels_disagree(damage, message):
    rng = np.random.default_rng(0)
    splits = {split: small_arrays(10, rng) for split in ("train", "validation", "test")}
    if damage == "fewer_rows":
        splits["train"].inputs["mor"] = splits["train"].inputs["mor"][:9]
    if damage == "label_out_of_range":
        splits["validation"] = splits["validation"]._replace(labels=np.arange(10) + 1)
    if damage == "missing_modality":
        del splits["test"].inputs["mor"]
    with pytest.raises(ValueError, match=message):
        train(make_config(configs.get_config("mfeat")), MultimodalDataset("mfeat", ("fac", "mor"), 10, splits))


def test_every_builder_prepares_under_its_dataset_name():
    assert [builders.builder_class(name).name for name in builders.PAPER_DATASETS] == list(builders.PAPER_DATASETS)
